#!/usr/bin/env bash
# The route-30 scenario (issue 15): arbiterd serving a routing model — the 30 lenders and rules of
# `gen-data --kind routing --seed 1`, two heads of 100 trees of depth 6 (p(approve), amount) — at 2,000
# requests/s over 4 connections, each request one applicant and its 30 lenders, top 5. The grpc-swift peer
# serves the same store through the same plugin code. Reports p50/p99/p99.9 (from the scheduled send), the
# server's compute time, the model's own cost, and the floor (PING at the same rate and connections). Writes bench/results/route-DATE.md.
#   bench/route/run.sh        REPEATS (3) runs of DURATION (20 s) per server, alternating; RATE (2000), CONNECTIONS (4)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH="$ROOT/bench"
WORK="$BENCH/.work/route"
REPEATS=${REPEATS:-3}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-2}
RATE=${RATE:-2000}
CONNECTIONS=${CONNECTIONS:-4}
OUT="$BENCH/results/route-$(date +%Y-%m-%d).md"
mkdir -p "$WORK"
(cd "$ROOT" && swift build -c release -q --product arbiterd)
(cd "$BENCH" && swift build -c release -q --product route-store && swift build -c release -q --product arbiter-bench \
  && swift build -c release -q --product grpc-peer)
BIN=$(cd "$ROOT" && swift build -c release --show-bin-path)
BBIN=$(cd "$BENCH" && swift build -c release --show-bin-path)
STORE="$WORK/store"
rm -rf "$STORE"
"$BBIN/route-store" "$STORE" route 100
ALONE=$("$BBIN/route-store" --time "$STORE" route)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
"$BIN/arbiterd" --store "$STORE" --listen "127.0.0.1:$PORT" --log-level warning >"$WORK/arbiterd.log" 2>&1 &
PID=$!
G_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
"$BBIN/grpc-peer" --store "$STORE" --listen "127.0.0.1:$G_PORT" >"$WORK/grpc-peer.log" 2>&1 &
GPID=$!
trap 'kill -TERM $PID $GPID 2>/dev/null || true; wait $PID $GPID 2>/dev/null || true' EXIT
for p in $PORT $G_PORT; do
  for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
done
RAW="$WORK/runs.jsonl"
: > "$RAW"
for i in $(seq 1 "$REPEATS"); do
  echo "== round $i of $REPEATS"
  "$BBIN/arbiter-bench" run --label "arbiterd" --protocol arbiter --port "$PORT" --scenario route-30 --model route \
    --rate "$RATE" --connections "$CONNECTIONS" --warmup "$WARMUP" --duration "$DURATION" --out "$RAW" >/dev/null
  # The floor: the same server, rate and connections, PING (no model, no features) — what the machine and the
  # harness cost before any scoring.
  "$BBIN/arbiter-bench" run --label "arbiterd ping" --protocol arbiter --port "$PORT" --scenario ping \
    --rate "$RATE" --connections "$CONNECTIONS" --warmup "$WARMUP" --duration "$DURATION" --out "$RAW" >/dev/null
  "$BBIN/arbiter-bench" run --label "grpc-swift" --protocol grpc --port "$G_PORT" --scenario route-30 --model route \
    --rate "$RATE" --connections "$CONNECTIONS" --warmup "$WARMUP" --duration "$DURATION" --out "$RAW" >/dev/null
done
RSS=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$PID/status")
python3 - "$RAW" "$OUT" "$REPEATS" "$DURATION" "$RATE" "$CONNECTIONS" "$RSS" "$ALONE" <<'PY'
import json, statistics, subprocess, sys, datetime, platform
raw, out, repeats, duration, rate, conns, rss, alone = sys.argv[1:]
runs = [json.loads(l) for l in open(raw) if l.strip()]
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
lines = [f"# route-30: a routing model of the issue's size ({datetime.date.today()})", "",
         f"Machine: {cpu}, 2 CPUs, Linux {platform.release()}; release build, commit {commit}; harness and server share the machine.",
         f"Command: `bench/route/run.sh` (REPEATS={repeats}, DURATION={duration} s). The store: `route-store` publishes a routing "
         "version over the 30 lenders and rules of `arbiter-train gen-data --kind routing --seed 1`, with two heads of 100 random "
         "perfect trees of depth 6 over the 11-value head row (8 applicant features, capacity, load, the lender): p(approve) and the "
         "amount; value p × amount × take rate; every channel at a 50% model share, ε 0.05. The load: arbiter-bench's `route-30` — each "
         "SCORE one applicant and its 30 lenders (one in ten without capacity; 256 different requests and routing keys sent in turn), "
         f"top 5 — open loop at {rate}/s over {conns} connections, latency from the scheduled send (coordinated omission corrected); "
         "medians of the rounds. Target (issue 15): p99 ≤ 200 µs.", "",
         "The grpc-swift peer (bench/Sources/grpc-peer) serves the same store through the same plugin code, over gRPC "
         "(bench/proto/scorer.proto, with routing_key).", "",
         "`arbiterd ping` is the floor: the same server, rate and connections answering PING (no model, no features).", "",
         "| server | p50 µs | p99 µs | p99.9 µs | max µs | server compute p50 / p99 µs | achieved /s | errors |",
         "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
for label in ["arbiterd", "arbiterd ping", "grpc-swift"]:
    rs = [r for r in runs if r["label"] == label]
    if not rs:
        continue
    med = lambda f: statistics.median(f(r) for r in rs)
    errors = sum(sum(r["errors"].values()) for r in rs)
    fmt = lambda v: "—" if v != v else f"{v:.0f}"
    sc = lambda q: med(lambda r: (r.get("serverCompute") or {}).get(q, float("nan")))
    lines.append(f"| {label} | {med(lambda r: r['latency']['p50']):.0f} | {med(lambda r: r['latency']['p99']):.0f} | "
                 f"{med(lambda r: r['latency']['p999']):.0f} | {med(lambda r: r['latency']['max']):.0f} | "
                 f"{fmt(sc('p50'))} / {fmt(sc('p99'))} | {med(lambda r: r['achievedRate']):.0f} | {errors} |")
lines += ["", "Each round, per server: " + ", ".join(
              f"{r['label']} p99 {r['latency']['p99']:.0f}" for r in runs), "",
          f"Resident memory of arbiterd (VmRSS) after the runs: {rss} MiB.", "",
          "The model alone (`route-store --time`: one thread, no server, 5,000 calls of the same kind of request):", "",
          f"- {alone}"]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
