#!/usr/bin/env bash
# make test: build everything (tests included) and run the whole suite; ends with a plain summary line.
set -euo pipefail
swift build --build-tests
# SwiftNIO's strict mode turns misuse it would only print about (scheduling on a loop that has shut down,
# as a shutdown that released a NIO object too late once did) into a crash the suite reports.
export SWIFTNIO_STRICT=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Two runs: everything else in parallel, then the cluster's tests alone — they start three replicas, three
# etcd members and an S3 server, which took the CPU from tests with deadlines (the allocation solver's) when
# they shared the machine.
CLUSTER='ClusterTests|BalancedClientTests'
status=0
swift test --skip-build --skip "$CLUSTER" 2>&1 | tee "$log" || status=$?
# Swift Testing's own closing line, e.g. "✔ Test run with 44 tests in 9 suites passed after 5.2 seconds."
total=$(grep -Eo 'Test run with [0-9]+ tests?' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
failed=$(grep -Eo 'failed after .* with [0-9]+ issues?' "$log" | grep -Eo 'with [0-9]+' | grep -Eo '[0-9]+' | tail -1 || true)
if [ "$status" -ne 0 ]; then
  echo "swift test failed (exit $status)"
  exit "$status"
fi
swift test --skip-build --filter "$CLUSTER" 2>&1 | tee "$log" || status=$?
cluster=$(grep -Eo 'Test run with [0-9]+ tests?' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
if [ "$status" -ne 0 ]; then
  echo "swift test (the cluster's tests) failed (exit $status)"
  exit "$status"
fi
[ "$total" -gt 0 ] && [ "$cluster" -gt 0 ] || { echo "no tests ran"; exit 1; }
total=$((total + cluster))
# The Python client: golden vectors, and a live arbiterd of this build (skipped, saying so, without Python).
python_summary="Python client tests skipped: python3 is not installed"
if command -v python3 >/dev/null 2>&1; then
  pylog=$(mktemp)
  trap 'rm -f "$log" "$pylog"' EXIT
  pystatus=0
  ARBITER_BIN="$(swift build --show-bin-path)" python3 -m unittest discover -s clients/python/tests -v 2>&1 | tee "$pylog" || pystatus=$?
  if [ "$pystatus" -ne 0 ]; then
    echo "Python client tests failed (exit $pystatus)"
    exit "$pystatus"
  fi
  pyran=$(grep -Eo '^Ran [0-9]+ tests?' "$pylog" | grep -Eo '[0-9]+' || echo 0)
  pyskipped=$(grep -Eo 'skipped=[0-9]+' "$pylog" | grep -Eo '[0-9]+' || echo 0)
  python_summary="Python client: $pyran ran, $pyskipped skipped"
  grep -E "\.\.\. skipped" "$pylog" | sed 's/^/  /' || true
fi
echo "tests: $total passed, ${failed:-0} failed; $python_summary"
