//! Builds the OCI runtime spec (config.json / process.json) that libcontainer runs a container
//! from, with Docker's defaults for namespaces, mounts, capabilities, seccomp, devices and limits.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    Arch, Capability, LinuxBuilder, LinuxCapabilities, LinuxCpuBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType, Process,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::api::{EngineError, NetworkMode, Resources, Result};

/// What to run and as whom: the init process of a container, or an exec. Stored in
/// `container.json` and sent to the shim for execs, already merged with the image's defaults.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// Absolute path inside the container; empty means `/`, as in Docker.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub terminal: bool,
}

/// A filesystem the engine has already resolved to something mountable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecMount {
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
    },
    /// `size_bytes` 0 leaves the kernel's default (half of RAM).
    Tmpfs {
        target: String,
        size_bytes: u64,
    },
}

/// Everything `build_spec` needs to know about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecInput {
    pub rootfs: PathBuf,
    pub process: ProcessSpec,
    pub hostname: String,
    pub read_only_rootfs: bool,
    pub mounts: Vec<SpecMount>,
    pub resources: Resources,
    pub network_mode: NetworkMode,
    pub cgroups_path: PathBuf,
}

/// Default pids limit applied when Resources::pids_limit is None (so a fork bomb cannot take the host).
///
/// Docker has no default; Podman's is 2048 and we take the same. The pids controller counts
/// threads, so this leaves room for thread-heavy runtimes (JVMs, Go, build tools) while a fork
/// bomb stops at a couple of thousand tasks, which a small host survives.
pub const DEFAULT_PIDS_LIMIT: i64 = 2048;

/// Docker refuses smaller limits: below this the runtime itself cannot start reliably.
const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;
/// The CFS period Docker uses for `--cpus`.
const CPU_PERIOD_US: u64 = 100_000;
/// The kernel refuses a CFS quota under 1ms, i.e. 10 millicpus with a 100ms period.
const MIN_CPU_MILLIS: u64 = 10;
/// Docker's usual RLIMIT_NOFILE (what dockerd passes on from its systemd unit).
const DEFAULT_NOFILE: u64 = 1_048_576;
/// Linux's HOST_NAME_MAX: sethostname fails on anything longer, far from where the user
/// could see why.
const MAX_HOSTNAME_LEN: usize = 64;

/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET: moby's default profile lets `clone` through only with none of these set.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// What `build_spec` depends on that only the host can tell. Detected per call (a few small
/// file reads) so tests can pin every combination.
#[derive(Debug, Clone, Copy)]
struct Host {
    /// Unified cgroup hierarchy: Docker then gives each container a private cgroup namespace,
    /// otherwise /sys/fs/cgroup in the container would show the host's whole tree.
    cgroup_v2: bool,
    /// Whether memory+swap can be limited. Without swap accounting the files for it
    /// (`memory.memsw.*` on v1, `memory.swap.max` on v2) do not exist and writing the limit
    /// would fail the start; Docker drops it then.
    swap_limit: bool,
    /// RLIMIT_NOFILE to give processes: setrlimit fails above fs.nr_open and, without
    /// CAP_SYS_RESOURCE, above the engine's own hard limit.
    nofile: u64,
    /// Before Linux 4.8 ptrace could rewrite syscalls after seccomp checked them, so Docker
    /// only allows ptrace on newer kernels.
    ptrace_safe: bool,
}

impl Host {
    fn detect() -> Host {
        let cgroup_v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_NOFILE);
        let ptrace_safe = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|r| kernel_version(&r))
            .is_some_and(|v| v >= (4, 8));
        Host {
            cgroup_v2,
            swap_limit: if cgroup_v2 {
                let own = std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|t| own_unified_cgroup(&t));
                v2_swap_accounting(Path::new("/sys/fs/cgroup"), own.as_deref())
            } else {
                Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
            },
            // Raising the hard limit above our own needs CAP_SYS_RESOURCE, which a sandboxed
            // engine may lack: never ask for more than this process has.
            nofile: nr_open.min(DEFAULT_NOFILE).min(own_hard_nofile()),
            ptrace_safe,
        }
    }
}

/// The path of this process's cgroup in the unified hierarchy (`0::/system.slice/x.service`).
fn own_unified_cgroup(proc_self_cgroup: &str) -> Option<PathBuf> {
    let path = proc_self_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(PathBuf::from(path.trim().trim_start_matches('/')))
}

/// Whether a unified host accounts swap per cgroup: then `memory.swap.max` sits beside
/// `memory.max` in every cgroup that has the memory controller, and in none when swap
/// accounting is off (`swapaccount=0`, `cgroup.memory=noswap`, a kernel built without it).
/// The root has neither file, so the engine's own cgroup, the containers' parent and the
/// root's children are asked, the first with `memory.max` deciding. When none has the memory
/// controller nothing tells, and swap is left alone: the memory limit applies either way.
fn v2_swap_accounting(root: &Path, own: Option<&Path>) -> bool {
    let mut candidates: Vec<PathBuf> = own.map(|p| root.join(p)).into_iter().collect();
    candidates.push(root.join("porthole"));
    if let Ok(entries) = std::fs::read_dir(root) {
        candidates.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    candidates
        .iter()
        .find(|dir| dir.join("memory.max").exists())
        .is_some_and(|dir| dir.join("memory.swap.max").exists())
}

fn own_hard_nofile() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(DEFAULT_NOFILE)
}

/// `6.1.0-18-amd64` -> (6, 1).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn oci<T>(r: std::result::Result<T, oci_spec::OciSpecError>) -> Result<T> {
    r.map_err(|e| EngineError::internal("could not build the OCI runtime spec", e))
}

/// The full runtime spec for a container's init process.
pub fn build_spec(input: &SpecInput) -> Result<Spec> {
    build_spec_on(input, &Host::detect())
}

