//! The native engine: runs containers on this host with youki's libcontainer, one shim process
//! per running container (see [`shim`]). This module implements the engine interface on top of
//! the on-disk records ([`layout`]), the shim protocol ([`client`]), the image store
//! ([`images`], filled by [`registry`] pulls and [`archive`] imports), logs ([`logs`]) and
//! cgroup readings ([`cgroups`]).

pub mod archive;
pub mod cgroups;
pub mod client;
pub mod credentials;
pub mod images;
pub mod layout;
pub mod logs;
pub mod names;
pub mod protocol;
pub mod registry;
pub mod ring;
pub mod rootfs;
pub mod seccomp;
pub mod shim;
pub mod spec;
mod sys;
pub mod unpack;
pub mod users;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::stream::{BoxStream, StreamExt};
use tokio::io::AsyncBufReadExt;
use tokio::sync::broadcast;

use crate::api::{
    AttachOptions, ContainerConfig, ContainerDetails, ContainerStatus, ContainerSummary, Containers, Engine,
    EngineError, EngineInfo, ErrorKind, Event, EventAction, ExecConfig, ExecDetails, ImageDetails, ImageHistoryEntry,
    ImageSource, ImageSummary, Images, ImportOptions, ImportReport, LogOptions, LogRecord, Monitoring, Mount,
    ProcessIo, PruneReport, PullOptions, PullProgress, RegistryConfig, RegistrySummary, RemoveOptions, RestartPolicy,
    Result, Stats, Terminals, TtySize,
};

use self::cgroups::{CgroupVersion, ContainerCgroup};
use self::images::{Image, ImageStore};
use self::layout::{read_json, write_json_atomic, ContainerRecord, Layout, RunState, MAX_ROOT_LEN};
use self::protocol::{Request, ShimEvent, ShimStatus, StartReport, Target};
use self::spec::ProcessSpec;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long a shim may take to create and start a container before `start` gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How to run the native engine.
#[derive(Debug, Clone)]
pub struct NativeConfig {
    /// Data root: images, containers, logs, volumes.
    pub root: PathBuf,
    /// The executable whose `shim` subcommand is the per-container shim (normally `porthole`).
    pub shim_exe: PathBuf,
    /// Build `busybox:latest` from the host's busybox-static when it is missing.
    pub starter_image: bool,
}

/// The embedded engine. Cheap to clone.
#[derive(Clone)]
pub struct NativeEngine {
    inner: Arc<Inner>,
}

struct Inner {
    layout: Layout,
    shim_exe: PathBuf,
    images: ImageStore,
    registries: credentials::RegistrySettings,
    cgroup_version: CgroupVersion,
    /// Serialises operations that allocate names or create/remove container directories.
    create_lock: tokio::sync::Mutex<()>,
    events: broadcast::Sender<crate::api::Event>,
    execs: Mutex<HashMap<String, ExecEntry>>,
    monitored: Mutex<HashMap<String, ()>>,
    /// When the last `die` event of each container was published (orders `wait` after it).
    deaths: Mutex<HashMap<String, std::time::Instant>>,
    /// A [`cgroups::prime_migration`] is under way.
    priming_migration: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone)]
struct ExecEntry {
    container_id: String,
    config: ExecConfig,
    process: ProcessSpec,
    started: bool,
    exit_code: Option<i64>,
    pid: Option<u32>,
}

impl NativeEngine {
    /// Opens (creating if needed) the data root, builds the starter image, and takes over the
    /// containers left by a previous run: live shims are reconnected, dead ones cleaned up and
    /// restart policies applied.
    pub async fn open(config: NativeConfig) -> Result<Self> {
        let root = config.root.clone();
        if root.as_os_str().len() > MAX_ROOT_LEN || !root.is_absolute() {
            return Err(EngineError::invalid(format!(
                "the data directory must be an absolute path of at most {MAX_ROOT_LEN} bytes (unix socket paths are short): {}",
                root.display()
            )));
        }
        let layout = Layout::new(&root);
        for dir in [layout.containers_dir(), layout.volumes_dir(), layout.runtime_root(), layout.run_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| EngineError::internal("cannot create the data directory", e))?;
        }
        let images = ImageStore::open(&layout.images_dir())?;
        if config.starter_image {
            let images = images.clone();
            match tokio::task::spawn_blocking(move || images.ensure_starter_image()).await {
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => {
                    tracing::warn!("no busybox on this host: the starter image was not built")
                }
                Ok(Err(e)) => tracing::warn!("starter image: {}", e.detail()),
                Err(e) => tracing::warn!("starter image task failed: {e}"),
            }
        }
        let registries = credentials::RegistrySettings::new(&layout.images_dir());
        let (events, _) = broadcast::channel(1024);
        let engine = NativeEngine {
            inner: Arc::new(Inner {
                layout,
                shim_exe: config.shim_exe,
                registries,
                images,
                cgroup_version: CgroupVersion::detect(),
                priming_migration: std::sync::atomic::AtomicBool::new(false),
                create_lock: tokio::sync::Mutex::new(()),
                events,
                execs: Mutex::new(HashMap::new()),
                monitored: Mutex::new(HashMap::new()),
                deaths: Mutex::new(HashMap::new()),
            }),
        };
        engine.recover().await;
        Ok(engine)
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    pub fn image_store(&self) -> &ImageStore {
        &self.inner.images
    }

