//! Shared terminals: one process's terminal (the container's main PTY, or an exec session)
//! that any number of clients watch and, when allowed, type into. Owns the registry of live
//! terminals, each terminal's rolling output buffer and the task that fills it, the single
//! input path into the process, the roles (owner, writer, viewer) and the size rule.
//!
//! The WebSocket side of a client lives in [`session`]; share links in [`links`]. The wire
//! protocol is documented in `docs/TERMINAL_PROTOCOL.md`.

pub mod buffer;
pub mod links;
pub mod session;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use porthole_engine::api::{AttachOptions, ExecConfig, ProcessIo, TtySize};
use porthole_engine::{Engine, EngineError};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc, watch};

use self::buffer::{OutputBuffer, Read};

/// Output kept per terminal for late joiners and reconnects.
pub const HISTORY_BYTES: usize = 2 << 20;
/// Keystrokes and pastes waiting to be written to the process, per terminal.
const INPUT_QUEUE: usize = 256;
/// Control notifications (presence, size, exit) waiting per client; a client that falls this
/// far behind is sent a fresh snapshot instead.
const CONTROL_QUEUE: usize = 64;

/// What a client may do. Ordered: an owner can do all a writer can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Writer,
    Owner,
}

impl Role {
    pub fn can_type(self) -> bool {
        self >= Role::Writer
    }
}

/// Who a connection acts for. Roles are given to identities: an access token (all of its
/// connections), or a single connection that came in through a share link.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Token(i64),
    Link { link_id: String, client: u64 },
}

/// A connecting client before it joins: who it is, what it is called, and the role a share link
/// grants it (token holders get theirs from the terminal).
#[derive(Debug, Clone)]
pub struct Participant {
    pub token_id: Option<i64>,
    pub name: String,
    pub link: Option<links::LinkGrant>,
}

/// What the process of a terminal is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TerminalKind {
    /// The container's main process.
    Attach,
    /// An extra process started for this terminal.
    Exec { exec_id: String },
}

/// A terminal as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TerminalInfo {
    pub id: String,
    pub engine: String,
    pub container_id: String,
    #[serde(flatten)]
    pub kind: TerminalKind,
    pub owner: String,
    pub created_at: DateTime<Utc>,
    pub size: Option<TtySize>,
    pub clients: Vec<ClientInfo>,
    /// Bytes of output produced so far.
    pub output_bytes: u64,
    pub ended: bool,
    pub exit_code: Option<i64>,
}

/// A connected client as every other client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientInfo {
    pub client: u64,
    pub name: String,
    pub role: Role,
    /// Joined through a share link rather than with an access token.
    pub via_link: bool,
}

/// A change every client of a terminal must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Someone joined or left, or a role changed.
    Presence,
    Size(TtySize),
    /// The process ended (exit code when known).
    Ended(Option<i64>),
    /// A share link was revoked: its connections must close now.
    LinkRevoked(String),
    /// A viewer asks the owner to let them type.
    ControlRequested {
        client: u64,
        name: String,
    },
}