fn build_spec_on(input: &SpecInput, host: &Host) -> Result<Spec> {
    if input.hostname.len() > MAX_HOSTNAME_LEN {
        return Err(EngineError::invalid(format!(
            "invalid hostname {:?}: it must be at most {MAX_HOSTNAME_LEN} characters",
            input.hostname
        )));
    }
    let mut mounts = default_mounts()?;
    mounts.extend(user_mounts(&input.mounts)?);

    let mut resources = LinuxResourcesBuilder::default()
        .devices(device_rules()?)
        .memory(memory_limit(&input.resources, host)?)
        .cpu(cpu_limit(&input.resources)?)
        .pids(oci(LinuxPidsBuilder::default().limit(pids_limit(&input.resources)?).build())?);
    let unified = unified_resources(&input.resources, host);
    if !unified.is_empty() {
        resources = resources.unified(unified);
    }
    let linux = oci(LinuxBuilder::default()
        .namespaces(namespaces(input.network_mode, host)?)
        .resources(oci(resources.build())?)
        .cgroups_path(input.cgroups_path.clone())
        // libcontainer creates the standard nodes (null, zero, full, random, urandom, tty,
        // plus ptmx and console) itself; Docker adds none by default either.
        .devices(Vec::new())
        .seccomp(seccomp_profile(host.ptrace_safe))
        .rootfs_propagation("private")
        .masked_paths(strings(MASKED_PATHS))
        .readonly_paths(readonly_paths(host))
        .build())?;

    let mut spec = oci(SpecBuilder::default()
        .version("1.0.2")
        .root(oci(RootBuilder::default().path(input.rootfs.clone()).readonly(input.read_only_rootfs).build())?)
        .mounts(mounts)
        .process(process_spec_on(&input.process, host)?)
        .hostname(input.hostname.clone())
        .linux(linux)
        .build())?;
    // The builder starts from oci-spec's sample spec; leave nothing of it we did not choose.
    spec.set_annotations(None);
    if let Some(linux) = spec.linux_mut() {
        linux.set_sysctl(None);
        linux.set_uid_mappings(None);
        linux.set_gid_mappings(None);
    }
    Ok(spec)
}

/// The process part of a spec. Used both for the init process and for `exec` (libcontainer's
/// tenant builder takes it as process.json).
pub fn process_spec(p: &ProcessSpec) -> Result<Process> {
    process_spec_on(p, &Host::detect())
}

fn process_spec_on(p: &ProcessSpec, host: &Host) -> Result<Process> {
    if p.args.is_empty() || p.args[0].is_empty() {
        return Err(EngineError::invalid("no command specified"));
    }
    if let Some(bad) = p.args.iter().chain(&p.env).find(|s| s.contains('\0')) {
        return Err(EngineError::invalid(format!(
            "invalid command or environment entry {bad:?}: it contains a NUL byte"
        )));
    }
    let cwd = if p.cwd.is_empty() { "/" } else { p.cwd.as_str() };
    if !cwd.starts_with('/') || cwd.contains('\0') {
        return Err(EngineError::invalid(format!(
            "the working directory {cwd:?} is invalid: it needs to be an absolute path"
        )));
    }

    let defaults: HashSet<Capability> = default_capabilities().into_iter().collect();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(defaults.clone()));
    // As moby does (and as execve would): a non-root user keeps the bounding set but starts
    // with nothing effective or permitted, so it cannot, say, chown files it does not own.
    let granted = if p.uid == 0 { defaults } else { HashSet::new() };
    caps.set_effective(Some(granted.clone()));
    caps.set_permitted(Some(granted));
    // Empty rather than absent so nothing leaks in from the engine's own process (Docker
    // stopped granting inheritable capabilities with CVE-2022-24769).
    caps.set_inheritable(Some(HashSet::new()));
    caps.set_ambient(Some(HashSet::new()));

    oci(ProcessBuilder::default()
        .terminal(p.terminal)
        .user(oci(UserBuilder::default()
            .uid(p.uid)
            .gid(p.gid)
            .additional_gids(p.additional_gids.clone())
            // Otherwise the container inherits whatever umask the engine runs with.
            .umask(0o022u32)
            .build())?)
        .args(p.args.clone())
        .env(p.env.clone())
        .cwd(cwd)
        .capabilities(caps)
        .rlimits(vec![oci(PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(host.nofile)
            .hard(host.nofile)
            .build())?])
        .no_new_privileges(true)
        .build())
}