    /// Reconnects to live shims; for containers whose shim is gone (host reboot, crash), cleans
    /// up and applies the restart policy as Docker's daemon does at start.
    async fn recover(&self) {
        for record in self.records() {
            let id = record.id.clone();
            let state = self.state_of(&id);
            if let Ok(status) = self.shim_status(&id).await {
                self.remember_execs(&id, &status);
                self.ensure_monitor(&id);
                continue;
            }
            let was_running = state.status.is_running();
            if was_running {
                self.cleanup_dead_run(&id);
                let mut state = state.clone();
                state.status = ContainerStatus::Exited;
                state.pid = None;
                state.shim_pid = None;
                state.finished_at.get_or_insert_with(Utc::now);
                state.exit_code.get_or_insert(255);
                let _ = write_json_atomic(&self.inner.layout.state_path(&id), &state);
            }
            if record.config.auto_remove && (was_running || state.status == ContainerStatus::Exited) {
                let _ = self.remove_files(&id);
                continue;
            }
            let restart = match record.config.restart_policy {
                RestartPolicy::Always => true,
                RestartPolicy::UnlessStopped => !state.manually_stopped,
                RestartPolicy::OnFailure { .. } => was_running,
                RestartPolicy::No => false,
            };
            if restart && (state.status != ContainerStatus::Created) {
                if let Err(e) = self.start_container(&id).await {
                    tracing::warn!("could not restart {} after the engine started: {}", record.name, e.detail());
                }
            }
        }
    }

    /// Removes what a run whose shim died left behind: the mount and libcontainer's state.
    fn cleanup_dead_run(&self, id: &str) {
        let layout = &self.inner.layout;
        let _ = rootfs::unmount(&layout.rootfs(id));
        let _ = std::fs::remove_dir_all(layout.runtime_root().join(id));
        let _ = std::fs::remove_file(layout.shim_socket(id));
        let _ = std::fs::remove_file(layout.console_socket(id));
        remove_cgroup_dirs(&layout.cgroups_path(id));
    }

