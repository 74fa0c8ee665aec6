#!/usr/bin/env bash
# The rank-200 scenario (issue 14): arbiterd serving a ranking model of the issue's size — 1M items and 100k
# users with embeddings of dimension 64, three tree heads of depth 6 — at 500 requests/s over 4 connections,
# each request 200 candidate items for one user, top 20 after the diversity rerank. Two models: heads of 100
# trees, and of 300. Reports p50/p99/p99.9 (from the scheduled send), the server's compute time, and arbiterd's
# resident memory after loading and after the runs. Writes bench/results/rank-DATE.md.
#   bench/rank/run.sh        REPEATS (3) runs of DURATION (20 s) per model, alternating; RATE (500), CONNECTIONS (4)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH="$ROOT/bench"
WORK="$BENCH/.work/rank"
REPEATS=${REPEATS:-3}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-2}
RATE=${RATE:-500}
CONNECTIONS=${CONNECTIONS:-4}
OUT="$BENCH/results/rank-$(date +%Y-%m-%d).md"
mkdir -p "$WORK"
(cd "$ROOT" && swift build -c release -q --product arbiterd)
(cd "$BENCH" && swift build -c release -q --product rank-store && swift build -c release -q --product arbiter-bench \
  && swift build -c release -q --product grpc-peer)
BIN=$(cd "$ROOT" && swift build -c release --show-bin-path)
BBIN=$(cd "$BENCH" && swift build -c release --show-bin-path)
STORE="$WORK/store"
if [ ! -f "$WORK/published" ]; then
  rm -rf "$STORE"
  "$BBIN/rank-store" "$STORE" rank 100
  "$BBIN/rank-store" "$STORE" rank300 300
  touch "$WORK/published"
fi
# The model alone, one thread, in this process (rank-store --time): what a request costs before any serving.
ALONE=$("$BBIN/rank-store" --time "$STORE" rank; "$BBIN/rank-store" --time "$STORE" rank300)
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
rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$PID/status"; }
RSS_LOADED=$(rss)
RAW="$WORK/runs.jsonl"
: > "$RAW"
for i in $(seq 1 "$REPEATS"); do
  for model in rank rank300; do
    echo "== round $i of $REPEATS: $model"
    "$BBIN/arbiter-bench" run --label "arbiterd $model" --protocol arbiter --port "$PORT" --scenario rank-200 --model "$model" \
      --rate "$RATE" --connections "$CONNECTIONS" --warmup "$WARMUP" --duration "$DURATION" --out "$RAW" >/dev/null
    "$BBIN/arbiter-bench" run --label "grpc-swift $model" --protocol grpc --port "$G_PORT" --scenario rank-200 --model "$model" \
      --rate "$RATE" --connections "$CONNECTIONS" --warmup "$WARMUP" --duration "$DURATION" --out "$RAW" >/dev/null
  done
done
RSS_AFTER=$(rss)
STORE_MB=$(du -sm "$STORE" | cut -f1)
ALONE_AFTER=$("$BBIN/rank-store" --time "$STORE" rank; "$BBIN/rank-store" --time "$STORE" rank300)
python3 - "$RAW" "$OUT" "$REPEATS" "$DURATION" "$RATE" "$CONNECTIONS" "$RSS_LOADED" "$RSS_AFTER" "$STORE_MB" "$ALONE" "$ALONE_AFTER" <<'PY'
import json, statistics, subprocess, sys, datetime, platform
raw, out, repeats, duration, rate, conns, rss_loaded, rss_after, store_mb, alone, alone_after = sys.argv[1:]
runs = [json.loads(l) for l in open(raw) if l.strip()]
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
lines = [f"# rank-200: a ranking model of the issue's size ({datetime.date.today()})", "",
         f"Machine: {cpu}, 2 CPUs, Linux {platform.release()}; release build, commit {commit}; harness and server share the machine.",
         f"Command: `bench/rank/run.sh` (REPEATS={repeats}, DURATION={duration} s). The store: `rank-store` publishes random embeddings "
         "for 1,000,000 items and 100,000 users (dimension 64) and three heads of random perfect trees of depth 6 over the 13-value "
         "head row (4 user features, 8 item features, the dot product), fused by Σ w·log p, at most 3 items per category; model `rank` "
         "has 100 trees per head, `rank300` 300. The load: arbiter-bench's `rank-200` — each SCORE one user and 200 items (ids spread "
         "over the tables, 256 different requests sent in turn), top 20 after the rerank — open loop at "
         f"{rate}/s over {conns} connections, latency from the scheduled send (coordinated omission corrected); medians of the rounds.", "",
         "The grpc-swift peer (bench/Sources/grpc-peer) serves the same store through the same plugin code and the same "
         "allocation-free path, over gRPC (bench/proto/scorer.proto: subject_id, top_k, the answered rows' ids).", "",
         "| server | model | p50 µs | p99 µs | p99.9 µs | max µs | server compute p50 / p99 µs | achieved /s | errors |",
         "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
for label in ["arbiterd rank", "grpc-swift rank", "arbiterd rank300", "grpc-swift rank300"]:
    server, model = label.split(" ")
    rs = [r for r in runs if r["label"] == label]
    if not rs:
        continue
    med = lambda f: statistics.median(f(r) for r in rs)
    errors = sum(sum(r["errors"].values()) for r in rs)
    fmt = lambda v: "—" if v != v else f"{v:.0f}"
    sc = lambda q: med(lambda r: (r.get("serverCompute") or {}).get(q, float("nan")))
    lines.append(f"| {server} | {model} ({'100' if model == 'rank' else '300'} trees per head) | {med(lambda r: r['latency']['p50']):.0f} | "
                 f"{med(lambda r: r['latency']['p99']):.0f} | {med(lambda r: r['latency']['p999']):.0f} | {med(lambda r: r['latency']['max']):.0f} | "
                 f"{fmt(sc('p50'))} / {fmt(sc('p99'))} | {med(lambda r: r['achievedRate']):.0f} | {errors} |")
lines += ["", f"Resident memory of arbiterd (VmRSS): {rss_loaded} MiB once both models were loaded, {rss_after} MiB after the runs; "
          f"the store holds {store_mb} MiB (two versions, each with its own 256 MiB item table and 25 MiB user table).",
          "", "The model alone (`rank-store --time`: one thread, no server, 2,000 calls of the same kind of request), before and after the runs:",
          ""] + [f"- {l}" for l in (alone + "\n" + alone_after).splitlines() if l.strip()]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
