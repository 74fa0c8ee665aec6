#!/usr/bin/env bash
# The tree-kernel table: Arbiter's gbdt kernel (as the server runs it: published, loaded from the map)
# against xgboost's inplace_predict, LightGBM's predict and tl2cgen's compiled predictor (the XGBoost model
# compiled to C; left out when treelite/tl2cgen cannot be installed), one thread each, same models (300 trees of depth
# 6 over 40 features) and the same 10,000 rows, at batch sizes 1, 200 and 10,000. REPEATS runs (default 3)
# of each, alternating; the table shows medians. Writes bench/results/gbdt-kernel-DATE.md.
#   bench/gbdt/run.sh            (needs Python with xgboost, lightgbm, numpy: make bench installs them)
set -euo pipefail
BENCH="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$BENCH/.work/gbdt"
REPEATS=${REPEATS:-3}
CPU=${CPU:-1}
OUT="$BENCH/results/gbdt-kernel-$(date +%Y-%m-%d).md"
mkdir -p "$WORK"
python3 -c 'import xgboost, lightgbm, numpy' 2>/dev/null || python3 -m pip install -q xgboost==3.2.0 lightgbm==4.7.0 numpy==2.4.6
python3 -c 'import treelite, tl2cgen' 2>/dev/null || python3 -m pip install -q treelite==4.8.1 tl2cgen==1.0.0 \
  || echo "treelite/tl2cgen did not install: the compiled predictor is left out of the table" >&2
[ -f "$WORK/xgboost.json" ] || python3 "$BENCH/gbdt/kernel_peers.py" make "$WORK"
(cd "$BENCH" && swift build -c release -q --product gbdt-kernel)
BIN=$(cd "$BENCH" && swift build -c release --show-bin-path)
raw="$WORK/raw.jsonl"
: > "$raw"
for i in $(seq 1 "$REPEATS"); do
  echo "== run $i of $REPEATS"
  taskset -c "$CPU" "$BIN/gbdt-kernel" "$WORK/xgboost.json" "$WORK/rows.csv" 2 | sed 's/"library": "arbiter/"model": "xgboost.json", "library": "arbiter/' >> "$raw"
  taskset -c "$CPU" "$BIN/gbdt-kernel" "$WORK/lightgbm.txt" "$WORK/rows.csv" 2 | sed 's/"library": "arbiter/"model": "lightgbm.txt", "library": "arbiter/' >> "$raw"
  taskset -c "$CPU" python3 "$BENCH/gbdt/kernel_peers.py" time "$WORK" >> "$raw"
done
python3 - "$raw" "$OUT" "$REPEATS" "$CPU" <<'PY'
import json, sys, statistics, platform, subprocess, datetime
raw, out, repeats, cpu = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = [json.loads(l) for l in open(raw) if l.strip()]
groups = {}
for r in rows:
    name = r["library"] + (f" on {r['model']}" if "model" in r else "")
    groups.setdefault((name, r["batch"]), []).append(r)
cpuinfo = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
lines = [f"# Tree kernel, one thread: Arbiter against the libraries ({datetime.date.today()})", "",
         f"Machine: {cpuinfo}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPUs, pinned to CPU {cpu} "
         f"(taskset); Linux {platform.release()}. Models: bench/gbdt/kernel_peers.py (300 trees of depth 6 over 40 features, "
         "binary:logistic / LightGBM binary with num_leaves 64, max_depth 6); 10,000 rows with ~5% missing values; "
         "tl2cgen compiles the XGBoost model with gcc and its default options, and each call includes making its DMatrix. "
         f"Median of {repeats} runs, each the median call over 2 s. Arbiter: `gbdt-kernel` (the served path: the version "
         "published into a store and scored from the map through `ScoringModel.score`).", "",
         "| implementation | batch | µs per call | ns per row |", "| --- | ---: | ---: | ---: |"]
for (name, batch), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    us = statistics.median(r["us_per_call"] for r in rs)
    ns = statistics.median(r["ns_per_row"] for r in rs)
    lines.append(f"| {name} | {batch:,} | {us:,.1f} | {ns:,.0f} |")
b200 = {n: statistics.median(r["ns_per_row"] for r in rs) for (n, b), rs in groups.items() if b == 200}
# The target compares with the faster of the two training libraries; the compiled predictor is shown beside.
fastest_lib = min(v for n, v in b200.items() if n.startswith(("xgboost", "lightgbm")))
compiled = [(n, v) for n, v in b200.items() if n.startswith("tl2cgen")]
for n, v in sorted(b200.items()):
    if n.startswith("arbiter"):
        lines.append("")
        lines.append(f"At batch 200, {n}: {v / fastest_lib:.2f}x the faster library's time per row (target: at most 0.5x)"
                     + "".join(f"; {v / c:.2f}x {cn}'s" for cn, c in compiled) + ".")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