    fn records(&self) -> Vec<ContainerRecord> {
        let Ok(entries) = std::fs::read_dir(self.inner.layout.containers_dir()) else {
            return Vec::new();
        };
        let mut records: Vec<ContainerRecord> = entries
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.len() == 64))
            .filter_map(|e| read_json(&e.path().join("container.json")).ok())
            .collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.created));
        records
    }

    fn state_of(&self, id: &str) -> RunState {
        read_json(&self.inner.layout.state_path(id)).unwrap_or_else(|_| RunState::created())
    }

    /// Finds a container by full id, name, or unique id prefix.
    fn find(&self, reference: &str) -> Result<ContainerRecord> {
        let reference = reference.strip_prefix('/').unwrap_or(reference);
        if reference.is_empty() {
            return Err(EngineError::invalid("no container given"));
        }
        let records = self.records();
        if let Some(r) = records.iter().find(|r| r.id == reference || r.name == reference) {
            return Ok(r.clone());
        }
        if names::is_hex_prefix(reference) {
            let matches: Vec<&ContainerRecord> = records.iter().filter(|r| r.id.starts_with(reference)).collect();
            match matches.as_slice() {
                [one] => return Ok((*one).clone()),
                [] => {}
                _ => {
                    return Err(EngineError::invalid(format!(
                        "multiple containers match {reference:?}: give more of the id"
                    )))
                }
            }
        }
        Err(EngineError::not_found(format!("No such container: {reference}")))
    }

    fn publish(&self, record: &ContainerRecord, action: EventAction) {
        if matches!(action, EventAction::Die { .. }) {
            self.inner
                .deaths
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(record.id.clone(), std::time::Instant::now());
        }
        let _ = self.inner.events.send(crate::api::Event {
            time: Utc::now(),
            container_id: record.id.clone(),
            container_name: record.name.clone(),
            action,
        });
    }

    async fn shim_status(&self, id: &str) -> Result<ShimStatus> {
        let value = client::call(&self.inner.layout.shim_socket(id), &Request::Status).await?;
        serde_json::from_value(value).map_err(|e| EngineError::internal("bad status from the shim", e))
    }

    fn remember_execs(&self, container_id: &str, status: &ShimStatus) {
        let mut execs = self.inner.execs.lock().unwrap_or_else(|e| e.into_inner());
        for exec in &status.execs {
            execs.entry(exec.id.clone()).or_insert_with(|| ExecEntry {
                container_id: container_id.to_string(),
                config: ExecConfig { tty: exec.terminal, ..Default::default() },
                process: ProcessSpec {
                    args: Vec::new(),
                    env: Vec::new(),
                    cwd: "/".into(),
                    uid: 0,
                    gid: 0,
                    additional_gids: Vec::new(),
                    terminal: exec.terminal,
                },
                started: true,
                exit_code: exec.exit_code,
                pid: Some(exec.pid),
            });
        }
    }

    /// Follows a running container's shim: turns its events into engine events.
    fn ensure_monitor(&self, id: &str) {
        {
            let mut monitored = self.inner.monitored.lock().unwrap_or_else(|e| e.into_inner());
            if monitored.insert(id.to_string(), ()).is_some() {
                return;
            }
        }
        let engine = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            engine.monitor(&id).await;
            engine.inner.monitored.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        });
    }

    async fn monitor(&self, id: &str) {
        let Ok(record) = read_json::<ContainerRecord>(&self.inner.layout.record_path(id)) else {
            return;
        };
        let mut saw_exit = false;
        let mut removed = false;
        if let Ok((_, mut conn)) = client::open(&self.inner.layout.shim_socket(id), &Request::Monitor).await {
            while let Ok(Some((protocol::FrameKind::Event, payload))) = conn.next_frame().await {
                let Ok(event) = serde_json::from_slice::<ShimEvent>(&payload) else {
                    continue;
                };
                match event {
                    ShimEvent::Started { .. } => {
                        saw_exit = false;
                        self.publish(&record, EventAction::Start);
                    }
                    ShimEvent::Exited { exit_code, .. } => {
                        saw_exit = true;
                        self.publish(&record, EventAction::Die { exit_code });
                    }
                    ShimEvent::Oom => self.publish(&record, EventAction::Oom),
                    ShimEvent::Restarting { .. } => self.publish(&record, EventAction::Restart),
                    ShimEvent::ExecExited { id: exec_id, exit_code } => {
                        if let Some(e) = self.inner.execs.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&exec_id) {
                            e.exit_code = Some(exit_code);
                        }
                    }
                    ShimEvent::Removed => removed = true,
                }
            }
        }
        // The shim is gone. Whatever it did not tell us, its state file does.
        let state = self.state_of(id);
        if !saw_exit && state.status == ContainerStatus::Exited {
            if let Some(code) = state.exit_code {
                self.publish(&record, EventAction::Die { exit_code: code });
            }
        }
        if state.status.is_running() && state.shim_pid.is_some_and(|pid| !process_alive(pid)) {
            // The shim died without finishing: clean up so the container reads as exited.
            self.cleanup_dead_run(id);
            let mut state = state;
            state.status = ContainerStatus::Exited;
            state.pid = None;
            state.shim_pid = None;
            state.exit_code.get_or_insert(255);
            state.finished_at = Some(Utc::now());
            let _ = write_json_atomic(&self.inner.layout.state_path(id), &state);
            self.publish(&record, EventAction::Die { exit_code: 255 });
        }
        let dir_gone = !self.inner.layout.container_dir(id).exists();
        if removed || (record.config.auto_remove && dir_gone) {
            let _ = self.remove_files(id);
            self.publish(&record, EventAction::Destroy);
        }
    }

    /// Starts, in the background, the wait that the coming start or exec would spend moving its
    /// process into the container's cgroups (see [`cgroups::prime_migration`]); one at a time.
    fn prime_cgroup_migration(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.priming_migration.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = cgroups::prime_migration(inner.cgroup_version) {
                tracing::debug!("cannot prime the next cgroup migration: {e}");
            }
            inner.priming_migration.store(false, Ordering::Release);
        });
    }

    /// Spawns the shim for a container and waits for its start report.
    async fn spawn_shim(&self, id: &str) -> Result<u32> {
        cgroups::create_parents(&self.inner.layout.cgroups_path(id))
            .map_err(|e| EngineError::internal("cannot create the parent cgroup of the containers", e))?;
        let mut command = tokio::process::Command::new(&self.inner.shim_exe);
        command
            .arg("shim")
            .arg("--root")
            .arg(self.inner.layout.root())
            .arg("--id")
            .arg(id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(false);
        let mut child = command.spawn().map_err(|e| EngineError::internal("cannot start the container's shim", e))?;
        let stdout =
            child.stdout.take().ok_or_else(|| EngineError::internal("shim", std::io::Error::other("no stdout")))?;
        // The first process exits at once (it forks the long-lived shim); reap it.
        let _ = child.wait().await;
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(stdout);
        let read = tokio::time::timeout(START_TIMEOUT, reader.read_line(&mut line)).await;
        match read {
            Err(_) => {
                return Err(EngineError::internal(
                    "the container did not start in time",
                    std::io::Error::other("timeout"),
                ))
            }
            Ok(Err(e)) => return Err(EngineError::internal("cannot read the shim's report", e)),
            Ok(Ok(_)) => {}
        }
        match serde_json::from_str::<StartReport>(line.trim()) {
            Ok(StartReport::Started { pid, .. }) => Ok(pid),
            Ok(StartReport::Failed { error }) => Err(EngineError::new(error.kind, error.message)),
            Err(_) => {
                let log = std::fs::read_to_string(self.inner.layout.shim_log(id)).unwrap_or_default();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                Err(EngineError::internal("the container's shim failed", std::io::Error::other(tail)))
            }
        }
    }

    fn container_details(&self, record: &ContainerRecord) -> ContainerDetails {
        let state = self.state_of(&record.id);
        ContainerDetails {
            id: record.id.clone(),
            name: record.name.clone(),
            image: record.image.clone(),
            image_id: record.image_id.clone(),
            created: record.created,
            config: record.config.clone(),
            path: record.process.args.first().cloned().unwrap_or_default(),
            args: record.process.args.iter().skip(1).cloned().collect(),
            env: record.process.env.clone(),
            state: state.to_api(),
        }
    }

    /// Builds the process and records for a new container, checking everything a user could
    /// have got wrong before anything is written.
    fn plan_container(&self, id: &str, name: String, config: &ContainerConfig) -> Result<(ContainerRecord, Image)> {
        let image = self.inner.images.resolve(&config.image)?;
        let image_config = image.run_config();
        let entrypoint = match &config.entrypoint {
            Some(e) => e.clone(),
            None => image_config.entrypoint.clone().unwrap_or_default(),
        };
        // As Docker: a new entrypoint drops the image's CMD.
        let cmd = match (&config.cmd, &config.entrypoint) {
            (Some(c), _) => c.clone(),
            (None, Some(_)) => Vec::new(),
            (None, None) => image_config.cmd.clone().unwrap_or_default(),
        };
        let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
        if args.is_empty() {
            return Err(EngineError::invalid("no command specified: the image has none and none was given"));
        }
        let env = merge_env(&image_config.env, &config.env, config.tty)?;
        let cwd = config.working_dir.clone().or(image_config.working_dir.clone()).unwrap_or_else(|| "/".into());
        if !cwd.starts_with('/') {
            return Err(EngineError::invalid(format!("the working directory must be an absolute path, not {cwd:?}")));
        }
        let user_spec = config.user.clone().or(image_config.user.clone()).unwrap_or_default();
        let fs = image.fs();
        let passwd = fs.read("/etc/passwd").map(|b| String::from_utf8_lossy(&b).into_owned());
        let group = fs.read("/etc/group").map(|b| String::from_utf8_lossy(&b).into_owned());
        let user = users::resolve_user(&user_spec, passwd.as_deref(), group.as_deref())?;
        let path_var = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        if !fs.has_executable(&args[0], path_var) {
            return Err(EngineError::invalid(format!(
                "cannot run {:?}: executable file not found in the image (searched $PATH={path_var})",
                args[0]
            )));
        }
        for mount in &config.mounts {
            validate_mount(mount)?;
        }
        if let Some(hostname) = &config.hostname {
            if hostname.is_empty()
                || hostname.len() > 63
                || !hostname.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(EngineError::invalid(format!("invalid hostname {hostname:?}")));
            }
        }
        let hostname = config.hostname.clone().unwrap_or_else(|| names::short_id(id).to_string());
        let process = ProcessSpec {
            args,
            env,
            cwd,
            uid: user.uid,
            gid: user.gid,
            additional_gids: user.additional_gids,
            terminal: config.tty,
        };
        let record = ContainerRecord {
            id: id.to_string(),
            name,
            created: Utc::now(),
            config: config.clone(),
            image: images::shorten_reference(
                &images::normalize_reference(&config.image).unwrap_or_else(|_| config.image.clone()),
            ),
            image_id: image.id.clone(),
            process,
            hostname,
        };
        // Validate limits and mounts exactly as start will use them.
        self.build_spec(&record, false)?;
        Ok((record, image))
    }

    /// The OCI spec for a container; with `materialize`, named volumes are created.
    fn build_spec(&self, record: &ContainerRecord, materialize: bool) -> Result<oci_spec::runtime::Spec> {
        let layout = &self.inner.layout;
        let mut mounts = Vec::new();
        for mount in &record.config.mounts {
            mounts.push(match mount {
                Mount::Bind { source, target, read_only } => {
                    spec::SpecMount::Bind { source: source.clone(), target: target.clone(), read_only: *read_only }
                }
                Mount::Volume { name, target, read_only } => {
                    let data = layout.volume_data(name);
                    if materialize {
                        std::fs::create_dir_all(&data)
                            .map_err(|e| EngineError::internal("cannot create the volume", e))?;
                    }
                    spec::SpecMount::Bind { source: data, target: target.clone(), read_only: *read_only }
                }
                Mount::Tmpfs { target, size_bytes } => {
                    spec::SpecMount::Tmpfs { target: target.clone(), size_bytes: *size_bytes }
                }
            });
        }
        spec::build_spec(&spec::SpecInput {
            rootfs: layout.rootfs(&record.id),
            process: record.process.clone(),
            hostname: record.hostname.clone(),
            read_only_rootfs: record.config.read_only_rootfs,
            mounts,
            resources: record.config.resources,
            network_mode: record.config.network_mode,
            cgroups_path: layout.cgroups_path(&record.id),
        })
    }

    fn remove_files(&self, id: &str) -> std::io::Result<()> {
        self.cleanup_dead_run(id);
        let dir = self.inner.layout.container_dir(id);
        if !dir.exists() {
            return Ok(());
        }
        // Rename first so a half-removed directory is never mistaken for a container.
        let trash = self.inner.layout.containers_dir().join(format!(".removing-{id}"));
        std::fs::rename(&dir, &trash)?;
        std::fs::remove_dir_all(&trash)
    }

    /// Waits for the container to leave the running states. Woken by engine events (the
    /// monitor publishes `die` right after the shim saved the final state), with a slow poll as
    /// a safety net for a shim that died without a word.
    async fn wait_until_not_running(&self, id: &str, limit: Duration) -> Result<RunState> {
        let mut events = self.inner.events.subscribe();
        let began = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let state = self.state_of(id);
            let shim_gone = state.shim_pid.is_none_or(|pid| !process_alive(pid));
            if !state.status.is_running() || (shim_gone && !self.inner.layout.shim_socket(id).exists()) {
                self.wait_for_die_event(id, began, &mut events).await;
                return Ok(state);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::internal(
                    "the container did not stop in time",
                    std::io::Error::other("timeout"),
                ));
            }
            tokio::select! {
                _ = events.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Lets the container's monitor publish the `die` the shim reported before the caller goes
    /// on, so events keep their order (die before destroy). Returns at once when no monitor
    /// follows the container; never waits more than two seconds.
    async fn wait_for_die_event(
        &self,
        id: &str,
        since: std::time::Instant,
        events: &mut broadcast::Receiver<crate::api::Event>,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let published =
                self.inner.deaths.lock().unwrap_or_else(|e| e.into_inner()).get(id).is_some_and(|t| *t >= since);
            let monitored = self.inner.monitored.lock().unwrap_or_else(|e| e.into_inner()).contains_key(id);
            if published || !monitored || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = events.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    }

    fn exec_entry(&self, exec_id: &str) -> Result<ExecEntry> {
        self.inner
            .execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(exec_id)
            .cloned()
            .ok_or_else(|| EngineError::not_found(format!("No such exec instance: {exec_id}")))
    }
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn remove_cgroup_dirs(relative: &Path) {
    let relative = relative.strip_prefix("/").unwrap_or(relative);
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(relative));
    for entry in entries.flatten() {
        let _ = std::fs::remove_dir(entry.path().join(relative));
    }
}

