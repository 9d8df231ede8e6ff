#!/usr/bin/env bash
# Runs every check and test Porthole has, as CI does: formatting, lints, the frontend's type
# check and unit tests, and the Rust test suite (unit, integration and end-to-end tests; the
# container tests need root). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "the test suite runs real containers: run it as root" >&2
  exit 1
fi

scripts/install-deps.sh

echo "==> frontend: build, type check, unit tests"
(cd web && npm run --silent build && npm run --silent check && npm test)

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "==> cargo test"
cargo test --locked --workspace -- --test-threads="${PORTHOLE_TEST_THREADS:-2}"
