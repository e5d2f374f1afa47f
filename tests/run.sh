#!/usr/bin/env bash
# The project's one test command (`make test`; `.ci/run` calls it): lints, unit tests,
# and every integration and end-to-end test against the local environment. It installs
# what is missing, starts the local environment if it is not up (building its binaries
# once), and stops it again afterwards if it started it.
set -euo pipefail
cd "$(dirname "$0")/.."

tests/deps.sh

started=0
if ! tests/cluster/status.sh >/dev/null 2>&1; then
  started=1
fi
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  if ((started)) || [[ ${CI:-} == true ]]; then
    tests/cluster/down.sh || true
  fi
}
trap cleanup EXIT
tests/cluster/up.sh

echo "== lint"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
shellcheck -x tests/*.sh tests/cluster/*.sh src/scripts/*.sh .ci/run

echo "== unit and integration tests"
mkdir -p target
# Errors returned by tests carry their message and causes; a backtrace of every one
# would bury them.
export RUST_LIB_BACKTRACE=0
status=0
cargo test --locked --no-fail-fast --lib --bins --tests 2>&1 | tee target/test-output.log || status=$?
# One closing line for the whole run: the sum of every test binary's results, and
# after it what each failed test printed (backtrace frames left out; the full output
# is in target/test-output.log, the controllers' logs in target/test-logs/).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' \
  target/test-output.log
if ((status != 0)); then
  awk '
    /^---- .* stdout ----$/ { show = 1; lines = 0 }
    /^failures:$/ || /^test result:/ { show = 0 }
    show && !/^ *[0-9]+: / && !/^ +at / && lines++ < 80 { print }
  ' target/test-output.log
  echo "make test failed (exit $status)" >&2
fi
exit "$status"