/// Image environment, then the user's, later entries replacing earlier ones by key.
fn merge_env(image: &[String], user: &[String], tty: bool) -> Result<Vec<String>> {
    let mut merged: Vec<String> = Vec::new();
    let mut put = |entry: &str| {
        let key = entry.split('=').next().unwrap_or(entry);
        merged.retain(|e| e.split('=').next() != Some(key));
        merged.push(entry.to_string());
    };
    if !image.iter().any(|e| e.starts_with("PATH=")) && !user.iter().any(|e| e.starts_with("PATH=")) {
        put(DEFAULT_PATH);
    }
    for e in image {
        put(e);
    }
    if tty && !user.iter().any(|e| e.starts_with("TERM=")) {
        put("TERM=xterm");
    }
    for e in user {
        if e.is_empty() || e.starts_with('=') || !e.contains('=') || e.contains('\0') {
            return Err(EngineError::invalid(format!("invalid environment entry {e:?}: use KEY=value")));
        }
        put(e);
    }
    Ok(merged)
}

fn validate_mount(mount: &Mount) -> Result<()> {
    match mount {
        Mount::Bind { source, .. } => {
            if !source.is_absolute() {
                return Err(EngineError::invalid(format!(
                    "bind mount source must be an absolute path: {}",
                    source.display()
                )));
            }
            if !source.exists() {
                return Err(EngineError::invalid(format!(
                    "bind mount source path does not exist: {}",
                    source.display()
                )));
            }
        }
        Mount::Volume { name, .. } => {
            names::validate_name(name).map_err(|_| {
                EngineError::invalid(format!("invalid volume name {name:?}: use letters, digits, '_', '.' and '-'"))
            })?;
        }
        Mount::Tmpfs { .. } => {}
    }
    Ok(())
}