/// Docker's default capability set, as CAP_* names (exactly Docker's 14: CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD, NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE).
pub fn default_capabilities() -> Vec<Capability> {
    vec![
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
}

/// The bitmask CapEff must show inside a container with the default set (for tests: /proc/self/status CapEff).
pub fn default_capability_mask() -> u64 {
    default_capabilities().into_iter().fold(0, |mask, cap| mask | 1u64 << capability_bit(cap))
}

/// The kernel's bit number for a capability (linux/capability.h). Exhaustive on purpose:
/// a capability the mask cannot represent must not compile.
fn capability_bit(cap: Capability) -> u32 {
    match cap {
        Capability::Chown => 0,
        Capability::DacOverride => 1,
        Capability::DacReadSearch => 2,
        Capability::Fowner => 3,
        Capability::Fsetid => 4,
        Capability::Kill => 5,
        Capability::Setgid => 6,
        Capability::Setuid => 7,
        Capability::Setpcap => 8,
        Capability::LinuxImmutable => 9,
        Capability::NetBindService => 10,
        Capability::NetBroadcast => 11,
        Capability::NetAdmin => 12,
        Capability::NetRaw => 13,
        Capability::IpcLock => 14,
        Capability::IpcOwner => 15,
        Capability::SysModule => 16,
        Capability::SysRawio => 17,
        Capability::SysChroot => 18,
        Capability::SysPtrace => 19,
        Capability::SysPacct => 20,
        Capability::SysAdmin => 21,
        Capability::SysBoot => 22,
        Capability::SysNice => 23,
        Capability::SysResource => 24,
        Capability::SysTime => 25,
        Capability::SysTtyConfig => 26,
        Capability::Mknod => 27,
        Capability::Lease => 28,
        Capability::AuditWrite => 29,
        Capability::AuditControl => 30,
        Capability::Setfcap => 31,
        Capability::MacOverride => 32,
        Capability::MacAdmin => 33,
        Capability::Syslog => 34,
        Capability::WakeAlarm => 35,
        Capability::BlockSuspend => 36,
        Capability::AuditRead => 37,
        Capability::Perfmon => 38,
        Capability::Bpf => 39,
        Capability::CheckpointRestore => 40,
    }
}

/// moby's `DefaultLinuxSpec` masked paths: kernel information and interfaces a container has
/// no business reading (or that leak host details).
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// moby's read-only paths: host-wide kernel knobs that stay visible but must not be changed.
const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Where libcontainer mounts each cgroup v1 hierarchy in the container (or a symlink to a
/// comounted one, such as cpu -> cpu,cpuacct). It bind-mounts them read-write whatever the
/// spec's cgroup mount says, which would let a container raise its own limits (pids.max,
/// memory.limit_in_bytes) and make cgroups of its own; listed as read-only paths they are
/// remounted read-only after the mounts. A name the host does not have is skipped. On v2 the
/// cgroup2 mount itself takes the spec's `ro`.
const CGROUP_V1_PATHS: &[&str] = &[
    "/sys/fs/cgroup",
    "/sys/fs/cgroup/blkio",
    "/sys/fs/cgroup/cpu",
    "/sys/fs/cgroup/cpuacct",
    "/sys/fs/cgroup/cpuset",
    "/sys/fs/cgroup/devices",
    "/sys/fs/cgroup/freezer",
    "/sys/fs/cgroup/hugetlb",
    "/sys/fs/cgroup/memory",
    "/sys/fs/cgroup/misc",
    "/sys/fs/cgroup/net_cls",
    "/sys/fs/cgroup/net_prio",
    "/sys/fs/cgroup/perf_event",
    "/sys/fs/cgroup/pids",
    "/sys/fs/cgroup/rdma",
    "/sys/fs/cgroup/systemd",
];

fn readonly_paths(host: &Host) -> Vec<String> {
    let mut paths = strings(READONLY_PATHS);
    if !host.cgroup_v2 {
        paths.extend(strings(CGROUP_V1_PATHS));
    }
    paths
}

/// Targets the engine mounts itself; mounting over them would undo masking and read-only
/// protections or break the container's /dev.
const RESERVED_TARGETS: &[&str] = &["/proc", "/dev", "/sys"];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn namespaces(network: NetworkMode, host: &Host) -> Result<Vec<LinuxNamespace>> {
    let mut types = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        // Always new, also with the host's network: the container's hostname is its own.
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    match network {
        // A fresh network namespace holds only a loopback interface.
        NetworkMode::None => types.push(LinuxNamespaceType::Network),
        // No namespace entry: the container stays in the engine's (the host's) namespace.
        NetworkMode::Host => {}
    }
    if host.cgroup_v2 {
        types.push(LinuxNamespaceType::Cgroup);
    }
    types.into_iter().map(|typ| oci(LinuxNamespaceBuilder::default().typ(typ).build())).collect()
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount> {
    oci(MountBuilder::default().destination(destination).typ(typ).source(source).options(strings(options)).build())
}

/// runc's and moby's default filesystems, in the order they must be mounted (/dev before the
/// mounts inside it).
fn default_mounts() -> Result<Vec<Mount>> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?,
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["ro", "nosuid", "noexec", "nodev"])?,
    ])
}

/// Checks a user mount target and returns it normalised (no `.`, no doubled or trailing `/`),
/// so that `/data/` and `/data` count as the same target.
fn mount_target(target: &str) -> Result<String> {
    if !target.starts_with('/') {
        return Err(EngineError::invalid(format!(
            "invalid mount target {target:?}: it must be an absolute path inside the container"
        )));
    }
    let path = Path::new(target);
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(EngineError::invalid(format!("invalid mount target {target:?}: it must not contain \"..\"")));
    }
    let normal: PathBuf = path.components().collect();
    if normal == Path::new("/") {
        return Err(EngineError::invalid(format!(
            "invalid mount target {target:?}: the root filesystem cannot be mounted over"
        )));
    }
    if let Some(reserved) = RESERVED_TARGETS.iter().find(|r| normal.starts_with(r)) {
        return Err(EngineError::invalid(format!(
            "invalid mount target {target:?}: {reserved} is set up by the engine and cannot be \
             mounted over or into"
        )));
    }
    Ok(normal.to_string_lossy().into_owned())
}

fn user_mounts(mounts: &[SpecMount]) -> Result<Vec<Mount>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts {
        let (target, built) = match m {
            SpecMount::Bind { source, target, read_only } => {
                let target = mount_target(target)?;
                if !source.is_absolute() {
                    return Err(EngineError::invalid(format!(
                        "invalid bind mount source {source:?}: it must be an absolute host path"
                    )));
                }
                // rbind so mounts beneath the source come along; rprivate so nothing the
                // container mounts there propagates back to the host.
                let mut options = strings(&["rbind", "rprivate"]);
                if *read_only {
                    options.push("ro".into());
                }
                let built = oci(MountBuilder::default()
                    .destination(target.as_str())
                    .typ("bind")
                    .source(source.clone())
                    .options(options)
                    .build())?;
                (target, built)
            }
            SpecMount::Tmpfs { target, size_bytes } => {
                let target = mount_target(target)?;
                let mut options = strings(&["nosuid", "nodev"]);
                if *size_bytes > 0 {
                    options.push(format!("size={size_bytes}"));
                }
                let built = oci(MountBuilder::default()
                    .destination(target.as_str())
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(options)
                    .build())?;
                (target, built)
            }
        };
        if !seen.insert(target.clone()) {
            return Err(EngineError::invalid(format!(
                "duplicate mount target {target:?}: each path can be mounted only once"
            )));
        }
        out.push(built);
    }
    Ok(out)
}

fn device_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup> {
    let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).typ(typ).access(access);
    if let Some(major) = major {
        b = b.major(major);
    }
    if let Some(minor) = minor {
        b = b.minor(minor);
    }
    oci(b.build())
}

/// moby's `DefaultLinuxSpec` rules plus the ones runc appends (mknod of anything, the pty
/// devices), so the result is what a Docker container gets. libcgroups additionally appends
/// its own defaults, which include runc's old tun/tap (10:200) allowance; that cannot be
/// turned off from the spec.
fn device_rules() -> Result<Vec<LinuxDeviceCgroup>> {
    use LinuxDeviceType::{A, B, C};
    let rwm = "rwm";
    Ok(vec![
        device_rule(false, A, None, None, rwm)?,
        // Creating nodes is harmless when they cannot be opened.
        device_rule(true, C, None, None, "m")?,
        device_rule(true, B, None, None, "m")?,
        device_rule(true, C, Some(1), Some(3), rwm)?,     // null
        device_rule(true, C, Some(1), Some(5), rwm)?,     // zero
        device_rule(true, C, Some(1), Some(7), rwm)?,     // full
        device_rule(true, C, Some(1), Some(8), rwm)?,     // random
        device_rule(true, C, Some(1), Some(9), rwm)?,     // urandom
        device_rule(true, C, Some(5), Some(0), rwm)?,     // tty
        device_rule(true, C, Some(5), Some(1), rwm)?,     // console
        device_rule(true, C, Some(5), Some(2), rwm)?,     // ptmx
        device_rule(true, C, Some(136), None, rwm)?,      // pts
        device_rule(false, C, Some(10), Some(229), rwm)?, // fuse, as moby denies explicitly
    ])
}

