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

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "==> frontend: build, type check, unit tests"
(cd web && npm run --silent build && npm run --silent check && npm test) 2>&1 | tee -a "$log"

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "==> cargo test"
# Unit, integration and end-to-end tests; benches are run separately (they print numbers).
cargo test --locked --workspace --lib --bins --tests -- --test-threads="${PORTHOLE_TEST_THREADS:-2}" 2>&1 | tee -a "$log"

# One line for the whole run: Rust's "test result" lines plus node's "# pass/# fail".
awk '
  /^test result:/ { for (i = 2; i <= NF; i++) { if ($i ~ /^passed;/) p += $(i-1); if ($i ~ /^failed;/) f += $(i-1) } }
  /^# pass / { p += $3 }
  /^# fail / { f += $3 }
  END { printf "%d passed, %d failed\n", p, f }
' "$log"
