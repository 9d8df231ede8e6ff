//! The per-container shim: a small single-threaded process (`porthole shim --root R --id ID`)
//! that creates the container with libcontainer, is its parent, holds its PTY master (or stdio
//! pipes) and those of its execs, writes its logs, applies its restart policy, and serves the
//! engine over a unix socket. It outlives the server, so containers and terminals survive a
//! server restart.
//!
//! Why a separate process: libcontainer forks from the calling process and changes its working
//! directory, which is only safe in a process with one thread; and whoever holds a PTY master
//! owns the terminal's life.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxSeccomp, Spec};

use crate::api::{ContainerStatus, EngineError, ErrorKind, RestartPolicy, StdStream};

use super::cgroups::ContainerCgroup;
use super::layout::{read_json, write_json_atomic, ContainerRecord, Layout, RunState};
use super::logs::{LogLimits, LogWriter};
use super::protocol::{
    self, ExecStatus, ExitReport, FrameDecoder, FrameKind, Request, Response, ShimEvent, ShimStatus, StartReport,
    Target, WireError,
};
use super::ring::Ring;
use super::seccomp;
use super::spec::process_spec;
use super::spec::ProcessSpec;
use super::sys;

/// Output kept per process for clients that join late or reconnect.
const RING_BYTES: usize = 2 << 20;
/// A client further behind than this is disconnected rather than allowed to grow the shim.
const MAX_CLIENT_BACKLOG: usize = 16 << 20;
/// Pending keystrokes per process before further input is dropped.
const MAX_INPUT_BACKLOG: usize = 1 << 20;
/// One batch of output is read until the source is empty, this much has been read, or
/// `READ_BUDGET` has passed.
const READ_BATCH: usize = 256 << 10;
/// A process that writes as fast as the shim reads never leaves its PTY empty, so without a
/// time limit one batch lasts as long as the process takes to produce `READ_BATCH` (several
/// milliseconds), and the keystrokes and output of every other terminal in the container wait
/// behind it: measured, a flood in one terminal put the echo p99 of another at 10–18 ms.
const READ_BUDGET: Duration = Duration::from_millis(1);
/// A process that wrote at least `STREAMING_BYTES` within `COALESCE_WINDOW` is streaming: its
/// output is collected for up to `COALESCE_WINDOW` (or `COALESCE_MAX` bytes) and goes to the
/// ring, the log and the clients as one batch. A process that writes less (a keystroke's echo,
/// a prompt) is not held back at all. The kernel hands PTY output over in pieces of a few
/// hundred bytes when a process writes line by line, so without this a flooding terminal costs
/// every client, and the server behind them, one wake-up and one frame per piece: measured,
/// about 20,000 frames per 100 MB.
const STREAMING_BYTES: usize = 4 << 10;
const COALESCE_WINDOW: Duration = Duration::from_millis(2);
const COALESCE_MAX: usize = 128 << 10;
/// How often the OOM counter is checked while the container runs.
const OOM_POLL: Duration = Duration::from_millis(500);
/// Finished execs remembered for `inspect`.
const FINISHED_EXECS_KEPT: usize = 64;

/// Entry point of `porthole shim`.
pub fn main(args: &[OsString]) -> ExitCode {
    let (root, id) = match parse_args(args) {
        Some(parsed) => parsed,
        None => {
            eprintln!("usage: porthole shim --root DIR --id CONTAINER_ID");
            return ExitCode::from(2);
        }
    };
    // Detach from the engine: the engine waits for this parent to exit, the child lives on,
    // reparented to init, and reports on the inherited stdout pipe.
    match sys::fork() {
        Ok(sys::Forked::Parent) => return ExitCode::SUCCESS,
        Ok(sys::Forked::Child) => {}
        Err(err) => {
            eprintln!("porthole shim: fork failed: {err}");
            return ExitCode::FAILURE;
        }
    }
    let _ = nix::unistd::setsid();
    let layout = Layout::new(root);
    redirect_stderr(&layout.shim_log(&id));
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).try_init();

    let mut report = std::io::stdout();
    let mut shim = match Shim::new(layout, &id) {
        Ok(shim) => shim,
        Err(err) => {
            tracing::error!("shim set-up failed: {}", err.detail());
            write_report(&mut report, &StartReport::Failed { error: wire_error(&err) });
            return ExitCode::FAILURE;
        }
    };
    match shim.start_run() {
        Ok(pid) => {
            write_report(&mut report, &StartReport::Started { pid, shim_pid: std::process::id() });
        }
        Err(err) => {
            tracing::error!("container start failed: {}", err.detail());
            shim.record_start_failure(&err);
            // Clean up before answering: the engine may inspect the host as soon as it hears.
            shim.shutdown_files();
            write_report(&mut report, &StartReport::Failed { error: wire_error(&err) });
            return ExitCode::FAILURE;
        }
    }
    // The engine has its answer; nothing else may write to its pipe.
    redirect_stdout_to_null();
    shim.run();
    ExitCode::SUCCESS
}

fn parse_args(args: &[OsString]) -> Option<(PathBuf, String)> {
    let mut root = None;
    let mut id = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.to_str()? {
            "--root" => root = Some(PathBuf::from(it.next()?)),
            "--id" => id = Some(it.next()?.to_str()?.to_string()),
            _ => return None,
        }
    }
    let id = id?;
    // The id names directories: only accept what the engine generates.
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((root?, id))
}

fn wire_error(err: &EngineError) -> WireError {
    WireError { kind: err.kind(), message: err.message().to_string() }
}

fn write_report(out: &mut impl Write, report: &StartReport) {
    let mut line = serde_json::to_vec(report).unwrap_or_default();
    line.push(b'\n');
    let _ = out.write_all(&line);
    let _ = out.flush();
}

fn redirect_stderr(path: &Path) {
    if let Ok(file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = nix::unistd::dup2(file.as_raw_fd(), 2);
    }
}

fn redirect_stdout_to_null() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

/// Runs in the container's process (main or exec) as the last step before `execve`:
///
/// - clean signal state: Rust ignores SIGPIPE and the shim blocks the signals it reads from its
///   signalfd, and both would otherwise survive `execve`;
/// - the container's seccomp filter, compiled once by the shim (libcontainer sees a spec
///   without `linux.seccomp`, and drops it for execs anyway). If it cannot be installed the
///   process does not exec: it fails rather than run unconfined.
#[derive(Clone)]
struct WorkloadExecutor {
    seccomp: Option<Arc<seccomp::Filter>>,
}

