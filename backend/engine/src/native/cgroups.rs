//! Reading a container's cgroup: which cgroup version the host runs (decided at run time), and
//! the counters behind stats and OOM detection. libcontainer creates and removes the
//! containers' cgroups; this module only reads them, and makes their common parent on v2.

use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Controllers on v1 hierarchies (possibly with an empty cgroup2 mount beside them).
    V1,
    /// The unified hierarchy only.
    V2,
}

impl CgroupVersion {
    pub fn detect() -> Self {
        Self::detect_at(Path::new(CGROUP_ROOT))
    }

    fn detect_at(root: &Path) -> Self {
        if root.join("cgroup.controllers").exists() {
            CgroupVersion::V2
        } else {
            CgroupVersion::V1
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        }
    }
}

/// Makes the directories above a container's cgroup in the unified hierarchy. libcgroups' v2
/// manager makes each missing one with a check followed by mkdir, which fails with EEXIST when
/// another container's start made it in between: on a fresh host, two containers starting at
/// once (restart policies at boot) could fail. Made here first, concurrent starts tolerate each
/// other. Nothing to do on v1, where libcgroups uses create_dir_all.
pub fn create_parents(cgroups_path: &Path) -> std::io::Result<()> {
    if CgroupVersion::detect() != CgroupVersion::V2 {
        return Ok(());
    }
    let relative = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    match relative.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => std::fs::create_dir_all(Path::new(CGROUP_ROOT).join(parent)),
        _ => Ok(()),
    }
}

/// Makes the kernel start, now, the wait that the next cgroup migration would otherwise spend
/// inside a container's start or exec. Every move of a process between cgroups (v1 and v2)
/// takes a global lock that, after a quiet spell, first waits for an RCU grace period
/// (`cgroup_threadgroup_rwsem`, whose fast path rcu_sync keeps until then): about 8 ms here,
/// half of what a start takes. Moves that follow within about a grace period do not wait
/// again. So the engine makes a move that changes nothing, of this process into the cgroup it
/// is in, as a start or exec begins (on a blocking thread: it waits for the grace period), and
/// libcontainer's move of the container's process, a few milliseconds later, finds the wait
/// over or under way. Best effort: where the move is refused (a read-only /sys/fs/cgroup) the
/// start merely takes longer.
pub fn prime_migration(version: CgroupVersion) -> std::io::Result<()> {
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    let procs = own_procs_file(Path::new(CGROUP_ROOT), &own, version)
        .ok_or_else(|| std::io::Error::other("this process's cgroup is not in /proc/self/cgroup"))?;
    std::fs::write(procs, std::process::id().to_string())
}

/// The `cgroup.procs` of this process's own cgroup: in the unified hierarchy on v2, in the pids
/// hierarchy on v1 (which the engine needs anyway, for its default pids limit).
fn own_procs_file(root: &Path, proc_self_cgroup: &str, version: CgroupVersion) -> Option<PathBuf> {
    let (hierarchy, path) = proc_self_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        match version {
            CgroupVersion::V2 => controllers.is_empty().then_some(("", path)),
            CgroupVersion::V1 => controllers.split(',').any(|c| c == "pids").then_some((controllers, path)),
        }
    })?;
    let relative = Path::new(path.trim()).strip_prefix("/").ok()?;
    if relative.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return None;
    }
    Some(root.join(hierarchy).join(relative).join("cgroup.procs"))
}

/// A container's cgroup, given the `cgroupsPath` from its spec.
#[derive(Debug, Clone)]
pub struct ContainerCgroup {
    version: CgroupVersion,
    relative: PathBuf,
}

