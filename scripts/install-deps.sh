#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build, test and demo Arbiter. Idempotent and quiet when
# everything is already there.
set -euo pipefail
need=()
pkg-config --exists lmdb 2>/dev/null || need+=(liblmdb-dev)
pkg-config --exists libzstd 2>/dev/null || need+=(libzstd-dev)
pkg-config --exists libxxhash 2>/dev/null || need+=(libxxhash-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v mdb_stat >/dev/null 2>&1 || need+=(lmdb-utils)
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