impl libcontainer::workload::Executor for WorkloadExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), libcontainer::workload::ExecutorError> {
        sys::reset_signals_for_exec();
        if let Some(filter) = &self.seccomp {
            filter.install().map_err(|e| {
                libcontainer::workload::ExecutorError::Other(format!("cannot install the seccomp filter: {e}"))
            })?;
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}

/// How a process's I/O is wired.
enum ProcIo {
    Pty { master: OwnedFd },
    Pipes { stdin: Option<OwnedFd>, stdout: Option<OwnedFd>, stderr: Option<OwnedFd> },
}

struct Proc {
    pid: i32,
    io: ProcIo,
    ring: Ring,
    /// Output read but not yet in the ring or sent (coalescing a stream).
    pending: Option<PendingOutput>,
    pace: OutputPace,
    input: Vec<u8>,
    accepts_input: bool,
    exit_code: Option<i64>,
}

/// How fast a process writes: whether it is streaming (see [`STREAMING_BYTES`]).
#[derive(Default)]
struct OutputPace {
    window_start: Option<Instant>,
    window_bytes: usize,
    /// A batch of streamed output went out: output until then is part of the same stream.
    streaming_until: Option<Instant>,
}

impl OutputPace {
    /// Counts `bytes` read at `now`; returns whether the process is streaming.
    fn read(&mut self, now: Instant, bytes: usize) -> bool {
        if self.window_start.is_none_or(|start| now.duration_since(start) > COALESCE_WINDOW) {
            self.window_start = Some(now);
            self.window_bytes = 0;
        }
        self.window_bytes += bytes;
        self.window_bytes >= STREAMING_BYTES || self.streaming_until.is_some_and(|until| now < until)
    }

    /// Notes that a batch of `bytes` went out at `now`.
    fn sent(&mut self, now: Instant, bytes: usize) {
        if bytes >= STREAMING_BYTES {
            self.streaming_until = Some(now + COALESCE_WINDOW);
        }
    }
}

/// Output of a streaming process, collected from several reads into one batch for the ring,
/// the log and the clients.
struct PendingOutput {
    stream: StdStream,
    data: Vec<u8>,
    /// When the batch goes out even if the stream goes on.
    due: Instant,
}

impl Proc {
    fn terminal(&self) -> bool {
        matches!(self.io, ProcIo::Pty { .. })
    }

    fn input_fd(&self) -> Option<RawFd> {
        match &self.io {
            ProcIo::Pty { master } => Some(master.as_raw_fd()),
            ProcIo::Pipes { stdin, .. } => stdin.as_ref().map(|f| f.as_raw_fd()),
        }
    }

    fn output_fds(&self) -> Vec<(RawFd, StdStream)> {
        match &self.io {
            ProcIo::Pty { master } => vec![(master.as_raw_fd(), StdStream::Stdout)],
            ProcIo::Pipes { stdout, stderr, .. } => {
                let mut fds = Vec::new();
                if let Some(f) = stdout {
                    fds.push((f.as_raw_fd(), StdStream::Stdout));
                }
                if let Some(f) = stderr {
                    fds.push((f.as_raw_fd(), StdStream::Stderr));
                }
                fds
            }
        }
    }

    /// Forgets an output source that reached its end.
    fn close_output(&mut self, fd: RawFd) {
        match &mut self.io {
            ProcIo::Pty { .. } => {}
            ProcIo::Pipes { stdout, stderr, .. } => {
                if stdout.as_ref().is_some_and(|f| f.as_raw_fd() == fd) {
                    *stdout = None;
                }
                if stderr.as_ref().is_some_and(|f| f.as_raw_fd() == fd) {
                    *stderr = None;
                }
            }
        }
    }

    fn close_input(&mut self) {
        if let ProcIo::Pipes { stdin, .. } = &mut self.io {
            *stdin = None;
        }
        self.input.clear();
        self.accepts_input = false;
    }
}

#[derive(Debug, Clone, PartialEq)]
enum ClientRole {
    /// Waiting for its request.
    New,
    /// Receives one process's output, may send input.
    Attached(Target),
    Monitor,
    /// Answered; closed once its output is flushed.
    Done,
}

struct Client {
    stream: UnixStream,
    decoder: FrameDecoder,
    out: Vec<u8>,
    out_pos: usize,
    role: ClientRole,
    /// The client shut down its sending side (an attached client closing the process's
    /// stdin): it still receives output until it closes completely.
    read_closed: bool,
}

impl Client {
    fn backlog(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn send(&mut self, frame: &[u8]) {
        self.out.extend_from_slice(frame);
    }

    /// Writes as much pending output as the socket takes without blocking.
    fn flush(&mut self) -> std::io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > (1 << 20) {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }
}

struct Shim {
    layout: Layout,
    record: ContainerRecord,
    state: RunState,
    listener: UnixListener,
    console: Option<UnixListener>,
    signals: SignalFd,
    cgroup: ContainerCgroup,
    log: Option<LogWriter>,
    container: Option<Container>,
    main: Option<Proc>,
    execs: HashMap<String, Proc>,
    finished_execs: Vec<String>,
    clients: Vec<Option<Client>>,
    stop_deadline: Option<Instant>,
    restart_at: Option<Instant>,
    run_started: Option<Instant>,
    consecutive_failures: u32,
    oom_seen: u64,
    next_oom_check: Instant,
    main_size: (u16, u16),
    finished: Option<Instant>,
    /// The seccomp profile compiled at its first use, with the profile it was compiled from.
    seccomp_cache: Option<(LinuxSeccomp, Arc<seccomp::Filter>)>,
    /// The current run's filter, installed in its main process and in every exec; `None` only
    /// when its spec has no seccomp profile.
    run_seccomp: Option<Arc<seccomp::Filter>>,
}

impl Shim {
    fn new(layout: Layout, id: &str) -> Result<Shim, EngineError> {
        let record: ContainerRecord = read_json(&layout.record_path(id))
            .map_err(|e| EngineError::internal("cannot read the container record", e))?;
        let state: RunState = read_json(&layout.state_path(id)).unwrap_or_else(|_| RunState::created());

        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGHUP);
        mask.thread_block().map_err(|e| EngineError::internal("cannot block signals", e))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| EngineError::internal("cannot create a signalfd", e))?;

        std::fs::create_dir_all(layout.run_dir())
            .map_err(|e| EngineError::internal("cannot create the run directory", e))?;
        let socket_path = layout.shim_socket(id);
        let _ = std::fs::remove_file(&socket_path);
        let listener =
            UnixListener::bind(&socket_path).map_err(|e| EngineError::internal("cannot bind the shim socket", e))?;
        listener.set_nonblocking(true).map_err(|e| EngineError::internal("cannot configure the shim socket", e))?;
        let log = LogWriter::open(&layout.log_dir(id), LogLimits::default())
            .map_err(|e| EngineError::internal("cannot open the container log", e))?;

        let cgroup = ContainerCgroup::new(&layout.cgroups_path(id));
        Ok(Shim {
            layout,
            record,
            state,
            listener,
            console: None,
            signals,
            cgroup,
            log: Some(log),
            container: None,
            main: None,
            execs: HashMap::new(),
            finished_execs: Vec::new(),
            clients: Vec::new(),
            stop_deadline: None,
            restart_at: None,
            run_started: None,
            consecutive_failures: 0,
            oom_seen: 0,
            next_oom_check: Instant::now(),
            main_size: (24, 80),
            finished: None,
            seccomp_cache: None,
            run_seccomp: None,
        })
    }

    fn id(&self) -> &str {
        &self.record.id
    }

    fn save_state(&self) {
        if let Err(e) = write_json_atomic(&self.layout.state_path(self.id()), &self.state) {
            tracing::error!("cannot write state.json: {e}");
        }
    }

