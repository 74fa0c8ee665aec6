#!/usr/bin/env bash
# What a change costs on the serving path: two arbiterd builds (A and B) on the same store, driven in turn
# with the same load, ROUNDS times, A B B A A B ... so that the machine's drift falls on both. Prints each
# run and the medians per build, with B's ratio to A.
#
#   bench/ab.sh A_ARBITERD B_ARBITERD
#
# Typical: a release build of the base commit in a worktree against this checkout's release build:
#   git worktree add /tmp/base <rev> && (cd /tmp/base && swift build -c release --product arbiterd)
#   swift build -c release && bench/ab.sh /tmp/base/.build/release/arbiterd .build/release/arbiterd
#
# Environment: SCENARIO (lead-1), RATE (20000 offered/s; with SATURATION=1 the cap on prepared requests),
# CONNECTIONS (4), ROUNDS (6), DURATION (5 s), WARMUP (1 s), A_ARGS / B_ARGS (extra arbiterd options for one
# side, e.g. B_ARGS="--metrics-listen 0"), OUT (the runs as JSON lines; default bench/.work/ab.jsonl).
# SATURATION=1 measures capacity (requests/s) instead of latency at a fixed rate.
set -euo pipefail
[ $# -eq 2 ] || { sed -n 2,16p "$0" >&2; exit 2; }
A_BIN=$(realpath "$1")
B_BIN=$(realpath "$2")
for b in "$A_BIN" "$B_BIN"; do [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 2; }; done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$ROOT/bench/.work/ab"
SCENARIO=${SCENARIO:-lead-1}
RATE=${RATE:-20000}
CONNECTIONS=${CONNECTIONS:-4}
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
OUT=${OUT:-$WORK/ab.jsonl}
mkdir -p "$WORK"
rm -f "$OUT"

echo "== building this checkout's release tools and arbiter-bench"
(cd "$ROOT" && swift build -c release -q --product arbiter-train)
(cd "$ROOT/bench" && swift build -c release -q --product arbiter-bench)
TRAIN="$(cd "$ROOT" && swift build -c release --show-bin-path)/arbiter-train"
HARNESS="$(cd "$ROOT/bench" && swift build -c release --show-bin-path)/arbiter-bench"
STORE="$WORK/store"
if ! "$TRAIN" versions --store "$STORE" --model leads >/dev/null 2>&1; then
  rm -rf "$STORE"
  "$TRAIN" gen-data --kind lead-grading --rows 50000 --seed 11 --out "$WORK/leads.csv"
  "$TRAIN" train --kind lead-grading --data "$WORK/leads.csv" --store "$STORE" --model leads >/dev/null
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
start() {  # binary, name, port, extra args (in this shell: the pid is kept for the cleanup)
  # shellcheck disable=SC2086
  "$1" --store "$STORE" --listen "127.0.0.1:$3" --log-level warning $4 >"$WORK/$2.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$2 did not start (log: $WORK/$2.log)" >&2
  exit 1
}
A_PORT=$(free_port)
start "$A_BIN" A "$A_PORT" "${A_ARGS:-}"
B_PORT=$(free_port)
start "$B_BIN" B "$B_PORT" "${B_ARGS:-}"

extra=()
[ "${SATURATION:-0}" = 1 ] && extra+=(--saturation)
run() {  # label port
  "$HARNESS" run --label "$1" --port "$2" --scenario "$SCENARIO" --model leads --rate "$RATE" \
    --connections "$CONNECTIONS" --warmup "$WARMUP" --duration "$DURATION" --out "$OUT" "${extra[@]}" | sed 's/^/  /'
}
echo "== $ROUNDS rounds of $SCENARIO, ${DURATION} s each, A=$A_BIN B=$B_BIN"
for i in $(seq 1 "$ROUNDS"); do
  if [ $((i % 2)) = 1 ]; then run A "$A_PORT"; run B "$B_PORT"; else run B "$B_PORT"; run A "$A_PORT"; fi
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def med(label, f):
    return statistics.median(f(r) for r in runs if r["label"] == label)
rows = [("achieved /s", lambda r: r["achievedRate"]), ("p50 µs", lambda r: r["latency"]["p50"]),
        ("p99 µs", lambda r: r["latency"]["p99"]), ("p99.9 µs", lambda r: r["latency"]["p999"]),
        ("server compute p50 µs", lambda r: r["serverCompute"]["p50"]), ("server compute p99 µs", lambda r: r["serverCompute"]["p99"])]
errors = {l: sum(sum(r["errors"].values()) for r in runs if r["label"] == l) for l in "AB"}
print(f"medians over {sum(r['label'] == 'A' for r in runs)} runs each (errors A {errors['A']}, B {errors['B']})")
print(f"{'':24}{'A':>12}{'B':>12}{'B/A':>8}")
for name, f in rows:
    a, b = med("A", f), med("B", f)
    print(f"{name:24}{a:12.1f}{b:12.1f}{(b / a if a else float('nan')):8.3f}")
PY
