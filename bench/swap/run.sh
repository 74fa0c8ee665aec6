#!/usr/bin/env bash
# The swap scenario (issue 16): steady open-loop load at a fixed rate while a trainer publishes a new version
# every second. Each run: WARMUP s, then STEADY s of load alone, then SWAPS store changes one second apart
# under the same load, in bursts of REST_EVERY with REST_MS of load without changes after each (the quiet
# stretches give a steady p99 beside the swaps: the "alternating" ratio); arbiter-bench traces every request (scheduled, answered, serving version) and
# `swap-tool publish` prints each commit's time (both CLOCK_MONOTONIC), so the report compares p99 during the
# swaps with p99 of the steady part of the same run, and times commit → first answer from the new version.
# The server's memory (RssAnon, RssFile) is sampled every 100 ms and plotted.
#
# Runs: lead-1 at RATE_LEAD/s and rank-200 at RATE_RANK/s (the rank-200 store: 1M items, 100k users), each
# with the default poll (100 ms) and with RELOAD after each publish; lead-1 with rollbacks (publish, then
# roll back, in turn; polled and with RELOAD). Then the memory run: a ranking model whose item table is 1 GiB — first answer after
# process start, and RSS while copies of it are published and swapped in. Writes bench/results/swap-DATE.md
# and its SVG plots.
# The shadow runs set a copy of the active version to score 5% of the requests in the shadow after the steady
# part, and compare the rest of the run with it.
# Each new version changes one value of every float32 tensor under 16 MiB (retrained heads; the embedding
# tables are unchanged and the store shares them) — rank-200-tables-* change the tables too (269 MiB written
# and read per version). The -control runs are the same load while the trainer writes the same versions into a
# copy of the store that the server does not serve (lead-1-control, rank-200-control): what the trainer's writes
# cost the machine, apart from any swap. Every configuration runs ROUNDS times, interleaved; the report takes
# medians. The trainer runs under TRAINER (default `chrt --idle 0`).
#   bench/swap/run.sh      (ROUNDS 3, RATE_LEAD 2000, RATE_RANK 500, CONNECTIONS 4, STEADY 20, SWAPS 20,
#                           REST_EVERY 5, REST_MS 5000, BIG_ITEMS 4194304; ONLY=swaps, ONLY=shadow or ONLY=memory runs one part, FILTER=REGEX
#                           the runs named so)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH="$ROOT/bench"
WORK="$BENCH/.work/swap"
RATE_LEAD=${RATE_LEAD:-2000}
RATE_RANK=${RATE_RANK:-500}
CONNECTIONS=${CONNECTIONS:-4}
WARMUP=${WARMUP:-2}
STEADY=${STEADY:-20}
SWAPS=${SWAPS:-20}
# The changes come in bursts of REST_EVERY, one second apart, each followed by REST_MS of load without changes:
# the quiet stretches between bursts give a steady p99 measured beside the swaps, through the same drift of the
# machine (0 = one burst of SWAPS).
REST_EVERY=${REST_EVERY:-5}
REST_MS=${REST_MS:-5000}
# The trainer's priority: SCHED_IDLE, as docs/DEPLOYMENTS.md advises for a trainer on a serving machine
# (TRAINER="nice -n 10" to compare).
TRAINER=${TRAINER:-chrt --idle 0}
BIG_ITEMS=${BIG_ITEMS:-4194304}
ONLY=${ONLY:-}
ROUNDS=${ROUNDS:-3}
DAY=$(date +%Y-%m-%d)
OUT="$BENCH/results/swap-$DAY.md"
mkdir -p "$WORK"
(cd "$ROOT" && swift build -c release -q --product arbiterd && swift build -c release -q --product arbiter-train)
(cd "$BENCH" && swift build -c release -q --product arbiter-bench && swift build -c release -q --product swap-tool \
  && swift build -c release -q --product rank-store)
BIN=$(cd "$ROOT" && swift build -c release --show-bin-path)
BBIN=$(cd "$BENCH" && swift build -c release --show-bin-path)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# Samples a process's RssAnon and RssFile (kB) every 100 ms with CLOCK_MONOTONIC stamps, until it exits.
sample_rss() {
  python3 - "$1" "$2" >/dev/null 2>&1 <<'PY' &
import sys, time
pid, out = sys.argv[1], sys.argv[2]
with open(out, "w") as f:
    f.write("t_ns,rss_anon_kb,rss_file_kb\n")
    while True:
        try:
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            break
        v = {l.split(":")[0]: l.split()[1] for l in status.splitlines() if l.startswith(("RssAnon", "RssFile"))}
        if "RssAnon" not in v:
            break
        f.write(f"{time.monotonic_ns()},{v['RssAnon']},{v['RssFile']}\n")
        f.flush()
        time.sleep(0.1)
PY
  # (its output goes nowhere: the caller reads this function's output, and would wait for the sampler's end)
  echo $!
}

