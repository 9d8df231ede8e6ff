//! The backend-neutral engine interface: small traits (after containerd's runtime services)
//! that the native engine and the Docker backend both implement, and the data they exchange.
//! Nothing here does I/O, so tests can provide a fake engine.

mod error;
mod model;

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::io::AsyncWrite;

pub use error::{Context, EngineError, ErrorKind, Result};
pub use model::*;

/// The live I/O of a process: its output as a stream of raw byte chunks (ending when the
/// process's output ends) and, when the process has stdin open, a writer for its input.
pub struct ProcessIo {
    pub output: BoxStream<'static, Result<OutputChunk>>,
    pub input: Option<Pin<Box<dyn AsyncWrite + Send>>>,
}

impl std::fmt::Debug for ProcessIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessIo").field("input", &self.input.is_some()).finish_non_exhaustive()
    }
}

/// Container lifecycle: `docker create/start/stop/restart/kill/rm/wait/inspect/ps`.
#[async_trait]
pub trait Containers: Send + Sync {
    /// Creates a container (not started) and returns its id.
    async fn create_container(&self, config: ContainerConfig) -> Result<String>;
    async fn start_container(&self, id: &str) -> Result<()>;
    /// Sends the stop signal, waits up to `grace`, then kills. A stopped container is a no-op.
    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()>;
    async fn restart_container(&self, id: &str, grace: Duration) -> Result<()>;
    /// Sends a signal by name (`SIGTERM`, `TERM`) or number (`15`) to the main process.
    async fn kill_container(&self, id: &str, signal: &str) -> Result<()>;
    async fn remove_container(&self, id: &str, options: RemoveOptions) -> Result<()>;
    /// Waits until the container is not running and returns its exit code.
    async fn wait_container(&self, id: &str) -> Result<i64>;
    /// `id` may be a full id, a unique id prefix, or a name.
    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails>;
    async fn list_containers(&self, all: bool) -> Result<Vec<ContainerSummary>>;
}

/// Process I/O: attaching to the main process and running extra processes (`docker exec`).
#[async_trait]
pub trait Terminals: Send + Sync {
    /// Connects to the main process's TTY (or stdio). Any number of attachments may be open.
    async fn attach(&self, id: &str, options: AttachOptions) -> Result<ProcessIo>;
    async fn resize_tty(&self, id: &str, size: TtySize) -> Result<()>;
    /// Registers an exec in a running container and returns its id; `start_exec` runs it.
    async fn create_exec(&self, container_id: &str, config: ExecConfig) -> Result<String>;
    async fn start_exec(&self, exec_id: &str) -> Result<ProcessIo>;
    /// Connects to an exec that is already running (for example after a server restart).
    async fn attach_exec(&self, exec_id: &str, options: AttachOptions) -> Result<ProcessIo>;
    async fn resize_exec(&self, exec_id: &str, size: TtySize) -> Result<()>;
    async fn inspect_exec(&self, exec_id: &str) -> Result<ExecDetails>;
}

/// What a container says and uses: logs, stats, and the engine's event stream.
#[async_trait]
pub trait Monitoring: Send + Sync {
    async fn logs(&self, id: &str, options: LogOptions) -> Result<BoxStream<'static, Result<LogRecord>>>;
    async fn stats(&self, id: &str) -> Result<Stats>;
    /// Events from now on. A subscriber that falls behind loses the oldest events, never
    /// slowing the engine.
    fn events(&self) -> BoxStream<'static, Event>;
}

/// Where an image archive comes from, for [`Images::import_image`].
pub enum ImageSource {
    /// A file (any supported archive, optionally gzip or zstd compressed) or an OCI image
    /// layout directory, on the engine's host.
    Path(std::path::PathBuf),
    /// The bytes of an archive, for example an upload.
    Stream(BoxStream<'static, Result<Bytes>>),
}

impl std::fmt::Debug for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageSource::Path(p) => f.debug_tuple("Path").field(p).finish(),
            ImageSource::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// The images an engine can run, and the registries it pulls them from.
#[async_trait]
pub trait Images: Send + Sync {
    async fn list_images(&self) -> Result<Vec<ImageSummary>>;
    async fn inspect_image(&self, reference: &str) -> Result<ImageDetails>;
    /// Removes a tag, or (given an id, or the last tag) the image. Refused while a container
    /// uses the image, unless `force`, which untags it and keeps what containers still need.
    async fn remove_image(&self, reference: &str, force: bool) -> Result<()>;
    /// Pulls `reference` (`alpine`, `ghcr.io/org/app:1`, `host:5000/app@sha256:...`) from its
    /// registry. The stream reports progress and ends with [`PullProgress::Done`], or with an
    /// error item; dropping it cancels the pull (what was fully verified is kept and reused).
    async fn pull_image(
        &self,
        reference: &str,
        options: PullOptions,
    ) -> Result<BoxStream<'static, Result<PullProgress>>>;
    /// Imports `docker save` archives (legacy and OCI variants), OCI image layouts (directory or
    /// tar) and plain root filesystem tarballs (as `docker import`); the format is detected.
    async fn import_image(&self, source: ImageSource, options: ImportOptions) -> Result<ImportReport>;
    /// Writes the images as one archive that `docker load` (and `import_image`) accepts.
    async fn save_images(&self, references: &[String]) -> Result<BoxStream<'static, Result<Bytes>>>;
    /// Adds the tag `target` to the image `source` names (moving the tag if it exists).
    async fn tag_image(&self, source: &str, target: &str) -> Result<()>;
    /// How the image was built, newest step first (`docker history`).
    async fn image_history(&self, reference: &str) -> Result<Vec<ImageHistoryEntry>>;
    /// Removes images no container uses (untagged ones only, unless `all`) and every layer
    /// and blob no image or container needs.
    async fn prune_images(&self, all: bool) -> Result<PruneReport>;
    /// Stores how to reach a registry (`docker.io`, `ghcr.io`, `host:5000`): credentials (kept
    /// encrypted, never returned) and whether it is plain HTTP.
    async fn configure_registry(&self, registry: &str, config: RegistryConfig) -> Result<()>;
    /// Forgets a registry's settings and credentials.
    async fn remove_registry(&self, registry: &str) -> Result<()>;
    /// The configured registries, without secrets.
    async fn list_registries(&self) -> Result<Vec<RegistrySummary>>;
}

/// A complete backend: what the server holds one of per configured engine.
#[async_trait]
pub trait Engine: Containers + Terminals + Monitoring + Images {
    async fn info(&self) -> Result<EngineInfo>;
}