    /// The console socket libcontainer hands PTY masters over; bound once, reused by execs.
    fn console_listener(&mut self) -> Result<&UnixListener, EngineError> {
        if self.console.is_none() {
            let path = self.layout.console_socket(self.id());
            let _ = std::fs::remove_file(&path);
            let listener =
                UnixListener::bind(&path).map_err(|e| EngineError::internal("cannot bind the console socket", e))?;
            self.console = Some(listener);
        }
        Ok(self.console.as_ref().expect("console listener was just bound"))
    }

    /// Mounts the root filesystem, creates and starts the container. On failure nothing of
    /// this run is left behind (no mount, no cgroup, no runtime state).
    fn start_run(&mut self) -> Result<u32, EngineError> {
        let id = self.id().to_string();
        let layers: Vec<PathBuf> = read_json(&self.layout.lower_dirs_path(&id))
            .map_err(|e| EngineError::internal("cannot read the container's layer list", e))?;
        let rootfs = self.layout.rootfs(&id);
        super::rootfs::mount_overlay(&layers, &self.layout.upper_dir(&id), &self.layout.work_dir(&id), &rootfs)
            .map_err(|e| EngineError::internal("cannot mount the container's root filesystem", e))?;
        if let Err(e) = super::rootfs::ensure_working_dir(&rootfs, &self.record.process.cwd) {
            let _ = super::rootfs::unmount(&rootfs);
            return Err(EngineError::invalid(format!(
                "the working directory {} cannot be created in the container: {e}",
                self.record.process.cwd
            )));
        }

        match self.create_and_start(&id) {
            Ok(pid) => {
                self.oom_seen = self.cgroup.oom_kills();
                self.state.status = ContainerStatus::Running;
                self.state.pid = Some(pid);
                self.state.started_at = Some(Utc::now());
                self.state.finished_at = None;
                self.state.exit_code = None;
                self.state.oom_killed = false;
                self.state.error = None;
                self.state.shim_pid = Some(std::process::id());
                self.save_state();
                self.run_started = Some(Instant::now());
                self.broadcast_event(&ShimEvent::Started { pid });
                Ok(pid)
            }
            Err(err) => {
                self.teardown_run();
                Err(err)
            }
        }
    }

    fn create_and_start(&mut self, id: &str) -> Result<u32, EngineError> {
        let terminal = self.record.process.terminal;
        let runtime_root = self.layout.runtime_root();
        std::fs::create_dir_all(&runtime_root)
            .map_err(|e| EngineError::internal("cannot create the runtime directory", e))?;
        // A stale runtime state from a crashed run would make the build fail with "exists".
        if let Ok(mut stale) = Container::load(runtime_root.join(id)) {
            let _ = stale.delete(true);
        }
        let bundle = self.prepare_runtime_bundle(id)?;

        let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_executor(WorkloadExecutor { seccomp: self.run_seccomp.clone() })
            .with_root_path(&runtime_root)
            .map_err(|e| EngineError::internal("invalid runtime root", e))?;
        let mut parent_ends = None;
        if terminal {
            let path = self.layout.console_socket(id);
            self.console_listener()?;
            builder = builder.with_console_socket(Some(path));
        } else {
            let (stdin_child, stdin_parent) = if self.record.config.open_stdin {
                let (r, w) = pipe()?;
                (r, Some(w))
            } else {
                (dev_null()?, None)
            };
            let (stdout_parent, stdout_child) = pipe()?;
            let (stderr_parent, stderr_child) = pipe()?;
            builder = builder.with_stdin(stdin_child).with_stdout(stdout_child).with_stderr(stderr_child);
            parent_ends = Some((stdin_parent, stdout_parent, stderr_parent));
        }

        let mut container = builder
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(classify_libcontainer_error)?;

        let io = match parent_ends {
            None => match self.receive_pty() {
                Ok(master) => ProcIo::Pty { master },
                Err(e) => {
                    let _ = container.delete(true);
                    return Err(e);
                }
            },
            Some((stdin, stdout, stderr)) => ProcIo::Pipes { stdin, stdout: Some(stdout), stderr: Some(stderr) },
        };
        if let Err(e) = container.start() {
            let _ = container.delete(true);
            return Err(classify_libcontainer_error(e));
        }
        let pid = container.pid().map(|p| p.as_raw()).unwrap_or(0);
        self.container = Some(container);
        let mut proc = Proc {
            pid,
            io,
            ring: self.main.take().map(|p| p.ring).unwrap_or_else(|| Ring::new(RING_BYTES)),
            pending: None,
            pace: OutputPace::default(),
            input: Vec::new(),
            accepts_input: self.record.config.open_stdin,
            exit_code: None,
        };
        prepare_io(&mut proc, self.main_size);
        self.main = Some(proc);
        Ok(pid as u32)
    }

    /// The bundle libcontainer creates the container from: the engine's `bundle/config.json`
    /// (left as written, profile included) without `linux.seccomp`, in a directory of its own.
    /// The profile is compiled here instead (see [`Shim::compiled_seccomp`]) and installed by
    /// [`WorkloadExecutor`], so libcontainer does not compile it again in the container's init.
    fn prepare_runtime_bundle(&mut self, id: &str) -> Result<PathBuf, EngineError> {
        let source = self.layout.bundle_dir(id);
        let mut spec = Spec::load(source.join("config.json"))
            .map_err(|e| EngineError::internal("cannot read the container's runtime spec", e))?;
        let profile = spec.linux_mut().as_mut().and_then(|linux| {
            let profile = linux.seccomp().clone();
            linux.set_seccomp(None);
            profile
        });
        self.run_seccomp = match profile {
            Some(profile) => Some(self.compiled_seccomp(profile)?),
            None => None,
        };
        // The spec moves to another directory: a relative root stays the engine bundle's.
        if let Some(root) = spec.root_mut() {
            if root.path().is_relative() {
                let path = source.join(root.path());
                root.set_path(path);
            }
        }
        let bundle = runtime_bundle_dir(&self.layout, id);
        std::fs::create_dir_all(&bundle)
            .and_then(|_| serde_json::to_vec(&spec).map_err(std::io::Error::other))
            .and_then(|json| std::fs::write(bundle.join("config.json"), json))
            .map_err(|e| EngineError::internal("cannot write the container's runtime spec", e))?;
        Ok(bundle)
    }

    /// The compiled filter for a profile: compiled at its first use, then reused by restarts
    /// and execs. Compiling fails closed: an error here stops the start.
    fn compiled_seccomp(&mut self, profile: LinuxSeccomp) -> Result<Arc<seccomp::Filter>, EngineError> {
        if let Some((compiled_from, filter)) = &self.seccomp_cache {
            if *compiled_from == profile {
                return Ok(filter.clone());
            }
        }
        let started = Instant::now();
        let filter = Arc::new(seccomp::Filter::compile_cached(&profile, &self.layout.root().join("seccomp-cache"))?);
        tracing::info!("seccomp profile compiled to {} BPF instructions in {:?}", filter.len(), started.elapsed());
        self.seccomp_cache = Some((profile, filter.clone()));
        Ok(filter)
    }

