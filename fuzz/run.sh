#!/usr/bin/env bash
# Fuzzes every decoder of outside input with libFuzzer and AddressSanitizer (fuzz/Package.swift lists the
# targets). Builds the targets, seeds a corpus for each from the protocol's golden vectors, the model
# files in fuzz/seeds and a generated leads CSV, then runs each target.
#
#   fuzz/run.sh                 every target for SECONDS_EACH seconds (default 150: about 12 million
#                               executions in all on 2 cores; fuzz-server, a whole connection per input, is
#                               the slowest at ~400/s)
#   SECONDS_EACH=10 fuzz/run.sh the CI smoke (make fuzz-smoke)
#   RUNS=N SECONDS_EACH=0 ...   N executions per target instead
#   TARGETS="fuzz-frames" ...   some targets only
#
# Fails if any target crashes, leaks, exceeds 2 GiB or spends over 10 s on one input; the input that did it
# is kept in fuzz/artifacts/. Corpora grow in fuzz/corpus/ (not committed) and are reused by the next run.
set -euo pipefail
FUZZ="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$FUZZ/.." && pwd)"
RUNS=${RUNS:-1000000}
SECONDS_EACH=${SECONDS_EACH:-150}
TARGETS=${TARGETS:-"fuzz-frames fuzz-zstd fuzz-server fuzz-import fuzz-csv"}
FLAGS=(-c debug -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library)

echo "== building the fuzz targets (libFuzzer + AddressSanitizer)"
(cd "$FUZZ" && swift build "${FLAGS[@]}" -q)
BIN=$(cd "$FUZZ" && swift build "${FLAGS[@]}" --show-bin-path)

# --- seed corpora --------------------------------------------------------------------------------------
CORPUS="$FUZZ/corpus"
mkdir -p "$CORPUS" "$FUZZ/artifacts"
for t in fuzz-frames fuzz-zstd fuzz-server fuzz-import fuzz-csv; do mkdir -p "$CORPUS/$t"; done
VECTORS="$ROOT/proto-spec/vectors"
tobin() { perl -ne 's/\s+//g; print pack("H*", $_)' "$1"; }  # perl-base is in every Debian
for v in "$VECTORS"/*.hex; do
  name=$(basename "$v" .hex)
  tobin "$v" >"$CORPUS/fuzz-frames/vector-$name"
  # The body alone, compressed (and the frame itself, not compressed: what a broken client sends).
  if command -v zstd >/dev/null; then
    tobin "$v" | tail -c +33 | zstd -q -c --content-size >"$CORPUS/fuzz-zstd/vector-$name.zst" 2>/dev/null || true
  fi
  tobin "$v" >"$CORPUS/fuzz-zstd/raw-$name"
done
# Whole conversations for the server: HELLO then each request vector, in pieces of 1, 64 and 1020 bytes.
hello=$(mktemp)
tobin "$VECTORS/hello.hex" >"$hello"
for req in ping list_models model_info score score_stamped score_missing score_topk_pinned; do
  [ -f "$VECTORS/$req.hex" ] || continue
  for piece in '\x00' '\x02' '\x05'; do
    { printf "$piece"; cat "$hello"; tobin "$VECTORS/$req.hex"; tobin "$VECTORS/$req.hex"; } \
      >"$CORPUS/fuzz-server/conversation-$req-$(printf '%s' "$piece" | tr -d '\\')"
  done
done
# The same against a server that requires a token (first byte's bit 7): with the token, and without.
tobin "$VECTORS/hello_token.hex" >"$hello.token"
for req in list_models score; do
  { printf '\x82'; cat "$hello.token"; tobin "$VECTORS/$req.hex"; } >"$CORPUS/fuzz-server/token-$req"
  { printf '\x85'; cat "$hello"; tobin "$VECTORS/$req.hex"; } >"$CORPUS/fuzz-server/no-token-$req"
done
rm -f "$hello" "$hello.token"
for f in "$FUZZ"/seeds/xgboost-*.json; do { printf '\x00'; cat "$f"; } >"$CORPUS/fuzz-import/$(basename "$f")"; done
for f in "$FUZZ"/seeds/lightgbm-*.txt; do { printf '\x01'; cat "$f"; } >"$CORPUS/fuzz-import/$(basename "$f")"; done
if [ ! -f "$CORPUS/fuzz-csv/leads.csv" ]; then
  (cd "$ROOT" && swift build -q --product arbiter-train)
  leads=$(mktemp)
  "$(cd "$ROOT" && swift build --show-bin-path)/arbiter-train" gen-data --kind lead-grading --rows 12 --seed 3 --out "$leads" >/dev/null
  { printf '\x03'; cat "$leads"; } >"$CORPUS/fuzz-csv/leads.csv"
  { printf '\x03'; printf 'a,b,c,d\n1,2,,nan\n0.5,-1e3,3,4\n'; } >"$CORPUS/fuzz-csv/rows.csv"
  rm -f "$leads"
fi

# --- run -----------------------------------------------------------------------------------------------
total=0
status=0
for t in $TARGETS; do
  if [ "$SECONDS_EACH" -gt 0 ]; then limit=(-max_total_time="$SECONDS_EACH"); what="$SECONDS_EACH s"; else limit=(-runs="$RUNS"); what="$RUNS runs"; fi
  echo "== $t ($what)"
  log="$FUZZ/artifacts/$t.log"
  # SWIFT_BACKTRACE=enable=no: on a crash, libFuzzer's own report and its crash file, at once (the Swift
  # backtracer would hold the run open). Leak checks stay on.
  if SWIFT_BACKTRACE=enable=no LSAN_OPTIONS="suppressions=$FUZZ/lsan.supp" "$BIN/$t" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$FUZZ/artifacts/$t-" "$CORPUS/$t" >"$log" 2>&1; then
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
    total=$((total + runs))
    echo "   $runs executions, no crash, no sanitizer report ($(grep -oE 'exec/s: [0-9]+' "$log" | tail -1))"
  else
    status=1
    echo "   FAILED: $(grep -E 'ERROR|SUMMARY|deadly signal|Test unit written' "$log" | head -5)" >&2
    echo "   log: $log" >&2
  fi
done
echo "== $total executions in all"
exit $status
