#!/usr/bin/env python3
"""Turns the cluster scenarios' JSON summaries into bench/results/cluster-DATE.md and two plots:
versions served over time per replica (the consistency run) and p99 per 250 ms window over the failover.
Standard library only."""
import json
import os
import sys

out, date = sys.argv[1], sys.argv[2]


def load(name):
    path = os.path.join(out, f"cluster-{date}-{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def svg_lines(title, series, xlabel, ylabel, path, markers=(), ylog=False, step=False):
    """series: {label: [(x, y), ...]}"""
    import math
    width, height, left, right, top, bottom = 900, 420, 70, 150, 40, 50
    xs = [x for pts in series.values() for x, _ in pts] or [0, 1]
    ys = [y for pts in series.values() for _, y in pts if y > 0] or [1]
    x0, x1 = min(xs), max(xs) or 1
    y0, y1 = (min(ys), max(ys)) if ylog else (0, max(ys) * 1.05 or 1)
    if ylog:
        y0, y1 = math.log10(max(y0, 1e-3)), math.log10(max(y1, 1e-3)) + 0.1

    def px(x):
        return left + (x - x0) / ((x1 - x0) or 1) * (width - left - right)

    def py(y):
        v = math.log10(max(y, 1e-3)) if ylog else y
        return top + (1 - (v - y0) / ((y1 - y0) or 1)) * (height - top - bottom)

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="black"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
             f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">{xlabel}</text>',
             f'<text x="15" y="{(top + height - bottom) / 2}" transform="rotate(-90 15 {(top + height - bottom) / 2})" text-anchor="middle">{ylabel}</text>']
    for i in range(6):
        xv = x0 + (x1 - x0) * i / 5
        parts.append(f'<text x="{px(xv)}" y="{height - bottom + 16}" text-anchor="middle">{xv:.0f}</text>')
        if ylog:
            yv = 10 ** (y0 + (y1 - y0) * i / 5)
        else:
            yv = y0 + (y1 - y0) * i / 5
        parts.append(f'<text x="{left - 6}" y="{py(yv) + 4}" text-anchor="end">{yv:.0f}</text>')
        parts.append(f'<line x1="{left}" y1="{py(yv)}" x2="{width - right}" y2="{py(yv)}" stroke="#eee"/>')
    for x, label in markers:
        parts.append(f'<line x1="{px(x)}" y1="{top}" x2="{px(x)}" y2="{height - bottom}" stroke="#999" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{px(x) + 3}" y="{top + 12}" fill="#555">{label}</text>')
    for i, (label, pts) in enumerate(sorted(series.items())):
        c = colors[i % len(colors)]
        if not pts:
            continue
        d = []
        prev = None
        for x, y in sorted(pts):
            if step and prev is not None:
                d.append(f"L{px(x):.1f},{py(prev):.1f}")
            d.append(("M" if not d else "L") + f"{px(x):.1f},{py(y):.1f}")
            prev = y
        # Offset each replica's step line a little, so equal versions do not hide each other.
        offset = (i - len(series) / 2) * 1.5 if step else 0
        parts.append(f'<path d="{" ".join(d)}" fill="none" stroke="{c}" stroke-width="1.5" transform="translate(0,{offset})"/>')
        parts.append(f'<text x="{width - right + 10}" y="{top + 16 * (i + 1)}" fill="{c}">{label}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts))


lines = [f"# Cluster scenarios, {date}", "",
         "Four arbiterd replicas, three etcd members and SeaweedFS on loopback (scripts/cluster.sh), release builds,",
         "this 2-core VM; open-loop load of lead-1 requests through the balancing client (bench/cluster/run.sh).",
         f"Replicas ran as `arbiterd {os.environ.get('ARBITERD_ARGS', '').strip()}` (plus the cluster script's flags).", ""]
cap = load("capacity")
if cap:
    ramp = ", ".join(f"{int(r)}/s p99 {p99 / 1000:.1f} ms" + (f" ({int(fl)} failed)" if fl else "") for r, _, p99, fl in cap["ramp"])
    lines += [f"Capacity through the balancing client: {cap['capacity_rps']:.0f} requests/s — the highest open-loop rate of a ramp "
              f"with every request answered and p99 under 10 ms ({ramp}); closed loop with 64 requests out it reaches "
              f"{cap['closed_loop_rps']:.0f}/s, by batching writes an open-loop client does not. The runs below are at half "
              f"of the open-loop capacity.", ""]


def loadline(d):
    return (f"{int(d['requests'])} requests, {int(d['failed'])} failed, {int(d['mismatches'])} answered by a version other than the pin; "
            f"p50 {d['p50_us']:.0f} µs, p99 {d['p99_us']:.0f} µs, p99.9 {d['p999_us']:.0f} µs; "
            f"retries {int(d['retries'])}, hedges {int(d['hedges'])} ({100 * d['extra_load']:.2f}% extra load)")


c = load("consistency")
if c:
    lines += ["## 1. Consistency", "",
              f"{int(c['promotions'])} promotions at {int(c['rate'])}/s: " + loadline(c) + ".",
              f"Answers from an uncommitted version: {int(c['answered_from_uncommitted'])}.",
              f"Commit of `active` to the last replica switched: p50 {c['switch_last_ms_p50']:.1f} ms, "
              f"p99 {c['switch_last_ms_p99']:.1f} ms, max {c['switch_last_ms_max']:.1f} ms (bound: p99 ≤ 50 ms).", "",
              f"![versions served](cluster-{date}-versions.svg)", ""]
    series = {}
    for t, by in c["served_series"]:
        for replica, versions in by.items():
            top = max(versions.items(), key=lambda kv: kv[1])[0]
            series.setdefault(replica, []).append((t, float(top)))
    svg_lines("Version answering each replica's requests (250 ms windows)", series, "seconds", "version",
              os.path.join(out, f"cluster-{date}-versions.svg"), step=True)
f = load("failover")
if f:
    lines += ["## 2. Failover", "",
              f"At {f['event_at_s']:.1f} s r1 was SIGKILLed and r2 SIGSTOPped for 2 s, at {int(f['rate'])}/s: " + loadline(f) + ".",
              f"p99 steady {f['steady_p99_us']:.0f} µs, in the 5 s from the event {f['event_p99_us']:.0f} µs "
              f"({f['event_p99_ratio']:.2f}×; bound ≤ 3×); failed in the event window: {int(f['event_failed'])}.", "",
              f"![p99 over the failover](cluster-{date}-failover.svg)", ""]
    pts = [(t, p99) for t, p99, n in f["p99_series"] if n > 0]
    svg_lines("p99 per 250 ms window through the failover", {"p99 µs": pts}, "seconds", "p99 (µs, log)",
              os.path.join(out, f"cluster-{date}-failover.svg"),
              markers=[(f["event_at_s"], "kill r1, stop r2"), (f["event_at_s"] + 2, "r2 continued")], ylog=True)
p = load("partial")
if p:
    lines += ["## 3. Partial failures", "", f"At {int(p['rate'])}/s throughout: " + loadline(p) + ".", ""]
    lines += [f"- {t:.1f} s: {what}" for t, what in p["events"]]
    lines += ["", f"Damaged object refused: {p['damaged_refused']} (answers from it: {int(p['damaged_answers'])}); "
              f"version failing validation on one replica refused: {p['route_refused']} (route active after: {p['route_active_after']}); "
              f"promotion refused without quorum: {p['refused_without_quorum']}.", ""]
d = load("distribution")
if d:
    lines += ["## 4. Distribution", "",
              f"A {d['store_bytes'] / 2**30:.2f} GiB compacted version ({d['object_bytes'] / 2**30:.2f} GiB compressed) from `push` to staged "
              f"on every replica in {d['push_to_all_staged_s']:.1f} s (bound ≤ 60 s); the push took {d['push_s']:.1f} s.", "",
              "Push stages: " + "; ".join(d["push_stages"]) + ".", ""]
    lines += [f"- {s}" for s in d["replica_stages"]]
    lines += [""]
cs = load("coldstart")
if cs:
    lines += ["## 5. Cold start", "",
              f"An empty replica answered correctly (the 1 GiB model, pinned to its committed version) {cs['first_answer_s']:.1f} s "
              f"after its process started (bound ≤ 20 s); ready after {cs['ready_after_s']:.1f} s. Windows in which it answered "
              f"balanced traffic before its record said ready: {int(cs['windows_served_before_ready'])}. Load meanwhile: " + loadline(cs) + ".", ""]
with open(os.path.join(out, f"cluster-{date}.md"), "w") as fh:
    fh.write("\n".join(lines) + "\n")
