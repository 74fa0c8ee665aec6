#!/usr/bin/env bash
# The cluster scenarios (issue 18's acceptance), on a local cluster of 4 replicas, 3 etcd members and SeaweedFS
# that scripts/cluster.sh starts in bench/.work/cluster. Release builds. Writes bench/results/cluster-DATE.md,
# the summaries (cluster-DATE-*.json) and the plots (cluster-DATE-versions.svg, cluster-DATE-failover.svg).
#
#   bench/cluster/run.sh                 every scenario (about 15 minutes once built)
#   ONLY="failover partial" bench/cluster/run.sh   some of: consistency failover partial distribution coldstart
#   PROMOTIONS=100 RATE=N                the consistency run's promotions; a rate instead of half the measured capacity
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$(pwd)"
WORK="$ROOT/bench/.work/cluster-run"
CLUSTER_DIR="$ROOT/bench/.work/cluster"
DATE="$(date +%Y-%m-%d)"
OUT="$ROOT/bench/results"
ONLY="${ONLY:-}"
PROMOTIONS="${PROMOTIONS:-100}"
mkdir -p "$WORK" "$OUT"

./scripts/install-deps.sh
# SwiftPM prints compile errors on standard output: the log keeps both, and is shown when a build fails.
: >"$WORK/build.log"
swift build -c release --product arbiterd >>"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
swift build -c release --product arbiter-train >>"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
BIN="$(swift build -c release --show-bin-path)"
for product in cluster-bench rank-store route-store; do
  (cd bench && swift build -c release --product "$product" >>"$WORK/build.log" 2>&1) || { cat "$WORK/build.log"; exit 1; }
done
BBIN="$(cd bench && swift build -c release --show-bin-path)"

# A fresh cluster each run (its data would otherwise carry versions over).
scripts/cluster.sh stop --dir "$CLUSTER_DIR" >/dev/null 2>&1 || true
rm -rf "$CLUSTER_DIR"
trap 'scripts/cluster.sh stop --dir "$CLUSTER_DIR" >/dev/null 2>&1 || true' EXIT
# One event loop per replica: four replicas share this machine's two cores (with etcd, SeaweedFS and the load).
# Staging decompresses into /dev/shm (arbiterd --cluster-scratch; docs/CLUSTER.md) when it has room for four
# copies of the 1.15 GiB version: on the shared disk, those copies were written back while the imports flushed.
# The pushes' scratch copy (the export: 1.15 GiB for the large version) goes there
# too (arbiter-train push --work-dir): a trainer is not on the replicas' disk in production, here it is.
SCRATCH=""
PUSH_SCRATCH=()
if [ -d /dev/shm ] && [ "$(df --output=avail -B1G /dev/shm | tail -1)" -ge 12 ]; then
  SCRATCH="--cluster-scratch /dev/shm"
  PUSH_SCRATCH=(--push-work-dir /dev/shm)
fi
export ARBITERD_ARGS="${ARBITERD_ARGS:---threads 1 $SCRATCH}"
echo "replicas: arbiterd $ARBITERD_ARGS; pushes' scratch: ${PUSH_SCRATCH[1]:-the cluster directory}"
scripts/cluster.sh start --dir "$CLUSTER_DIR" --replicas 4
eval "$(scripts/cluster.sh env --dir "$CLUSTER_DIR")"

# The trainer's lead model (v1), pushed and promoted: every scenario's load scores it.
# (A new trainer store each run: the scenarios publish up to a hundred versions into it.)
TRAINER="$WORK/trainer"
rm -rf "$TRAINER"
[ -f "$WORK/leads.csv" ] || "$BIN/arbiter-train" gen-data --kind lead-grading --rows 20000 --seed 5 --out "$WORK/leads.csv" >/dev/null
"$BIN/arbiter-train" train --kind lead-grading --data "$WORK/leads.csv" --store "$TRAINER" --model leads --max-epochs 4 >/dev/null
"$BIN/arbiter-train" push --store "$TRAINER" --model leads --version 1 --s3 "$ARBITER_S3" --bucket "$ARBITER_BUCKET" --etcd "$ARBITER_ETCD" >/dev/null
"$BIN/arbiter-train" cluster promote --etcd "$ARBITER_ETCD" --model leads --version 1

run() {  # scenario, extra args...
  local s="$1"; shift
  echo "== $s"
  "$BBIN/cluster-bench" --scenario "$s" --trainer-store "$TRAINER" --out "$OUT/cluster-$DATE-$s.json" "${PUSH_SCRATCH[@]}" "$@" | tail -n 40
}
want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

# Capacity through the balancing client; the other scenarios run at half of it.
if [ -z "${RATE:-}" ]; then
  run capacity --duration 10
  RATE=$(python3 -c "import json; print(int(json.load(open('$OUT/cluster-$DATE-capacity.json'))['capacity_rps'] / 2))")
fi
echo "rate: $RATE requests/s"
want consistency && run consistency --rate "$RATE" --promotions "$PROMOTIONS"
want failover && run failover --rate "$RATE" --duration 30
if want partial; then
  EXTRA="$WORK/extra"
  if [ ! -f "$EXTRA/data.mdb" ]; then
    "$BBIN/rank-store" "$EXTRA" rank 10 1000000 >/dev/null      # 256 MiB of item vectors
    "$BBIN/route-store" "$EXTRA" route 20 >/dev/null
  fi
  run partial --rate "$RATE" --extra-store "$EXTRA"
fi
if want distribution || want coldstart; then
  BIG="$WORK/big"
  if [ ! -f "$BIG/data.mdb" ]; then
    "$BBIN/rank-store" "$BIG" big 10 4194304 >/dev/null          # a 1 GiB item table (4,194,304 x 64 floats)
  fi
  # Cold start serves the big version the distribution pushes and promotes: it runs first either way.
  run distribution --extra-store "$BIG"
  want coldstart && run coldstart --rate "$RATE" --extra-store "$BIG"
fi

python3 bench/cluster/report.py "$OUT" "$DATE"
echo "results: $OUT/cluster-$DATE.md"
