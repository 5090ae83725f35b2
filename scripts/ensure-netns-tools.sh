#!/usr/bin/env bash
# ip, tc and nft, for `--network namespaces` and its tests (links shaped by the kernel, loss
# dropped by nftables): as root with apt, install the Debian packages; otherwise print the
# one command a user needs and fail.
set -euo pipefail
command -v ip >/dev/null && command -v tc >/dev/null && command -v nft >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing the Debian packages iproute2 and nftables (for --network namespaces)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq iproute2 nftables >/dev/null
  exit 0
fi
echo "error: ip, tc or nft not found; install them with: sudo apt-get install iproute2 nftables" >&2
exit 1
