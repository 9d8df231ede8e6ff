//! Where the native engine keeps things under its data root, and the small on-disk records
//! (`container.json`, written by the engine; `state.json`, written by whoever owns the running
//! container: the shim while it lives, the engine otherwise). Writes are atomic (write + rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::api::{ContainerConfig, ContainerState, ContainerStatus};

use super::spec::ProcessSpec;

/// Unix socket paths are limited to 107 bytes; the shim sockets live in `<root>/run/`.
pub const MAX_ROOT_LEN: usize = 80;

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    pub fn volume_data(&self, name: &str) -> PathBuf {
        self.volumes_dir().join(name).join("_data")
    }

    /// libcontainer's own state directory.
    pub fn runtime_root(&self) -> PathBuf {
        self.root.join("runtime")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    pub fn record_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("container.json")
    }

    pub fn state_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("state.json")
    }

    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("bundle")
    }

    pub fn rootfs(&self, id: &str) -> PathBuf {
        self.bundle_dir(id).join("rootfs")
    }

    pub fn upper_dir(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("upper")
    }

    pub fn work_dir(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("work")
    }

    pub fn log_dir(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("logs")
    }

    pub fn shim_log(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("shim.log")
    }

    /// Short enough for `sun_path`: the socket is named after the short id.
    pub fn shim_socket(&self, id: &str) -> PathBuf {
        self.run_dir().join(format!("{}.sock", &id[..id.len().min(16)]))
    }

    /// The socket libcontainer sends PTY masters on; short for the same reason.
    pub fn console_socket(&self, id: &str) -> PathBuf {
        self.run_dir().join(format!("{}.tty", &id[..id.len().min(16)]))
    }

    /// The image layers (lowest first) the shim stacks under the container's writable layer.
    pub fn lower_dirs_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("layers.json")
    }

    /// The process description libcontainer's tenant builder reads for an exec.
    pub fn exec_process_path(&self, id: &str, exec_id: &str) -> PathBuf {
        self.container_dir(id).join(format!("exec-{exec_id}.json"))
    }

    /// The cgroup (relative to each hierarchy's root) a container's processes live in.
    pub fn cgroups_path(&self, id: &str) -> PathBuf {
        PathBuf::from(format!("/porthole/{id}"))
    }
}

/// `container.json`: what the engine decided at create time. Immutable afterwards.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub created: DateTime<Utc>,
    pub config: ContainerConfig,
    /// The reference as the user gave it, normalised.
    pub image: String,
    pub image_id: String,
    pub process: ProcessSpec,
    pub hostname: String,
}

/// `state.json`: the container's run-time state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub status: ContainerStatus,
    pub pid: Option<u32>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub restart_count: u32,
    /// Set by stop/kill, cleared by start: restart policies leave such a container alone.
    pub manually_stopped: bool,
    /// The shim serving this container, while one runs.
    pub shim_pid: Option<u32>,
}

impl RunState {
    pub fn created() -> Self {
        RunState {
            status: ContainerStatus::Created,
            pid: None,
            exit_code: None,
            oom_killed: false,
            error: None,
            started_at: None,
            finished_at: None,
            restart_count: 0,
            manually_stopped: false,
            shim_pid: None,
        }
    }

    pub fn to_api(&self) -> ContainerState {
        ContainerState {
            status: self.status,
            pid: self.pid,
            exit_code: self.exit_code,
            oom_killed: self.oom_killed,
            error: self.error.clone(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            restart_count: self.restart_count,
        }
    }
}

/// Writes `value` as JSON to `path` atomically: readers see the old or the new file, never half.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        serde_json::to_writer_pretty(&mut file, value).map_err(std::io::Error::other)?;
        file.write_all(b"\n")?;
    }
    std::fs::rename(&tmp, path)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<T> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_json_round_trip_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut state = RunState::created();
        state.restart_count = 3;
        write_json_atomic(&path, &state).unwrap();
        assert_eq!(read_json::<RunState>(&path).unwrap(), state);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn shim_socket_path_fits_sun_path_for_any_allowed_root() {
        let root = "/".to_string() + &"r".repeat(MAX_ROOT_LEN - 1);
        let layout = Layout::new(&root);
        let sock = layout.shim_socket(&"a".repeat(64));
        assert!(sock.as_os_str().len() < 108, "{}", sock.display());
    }
}