fn memory_limit(r: &Resources, host: &Host) -> Result<oci_spec::runtime::LinuxMemory> {
    let mut b = LinuxMemoryBuilder::default();
    if let Some(bytes) = r.memory_bytes {
        if bytes < MIN_MEMORY_BYTES {
            return Err(EngineError::invalid(format!(
                "invalid memory limit of {bytes} bytes: the minimum allowed is 6MB ({MIN_MEMORY_BYTES} bytes)"
            )));
        }
        let limit = i64::try_from(bytes)
            .map_err(|_| EngineError::invalid(format!("invalid memory limit of {bytes} bytes: it is too large")))?;
        b = b.limit(limit);
        if host.swap_limit {
            // memory+swap equal to memory: swap cannot be used to exceed the limit.
            b = b.swap(limit);
        }
    }
    oci(b.build())
}

/// cgroup v2 files written as they are. `linux.resources.memory.swap` (memory+swap, as on v1)
/// equal to the limit means no swap on top of it, but libcgroups turns that into
/// `memory.swap.max` = 0 and then skips writing a 0, leaving swap unlimited; so the 0 is
/// written from here.
fn unified_resources(r: &Resources, host: &Host) -> HashMap<String, String> {
    let mut unified = HashMap::new();
    if host.cgroup_v2 && host.swap_limit && r.memory_bytes.is_some() {
        unified.insert("memory.swap.max".to_string(), "0".to_string());
    }
    unified
}

fn cpu_limit(r: &Resources) -> Result<oci_spec::runtime::LinuxCpu> {
    let mut b = LinuxCpuBuilder::default();
    if let Some(millis) = r.cpu_millis {
        if millis == 0 {
            return Err(EngineError::invalid(
                "invalid CPU limit of 0: the container could never run; the minimum is 10 millicpus (0.01 CPU)",
            ));
        }
        if millis < MIN_CPU_MILLIS {
            return Err(EngineError::invalid(format!(
                "invalid CPU limit of {millis} millicpus: the minimum is {MIN_CPU_MILLIS} (0.01 CPU)"
            )));
        }
        let quota = millis
            .checked_mul(CPU_PERIOD_US / 1000)
            .and_then(|q| i64::try_from(q).ok())
            .ok_or_else(|| EngineError::invalid(format!("invalid CPU limit of {millis} millicpus: it is too large")))?;
        b = b.period(CPU_PERIOD_US).quota(quota);
    }
    oci(b.build())
}

fn pids_limit(r: &Resources) -> Result<i64> {
    match r.pids_limit {
        None => Ok(DEFAULT_PIDS_LIMIT),
        Some(n) if n == -1 || n > 0 => Ok(n),
        Some(n) => Err(EngineError::invalid(format!(
            "invalid pids limit {n}: use a positive number of processes, or -1 for no limit"
        ))),
    }
}

/// Docker's default seccomp profile (moby `profiles/seccomp/default.json`) for the default
/// capability set on this machine's architecture.
pub fn default_seccomp() -> LinuxSeccomp {
    seccomp_profile(Host::detect().ptrace_safe)
}

fn seccomp_profile(ptrace_safe: bool) -> LinuxSeccomp {
    let mut syscalls = vec![allow(ALLOWED_SYSCALLS)];
    if ptrace_safe {
        syscalls.push(allow(&["process_vm_readv", "process_vm_writev", "ptrace"]));
    }
    // Only the execution domains moby allows: PER_LINUX, UNAME26, ADDR_NO_RANDOMIZE, both,
    // and the 0xffffffff query. Others (e.g. READ_IMPLIES_EXEC) weaken memory protections.
    for persona in [0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff] {
        syscalls.push(with_arg(allow(&["personality"]), arg(0, persona, None, LinuxSeccompOperator::ScmpCmpEq)));
    }
    if cfg!(target_arch = "x86_64") {
        syscalls.push(allow(&["arch_prctl", "modify_ldt"]));
    }
    if cfg!(target_arch = "x86") {
        syscalls.push(allow(&["modify_ldt"]));
    }
    if cfg!(any(target_arch = "aarch64", target_arch = "arm")) {
        syscalls.push(allow(&[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ]));
    }
    // The one capability-gated group the default set unlocks.
    syscalls.push(allow(&["chroot"]));
    // Without CAP_SYS_ADMIN, moby allows clone only when it creates no namespace: a
    // masked-equal test of the flags (argument 0; only s390 differs) against zero.
    // libcontainer 0.7 reads `valueTwo` as the mask and `value` as the datum (runc reads them
    // the other way round), so the mask goes in valueTwo here. With moby's order the mask
    // would be 0, libseccomp would compare 0 == 0, and every clone, namespace flags
    // included, would be allowed.
    syscalls.push(with_arg(
        allow(&["clone"]),
        arg(0, 0, Some(CLONE_NAMESPACE_FLAGS), LinuxSeccompOperator::ScmpCmpMaskedEq),
    ));
    // clone3 passes its flags in memory seccomp cannot inspect; ENOSYS (not EPERM) makes
    // glibc fall back to clone, which the rule above can check.
    let mut clone3 = LinuxSyscall::default();
    clone3.set_names(strings(&["clone3"]));
    clone3.set_action(LinuxSeccompAction::ScmpActErrno);
    clone3.set_errno_ret(Some(38));
    syscalls.push(clone3);

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(1));
    profile.set_architectures(Some(seccomp_architectures()));
    profile.set_syscalls(Some(syscalls));
    profile
}

/// The native architecture with its compat ABIs, as moby's archMap: without the compat
/// entries a 32-bit binary's syscalls would all hit the default action.
fn seccomp_architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

fn allow(names: &[&str]) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(strings(names));
    s.set_action(LinuxSeccompAction::ScmpActAllow);
    s
}

fn arg(index: usize, value: u64, value_two: Option<u64>, op: LinuxSeccompOperator) -> LinuxSeccompArg {
    let mut b = LinuxSeccompArgBuilder::default().index(index).value(value).op(op);
    if let Some(v) = value_two {
        b = b.value_two(v);
    }
    // LinuxSeccompArg has no setters, and its builder has a default for every field, so
    // building cannot fail.
    b.build().expect("every LinuxSeccompArg field has a default")
}

