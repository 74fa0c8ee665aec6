#!/usr/bin/env bash
# A local Arbiter cluster on loopback, for trying the cluster out, its tests and its benchmarks:
# 3 etcd members, a SeaweedFS server with its S3 gateway (disk storage), and N arbiterd replicas in cluster mode.
#
#   scripts/cluster.sh start [--replicas N] [--dir DIR] [--base-port P] [--debug]
#   scripts/cluster.sh status            # the control plane's view (arbiter-train cluster status)
#   scripts/cluster.sh env               # export lines for ARBITER_ETCD, ARBITER_S3, ARBITER_BUCKET and the S3 keys
#   scripts/cluster.sh stop              # stops everything it started (the data stays in DIR)
#   scripts/cluster.sh start-replica K   # (re)starts replica K, e.g. after a kill
#   scripts/cluster.sh start-etcd K      # (re)starts etcd member K
#   scripts/cluster.sh start-s3          # (re)starts SeaweedFS
#
# Ports (all on 127.0.0.1, from --base-port P, default 24000): etcd clients P..P+2 and peers P+10..P+12,
# S3 P+20 (master P+21, volume P+22, filer P+23; SeaweedFS also takes each port + 10000 for gRPC),
# replicas P+30.. and their admin ports (/metrics, /ready) P+40.. . Logs and pids are in DIR/logs, DIR/pids.
# The replicas share download slots (arbiterd --cluster-download-lock DIR/download-slot): DOWNLOAD_SLOTS of them
# download and import at once (default 2; 0: no slots, each downloads on its own). Faults are injected by signals: kill -KILL / -STOP / -CONT "$(cat DIR/pids/r1)".
set -euo pipefail
cd "$(dirname "$0")/.."

cmd="${1:-}"
shift || true
DIR="${CLUSTER_DIR:-var/cluster}"
REPLICAS=4
BASE=24000
CONFIG=release
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) REPLICAS="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    --base-port) BASE="$2"; shift 2 ;;
    --debug) CONFIG=debug; shift ;;
    *) break ;;
  esac
done
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
STATE="$DIR/cluster.env"
# A started cluster's settings win over the flags (status, stop and restarts find it as it was started).
if [ "$cmd" != start ] && [ -f "$STATE" ]; then
  # shellcheck disable=SC1090
  . "$STATE"
fi

ACCESS_KEY="${ACCESS_KEY:-arbiter-local}"
SECRET_KEY="${SECRET_KEY:-arbiter-local-secret}"
BUCKET="${BUCKET:-arbiter}"
etcd_client() { echo $((BASE + $1)); }
etcd_peer() { echo $((BASE + 10 + $1)); }
S3_PORT=$((BASE + 20))
replica_port() { echo $((BASE + 30 + $1)); }
admin_port() { echo $((BASE + 40 + $1)); }
ETCD="http://127.0.0.1:$(etcd_client 0),http://127.0.0.1:$(etcd_client 1),http://127.0.0.1:$(etcd_client 2)"
S3="http://127.0.0.1:$S3_PORT"

bin_dir() {
  local flag=()
  [ "${CONFIG:-release}" = release ] && flag=(-c release)
  swift build "${flag[@]}" --show-bin-path
}

running() { [ -f "$DIR/pids/$1" ] && kill -0 "$(cat "$DIR/pids/$1")" 2>/dev/null; }

wait_http() {  # URL SECONDS: until it answers at all
  local deadline=$((SECONDS + $2))
  until curl -s -o /dev/null --max-time 1 "$1"; do
    [ $SECONDS -lt $deadline ] || { echo "no answer from $1 within $2 s" >&2; return 1; }
    sleep 0.2
  done
}

start_etcd() {
  local k="$1" cluster=""
  for i in 0 1 2; do cluster+="${cluster:+,}e$i=http://127.0.0.1:$(etcd_peer $i)"; done
  local state=new
  [ -d "$DIR/etcd/e$k" ] && state=existing
  running "e$k" && return 0
  etcd --name "e$k" --data-dir "$DIR/etcd/e$k" \
    --listen-client-urls "http://127.0.0.1:$(etcd_client "$k")" --advertise-client-urls "http://127.0.0.1:$(etcd_client "$k")" \
    --listen-peer-urls "http://127.0.0.1:$(etcd_peer "$k")" --initial-advertise-peer-urls "http://127.0.0.1:$(etcd_peer "$k")" \
    --initial-cluster "$cluster" --initial-cluster-state "$state" --initial-cluster-token arbiter-local \
    --heartbeat-interval 50 --election-timeout 500 >>"$DIR/logs/e$k.log" 2>&1 &
  echo $! >"$DIR/pids/e$k"
}

