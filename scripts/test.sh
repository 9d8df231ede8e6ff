#!/usr/bin/env bash
# Runs every check and test Porthole has, as CI does: formatting, lints, the frontend's type
# check and unit tests, the Rust test suite (unit, integration and end-to-end tests; the
# container tests need root), the native engine's tests again on cgroup v2 in a VM
# (scripts/cgroup2-vm.sh), and the dashboard's end-to-end tests in headless Chromium, Firefox
# and WebKit (in Xvfb).
# Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "the test suite runs real containers: run it as root" >&2
  exit 1
fi

scripts/install-deps.sh

log=$(mktemp)

# The Docker backend's conformance tests need a Docker daemon. Start one of our own, apart from
# any daemon the host runs (own socket, data root, exec root and pid file; no bridge of its own
# and no iptables rules, since the tests only use network modes none and host), and stop it on
# exit.
docker_dir=/run/porthole-test
docker_sock="$docker_dir/docker.sock"
docker_pid=""
stop_test_dockerd() {
  if [ -n "$docker_pid" ] && kill -0 "$docker_pid" 2>/dev/null; then
    echo "==> stopping the test Docker daemon ($docker_pid)"
    kill -TERM "$docker_pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
      kill -0 "$docker_pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL "$docker_pid" 2>/dev/null || true
  fi
}
cleanup() {
  stop_test_dockerd
  rm -f "$log"
}
trap cleanup EXIT

docker_ping() {
  curl --silent --fail --max-time 2 --unix-socket "$docker_sock" http://docker/_ping >/dev/null 2>&1
}

if [ -n "${PORTHOLE_TEST_DOCKER_HOST:-}" ]; then
  echo "==> Docker backend tests use the daemon at $PORTHOLE_TEST_DOCKER_HOST"
elif docker_ping; then
  # A test daemon left by an interrupted run: use it, and leave it as it was found.
  echo "==> Docker backend tests use the running test daemon at $docker_sock"
  export PORTHOLE_TEST_DOCKER_HOST="unix://$docker_sock"
else
  echo "==> starting a test Docker daemon on $docker_sock"
  mkdir -p "$docker_dir"
  rm -f "$docker_sock"
  storage=()
  # A daemon started with --bridge=none deletes docker0, the default bridge of a Docker the
  # host runs (it shares our network namespace): where docker0 exists, ours takes it as it is
  # (its address, no iptables rules) instead. No test puts a container on a bridge network.
  bridge=(--bridge=none)
  if [ -e /sys/class/net/docker0 ]; then
    bridge=()
  fi
  if [ -n "${PORTHOLE_TEST_DOCKER_STORAGE_DRIVER:-}" ]; then
    storage=(--storage-driver "$PORTHOLE_TEST_DOCKER_STORAGE_DRIVER")
  fi
  # Without --storage-driver dockerd takes overlay2 where the data root supports it and falls
  # back (to vfs at worst) where it does not, e.g. on an overlayfs root.
  dockerd --host "unix://$docker_sock" \
    --data-root /var/lib/porthole-test-docker \
    --exec-root "$docker_dir/exec" \
    --pidfile "$docker_dir/docker.pid" \
    --iptables=false --ip6tables=false "${bridge[@]}" \
    "${storage[@]}" >"$docker_dir/dockerd.log" 2>&1 &
  docker_pid=$!
  for _ in $(seq 1 120); do
    docker_ping && break
    if ! kill -0 "$docker_pid" 2>/dev/null; then
      echo "the test Docker daemon exited; its log ends with:" >&2
      tail -n 20 "$docker_dir/dockerd.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  if ! docker_ping; then
    echo "the test Docker daemon did not answer within 60 s; its log ends with:" >&2
    tail -n 20 "$docker_dir/dockerd.log" >&2
    exit 1
  fi
  export PORTHOLE_TEST_DOCKER_HOST="unix://$docker_sock"
fi
# Here a missing daemon is a failure, not a skip.
export PORTHOLE_REQUIRE_DOCKER=1

echo "==> frontend: build, type check, unit tests"
(cd web && npm run --silent build && npm run --silent check && npm test) 2>&1 | tee -a "$log"

# A one-off build gains nothing from incremental caches, and they would double the disk the
# build takes.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "==> cargo test"
# Unit, integration and end-to-end tests; benches are run separately (they print numbers).
cargo test --locked --workspace --lib --bins --tests -- --test-threads="${PORTHOLE_TEST_THREADS:-2}" 2>&1 | tee -a "$log"

echo "==> native engine on cgroup v2 (a Debian 12 VM with systemd; this host may be v1)"
# Its tests' "test result" lines go into the log and count in the total below.
scripts/cgroup2-vm.sh 2>&1 | tee -a "$log"

echo "==> dashboard end-to-end tests (Chromium, Firefox and WebKit against porthole serve)"
# The binary cargo test just built; screenshots land in target/e2e-screenshots/.
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
(cd web && PORTHOLE_BIN="$target_dir/debug/porthole" PORTHOLE_SCREENSHOTS="$target_dir/e2e-screenshots" npm run --silent e2e) 2>&1 | tee -a "$log"

# One line for the whole run: Rust's "test result" lines plus node's "# pass/# fail".
awk '
  /^test result:/ { for (i = 2; i <= NF; i++) { if ($i ~ /^passed;/) p += $(i-1); if ($i ~ /^failed;/) f += $(i-1) } }
  /^# pass / { p += $3 }
  /^# fail / { f += $3 }
  END { printf "%d passed, %d failed\n", p, f }
' "$log"