impl ContainerCgroup {
    pub fn new(cgroups_path: &Path) -> Self {
        let relative = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path).to_path_buf();
        ContainerCgroup { version: CgroupVersion::detect(), relative }
    }

    fn file(&self, v1_controller: &str, name: &str) -> PathBuf {
        match self.version {
            CgroupVersion::V1 => Path::new(CGROUP_ROOT).join(v1_controller).join(&self.relative).join(name),
            CgroupVersion::V2 => Path::new(CGROUP_ROOT).join(&self.relative).join(name),
        }
    }

    fn read(&self, v1_controller: &str, name: &str) -> Option<String> {
        std::fs::read_to_string(self.file(v1_controller, name)).ok()
    }

    /// How many times the kernel's OOM killer killed a process of this container.
    pub fn oom_kills(&self) -> u64 {
        let text = match self.version {
            CgroupVersion::V1 => self.read("memory", "memory.oom_control"),
            CgroupVersion::V2 => self.read("memory", "memory.events"),
        };
        text.as_deref().and_then(|t| keyed_value(t, "oom_kill")).unwrap_or(0)
    }

    /// Total CPU time in nanoseconds.
    pub fn cpu_total_ns(&self) -> u64 {
        match self.version {
            CgroupVersion::V1 => self.read("cpuacct", "cpuacct.usage").and_then(|s| s.trim().parse().ok()).unwrap_or(0),
            CgroupVersion::V2 => self
                .read("cpu", "cpu.stat")
                .and_then(|t| keyed_value(&t, "usage_usec"))
                .map(|us| us.saturating_mul(1000))
                .unwrap_or(0),
        }
    }

    /// Memory in use, without the page cache that the kernel can drop (as `docker stats`).
    pub fn memory_bytes(&self) -> u64 {
        match self.version {
            CgroupVersion::V1 => {
                let usage: u64 =
                    self.read("memory", "memory.usage_in_bytes").and_then(|s| s.trim().parse().ok()).unwrap_or(0);
                let inactive = self
                    .read("memory", "memory.stat")
                    .and_then(|t| keyed_value(&t, "total_inactive_file"))
                    .unwrap_or(0);
                usage.saturating_sub(inactive)
            }
            CgroupVersion::V2 => {
                let usage: u64 = self.read("memory", "memory.current").and_then(|s| s.trim().parse().ok()).unwrap_or(0);
                let inactive =
                    self.read("memory", "memory.stat").and_then(|t| keyed_value(&t, "inactive_file")).unwrap_or(0);
                usage.saturating_sub(inactive)
            }
        }
    }

    pub fn memory_limit_bytes(&self) -> Option<u64> {
        let name = match self.version {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => "memory.max",
        };
        // v1 reports "no limit" as a huge page-aligned number, v2 as "max".
        self.read("memory", name).and_then(|s| s.trim().parse::<u64>().ok()).filter(|&limit| limit < (1u64 << 62))
    }

    pub fn pids(&self) -> u64 {
        self.read("pids", "pids.current").and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    pub fn pids_limit(&self) -> Option<u64> {
        self.read("pids", "pids.max").and_then(|s| s.trim().parse().ok())
    }
}

/// The number after `key` in a `key value` per line file.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(key)).then(|| parts.next().and_then(|v| v.parse().ok())).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values_are_found_exactly() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(text, "oom_kill"), Some(3));
        assert_eq!(keyed_value(text, "under_oom"), Some(0));
        assert_eq!(keyed_value(text, "missing"), None);
    }

    #[test]
    fn the_own_cgroup_is_found_in_the_hierarchy_of_the_version() {
        let root = Path::new("/sys/fs/cgroup");
        let hybrid = "12:pids:/system.slice/porthole.service\n1:name=systemd:/system.slice/porthole.service\n0::/system.slice/porthole.service\n";
        assert_eq!(
            own_procs_file(root, hybrid, CgroupVersion::V1),
            Some(PathBuf::from("/sys/fs/cgroup/pids/system.slice/porthole.service/cgroup.procs"))
        );
        assert_eq!(
            own_procs_file(root, hybrid, CgroupVersion::V2),
            Some(PathBuf::from("/sys/fs/cgroup/system.slice/porthole.service/cgroup.procs"))
        );
        assert_eq!(
            own_procs_file(root, "0::/\n", CgroupVersion::V2),
            Some(PathBuf::from("/sys/fs/cgroup/cgroup.procs"))
        );
        assert_eq!(own_procs_file(root, "0::/\n", CgroupVersion::V1), None, "no pids hierarchy");
        assert_eq!(own_procs_file(root, "3:cpu,pids:/a/../b\n", CgroupVersion::V1), None);
    }

    #[test]
    fn version_detection_looks_for_the_unified_controllers_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(CgroupVersion::detect_at(dir.path()), CgroupVersion::V1);
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        assert_eq!(CgroupVersion::detect_at(dir.path()), CgroupVersion::V2);
    }
}
