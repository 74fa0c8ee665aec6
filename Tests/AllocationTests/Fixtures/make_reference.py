#!/usr/bin/env python3
"""Reference optima for the allocation solver's exactness test (Tests/AllocationTests).

Each instance is generated from its seed by the generator below, which AllocationTests.swift repeats exactly
(SplitMix64), so the fixture holds only seeds and optima. Optima come from networkx's network simplex on the
min-cost-flow formulation (exact integer arithmetic) and are cross-checked against HiGHS (scipy.optimize.linprog)
on the LP of the integer program: its matrix is a bipartite graph's, totally unimodular, so the LP optimum is
the integer optimum.

    python3 Tests/AllocationTests/Fixtures/make_reference.py > Tests/AllocationTests/Fixtures/reference.json

Pinned: networkx 3.6.1, scipy 1.17.1, numpy 2.4.6.
"""
import json
import sys

import networkx as nx
import numpy as np
from scipy.optimize import linprog

MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return self.next() % n


def generate(seed):
    """Leads, agents, slots 0-3, capacities 0-5, a random share of allowed pairs, values with many ties
    (1-3), moderate (1-1000) or wide (1-2^32). Every 50th instance is large (100-499 leads, 20-199 agents)."""
    rng = SplitMix64(seed)
    large = seed % 50 == 0
    leads = 100 + rng.below(400) if large else 1 + rng.below(40)
    agents = 20 + rng.below(180) if large else 1 + rng.below(15)
    slots = [rng.below(4) for _ in range(leads)]
    capacity = [rng.below(6) for _ in range(agents)]
    density = rng.below(101)
    mode = rng.below(3)
    top = [3, 1000, 1 << 32][mode]
    pairs = []
    for i in range(leads):
        for j in range(agents):
            if rng.below(100) < density:
                pairs.append((i, j, 1 + rng.below(top)))
    return slots, capacity, pairs


def optimum_flow(slots, capacity, pairs):
    g = nx.DiGraph()
    total = sum(slots)
    for i, s in enumerate(slots):
        g.add_node(("l", i), demand=-s)
        if s > 0:
            g.add_edge(("l", i), "t", capacity=s, weight=0)
    for j, c in enumerate(capacity):
        g.add_node(("a", j), demand=0)
        if c > 0:
            g.add_edge(("a", j), "t", capacity=c, weight=0)
    g.add_node("t", demand=total)
    for i, j, v in pairs:
        g.add_edge(("l", i), ("a", j), capacity=1, weight=-v)
    cost, _ = nx.network_simplex(g)
    return -cost


def optimum_lp(slots, capacity, pairs):
    if not pairs:
        return 0
    n = len(pairs)
    c = -np.array([v for _, _, v in pairs], dtype=float)
    rows = []
    b = []
    for i, s in enumerate(slots):
        rows.append([1.0 if p[0] == i else 0.0 for p in pairs])
        b.append(s)
    for j, cap in enumerate(capacity):
        rows.append([1.0 if p[1] == j else 0.0 for p in pairs])
        b.append(cap)
    r = linprog(c, A_ub=np.array(rows), b_ub=np.array(b, dtype=float), bounds=[(0, 1)] * n, method="highs")
    assert r.status == 0, r.message
    return -r.fun


def main():
    out = []
    for seed in range(1, 1001):
        slots, capacity, pairs = generate(seed)
        best = optimum_flow(slots, capacity, pairs)
        if len(pairs) <= 3000:
            lp = optimum_lp(slots, capacity, pairs)
            # Values up to 2^32 over a few hundred pairs: float64 holds the LP's optimum to well under 1.
            assert abs(lp - best) <= max(1e-6 * abs(best), 0.5), (seed, best, lp)
        out.append([seed, best])
        if seed % 100 == 0:
            print(f"{seed} instances", file=sys.stderr)
    json.dump({"generator": "SplitMix64; see make_reference.py", "instances": out}, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
