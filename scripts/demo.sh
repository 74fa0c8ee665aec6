#!/usr/bin/env bash
# make demo: generate leads, train and publish a lead-grading model, serve it, score a few leads.
set -euo pipefail
STORE=${1:-./var/store}
PORT=${2:-7878}
MODEL=${3:-leads}
BIN=$(swift build -c release --show-bin-path)
mkdir -p "$(dirname "$STORE")" var

echo "== generating 50,000 synthetic leads"
"$BIN/arbiter-train" gen-data --kind lead-grading --rows 50000 --seed 1 --out var/leads.csv

echo "== training and publishing $MODEL into $STORE"
"$BIN/arbiter-train" train --kind lead-grading --data var/leads.csv --store "$STORE" --model "$MODEL"
"$BIN/arbiter-train" versions --store "$STORE" --model "$MODEL"

echo "== starting arbiterd on 127.0.0.1:$PORT"
"$BIN/arbiterd" --store "$STORE" --listen "127.0.0.1:$PORT" --log-level warning &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  "$BIN/arbiter" ping --host "127.0.0.1:$PORT" --count 1 >/dev/null 2>&1 && break
  sleep 0.1
done
"$BIN/arbiter" ping --host "127.0.0.1:$PORT" --count 3
"$BIN/arbiter" models --host "127.0.0.1:$PORT"

echo "== scoring five leads for one job posting (examples/leads.json)"
"$BIN/arbiter" score --host "127.0.0.1:$PORT" --model "$MODEL" --input examples/leads.json > var/scored.json
python3 - var/scored.json <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"model {r['model']} v{r['version']}  (server queue {r['queue_us']} µs, compute {r['compute_us']} µs)")
print(f"{'lead':>6}  {'grade':>5}  {'p_contact':>9}  {'p_interview':>11}  {'p_hire':>7}")
for row in r["rows"]:
    print(f"{row['id']:>6}  {row['grade']:>5}  {row['p_contact']:>9.3f}  {row['p_interview']:>11.3f}  {row['p_hire']:>7.3f}")
PY

echo "== stopping arbiterd (SIGTERM: graceful)"
kill -TERM $PID
wait $PID
trap - EXIT
echo "demo done"