    fn receive_pty(&mut self) -> Result<OwnedFd, EngineError> {
        let listener = self.console_listener()?;
        // The container's init connected during build(); the connection is already queued.
        listener.set_nonblocking(true).map_err(|e| EngineError::internal("console socket", e))?;
        let (conn, _) =
            listener.accept().map_err(|e| EngineError::internal("no terminal was received from the container", e))?;
        receive_fd(&conn).map_err(|e| EngineError::internal("cannot receive the container's terminal", e))
    }

    /// Removes what one run created: the runtime state and cgroup, and the rootfs mount.
    fn teardown_run(&mut self) {
        let id = self.id().to_string();
        if let Some(mut container) = self.container.take() {
            if let Err(e) = container.delete(true) {
                tracing::warn!("libcontainer delete failed: {e}");
            }
        } else if let Ok(mut stale) = Container::load(self.layout.runtime_root().join(&id)) {
            let _ = stale.delete(true);
        }
        if let Err(e) = super::rootfs::unmount(&self.layout.rootfs(&id)) {
            tracing::warn!("cannot unmount the root filesystem: {e}");
        }
    }

    fn record_start_failure(&mut self, err: &EngineError) {
        self.state.status =
            if self.state.started_at.is_some() { ContainerStatus::Exited } else { ContainerStatus::Created };
        self.state.error = Some(err.message().to_string());
        self.state.exit_code = Some(match err.kind() {
            ErrorKind::InvalidArgument => 127,
            _ => 128,
        });
        self.state.pid = None;
        self.state.shim_pid = None;
        self.save_state();
    }

    /// Removes the sockets; called when the shim is about to exit.
    fn shutdown_files(&mut self) {
        let _ = std::fs::remove_file(self.layout.shim_socket(&self.record.id));
        let _ = std::fs::remove_file(self.layout.console_socket(&self.record.id));
    }

