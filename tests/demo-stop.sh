#!/usr/bin/env bash
# `make demo-stop`: stops the demo's controller and the local environment.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -f target/demo/controller.pid ]]; then
  kill "$(cat target/demo/controller.pid)" 2>/dev/null || true
  rm -f target/demo/controller.pid
fi
tests/cluster/down.sh
