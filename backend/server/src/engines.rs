//! The engines one server drives: the embedded native engine and any number of Docker daemons
//! (local socket, TCP with or without TLS, or SSH), each under a name. Owns finding which engine a container lives on,
//! watching each Docker daemon (an engine that goes down is reported unavailable and comes back
//! by itself), and merging every engine's events into one stream tagged with the engine's name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use porthole_engine::api::{ContainerSummary, Event};
use porthole_engine::docker::{DockerAddress, DockerEngine};
use porthole_engine::{Engine, EngineError};
use serde::Serialize;
use tokio::sync::broadcast;

/// How often a Docker engine is checked (and, when down, reconnected).
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// The longest a check may take before the engine counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection may take: an `ssh://` daemon needs ssh to log in first.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const EVENT_QUEUE: usize = 1024;

/// Where an engine is: `native`, or a Docker daemon address (`unix:///var/run/docker.sock`,
/// `tcp://host:2375`, `tcp://host:2376?tls-dir=/etc/porthole/tls`, `ssh://user@host`), kept as
/// written (with its file options) for connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineAddress {
    Native,
    Docker(String),
}

/// `name=address` from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSpec {
    pub name: String,
    pub address: EngineAddress,
}

impl std::str::FromStr for EngineSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, address) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}' is not an engine: write name=native or name=unix:///path/docker.sock"))?;
        let valid_name = !name.is_empty()
            && name.len() <= 32
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err(format!("engine name '{name}' must be 1-32 letters, digits, '-' or '_'"));
        }
        let address = match address {
            "native" => EngineAddress::Native,
            a if ["unix://", "tcp://", "http://", "https://", "ssh://"].iter().any(|s| a.starts_with(s)) => {
                // The syntax is checked now, so a bad address stops the server at start; files
                // are read when the engine connects.
                DockerAddress::parse(a).map_err(|e| format!("engine '{name}': {}", e.message()))?;
                EngineAddress::Docker(a.to_string())
            }
            other => {
                return Err(format!(
                    "engine '{name}': '{other}' is neither 'native' nor a Docker address (unix://..., tcp://..., ssh://...)"
                ))
            }
        };
        Ok(EngineSpec { name: name.to_string(), address })
    }
}

/// An event with the engine it happened on.
#[derive(Debug, Clone, Serialize)]
pub struct TaggedEvent {
    pub engine: String,
    #[serde(flatten)]
    pub event: Event,
}

/// What the set reports on its stream: container events, and engines going down or up.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SetEvent {
    Container(TaggedEvent),
    Engine(EngineStatus),
}

/// An engine as `/api/engines` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineStatus {
    pub name: String,
    /// `native` or `docker`.
    pub backend: &'static str,
    /// `native`, or the Docker address without its options (no paths of keys or certificates).
    pub address: String,
    pub available: bool,
    /// Why it is unavailable, in words.
    pub error: Option<String>,
    pub since: DateTime<Utc>,
    pub default: bool,
}

struct Entry {
    name: String,
    address: EngineAddress,
    engine: RwLock<Option<Arc<dyn Engine>>>,
    status: Mutex<EngineStatus>,
    /// The containers last seen, shown (as unavailable) while the engine is down.
    last_containers: Mutex<Vec<ContainerSummary>>,
}

impl Entry {
    fn engine(&self) -> Option<Arc<dyn Engine>> {
        self.engine.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn available(&self) -> bool {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).available
    }
}

/// The configured engines; the first is the default.
pub struct EngineSet {
    entries: Vec<Arc<Entry>>,
    events: broadcast::Sender<SetEvent>,
    /// Which engine a container id was last found on.
    located: Mutex<HashMap<String, String>>,
}

