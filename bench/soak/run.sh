#!/usr/bin/env bash
# The soak: arbiterd for DURATION seconds (default 600) at twice its measured capacity, with misbehaving
# clients alongside (bench/soak/abusers.py: idle, half-frame, zstd non-readers, slow readers, garbage),
# under a memory budget (BUDGET_MIB, default 256). Records the well-behaved client's answers (results and
# OVERLOADED sheds, p50/p99 of each), arbiterd's resident memory every second against the budget, that it
# never dies, and how long SIGTERM takes at the end. Writes bench/results/soak-DATE.md.
#
#   bench/soak/run.sh            (make bench-soak; needs bench/run.sh's store: run make bench once first)
#   DURATION=60 bench/soak/run.sh   a short one
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH="$ROOT/bench"
WORK="$BENCH/.work"
DURATION=${DURATION:-600}
BUDGET_MIB=${BUDGET_MIB:-256}
EACH=${EACH:-8}
OUT="$BENCH/results/soak-$(date +%Y-%m-%d).md"
say() { echo "== $*"; }

(cd "$ROOT" && swift build -c release -q)
(cd "$BENCH" && swift build -c release -q --product arbiter-bench)
BIN=$(cd "$ROOT" && swift build -c release --show-bin-path)
HARNESS="$(cd "$BENCH" && swift build -c release --show-bin-path)/arbiter-bench"
STORE="$WORK/store-release"
if "$BIN/arbiter-train" versions --store "$STORE" --model trees >/dev/null 2>&1; then
  SCENARIO=gbdt-200
else
  SCENARIO=lead-100
fi
"$BIN/arbiter-train" versions --store "$STORE" --model leads >/dev/null 2>&1 \
  || { echo "no bench store at $STORE: run make bench once first" >&2; exit 1; }
python3 -c 'import zstandard' 2>/dev/null || python3 -m pip install -q zstandard==0.25.0

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
"$BIN/arbiterd" --store "$STORE" --listen "127.0.0.1:$PORT" --memory-budget-mib "$BUDGET_MIB" --log-level warning \
  >"$WORK/soak-arbiterd.log" 2>&1 &
