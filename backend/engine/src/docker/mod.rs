//! The Docker backend: [`DockerEngine`] implements the engine interface on an existing Docker
//! daemon through the Docker Engine API, local or remote: a unix socket, `tcp://` (plain, or TLS
//! with client certificates: [`tls`]) or `ssh://` (an OpenSSH tunnel to the remote socket:
//! [`ssh`]); [`address`] parses the addresses. Request/response calls go through bollard;
//! terminal I/O (attach, exec start) uses the engine's own hijacked connections ([`stream`]) so
//! bytes pass untouched. [`convert`] owns the mapping between the two models and of Docker's
//! statuses to error kinds; [`starter`] builds the `busybox:latest` starter image inside a daemon
//! from the host's busybox; [`images`] maps pulls, imports and registry settings onto the
//! daemon's image API.
//!
//! Where Docker checks less than the native engine at create time (the command exists, the user
//! exists), this backend checks it itself against the created container's files, so a bad
//! request fails at `create` on both backends. Behaviour that still differs is listed in
//! `docs/ENGINES.md`.

mod address;
mod convert;
mod images;
mod ssh;
pub mod starter;
mod stream;
mod tls;

pub use self::address::DockerAddress;

/// The Docker API client this backend is built on, for callers of [`DockerEngine::client`].
pub use bollard;

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::query_parameters::{
    ContainerArchiveInfoOptions, CreateContainerOptions, CreateImageOptions, DownloadFromContainerOptions,
    EventsOptions, ImportImageOptions, InspectContainerOptions, KillContainerOptions, ListContainersOptions,
    ListImagesOptions, LogsOptions, PruneImagesOptions, RemoveContainerOptions, RemoveImageOptions,
    ResizeContainerTTYOptions, ResizeExecOptions, RestartContainerOptions, StatsOptions, StopContainerOptions,
    TagImageOptions, WaitContainerOptions,
};
use bollard::Docker;
use chrono::Utc;
use futures::stream::{BoxStream, StreamExt};
use tokio::io::AsyncWrite;

use self::address::AddressKind;
use self::convert::docker_error;
use self::stream::Endpoint;
use crate::api::{
    ArchiveFormat, AttachOptions, ContainerConfig, ContainerDetails, ContainerSummary, Containers, Engine, EngineError,
    EngineInfo, ErrorKind, Event, ExecConfig, ExecDetails, ImageDetails, ImageHistoryEntry, ImageSource, ImageSummary,
    Images, ImportOptions, ImportReport, ImportedImage, LogOptions, LogRecord, Monitoring, ProcessIo, PruneReport,
    PullOptions, PullProgress, RegistryConfig, RegistrySummary, RemoveOptions, Result, Stats, StdStream, Terminals,
    TtySize,
};

/// Upper bound for the daemon to *answer* a request (streams may then run for as long as they
/// last); `stop` and `restart` get their grace period on top.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How many containers `list_containers` inspects at once.
const LIST_CONCURRENCY: usize = 8;
/// Execs created but not started yet whose TTY and size the engine remembers; beyond this the
/// oldest are forgotten (a start then asks the daemon whether the exec has a TTY).
const MAX_PENDING_EXECS: usize = 1024;
/// How many runnable-command answers `check_runnable` remembers; all are forgotten when full.
const MAX_RUNNABLE_REMEMBERED: usize = 256;
/// Files read from a container to resolve users (`/etc/passwd`, `/etc/group`) are at most this big.
const MAX_ACCOUNT_FILE: usize = 4 << 20;
/// After the event stream from the daemon broke, wait this long before asking again.
const EVENTS_RECONNECT: Duration = Duration::from_secs(1);
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The engine interface on a Docker daemon. Cheap to clone.
#[derive(Clone)]
pub struct DockerEngine {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    /// The address as shown (without file options), for messages.
    address: DockerAddress,
    endpoint: Endpoint,
    /// For `ssh://`: the tunnel the endpoint's socket belongs to, kept (and ssh running) for as
    /// long as the engine.
    tunnel: Option<ssh::Tunnel>,
    /// `v1.41`: the API version agreed with the daemon, prefixed to hijacked requests.
    api_version: String,
    pending_execs: Mutex<HashMap<String, PendingExec>>,
    /// Image, command, PATH, working directory and user combinations already found runnable
    /// (see `check_runnable`).
    runnable: Mutex<HashSet<String>>,
    /// Registry credentials for pulls, in this process's memory only (see [`images`]).
    registries: images::Registries,
}

#[derive(Debug, Clone, Copy)]
struct PendingExec {
    tty: bool,
    size: Option<TtySize>,
    created: std::time::Instant,
}

impl std::fmt::Debug for DockerEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerEngine")
            .field("address", &self.inner.address.to_string())
            .field("api_version", &self.inner.api_version)
            .finish()
    }
}

/// Container references go into request paths: only Docker's id and name characters pass.
fn container_ref(reference: &str) -> Result<&str> {
    let reference = reference.strip_prefix('/').unwrap_or(reference);
    if reference.is_empty() {
        return Err(EngineError::invalid("no container given"));
    }
    let valid = reference.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && reference.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if valid {
        Ok(reference)
    } else {
        Err(EngineError::not_found(format!("No such container: {reference}")))
    }
}