# --- stores -------------------------------------------------------------------------------------------------
LEAD_STORE="$WORK/lead-store"
if ! "$BIN/arbiter-train" versions --store "$LEAD_STORE" --model leads >/dev/null 2>&1; then
  "$BIN/arbiter-train" gen-data --kind lead-grading --rows 50000 --seed 11 --out "$WORK/leads.csv" >/dev/null
  "$BIN/arbiter-train" train --kind lead-grading --data "$WORK/leads.csv" --store "$LEAD_STORE" --model leads >/dev/null
fi
RANK_STORE="$WORK/rank-store"
if [ ! -f "$WORK/rank-published" ]; then
  rm -rf "$RANK_STORE"
  "$BBIN/rank-store" "$RANK_STORE" rank 100 >/dev/null
  touch "$WORK/rank-published"
fi

# --- one traced run: NAME STORE MODEL SCENARIO RATE PUBLISH-ARGS... -------------------------------------------
run_one() {
  local name=$1 store=$2 model=$3 scenario=$4 rate=$5
  shift 5
  if [ -n "${FILTER:-}" ] && ! [[ "$name" =~ $FILTER ]]; then return 0; fi
  local dir="$WORK/runs/$name"
  rm -rf "$dir"; mkdir -p "$dir"
  # Each run starts from a store whose newest versions are copies of the first: trim what earlier runs added.
  "$BIN/arbiter-train" gc --store "$store" --model "$model" --keep 0 >/dev/null
  local port; port=$(free_port)
  "$BIN/arbiterd" --store "$store" --listen "127.0.0.1:$port" --log-level notice >"$dir/arbiterd.log" 2>&1 &
  local pid=$!
  wait_port "$port"
  local sampler; sampler=$(sample_rss "$pid" "$dir/rss.csv")
  local reload=() target="$store"
  if [ "${1:-}" = "--reload" ]; then reload=(--reload-port "$port"); shift; fi
  # The control: the trainer writes the same versions into another store, which the server does not serve —
  # what the trainer's writes cost the machine, apart from any swap.
  if [ "${1:-}" = "--control" ]; then target=$2; shift 2; fi
  local rest=(); [ "$REST_EVERY" -gt 0 ] && [ "$SWAPS" -gt 1 ] && rest=(--rest-every "$REST_EVERY" --rest-ms "$REST_MS")
  # shellcheck disable=SC2086
  $TRAINER "$BBIN/swap-tool" publish --store "$target" --model "$model" --start-delay-ms $(( (WARMUP + STEADY) * 1000 + 300 )) \
    --count "$SWAPS" --every-ms 1000 "${rest[@]}" "${reload[@]}" "$@" >"$dir/events.jsonl" &
  local publisher=$!
  local rests_s=0; [ ${#rest[@]} -gt 0 ] && rests_s=$(( (SWAPS - 1) / REST_EVERY * REST_MS / 1000 + REST_MS / 1000 ))
  echo "== $name: $scenario at $rate/s, $STEADY s steady then $SWAPS changes $*${reload[*]:+ with RELOAD}"
  "$BBIN/arbiter-bench" run --label "$name" --protocol arbiter --port "$port" --scenario "$scenario" --model "$model" \
    --rate "$rate" --connections "$CONNECTIONS" --warmup "$WARMUP" --duration $(( STEADY + 3 * SWAPS / 2 + 2 + rests_s )) \
    --trace "$dir/trace.csv" --out "$dir/run.jsonl" | head -3
  wait "$publisher"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  echo "$WARMUP" > "$dir/warmup_s"
  # (The load runs STEADY + 2 × SWAPS + 2 s: a trainer writing large versions takes longer than a second each.)
}

if [ -z "$ONLY" ] || [ "$ONLY" = swaps ]; then
  CONTROL_STORE="$WORK/rank-control-store"
  if [ ! -f "$WORK/control-copied" ]; then
    rm -rf "$CONTROL_STORE"; mkdir -p "$CONTROL_STORE"
    mdb_copy -c "$RANK_STORE" "$CONTROL_STORE"
    touch "$WORK/control-copied"
  fi
  LEAD_CONTROL_STORE="$WORK/lead-control-store"
  if [ ! -f "$WORK/lead-control-copied" ]; then
    rm -rf "$LEAD_CONTROL_STORE"; mkdir -p "$LEAD_CONTROL_STORE"
    mdb_copy -c "$LEAD_STORE" "$LEAD_CONTROL_STORE"
    touch "$WORK/lead-control-copied"
  fi
  for r in $(seq 1 "$ROUNDS"); do
    run_one "lead-1-poll.$r" "$LEAD_STORE" leads lead-1 "$RATE_LEAD"
    run_one "lead-1-reload.$r" "$LEAD_STORE" leads lead-1 "$RATE_LEAD" --reload
    run_one "lead-1-rollback.$r" "$LEAD_STORE" leads lead-1 "$RATE_LEAD" --mode rollback
    run_one "lead-1-rollback-reload.$r" "$LEAD_STORE" leads lead-1 "$RATE_LEAD" --reload --mode rollback
    "$BIN/arbiter-train" gc --store "$LEAD_CONTROL_STORE" --model leads --keep 0 >/dev/null
    run_one "lead-1-control.$r" "$LEAD_STORE" leads lead-1 "$RATE_LEAD" --control "$LEAD_CONTROL_STORE"
    # Retrained heads beside unchanged embedding tables (--change small, the default): the store shares the tables.
    run_one "rank-200-poll.$r" "$RANK_STORE" rank rank-200 "$RATE_RANK"
    run_one "rank-200-reload.$r" "$RANK_STORE" rank rank-200 "$RATE_RANK" --reload
    "$BIN/arbiter-train" gc --store "$CONTROL_STORE" --model rank --keep 0 >/dev/null
    run_one "rank-200-control.$r" "$RANK_STORE" rank rank-200 "$RATE_RANK" --control "$CONTROL_STORE"
    # Every table changed too (--change all): 269 MiB written by the trainer and read by the server per version.
    run_one "rank-200-tables-reload.$r" "$RANK_STORE" rank rank-200 "$RATE_RANK" --reload --change all
    "$BIN/arbiter-train" gc --store "$CONTROL_STORE" --model rank --keep 0 >/dev/null
    run_one "rank-200-tables-control.$r" "$RANK_STORE" rank rank-200 "$RATE_RANK" --control "$CONTROL_STORE" --change all
  done
fi
# Shadow: after the steady part, a copy of the active version is published (not activated) and scored in the
# shadow of 5% of the requests, with RELOAD; the rest of the run is compared with the steady part.
if [ -z "$ONLY" ] || [ "$ONLY" = shadow ]; then
  for r in $(seq 1 "$ROUNDS"); do
    run_one "lead-1-shadow.$r" "$LEAD_STORE" leads lead-1 "$RATE_LEAD" --reload --mode shadow --count 1 --change none
    run_one "rank-200-shadow.$r" "$RANK_STORE" rank rank-200 "$RATE_RANK" --reload --mode shadow --count 1 --change none
    "$BIN/arbiter-train" shadow --store "$LEAD_STORE" --model leads --off >/dev/null
    "$BIN/arbiter-train" shadow --store "$RANK_STORE" --model rank --off >/dev/null
  done
fi

# --- memory: a 1 GiB item table ---------------------------------------------------------------------------
if [ -z "$ONLY" ] || [ "$ONLY" = memory ]; then
  BIG_STORE="$WORK/big-store"
  if [ ! -f "$WORK/big-published-$BIG_ITEMS" ]; then
    rm -rf "$BIG_STORE" "$WORK"/big-published-*
    "$BBIN/rank-store" "$BIG_STORE" big 100 "$BIG_ITEMS" >/dev/null
    touch "$WORK/big-published-$BIG_ITEMS"
  fi
  "$BIN/arbiter-train" gc --store "$BIG_STORE" --model big --keep 0 >/dev/null
  dir="$WORK/runs/memory"
  rm -rf "$dir"; mkdir -p "$dir"
  # Start-up: process start → first answer (the page cache holds the store, as on a server that just wrote it).
  cat "$BIG_STORE/data.mdb" >/dev/null
  port=$(free_port)
  for i in 1 2 3; do
    t0=$(python3 -c 'import time; print(time.monotonic_ns())')
    "$BIN/arbiterd" --store "$BIG_STORE" --listen "127.0.0.1:$port" --log-level notice >"$dir/arbiterd-start-$i.log" 2>&1 &
    pid=$!
    t1=$("$BBIN/swap-tool" first-answer --port "$port" --model big)
    echo "$t0 $t1" >> "$dir/startup.txt"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  done
  "$BIN/arbiterd" --store "$BIG_STORE" --listen "127.0.0.1:$port" --log-level notice >"$dir/arbiterd.log" 2>&1 &
  pid=$!
  wait_port "$port"
  sampler=$(sample_rss "$pid" "$dir/rss.csv")
  sleep 2
  # Five new versions, each with a changed 1 GiB table (--change all: written in full and read in full), 4 s apart, at 100 requests/s of rank-200 against it;
  # gc keeps the store to the active version and the two before it.
  "$BBIN/swap-tool" publish --store "$BIG_STORE" --model big --count 5 --every-ms 4000 --gc-keep 2 --change all >"$dir/events.jsonl" &
  publisher=$!
  "$BBIN/arbiter-bench" run --label memory --protocol arbiter --port "$port" --scenario rank-200 --model big \
    --rate 100 --connections 2 --warmup 1 --duration 24 --trace "$dir/trace.csv" --out "$dir/run.jsonl" | head -2
  wait "$publisher"
  sleep 2
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  echo "$((BIG_ITEMS * 64 * 4))" > "$dir/table_bytes"
fi

python3 "$BENCH/swap/analyze.py" "$WORK/runs" "$OUT" "$RATE_LEAD" "$RATE_RANK" "$CONNECTIONS" "$STEADY" "$SWAPS" "$ROUNDS" "$REST_EVERY" "$REST_MS" "$TRAINER"
echo "wrote $OUT"