    fn run(&mut self) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            if let Some(finished) = self.finished {
                let flushed = self.clients.iter().flatten().all(|c| c.backlog() == 0);
                if flushed || finished.elapsed() > Duration::from_secs(2) {
                    break;
                }
            }
            self.poll_once(&mut buf);
        }
        self.shutdown_files();
        if self.record.config.auto_remove && self.state.status == ContainerStatus::Exited {
            let _ = std::fs::remove_dir_all(self.layout.container_dir(&self.record.id));
        }
    }

    fn timeout(&self) -> Duration {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(5);
        for deadline in [self.stop_deadline, self.restart_at, self.next_output_due()].into_iter().flatten() {
            wake = wake.min(deadline);
        }
        if self.main.as_ref().is_some_and(|m| m.exit_code.is_none()) {
            wake = wake.min(self.next_oom_check);
        }
        if self.finished.is_some() {
            wake = wake.min(now + Duration::from_millis(50));
        }
        wake.saturating_duration_since(now)
    }

    fn poll_once(&mut self, buf: &mut [u8]) {
        #[derive(Clone)]
        enum Source {
            Listener,
            Signals,
            Client(usize),
            Output(Option<String>, RawFd, StdStream),
            Input(Option<String>),
        }
        let mut fds = Vec::new();
        let mut sources = Vec::new();
        let mut add = |fd: RawFd, events: i16, source: Source| {
            fds.push(libc::pollfd { fd, events, revents: 0 });
            sources.push(source);
        };
        if self.finished.is_none() {
            add(self.listener.as_raw_fd(), libc::POLLIN, Source::Listener);
        }
        add(self.signals.as_fd().as_raw_fd(), libc::POLLIN, Source::Signals);
        for (i, client) in self.clients.iter().enumerate() {
            if let Some(c) = client {
                let mut events = if c.read_closed { 0 } else { libc::POLLIN };
                if c.backlog() > 0 {
                    events |= libc::POLLOUT;
                }
                add(c.stream.as_raw_fd(), events, Source::Client(i));
            }
        }
        let procs = self.main.iter().map(|p| (None, p)).chain(self.execs.iter().map(|(k, p)| (Some(k.clone()), p)));
        for (key, proc) in procs {
            for (fd, stream) in proc.output_fds() {
                add(fd, libc::POLLIN, Source::Output(key.clone(), fd, stream));
            }
            if !proc.input.is_empty() {
                if let Some(fd) = proc.input_fd() {
                    add(fd, libc::POLLOUT, Source::Input(key.clone()));
                }
            }
        }

        if let Err(e) = sys::poll(&mut fds, Some(self.timeout())) {
            tracing::error!("poll failed: {e}");
            std::thread::sleep(Duration::from_millis(10));
            return;
        }
        for (pfd, source) in fds.iter().zip(sources) {
            if pfd.revents == 0 {
                continue;
            }
            match source {
                Source::Listener => self.accept_clients(),
                Source::Signals => self.handle_signals(),
                Source::Client(i) => self.service_client(i, pfd.revents, buf),
                Source::Output(key, fd, stream) => self.read_output(key.as_deref(), fd, stream, buf),
                Source::Input(key) => self.write_input(key.as_deref()),
            }
        }
        self.on_timers();
        self.clients.retain(|c| c.is_some());
    }

    fn accept_clients(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.clients.push(Some(Client {
                        stream,
                        decoder: FrameDecoder::default(),
                        out: Vec::new(),
                        out_pos: 0,
                        read_closed: false,
                        role: ClientRole::New,
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    break;
                }
            }
        }
    }

    fn handle_signals(&mut self) {
        let mut child_exited = false;
        while let Ok(Some(info)) = self.signals.read_signal() {
            match info.ssi_signo as i32 {
                libc::SIGCHLD => child_exited = true,
                // The shim is not stopped by signals: the container's life decides its own.
                other => tracing::info!("ignoring signal {other}"),
            }
        }
        if child_exited {
            self.reap_children();
        }
    }

    /// Reaps only the pids this shim started (libcontainer waits for its own helpers).
    fn reap_children(&mut self) {
        let exec_ids: Vec<String> =
            self.execs.iter().filter(|(_, p)| p.exit_code.is_none()).map(|(k, _)| k.clone()).collect();
        for exec_id in exec_ids {
            let pid = self.execs[&exec_id].pid;
            if let Some(code) = try_wait(pid) {
                self.on_exec_exit(&exec_id, code);
            }
        }
        if let Some(pid) = self.main.as_ref().filter(|m| m.exit_code.is_none()).map(|m| m.pid) {
            if let Some(code) = try_wait(pid) {
                self.on_main_exit(code);
            }
        }
        self.reap_orphans();
    }

    /// Reaps exited children that are not ours to report: processes reparented to the shim (a
    /// child subreaper), such as what a failed exec of libcontainer leaves behind. Left as
    /// zombies they would keep the container's pid namespace from ever finishing its exit.
    /// Safe here: libcontainer only waits for its helpers inside its own calls, never while
    /// the shim sits in its loop.
    fn reap_orphans(&mut self) {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        for _ in 0..64 {
            let pid = match nix::sys::wait::waitid(nix::sys::wait::Id::All, flags) {
                Ok(status) => match status.pid() {
                    Some(pid) => pid,
                    None => return,
                },
                Err(_) => return,
            };
            let ours = self.main.as_ref().is_some_and(|m| m.pid == pid.as_raw())
                || self.execs.values().any(|p| p.pid == pid.as_raw());
            if ours {
                // Reported on the next SIGCHLD pass, with its exit code.
                return;
            }
            tracing::debug!("reaping orphan {pid}");
            let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        }
    }

    fn proc_mut(&mut self, key: Option<&str>) -> Option<&mut Proc> {
        match key {
            None => self.main.as_mut(),
            Some(k) => self.execs.get_mut(k),
        }
    }

    /// Reads one batch of output from a process and fans it out to its clients and the log.
    fn read_output(&mut self, key: Option<&str>, fd: RawFd, stream: StdStream, buf: &mut [u8]) {
        let mut batch = Vec::new();
        let mut ended = false;
        let began = Instant::now();
        while batch.len() < READ_BATCH && began.elapsed() < READ_BUDGET {
            match nix::unistd::read(fd, buf) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => batch.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                // EIO: the terminal's last slave closed; the process is gone or going.
                Err(_) => {
                    ended = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            self.collect_output(key, stream, batch);
        }
        if ended {
            self.flush_output(key);
            if let Some(proc) = self.proc_mut(key) {
                match proc.io {
                    ProcIo::Pty { .. } => {
                        // Keep the master (resize, history) but stop polling a dead terminal.
                        if proc.exit_code.is_none() {
                            // The exit itself arrives with SIGCHLD.
                        }
                        proc.io = ProcIo::Pipes { stdin: None, stdout: None, stderr: None };
                    }
                    ProcIo::Pipes { .. } => proc.close_output(fd),
                }
            }
        }
    }

    /// Adds what one poll round read to the process's pending output, and sends the batch on
    /// unless the process is streaming and the batch is neither full nor due.
    fn collect_output(&mut self, key: Option<&str>, stream: StdStream, batch: Vec<u8>) {
        let now = Instant::now();
        let Some(proc) = self.proc_mut(key) else {
            return;
        };
        let streaming = proc.pace.read(now, batch.len());
        if proc.pending.as_ref().is_some_and(|p| p.stream != stream) {
            // stdout and stderr leave in the order they were read.
            self.flush_output(key);
        }
        let Some(proc) = self.proc_mut(key) else {
            return;
        };
        let pending = match &mut proc.pending {
            Some(pending) => {
                pending.data.extend_from_slice(&batch);
                pending
            }
            empty => empty.insert(PendingOutput { stream, data: batch, due: now + COALESCE_WINDOW }),
        };
        if !streaming || pending.data.len() >= COALESCE_MAX || now >= pending.due {
            self.flush_output(key);
        }
    }

    /// Sends the process's pending output, if any.
    fn flush_output(&mut self, key: Option<&str>) {
        let Some(proc) = self.proc_mut(key) else {
            return;
        };
        if let Some(pending) = proc.pending.take() {
            proc.pace.sent(Instant::now(), pending.data.len());
            self.publish_output(key, pending.stream, &pending.data);
        }
    }

    /// Sends the pending output that is due.
    fn flush_due_output(&mut self, now: Instant) {
        let due = |p: &Proc| p.pending.as_ref().is_some_and(|o| now >= o.due);
        if self.main.as_ref().is_some_and(due) {
            self.flush_output(None);
        }
        let keys: Vec<String> = self.execs.iter().filter(|(_, p)| due(p)).map(|(k, _)| k.clone()).collect();
        for key in keys {
            self.flush_output(Some(&key));
        }
    }

    /// The earliest time some pending output is due.
    fn next_output_due(&self) -> Option<Instant> {
        self.main.iter().chain(self.execs.values()).filter_map(|p| p.pending.as_ref().map(|o| o.due)).min()
    }

    fn publish_output(&mut self, key: Option<&str>, stream: StdStream, data: &[u8]) {
        let Some(proc) = self.proc_mut(key) else {
            return;
        };
        let offset = proc.ring.push(stream, data);
        if key.is_none() {
            if let Some(log) = self.log.as_mut() {
                if let Err(e) = log.write(Utc::now(), stream, data) {
                    tracing::warn!("cannot write the container log: {e}");
                }
            }
        }
        let target = match key {
            None => Target::Main,
            Some(k) => Target::Exec(k.to_string()),
        };
        let mut frame = Vec::with_capacity(data.len() + 16);
        for chunk in data.chunks(protocol::MAX_FRAME - 64) {
            let chunk_offset = offset + (chunk.as_ptr() as usize - data.as_ptr() as usize) as u64;
            protocol::encode_output_into(&mut frame, stream, chunk_offset, chunk);
        }
        for slot in self.clients.iter_mut() {
            let Some(client) = slot else { continue };
            if client.role != ClientRole::Attached(target.clone()) {
                continue;
            }
            client.send(&frame);
            if client.backlog() > MAX_CLIENT_BACKLOG {
                tracing::warn!("dropping a client that stopped reading");
                *slot = None;
                continue;
            }
            if client.flush().is_err() {
                *slot = None;
            }
        }
    }

    fn write_input(&mut self, key: Option<&str>) {
        let Some(proc) = self.proc_mut(key) else {
            return;
        };
        let Some(fd) = proc.input_fd() else {
            proc.input.clear();
            return;
        };
        match nix::unistd::write(borrow(fd), &proc.input) {
            Ok(n) => {
                proc.input.drain(..n);
            }
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => proc.close_input(),
        }
    }

    fn queue_input(&mut self, key: Option<&str>, data: &[u8]) {
        let Some(proc) = self.proc_mut(key) else {
            return;
        };
        if !proc.accepts_input || proc.exit_code.is_some() {
            return;
        }
        if proc.input.len() + data.len() > MAX_INPUT_BACKLOG {
            tracing::warn!("input backlog full; dropping {} bytes", data.len());
            return;
        }
        proc.input.extend_from_slice(data);
        self.write_input(key);
    }

    fn service_client(&mut self, index: usize, revents: i16, buf: &mut [u8]) {
        let mut frames = Vec::new();
        let mut close = false;
        {
            let Some(client) = self.clients[index].as_mut() else {
                return;
            };
            if revents & libc::POLLOUT != 0 && client.flush().is_err() {
                close = true;
            }
            if client.read_closed {
                // Only a complete close (or an error) is left to notice.
                close |= revents & (libc::POLLHUP | libc::POLLERR) != 0;
            } else if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                loop {
                    match client.stream.read(buf) {
                        Ok(0)
                            if matches!(client.role, ClientRole::Attached(_))
                                && revents & (libc::POLLHUP | libc::POLLERR) == 0 =>
                        {
                            // The client dropped its input half only (an explicit `CloseInput`
                            // frame is what ends the process's stdin): keep sending it output.
                            client.read_closed = true;
                            break;
                        }
                        Ok(0) => {
                            close = true;
                            break;
                        }
                        Ok(n) => client.decoder.push(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => {
                            close = true;
                            break;
                        }
                    }
                    if client.decoder.buffered() > 4 << 20 {
                        break;
                    }
                }
                loop {
                    match client.decoder.next_frame() {
                        Ok(Some(frame)) => frames.push(frame),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!("protocol error from a client: {e}");
                            close = true;
                            break;
                        }
                    }
                }
            }
        }
        for (kind, payload) in frames {
            self.handle_frame(index, kind, &payload);
        }
        if close {
            self.clients[index] = None;
        } else if let Some(client) = self.clients[index].as_mut() {
            if client.flush().is_err() || (client.role == ClientRole::Done && client.backlog() == 0) {
                self.clients[index] = None;
            }
        }
    }

    fn handle_frame(&mut self, index: usize, kind: FrameKind, payload: &[u8]) {
        let role = match self.clients[index].as_ref() {
            Some(c) => c.role.clone(),
            None => return,
        };
        match (role, kind) {
            (ClientRole::New, FrameKind::Request) => match serde_json::from_slice::<Request>(payload) {
                Ok(request) => self.handle_request(index, request),
                Err(e) => {
                    let err = EngineError::invalid(format!("bad shim request: {e}"));
                    self.respond(index, Response::err(&err), ClientRole::Done);
                }
            },
            (ClientRole::Attached(target), FrameKind::Input) => {
                let key = target_key(&target);
                self.queue_input(key.as_deref(), payload);
            }
            (ClientRole::Attached(target), FrameKind::CloseInput) => {
                let key = target_key(&target);
                if let Some(proc) = self.proc_mut(key.as_deref()) {
                    if !proc.terminal() {
                        proc.close_input();
                    }
                }
            }
            _ => self.clients[index] = None,
        }
    }

    fn respond(&mut self, index: usize, response: Response, role: ClientRole) {
        if let Some(client) = self.clients[index].as_mut() {
            client.send(&protocol::encode_json(FrameKind::Response, &response));
            client.role = role;
            let _ = client.flush();
        }
    }

    fn main_running(&self) -> bool {
        self.main.as_ref().is_some_and(|m| m.exit_code.is_none())
    }

    fn handle_request(&mut self, index: usize, request: Request) {
        match request {
            Request::Status => {
                let status = self.status();
                self.respond(index, Response::ok(serde_json::to_value(status).unwrap_or_default()), ClientRole::Done);
            }
            Request::Monitor => self.respond(index, Response::ok(serde_json::Value::Null), ClientRole::Monitor),
            Request::Kill { signal } => {
                let result = self.kill_main(signal);
                if result.is_ok() && (signal == libc::SIGKILL || signal == libc::SIGTERM) {
                    // As Docker: killing with the stop signal or SIGKILL counts as a manual stop.
                    self.state.manually_stopped = true;
                    self.save_state();
                }
                let response = match result {
                    Ok(()) => Response::ok(serde_json::Value::Null),
                    Err(e) => Response::err(&e),
                };
                self.respond(index, response, ClientRole::Done);
            }
            Request::Stop { signal, grace_ms } => {
                self.state.manually_stopped = true;
                if self.restart_at.take().is_some() {
                    // Stopped during a restart back-off: stay stopped.
                    self.state.status = ContainerStatus::Exited;
                    self.finished = Some(Instant::now());
                }
                self.save_state();
                if self.main_running() {
                    let _ = self.kill_main(signal);
                    self.stop_deadline = Some(Instant::now() + Duration::from_millis(grace_ms));
                }
                self.respond(index, Response::ok(serde_json::Value::Null), ClientRole::Done);
            }
            Request::Resize { target, rows, cols } => {
                let response = match self.resize(&target, rows, cols) {
                    Ok(()) => Response::ok(serde_json::Value::Null),
                    Err(e) => Response::err(&e),
                };
                self.respond(index, response, ClientRole::Done);
            }
            Request::Attach { target, history, from_offset } => self.attach(index, target, history, from_offset),
            Request::Exec { id, process, rows, cols } => match self.start_exec(&id, &process, (rows, cols)) {
                Ok(pid) => {
                    self.respond(
                        index,
                        Response::ok(serde_json::json!({ "pid": pid })),
                        ClientRole::Attached(Target::Exec(id)),
                    );
                }
                Err(e) => self.respond(index, Response::err(&e), ClientRole::Done),
            },
        }
    }

    fn status(&self) -> ShimStatus {
        let mut execs: Vec<ExecStatus> = self
            .execs
            .iter()
            .map(|(id, p)| ExecStatus {
                id: id.clone(),
                pid: p.pid as u32,
                terminal: p.terminal(),
                exit_code: p.exit_code,
            })
            .collect();
        execs.sort_by(|a, b| a.id.cmp(&b.id));
        ShimStatus { shim_pid: std::process::id(), state: self.state.clone(), execs }
    }

    fn kill_main(&mut self, signal: i32) -> Result<(), EngineError> {
        let Some(pid) = self.main.as_ref().filter(|m| m.exit_code.is_none()).map(|m| m.pid) else {
            return Err(EngineError::conflict(format!("container {} is not running", self.record.name)));
        };
        let signal =
            Signal::try_from(signal).map_err(|_| EngineError::invalid(format!("invalid signal number {signal}")))?;
        nix::sys::signal::kill(Pid::from_raw(pid), signal)
            .map_err(|e| EngineError::internal("cannot signal the container", e))
    }

    fn resize(&mut self, target: &Target, rows: u16, cols: u16) -> Result<(), EngineError> {
        if rows == 0 || cols == 0 {
            return Err(EngineError::invalid("a terminal needs at least one row and one column"));
        }
        if *target == Target::Main {
            self.main_size = (rows, cols);
        }
        let key = target_key(target);
        let name = self.record.name.clone();
        let proc = self.proc_mut(key.as_deref()).ok_or_else(|| EngineError::not_found("no such exec"))?;
        match &proc.io {
            ProcIo::Pty { master } => sys::set_window_size(master.as_raw_fd(), rows, cols)
                .map_err(|e| EngineError::internal("cannot resize the terminal", e)),
            ProcIo::Pipes { .. } if proc.exit_code.is_some() => Err(EngineError::conflict("the process has exited")),
            ProcIo::Pipes { .. } => Err(EngineError::conflict(format!(
                "the process in {name} has no terminal (it was started without a TTY)"
            ))),
        }
    }

    fn attach(&mut self, index: usize, target: Target, history: bool, from_offset: Option<u64>) {
        let key = target_key(&target);
        let running = match &key {
            None => self.main_running(),
            Some(k) => self.execs.get(k).is_some_and(|p| p.exit_code.is_none()),
        };
        let exists = key.as_ref().is_none_or(|k| self.execs.contains_key(k));
        if !exists {
            self.respond(index, Response::err(&EngineError::not_found("no such exec")), ClientRole::Done);
            return;
        }
        if !running {
            let err =
                EngineError::conflict(format!("cannot attach: the process in {} is not running", self.record.name));
            self.respond(index, Response::err(&err), ClientRole::Done);
            return;
        }
        let (chunks, end) = match self.proc_mut(key.as_deref()) {
            Some(proc) => (if history { proc.ring.since(from_offset) } else { Vec::new() }, proc.ring.end()),
            None => (Vec::new(), 0),
        };
        self.respond(index, Response::ok(serde_json::json!({ "end_offset": end })), ClientRole::Attached(target));
        if let Some(client) = self.clients[index].as_mut() {
            let mut frame = Vec::new();
            for (stream, offset, data) in chunks {
                protocol::encode_output_into(&mut frame, stream, offset, &data);
            }
            client.send(&frame);
            let _ = client.flush();
        }
    }

    fn start_exec(&mut self, exec_id: &str, process: &ProcessSpec, size: (u16, u16)) -> Result<u32, EngineError> {
        if !self.main_running() {
            return Err(EngineError::conflict(format!("container {} is not running", self.record.name)));
        }
        if self.execs.contains_key(exec_id) {
            return Err(EngineError::conflict("an exec with this id already runs"));
        }
        let spec = process_spec(process)?;
        let id = self.id().to_string();
        let process_path = self.layout.exec_process_path(&id, exec_id);
        let json = serde_json::to_vec(&spec).map_err(|e| EngineError::internal("cannot write the exec process", e))?;
        std::fs::write(&process_path, json).map_err(|e| EngineError::internal("cannot write the exec process", e))?;

        let result = self.spawn_tenant(&id, &process_path, process.terminal);
        let _ = std::fs::remove_file(&process_path);
        let (pid, io) = result?;
        let mut proc = Proc {
            pid,
            io,
            ring: Ring::new(RING_BYTES),
            pending: None,
            pace: OutputPace::default(),
            input: Vec::new(),
            accepts_input: true,
            exit_code: None,
        };
        prepare_io(&mut proc, size);
        self.execs.insert(exec_id.to_string(), proc);
        Ok(pid as u32)
    }

    fn spawn_tenant(&mut self, id: &str, process_path: &Path, terminal: bool) -> Result<(i32, ProcIo), EngineError> {
        // libcontainer's tenant builder drops the seccomp profile: the executor installs it.
        let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_executor(WorkloadExecutor { seccomp: self.run_seccomp.clone() })
            .with_root_path(self.layout.runtime_root())
            .map_err(|e| EngineError::internal("invalid runtime root", e))?;
        let mut pipes = None;
        if terminal {
            self.console_listener()?;
            builder = builder.with_console_socket(Some(self.layout.console_socket(id)));
        } else {
            let (stdin_child, stdin_parent) = pipe()?;
            let (stdout_parent, stdout_child) = pipe()?;
            let (stderr_parent, stderr_child) = pipe()?;
            builder = builder.with_stdin(stdin_child).with_stdout(stdout_child).with_stderr(stderr_child);
            pipes = Some((stdin_parent, stdout_parent, stderr_parent));
        }
        let pid = builder
            .as_tenant()
            .with_process(Some(process_path))
            .with_detach(true)
            .build()
            .map_err(classify_libcontainer_error)?
            .as_raw();
        let io = match pipes {
            None => match self.receive_pty() {
                Ok(master) => ProcIo::Pty { master },
                Err(e) => {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                    let _ = waitpid(Pid::from_raw(pid), None);
                    return Err(e);
                }
            },
            Some((stdin, stdout, stderr)) => {
                ProcIo::Pipes { stdin: Some(stdin), stdout: Some(stdout), stderr: Some(stderr) }
            }
        };
        Ok((pid, io))
    }

    fn drain_output(&mut self, key: Option<&str>) {
        let mut buf = vec![0u8; 64 << 10];
        for _ in 0..64 {
            let fds = match self.proc_mut(key) {
                Some(p) => p.output_fds(),
                None => return,
            };
            if fds.is_empty() {
                break;
            }
            let mut pfds: Vec<libc::pollfd> =
                fds.iter().map(|(fd, _)| libc::pollfd { fd: *fd, events: libc::POLLIN, revents: 0 }).collect();
            if sys::poll(&mut pfds, Some(Duration::ZERO)).unwrap_or(0) == 0 {
                break;
            }
            for (pfd, (fd, stream)) in pfds.iter().zip(fds) {
                if pfd.revents != 0 {
                    self.read_output(key, fd, stream, &mut buf);
                }
            }
        }
        self.flush_output(key);
    }

    fn on_exec_exit(&mut self, exec_id: &str, code: i64) {
        self.drain_output(Some(exec_id));
        if let Some(proc) = self.execs.get_mut(exec_id) {
            proc.exit_code = Some(code);
            proc.io = ProcIo::Pipes { stdin: None, stdout: None, stderr: None };
        }
        self.send_exit(&Target::Exec(exec_id.to_string()), code);
        self.broadcast_event(&ShimEvent::ExecExited { id: exec_id.to_string(), exit_code: code });
        self.finished_execs.push(exec_id.to_string());
        if self.finished_execs.len() > FINISHED_EXECS_KEPT {
            let oldest = self.finished_execs.remove(0);
            self.execs.remove(&oldest);
        }
    }

    fn send_exit(&mut self, target: &Target, code: i64) {
        let frame = protocol::encode_json(FrameKind::Exit, &ExitReport { exit_code: code });
        for client in self.clients.iter_mut().flatten() {
            if client.role == ClientRole::Attached(target.clone()) {
                client.send(&frame);
                client.role = ClientRole::Done;
                let _ = client.flush();
            }
        }
    }

    fn broadcast_event(&mut self, event: &ShimEvent) {
        let frame = protocol::encode_json(FrameKind::Event, event);
        for client in self.clients.iter_mut().flatten() {
            if client.role == ClientRole::Monitor {
                client.send(&frame);
                let _ = client.flush();
            }
        }
    }

    fn check_oom(&mut self) {
        let kills = self.cgroup.oom_kills();
        if kills > self.oom_seen {
            self.oom_seen = kills;
            self.state.oom_killed = true;
            self.save_state();
            self.broadcast_event(&ShimEvent::Oom);
        }
    }

    fn on_main_exit(&mut self, code: i64) {
        self.drain_output(None);
        self.check_oom();
        // Execs die with the container's pid namespace; reap them now.
        let running_execs: Vec<(String, i32)> =
            self.execs.iter().filter(|(_, p)| p.exit_code.is_none()).map(|(k, p)| (k.clone(), p.pid)).collect();
        for (exec_id, pid) in running_execs {
            let code = match waitpid(Pid::from_raw(pid), None) {
                Ok(status) => exit_code_of(status).unwrap_or(137),
                Err(_) => 137,
            };
            self.on_exec_exit(&exec_id, code);
        }
        if let Some(main) = self.main.as_mut() {
            main.exit_code = Some(code);
            main.io = ProcIo::Pipes { stdin: None, stdout: None, stderr: None };
            main.input.clear();
        }
        self.teardown_run();
        self.stop_deadline = None;

        let ran_for = self.run_started.map(|t| t.elapsed()).unwrap_or_default();
        self.state.exit_code = Some(code);
        self.state.finished_at = Some(Utc::now());
        self.state.pid = None;
        let restart = self.should_restart(code);
        if restart {
            self.consecutive_failures =
                if ran_for >= Duration::from_secs(10) { 0 } else { self.consecutive_failures + 1 };
            let backoff =
                Duration::from_millis(100u64 << self.consecutive_failures.min(10)).min(Duration::from_secs(60));
            self.restart_at = Some(Instant::now() + backoff);
            self.state.status = ContainerStatus::Restarting;
        } else {
            self.state.status = ContainerStatus::Exited;
            self.state.shim_pid = None;
        }
        self.save_state();
        self.send_exit(&Target::Main, code);
        self.broadcast_event(&ShimEvent::Exited { exit_code: code, oom_killed: self.state.oom_killed });
        if restart {
            self.broadcast_event(&ShimEvent::Restarting { restart_count: self.state.restart_count + 1 });
        } else {
            if self.record.config.auto_remove {
                self.broadcast_event(&ShimEvent::Removed);
            }
            self.finished = Some(Instant::now());
        }
    }

    fn should_restart(&self, code: i64) -> bool {
        if self.state.manually_stopped {
            return false;
        }
        match self.record.config.restart_policy {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max_retries } => {
                code != 0 && (max_retries == 0 || self.state.restart_count < max_retries)
            }
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        self.flush_due_output(now);
        if self.stop_deadline.is_some_and(|d| now >= d) {
            self.stop_deadline = None;
            if self.main_running() {
                tracing::info!("grace period over; killing");
                let _ = self.kill_main(libc::SIGKILL);
            }
        }
        if self.main_running() && now >= self.next_oom_check {
            self.next_oom_check = now + OOM_POLL;
            self.check_oom();
        }
        if self.restart_at.is_some_and(|d| now >= d) {
            self.restart_at = None;
            self.state.restart_count += 1;
            if let Err(err) = self.start_run() {
                tracing::error!("restart failed: {}", err.detail());
                self.state.status = ContainerStatus::Exited;
                self.state.error = Some(err.message().to_string());
                self.state.shim_pid = None;
                self.save_state();
                self.finished = Some(Instant::now());
            }
        }
    }
}