/// Parses `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(signal: &str) -> Result<i32> {
    let s = signal.trim();
    if let Ok(n) = s.parse::<i32>() {
        if nix::sys::signal::Signal::try_from(n).is_ok() {
            return Ok(n);
        }
    } else {
        let upper = s.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
        if let Ok(sig) = name.parse::<nix::sys::signal::Signal>() {
            return Ok(sig as i32);
        }
    }
    Err(EngineError::invalid(format!("invalid signal {signal:?}")))
}

#[async_trait]
impl Containers for NativeEngine {
    async fn create_container(&self, config: ContainerConfig) -> Result<String> {
        // A start usually follows at once (`run`).
        self.prime_cgroup_migration();
        let _guard = self.inner.create_lock.lock().await;
        let records = self.records();
        let name = match &config.name {
            Some(name) => {
                let name = names::validate_name(name)?;
                if let Some(other) = records.iter().find(|r| r.name == name) {
                    return Err(EngineError::conflict(format!(
                        "the container name \"/{name}\" is already in use by container {}: remove or rename that container to reuse the name",
                        other.id
                    )));
                }
                name
            }
            None => (0..20)
                .map(names::generate_name)
                .find(|n| !records.iter().any(|r| &r.name == n))
                .ok_or_else(|| EngineError::internal("cannot pick a free name", std::io::Error::other("exhausted")))?,
        };
        let id = names::new_id();
        let engine = self.clone();
        let (record, image) = {
            let config = config.clone();
            let id = id.clone();
            tokio::task::spawn_blocking(move || engine.plan_container(&id, name, &config))
                .await
                .map_err(|e| EngineError::internal("create task failed", e))??
        };
        let layout = &self.inner.layout;
        // Assemble in a staging directory and rename: a container exists whole or not at all.
        let staging = layout.containers_dir().join(format!(".creating-{id}"));
        let result = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(staging.join("bundle/rootfs"))?;
            std::fs::create_dir_all(staging.join("upper"))?;
            std::fs::create_dir_all(staging.join("work"))?;
            std::fs::create_dir_all(staging.join("logs"))?;
            write_json_atomic(&staging.join("container.json"), &record)?;
            write_json_atomic(&staging.join("state.json"), &RunState::created())?;
            write_json_atomic(&staging.join("layers.json"), &image.layers)?;
            std::fs::rename(&staging, layout.container_dir(&id))
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(EngineError::internal("cannot create the container", e));
        }
        self.publish(&record, EventAction::Create);
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let record = self.find(id)?;
        self.prime_cgroup_migration();
        let id = record.id.clone();
        let mut state = self.state_of(&id);
        if state.status.is_running() {
            if self.shim_status(&id).await.is_ok() {
                return Ok(());
            }
            self.cleanup_dead_run(&id);
        }
        let spec = self.build_spec(&record, true)?;
        let layout = &self.inner.layout;
        spec.save(layout.bundle_dir(&id).join("config.json"))
            .map_err(|e| EngineError::internal("cannot write the container's runtime spec", e))?;
        state.manually_stopped = false;
        state.error = None;
        write_json_atomic(&layout.state_path(&id), &state)
            .map_err(|e| EngineError::internal("cannot save state", e))?;
        self.spawn_shim(&id).await?;
        // Later starts (restarts by policy) are reported by the shim on the monitor connection.
        self.publish(&record, EventAction::Start);
        self.ensure_monitor(&id);
        Ok(())
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let record = self.find(id)?;
        let state = self.state_of(&record.id);
        if !state.status.is_running() {
            return Ok(());
        }
        let request = Request::Stop { signal: libc::SIGTERM, grace_ms: grace.as_millis() as u64 };
        match client::call(&self.inner.layout.shim_socket(&record.id), &request).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Unavailable => {}
            Err(e) => return Err(e),
        }
        self.wait_until_not_running(&record.id, grace + Duration::from_secs(15)).await?;
        Ok(())
    }

    async fn restart_container(&self, id: &str, grace: Duration) -> Result<()> {
        self.stop_container(id, grace).await?;
        self.start_container(id).await
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<()> {
        let record = self.find(id)?;
        let signal = parse_signal(signal)?;
        if !self.state_of(&record.id).status.is_running() {
            return Err(EngineError::conflict(format!("container {} is not running", record.name)));
        }
        client::call(&self.inner.layout.shim_socket(&record.id), &Request::Kill { signal }).await.map(|_| ())
    }

    async fn remove_container(&self, id: &str, options: RemoveOptions) -> Result<()> {
        let record = self.find(id)?;
        if self.state_of(&record.id).status.is_running() {
            if !options.force {
                return Err(EngineError::conflict(format!(
                    "cannot remove container {}: it is running; stop it first or force the removal",
                    record.name
                )));
            }
            self.stop_container(&record.id, Duration::ZERO).await?;
        }
        let _guard = self.inner.create_lock.lock().await;
        let engine = self.clone();
        let rid = record.id.clone();
        tokio::task::spawn_blocking(move || engine.remove_files(&rid))
            .await
            .map_err(|e| EngineError::internal("remove task failed", e))?
            .map_err(|e| EngineError::internal("cannot remove the container's files", e))?;
        self.inner.execs.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, e| e.container_id != record.id);
        self.inner.deaths.lock().unwrap_or_else(|e| e.into_inner()).remove(&record.id);
        self.publish(&record, EventAction::Destroy);
        Ok(())
    }

    async fn wait_container(&self, id: &str) -> Result<i64> {
        let record = self.find(id)?;
        let state = self.wait_until_not_running(&record.id, Duration::from_secs(100 * 365 * 86400)).await?;
        Ok(state.exit_code.unwrap_or(0))
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails> {
        let record = self.find(id)?;
        Ok(self.container_details(&record))
    }

    async fn list_containers(&self, all: bool) -> Result<Vec<ContainerSummary>> {
        Ok(self
            .records()
            .into_iter()
            .map(|r| {
                let state = self.state_of(&r.id).to_api();
                ContainerSummary {
                    id: r.id,
                    name: r.name,
                    image: r.image,
                    image_id: r.image_id,
                    command: r.process.args,
                    created: r.created,
                    state,
                    labels: r.config.labels,
                }
            })
            .filter(|s| all || s.state.status.is_running())
            .collect())
    }
}

#[async_trait]
impl Terminals for NativeEngine {
    async fn attach(&self, id: &str, options: AttachOptions) -> Result<ProcessIo> {
        let record = self.find(id)?;
        let request = Request::Attach { target: Target::Main, history: options.history, from_offset: None };
        let (_, conn) = client::open(&self.inner.layout.shim_socket(&record.id), &request)
            .await
            .map_err(|e| not_running_if_unavailable(e, &record.name))?;
        Ok(conn.into_process_io(record.config.open_stdin))
    }

    async fn resize_tty(&self, id: &str, size: TtySize) -> Result<()> {
        let record = self.find(id)?;
        let request = Request::Resize { target: Target::Main, rows: size.rows, cols: size.cols };
        client::call(&self.inner.layout.shim_socket(&record.id), &request)
            .await
            .map(|_| ())
            .map_err(|e| not_running_if_unavailable(e, &record.name))
    }

    async fn create_exec(&self, container_id: &str, config: ExecConfig) -> Result<String> {
        let record = self.find(container_id)?;
        self.prime_cgroup_migration();
        if !self.state_of(&record.id).status.is_running() {
            return Err(EngineError::conflict(format!("container {} is not running", record.name)));
        }
        if config.cmd.is_empty() {
            return Err(EngineError::invalid("no command specified for exec"));
        }
        let image = self.inner.images.resolve(&record.image_id)?;
        let env = merge_env(&record.process.env, &config.env, config.tty)?;
        let (uid, gid, additional_gids) = match &config.user {
            Some(user) => {
                // Resolve through the container's own root filesystem: users added at run time count.
                let rootfs = self.inner.layout.rootfs(&record.id);
                let passwd = std::fs::read_to_string(rootfs.join("etc/passwd"))
                    .ok()
                    .or_else(|| image.fs().read("/etc/passwd").map(|b| String::from_utf8_lossy(&b).into_owned()));
                let group = std::fs::read_to_string(rootfs.join("etc/group"))
                    .ok()
                    .or_else(|| image.fs().read("/etc/group").map(|b| String::from_utf8_lossy(&b).into_owned()));
                let u = users::resolve_user(user, passwd.as_deref(), group.as_deref())?;
                (u.uid, u.gid, u.additional_gids)
            }
            None => (record.process.uid, record.process.gid, record.process.additional_gids.clone()),
        };
        let cwd = config.working_dir.clone().unwrap_or_else(|| record.process.cwd.clone());
        if !cwd.starts_with('/') {
            return Err(EngineError::invalid(format!("the working directory must be an absolute path, not {cwd:?}")));
        }
        let exec_id = names::new_id();
        let entry = ExecEntry {
            container_id: record.id.clone(),
            process: ProcessSpec {
                args: config.cmd.clone(),
                env,
                cwd,
                uid,
                gid,
                additional_gids,
                terminal: config.tty,
            },
            config,
            started: false,
            exit_code: None,
            pid: None,
        };
        self.inner.execs.lock().unwrap_or_else(|e| e.into_inner()).insert(exec_id.clone(), entry);
        Ok(exec_id)
    }

    async fn start_exec(&self, exec_id: &str) -> Result<ProcessIo> {
        let entry = self.exec_entry(exec_id)?;
        self.prime_cgroup_migration();
        if entry.started {
            return Err(EngineError::conflict(format!("exec {exec_id} has already been started")));
        }
        let size = entry.config.size.unwrap_or(TtySize { rows: 24, cols: 80 });
        let request =
            Request::Exec { id: exec_id.to_string(), process: entry.process.clone(), rows: size.rows, cols: size.cols };
        let socket = self.inner.layout.shim_socket(&entry.container_id);
        let (result, conn) =
            client::open(&socket, &request).await.map_err(|e| not_running_if_unavailable(e, &entry.container_id))?;
        if let Some(e) = self.inner.execs.lock().unwrap_or_else(|e| e.into_inner()).get_mut(exec_id) {
            e.started = true;
            e.pid = result.get("pid").and_then(|p| p.as_u64()).map(|p| p as u32);
        }
        Ok(conn.into_process_io(true))
    }

    async fn attach_exec(&self, exec_id: &str, options: AttachOptions) -> Result<ProcessIo> {
        let entry = self.exec_entry(exec_id)?;
        let request =
            Request::Attach { target: Target::Exec(exec_id.to_string()), history: options.history, from_offset: None };
        let socket = self.inner.layout.shim_socket(&entry.container_id);
        let (_, conn) = client::open(&socket, &request).await?;
        Ok(conn.into_process_io(true))
    }

