#!/usr/bin/env bash
# The XGBoost head of RoutingTests: generated routing data (arbiter-train gen-data --kind routing --applicants
# 3000 --lenders 12 --seed 2), its head rows (arbiter-train train --write-head-rows), and
# examples/routing/train_xgboost_head.py's p(approve) model (at most 60 trees) with 500 check rows and
# XGBoost's own predictions for them. Needs Python with xgboost 3.2.0 and numpy; run from anywhere after
# `swift build`.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
BIN="$(cd "$ROOT" && swift build --show-bin-path)"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BIN/arbiter-train" gen-data --kind routing --applicants 3000 --lenders 12 --seed 2 --out "$WORK/d.csv" --lenders-out "$WORK/l.csv"
"$BIN/arbiter-train" train --kind routing --data "$WORK/d.csv" --lenders "$WORK/l.csv" --store "$WORK/store" --model route \
  --max-epochs 2 --write-head-rows "$WORK/rows.csv" >/dev/null
python3 "$ROOT/examples/routing/train_xgboost_head.py" "$WORK/rows.csv" "$WORK/head" 60
cp "$WORK/head/approve.json" "$HERE/xgboost-approve.json"
head -n 501 "$WORK/head/check.csv" > "$HERE/xgboost-approve-check.csv"
head -n 500 "$WORK/head/check.predictions" > "$HERE/xgboost-approve-check.predictions"