/// Where the shim puts the spec libcontainer runs (see [`Shim::prepare_runtime_bundle`]);
/// libcontainer records it as the container's bundle, and execs read it from there.
fn runtime_bundle_dir(layout: &Layout, id: &str) -> PathBuf {
    layout.container_dir(id).join("runtime-bundle")
}

fn target_key(target: &Target) -> Option<String> {
    match target {
        Target::Main => None,
        Target::Exec(id) => Some(id.clone()),
    }
}

/// Non-blocking output, and the initial window size of a terminal.
fn prepare_io(proc: &mut Proc, (rows, cols): (u16, u16)) {
    let mut fds: Vec<RawFd> = proc.output_fds().into_iter().map(|(fd, _)| fd).collect();
    if let ProcIo::Pipes { stdin: Some(stdin), .. } = &proc.io {
        fds.push(stdin.as_raw_fd());
    }
    for fd in fds {
        if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
            let _ = fcntl(fd, FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK));
        }
    }
    if let ProcIo::Pty { master } = &proc.io {
        let _ = sys::set_window_size(master.as_raw_fd(), rows, cols);
    }
}

fn borrow(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    sys::borrow_fd(fd)
}

fn try_wait(pid: i32) -> Option<i64> {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => None,
        Ok(status) => exit_code_of(status),
        // ECHILD: already reaped or not ours; treat as gone.
        Err(_) => Some(137),
    }
}

