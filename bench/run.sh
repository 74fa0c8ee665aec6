#!/usr/bin/env bash
# The benchmark suite: builds everything in release mode, starts Arbiter and every peer on free loopback
# ports, drives each with arbiter-bench at the same rates and concurrency, and writes bench/results/.
#
#   bench/run.sh quick   all scenarios and peers (make bench, < 10 minutes once built)
#   bench/run.sh full    quick, then latency–throughput sweeps (make bench-full)
#   bench/run.sh smoke   CI: builds bench/ (debug), runs its tests, then 10 s of ping and of lead-1
#                        against arbiterd, and 3 s of lead-1 over mutual TLS with a token; fails on any error
#   bench/run.sh tls     what TLS costs: the same loads over plain TCP, TLS, and mutual TLS with a token,
#                        alternating, REPEATS times (make bench-tls); writes bench/results/tls-DATE.md
#
# Environment: REPEATS (3), DURATION (5 s), WARMUP (1 s), TIMEOUT_MS (1000: the same request timeout for every
# server, Arbiter and peers alike), NAME (results file name, default MODE-DATE),
# SKIP_PYTHON=1 / SKIP_GRPC=1 to leave out those peers, BUILD=debug for the smoke.
set -euo pipefail
MODE=${1:-quick}
case "$MODE" in quick|full|smoke|tls) ;; *) echo "usage: bench/run.sh quick|full|smoke|tls" >&2; exit 2 ;; esac
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="$ROOT/bench"
WORK="$BENCH/.work"
RESULTS="$BENCH/results"
REPEATS=${REPEATS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
TIMEOUT_MS=${TIMEOUT_MS:-1000}
NAME=${NAME:-$MODE-$(date +%Y-%m-%d)}
# The CI smoke is a check, not a result: its output stays out of the committed results.
[ "$MODE" = smoke ] && RESULTS="$WORK/results"
MODEL=leads
mkdir -p "$WORK" "$RESULTS"
say() { echo "== $*"; }

# --- build -------------------------------------------------------------------------------------------
CONFIG=release
[ "$MODE" = smoke ] && CONFIG=${BUILD:-debug}
say "building Arbiter and arbiter-bench ($CONFIG)"
(cd "$ROOT" && swift build -c "$CONFIG" -q)
BIN=$(cd "$ROOT" && swift build -c "$CONFIG" --show-bin-path)
if [ "${SKIP_GRPC:-0}" = 1 ]; then
  (cd "$BENCH" && swift build -c "$CONFIG" -q --product arbiter-bench)
else
  (cd "$BENCH" && swift build -c "$CONFIG" -q)
fi
if [ "$MODE" = smoke ]; then
  say "the harness's own tests (a server that stalls once: the corrected figures must show it)"
  if ! (cd "$BENCH" && swift test >"$WORK/bench-tests.log" 2>&1); then
    tail -n 40 "$WORK/bench-tests.log" >&2
    echo "bench tests failed (log: $WORK/bench-tests.log)" >&2
    exit 1
  fi
  grep -E "Test run with" "$WORK/bench-tests.log" || true
fi
BBIN=$(cd "$BENCH" && swift build -c "$CONFIG" --show-bin-path)
HARNESS="$BBIN/arbiter-bench"

# --- data and model -----------------------------------------------------------------------------------
STORE="$WORK/store-$CONFIG"
if [ ! -f "$WORK/leads.csv" ]; then
  "$BIN/arbiter-train" gen-data --kind lead-grading --rows 50000 --seed 11 --out "$WORK/leads.csv"
fi
if ! "$BIN/arbiter-train" versions --store "$STORE" --model "$MODEL" >/dev/null 2>&1; then
  say "training the lead-grading model into $STORE"
  rm -rf "$STORE"
  "$BIN/arbiter-train" train --kind lead-grading --data "$WORK/leads.csv" --store "$STORE" --model "$MODEL" >/dev/null
fi
# The tree model of the gbdt scenarios (300 trees of depth 6 over 40 features, trained with xgboost by
# bench/gbdt/kernel_peers.py), imported as model `trees`; left out when Python lacks xgboost (the smoke).
TREES=0
if [ "$MODE" != smoke ] && python3 -c 'import xgboost, lightgbm, numpy' 2>/dev/null; then
  if ! "$BIN/arbiter-train" versions --store "$STORE" --model trees >/dev/null 2>&1; then
    say "importing the 300-tree benchmark model into $STORE"
    [ -f "$WORK/gbdt/xgboost.json" ] || python3 "$BENCH/gbdt/kernel_peers.py" make "$WORK/gbdt"
    "$BIN/arbiter-train" import --format xgboost-json --file "$WORK/gbdt/xgboost.json" --store "$STORE" --model trees >/dev/null
  fi
  TREES=1
fi

# --- servers -------------------------------------------------------------------------------------------
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() {  # port, name, seconds
  for _ in $(seq 1 $(( ${3:-30} * 10 ))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$2 did not start listening on 127.0.0.1:$1 (log: $WORK/$2.log)" >&2
  tail -n 20 "$WORK/$2.log" >&2 || true
  exit 1
}

A_PORT=$(free_port)
"$BIN/arbiterd" --store "$STORE" --listen "127.0.0.1:$A_PORT" --log-level warning >"$WORK/arbiterd.log" 2>&1 &
PIDS+=($!)
wait_port "$A_PORT" arbiterd

# TLS servers (smoke and tls): the test-only certificates of the TLS tests, and a token made by `arbiter token`.
if [ "$MODE" = smoke ] || [ "$MODE" = tls ]; then
  CERTS="$ROOT/Tests/ArbiterServerTests/Fixtures/tls"
  rm -f "$WORK/tls-tokens.txt"
  "$BIN/arbiter" token --rights score,info --name bench --append-to "$WORK/tls-tokens.txt" >"$WORK/tls-token"
  T_PORT=$(free_port)   # TLS, server certificate only
  "$BIN/arbiterd" --store "$STORE" --listen "127.0.0.1:$T_PORT" --log-level warning \
    --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key" >"$WORK/arbiterd-tls.log" 2>&1 &
  PIDS+=($!)
  M_PORT=$(free_port)   # mutual TLS and a token
  "$BIN/arbiterd" --store "$STORE" --listen "127.0.0.1:$M_PORT" --log-level warning \
    --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key" --tls-client-ca "$CERTS/ca.pem" \
    --tokens "$WORK/tls-tokens.txt" >"$WORK/arbiterd-mtls.log" 2>&1 &
  PIDS+=($!)
  wait_port "$T_PORT" arbiterd-tls
  wait_port "$M_PORT" arbiterd-mtls
  TLS_ARGS=(--tls-ca "$CERTS/ca.pem")
  MTLS_ARGS=(--tls-ca "$CERTS/ca.pem" --tls-cert "$CERTS/client.pem" --tls-key "$CERTS/client.key" --token-file "$WORK/tls-token")
fi

OUT="$RESULTS/$NAME.jsonl"
rm -f "$OUT"
# Waits until the machine is idle (under 15% busy over half a second, at most 60 s): a peer that was
# driven past its capacity keeps working through its backlog after the run, and would steal the CPU
# from the next run otherwise.
quiet() {
  python3 - <<'PY'
import sys, time
def snap():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(v), v[3] + v[4]
deadline = time.time() + 60
while True:
    t0, i0 = snap(); time.sleep(0.5); t1, i1 = snap()
    busy = 1 - (i1 - i0) / max(1, t1 - t0)
    if busy < 0.15:
        break
    if time.time() > deadline:
        print(f"warning: the machine is still {busy:.0%} busy after 60 s; running anyway", file=sys.stderr)
        break
PY
}
run() {  # label protocol port scenario rate connections [extra arbiter-bench options...]
  local label=$1 proto=$2 port=$3 scenario=$4 rate=$5 conns=$6
  shift 6
  quiet
  "$HARNESS" run --label "$label" --protocol "$proto" --port "$port" --scenario "$scenario" --model "$MODEL" \
    --rate "$rate" --connections "$conns" --warmup "$WARMUP" --duration "$DURATION" --timeout-ms "$TIMEOUT_MS" --out "$OUT" "$@"
}

if [ "$MODE" = smoke ]; then
  say "smoke: 10 s of ping and of lead-1 against arbiterd ($CONFIG build)"
  DURATION=10 REPEATS=1
  run arbiterd arbiter "$A_PORT" ping 2000 1 --fail-on-error
  run arbiterd arbiter "$A_PORT" lead-1 2000 2 --fail-on-error
  DURATION=3
  run arbiterd-mtls arbiter "$M_PORT" lead-1 2000 2 --fail-on-error "${MTLS_ARGS[@]}"
  "$HARNESS" render --input "$OUT" --dir "$RESULTS" --report "$NAME.md" >/dev/null
  say "smoke passed"
  exit 0
fi

if [ "$MODE" = tls ]; then
  say "TLS: lead-1 at 5,000/s and lead-100 at 1,000/s, 1 connection, over plain TCP, TLS and mutual TLS + token, $REPEATS rounds"
  for i in $(seq 1 "$REPEATS"); do
    for spec in "lead-1 5000" "lead-100 1000"; do
      set -- $spec
      run plain arbiter "$A_PORT" "$1" "$2" 1 --fail-on-error
      run tls arbiter "$T_PORT" "$1" "$2" 1 --fail-on-error "${TLS_ARGS[@]}"
      run mtls+token arbiter "$M_PORT" "$1" "$2" 1 --fail-on-error "${MTLS_ARGS[@]}"
    done
  done
  python3 - "$OUT" "$RESULTS/$NAME.md" "$REPEATS" "$DURATION" <<'PY'
import json, statistics, subprocess, sys, datetime, platform
jsonl, out, repeats, duration = sys.argv[1:]
runs = [json.loads(l) for l in open(jsonl)]
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
def med(label, scen, q):
    v = [r["latency"][q] for r in runs if r["label"] == label and r["scenario"] == scen]
    return statistics.median(v) if v else float("nan")
lines = [f"# What TLS costs ({datetime.date.today()})", "",
         f"Machine: {cpu}, 2 CPUs, Linux {platform.release()}; release build, commit {commit}; harness and servers share the machine.",
         f"Command: `make bench-tls` (bench/run.sh tls): three arbiterd on the same store — plain TCP; TLS (server certificate, "
         f"EC P-256, TLS 1.3 as negotiated); mutual TLS with a client certificate and a token — each driven by arbiter-bench over "
         f"1 connection at a fixed rate, {duration} s measured, the three alternating, {repeats} rounds; medians of the rounds. "
         "Latency is from the scheduled send to the answer, at the client, so it includes the client's own encryption and decryption "
         "(BoringSSL through swift-nio-ssl on both sides). The handshake is not measured (connections are opened before the run).", "",
         "| load | transport | p50 µs | p99 µs | p99.9 µs | p50 vs plain | p99 vs plain |", "| --- | --- | --- | --- | --- | --- | --- |"]
for scen, rate in [("lead-1", "5,000/s"), ("lead-100", "1,000/s")]:
    base50, base99 = med("plain", scen, "p50"), med("plain", scen, "p99")
    for label in ["plain", "tls", "mtls+token"]:
        p50, p99, p999 = med(label, scen, "p50"), med(label, scen, "p99"), med(label, scen, "p999")
        lines.append(f"| {scen} at {rate} | {label} | {p50:.0f} | {p99:.0f} | {p999:.0f} | {p50 / base50:.2f}× | {p99 / base99:.2f}× |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
  exit 0
fi

# A second arbiterd with one event loop, for the capacity runs: client and servers share two cores, the
# harness takes two threads, and Redis serves from one; this shows Arbiter on the same thread budget.
A1_PORT=$(free_port)
"$BIN/arbiterd" --store "$STORE" --listen "127.0.0.1:$A1_PORT" --threads 1 --log-level warning >"$WORK/arbiterd-1loop.log" 2>&1 &
PIDS+=($!)
wait_port "$A1_PORT" arbiterd-1loop

F_PORT=$(free_port)
cc -O2 -pthread -o "$WORK/floor_echo" "$BENCH/c/floor_echo.c"
cc -O2 -o "$WORK/floor_client" "$BENCH/c/floor_client.c"
"$WORK/floor_echo" "$F_PORT" >"$WORK/floor.log" 2>&1 &
PIDS+=($!)
wait_port "$F_PORT" floor

R_PORT=$(free_port)
if command -v redis-server >/dev/null; then
  redis-server --port "$R_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  wait_port "$R_PORT" redis
else
  echo "redis-server is missing (make bench installs it): leaving Redis out" >&2
  R_PORT=""
fi

G_PORT=""
if [ "${SKIP_GRPC:-0}" != 1 ]; then
  G_PORT=$(free_port)
  "$BBIN/grpc-peer" --store "$STORE" --listen "127.0.0.1:$G_PORT" >"$WORK/grpc-swift.log" 2>&1 &
  PIDS+=($!)
  wait_port "$G_PORT" grpc-swift
fi

P_PORT=""
if [ "${SKIP_PYTHON:-0}" != 1 ]; then
  P_PORT=$(free_port)
  python3 "$BENCH/python/grpc_lightgbm_peer.py" --data "$WORK/leads.csv" --port "$P_PORT" >"$WORK/grpc-python.log" 2>&1 &
  PIDS+=($!)
  wait_port "$P_PORT" grpc-python 180
fi

# --- the machine ---------------------------------------------------------------------------------------
MACHINE="$RESULTS/$NAME-machine.md"
{
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB;"
  echo "kernel $(uname -r); $(swift --version 2>/dev/null | head -1);"
  echo "Arbiter and arbiter-bench built with \`swift build -c release\` (-O, whole-module); C floor with \`cc -O2\`;"
  echo "$(redis-server --version 2>/dev/null | cut -d' ' -f1-3); Python $(python3 -c 'import sys, grpc, lightgbm; print(sys.version.split()[0], "grpcio", grpc.__version__, "lightgbm", lightgbm.__version__)' 2>/dev/null);"
  echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%MZ). Client and servers share the machine."
  echo "Each run: ${WARMUP} s warm-up, ${DURATION} s measured, ${REPEATS} repeats (medians shown)."
} >"$MACHINE"
cat "$MACHINE"

R() { [ "$REPEATS" -gt 1 ] && echo "--repeats $REPEATS" || true; }

# grpcio's own client against the grpc-swift peer, with the harness's request bytes: a stock gRPC client's
# view of the same server, so the gRPC figures do not rest on the harness's HTTP/2 client alone. Only at rates
# the Python client sustains: at 5,000/s it costs ~130 µs of CPU per call, and with the peer's ~200 µs the
# two cores are full (its figures would be its own).
STOCK=0
[ -n "$G_PORT" ] && python3 -c 'import grpc' 2>/dev/null && STOCK=1
stock() {  # scenario rate connections
  [ "$STOCK" = 1 ] || return 0
  local msg="$WORK/$1.grpc" method
  method=$("$HARNESS" grpc-message --scenario "$1" --model "$MODEL" --out "$msg")
  quiet
  python3 "$BENCH/python/grpcio_load.py" --port "$G_PORT" --method "$method" --message "$msg" --scenario "$1" \
    --label "grpc-swift (grpcio client)" --rate "$2" --connections "$3" --warmup "$WARMUP" --duration "$DURATION" \
    --timeout-ms "$TIMEOUT_MS" --repeats "$REPEATS" --out "$OUT"
}

# --- the quick suite -----------------------------------------------------------------------------------
say "ping, 1 connection, 5,000/s"
run c-floor arbiter "$F_PORT" ping 5000 1 $(R)
run arbiterd arbiter "$A_PORT" ping 5000 1 $(R)
[ -n "$R_PORT" ] && run redis resp "$R_PORT" ping 5000 1 $(R)
[ -n "$G_PORT" ] && run grpc-swift grpc "$G_PORT" ping 5000 1 $(R)
[ -n "$P_PORT" ] && run grpc-python grpc "$P_PORT" ping 5000 1

say "lead-1, 1 connection, 5,000/s"
run c-floor arbiter "$F_PORT" lead-1 5000 1 $(R)
run arbiterd arbiter "$A_PORT" lead-1 5000 1 $(R)
[ -n "$G_PORT" ] && run grpc-swift grpc "$G_PORT" lead-1 5000 1 $(R)
[ -n "$P_PORT" ] && run grpc-python grpc "$P_PORT" lead-1 5000 1

say "lead-1, 4 connections, 20,000/s (the Python peer cannot take this rate: see its saturation below)"
run c-floor arbiter "$F_PORT" lead-1 20000 4 $(R)
run arbiterd arbiter "$A_PORT" lead-1 20000 4 $(R)
[ -n "$G_PORT" ] && run grpc-swift grpc "$G_PORT" lead-1 20000 4

if [ "$TREES" = 1 ]; then
  say "gbdt-200 (200 candidates, 300 trees of depth 6), 4 connections, 500/s"
  run c-floor arbiter "$F_PORT" gbdt-200 500 4 $(R)
  run arbiterd arbiter "$A_PORT" gbdt-200 500 4 $(R)
  [ -n "$G_PORT" ] && run grpc-swift grpc "$G_PORT" gbdt-200 500 4 $(R)
  stock gbdt-200 500 4
fi

say "lead-1, 1 connection, 300/s (a rate every server here sustains)"
run c-floor arbiter "$F_PORT" lead-1 300 1 $(R)
run arbiterd arbiter "$A_PORT" lead-1 300 1 $(R)
[ -n "$G_PORT" ] && run grpc-swift grpc "$G_PORT" lead-1 300 1 $(R)
stock lead-1 300 1
[ -n "$P_PORT" ] && run grpc-python grpc "$P_PORT" lead-1 300 1 $(R)

say "lead-100, 1 connection, 1,000/s"
run c-floor arbiter "$F_PORT" lead-100 1000 1 $(R)
run arbiterd arbiter "$A_PORT" lead-100 1000 1 $(R)
[ -n "$G_PORT" ] && run grpc-swift grpc "$G_PORT" lead-100 1000 1 $(R)
stock lead-100 1000 1
[ -n "$P_PORT" ] && run grpc-python grpc "$P_PORT" lead-100 1000 1

say "capacity: ping at 64 connections x 16 in flight, lead-1 at 4 x 16"
sat() { quiet; "$HARNESS" run --label "$1" --protocol "$2" --port "$3" --scenario "$4" --model "$MODEL" --connections "$5" \
  --warmup 1 --duration 3 --in-flight 16 --timeout-ms 2000 --saturation --rate 1000000 --out "$OUT" $(R); }
sat c-floor arbiter "$F_PORT" ping 64
sat arbiterd arbiter "$A_PORT" ping 64
sat arbiterd-1loop arbiter "$A1_PORT" ping 64
[ -n "$R_PORT" ] && sat redis resp "$R_PORT" ping 64
sat arbiterd arbiter "$A_PORT" lead-1 4
sat arbiterd-1loop arbiter "$A1_PORT" lead-1 4
[ -n "$G_PORT" ] && sat grpc-swift grpc "$G_PORT" lead-1 4
[ -n "$P_PORT" ] && sat grpc-python grpc "$P_PORT" lead-1 4

# --- references: other tools' own figures ---------------------------------------------------------------
REF="$RESULTS/$NAME-reference.txt"
{
  echo "# Reference figures from other tools, same machine, same run ($NAME)"
  echo
  echo "## C ping-pong client against the C echo floor (closed loop, 1 connection, 64-byte frames, 100k round trips)"
  "$WORK/floor_client" "$F_PORT" 100000 32
  echo "## C ping-pong client against arbiterd PING (same client, same frames)"
  "$WORK/floor_client" "$A_PORT" 100000 32
  if command -v sockperf >/dev/null; then
    S_PORT=$(free_port)
    sockperf server --tcp -i 127.0.0.1 -p "$S_PORT" >/dev/null 2>&1 &
    SP=$!
    sleep 0.5
    echo "## sockperf ping-pong, TCP, 64-byte messages, 5 s (sockperf reports HALF the round trip: double it)"
    sockperf ping-pong --tcp -i 127.0.0.1 -p "$S_PORT" -m 64 -t 5 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | grep -E "avg-latency|percentile (50|99|99\.9)00 =|percentile 50\.000 =|percentile 99\.000 =" || true
    kill "$SP" 2>/dev/null || true
    wait "$SP" 2>/dev/null || true
  fi
  if [ -n "$R_PORT" ] && command -v redis-benchmark >/dev/null; then
    echo "## redis-benchmark PING, 1 connection"
    redis-benchmark -p "$R_PORT" -c 1 -n 100000 -t ping_mbulk 2>&1 | grep -vE "^\s*$" | tail -n 8
    echo "## redis-benchmark PING, 64 connections"
    redis-benchmark -p "$R_PORT" -c 64 -n 400000 -t ping_mbulk 2>&1 | grep -vE "^\s*$" | tail -n 8
  fi
} >"$REF" 2>&1
cat "$REF"

# --- sweeps (full) -------------------------------------------------------------------------------------
if [ "$MODE" = full ]; then
  sweep() {  # label protocol port scenario connections
    quiet
    "$HARNESS" sweep --label "$1" --protocol "$2" --port "$3" --scenario "$4" --model "$MODEL" \
      --connections "$5" --in-flight 16 --timeout-ms 2000 --warmup 1 --duration 3 --out "$OUT"
  }
  say "sweeps: 10% to 120% of saturation"
  sweep arbiterd arbiter "$A_PORT" ping 4
  [ -n "$R_PORT" ] && sweep redis resp "$R_PORT" ping 4
  sweep arbiterd arbiter "$A_PORT" lead-1 4
  [ -n "$G_PORT" ] && sweep grpc-swift grpc "$G_PORT" lead-1 4
fi

"$HARNESS" render --input "$OUT" --dir "$RESULTS" --report "$NAME.md" --machine "$MACHINE" --slo-p99-us 1000
say "results: $RESULTS/$NAME.md"