impl EngineSet {
    /// A set of already opened engines (tests, or a server with only the native engine).
    pub fn with_engines(engines: Vec<(String, Arc<dyn Engine>)>) -> Arc<Self> {
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let entries = engines
            .into_iter()
            .enumerate()
            .map(|(i, (name, engine))| {
                Arc::new(Entry {
                    status: Mutex::new(EngineStatus {
                        name: name.clone(),
                        backend: "native",
                        address: "native".into(),
                        available: true,
                        error: None,
                        since: Utc::now(),
                        default: i == 0,
                    }),
                    name,
                    address: EngineAddress::Native,
                    engine: RwLock::new(Some(engine)),
                    last_containers: Mutex::new(Vec::new()),
                })
            })
            .collect();
        let set = Arc::new(EngineSet { entries, events, located: Mutex::new(HashMap::new()) });
        for entry in &set.entries {
            if let Some(engine) = entry.engine() {
                set.forward_events(entry.clone(), engine);
            }
        }
        set
    }

    /// Opens the configured engines. The native engine must open (`native` is how); a Docker
    /// daemon that cannot be reached now is reported unavailable and tried again every few
    /// seconds.
    pub async fn open<F, Fut>(specs: &[EngineSpec], native: F) -> Result<Arc<Self>, EngineError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Arc<dyn Engine>, EngineError>>,
    {
        let mut native = Some(native);
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let mut entries = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            if specs[..i].iter().any(|s| s.name == spec.name) {
                return Err(EngineError::invalid(format!("two engines are named '{}'", spec.name)));
            }
            let (engine, backend, address) = match &spec.address {
                EngineAddress::Native => {
                    let open = native
                        .take()
                        .ok_or_else(|| EngineError::invalid("only one native engine can run in a server"))?;
                    (Some(open().await?), "native", "native".to_string())
                }
                EngineAddress::Docker(address) => {
                    let shown = DockerAddress::parse(address)
                        .map(|a| a.to_string())
                        .map_err(|e| EngineError::invalid(format!("engine '{}': {}", spec.name, e.message())))?;
                    (None, "docker", shown)
                }
            };
            entries.push(Arc::new(Entry {
                name: spec.name.clone(),
                address: spec.address.clone(),
                status: Mutex::new(EngineStatus {
                    name: spec.name.clone(),
                    backend,
                    address,
                    available: engine.is_some(),
                    error: engine.is_none().then(|| "connecting".to_string()),
                    since: Utc::now(),
                    default: i == 0,
                }),
                engine: RwLock::new(engine),
                last_containers: Mutex::new(Vec::new()),
            }));
        }
        if entries.is_empty() {
            return Err(EngineError::invalid("no engine is configured"));
        }
        let set = Arc::new(EngineSet { entries, events, located: Mutex::new(HashMap::new()) });
        for entry in &set.entries {
            match &entry.address {
                EngineAddress::Native => {
                    if let Some(engine) = entry.engine() {
                        set.forward_events(entry.clone(), engine);
                    }
                }
                EngineAddress::Docker(address) => {
                    // One attempt now so a healthy daemon is usable from the first request.
                    set.check_docker(entry, address).await;
                    tokio::spawn(watch_docker(Arc::downgrade(&set), entry.clone(), address.clone()));
                }
            }
        }
        Ok(set)
    }

    fn set_status(&self, entry: &Entry, available: bool, error: Option<String>) {
        let changed = {
            let mut status = entry.status.lock().unwrap_or_else(|e| e.into_inner());
            let changed = status.available != available || (status.error.is_some() && available);
            if changed {
                status.available = available;
                status.since = Utc::now();
            }
            status.error = error;
            changed.then(|| status.clone())
        };
        if let Some(status) = changed {
            if status.available {
                tracing::info!(engine = %entry.name, "engine available");
            } else {
                tracing::warn!(engine = %entry.name, "engine unavailable: {}", status.error.as_deref().unwrap_or(""));
            }
            let _ = self.events.send(SetEvent::Engine(status));
        }
    }

    /// Connects (if needed) and checks a Docker engine once.
    async fn check_docker(self: &Arc<Self>, entry: &Arc<Entry>, address: &str) {
        match entry.engine() {
            Some(engine) => match tokio::time::timeout(CHECK_TIMEOUT, engine.info()).await {
                Ok(Ok(_)) => self.set_status(entry, true, None),
                Ok(Err(err)) => self.set_status(entry, false, Some(err.message().to_string())),
                Err(_) => self.set_status(entry, false, Some("the daemon does not answer".into())),
            },
            // A connect that times out is dropped, and with it any ssh it started.
            None => match tokio::time::timeout(CONNECT_TIMEOUT, DockerEngine::connect(address)).await {
                Ok(Ok(docker)) => {
                    let engine: Arc<dyn Engine> = Arc::new(docker);
                    *entry.engine.write().unwrap_or_else(|e| e.into_inner()) = Some(engine.clone());
                    self.forward_events(entry.clone(), engine);
                    self.set_status(entry, true, None);
                }
                Ok(Err(err)) => {
                    // The message is what the API shows; the detail (which file, what ssh said)
                    // is for the operator, once per change.
                    let message = err.message().to_string();
                    let repeated =
                        entry.status.lock().unwrap_or_else(|e| e.into_inner()).error.as_ref() == Some(&message);
                    if !repeated {
                        tracing::warn!(engine = %entry.name, "cannot connect: {}", err.detail());
                    }
                    self.set_status(entry, false, Some(message));
                }
                Err(_) => self.set_status(entry, false, Some("the daemon does not answer".into())),
            },
        }
    }

    /// Republishes an engine's events, tagged, until its stream ends (the daemon went away;
    /// the watcher starts a new one when it is back).
    fn forward_events(self: &Arc<Self>, entry: Arc<Entry>, engine: Arc<dyn Engine>) {
        let set = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut events = engine.events();
            while let Some(event) = events.next().await {
                let Some(set) = set.upgrade() else { return };
                let tagged = TaggedEvent { engine: entry.name.clone(), event };
                let _ = set.events.send(SetEvent::Container(tagged));
            }
            if let Some(set) = set.upgrade() {
                if matches!(entry.address, EngineAddress::Docker(_)) {
                    // Reconnect from scratch: the old client's streams are dead.
                    *entry.engine.write().unwrap_or_else(|e| e.into_inner()) = None;
                    set.set_status(&entry, false, Some("lost the connection to the daemon".into()));
                }
            }
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SetEvent> {
        self.events.subscribe()
    }

    pub fn statuses(&self) -> Vec<EngineStatus> {
        self.entries.iter().map(|e| e.status.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect()
    }

    pub fn default_name(&self) -> &str {
        &self.entries[0].name
    }

    /// The engine named `name` (the default when `None`), if it is available.
    pub fn get(&self, name: Option<&str>) -> Result<(String, Arc<dyn Engine>), EngineError> {
        let entry = match name {
            None => &self.entries[0],
            Some(name) => self
                .entries
                .iter()
                .find(|e| e.name == name)
                .ok_or_else(|| EngineError::not_found(format!("no engine named '{name}'")))?,
        };
        match entry.engine().filter(|_| entry.available()) {
            Some(engine) => Ok((entry.name.clone(), engine)),
            None => Err(EngineError::unavailable(format!("engine '{}' is unavailable", entry.name))),
        }
    }

    /// Finds the engine a container (id, id prefix or name) lives on. With several matches the
    /// first engine in the configuration wins, as names are only unique per engine.
    pub async fn locate(&self, container: &str) -> Result<(String, Arc<dyn Engine>), EngineError> {
        let known = self.located.lock().unwrap_or_else(|e| e.into_inner()).get(container).cloned();
        if let Some(name) = known {
            if let Ok((name, engine)) = self.get(Some(&name)) {
                if engine.inspect_container(container).await.is_ok() {
                    return Ok((name, engine));
                }
            }
        }
        let mut unavailable = Vec::new();
        for entry in &self.entries {
            let Some(engine) = entry.engine().filter(|_| entry.available()) else {
                unavailable.push(entry.name.clone());
                continue;
            };
            match engine.inspect_container(container).await {
                Ok(_) => {
                    self.located
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(container.to_string(), entry.name.clone());
                    return Ok((entry.name.clone(), engine));
                }
                Err(err) if err.kind() == porthole_engine::ErrorKind::NotFound => {}
                Err(err) if err.kind() == porthole_engine::ErrorKind::InvalidArgument => {}
                Err(err) => return Err(err),
            }
        }
        let mut message = format!("no such container: {container}");
        if !unavailable.is_empty() {
            message.push_str(&format!(" (unavailable engines not searched: {})", unavailable.join(", ")));
        }
        Err(EngineError::not_found(message))
    }

    /// Every engine's containers, each with the engine's name; the containers of an engine
    /// that is down are its last known ones, marked unavailable.
    pub async fn list_containers(&self, all: bool) -> Vec<(String, bool, ContainerSummary)> {
        let mut listed = Vec::new();
        for entry in &self.entries {
            let live = match entry.engine().filter(|_| entry.available()) {
                Some(engine) => match tokio::time::timeout(CHECK_TIMEOUT, engine.list_containers(true)).await {
                    Ok(Ok(containers)) => Some(containers),
                    Ok(Err(err)) => {
                        tracing::warn!(engine = %entry.name, "listing containers: {}", err.detail());
                        None
                    }
                    Err(_) => None,
                },
                None => None,
            };
            let (available, containers) = match live {
                Some(containers) => {
                    *entry.last_containers.lock().unwrap_or_else(|e| e.into_inner()) = containers.clone();
                    (true, containers)
                }
                None => (false, entry.last_containers.lock().unwrap_or_else(|e| e.into_inner()).clone()),
            };
            listed.extend(
                containers
                    .into_iter()
                    .filter(|c| all || c.state.status.is_running())
                    .map(|c| (entry.name.clone(), available, c)),
            );
        }
        listed
    }
}

async fn watch_docker(set: std::sync::Weak<EngineSet>, entry: Arc<Entry>, address: String) {
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let Some(set) = set.upgrade() else { return };
        set.check_docker(&entry, &address).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_specs_parse_with_clear_errors() {
        let native: EngineSpec = "local=native".parse().unwrap();
        assert_eq!(native.address, EngineAddress::Native);
        let docker: EngineSpec = "ci=unix:///run/docker.sock".parse().unwrap();
        assert_eq!(docker.address, EngineAddress::Docker("unix:///run/docker.sock".into()));
        assert!("tcp://x".parse::<EngineSpec>().unwrap_err().contains("name=native"));
        assert!("bad name=native".parse::<EngineSpec>().unwrap_err().contains("letters"));
        assert!("x=ftp://host".parse::<EngineSpec>().unwrap_err().contains("neither"));
        let remote: EngineSpec = "prod=tcp://10.0.0.5:2376?tls-dir=/etc/porthole/prod".parse().unwrap();
        assert_eq!(remote.address, EngineAddress::Docker("tcp://10.0.0.5:2376?tls-dir=/etc/porthole/prod".into()));
        assert!("lab=ssh://me@lab.example:2222".parse::<EngineSpec>().is_ok());
        let typo = "prod=tcp://10.0.0.5:2376?tlsdir=/etc/porthole/prod".parse::<EngineSpec>().unwrap_err();
        assert!(typo.contains("prod") && typo.contains("unknown option"), "{typo}");
        assert!("prod=tcp://h:2376?cert=/c&key=/k".parse::<EngineSpec>().unwrap_err().contains("CA"));
    }

    #[tokio::test]
    async fn statuses_show_no_key_paths() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret-tls");
        let spec: EngineSpec = format!("prod=tcp://127.0.0.1:1?tls-dir={}", secret.display()).parse().unwrap();
        let set = EngineSet::open(&[spec], || async { Err::<Arc<dyn Engine>, _>(EngineError::invalid("unused")) })
            .await
            .unwrap();
        let status = set.statuses().remove(0);
        assert_eq!(status.address, "tcp://127.0.0.1:1 (TLS)");
        assert!(!status.available);
        let error = status.error.unwrap();
        assert!(error.contains("CA certificate") && !error.contains("secret-tls"), "{error}");
    }
}