/// Image references go into request paths too: refuse anything that could step out of it.
fn image_ref(reference: &str) -> Result<&str> {
    let valid = !reference.is_empty()
        && !reference.contains("..")
        && reference.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':' | '@'));
    if valid {
        Ok(reference)
    } else {
        Err(EngineError::invalid(format!("invalid image reference {reference:?}")))
    }
}

fn exec_ref(exec_id: &str) -> Result<&str> {
    if !exec_id.is_empty() && exec_id.len() <= 64 && exec_id.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(exec_id)
    } else {
        Err(EngineError::not_found(format!("No such exec instance: {exec_id}")))
    }
}

/// Whole seconds for Docker's `t` parameter, rounded up so the grace is never shorter.
fn grace_seconds(grace: Duration) -> i32 {
    let whole = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    whole.min(i32::MAX as u64) as i32
}

impl DockerEngine {
    /// Connects to the daemon at `host` and agrees on an API version with it. `host` is a
    /// [`DockerAddress`]: `unix:///path`, `tcp://host:port` (TLS with `?tls-dir=` or
    /// `?ca=&cert=&key=`), or `ssh://[user@]host[:port][/socket]`. TLS files are read, and for
    /// `ssh://` the tunnel is opened, here.
    pub async fn connect(host: &str) -> Result<Self> {
        let address = DockerAddress::parse(host)?;
        let shown = address.to_string();
        let timeout = REQUEST_TIMEOUT.as_secs();
        let cannot = |e| docker_error(&format!("cannot connect to the Docker daemon at {shown}"), e);
        let (docker, endpoint, tunnel) = match &address.kind {
            AddressKind::Unix(path) => {
                let docker = Docker::connect_with_unix(&path.to_string_lossy(), timeout, bollard::API_DEFAULT_VERSION)
                    .map_err(cannot)?;
                (docker, Endpoint::Unix(path.clone()), None)
            }
            AddressKind::Tcp { host, port, tls: None } => {
                let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
                let docker = Docker::connect_with_http(&addr, timeout, bollard::API_DEFAULT_VERSION).map_err(cannot)?;
                (docker, Endpoint::Tcp(addr), None)
            }
            AddressKind::Tcp { host, port, tls: Some(files) } => {
                let target = tls::TlsTarget::new(host, *port, files, &shown)?;
                target.probe(&shown).await?;
                (target.docker(timeout)?, Endpoint::Tls(target), None)
            }
            AddressKind::Ssh(target) => {
                let tunnel = ssh::Tunnel::open(target, &shown).await?;
                let socket = tunnel.socket().to_path_buf();
                let docker =
                    Docker::connect_with_unix(&socket.to_string_lossy(), timeout, bollard::API_DEFAULT_VERSION)
                        .map_err(cannot)?;
                (docker, Endpoint::Unix(socket), Some(tunnel))
            }
        };
        let docker = docker.negotiate_version().await.map_err(cannot)?;
        let version = docker.client_version();
        let api_version = format!("v{}.{}", version.major_version, version.minor_version);
        tracing::info!("docker: connected to {shown}, API {api_version}");
        Ok(DockerEngine {
            inner: Arc::new(Inner {
                docker,
                address,
                endpoint,
                tunnel,
                api_version,
                pending_execs: Mutex::new(HashMap::new()),
                runnable: Mutex::new(HashSet::new()),
                registries: images::Registries::default(),
            }),
        })
    }

    /// For an `ssh://` daemon, the pid of the ssh process forwarding its socket now (`None` while
    /// the tunnel is being restarted, and for other addresses). For diagnostics and tests.
    pub fn ssh_tunnel_pid(&self) -> Option<u32> {
        self.inner.tunnel.as_ref().and_then(ssh::Tunnel::pid)
    }

    /// The bollard client, for what the engine interface does not cover (tests, tools).
    pub fn client(&self) -> &Docker {
        &self.inner.docker
    }

    fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    async fn inspect_raw(&self, id: &str) -> Result<bollard::models::ContainerInspectResponse> {
        let id = container_ref(id)?;
        self.docker()
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| docker_error("cannot inspect the container", e))
    }

    /// Reads a small regular file from a container's filesystem (running or not); `None` when it
    /// does not exist.
    async fn read_container_file(&self, id: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let options = DownloadFromContainerOptions { path: path.to_string() };
        let mut body = self.docker().download_from_container(id, Some(options));
        let mut archive = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => {
                    archive.extend_from_slice(&bytes);
                    if archive.len() > MAX_ACCOUNT_FILE + 64 * 1024 {
                        return Err(EngineError::invalid(format!("{path} in the container is too large to read")));
                    }
                }
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok(None),
                Err(e) => return Err(docker_error(&format!("cannot read {path} in the container"), e)),
            }
        }
        let mut reader = tar::Archive::new(std::io::Cursor::new(archive));
        let entries = reader.entries().map_err(|e| EngineError::internal("bad archive from the Docker daemon", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| EngineError::internal("bad archive from the Docker daemon", e))?;
            if entry.header().entry_type().is_file() {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data)
                    .map_err(|e| EngineError::internal("bad archive from the Docker daemon", e))?;
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    /// Resolves `user` as the container's process would see it (its own /etc/passwd and
    /// /etc/group), so an unknown user fails now rather than when the process starts.
    async fn check_user(&self, id: &str, user: &str) -> Result<()> {
        // A numeric uid[:gid] needs no lookup (and may be absent from passwd).
        let (name, group) = user.split_once(':').unwrap_or((user, ""));
        let numeric = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
        if numeric(name) && (group.is_empty() || numeric(group)) {
            return Ok(());
        }
        let (passwd, group) = futures::try_join!(
            self.read_container_file(id, "/etc/passwd"),
            self.read_container_file(id, "/etc/group")
        )?;
        let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
        let (passwd, group) = (text(passwd), text(group));
        crate::native::users::resolve_user(user, passwd.as_deref(), group.as_deref()).map(|_| ())
    }

    /// Whether `path` exists in the container and is not a directory.
    async fn is_runnable_file(&self, id: &str, path: String) -> Result<bool> {
        let options = ContainerArchiveInfoOptions { path };
        match self.docker().get_container_archive_info(id, Some(options)).await {
            // Go's os.ModeDir.
            Ok(stat) => Ok(stat.file_mode & (1 << 31) == 0),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
            Err(e) => Err(docker_error("cannot look for the command in the container", e)),
        }
    }

    /// What the native engine checks at create and Docker only at start: the command exists
    /// and the user resolves.
    ///
    /// A created container's files are its image's, plus its mounts; so for a container without
    /// mounts a positive answer holds for every container of the same image, command, `PATH`,
    /// working directory and user, and is remembered (each check costs the daemon a mount of the
    /// container's filesystem per request).
    async fn check_runnable(&self, id: &str) -> Result<()> {
        let inspect = self.inspect_raw(id).await?;
        let config = inspect.config.unwrap_or_default();
        let command = inspect.path.unwrap_or_default();
        if command.is_empty() {
            return Err(EngineError::invalid("no command specified: the image has none and none was given"));
        }
        let env = config.env.unwrap_or_default();
        let path_var = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH).to_string();
        let user = config.user.clone().unwrap_or_default();
        let host = inspect.host_config.unwrap_or_default();
        let has_mounts = host.mounts.is_some_and(|m| !m.is_empty()) || host.binds.is_some_and(|b| !b.is_empty());
        let cache_key = (!has_mounts).then(|| {
            let image = inspect.image.clone().unwrap_or_default();
            let dir = config.working_dir.clone().unwrap_or_default();
            format!("{image}\0{command}\0{path_var}\0{dir}\0{user}")
        });
        if let Some(key) = &cache_key {
            if self.inner.runnable.lock().unwrap_or_else(|e| e.into_inner()).contains(key) {
                return Ok(());
            }
        }
        if !user.is_empty() {
            self.check_user(id, &user).await?;
        }
        let candidates: Vec<String> = if command.contains('/') {
            let dir = config.working_dir.filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());
            vec![if command.starts_with('/') {
                command.clone()
            } else {
                format!("{}/{command}", dir.trim_end_matches('/'))
            }]
        } else {
            path_var
                .split(':')
                .filter(|d| d.starts_with('/'))
                .map(|d| format!("{}/{command}", d.trim_end_matches('/')))
                .collect()
        };
        let found = futures::future::try_join_all(candidates.into_iter().map(|c| self.is_runnable_file(id, c))).await?;
        if found.contains(&true) {
            if let Some(key) = cache_key {
                let mut runnable = self.inner.runnable.lock().unwrap_or_else(|e| e.into_inner());
                if runnable.len() >= MAX_RUNNABLE_REMEMBERED {
                    runnable.clear();
                }
                runnable.insert(key);
            }
            Ok(())
        } else {
            Err(EngineError::invalid(format!(
                "cannot run {command:?}: executable file not found in the image (searched $PATH={path_var})"
            )))
        }
    }

    fn remember_exec(&self, exec_id: &str, exec: PendingExec) {
        let mut pending = self.inner.pending_execs.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING_EXECS {
            if let Some(oldest) = pending.iter().min_by_key(|(_, e)| e.created).map(|(id, _)| id.clone()) {
                pending.remove(&oldest);
            }
        }
        pending.insert(exec_id.to_string(), exec);
    }

    fn take_pending_exec(&self, exec_id: &str) -> Option<PendingExec> {
        self.inner.pending_execs.lock().unwrap_or_else(|e| e.into_inner()).remove(exec_id)
    }

    /// Opens a hijacked connection: `path` without the version prefix.
    async fn hijack(&self, path: &str, body: Option<serde_json::Value>) -> Result<stream::Hijacked> {
        let versioned = format!("/{}{path}", self.inner.api_version);
        stream::hijack(&self.inner.endpoint, &self.inner.address.to_string(), &versioned, body).await
    }

    fn process_io(hijacked: stream::Hijacked, tty: bool, with_input: bool) -> ProcessIo {
        let (reader, writer) = hijacked;
        let input: Option<Pin<Box<dyn AsyncWrite + Send>>> = if with_input { Some(Box::pin(writer)) } else { None };
        ProcessIo { output: stream::output_stream(reader, tty), input }
    }
}

