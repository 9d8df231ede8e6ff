#!/usr/bin/env bash
# Runs the native engine's tests on a cgroup v2 (unified-only) host: a Debian 12 virtual machine
# booted with qemu, systemd as PID 1 as on a real host, the tests run as a systemd service (so
# in a non-root cgroup, system.slice/porthole-vm-tests.service) from the host's own build,
# shared into the VM over 9p at the same absolute paths. What runs: the engine's unit tests and
# the conformance_native, native_engine and terminals test crates.
#
# The VM image (a debootstrapped root filesystem in an ext4 image, with the kernel and initrd
# beside it) is cached under target/cgroup2-vm/ (or PORTHOLE_CGROUP2_VM_DIR) and rebuilt when
# the package list or the image recipe below changes. Every boot starts from that image
# unchanged (qemu -snapshot).
#
# Usage (as root): scripts/cgroup2-vm.sh [--image-only]
# The test binaries are built first (cargo test --no-run, the same selection as
# scripts/test.sh); their output, with Rust's `test result:` lines, is printed here as it comes.
# Exits non-zero when a test fails, the VM cannot be built or booted, or a time limit runs out.
#
# The VM runs with KVM where /dev/kvm can run a stock kernel and under qemu's software
# emulation (TCG) elsewhere, which takes ~2-3 minutes for boot and tests; under emulation the
# terminal throughput test, whose time bounds assume real hardware, is left to the host run.
# PORTHOLE_CGROUP2_VM_ACCEL=kvm|tcg overrides the choice. On a host that is not x86_64 it is
# skipped, and the skip is a failure when CI or PORTHOLE_REQUIRE_CGROUP2_VM=1 is set.
# PORTHOLE_CGROUP2_VM_KERNEL_ARGS adds to the VM's kernel command line (e.g. swapaccount=0);
# PORTHOLE_CGROUP2_VM_TEST_ARGS is passed to every test binary (e.g. a name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# What the image holds: systemd as init, a kernel, the runtime libraries of the test binaries
# (libseccomp, libelf, zlib) and the tools the tests call (busybox-static for the starter image,
# kill from procps). Changing this list rebuilds the image.
vm_packages=(systemd systemd-sysv udev kmod linux-image-amd64 initramfs-tools busybox-static
  libseccomp2 libelf1 zlib1g procps)
# Bump when the image recipe (build_image) changes in a way the package list does not show.
image_recipe=1
suite=bookworm

boot_timeout=${PORTHOLE_CGROUP2_VM_BOOT_TIMEOUT:-180}  # kernel + systemd up to the test unit
test_timeout=${PORTHOLE_CGROUP2_VM_TEST_TIMEOUT:-600}  # each test binary inside
vm_timeout=${PORTHOLE_CGROUP2_VM_TIMEOUT:-1800}        # the VM as a whole
memory_mib=${PORTHOLE_CGROUP2_VM_MEMORY:-3072}

target_dir=${CARGO_TARGET_DIR:-$repo/target}
vm_dir=${PORTHOLE_CGROUP2_VM_DIR:-$target_dir/cgroup2-vm}
image_only=0
[ "${1:-}" = "--image-only" ] && image_only=1

say() { echo "==> cgroup2 VM: $*"; }
fail() {
  echo "cgroup2 VM: $*" >&2
  exit 1
}

if [ "$(id -u)" -ne 0 ]; then
  fail "run as root (debootstrap, and the tests inside run real containers)"
fi

if [ "$(uname -m)" != x86_64 ]; then
  # The image is amd64 and the tests are this host's build.
  if [ -n "${CI:-}" ] || [ "${PORTHOLE_REQUIRE_CGROUP2_VM:-0}" = 1 ]; then
    fail "the cgroup v2 VM runs on x86_64 hosts only, this is $(uname -m)"
  fi
  say "skipped: the VM runs on x86_64 hosts only, this is $(uname -m)"
  exit 0
fi

# KVM where it can run a stock kernel. A /dev/kvm served by kvm_pvm (the PVM hypervisor that
# nested sandboxes use instead of hardware virtualisation) runs only PVM-built guest kernels:
# Debian's kernel hangs there right after decompression, so such a host emulates (TCG).
pick_accelerator() {
  if [ "${PORTHOLE_CGROUP2_VM_ACCEL:-}" != "" ]; then
    echo "$PORTHOLE_CGROUP2_VM_ACCEL"
  elif [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then
    echo kvm
  else
    echo tcg
  fi
}
accel=$(pick_accelerator)
case "$accel" in
kvm | tcg) ;;
*) fail "PORTHOLE_CGROUP2_VM_ACCEL must be kvm or tcg, not $accel" ;;
esac

for tool in qemu-system-x86_64 debootstrap mke2fs jq; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing: run scripts/install-deps.sh"
done

