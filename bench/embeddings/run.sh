#!/usr/bin/env bash
# Embedding tables (issue 14): ns per random lookup by layout, and resident memory before and after loading
# a table of N ids × D floats from the store. Writes bench/results/embeddings-DATE.md.
#   bench/embeddings/run.sh            N=1000000 D=64 (a 256 MB table)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
N=${N:-1000000}
D=${D:-64}
OUT="$ROOT/bench/results/embeddings-$(date +%Y-%m-%d).md"
(cd "$ROOT/bench" && swift build -c release -q --product embedding-bench)
BIN="$(cd "$ROOT/bench" && swift build -c release --show-bin-path)/embedding-bench"
STORE=$(mktemp -d)/store
TABLE=$("$BIN" "$STORE" "$N" "$D")
{
  echo "# Embedding tables: lookup cost and resident memory ($(date +%Y-%m-%d))"
  echo
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs; release build, commit $(git -C "$ROOT" rev-parse --short HEAD)."
  echo "Command: \`bench/embeddings/run.sh\` (N=$N, D=$D): random ids published as one version, the store opened afresh,"
  echo "best of 5 passes over 2M random lookups of held ids, one thread."
  echo
  echo "$TABLE"
} | tee "$OUT"