fn exit_code_of(status: WaitStatus) -> Option<i64> {
    match status {
        WaitStatus::Exited(_, code) => Some(code as i64),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i64),
        _ => None,
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), EngineError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| EngineError::internal("cannot create a pipe", e))
}

fn dev_null() -> Result<OwnedFd, EngineError> {
    std::fs::File::open("/dev/null").map(OwnedFd::from).map_err(|e| EngineError::internal("cannot open /dev/null", e))
}

/// Receives one descriptor (the PTY master) sent with SCM_RIGHTS.
fn receive_fd(conn: &UnixStream) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                return Ok(sys::adopt_received_fd(fd));
            }
        }
    }
    Err(std::io::Error::other("no descriptor on the console socket"))
}

/// Turns libcontainer's errors into classified ones. Messages about the user's command are
/// shown as they are; anything else is an internal error whose detail is only logged.
fn classify_libcontainer_error(err: libcontainer::error::LibcontainerError) -> EngineError {
    let text = err.to_string();
    let detail = {
        let mut s = text.clone();
        let mut cur = std::error::Error::source(&err);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    };
    let lowered = detail.to_lowercase();
    if lowered.contains("not found") || lowered.contains("no such file") || lowered.contains("permission denied") {
        if let Some(start) = detail.find("executable") {
            let message = detail[start..].split(':').next().unwrap_or("executable not found").trim().to_string();
            return EngineError::invalid(format!("cannot run the container's command: {message}")).with_source(err);
        }
    }
    EngineError::internal("the container runtime failed to create the container", err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_arguments_accept_only_engine_generated_ids() {
        let id = "a".repeat(64);
        let args: Vec<OsString> = ["--root", "/var/lib/porthole", "--id", &id].iter().map(OsString::from).collect();
        assert_eq!(parse_args(&args), Some((PathBuf::from("/var/lib/porthole"), id)));
        let bad: Vec<OsString> = ["--root", "/r", "--id", "../../etc"].iter().map(OsString::from).collect();
        assert_eq!(parse_args(&bad), None);
        let unknown: Vec<OsString> = ["--root", "/r", "--evil"].iter().map(OsString::from).collect();
        assert_eq!(parse_args(&unknown), None);
    }

    #[test]
    fn output_is_held_back_only_while_a_process_streams() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut pace = OutputPace::default();
        // Keystroke echoes and prompts: never streaming, however often they come.
        for i in 0..100 {
            assert!(!pace.read(t0 + Duration::from_micros(200 * i), 1));
        }
        // A flood of small pieces becomes a stream once it passes STREAMING_BYTES in a window.
        let mut pace = OutputPace::default();
        assert!(!pace.read(ms(10), 1000));
        assert!(!pace.read(ms(10), 1000));
        assert!(!pace.read(ms(11), 1000));
        assert!(pace.read(ms(11), 1500));
        // A batch that went out keeps the stream going into the next window...
        pace.sent(ms(12), 40 << 10);
        assert!(pace.read(ms(13), 300));
        // ...but not once the process has been quiet for a window.
        assert!(!pace.read(ms(20), 300));
        // A small batch does not make a stream.
        let mut pace = OutputPace::default();
        pace.sent(ms(1), 100);
        assert!(!pace.read(ms(2), 100));
    }

    #[test]
    fn wait_statuses_map_to_docker_exit_codes() {
        let pid = Pid::from_raw(1);
        assert_eq!(exit_code_of(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(exit_code_of(WaitStatus::Signaled(pid, Signal::SIGKILL, false)), Some(137));
        assert_eq!(exit_code_of(WaitStatus::StillAlive), None);
    }
}