# The Debian mirror the host's apt uses (the VM's packages come from the same place).
host_mirror() {
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -n 1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
      sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}' | grep -v -- '-security' | head -n 1 || true)
  fi
  [ -n "$uri" ] || fail "cannot find the host's Debian mirror in /etc/apt"
  echo "$uri"
}

image_key() {
  printf '%s\n' "$suite" "$image_recipe" "${vm_packages[@]}" | sha256sum | cut -c1-16
}

# The unit that runs the tests once the system is up, and powers the VM off after them. The
# job itself comes from the host at each boot (the porthole-run share), so changing the tests
# or this script's job does not rebuild the image.
write_test_unit() {
  local root=$1
  cat >"$root/etc/systemd/system/porthole-vm-tests.service" <<'EOF'
[Unit]
Description=Porthole's native-engine tests (job from the host)
After=local-fs.target systemd-udev-settle.service systemd-modules-load.service
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/porthole-vm-job
StandardOutput=journal+console
StandardError=journal+console
EOF
  cat >"$root/usr/local/sbin/porthole-vm-job" <<'EOF'
#!/bin/sh
# Mounts the host's run directory and runs the job the host put there; the job writes its
# exit status there.
set -eu
modprobe -q 9pnet_virtio || true
mkdir -p /run/porthole-vm
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 porthole-run /run/porthole-vm
echo "booted" >/run/porthole-vm/booted
bash /run/porthole-vm/job.sh >/run/porthole-vm/output.log 2>&1
EOF
  chmod 0755 "$root/usr/local/sbin/porthole-vm-job"
  mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
  ln -sf /etc/systemd/system/porthole-vm-tests.service \
    "$root/etc/systemd/system/multi-user.target.wants/porthole-vm-tests.service"
}

build_image() {
  local key=$1 mirror staging
  mirror=$(host_mirror)
  staging="$vm_dir/rootfs.building"
  rm -rf "$staging" "$vm_dir/image"
  mkdir -p "$staging"
  say "debootstrap $suite from $mirror (${vm_packages[*]})"
  local include
  include=$(
    IFS=,
    echo "${vm_packages[*]}"
  )
  if ! timeout 1200 debootstrap --variant=minbase --include="$include" "$suite" "$staging" "$mirror" \
    >"$vm_dir/debootstrap.log" 2>&1; then
    tail -n 30 "$vm_dir/debootstrap.log" >&2
    fail "debootstrap failed (log: $vm_dir/debootstrap.log)"
  fi
  echo porthole-cgroup2 >"$staging/etc/hostname"
  printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$staging/etc/fstab"
  # No login prompt is ever needed; the console shows the boot and the test unit.
  ln -sf /dev/null "$staging/etc/systemd/system/serial-getty@ttyS0.service"
  ln -sf /dev/null "$staging/etc/systemd/system/getty@tty1.service"
  write_test_unit "$staging"
  rm -rf "$staging/var/cache/apt/archives/"*.deb "$staging/var/lib/apt/lists/"*

  local build="$vm_dir/image.building"
  rm -rf "$build"
  mkdir -p "$build"
  cp "$(readlink -f "$staging/vmlinuz")" "$build/vmlinuz"
  cp "$(readlink -f "$staging/initrd.img")" "$build/initrd.img"
  # ext4 filled straight from the directory: no loop device or mount needed.
  if ! timeout 600 mke2fs -q -t ext4 -L porthole-vm -d "$staging" "$build/root.img" 2G >"$vm_dir/mke2fs.log" 2>&1; then
    cat "$vm_dir/mke2fs.log" >&2
    fail "mke2fs failed"
  fi
  echo "$key" >"$build/key"
  rm -rf "$staging"
  mv "$build" "$vm_dir/image"
}

mkdir -p "$vm_dir"
key=$(image_key)
if [ "$(cat "$vm_dir/image/key" 2>/dev/null || true)" != "$key" ]; then
  started=$SECONDS
  build_image "$key"
  say "image built in $((SECONDS - started)) s"
else
  say "image $key is up to date"
fi
[ "$image_only" = 1 ] && exit 0

# The test binaries, built on this host, run inside at the same paths (the integration tests
# have the porthole binary's path compiled in).
say "building the test binaries"
# The same selection as scripts/test.sh's cargo test, so that after it nothing is rebuilt.
# What runs: the engine's unit tests, and the test crates that run containers.
mapfile -t binaries < <(
  CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}" cargo test --locked --workspace --lib --bins --tests --no-run \
    --message-format=json |
    jq -r 'select(.reason == "compiler-artifact" and .executable != null and .profile.test == true)
      | select((.target.name == "porthole_engine" and (.target.kind | index("lib")))
        or (.target.kind == ["test"] and (.target.name | IN("conformance_native", "native_engine", "terminals"))))
      | .executable'
)
[ "${#binaries[@]}" -eq 4 ] || fail "expected 4 test binaries, cargo built ${#binaries[@]}: ${binaries[*]}"