    async fn resize_exec(&self, exec_id: &str, size: TtySize) -> Result<()> {
        let entry = self.exec_entry(exec_id)?;
        let request = Request::Resize { target: Target::Exec(exec_id.to_string()), rows: size.rows, cols: size.cols };
        client::call(&self.inner.layout.shim_socket(&entry.container_id), &request).await.map(|_| ())
    }

    async fn inspect_exec(&self, exec_id: &str) -> Result<ExecDetails> {
        let entry = self.exec_entry(exec_id)?;
        let mut exit_code = entry.exit_code;
        if entry.started && exit_code.is_none() {
            if let Ok(status) = self.shim_status(&entry.container_id).await {
                exit_code = status.execs.iter().find(|e| e.id == exec_id).and_then(|e| e.exit_code);
            } else {
                // The container (and so the exec) is gone.
                exit_code = Some(137);
            }
        }
        Ok(ExecDetails {
            id: exec_id.to_string(),
            container_id: entry.container_id,
            config: entry.config,
            running: entry.started && exit_code.is_none(),
            pid: entry.pid,
            exit_code,
        })
    }
}

fn not_running_if_unavailable(err: EngineError, name: &str) -> EngineError {
    if err.kind() == ErrorKind::Unavailable {
        EngineError::conflict(format!("container {name} is not running"))
    } else {
        err
    }
}

#[async_trait]
impl Monitoring for NativeEngine {
    async fn logs(&self, id: &str, options: LogOptions) -> Result<BoxStream<'static, Result<LogRecord>>> {
        let record = self.find(id)?;
        let dir = self.inner.layout.log_dir(&record.id);
        let (records, cursor) = {
            let dir = dir.clone();
            let options = options.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                if options.follow {
                    // One call: the cursor starts exactly where the read stopped, no gap or repeat.
                    let (records, cursor) = logs::read_logs_with_cursor(&dir, &options)?;
                    Ok((records, Some(cursor)))
                } else {
                    Ok((logs::read_logs(&dir, &options)?, None))
                }
            })
            .await
            .map_err(|e| EngineError::internal("log task failed", e))?
            .map_err(|e| EngineError::internal("cannot read the container's logs", e))?
        };
        let existing = futures::stream::iter(records.into_iter().map(Ok));
        let Some(cursor) = cursor else {
            return Ok(existing.boxed());
        };
        let engine = self.clone();
        let id = record.id.clone();
        let follow = futures::stream::unfold((cursor, options, false), move |(mut cursor, options, done)| {
            let engine = engine.clone();
            let id = id.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    let running = engine.state_of(&id).status.is_running();
                    let options2 = options.clone();
                    let (result, back) = tokio::task::spawn_blocking(move || {
                        let r = cursor.read_new(&options2);
                        (r, cursor)
                    })
                    .await
                    .ok()?;
                    cursor = back;
                    match result {
                        Ok(batch) if !batch.is_empty() => {
                            return Some((
                                futures::stream::iter(batch.into_iter().map(Ok)).boxed(),
                                (cursor, options, false),
                            ));
                        }
                        Ok(_) if !running => return None,
                        Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        Err(e) => {
                            let err = EngineError::internal("cannot read the container's logs", e);
                            return Some((futures::stream::iter(vec![Err(err)]).boxed(), (cursor, options, true)));
                        }
                    }
                }
            }
        })
        .flatten();
        Ok(existing.chain(follow).boxed())
    }

    async fn stats(&self, id: &str) -> Result<Stats> {
        let record = self.find(id)?;
        if !self.state_of(&record.id).status.is_running() {
            return Err(EngineError::conflict(format!("container {} is not running", record.name)));
        }
        let cgroup = ContainerCgroup::new(&self.inner.layout.cgroups_path(&record.id));
        Ok(Stats {
            read_at: Utc::now(),
            cpu_total_ns: cgroup.cpu_total_ns(),
            online_cpus: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
            memory_bytes: cgroup.memory_bytes(),
            memory_limit_bytes: cgroup.memory_limit_bytes(),
            pids: cgroup.pids(),
            pids_limit: cgroup.pids_limit(),
        })
    }

    fn events(&self) -> BoxStream<'static, Event> {
        let receiver = self.inner.events.subscribe();
        tokio_stream::wrappers::BroadcastStream::new(receiver).filter_map(|e| async move { e.ok() }).boxed()
    }
}

impl NativeEngine {
    /// The image layer directories containers stack (their `layers.json`): kept by removals.
    fn layers_in_use(&self) -> std::collections::HashSet<PathBuf> {
        self.records()
            .iter()
            .filter_map(|r| read_json::<Vec<PathBuf>>(&self.inner.layout.lower_dirs_path(&r.id)).ok())
            .flatten()
            .collect()
    }
}

#[async_trait]
impl Images for NativeEngine {
    async fn list_images(&self) -> Result<Vec<ImageSummary>> {
        let store = self.inner.images.clone();
        tokio::task::spawn_blocking(move || store.list().iter().map(|i| store.summary(i)).collect())
            .await
            .map_err(|e| EngineError::internal("image task failed", e))
    }

    async fn inspect_image(&self, reference: &str) -> Result<ImageDetails> {
        let image = self.inner.images.resolve(reference)?;
        Ok(self.inner.images.details(&image))
    }

