#!/usr/bin/env bash
# The allocation solver alone (issue 19): generated instances solved exactly, times and the optimum against
# the greedy pass on the same values. Release build, one thread.
#   bench/alloc/run.sh     (RUNS_SMALL 1000, RUNS_LARGE 5)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH="$ROOT/bench"
RUNS_SMALL=${RUNS_SMALL:-1000}
RUNS_LARGE=${RUNS_LARGE:-5}
(cd "$BENCH" && swift build -c release -q --product alloc-solver)
BBIN=$(cd "$BENCH" && swift build -c release --show-bin-path)
echo "500 leads x 200 agents, 30% of pairs allowed, 1 slot per lead:"
"$BBIN/alloc-solver" 500 200 0.30 "$RUNS_SMALL"
echo "20,000 leads x 2,000 agents, 5% of pairs allowed (2M pairs), 1 slot per lead:"
"$BBIN/alloc-solver" 20000 2000 0.05 "$RUNS_LARGE"
echo "20,000 leads x 2,000 agents, 5%, 2 slots per lead:"
"$BBIN/alloc-solver" 20000 2000 0.05 "$RUNS_LARGE" 2