run_dir="$vm_dir/run"
rm -rf "$run_dir"
mkdir -p "$run_dir"
shares=("$repo")
case "$target_dir" in
"$repo"/*) ;;
*) shares+=("$target_dir") ;;
esac

{
  echo 'set -u'
  echo 'n=0'
  for share in "${shares[@]}"; do
    printf 'n=$((n + 1)); mkdir -p %q && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro "porthole-src$n" %q\n' \
      "$share" "$share"
  done
  cat <<'EOF'
echo "==> cgroup2 VM: kernel $(uname -r), $(systemctl --version | head -n 1)"
echo "==> cgroup2 VM: $(stat -f -c %T /sys/fs/cgroup) at /sys/fs/cgroup, controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
echo "==> cgroup2 VM: the tests run in cgroup $(cut -d: -f3 /proc/self/cgroup)"
status=0
EOF
  for bin in "${binaries[@]}"; do
    skip=()
    if [ "$accel" = tcg ] && [[ "$bin" == */terminals-* ]]; then
      # Emulated, 8 MB through a debug build's terminal takes longer than that test's 30 s
      # bound; it measures throughput, not cgroups, and runs on the host.
      skip=(--skip a_stalled_client_does_not_hold_up_the_terminal_or_others)
      echo 'echo "==> cgroup2 VM: not run under emulation (timing-bound, cgroup-independent): a_stalled_client_does_not_hold_up_the_terminal_or_others"'
    fi
    printf 'echo "==> cgroup2 VM: %s"\n' "${bin#"$target_dir"/}"
    printf 'timeout --kill-after=10 %d %q --test-threads=2 %s %s || status=1\n' "$test_timeout" "$bin" "${skip[*]}" \
      "${PORTHOLE_CGROUP2_VM_TEST_ARGS:-}"
  done
  echo 'echo "$status" >/run/porthole-vm/exit-code'
} >"$run_dir/job.sh"
: >"$run_dir/output.log"

qemu_args=(
  -machine q35 -accel "$([ "$accel" = kvm ] && echo kvm || echo tcg,thread=multi)"
  -cpu "$([ "$accel" = kvm ] && echo host || echo max)"
  -smp 2 -m "$memory_mib"
  -kernel "$vm_dir/image/vmlinuz" -initrd "$vm_dir/image/initrd.img"
  -append "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=1 ${PORTHOLE_CGROUP2_VM_KERNEL_ARGS:-}"
  -drive "file=$vm_dir/image/root.img,format=raw,if=virtio,snapshot=on"
  -virtfs "local,path=$run_dir,mount_tag=porthole-run,security_model=none"
  -nic none -display none -no-reboot
  -serial "file:$vm_dir/console.log"
)
n=0
for share in "${shares[@]}"; do
  n=$((n + 1))
  qemu_args+=(-virtfs "local,path=$share,mount_tag=porthole-src$n,security_model=none,readonly=on")
done

say "booting ($accel, ${memory_mib} MiB, 2 CPUs; console: $vm_dir/console.log)"
started=$SECONDS
timeout --kill-after=10 "$vm_timeout" qemu-system-x86_64 "${qemu_args[@]}" &
qemu=$!
# The VM runs until the unit powers it off; a VM that never gets to the tests is stopped.
for _ in $(seq 1 "$boot_timeout"); do
  [ -e "$run_dir/booted" ] && break
  kill -0 "$qemu" 2>/dev/null || break
  sleep 1
done
if [ ! -e "$run_dir/booted" ]; then
  kill "$qemu" 2>/dev/null || true
  wait "$qemu" || true
  tail -n 40 "$vm_dir/console.log" >&2 || true
  fail "the VM did not reach the tests within ${boot_timeout} s"
fi
say "booted in $((SECONDS - started)) s"
tail -n +1 -f --pid="$qemu" "$run_dir/output.log" &
tailer=$!
qemu_status=0
wait "$qemu" || qemu_status=$?
wait "$tailer" || true
say "VM ran for $((SECONDS - started)) s"

if [ "$qemu_status" -ne 0 ]; then
  tail -n 40 "$vm_dir/console.log" >&2 || true
  fail "qemu exited with status $qemu_status (124: the time limit ran out)"
fi
[ -e "$run_dir/exit-code" ] || {
  tail -n 40 "$vm_dir/console.log" >&2 || true
  fail "the test job did not finish"
}
[ "$(cat "$run_dir/exit-code")" = 0 ] || fail "tests failed on cgroup v2"
say "all tests passed on cgroup v2"
