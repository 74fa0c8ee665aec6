#!/usr/bin/env bash
# make quality: held-out AUC of arbiter-train's lead-grading stages next to LightGBM's, same CSV, same split.
set -euo pipefail
ROWS=${1:-200000}
BIN=$(swift build -c release --show-bin-path)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 -c "import lightgbm, sklearn" 2>/dev/null || pip install -q lightgbm scikit-learn
"$BIN/arbiter-train" gen-data --kind lead-grading --rows "$ROWS" --seed 7 --out "$WORK/leads.csv"
"$BIN/arbiter-train" train --kind lead-grading --data "$WORK/leads.csv" --store "$WORK/store" --model leads \
  --metrics-out "$WORK/arbiter.json"
python3 scripts/lightgbm_reference.py "$WORK/leads.csv" > "$WORK/lightgbm.json"
python3 - "$WORK/arbiter.json" "$WORK/lightgbm.json" <<'PY'
import json, sys
a, l = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
worst = 0.0
print(f"{'stage':<10} {'arbiter AUC':>11} {'LightGBM AUC':>12} {'diff':>7}")
for s in ("contact", "interview", "hire"):
    d = a[s + ".auc"] - l[s]["auc"]
    worst = max(worst, abs(d))
    print(f"{s:<10} {a[s + '.auc']:>11.4f} {l[s]['auc']:>12.4f} {d:>+7.4f}")
print(f"largest |diff| {worst:.4f} (target: within 0.01)")
sys.exit(0 if worst <= 0.01 else 1)
PY
