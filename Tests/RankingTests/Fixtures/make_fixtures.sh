#!/usr/bin/env bash
# The LightGBM head of RankingTests: generated ranking data (arbiter-train gen-data --kind ranking --users 400
# --items 200 --per-user 25 --seed 4), its head rows (arbiter-train train --write-head-rows), and
# examples/ranking/train_lightgbm_head.py's model of p(reply | chat) with 2,000 check rows and LightGBM's own
# predictions for them. Needs Python with lightgbm 4.7.0 and numpy; run from anywhere after `swift build`.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
BIN="$(cd "$ROOT" && swift build --show-bin-path)"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BIN/arbiter-train" gen-data --kind ranking --users 400 --items 200 --per-user 25 --seed 4 --out "$WORK/imp.csv"
"$BIN/arbiter-train" train --kind ranking --data "$WORK/imp.csv" --store "$WORK/store" --model feed --max-epochs 4 \
  --write-head-rows "$WORK/rows.csv" >/dev/null
python3 "$ROOT/examples/ranking/train_lightgbm_head.py" "$WORK/rows.csv" "$WORK/head"
cp "$WORK/head/model.txt" "$HERE/lightgbm-head.txt"
cp "$WORK/head/check.csv" "$HERE/lightgbm-head-check.csv"
cp "$WORK/head/check.predictions" "$HERE/lightgbm-head-check.predictions"