start_s3() {
  running s3 && return 0
  mkdir -p "$DIR/s3/data"
  cat >"$DIR/s3/identities.json" <<EOF
{"identities":[{"name":"arbiter","credentials":[{"accessKey":"$ACCESS_KEY","secretKey":"$SECRET_KEY"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
EOF
  # Niced: on one machine the S3 server's CPU (serving four replicas a large version at once) would come out of
  # the replicas' cores, where on a real cluster it is another machine's. etcd keeps its priority.
  nice -n 10 weed server -dir="$DIR/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3 -s3.port="$S3_PORT" \
    -s3.config="$DIR/s3/identities.json" -master.port=$((BASE + 21)) -volume.port=$((BASE + 22)) -filer.port=$((BASE + 23)) \
    -master.volumeSizeLimitMB=1024 -s3.port.iceberg=0 -s3.port.lance=0 >>"$DIR/logs/s3.log" 2>&1 &
  echo $! >"$DIR/pids/s3"
  wait_http "$S3" 60
}

slot_args() {
  local n="${DOWNLOAD_SLOTS:-2}"
  [ "$n" = 0 ] || echo "--cluster-download-lock $DIR/download-slot --cluster-download-slots $n"
}

start_replica() {
  local k="$1" bin
  running "r$k" && return 0
  bin="$(bin_dir)"
  AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" "$bin/arbiterd" --store "$DIR/r$k/store" \
    --listen "127.0.0.1:$(replica_port "$k")" --metrics-listen "$(admin_port "$k")" \
    --cluster-etcd "$ETCD" --cluster-s3 "$S3" --cluster-bucket "$BUCKET" --cluster-name "r$k" \
    $(slot_args) ${ARBITERD_ARGS:-} >>"$DIR/logs/r$k.log" 2>&1 &
  echo $! >"$DIR/pids/r$k"
}

case "$cmd" in
  start)
    command -v etcd >/dev/null && command -v weed >/dev/null || { echo "etcd and weed are needed: make deps" >&2; exit 1; }
    mkdir -p "$DIR/logs" "$DIR/pids"
    cat >"$STATE" <<EOF
BASE=$BASE
REPLICAS=$REPLICAS
CONFIG=$CONFIG
ACCESS_KEY=$ACCESS_KEY
SECRET_KEY=$SECRET_KEY
BUCKET=$BUCKET
EOF
    flag=()
    [ "$CONFIG" = release ] && flag=(-c release)
    for product in arbiterd arbiter-train; do
      swift build "${flag[@]}" --product "$product" >"$DIR/logs/build.log" 2>&1 || { cat "$DIR/logs/build.log"; exit 1; }
    done
    for k in 0 1 2; do start_etcd "$k"; done
    for k in 0 1 2; do wait_http "http://127.0.0.1:$(etcd_client "$k")/health" 30; done
    start_s3
    echo "s3.bucket.create -name $BUCKET" | weed shell -master="127.0.0.1:$((BASE + 21))" >>"$DIR/logs/s3.log" 2>&1 || true
    for ((k = 0; k < REPLICAS; k++)); do start_replica "$k"; done
    for ((k = 0; k < REPLICAS; k++)); do wait_http "http://127.0.0.1:$(admin_port "$k")/live" 60; done
    echo "cluster up in $DIR: etcd $ETCD; S3 $S3 (bucket $BUCKET); replicas on ports $(replica_port 0)..$(replica_port $((REPLICAS - 1)))"
    echo "next: eval \"\$(scripts/cluster.sh env)\"; then arbiter-train push --etcd \$ARBITER_ETCD --s3 \$ARBITER_S3 --bucket \$ARBITER_BUCKET ... and arbiter-train cluster promote"
    ;;
  env)
    echo "export ARBITER_ETCD=$ETCD ARBITER_S3=$S3 ARBITER_BUCKET=$BUCKET AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY ARBITER_CLUSTER_DIR=$DIR"
    ;;
  status)
    "$(bin_dir)/arbiter-train" cluster status --etcd "$ETCD"
    ;;
  start-replica) start_replica "$1" ;;
  start-etcd) start_etcd "$1" ;;
  start-s3) start_s3 ;;
  stop)
    for f in "$DIR"/pids/*; do
      [ -f "$f" ] || continue
      pid="$(cat "$f")"
      kill -CONT "$pid" 2>/dev/null || true
      kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 1
    for f in "$DIR"/pids/*; do
      [ -f "$f" ] || continue
      kill -KILL "$(cat "$f")" 2>/dev/null || true
      rm -f "$f"
    done
    echo "stopped (data kept in $DIR; remove it for a fresh cluster)"
    ;;
  *)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
