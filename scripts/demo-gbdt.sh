#!/usr/bin/env bash
# make demo-gbdt: train a LightGBM model in Python, import it, serve it, score with the CLI, and compare the
# served scores with LightGBM's own predictions (within 1e-5). Needs Python with lightgbm and numpy.
set -euo pipefail
PORT=${1:-7879}
BIN=$(swift build -c release --show-bin-path)
OUT=var/gbdt
STORE=var/gbdt-store
rm -rf "$STORE"
python3 -c 'import lightgbm, numpy' 2>/dev/null || python3 -m pip install -q lightgbm==4.7.0 numpy==2.4.6
echo "== training a LightGBM model (examples/gbdt/train_lightgbm.py)"
python3 examples/gbdt/train_lightgbm.py "$OUT"
echo "== importing it"
"$BIN/arbiter-train" import --format lightgbm-text --file "$OUT/model.txt" --store "$STORE" --model approvals \
  --context-features 2 --categorical region=4 --check-rows "$OUT/check.csv" --check-predictions "$OUT/check.predictions"
echo "== serving it on 127.0.0.1:$PORT"
"$BIN/arbiterd" --store "$STORE" --listen "127.0.0.1:$PORT" --log-level warning &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do "$BIN/arbiter" ping --host "127.0.0.1:$PORT" --count 1 >/dev/null 2>&1 && break; sleep 0.1; done
echo "== scoring $OUT/request.json"
"$BIN/arbiter" score --host "127.0.0.1:$PORT" --model approvals --input "$OUT/request.json" | tee "$OUT/scored.json"
python3 - "$OUT/scored.json" "$OUT/expected.json" <<'PY'
import json, sys
scored = {str(r["id"]): r["score"] for r in json.load(open(sys.argv[1]))["rows"]}
expected = json.load(open(sys.argv[2]))
worst = max(abs(scored[k] - v) for k, v in expected.items())
for k, v in expected.items():
    print(f"  candidate {k}: arbiterd {scored[k]:.7f}  LightGBM {v:.7f}")
print(f"largest difference: {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY
