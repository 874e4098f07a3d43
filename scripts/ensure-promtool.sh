#!/usr/bin/env bash
# Installs promtool (from Debian's prometheus package) when it is missing. The monitor tests
# run `promtool check metrics` on a live scrape and `promtool check rules` on the exported
# rule file. Only the binary is used; no Prometheus server is started or left enabled.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
echo "==> installing promtool (Debian package prometheus)"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
if command -v apt-get >/dev/null 2>&1; then
  $sudo apt-get update -qq
  # --no-install-recommends keeps the web console and exporters out.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package starts a Prometheus server; the tests do not need it.
  if command -v systemctl >/dev/null 2>&1; then $sudo systemctl stop prometheus >/dev/null 2>&1 || true; fi
else
  echo "promtool is missing and this system has no apt-get; install Prometheus's promtool and re-run" >&2
  exit 1
fi