/// Errors of terminal operations, with the status the API gives them.
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("no such terminal: {0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

struct ClientEntry {
    identity: Identity,
    name: String,
    via_link: bool,
    link_role: Option<Role>,
    size: Option<TtySize>,
}

struct Shared {
    owner: Identity,
    owner_name: String,
    /// Roles the owner gave, by identity (absent: viewer for tokens, the link's role for links).
    granted: HashMap<Identity, Role>,
    clients: BTreeMap<u64, ClientEntry>,
    size: Option<TtySize>,
    ended: bool,
    exit_code: Option<i64>,
}

impl Shared {
    fn role_of(&self, entry: &ClientEntry) -> Role {
        if entry.identity == self.owner {
            return Role::Owner;
        }
        if let Some(role) = self.granted.get(&entry.identity) {
            return *role;
        }
        entry.link_role.unwrap_or(Role::Viewer)
    }

    fn clients(&self) -> Vec<ClientInfo> {
        self.clients
            .iter()
            .map(|(id, c)| ClientInfo {
                client: *id,
                name: c.name.clone(),
                role: self.role_of(c),
                via_link: c.via_link,
            })
            .collect()
    }
}

/// One shared terminal.
pub struct Terminal {
    pub id: String,
    /// The name of the engine the container lives on.
    pub engine_name: String,
    pub container_id: String,
    pub kind: TerminalKind,
    pub created_at: DateTime<Utc>,
    engine: Arc<dyn Engine>,
    buffer: Mutex<OutputBuffer>,
    /// The end offset of the output, bumped on every append; closed when the output ends.
    output_end: watch::Sender<u64>,
    /// `None` when the process has no input.
    input: Option<mpsc::Sender<Bytes>>,
    shared: Mutex<Shared>,
    notices: broadcast::Sender<Notice>,
    next_client: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Terminal {
    pub fn info(&self) -> TerminalInfo {
        let shared = lock(&self.shared);
        TerminalInfo {
            id: self.id.clone(),
            engine: self.engine_name.clone(),
            container_id: self.container_id.clone(),
            kind: self.kind.clone(),
            owner: shared.owner_name.clone(),
            created_at: self.created_at,
            size: shared.size,
            clients: shared.clients(),
            output_bytes: lock(&self.buffer).end(),
            ended: shared.ended,
            exit_code: shared.exit_code,
        }
    }

    pub fn is_owner(&self, token_id: i64) -> bool {
        lock(&self.shared).owner == Identity::Token(token_id)
    }

    /// Reads output from `offset` (see [`OutputBuffer::read`]).
    pub fn read(&self, offset: u64, max: usize) -> Read {
        lock(&self.buffer).read(offset, max)
    }

    pub fn output_start(&self) -> u64 {
        lock(&self.buffer).start()
    }

    pub fn subscribe_output(&self) -> watch::Receiver<u64> {
        self.output_end.subscribe()
    }

    pub fn subscribe_notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    pub fn size(&self) -> Option<TtySize> {
        lock(&self.shared).size
    }

    pub fn ended(&self) -> (bool, Option<i64>) {
        let shared = lock(&self.shared);
        (shared.ended, shared.exit_code)
    }

    pub fn clients(&self) -> Vec<ClientInfo> {
        lock(&self.shared).clients()
    }

    pub fn role_of_client(&self, client: u64) -> Option<Role> {
        let shared = lock(&self.shared);
        shared.clients.get(&client).map(|c| shared.role_of(c))
    }

    /// Registers a client; everyone is told.
    pub fn join(&self, participant: &Participant) -> u64 {
        let client = self.next_client.fetch_add(1, Ordering::Relaxed) + 1;
        let identity = match (&participant.link, participant.token_id) {
            (Some(link), _) => Identity::Link { link_id: link.id.clone(), client },
            (None, Some(token)) => Identity::Token(token),
            (None, None) => Identity::Link { link_id: String::new(), client },
        };
        let entry = ClientEntry {
            identity,
            name: participant.name.clone(),
            via_link: participant.link.is_some(),
            link_role: participant.link.as_ref().map(|l| l.role),
            size: None,
        };
        lock(&self.shared).clients.insert(client, entry);
        let _ = self.notices.send(Notice::Presence);
        client
    }

    pub fn leave(&self, client: u64) {
        {
            let mut shared = lock(&self.shared);
            let Some(entry) = shared.clients.remove(&client) else { return };
            // A link connection's grant dies with it; a token keeps its role for next time.
            if let Identity::Link { .. } = entry.identity {
                shared.granted.remove(&entry.identity);
            }
        }
        let _ = self.notices.send(Notice::Presence);
    }

    /// Queues input from `client`. Refused unless the client may type.
    pub async fn write_input(&self, client: u64, data: Bytes) -> Result<(), TerminalError> {
        match self.role_of_client(client) {
            Some(role) if role.can_type() => {}
            Some(_) => {
                return Err(TerminalError::Forbidden("you are a viewer here: ask the owner for write access".into()))
            }
            None => return Err(TerminalError::Forbidden("not connected".into())),
        }
        let Some(input) = &self.input else {
            return Err(TerminalError::Invalid("this terminal's process does not take input".into()));
        };
        input.send(data).await.map_err(|_| TerminalError::Invalid("the terminal has ended".into()))
    }

    /// A client reports its screen size. The PTY follows the owner: when an owner connection
    /// reports a size, the terminal takes it and every client is told.
    pub async fn report_size(&self, client: u64, size: TtySize) -> Result<(), TerminalError> {
        if size.rows == 0 || size.cols == 0 || size.rows > 1000 || size.cols > 1000 {
            return Err(TerminalError::Invalid("a terminal size must be 1..1000 rows and columns".into()));
        }
        let apply = {
            let mut shared = lock(&self.shared);
            let owner = shared.owner.clone();
            let Some(entry) = shared.clients.get_mut(&client) else { return Ok(()) };
            entry.size = Some(size);
            let is_owner = entry.identity == owner;
            if is_owner && shared.size != Some(size) {
                shared.size = Some(size);
                true
            } else {
                false
            }
        };
        if apply {
            self.resize_process(size).await;
            let _ = self.notices.send(Notice::Size(size));
        }
        Ok(())
    }

    async fn resize_process(&self, size: TtySize) {
        let result = match &self.kind {
            TerminalKind::Attach => self.engine.resize_tty(&self.container_id, size).await,
            TerminalKind::Exec { exec_id } => self.engine.resize_exec(exec_id, size).await,
        };
        if let Err(err) = result {
            tracing::debug!(terminal = %self.id, "resize: {}", err.detail());
        }
    }

    /// A viewer asks to type: every client hears it (the owner's screen offers to grant it).
    pub fn request_control(&self, client: u64) -> Result<(), TerminalError> {
        let name = {
            let shared = lock(&self.shared);
            match shared.clients.get(&client) {
                None => return Err(TerminalError::Forbidden("not connected".into())),
                Some(entry) if shared.role_of(entry).can_type() => {
                    return Err(TerminalError::Invalid("you can already type here".into()))
                }
                Some(entry) => entry.name.clone(),
            }
        };
        let _ = self.notices.send(Notice::ControlRequested { client, name });
        Ok(())
    }

    /// The owner changes the role of another client: `writer`/`viewer` grants or takes back
    /// typing; `owner` hands the terminal over (the old owner becomes a writer).
    pub fn set_role(&self, by: u64, target: u64, role: Role) -> Result<(), TerminalError> {
        {
            let mut shared = lock(&self.shared);
            let by_is_owner = shared.clients.get(&by).is_some_and(|c| c.identity == shared.owner);
            if !by_is_owner {
                return Err(TerminalError::Forbidden("only the terminal's owner can change roles".into()));
            }
            let Some(entry) = shared.clients.get(&target) else {
                return Err(TerminalError::Invalid(format!("no client {target} on this terminal")));
            };
            let identity = entry.identity.clone();
            if identity == shared.owner {
                return Err(TerminalError::Invalid("that client is the owner; hand ownership to someone else".into()));
            }
            match role {
                Role::Owner => {
                    if !matches!(identity, Identity::Token(_)) {
                        return Err(TerminalError::Invalid(
                            "ownership can only go to someone with an access token, not a share link".into(),
                        ));
                    }
                    let name = entry.name.clone();
                    let previous = std::mem::replace(&mut shared.owner, identity.clone());
                    shared.owner_name = name;
                    shared.granted.remove(&identity);
                    shared.granted.insert(previous, Role::Writer);
                }
                Role::Writer | Role::Viewer => {
                    shared.granted.insert(identity, role);
                }
            }
        }
        let _ = self.notices.send(Notice::Presence);
        Ok(())
    }

    /// Closes the connections that came in through a link, now that it is revoked.
    pub fn link_revoked(&self, link_id: &str) {
        let _ = self.notices.send(Notice::LinkRevoked(link_id.to_string()));
    }

    fn record_end(&self, exit_code: Option<i64>) {
        {
            let mut shared = lock(&self.shared);
            shared.ended = true;
            shared.exit_code = exit_code;
        }
        let _ = self.notices.send(Notice::Ended(exit_code));
    }
}

/// What a new terminal runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TerminalRequest {
    /// Share the container's main process (its TTY, or its stdio).
    Attach,
    /// Start a new process, by default a shell with a TTY.
    Exec {
        #[serde(default)]
        cmd: Vec<String>,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        working_dir: Option<String>,
        #[serde(default)]
        env: Vec<String>,
        #[serde(default)]
        size: Option<TtySize>,
    },
}

/// Who creates a terminal: they become its owner.
#[derive(Debug, Clone)]
pub struct Creator {
    pub token_id: i64,
    pub name: String,
}

/// The live terminals of one server, persisted (their ids, processes and owners) in SQLite so
/// they are found again after a restart.
pub struct TerminalRegistry {
    terminals: Mutex<HashMap<String, Arc<Terminal>>>,
    db: SqlitePool,
}

impl TerminalRegistry {
    pub fn new(db: SqlitePool) -> Arc<Self> {
        Arc::new(TerminalRegistry { terminals: Mutex::new(HashMap::new()), db })
    }

    pub fn get(&self, id: &str) -> Result<Arc<Terminal>, TerminalError> {
        lock(&self.terminals).get(id).cloned().ok_or_else(|| TerminalError::NotFound(id.to_string()))
    }

    pub fn list(&self) -> Vec<Arc<Terminal>> {
        let mut all: Vec<_> = lock(&self.terminals).values().cloned().collect();
        all.sort_by_key(|t| t.created_at);
        all
    }

    /// Creates a terminal on a container and starts filling its buffer.
    pub async fn create(
        self: &Arc<Self>,
        engine: Arc<dyn Engine>,
        engine_name: &str,
        container: &str,
        request: TerminalRequest,
        creator: Creator,
    ) -> Result<Arc<Terminal>, TerminalError> {
        let details = engine.inspect_container(container).await?;
        let container_id = details.id;
        let (kind, io, size) = match request {
            TerminalRequest::Attach => {
                let io = engine.attach(&container_id, AttachOptions { history: true }).await?;
                (TerminalKind::Attach, io, None)
            }
            TerminalRequest::Exec { cmd, user, working_dir, env, size } => {
                let cmd = if cmd.is_empty() { vec!["/bin/sh".to_string()] } else { cmd };
                let size = size.or(Some(TtySize { rows: 24, cols: 80 }));
                let config = ExecConfig { cmd, env, working_dir, user, tty: true, size };
                let exec_id = engine.create_exec(&container_id, config).await?;
                let io = engine.start_exec(&exec_id).await?;
                (TerminalKind::Exec { exec_id }, io, size)
            }
        };
        let id = new_terminal_id();
        let created_at = Utc::now();
        let (exec_id, kind_name) = match &kind {
            TerminalKind::Attach => (None, "attach"),
            TerminalKind::Exec { exec_id } => (Some(exec_id.clone()), "exec"),
        };
        let stored = sqlx::query(
            "INSERT INTO terminals (id, engine, container_id, kind, exec_id, owner_token_id, owner_name, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(engine_name)
        .bind(&container_id)
        .bind(kind_name)
        .bind(&exec_id)
        .bind(creator.token_id)
        .bind(&creator.name)
        .bind(created_at.to_rfc3339())
        .execute(&self.db)
        .await;
        if let Err(err) = stored {
            // The exec keeps running without a terminal; its output stays in the engine.
            return Err(err.into());
        }
        let owner = Identity::Token(creator.token_id);
        let names = (id, engine_name.to_string());
        Ok(self.start(engine, names, container_id, kind, io, owner, creator.name, created_at, size))
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        self: &Arc<Self>,
        engine: Arc<dyn Engine>,
        (id, engine_name): (String, String),
        container_id: String,
        kind: TerminalKind,
        io: ProcessIo,
        owner: Identity,
        owner_name: String,
        created_at: DateTime<Utc>,
        size: Option<TtySize>,
    ) -> Arc<Terminal> {
        let (input_tx, input_rx) = mpsc::channel::<Bytes>(INPUT_QUEUE);
        let (output_end, _) = watch::channel(0u64);
        let (notices, _) = broadcast::channel(CONTROL_QUEUE);
        let terminal = Arc::new(Terminal {
            id: id.clone(),
            engine_name,
            container_id,
            kind,
            created_at,
            engine,
            buffer: Mutex::new(OutputBuffer::new(HISTORY_BYTES)),
            output_end,
            input: io.input.as_ref().map(|_| input_tx),
            shared: Mutex::new(Shared {
                owner,
                owner_name,
                granted: HashMap::new(),
                clients: BTreeMap::new(),
                size,
                ended: false,
                exit_code: None,
            }),
            notices,
            next_client: AtomicU64::new(0),
        });
        lock(&self.terminals).insert(id, terminal.clone());
        if let Some(writer) = io.input {
            tokio::spawn(forward_input(writer, input_rx));
        }
        tokio::spawn(pump_output(self.clone(), terminal.clone(), io.output));
        terminal
    }

    /// Finds the terminals of an earlier run of the server whose processes still live.
    pub async fn restore(self: &Arc<Self>, engines: &crate::engines::EngineSet) -> Result<usize, sqlx::Error> {
        let rows: Vec<StoredTerminal> = sqlx::query_as(
            "SELECT id, engine, container_id, kind, exec_id, owner_token_id, owner_name, created_at FROM terminals",
        )
        .fetch_all(&self.db)
        .await?;
        let mut restored = 0;
        for row in rows {
            let StoredTerminal {
                id,
                engine: engine_name,
                container_id,
                kind,
                exec_id,
                owner_token_id,
                owner_name,
                created_at,
            } = row;
            let engine = match engines.get(Some(&engine_name)) {
                Ok((_, engine)) => engine,
                Err(err) => {
                    // Kept: the engine may come back; its terminals are found at the next start.
                    tracing::info!(terminal = %id, "not restored now: {}", err.message());
                    continue;
                }
            };
            let attached = match (kind.as_str(), exec_id) {
                ("exec", Some(exec_id)) => engine
                    .attach_exec(&exec_id, AttachOptions { history: true })
                    .await
                    .map(|io| (TerminalKind::Exec { exec_id }, io)),
                ("attach", None) => engine
                    .attach(&container_id, AttachOptions { history: true })
                    .await
                    .map(|io| (TerminalKind::Attach, io)),
                _ => Err(EngineError::invalid("unknown terminal kind")),
            };
            match attached {
                Ok((kind, io)) => {
                    let created_at = DateTime::parse_from_rfc3339(&created_at)
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_else(|_| Utc::now());
                    let owner = Identity::Token(owner_token_id);
                    let names = (id, engine_name);
                    self.start(engine.clone(), names, container_id, kind, io, owner, owner_name, created_at, None);
                    restored += 1;
                }
                Err(err) => {
                    tracing::info!(terminal = %id, "not restored: {}", err.detail());
                    self.forget(&id).await;
                }
            }
        }
        Ok(restored)
    }

    async fn forget(&self, id: &str) {
        lock(&self.terminals).remove(id);
        if let Err(err) = sqlx::query("DELETE FROM terminals WHERE id = ?").bind(id).execute(&self.db).await {
            tracing::warn!(terminal = %id, "cannot delete the terminal's record: {err}");
        }
        if let Err(err) = sqlx::query("DELETE FROM share_links WHERE terminal_id = ?").bind(id).execute(&self.db).await
        {
            tracing::warn!(terminal = %id, "cannot delete the terminal's links: {err}");
        }
    }

    pub fn db(&self) -> &SqlitePool {
        &self.db
    }
}

/// A row of the `terminals` table.
#[derive(sqlx::FromRow)]
struct StoredTerminal {
    id: String,
    engine: String,
    container_id: String,
    kind: String,
    exec_id: Option<String>,
    owner_token_id: i64,
    owner_name: String,
    created_at: String,
}

fn new_terminal_id() -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

async fn forward_input(
    mut writer: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    mut rx: mpsc::Receiver<Bytes>,
) {
    while let Some(data) = rx.recv().await {
        if writer.write_all(&data).await.is_err() || writer.flush().await.is_err() {
            break;
        }
    }
}

/// The most output the pump takes in before waking viewers.
const PUMP_BATCH: usize = 1 << 20;

/// Moves the process's output into the terminal's buffer, then records how it ended. Reads as
/// fast as the engine delivers: viewers never hold it back.
async fn pump_output(
    registry: Arc<TerminalRegistry>,
    terminal: Arc<Terminal>,
    mut output: futures::stream::BoxStream<'static, porthole_engine::Result<porthole_engine::api::OutputChunk>>,
) {
    'pump: while let Some(mut chunk) = output.next().await {
        // Everything the engine has already delivered goes in before viewers are woken, so a
        // busy terminal wakes them once per batch rather than once per engine frame.
        let mut batched = 0;
        loop {
            match chunk {
                Ok(data) => {
                    batched += data.data.len();
                    lock(&terminal.buffer).append(data.data);
                }
                Err(err) => {
                    tracing::warn!(terminal = %terminal.id, "output ended with an error: {}", err.detail());
                    terminal.output_end.send_replace(lock(&terminal.buffer).end());
                    break 'pump;
                }
            }
            if batched >= PUMP_BATCH {
                break;
            }
            match output.next().now_or_never() {
                Some(Some(next)) => chunk = next,
                _ => break,
            }
        }
        terminal.output_end.send_replace(lock(&terminal.buffer).end());
    }
    let exit_code = exit_code_of(&terminal).await;
    terminal.record_end(exit_code);
    registry.forget(&terminal.id).await;
}

async fn exit_code_of(terminal: &Terminal) -> Option<i64> {
    match &terminal.kind {
        TerminalKind::Attach => {
            tokio::time::timeout(Duration::from_secs(5), terminal.engine.wait_container(&terminal.container_id))
                .await
                .ok()
                .and_then(Result::ok)
        }
        TerminalKind::Exec { exec_id } => {
            // The exit code is recorded just after the output ends.
            for _ in 0..50 {
                match terminal.engine.inspect_exec(exec_id).await {
                    Ok(details) if !details.running => return details.exit_code,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(_) => return None,
                }
            }
            None
        }
    }
}
