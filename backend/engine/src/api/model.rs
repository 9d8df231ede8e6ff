//! The data the engine interface speaks in: container and exec configuration, state, images,
//! events, stats and log records. Plain data, serialisable, free of any backend's I/O types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What to run, as `docker create` takes it. Fields left empty fall back to the image's config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerConfig {
    /// Image reference (`busybox`, `registry:5000/team/app:1.2`, or an image id).
    pub image: String,
    /// Unique name; generated Docker-style (`eager_turing`) when absent.
    pub name: Option<String>,
    /// Replaces the image's CMD when set.
    pub cmd: Option<Vec<String>>,
    /// Replaces the image's ENTRYPOINT when set (an empty list clears it).
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=value` entries, added to (and overriding) the image's environment.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `uid`, `uid:gid`, `name` or `name:group`, resolved in the image's /etc/passwd and /etc/group.
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub tty: bool,
    pub open_stdin: bool,
    pub labels: BTreeMap<String, String>,
    pub restart_policy: RestartPolicy,
    /// Remove the container when it exits (`docker run --rm`).
    pub auto_remove: bool,
    pub read_only_rootfs: bool,
    pub mounts: Vec<Mount>,
    pub resources: Resources,
    pub network_mode: NetworkMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "name")]
pub enum RestartPolicy {
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max_retries` times (0 = no limit).
    OnFailure {
        #[serde(default)]
        max_retries: u32,
    },
    Always,
    UnlessStopped,
}

impl RestartPolicy {
    /// Parses Docker's `--restart` syntax: `no`, `on-failure[:N]`, `always`, `unless-stopped`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" | "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "on-failure" => Ok(RestartPolicy::OnFailure { max_retries: 0 }),
            other => match other.strip_prefix("on-failure:") {
                Some(n) => n
                    .parse()
                    .map(|max_retries| RestartPolicy::OnFailure { max_retries })
                    .map_err(|_| format!("invalid restart policy {other:?}: the retry count must be a whole number")),
                None => {
                    Err(format!("invalid restart policy {other:?}: use no, on-failure[:N], always or unless-stopped"))
                }
            },
        }
    }
}

/// A filesystem made visible inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Mount {
    /// A host path.
    Bind {
        source: PathBuf,
        target: String,
        #[serde(default)]
        read_only: bool,
    },
    /// A named volume managed by the engine, created on first use.
    Volume {
        name: String,
        target: String,
        #[serde(default)]
        read_only: bool,
    },
    /// A fresh tmpfs; `size_bytes` 0 means the kernel default.
    Tmpfs {
        target: String,
        #[serde(default)]
        size_bytes: u64,
    },
}

impl Mount {
    pub fn target(&self) -> &str {
        match self {
            Mount::Bind { target, .. } | Mount::Volume { target, .. } | Mount::Tmpfs { target, .. } => target,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resources {
    /// Hard memory limit in bytes; `None` means unlimited.
    pub memory_bytes: Option<u64>,
    /// CPU quota in thousandths of a CPU (`1500` = 1.5 CPUs).
    pub cpu_millis: Option<u64>,
    /// Maximum number of processes; the engine applies a default when `None`.
    pub pids_limit: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Only a loopback interface.
    #[default]
    None,
    /// The host's network stack.
    Host,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    Created,
    Running,
    Restarting,
    Exited,
    Removing,
    Dead,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Restarting => "restarting",
            ContainerStatus::Exited => "exited",
            ContainerStatus::Removing => "removing",
            ContainerStatus::Dead => "dead",
        }
    }

    pub fn is_running(self) -> bool {
        matches!(self, ContainerStatus::Running | ContainerStatus::Restarting)
    }
}

/// Run-time state of a container, as `docker inspect` shows under `State`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    pub status: ContainerStatus,
    /// Host pid of the container's init, while running.
    pub pid: Option<u32>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Why the last start failed, in words.
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub restart_count: u32,
}

/// One row of `docker ps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub command: Vec<String>,
    pub created: DateTime<Utc>,
    pub state: ContainerState,
    pub labels: BTreeMap<String, String>,
}

