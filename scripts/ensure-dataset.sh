#!/usr/bin/env bash
# Make sure Fashion-MNIST is present: as root with apt, install the Debian package;
# otherwise print the one command a user needs and fail.
set -euo pipefail
dir="${SHARDGUARD_DATA:-/usr/share/datasets/fashion-mnist}"
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
missing=0
for f in "${files[@]}"; do [ -f "$dir/$f" ] || missing=1; done
[ "$missing" = 0 ] && exit 0
if [ -n "${SHARDGUARD_DATA:-}" ]; then
  echo "error: SHARDGUARD_DATA=$dir does not hold the four Fashion-MNIST IDX .gz files" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing the Debian package dataset-fashion-mnist"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq dataset-fashion-mnist >/dev/null
  exit 0
fi
echo "error: Fashion-MNIST not found in $dir; install it with: sudo apt-get install dataset-fashion-mnist" >&2
exit 1
