#!/usr/bin/env bash
# The one test command: installs what the tests need when it is missing, then runs every check
# and every test (unit, integration, trybuild UI, doctests) and the demo.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Redis tests run against real redis-server processes (started by the tests on free ports).
if ! command -v redis-server >/dev/null 2>&1; then
  step "installing redis-server"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  if command -v apt-get >/dev/null 2>&1; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is missing and this system has no apt-get; install it and re-run" >&2
    exit 1
  fi
fi
redis-server --version

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (unit, integration, UI, doctests)"
cargo test --workspace

step "demo (cargo run --release --example demo)"
cargo run --release --example demo