#[async_trait]
impl Containers for DockerEngine {
    async fn create_container(&self, config: ContainerConfig) -> Result<String> {
        let body = convert::create_body(&config)?;
        let options = CreateContainerOptions { name: config.name.clone(), platform: String::new() };
        let created = self
            .docker()
            .create_container(Some(options), body)
            .await
            .map_err(|e| docker_error("cannot create the container", e))?;
        if let Err(e) = self.check_runnable(&created.id).await {
            let options = RemoveContainerOptions { force: true, v: true, link: false };
            if let Err(cleanup) = self.docker().remove_container(&created.id, Some(options)).await {
                tracing::warn!("docker: cannot remove the refused container {}: {cleanup}", created.id);
            }
            return Err(e);
        }
        Ok(created.id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let id = container_ref(id)?;
        self.docker().start_container(id, None).await.map_err(|e| docker_error("cannot start the container", e))
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let id = container_ref(id)?;
        let options = StopContainerOptions { t: Some(grace_seconds(grace)), signal: None };
        let docker = self.docker().clone().with_timeout(REQUEST_TIMEOUT + grace);
        docker.stop_container(id, Some(options)).await.map_err(|e| docker_error("cannot stop the container", e))
    }

    async fn restart_container(&self, id: &str, grace: Duration) -> Result<()> {
        let id = container_ref(id)?;
        let options = RestartContainerOptions { t: Some(grace_seconds(grace)), signal: None };
        let docker = self.docker().clone().with_timeout(REQUEST_TIMEOUT + grace);
        docker.restart_container(id, Some(options)).await.map_err(|e| docker_error("cannot restart the container", e))
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<()> {
        let id = container_ref(id)?;
        // Same accepted spellings as the native engine; Docker gets the number.
        let number = crate::native::parse_signal(signal)?;
        let options = KillContainerOptions { signal: number.to_string() };
        self.docker()
            .kill_container(id, Some(options))
            .await
            .map_err(|e| docker_error("cannot signal the container", e))
    }

    async fn remove_container(&self, id: &str, options: RemoveOptions) -> Result<()> {
        let id = container_ref(id)?;
        let options = RemoveContainerOptions { force: options.force, v: options.volumes, link: false };
        self.docker()
            .remove_container(id, Some(options))
            .await
            .map_err(|e| docker_error("cannot remove the container", e))
    }

    async fn wait_container(&self, id: &str) -> Result<i64> {
        let id = container_ref(id)?;
        let options = WaitContainerOptions { condition: "not-running".into() };
        let mut waiting = self.docker().wait_container(id, Some(options));
        match waiting.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard reports a non-zero exit as an error; for this interface it is the answer.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(docker_error("cannot wait for the container", e)),
            None => Err(EngineError::unavailable("the Docker daemon ended the wait without an exit code")),
        }
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails> {
        Ok(convert::container_details(self.inspect_raw(id).await?))
    }

    async fn list_containers(&self, all: bool) -> Result<Vec<ContainerSummary>> {
        let options = ListContainersOptions { all, ..Default::default() };
        let listed = self
            .docker()
            .list_containers(Some(options))
            .await
            .map_err(|e| docker_error("cannot list the containers", e))?;
        // The list lacks exit codes and times: inspect each (a few at a time), skipping those
        // removed in between.
        let ids: Vec<String> = listed.into_iter().filter_map(|c| c.id).collect();
        let inspected: Vec<Result<ContainerDetails>> =
            futures::stream::iter(ids.into_iter().map(|id| async move { self.inspect_container(&id).await }))
                .buffered(LIST_CONCURRENCY)
                .collect()
                .await;
        let mut summaries = Vec::with_capacity(inspected.len());
        for details in inspected {
            let details = match details {
                Ok(details) => details,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !all && !details.state.status.is_running() {
                continue;
            }
            summaries.push(ContainerSummary {
                command: std::iter::once(details.path.clone()).chain(details.args.iter().cloned()).collect(),
                labels: details.config.labels.clone(),
                id: details.id,
                name: details.name,
                image: details.image,
                image_id: details.image_id,
                created: details.created,
                state: details.state,
            });
        }
        Ok(summaries)
    }
}

#[async_trait]
impl Terminals for DockerEngine {
    /// With `history`, Docker replays the container's log (all of it that the log driver keeps)
    /// before the live output, in the same request; output in the instant between the replay's
    /// end and the live stream's start can be missed (see docs/ENGINES.md).
    async fn attach(&self, id: &str, options: AttachOptions) -> Result<ProcessIo> {
        let inspect = self.inspect_raw(id).await?;
        let full_id = inspect.id.clone().unwrap_or_default();
        let config = inspect.config.unwrap_or_default();
        let tty = config.tty.unwrap_or(false);
        let open_stdin = config.open_stdin.unwrap_or(false);
        let path = format!(
            "/containers/{}/attach?stream=1&stdout=1&stderr=1&stdin={}&logs={}",
            container_ref(&full_id)?,
            u8::from(open_stdin),
            u8::from(options.history)
        );
        let hijacked = self.hijack(&path, None).await?;
        Ok(Self::process_io(hijacked, tty, open_stdin))
    }

    async fn resize_tty(&self, id: &str, size: TtySize) -> Result<()> {
        let id = container_ref(id)?;
        let options = ResizeContainerTTYOptions { h: i32::from(size.rows), w: i32::from(size.cols) };
        self.docker().resize_container_tty(id, options).await.map_err(|e| docker_error("cannot resize the terminal", e))
    }

    async fn create_exec(&self, container_id: &str, config: ExecConfig) -> Result<String> {
        let inspect = self.inspect_raw(container_id).await?;
        let id = inspect.id.clone().unwrap_or_default();
        let name = inspect.name.clone().unwrap_or_default();
        if !inspect.state.as_ref().and_then(|s| s.running).unwrap_or(false) {
            return Err(EngineError::conflict(format!("container {} is not running", name.trim_start_matches('/'))));
        }
        if config.cmd.is_empty() {
            return Err(EngineError::invalid("no command specified for exec"));
        }
        if let Some(user) = config.user.as_deref().filter(|u| !u.is_empty()) {
            self.check_user(&id, user).await?;
        }
        let options = bollard::exec::CreateExecOptions {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(config.tty),
            env: (!config.env.is_empty()).then(|| config.env.clone()),
            cmd: Some(config.cmd.clone()),
            user: config.user.clone(),
            working_dir: config.working_dir.clone(),
            ..Default::default()
        };
        let created =
            self.docker().create_exec(&id, options).await.map_err(|e| docker_error("cannot create the exec", e))?;
        self.remember_exec(
            &created.id,
            PendingExec { tty: config.tty, size: config.size, created: std::time::Instant::now() },
        );
        Ok(created.id)
    }

    async fn start_exec(&self, exec_id: &str) -> Result<ProcessIo> {
        let exec_id = exec_ref(exec_id)?;
        let pending = match self.take_pending_exec(exec_id) {
            Some(pending) => pending,
            None => {
                let details = self.inspect_exec(exec_id).await?;
                PendingExec { tty: details.config.tty, size: None, created: std::time::Instant::now() }
            }
        };
        let body = serde_json::json!({ "Detach": false, "Tty": pending.tty });
        let hijacked = self.hijack(&format!("/exec/{exec_id}/start"), Some(body)).await?;
        // Docker sizes an exec's terminal only once it runs: resize after the start.
        if let (true, Some(size)) = (pending.tty, pending.size) {
            if let Err(e) = self.resize_exec(exec_id, size).await {
                tracing::debug!("docker: initial exec resize: {}", e.detail());
            }
        }
        Ok(Self::process_io(hijacked, pending.tty, true))
    }

    async fn attach_exec(&self, exec_id: &str, _options: AttachOptions) -> Result<ProcessIo> {
        exec_ref(exec_id)?;
        Err(EngineError::not_implemented(
            "Docker cannot attach to an exec that is already running: its output goes only to the connection that started it",
        ))
    }

    async fn resize_exec(&self, exec_id: &str, size: TtySize) -> Result<()> {
        let exec_id = exec_ref(exec_id)?;
        let options = ResizeExecOptions { h: i32::from(size.rows), w: i32::from(size.cols) };
        self.docker().resize_exec(exec_id, options).await.map_err(|e| docker_error("cannot resize the exec", e))
    }

    async fn inspect_exec(&self, exec_id: &str) -> Result<ExecDetails> {
        let exec_id = exec_ref(exec_id)?;
        let exec = self.docker().inspect_exec(exec_id).await.map_err(|e| docker_error("cannot inspect the exec", e))?;
        let process = exec.process_config.unwrap_or_default();
        let running = exec.running.unwrap_or(false);
        Ok(ExecDetails {
            id: exec.id.unwrap_or_else(|| exec_id.to_string()),
            container_id: exec.container_id.unwrap_or_default(),
            config: ExecConfig {
                cmd: process.entrypoint.into_iter().chain(process.arguments.unwrap_or_default()).collect(),
                user: process.user.filter(|u| !u.is_empty()),
                tty: process.tty.unwrap_or(false),
                ..Default::default()
            },
            running,
            pid: exec.pid.filter(|p| *p > 0).map(|p| p as u32),
            exit_code: if running { None } else { exec.exit_code },
        })
    }
}

#[async_trait]
impl Monitoring for DockerEngine {
    async fn logs(&self, id: &str, options: LogOptions) -> Result<BoxStream<'static, Result<LogRecord>>> {
        let inspect = self.inspect_raw(id).await?;
        let full_id = inspect.id.clone().unwrap_or_default();
        let tty = inspect.config.as_ref().and_then(|c| c.tty).unwrap_or(false);
        if !options.stdout && !options.stderr {
            return Ok(futures::stream::empty().boxed());
        }
        // Docker takes whole seconds: ask for a little more and cut exactly here.
        let since = options.since.map_or(0, |t| t.timestamp().max(0) as i32);
        let until = options.until.map_or(0, |t| (t.timestamp() + 1).max(0) as i32);
        let request = LogsOptions {
            follow: options.follow,
            stdout: options.stdout,
            stderr: options.stderr,
            since,
            until,
            timestamps: true,
            tail: options.tail.map_or_else(|| "all".to_string(), |n| n.to_string()),
        };
        let (since, until) = (options.since, options.until);
        let records = self.docker().logs(&full_id, Some(request)).flat_map(move |item| {
            let records: Vec<Result<LogRecord>> = match item {
                Err(e) => vec![Err(docker_error("cannot read the container's logs", e))],
                Ok(output) => {
                    let (stream, data, multiplexed) = match output {
                        bollard::container::LogOutput::StdOut { message } => (StdStream::Stdout, message, !tty),
                        bollard::container::LogOutput::StdErr { message } => (StdStream::Stderr, message, !tty),
                        bollard::container::LogOutput::StdIn { message } => (StdStream::Stdout, message, !tty),
                        bollard::container::LogOutput::Console { message } => (StdStream::Stdout, message, false),
                    };
                    let pieces = if multiplexed {
                        vec![stream::split_leading_timestamp(&data)]
                    } else {
                        stream::split_log_records(&data)
                    };
                    pieces
                        .into_iter()
                        .filter(|(time, data)| {
                            !data.is_empty()
                                && time.is_none_or(|t| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u))
                        })
                        .map(|(time, data)| Ok(LogRecord { time: time.unwrap_or_else(Utc::now), stream, data }))
                        .collect()
                }
            };
            futures::stream::iter(records)
        });
        Ok(records.boxed())
    }

    async fn stats(&self, id: &str) -> Result<Stats> {
        let inspect = self.inspect_raw(id).await?;
        let full_id = inspect.id.clone().unwrap_or_default();
        if !inspect.state.as_ref().and_then(|s| s.running).unwrap_or(false) {
            let name = inspect.name.unwrap_or_default();
            return Err(EngineError::conflict(format!("container {} is not running", name.trim_start_matches('/'))));
        }
        let memory_limit = inspect.host_config.as_ref().and_then(|h| h.memory).filter(|m| *m > 0).map(|m| m as u64);
        let options = StatsOptions { stream: false, one_shot: true };
        let reading = self
            .docker()
            .stats(&full_id, Some(options))
            .next()
            .await
            .ok_or_else(|| EngineError::unavailable("the Docker daemon sent no stats"))?
            .map_err(|e| docker_error("cannot read the container's stats", e))?;
        let cpu = reading.cpu_stats.unwrap_or_default();
        let memory = reading.memory_stats.unwrap_or_default();
        let pids = reading.pids_stats.unwrap_or_default();
        // Like `docker stats` and the native engine: page cache that can be reclaimed is not use.
        let inactive = memory
            .stats
            .as_ref()
            .and_then(|s| s.get("total_inactive_file").or_else(|| s.get("inactive_file")).copied())
            .unwrap_or(0);
        Ok(Stats {
            read_at: convert::parse_time(reading.read.as_deref()).unwrap_or_else(Utc::now),
            cpu_total_ns: cpu.cpu_usage.and_then(|u| u.total_usage).unwrap_or(0),
            online_cpus: cpu.online_cpus.unwrap_or(0),
            memory_bytes: memory.usage.unwrap_or(0).saturating_sub(inactive),
            memory_limit_bytes: memory_limit,
            pids: pids.current.unwrap_or(0),
            pids_limit: pids.limit.filter(|l| *l > 0 && *l != u64::MAX),
        })
    }

    /// Container events from the moment of this call: the request carries `since`, so events
    /// that happen before the stream is first polled are not lost. A broken stream is reopened
    /// from the last event seen.
    fn events(&self) -> BoxStream<'static, Event> {
        let docker = self.inner.docker.clone();
        let since_nanos = Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let filters = HashMap::from([("type".to_string(), vec!["container".to_string()])]);
        let open = move |since_nanos: i64| {
            let since = format!("{}.{:09}", since_nanos / 1_000_000_000, since_nanos % 1_000_000_000);
            let options = EventsOptions { since: Some(since), until: None, filters: Some(filters.clone()) };
            docker.events(Some(options)).boxed()
        };
        let first = open(since_nanos);
        futures::stream::unfold((first, since_nanos, open), |(mut events, mut last_seen, open)| async move {
            loop {
                match events.next().await {
                    Some(Ok(message)) => {
                        let at = message.time_nano.unwrap_or(0);
                        // After a reconnect, `since` replays the event at `last_seen`.
                        if at != 0 && at < last_seen {
                            continue;
                        }
                        last_seen = last_seen.max(at);
                        if let Some(event) = convert::event(&message) {
                            return Some((event, (events, last_seen + 1, open)));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!("docker: the event stream broke: {e}");
                        tokio::time::sleep(EVENTS_RECONNECT).await;
                        events = open(last_seen);
                    }
                    None => {
                        tokio::time::sleep(EVENTS_RECONNECT).await;
                        events = open(last_seen);
                    }
                }
            }
        })
        .boxed()
    }
}

#[async_trait]
impl Images for DockerEngine {
    async fn list_images(&self) -> Result<Vec<ImageSummary>> {
        let images = self
            .docker()
            .list_images(Some(ListImagesOptions::default()))
            .await
            .map_err(|e| docker_error("cannot list the images", e))?;
        Ok(images.iter().map(convert::image_summary).collect())
    }