/// Everything about one container: `docker inspect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerDetails {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub created: DateTime<Utc>,
    /// The configuration as given by the user.
    pub config: ContainerConfig,
    /// The command actually run: entrypoint + cmd, after the image's defaults.
    pub path: String,
    pub args: Vec<String>,
    /// Environment actually used (image env + user env).
    pub env: Vec<String>,
    pub state: ContainerState,
}

/// Options for `remove_container`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RemoveOptions {
    /// Kill a running container first.
    pub force: bool,
    /// Also remove anonymous volumes (named ones are kept).
    pub volumes: bool,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// An additional process in a running container: `docker exec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecConfig {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub tty: bool,
    /// Initial size, for a TTY exec.
    pub size: Option<TtySize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecDetails {
    pub id: String,
    pub container_id: String,
    pub config: ExecConfig,
    pub running: bool,
    pub pid: Option<u32>,
    pub exit_code: Option<i64>,
}

/// Which output stream a chunk of bytes came from. A TTY merges both into `Stdout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdStream {
    Stdout,
    Stderr,
}

/// A piece of a process's output: raw bytes, never decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: StdStream,
    pub data: Bytes,
}

/// How to attach to a container's main process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttachOptions {
    /// Replay the recent output the backend still holds before the live output.
    pub history: bool,
}

/// What `docker logs` takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogOptions {
    /// Only the last N records (`None` = all).
    pub tail: Option<usize>,
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only records before this time.
    pub until: Option<DateTime<Utc>>,
    /// Keep streaming new records until the container stops (or the reader goes away).
    pub follow: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// One captured piece of output with the time the engine read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub time: DateTime<Utc>,
    pub stream: StdStream,
    pub data: Bytes,
}

/// A point-in-time resource reading of a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub read_at: DateTime<Utc>,
    /// Total CPU time consumed, in nanoseconds; rate = delta / elapsed.
    pub cpu_total_ns: u64,
    /// Host CPUs, to scale a CPU percentage.
    pub online_cpus: u32,
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub pids: u64,
    pub pids_limit: Option<u64>,
}

/// Something that happened to a container, as `docker events` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub time: DateTime<Utc>,
    pub container_id: String,
    pub container_name: String,
    pub action: EventAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum EventAction {
    Create,
    Start,
    Die { exit_code: i64 },
    Oom,
    Restart,
    Destroy,
}

/// One row of `docker images`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSummary {
    /// `sha256:...` of the image config.
    pub id: String,
    pub tags: Vec<String>,
    pub created: Option<DateTime<Utc>>,
    /// Unpacked size of all layers, in bytes.
    pub size: u64,
}

/// The run defaults an image carries (OCI image config `config` section).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageRunConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageDetails {
    pub summary: ImageSummary,
    pub architecture: String,
    pub os: String,
    pub config: ImageRunConfig,
    /// Layer diff ids, lowest first.
    pub layers: Vec<String>,
}

/// One step of `docker history`: a line of the image config's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageHistoryEntry {
    pub created: Option<DateTime<Utc>>,
    pub created_by: String,
    pub comment: String,
    /// The layer's diff id, or `None` for a step that made no layer (`ENV`, `CMD`, ...).
    pub layer: Option<String>,
    /// Unpacked size of that layer, in bytes.
    pub size: u64,
}

/// How to pull an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PullOptions {
    /// `os/arch[/variant]` (`linux/arm64/v8`) to pick from a multi-platform image; the
    /// engine's own platform when `None`.
    pub platform: Option<String>,
    /// Credentials for this pull only; otherwise the registry's configured ones (if any).
    pub credentials: Option<RegistryCredentials>,
}

/// Progress of a pull, one item per change, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PullProgress {
    /// The manifest is resolved (to the platform's, for a multi-platform image).
    Resolved {
        reference: String,
        manifest_digest: String,
        layers: Vec<LayerDescriptor>,
    },
    Layer(LayerProgress),
    /// The image is stored and tagged.
    Done {
        reference: String,
        image_id: String,
    },
}