    async fn remove_image(&self, reference: &str, force: bool) -> Result<()> {
        let _guard = self.inner.create_lock.lock().await;
        let store = &self.inner.images;
        let image = store.resolve(reference)?;
        // As Docker: one of several tags only loses that tag.
        if store.is_tag(reference) && store.tags_of(&image.id).len() > 1 {
            return store.untag(reference);
        }
        if let Some(user) = self.records().iter().find(|r| r.image_id == image.id) {
            let running = self.state_of(&user.id).status.is_running();
            if !force || running {
                return Err(EngineError::conflict(format!(
                    "image {reference} is in use by container {} ({}){}",
                    user.name,
                    names::short_id(&user.id),
                    if running { "" } else { ": remove the container or force the removal" }
                )));
            }
            // Forced: untagged, but kept whole for the container (pruned once it is unused).
            return store.untag_all(&image.id);
        }
        let in_use = self.layers_in_use();
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.remove(&image, &in_use))
            .await
            .map_err(|e| EngineError::internal("image task failed", e))?
    }

    async fn pull_image(
        &self,
        reference: &str,
        options: PullOptions,
    ) -> Result<futures::stream::BoxStream<'static, Result<PullProgress>>> {
        registry::pull(self.inner.images.clone(), &self.inner.registries, reference, options)
    }

    async fn import_image(&self, source: ImageSource, options: ImportOptions) -> Result<ImportReport> {
        let store = self.inner.images.clone();
        let (local, _spooled) = match source {
            ImageSource::Path(path) if path.is_dir() => (archive::LocalSource::Dir(path), None),
            ImageSource::Path(path) => (archive::LocalSource::File(path), None),
            ImageSource::Stream(mut stream) => {
                use tokio::io::AsyncWriteExt;
                let spool = store.staging("import");
                let io = |e| EngineError::internal("cannot receive the archive", e);
                let mut file = tokio::fs::File::create(spool.path()).await.map_err(io)?;
                while let Some(chunk) = stream.next().await {
                    file.write_all(&chunk?).await.map_err(io)?;
                }
                file.flush().await.map_err(io)?;
                (archive::LocalSource::File(spool.path().to_path_buf()), Some(spool))
            }
        };
        tokio::task::spawn_blocking(move || archive::import(&store, local, &options))
            .await
            .map_err(|e| EngineError::internal("import task failed", e))?
    }

    async fn save_images(
        &self,
        references: &[String],
    ) -> Result<futures::stream::BoxStream<'static, Result<bytes::Bytes>>> {
        let store = self.inner.images.clone();
        if references.is_empty() {
            return Err(EngineError::invalid("no image to save"));
        }
        let mut images: Vec<(images::Image, Vec<String>)> = Vec::new();
        for reference in references {
            let image = store.resolve(reference)?;
            // As Docker: saved by tag, the archive carries that tag; saved by id, none.
            let tag = store.is_tag(reference).then(|| reference.clone());
            match images.iter_mut().find(|(i, _)| i.id == image.id) {
                Some((_, tags)) => tags.extend(tag),
                None => images.push((image, tag.into_iter().collect())),
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes>>(16);
        tokio::task::spawn_blocking(move || {
            let mut writer = archive::ChannelWriter::new(tx.clone());
            let result = archive::save(&store, &images, &mut writer).and_then(|()| {
                std::io::Write::flush(&mut writer)
                    .map_err(|e| EngineError::unavailable("the archive could not be written").with_source(e))
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    async fn tag_image(&self, source: &str, target: &str) -> Result<()> {
        let image = self.inner.images.resolve(source)?;
        self.inner.images.tag(&image.id, target)
    }

    async fn image_history(&self, reference: &str) -> Result<Vec<ImageHistoryEntry>> {
        let image = self.inner.images.resolve(reference)?;
        Ok(self.inner.images.history(&image))
    }

    async fn prune_images(&self, all: bool) -> Result<PruneReport> {
        let _guard = self.inner.create_lock.lock().await;
        let images_in_use = self.records().into_iter().map(|r| r.image_id).collect();
        let layers_in_use = self.layers_in_use();
        let store = self.inner.images.clone();
        tokio::task::spawn_blocking(move || store.prune(all, &images_in_use, &layers_in_use))
            .await
            .map_err(|e| EngineError::internal("prune task failed", e))
    }

    async fn configure_registry(&self, registry: &str, config: RegistryConfig) -> Result<()> {
        self.inner.registries.set(registry, config)
    }

    async fn remove_registry(&self, registry: &str) -> Result<()> {
        self.inner.registries.remove(registry)
    }

    async fn list_registries(&self) -> Result<Vec<RegistrySummary>> {
        self.inner.registries.list()
    }
}

#[async_trait]
impl Engine for NativeEngine {
    async fn info(&self) -> Result<EngineInfo> {
        let containers = self.list_containers(true).await?;
        Ok(EngineInfo {
            backend: "native".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            cgroup_version: self.inner.cgroup_version.describe().into(),
            containers_running: containers.iter().filter(|c| c.state.status.is_running()).count(),
            containers: containers.len(),
            images: self.inner.images.list().len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_merges_by_key_with_user_entries_last() {
        let env = merge_env(&["PATH=/bin".into(), "A=1".into()], &["A=2".into(), "B=x=y".into()], true).unwrap();
        assert_eq!(env, vec!["PATH=/bin", "TERM=xterm", "A=2", "B=x=y"]);
        let defaulted = merge_env(&[], &[], false).unwrap();
        assert_eq!(defaulted, vec![DEFAULT_PATH]);
        assert_eq!(merge_env(&[], &["NOEQUALS".into()], false).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn signals_parse_by_name_or_number() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("kill").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("1").unwrap(), libc::SIGHUP);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("999").is_err());
    }

    #[test]
    fn bind_mounts_need_an_existing_absolute_source() {
        let missing = Mount::Bind { source: "/definitely/not/here".into(), target: "/x".into(), read_only: false };
        assert!(validate_mount(&missing).unwrap_err().message().contains("does not exist"));
        let relative = Mount::Bind { source: "rel".into(), target: "/x".into(), read_only: false };
        assert!(validate_mount(&relative).unwrap_err().message().contains("absolute"));
        let volume = Mount::Volume { name: "../etc".into(), target: "/x".into(), read_only: false };
        assert!(validate_mount(&volume).is_err());
    }
}
