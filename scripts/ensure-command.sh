#!/usr/bin/env bash
# Usage: scripts/ensure-command.sh COMMAND DEBIAN_PACKAGE
# Installs DEBIAN_PACKAGE (without recommends) when COMMAND is missing. Tests start their own
# servers on free ports; nothing is started or left running here.
#   redis-server  redis-server   Redis tests and benchmarks
#   redis-cli     redis-tools    joining the servers of the Redis Cluster tests
#   promtool      prometheus     `promtool check metrics` / `check rules` in the monitor tests
#   prometheus    prometheus     a real Prometheus scraping the demo (optimize-cli/tests)
#   tmux          tmux           `optimize top` drawn in a real terminal (optimize-cli/tests)
#   chromium      chromium       the dashboard loaded in headless Chromium (optimize-cli/tests)
set -euo pipefail
command=$1
package=$2
if command -v "$command" >/dev/null 2>&1; then
  exit 0
fi
echo "==> installing $command (Debian package $package)"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$command is missing and this system has no apt-get; install it and re-run" >&2
  exit 1
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$package" >/dev/null
# Packages that ship a service may start it; the tests do not need it.
if command -v systemctl >/dev/null 2>&1; then $sudo systemctl stop "$package" >/dev/null 2>&1 || true; fi
command -v "$command" >/dev/null