/// A layer as a registry serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerDescriptor {
    /// `sha256:` of the (compressed) blob.
    pub digest: String,
    /// Blob size in bytes.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerProgress {
    pub digest: String,
    pub phase: LayerPhase,
    /// Bytes done of `total` in this phase (blob bytes for both downloading and extracting).
    pub done: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerPhase {
    /// Stored before: nothing to fetch.
    Exists,
    Downloading,
    Extracting,
    Complete,
}

/// How to import an archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportOptions {
    /// The tag for the imported image: required for a plain root filesystem tarball to be
    /// tagged (it carries no name), and replacing the archive's own tags otherwise.
    pub reference: Option<String>,
    /// For a root filesystem tarball: the default command.
    pub cmd: Option<Vec<String>>,
}

/// Which kind of archive an import found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveFormat {
    /// `docker save` (`manifest.json`), legacy or OCI-layout variant.
    DockerSave,
    /// An OCI image layout (`oci-layout`, `index.json`, `blobs/`).
    OciLayout,
    /// A plain root filesystem (`docker import`).
    RootfsTarball,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    pub format: ArchiveFormat,
    pub images: Vec<ImportedImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedImage {
    pub id: String,
    pub tags: Vec<String>,
}

/// What `prune_images` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    pub images_deleted: Vec<String>,
    pub layers_deleted: usize,
    /// Bytes freed: unpacked layers and stored blobs.
    pub space_reclaimed: u64,
}

/// A user name and a password or access token for a registry. Deserialisable (it arrives in
/// requests) but never serialised, and its `Debug` hides the secret: it can be neither logged
/// nor returned by accident.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryCredentials {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials").field("username", &self.username).field("secret", &"<redacted>").finish()
    }
}

/// How to reach one registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Plain HTTP instead of HTTPS. Only for registries configured so.
    pub insecure: bool,
    pub credentials: Option<RegistryCredentials>,
}

/// A configured registry as the engine shows it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrySummary {
    pub registry: String,
    pub insecure: bool,
    pub username: Option<String>,
}

/// What an engine reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineInfo {
    /// `native` or `docker`.
    pub backend: String,
    pub version: String,
    /// e.g. `v1 (hybrid)` or `v2`.
    pub cgroup_version: String,
    pub containers: usize,
    pub containers_running: usize,
    pub images: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_parses_docker_syntax() {
        assert_eq!(RestartPolicy::parse("no"), Ok(RestartPolicy::No));
        assert_eq!(RestartPolicy::parse("always"), Ok(RestartPolicy::Always));
        assert_eq!(RestartPolicy::parse("unless-stopped"), Ok(RestartPolicy::UnlessStopped));
        assert_eq!(RestartPolicy::parse("on-failure:3"), Ok(RestartPolicy::OnFailure { max_retries: 3 }));
        assert_eq!(RestartPolicy::parse("on-failure"), Ok(RestartPolicy::OnFailure { max_retries: 0 }));
        assert!(RestartPolicy::parse("sometimes").unwrap_err().contains("sometimes"));
        assert!(RestartPolicy::parse("on-failure:x").is_err());
    }

    #[test]
    fn container_config_rejects_unknown_fields() {
        let err =
            serde_json::from_str::<ContainerConfig>(r#"{"image":"busybox","imgae":"x"}"#).unwrap_err().to_string();
        assert!(err.contains("imgae"), "{err}");
    }

    #[test]
    fn registry_credentials_never_show_their_secret() {
        let creds: RegistryCredentials = serde_json::from_str(r#"{"username":"ci","secret":"hunter2"}"#).unwrap();
        let shown = format!("{creds:?} {:?}", RegistryConfig { insecure: false, credentials: Some(creds.clone()) });
        assert!(shown.contains("ci") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn mounts_and_policies_round_trip_as_json() {
        let cfg = ContainerConfig {
            image: "busybox".into(),
            restart_policy: RestartPolicy::OnFailure { max_retries: 2 },
            mounts: vec![
                Mount::Tmpfs { target: "/run".into(), size_bytes: 1 << 20 },
                Mount::Volume { name: "data".into(), target: "/data".into(), read_only: false },
            ],
            ..Default::default()
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<ContainerConfig>(&json).unwrap(), cfg);
    }
}
