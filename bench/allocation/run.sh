#!/usr/bin/env bash
# The allocation kind (issue 19). Part 1, the solver alone: generated instances solved exactly, times and the
# optimum against the greedy pass on the same values (alloc-solver; release build, one thread). Part 2,
# served: arbiterd with an allocation model trained by arbiter-train on a generated world, answering SCOREs
# of 500 leads × 200 agents (30% of pairs allowed) and 20,000 × 2,000 (5%) at a fixed rate over one
# connection, latency from each request's scheduled send (arbiter-bench). Writes bench/results/allocation-DATE.md.
#   bench/allocation/run.sh   RUNS_SMALL (1000), RUNS_LARGE (5); SMALL_RATE (20/s), LARGE_RATE (0.5/s), DURATION (30 s)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH="$ROOT/bench"
WORK="$BENCH/.work/allocation"
RUNS_SMALL=${RUNS_SMALL:-1000}
RUNS_LARGE=${RUNS_LARGE:-5}
SMALL_RATE=${SMALL_RATE:-20}
LARGE_RATE=${LARGE_RATE:-0.5}
DURATION=${DURATION:-30}
OUT="$BENCH/results/allocation-$(date +%Y-%m-%d).md"
rm -rf "$WORK"
mkdir -p "$WORK"
(cd "$ROOT" && swift build -c release -q --product arbiterd && swift build -c release -q --product arbiter-train)
(cd "$BENCH" && swift build -c release -q --product alloc-solver && swift build -c release -q --product arbiter-bench)
BIN=$(cd "$ROOT" && swift build -c release --show-bin-path)
BBIN=$(cd "$BENCH" && swift build -c release --show-bin-path)

echo "== the solver alone"
"$BBIN/alloc-solver" 500 200 0.30 "$RUNS_SMALL" > "$WORK/solver-small.json"
"$BBIN/alloc-solver" 20000 2000 0.05 "$RUNS_LARGE" > "$WORK/solver-large.json"
"$BBIN/alloc-solver" 20000 2000 0.05 "$RUNS_LARGE" 2 > "$WORK/solver-large-2.json"

echo "== served"
# Two models, each trained on the history of the world its scenario's requests come from: 200,000 pairs each
# (with 40,000 the model misses most of the agents' specialties, its scores agree across leads on which agents
# are good, and the 20,000 x 2,000 solve takes 7.5 s instead of 1.2 s: see docs/ALLOCATION.md#speed).
"$BIN/arbiter-train" gen-data --kind allocation --seed 1 --leads 500 --agents 200 --days 400 --cities 1 --coverage 0.3 --out "$WORK/small.csv" >/dev/null
"$BIN/arbiter-train" train --kind allocation --data "$WORK/small.csv" --cities 1 --store "$WORK/store" --model alloc-small >/dev/null
"$BIN/arbiter-train" gen-data --kind allocation --seed 1 --leads 20000 --agents 2000 --days 10 --cities 6 --coverage 0.3 --out "$WORK/large.csv" >/dev/null
"$BIN/arbiter-train" train --kind allocation --data "$WORK/large.csv" --cities 6 --store "$WORK/store" --model alloc-large >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
"$BIN/arbiterd" --store "$WORK/store" --listen "127.0.0.1:$PORT" --log-level warning >"$WORK/arbiterd.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
RAW="$WORK/runs.jsonl"
: > "$RAW"
"$BBIN/arbiter-bench" run --label "500x200" --protocol arbiter --port "$PORT" --scenario alloc-500x200 --model alloc-small \
  --rate "$SMALL_RATE" --connections 1 --warmup 2 --duration "$DURATION" --timeout-ms 5000 --out "$RAW" >/dev/null
"$BBIN/arbiter-bench" run --label "20000x2000" --protocol arbiter --port "$PORT" --scenario alloc-20kx2k --model alloc-large \
  --rate "$LARGE_RATE" --connections 1 --warmup 2 --duration "$DURATION" --timeout-ms 20000 --out "$RAW" >/dev/null
RSS=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$PID/status")

python3 - "$WORK" "$RAW" "$OUT" "$RUNS_SMALL" "$RUNS_LARGE" "$SMALL_RATE" "$LARGE_RATE" "$DURATION" "$RSS" <<'PY'
import json, subprocess, sys, datetime, platform
work, raw, out, rs, rl, small_rate, large_rate, duration, rss = sys.argv[1:]
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
solver = [("500 × 200, 30%, 1 slot", json.load(open(f"{work}/solver-small.json"))),
          ("20,000 × 2,000, 5%, 1 slot", json.load(open(f"{work}/solver-large.json"))),
          ("20,000 × 2,000, 5%, 2 slots", json.load(open(f"{work}/solver-large-2.json")))]
runs = [json.loads(l) for l in open(raw) if l.strip()]
lines = [f"# allocation: the solver alone and served ({datetime.date.today()})", "",
         f"Machine: {cpu}, 2 CPUs, Linux {platform.release()}; release build, commit {commit}; harness and server share the machine.",
         f"Command: `bench/allocation/run.sh` (RUNS_SMALL={rs}, RUNS_LARGE={rl}, SMALL_RATE={small_rate}/s, LARGE_RATE={large_rate}/s, DURATION={duration} s).", "",
         "## The solver alone", "",
         "`alloc-solver LEADS AGENTS DENSITY RUNS [SLOTS]`: generated instances (leads of varied quality, agents of varied skill, capacities",
         "averaging 1.2 × demand, 5% of agents full, a pair's value its hire probability quantised to 2^20), solved exactly;",
         "`solve + greedy` is what a served request runs (`solve(compareWithGreedy:)`, sharing the sorted pairs).", "",
         "| instance | pairs | exact solve ms p50 / p99 / max | solve + greedy ms p50 / p99 | greedy alone ms p50 | optimum / greedy | searches; nodes settled; arcs relaxed |",
         "| --- | ---: | --- | --- | ---: | ---: | --- |"]
for name, r in solver:
    s, b, g, w = r["solve_ms"], r["solve_and_greedy_ms"], r["greedy_ms"], r["work"]
    lines.append(f"| {name} | {r['pairs']:,} | {s['p50']:.2f} / {s['p99']:.2f} / {s['max']:.2f} | {b['p50']:.2f} / {b['p99']:.2f} | {g['p50']:.2f} | "
                 f"{r['optimum_over_greedy']:.4f} | {w['searches']:,}; {w['settled']:,}; {w['relaxed']:,} |")
lines += ["", "## Served", "",
          "arbiterd with the models `arbiter-train` trained on each world's history (`gen-data --kind allocation --seed 1 --cities C --coverage 0.3`);",
          "each SCORE is one allocation (a different day's leads, every agent), sent at a fixed rate over one connection; latency from",
          "the scheduled send to the whole RESULT read (pairs derived, scored, solved exactly, greedy beside it, answer encoded).", "",
          "| requests | rate | answered | errors | p50 ms | p99 ms | p99.9 ms | max ms | server compute p50 ms |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for r in runs:
    lat, comp = r["latency"], r.get("serverCompute") or {}
    errors = sum(r.get("errors", {}).values())
    lines.append(f"| {r['label']} | {r['rate']:g}/s | {r['completed']} | {errors} | {lat['p50']/1000:.1f} | {lat['p99']/1000:.1f} | "
                 f"{lat['p999']/1000:.1f} | {lat['max']/1000:.1f} | " + (f"{comp['p50']/1000:.1f}" if comp else "-") + " |")
lines += ["", f"The server's peak RSS over the run: {rss} MiB.", ""]
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
PY