APID=$!
ABUSERS=""
cleanup() {
  [ -n "$ABUSERS" ] && kill "$ABUSERS" 2>/dev/null || true
  kill -TERM "$APID" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

say "capacity: $SCENARIO at saturation, 4 connections x 16 in flight, 5 s"
CAP=$("$HARNESS" run --label arbiterd --port "$PORT" --scenario "$SCENARIO" --model leads --connections 4 --in-flight 16 \
      --saturation --rate 1000000 --warmup 1 --duration 5 | grep -oE 'achieved [0-9]+' | grep -oE '[0-9]+')
RATE=$((CAP * 2))
say "capacity ${CAP}/s; offering ${RATE}/s for ${DURATION} s with ${EACH} misbehaving connections of each kind"

python3 "$BENCH/soak/abusers.py" --port "$PORT" --seconds "$((DURATION + 10))" --each "$EACH" \
  --out "$WORK/soak-abusers.json" >"$WORK/soak-abusers.log" 2>&1 &
ABUSERS=$!
RSS="$WORK/soak-rss.txt"
: >"$RSS"
( while kill -0 "$APID" 2>/dev/null; do
    awk "/VmRSS|RssAnon|RssFile/{printf \"%s \", \$2} END{print \"\"}" "/proc/$APID/status" >>"$RSS" 2>/dev/null || true
    sleep 1
  done ) &
SAMPLER=$!
JSONL="$WORK/soak.jsonl"
rm -f "$JSONL"
sleep 5  # the misbehaving clients settle in first
# Up to 1,024 in flight per connection, so that what the server cannot serve waits at the server (where it can
# shed it) rather than in the harness's own queue.
"$HARNESS" run --label arbiterd --port "$PORT" --scenario "$SCENARIO" --model leads --rate "$RATE" --connections 4 \
  --in-flight 1024 --warmup 5 --duration "$DURATION" --timeout-ms 1000 --out "$JSONL" | tee "$WORK/soak-harness.txt"
ALIVE=yes
kill -0 "$APID" 2>/dev/null || ALIVE=no
wait "$ABUSERS" 2>/dev/null || true
ABUSERS=""
START=$(date +%s.%N)
kill -TERM "$APID"
wait "$APID" && STATUS=0 || STATUS=$?
STOP_SECONDS=$(python3 -c "import time; print(f'{time.time() - $START:.2f}')")
kill "$SAMPLER" 2>/dev/null || true
trap - EXIT

python3 - "$JSONL" "$RSS" "$WORK/soak-abusers.json" "$OUT" "$BUDGET_MIB" "$CAP" "$RATE" "$DURATION" "$SCENARIO" "$ALIVE" "$STATUS" "$STOP_SECONDS" "$EACH" <<'PY'
import json, statistics, sys, subprocess, datetime, platform
jsonl, rss, abusers, out, budget, cap, rate, duration, scenario, alive, status, stop, each = sys.argv[1:]
r = json.loads(open(jsonl).readline())
samples = [[int(v) for v in x.split()] for x in open(rss) if len(x.split()) == 3]
kb = [s[0] for s in samples]      # VmRSS: everything resident, the store's mapped pages and the binary included
anon = [s[1] for s in samples]    # RssAnon: the heap
import os
store_kb = os.path.getsize(os.path.join(os.path.dirname(jsonl), "store-release", "data.mdb")) // 1024
ab = json.load(open(abusers)) if abusers else {}
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
lat, acc, accs = r["latency"], r.get("accepted") or {}, r.get("acceptedService") or {}
span = f"{int(float(duration)) // 60} minutes" if float(duration) >= 60 else f"{int(float(duration))} seconds"
lines = [f"# Soak: {span} at twice capacity, with misbehaving clients ({datetime.date.today()})", "",
         f"Machine: {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPUs, Linux {platform.release()}; "
         f"release build, commit {commit}; client, misbehaving clients and server share the machine. Command: `bench/soak/run.sh` "
         f"(DURATION={duration}, BUDGET_MIB={budget}, EACH={each}).", "",
         f"arbiterd defaults except `--memory-budget-mib {budget}`. Capacity measured first: {cap} {scenario} requests/s "
         f"(saturation, 4 connections × 16 in flight); the well-behaved client then offered {rate}/s over 4 connections "
         f"(stamped requests, up to 1,024 in flight per connection, 1 s timeout) while {each} connections of each misbehaving kind ran (bench/soak/abusers.py).", "",
         "| | |", "| --- | --- |",
         f"| arbiterd alive at the end | {alive} |",
         f"| resident memory (VmRSS), max / median / last | {max(kb) // 1024} / {int(statistics.median(kb)) // 1024} / {kb[-1] // 1024} MiB (budget {budget} MiB: resident memory less the store's mapped pages, {store_kb // 1024} MiB of file here) |",
         f"| of which heap (RssAnon), max / median / last | {max(anon) // 1024} / {int(statistics.median(anon)) // 1024} / {anon[-1] // 1024} MiB |",
         f"| well-behaved: answered per second | {r['achievedRate']:.0f} |",
         f"| well-behaved: errors | {', '.join(f'{k} {v}' for k, v in sorted(r['errors'].items())) or 'none'} |",
         f"| well-behaved: all answers, p50 / p99 / p99.9 | {lat['p50']:.0f} / {lat['p99']:.0f} / {lat['p999']:.0f} µs |",
         f"| well-behaved: results (not shed), from the scheduled send, p50 / p99 / p99.9 | {acc.get('p50', 0):.0f} / {acc.get('p99', 0):.0f} / {acc.get('p999', 0):.0f} µs |",
         f"| well-behaved: results (not shed), from the actual send, p50 / p99 / p99.9 | {accs.get('p50', 0):.0f} / {accs.get('p99', 0):.0f} / {accs.get('p999', 0):.0f} µs |",
         f"| SIGTERM to exit | {stop} s, status {status} |", "",
         "Misbehaving clients (connections opened and closed by the server over the run):", "", "```", json.dumps(ab, indent=2, sort_keys=True), "```"]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