    async fn inspect_image(&self, reference: &str) -> Result<ImageDetails> {
        let reference = image_ref(reference)?;
        let image =
            self.docker().inspect_image(reference).await.map_err(|e| docker_error("cannot inspect the image", e))?;
        Ok(convert::image_details(image))
    }

    async fn remove_image(&self, reference: &str, force: bool) -> Result<()> {
        let reference = image_ref(reference)?;
        let options = RemoveImageOptions { force, noprune: false, platforms: None };
        self.docker()
            .remove_image(reference, Some(options), None)
            .await
            .map(|_| ())
            .map_err(|e| docker_error("cannot remove the image", e))
    }

    async fn pull_image(
        &self,
        reference: &str,
        options: PullOptions,
    ) -> Result<BoxStream<'static, Result<PullProgress>>> {
        let request =
            images::PullRequest::new(reference, options.platform, options.credentials, &self.inner.registries)?;
        Ok(images::pull(self.docker().clone(), request))
    }

    async fn import_image(&self, source: ImageSource, options: ImportOptions) -> Result<ImportReport> {
        let tag = options.reference.as_deref().map(images::tag_parts).transpose()?;
        let (path, _upload) = match source {
            ImageSource::Path(path) => (path, None),
            ImageSource::Stream(stream) => {
                let spooled = images::spool(stream).await?;
                (spooled.to_path_buf(), Some(spooled))
            }
        };
        let prepare_options = options.clone();
        let prepared = tokio::task::spawn_blocking(move || images::prepare(&path, &prepare_options))
            .await
            .map_err(|e| EngineError::internal("import task failed", e))??;
        let format = prepared.format;
        let body = images::body_stream(prepared.body);
        let mut ids: Vec<String> = Vec::new();
        if format == ArchiveFormat::RootfsTarball {
            // `docker import`: the tag and the run defaults go with the request.
            let (repo, tag) = tag.clone().unzip();
            let request = CreateImageOptions {
                from_src: Some("-".into()),
                repo,
                tag,
                message: Some("imported from a root filesystem tarball".into()),
                changes: images::import_changes(&options)?,
                ..Default::default()
            };
            let mut messages = self.docker().create_image(Some(request), Some(bollard::body_try_stream(body)), None);
            while let Some(message) = messages.next().await {
                let message = message.map_err(images::archive_refused)?;
                if let Some(id) = message.status.as_deref().map(str::trim).filter(|s| s.starts_with("sha256:")) {
                    ids.push(id.to_string());
                }
            }
        } else {
            let request = ImportImageOptions { quiet: false, platform: None };
            let mut messages = self.docker().import_image_stream(request, body, None);
            while let Some(message) = messages.next().await {
                let message = message.map_err(images::archive_refused)?;
                for line in message.stream.as_deref().unwrap_or_default().lines() {
                    let id = match images::loaded(line) {
                        Some(Ok(id)) => id,
                        Some(Err(name)) => self.inspect_image(&name).await?.summary.id,
                        None => continue,
                    };
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
            // Older daemons may not say; the archive's configs name the images as well.
            if ids.is_empty() {
                ids = prepared.ids.clone();
            }
        }
        if ids.is_empty() {
            return Err(EngineError::internal(
                "the Docker daemon did not say which image it imported",
                std::io::Error::other("no image id in the daemon's answer"),
            ));
        }
        if let (Some((repo, tag)), ArchiveFormat::DockerSave | ArchiveFormat::OciLayout) = (tag, format) {
            let request = TagImageOptions { repo: Some(repo), tag: Some(tag) };
            self.docker()
                .tag_image(&ids[0], Some(request))
                .await
                .map_err(|e| docker_error("cannot tag the image", e))?;
        }
        let mut images = Vec::with_capacity(ids.len());
        for id in ids {
            let details = self.inspect_image(&id).await?;
            images.push(ImportedImage { id: details.summary.id, tags: details.summary.tags });
        }
        Ok(ImportReport { format, images })
    }

    async fn save_images(&self, references: &[String]) -> Result<BoxStream<'static, Result<bytes::Bytes>>> {
        if references.is_empty() {
            return Err(EngineError::invalid("no image to save"));
        }
        // Unknown images fail here, not in the middle of the archive.
        for reference in references {
            self.inspect_image(reference).await?;
        }
        let names: Vec<&str> = references.iter().map(String::as_str).collect();
        let archive = self
            .docker()
            .export_images(&names)
            .map(|chunk| chunk.map_err(|e| docker_error("cannot save the images", e)));
        Ok(archive.boxed())
    }

    async fn tag_image(&self, source: &str, target: &str) -> Result<()> {
        let source = image_ref(source)?;
        let (repo, tag) = images::tag_parts(target)?;
        let request = TagImageOptions { repo: Some(repo), tag: Some(tag) };
        self.docker().tag_image(source, Some(request)).await.map_err(|e| docker_error("cannot tag the image", e))
    }

    async fn image_history(&self, reference: &str) -> Result<Vec<ImageHistoryEntry>> {
        let details = self.inspect_image(reference).await?;
        let items = self
            .docker()
            .image_history(&details.summary.id)
            .await
            .map_err(|e| docker_error("cannot read the image's history", e))?;
        Ok(images::history(items, &details.layers))
    }

    async fn prune_images(&self, all: bool) -> Result<PruneReport> {
        // Docker lists deleted images and deleted layers alike: tell them apart by the ids of
        // the images there were.
        let before: std::collections::HashSet<String> = self.list_images().await?.into_iter().map(|i| i.id).collect();
        let filters = all.then(|| HashMap::from([("dangling".to_string(), vec!["false".to_string()])]));
        let pruned = self
            .docker()
            .prune_images(Some(PruneImagesOptions { filters }))
            .await
            .map_err(|e| docker_error("cannot prune the images", e))?;
        let mut report =
            PruneReport { space_reclaimed: pruned.space_reclaimed.unwrap_or(0).max(0) as u64, ..Default::default() };
        for deleted in pruned.images_deleted.unwrap_or_default().into_iter().filter_map(|d| d.deleted) {
            if before.contains(&deleted) {
                report.images_deleted.push(deleted);
            } else {
                report.layers_deleted += 1;
            }
        }
        Ok(report)
    }

    /// Kept in this process's memory and sent with each pull of that registry; plain HTTP is
    /// the daemon's setting, so `insecure` is accepted only where the daemon already agrees.
    async fn configure_registry(&self, registry: &str, config: RegistryConfig) -> Result<()> {
        let name = crate::native::credentials::normalize_registry(registry)?;
        if config.insecure {
            let info = self.docker().info().await.map_err(|e| docker_error("cannot ask the daemon's settings", e))?;
            if !images::daemon_treats_insecure(&info.registry_config.unwrap_or_default(), &name) {
                return Err(EngineError::not_implemented(format!(
                    "the Docker daemon decides which registries are plain HTTP: start it with --insecure-registry {name}"
                )));
            }
        }
        self.inner.registries.set(name, config)
    }

    async fn remove_registry(&self, registry: &str) -> Result<()> {
        self.inner.registries.remove(registry)
    }

    async fn list_registries(&self) -> Result<Vec<RegistrySummary>> {
        Ok(self.inner.registries.list())
    }
}

#[async_trait]
impl Engine for DockerEngine {
    async fn info(&self) -> Result<EngineInfo> {
        let version = self.docker().version().await.map_err(|e| docker_error("cannot ask the daemon's version", e))?;
        let info = self.docker().info().await.map_err(|e| docker_error("cannot ask the daemon's state", e))?;
        let count = |n: Option<i64>| n.unwrap_or(0).max(0) as usize;
        Ok(EngineInfo {
            backend: "docker".into(),
            version: format!(
                "{} (API {})",
                version.version.unwrap_or_else(|| "unknown".into()),
                self.inner.api_version.trim_start_matches('v')
            ),
            cgroup_version: match info.cgroup_version {
                Some(bollard::models::SystemInfoCgroupVersionEnum::_1) => "v1".into(),
                Some(bollard::models::SystemInfoCgroupVersionEnum::_2) => "v2".into(),
                _ => "unknown".into(),
            },
            containers: count(info.containers),
            containers_running: count(info.containers_running),
            images: count(info.images),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_cannot_leave_their_path() {
        assert_eq!(container_ref("/name").unwrap(), "name");
        assert_eq!(container_ref("../images/x").unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(container_ref("").unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert!(image_ref("registry:5000/team/app:1.2").is_ok());
        assert!(image_ref("busybox/../../containers/x").is_err());
        assert!(image_ref("a b").is_err());
        assert!(exec_ref("abc123").is_ok());
        assert!(exec_ref("../x").is_err());
    }

    #[test]
    fn grace_rounds_up_to_whole_seconds() {
        assert_eq!(grace_seconds(Duration::ZERO), 0);
        assert_eq!(grace_seconds(Duration::from_millis(300)), 1);
        assert_eq!(grace_seconds(Duration::from_secs(10)), 10);
    }

    #[tokio::test]
    async fn an_absent_daemon_is_unavailable() {
        let err = DockerEngine::connect("unix:///nonexistent/porthole-test.sock").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.detail());
        // Nothing listens on port 1 of the loopback address.
        let err = DockerEngine::connect("tcp://127.0.0.1:1").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.detail());
    }

    #[tokio::test]
    async fn missing_tls_files_are_invalid_and_named_in_the_detail() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "").unwrap();
        let address = format!("tcp://127.0.0.1:1?tls-dir={}", dir.path().display());
        let err = DockerEngine::connect(&address).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{}", err.detail());
        assert!(err.message().contains("CA certificate"), "{}", err.message());
        assert!(err.detail().contains("ca.pem"), "{}", err.detail());
    }
}
