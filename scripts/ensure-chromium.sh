#!/usr/bin/env bash
# Headless Chromium, for the test that the HTML report renders: as root with apt, install
# the Debian package; otherwise print the one command a user needs and fail.
set -euo pipefail
command -v chromium >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing the Debian package chromium (for the report's rendering test)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "error: chromium not found; install it with: sudo apt-get install chromium" >&2
exit 1
