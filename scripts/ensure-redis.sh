#!/usr/bin/env bash
# Installs redis-server (Debian's package) when it is missing. Tests and benchmarks start their
# own redis-server processes on free ports; nothing is started here.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
echo "==> installing redis-server"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
if command -v apt-get >/dev/null 2>&1; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
else
  echo "redis-server is missing and this system has no apt-get; install it and re-run" >&2
  exit 1
fi
