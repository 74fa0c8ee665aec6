#!/usr/bin/env bash
# make test-sanitize: the whole suite under AddressSanitizer, then under ThreadSanitizer, each in its own
# build folder (.build-address, .build-thread). Fails on any sanitizer report. On the 2-core CI machine,
# from a clean clone: a few minutes each, instrumented build included.
# Tests run one at a time here (--no-parallel). In parallel, every test target shares one process whose
# Swift-concurrency pool has two threads; under the sanitizers a test that computes for a while holds one of them
# 5-15x longer, and CI saw every other test's awaits stall for 90 s at once (servers timed their clients out,
# waits gave up). Serially, TSan took 154 s here against 110 s in parallel (2026-12-02), and no test waits on
# another's computation.
#   scripts/test-sanitize.sh            both
#   scripts/test-sanitize.sh thread     one
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizers=("$@")
[ ${#sanitizers[@]} -gt 0 ] || sanitizers=(address thread)
# A crashing test must end the run at once, not wait for swift-backtrace (shared/notes: sanitizers).
export SWIFT_BACKTRACE=enable=no
# As in scripts/test.sh: NIO misuse crashes instead of printing.
export SWIFTNIO_STRICT=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}"
# Suppressions: one false positive of Swift's uninstrumented concurrency runtime (see the file).
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan-suppressions.txt}"
for s in "${sanitizers[@]}"; do
  case "$s" in address|thread) ;; *) echo "unknown sanitizer '$s' (address or thread)"; exit 2 ;; esac
  dir=".build-$s"
  log=$(mktemp)
  start=$(date +%s)
  echo "== $s sanitizer: building into $dir"
  swift build --build-tests --sanitize="$s" --scratch-path "$dir" 2>&1 | grep -E "error|warning: .*sanitiz" || true
  echo "== $s sanitizer: testing"
  status=0
  swift test --skip-build --no-parallel --sanitize="$s" --scratch-path "$dir" >"$log" 2>&1 || status=$?
  total=$(grep -Eo 'Test run with [0-9]+ tests?' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
  if grep -qE "ERROR: AddressSanitizer|WARNING: ThreadSanitizer|SUMMARY: (Address|Thread)Sanitizer" "$log"; then
    grep -E -A40 "ERROR: AddressSanitizer|WARNING: ThreadSanitizer" "$log" | head -120
    echo "$s sanitizer: REPORTS FOUND (log: $log)"
    exit 1
  fi
  if [ "$status" -ne 0 ]; then
    grep -E "✘|error:|fatal" "$log" | head -40
    echo "$s sanitizer: swift test failed (exit $status; log: $log)"
    exit "$status"
  fi
  echo "$s sanitizer: $total tests passed, no reports ($(( $(date +%s) - start )) s, build included)"
  rm -f "$log"
done
