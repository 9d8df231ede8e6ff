#!/usr/bin/env bash
# One command from a fresh Debian 12 host (as root) to a running Porthole: installs what is
# needed, builds the frontend and the release binary, and starts the server. The first start
# builds the starter image (busybox:latest) from the host's busybox-static.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "Porthole's native engine creates namespaces, cgroups and mounts: run this as root." >&2
  exit 1
fi

scripts/install-deps.sh
echo "==> building the frontend"
(cd web && npm run --silent build)
echo "==> building porthole (release; the first build takes a few minutes)"
cargo build --release --locked --bin porthole

echo "==> starting porthole (Ctrl-C stops it)"
exec target/release/porthole serve "$@"