fn with_arg(mut s: LinuxSyscall, a: LinuxSeccompArg) -> LinuxSyscall {
    s.set_args(Some(vec![a]));
    s
}

/// moby's unconditional allowlist, with the unprivileged calls newer moby releases added
/// (cachestat, fchmodat2, map_shadow_stack, futex2): new glibc uses some of them and only falls
/// back to older calls on ENOSYS, not on our EPERM. Left out are names Debian 12's libseccomp
/// 2.5.4 cannot resolve (e.g. mseal): libcontainer skips those with a warning on every start.
const ALLOWED_SYSCALLS: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ErrorKind;
    use serde_json::Value;

    const V1_HOST: Host = Host { cgroup_v2: false, swap_limit: true, nofile: 1_048_576, ptrace_safe: true };
    const V2_HOST: Host = Host { cgroup_v2: true, swap_limit: true, nofile: 524_288, ptrace_safe: true };

    fn process() -> ProcessSpec {
        ProcessSpec {
            args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/usr/bin:/bin".into(), "HOME=/root".into()],
            cwd: "/work".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![10, 20],
            terminal: false,
        }
    }

    fn input() -> SpecInput {
        SpecInput {
            rootfs: "/var/lib/porthole/containers/abc/rootfs".into(),
            process: process(),
            hostname: "abc123".into(),
            read_only_rootfs: false,
            mounts: vec![],
            resources: Resources::default(),
            network_mode: NetworkMode::None,
            cgroups_path: "/porthole/abc".into(),
        }
    }

    fn json(spec: &Spec) -> Value {
        serde_json::to_value(spec).unwrap()
    }

    fn invalid(r: Result<Spec>) -> String {
        let e = r.expect_err("expected an invalid-argument error");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", e.detail());
        e.message().to_string()
    }

    fn namespace_types(spec: &Spec) -> Vec<LinuxNamespaceType> {
        spec.linux().as_ref().unwrap().namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect()
    }

    fn mount_at<'a>(spec: &'a Spec, dest: &str) -> &'a Mount {
        spec.mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new(dest))
            .unwrap_or_else(|| panic!("no mount at {dest}"))
    }

    fn options(m: &Mount) -> Vec<&str> {
        m.options().as_ref().unwrap().iter().map(String::as_str).collect()
    }

    fn resources(spec: &Spec) -> oci_spec::runtime::LinuxResources {
        spec.linux().as_ref().unwrap().resources().clone().unwrap()
    }

    fn with_resources(r: Resources) -> SpecInput {
        SpecInput { resources: r, ..input() }
    }

    #[test]
    fn spec_serialises_with_docker_defaults() {
        let spec = build_spec_on(&SpecInput { read_only_rootfs: true, ..input() }, &V1_HOST).unwrap();
        let text = serde_json::to_string(&spec).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();

        assert_eq!(v["ociVersion"], "1.0.2");
        assert_eq!(v["root"]["path"], "/var/lib/porthole/containers/abc/rootfs");
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["hostname"], "abc123");
        assert_eq!(v["linux"]["cgroupsPath"], "/porthole/abc");
        assert_eq!(v["linux"]["rootfsPropagation"], "private");
        assert!(v.get("annotations").is_none());
        assert!(v["linux"].get("sysctl").is_none());
        assert_eq!(v["linux"]["devices"], serde_json::json!([]));

        let masked: Vec<&str> =
            v["linux"]["maskedPaths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert_eq!(
            masked,
            [
                "/proc/asound",
                "/proc/acpi",
                "/proc/interrupts",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/proc/scsi",
                "/sys/firmware",
                "/sys/devices/virtual/powercap",
            ]
        );
        let readonly: Vec<&str> =
            v["linux"]["readonlyPaths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        let moby = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];
        assert_eq!(readonly[..moby.len()], moby);
        // On v1 the cgroup hierarchies too, /sys/fs/cgroup first so that its submounts are
        // remounted after it.
        assert_eq!(readonly[moby.len()..], *CGROUP_V1_PATHS);
        let v2 = build_spec_on(&input(), &V2_HOST).unwrap();
        assert_eq!(v2.linux().as_ref().unwrap().readonly_paths().as_deref().unwrap(), moby);

        // Round-trips through the JSON libcontainer reads.
        let back: Spec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn default_mounts_match_docker() {
        let spec = build_spec_on(&input(), &V1_HOST).unwrap();
        let dests: Vec<_> = spec.mounts().as_ref().unwrap().iter().map(|m| m.destination().to_str().unwrap()).collect();
        assert_eq!(dests, ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]);

        let dev = mount_at(&spec, "/dev");
        assert_eq!(dev.typ().as_deref(), Some("tmpfs"));
        assert_eq!(options(dev), ["nosuid", "strictatime", "mode=755", "size=65536k"]);
        let pts = mount_at(&spec, "/dev/pts");
        assert_eq!(pts.typ().as_deref(), Some("devpts"));
        for o in ["newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] {
            assert!(options(pts).contains(&o), "{o}");
        }
        let shm = options(mount_at(&spec, "/dev/shm"));
        for o in ["nosuid", "nodev", "noexec", "size=65536k"] {
            assert!(shm.contains(&o), "{o}");
        }
        assert_eq!(mount_at(&spec, "/dev/mqueue").typ().as_deref(), Some("mqueue"));
        let sys = mount_at(&spec, "/sys");
        assert_eq!(sys.typ().as_deref(), Some("sysfs"));
        assert!(options(sys).contains(&"ro"));
        let cg = mount_at(&spec, "/sys/fs/cgroup");
        assert_eq!(cg.typ().as_deref(), Some("cgroup"));
        assert!(options(cg).contains(&"ro"));
        assert_eq!(mount_at(&spec, "/proc").typ().as_deref(), Some("proc"));
    }

    #[test]
    fn capability_mask_is_dockers_cap_eff() {
        // Bit numbers from linux/capability.h, independent of capability_bit().
        let bits = [
            0,  // CHOWN
            1,  // DAC_OVERRIDE
            3,  // FOWNER
            4,  // FSETID
            5,  // KILL
            6,  // SETGID
            7,  // SETUID
            8,  // SETPCAP
            10, // NET_BIND_SERVICE
            13, // NET_RAW
            18, // SYS_CHROOT
            27, // MKNOD
            29, // AUDIT_WRITE
            31, // SETFCAP
        ];
        let expected = bits.iter().fold(0u64, |m, b| m | 1 << b);
        assert_eq!(expected, 0x0000_0000_a804_25fb);
        assert_eq!(default_capability_mask(), expected);
    }

    #[test]
    fn default_capabilities_are_exactly_dockers_fourteen() {
        let caps = default_capabilities();
        let names: HashSet<String> =
            caps.iter().map(|c| serde_json::to_value(c).unwrap().as_str().unwrap().to_string()).collect();
        let docker: HashSet<String> = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(caps.len(), 14);
        assert_eq!(names, docker);
    }

    #[test]
    fn network_none_gets_a_network_namespace_and_host_does_not() {
        let none = build_spec_on(&input(), &V1_HOST).unwrap();
        let ns = namespace_types(&none);
        for t in [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Network,
        ] {
            assert!(ns.contains(&t), "{t:?} missing from {ns:?}");
        }
        assert!(!ns.contains(&LinuxNamespaceType::User));

        let host = build_spec_on(&SpecInput { network_mode: NetworkMode::Host, ..input() }, &V1_HOST).unwrap();
        let ns = namespace_types(&host);
        assert!(!ns.contains(&LinuxNamespaceType::Network), "{ns:?}");
        // Still its own hostname: uts stays private.
        assert!(ns.contains(&LinuxNamespaceType::Uts));
        assert_eq!(host.hostname().as_deref(), Some("abc123"));
    }

    #[test]
    fn cgroup_namespace_only_on_unified_hosts() {
        let v1 = namespace_types(&build_spec_on(&input(), &V1_HOST).unwrap());
        assert!(!v1.contains(&LinuxNamespaceType::Cgroup));
        let v2 = namespace_types(&build_spec_on(&input(), &V2_HOST).unwrap());
        assert!(v2.contains(&LinuxNamespaceType::Cgroup));
    }

    #[test]
    fn devices_deny_all_then_allow_dockers_list() {
        let devices = resources(&build_spec_on(&input(), &V1_HOST).unwrap()).devices().clone().unwrap();
        let rules: Vec<String> =
            devices.iter().map(|d| format!("{} {}", if d.allow() { "allow" } else { "deny" }, d)).collect();
        assert_eq!(rules[0], "deny a *:* rwm");
        for want in [
            "allow c *:* m",
            "allow b *:* m",
            "allow c 1:3 rwm",
            "allow c 1:5 rwm",
            "allow c 1:7 rwm",
            "allow c 1:8 rwm",
            "allow c 1:9 rwm",
            "allow c 5:0 rwm",
            "allow c 5:1 rwm",
            "allow c 5:2 rwm",
            "allow c 136:* rwm",
            "deny c 10:229 rwm",
        ] {
            assert!(rules.contains(&want.to_string()), "{want} missing from {rules:?}");
        }
        assert!(!rules.iter().any(|r| r.starts_with("allow c 10:200")), "tun is not in Docker's list");
    }

    #[test]
    fn user_mounts_follow_the_defaults_with_docker_options() {
        let spec = build_spec_on(
            &SpecInput {
                mounts: vec![
                    SpecMount::Bind { source: "/srv/data".into(), target: "/data".into(), read_only: true },
                    SpecMount::Bind { source: "/srv/rw".into(), target: "/rw/".into(), read_only: false },
                    SpecMount::Tmpfs { target: "/run".into(), size_bytes: 1 << 20 },
                    SpecMount::Tmpfs { target: "/scratch".into(), size_bytes: 0 },
                ],
                ..input()
            },
            &V1_HOST,
        )
        .unwrap();
        let mounts = spec.mounts().as_ref().unwrap();
        assert_eq!(mounts.len(), 7 + 4);
        assert_eq!(mounts[7].destination(), Path::new("/data"));

        let data = mount_at(&spec, "/data");
        assert_eq!(data.typ().as_deref(), Some("bind"));
        assert_eq!(data.source().as_deref(), Some(Path::new("/srv/data")));
        assert_eq!(options(data), ["rbind", "rprivate", "ro"]);
        // Normalised target, and no "ro" when writable.
        assert_eq!(options(mount_at(&spec, "/rw")), ["rbind", "rprivate"]);

        let run = mount_at(&spec, "/run");
        assert_eq!(run.typ().as_deref(), Some("tmpfs"));
        assert_eq!(options(run), ["nosuid", "nodev", "size=1048576"]);
        assert_eq!(options(mount_at(&spec, "/scratch")), ["nosuid", "nodev"]);
    }

    #[test]
    fn invalid_mount_targets_are_rejected_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("data", "absolute"),
            ("", "absolute"),
            ("/data/../etc", "\"..\""),
            ("/..", "\"..\""),
            ("/", "root filesystem"),
            ("/proc", "/proc is set up by the engine"),
            ("/proc/sys/kernel", "/proc is set up by the engine"),
            ("/dev", "/dev is set up by the engine"),
            ("/dev/shm", "/dev is set up by the engine"),
            ("//sys/", "/sys is set up by the engine"),
            ("/sys/fs/cgroup", "/sys is set up by the engine"),
        ];
        for (target, reason) in cases {
            for m in [
                SpecMount::Tmpfs { target: target.to_string(), size_bytes: 0 },
                SpecMount::Bind { source: "/srv".into(), target: target.to_string(), read_only: false },
            ] {
                let msg = invalid(build_spec_on(&SpecInput { mounts: vec![m], ..input() }, &V1_HOST));
                assert!(msg.contains(reason), "{target:?}: {msg}");
                assert!(msg.contains(&format!("{target:?}")), "{target:?} not named in: {msg}");
            }
        }
        // Only whole components count: /procfs and /device are ordinary paths.
        for ok in ["/procfs", "/device", "/system"] {
            let m = SpecMount::Tmpfs { target: ok.into(), size_bytes: 0 };
            build_spec_on(&SpecInput { mounts: vec![m], ..input() }, &V1_HOST).unwrap();
        }
    }

    #[test]
    fn duplicate_targets_and_relative_sources_are_rejected() {
        let msg = invalid(build_spec_on(
            &SpecInput {
                mounts: vec![
                    SpecMount::Tmpfs { target: "/data".into(), size_bytes: 0 },
                    SpecMount::Bind { source: "/srv".into(), target: "/data/".into(), read_only: false },
                ],
                ..input()
            },
            &V1_HOST,
        ));
        assert!(msg.contains("duplicate mount target \"/data\""), "{msg}");

        let msg = invalid(build_spec_on(
            &SpecInput {
                mounts: vec![SpecMount::Bind { source: "srv/x".into(), target: "/x".into(), read_only: false }],
                ..input()
            },
            &V1_HOST,
        ));
        assert!(msg.contains("absolute host path"), "{msg}");
    }

    #[test]
    fn swap_on_v2_is_capped_through_the_unified_file_only_where_it_is_accounted() {
        let r = Resources { memory_bytes: Some(64 << 20), ..Default::default() };
        let unified = |host: &Host, r: &Resources| {
            resources(&build_spec_on(&with_resources(*r), host).unwrap()).unified().clone()
        };
        let zero = HashMap::from([("memory.swap.max".to_string(), "0".to_string())]);
        assert_eq!(unified(&V2_HOST, &r), Some(zero));
        assert_eq!(unified(&Host { swap_limit: false, ..V2_HOST }, &r), None);
        assert_eq!(unified(&V1_HOST, &r), None, "v1 has memory.memsw.limit_in_bytes");
        assert_eq!(unified(&V2_HOST, &Resources::default()), None, "no memory limit, no swap limit");
    }

    #[test]
    fn v2_swap_accounting_is_read_from_a_cgroup_with_the_memory_controller() {
        let root = tempfile::tempdir().unwrap();
        let make = |dir: &str, files: &[&str]| {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
            for f in files {
                std::fs::write(root.path().join(dir).join(f), "max\n").unwrap();
            }
        };
        // Nothing has the memory controller: unknown, so swap is left alone.
        make("init.scope", &["cgroup.procs"]);
        assert!(!v2_swap_accounting(root.path(), None));
        make("system.slice/porthole.service", &["memory.max", "memory.swap.max"]);
        assert!(v2_swap_accounting(root.path(), Some(Path::new("system.slice/porthole.service"))));
        make("user.slice/session-1.scope", &["memory.max"]);
        assert!(!v2_swap_accounting(root.path(), Some(Path::new("user.slice/session-1.scope"))));
        assert_eq!(
            own_unified_cgroup("12:pids:/x\n0::/system.slice/porthole.service\n"),
            Some(PathBuf::from("system.slice/porthole.service"))
        );
        assert_eq!(own_unified_cgroup("4:memory:/x\n"), None);
    }

    #[test]
    fn memory_limit_sets_swap_to_the_same_value() {
        let r = Resources { memory_bytes: Some(64 << 20), ..Default::default() };
        let mem = resources(&build_spec_on(&with_resources(r), &V1_HOST).unwrap()).memory().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        assert_eq!(mem.swap(), Some(64 << 20));

        // Without swap accounting the limit still applies, swap is left alone (as Docker).
        let no_swap = Host { swap_limit: false, ..V1_HOST };
        let mem = resources(&build_spec_on(&with_resources(r), &no_swap).unwrap()).memory().unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), None));

        let none = resources(&build_spec_on(&input(), &V1_HOST).unwrap()).memory().unwrap();
        assert_eq!((none.limit(), none.swap()), (None, None));
    }

    #[test]
    fn memory_below_docker_minimum_is_invalid() {
        let r = Resources { memory_bytes: Some(MIN_MEMORY_BYTES - 1), ..Default::default() };
        let msg = invalid(build_spec_on(&with_resources(r), &V1_HOST));
        assert!(msg.contains("memory limit") && msg.contains("6MB"), "{msg}");

        let r = Resources { memory_bytes: Some(MIN_MEMORY_BYTES), ..Default::default() };
        build_spec_on(&with_resources(r), &V1_HOST).unwrap();

        let r = Resources { memory_bytes: Some(u64::MAX), ..Default::default() };
        assert!(invalid(build_spec_on(&with_resources(r), &V1_HOST)).contains("too large"));
    }

    #[test]
    fn cpu_millis_become_a_cfs_quota() {
        let r = Resources { cpu_millis: Some(1500), ..Default::default() };
        let cpu = resources(&build_spec_on(&with_resources(r), &V1_HOST).unwrap()).cpu().clone().unwrap();
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.quota(), Some(150_000));

        let r = Resources { cpu_millis: Some(10), ..Default::default() };
        let cpu = resources(&build_spec_on(&with_resources(r), &V1_HOST).unwrap()).cpu().clone().unwrap();
        assert_eq!(cpu.quota(), Some(1_000));

        let cpu = resources(&build_spec_on(&input(), &V1_HOST).unwrap()).cpu().clone().unwrap();
        assert_eq!((cpu.period(), cpu.quota()), (None, None));
    }

    #[test]
    fn zero_tiny_or_huge_cpu_limits_are_invalid() {
        for (millis, reason) in [(0, "CPU limit of 0"), (5, "minimum is 10"), (u64::MAX, "too large")] {
            let r = Resources { cpu_millis: Some(millis), ..Default::default() };
            let msg = invalid(build_spec_on(&with_resources(r), &V1_HOST));
            assert!(msg.contains(reason), "{millis}: {msg}");
        }
    }

    #[test]
    fn default_pids_limit_applies_when_unset() {
        let pids = resources(&build_spec_on(&input(), &V1_HOST).unwrap()).pids().unwrap();
        assert_eq!(pids.limit(), DEFAULT_PIDS_LIMIT);

        for n in [1, 100, -1] {
            let r = Resources { pids_limit: Some(n), ..Default::default() };
            let pids = resources(&build_spec_on(&with_resources(r), &V1_HOST).unwrap()).pids().unwrap();
            assert_eq!(pids.limit(), n);
        }
    }

    #[test]
    fn zero_or_negative_pids_limits_are_invalid() {
        for n in [0, -2, i64::MIN] {
            let r = Resources { pids_limit: Some(n), ..Default::default() };
            let msg = invalid(build_spec_on(&with_resources(r), &V1_HOST));
            assert!(msg.contains(&format!("invalid pids limit {n}")) && msg.contains("-1"), "{msg}");
        }
    }

    #[test]
    fn long_hostname_is_invalid() {
        let msg = invalid(build_spec_on(&SpecInput { hostname: "h".repeat(65), ..input() }, &V1_HOST));
        assert!(msg.contains("hostname"), "{msg}");
        build_spec_on(&SpecInput { hostname: "h".repeat(64), ..input() }, &V1_HOST).unwrap();
    }

    #[test]
    fn root_process_gets_dockers_capabilities_and_no_new_privileges() {
        let p = process_spec_on(&process(), &V1_HOST).unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["args"], serde_json::json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(v["env"], serde_json::json!(["PATH=/usr/bin:/bin", "HOME=/root"]));
        assert_eq!(v["cwd"], "/work");
        assert_eq!(v["user"]["uid"], 0);
        assert_eq!(v["user"]["additionalGids"], serde_json::json!([10, 20]));
        assert_eq!(v["noNewPrivileges"], true);
        assert_eq!(v["terminal"], false);

        let defaults: HashSet<Capability> = default_capabilities().into_iter().collect();
        let caps = p.capabilities().clone().unwrap();
        assert_eq!(caps.bounding().as_ref(), Some(&defaults));
        assert_eq!(caps.effective().as_ref(), Some(&defaults));
        assert_eq!(caps.permitted().as_ref(), Some(&defaults));
        assert_eq!(caps.inheritable().as_ref(), Some(&HashSet::new()));
        assert_eq!(caps.ambient().as_ref(), Some(&HashSet::new()));

        let rlimits = p.rlimits().clone().unwrap();
        assert_eq!(rlimits.len(), 1);
        assert_eq!(rlimits[0].typ(), PosixRlimitType::RlimitNofile);
        assert_eq!((rlimits[0].soft(), rlimits[0].hard()), (1_048_576, 1_048_576));
        // Capped by the host's fs.nr_open.
        let capped = process_spec_on(&process(), &V2_HOST).unwrap();
        assert_eq!(capped.rlimits().as_ref().unwrap()[0].hard(), 524_288);
    }

    #[test]
    fn non_root_process_keeps_only_the_bounding_set() {
        let p = process_spec_on(&ProcessSpec { uid: 1000, gid: 1000, terminal: true, ..process() }, &V1_HOST).unwrap();
        let caps = p.capabilities().clone().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
        assert!(caps.effective().as_ref().unwrap().is_empty());
        assert!(caps.permitted().as_ref().unwrap().is_empty());
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert_eq!(p.terminal(), Some(true));
    }

    #[test]
    fn process_needs_a_command_and_an_absolute_cwd() {
        for args in [vec![], vec![String::new()]] {
            let e = process_spec(&ProcessSpec { args, ..process() }).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert_eq!(e.message(), "no command specified");
        }
        let e = process_spec(&ProcessSpec { cwd: "work".into(), ..process() }).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.message().contains("absolute path"), "{e}");
        let p = process_spec(&ProcessSpec { cwd: String::new(), ..process() }).unwrap();
        assert_eq!(p.cwd(), Path::new("/"));
        let e = process_spec(&ProcessSpec { env: vec!["A=\0".into()], ..process() }).unwrap_err();
        assert!(e.message().contains("NUL"), "{e}");
    }

    fn allowed_names(profile: &LinuxSeccomp) -> HashSet<String> {
        profile
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow)
            .flat_map(|s| s.names().iter().cloned())
            .collect()
    }

    #[test]
    fn seccomp_allows_ordinary_programs_and_blocks_dangerous_calls() {
        let profile = seccomp_profile(true);
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(profile.default_errno_ret(), Some(1));
        let allowed = allowed_names(&profile);
        for name in [
            "read",
            "write",
            "execve",
            "clone",
            "wait4",
            "openat",
            "mmap",
            "exit_group",
            "rt_sigreturn",
            "getdents64",
            "fork",
            "vfork",
            "kill",
            "nanosleep",
            "chroot",
            "ptrace",
        ] {
            assert!(allowed.contains(name), "{name} should be allowed");
        }
        for name in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "reboot",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "swapon",
            "pivot_root",
            "clone3",
            "acct",
            "settimeofday",
            "perf_event_open",
            "open_by_handle_at",
        ] {
            assert!(!allowed.contains(name), "{name} must not be allowed");
        }
        assert!(!allowed_names(&seccomp_profile(false)).contains("ptrace"));
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                profile.architectures().as_deref(),
                Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
            );
            assert!(allowed.contains("arch_prctl"));
        }
    }

    #[test]
    fn seccomp_clone_rule_forbids_namespace_flags_and_clone3_is_enosys() {
        let profile = default_seccomp();
        let syscalls = profile.syscalls().as_ref().unwrap();
        let clone: Vec<_> = syscalls.iter().filter(|s| s.names().iter().any(|n| n == "clone")).collect();
        assert_eq!(clone.len(), 1, "clone must only be allowed through the flag filter");
        let args = clone[0].args().as_ref().unwrap();
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].index(), 0);
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        // Mask in valueTwo, datum in value: how libcontainer 0.7 reads them.
        assert_eq!(args[0].value_two(), Some(2_114_060_288));
        assert_eq!(args[0].value(), 0);
        let ns_flags = libc::CLONE_NEWNS
            | libc::CLONE_NEWCGROUP
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUSER
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET;
        assert_eq!(CLONE_NAMESPACE_FLAGS, ns_flags as u64);

        let clone3 = syscalls.iter().find(|s| s.names() == &vec!["clone3".to_string()]).unwrap();
        assert_eq!(clone3.action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3.errno_ret(), Some(38));

        let personas: Vec<u64> = syscalls
            .iter()
            .filter(|s| s.names() == &vec!["personality".to_string()])
            .map(|s| s.args().as_ref().unwrap()[0].value())
            .collect();
        assert_eq!(personas, [0, 8, 0x20000, 0x20008, 0xffff_ffff]);
    }

    #[test]
    fn kernel_release_parsing() {
        assert_eq!(kernel_version("6.1.0-18-amd64\n"), Some((6, 1)));
        assert_eq!(kernel_version("4.8.0"), Some((4, 8)));
        assert_eq!(kernel_version("5.15.0-generic"), Some((5, 15)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(kernel_version("4.7.10").unwrap() < (4, 8));
    }

    #[test]
    fn build_spec_works_against_this_host() {
        let spec = build_spec(&input()).unwrap();
        assert_eq!(json(&spec)["process"]["args"][0], "/bin/sh");
        let nofile = spec.process().as_ref().unwrap().rlimits().as_ref().unwrap()[0].hard();
        assert!(nofile > 0 && nofile <= DEFAULT_NOFILE);
    }
}
