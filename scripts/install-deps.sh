#!/usr/bin/env bash
# Installs what building, running and testing Porthole needs on Debian 12 (run as root):
# the C libraries libcontainer links (libseccomp; libelf+zlib for cgroup-v2 device filtering),
# busybox-static for the starter image, Docker's daemon (docker.io: dockerd, containerd, runc) for
# the Docker backend's conformance tests, Node.js for the frontend build, the browsers of the
# dashboard's end-to-end tests (Chromium, driven by playwright-core from npm; Firefox ESR, driven
# by puppeteer-core over WebDriver BiDi; WebKitGTK's WebKitWebDriver and MiniBrowser for Safari's
# engine, drawing into Xvfb; DejaVu for the terminal's font; no browser is downloaded), and the
# npm packages; for the image tests: docker-registry (a real registry on 127.0.0.1), skopeo
# (pushes test images into it) and openssl (the token-auth test's signing certificate, and the
# TLS certificates of the remote-daemon tests); openssh-client (the Docker backend's ssh://
# transport) and openssh-server (the remote-daemon tests run an sshd of their own on 127.0.0.1;
# the package's own service, if Debian starts it, plays no part); for the cgroup v2 VM
# (scripts/cgroup2-vm.sh): qemu-system-x86, debootstrap, e2fsprogs (mke2fs -d) and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential pkg-config libseccomp-dev libelf-dev zlib1g-dev busybox-static ca-certificates curl docker.io chromium firefox-esr webkit2gtk-driver xvfb fonts-dejavu-core docker-registry skopeo openssl zstd openssh-client openssh-server qemu-system-x86 debootstrap e2fsprogs jq)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
if [ -n "${PORTHOLE_EXTRA_PACKAGES:-}" ]; then
  # shellcheck disable=SC2206
  packages+=(${PORTHOLE_EXTRA_PACKAGES})
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi

echo "==> npm packages"
(cd web && npm ci --no-audit --no-fund --loglevel=error)
