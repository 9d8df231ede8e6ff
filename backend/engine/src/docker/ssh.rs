//! `ssh://` daemons: the engine runs OpenSSH's client to forward a private local unix socket to
//! the daemon's socket on the remote host, then talks to that socket as to a local daemon.
//!
//! Using the system's `ssh` keeps everything users already set up working — `~/.ssh/config`,
//! keys, agents, `known_hosts`, jump hosts — and keeps host key checking as strict as the user's
//! configuration makes it (the engine never turns it off). `BatchMode` makes ssh fail instead
//! of prompting. The local socket lives in a private (0700) temporary directory that goes away
//! with the [`Tunnel`].
//!
//! The tunnel looks after itself: when ssh exits (network loss, sshd restart, a killed process)
//! it is started again on the same socket, with back-off, so the engine's client keeps working
//! once the host is back. Dropping the tunnel stops its task, which kills ssh (`kill_on_drop`)
//! and removes the directory.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::task::JoinHandle;

use super::address::SshTarget;
use crate::api::{EngineError, Result};

/// How long ssh gets to log in and open the forwarded socket.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const READY_POLL: Duration = Duration::from_millis(50);
/// ssh's own limit for the TCP connection to the host (seconds).
const CONNECT_TIMEOUT_SECS: u32 = 10;
/// A host that stops answering is given up after 3 keep-alives 10 s apart; ssh then exits and
/// the tunnel is restarted.
const ALIVE_INTERVAL_SECS: u32 = 10;
const ALIVE_COUNT: u32 = 3;
/// Restart back-off: doubles from the first delay up to the last; reset once a tunnel has stayed
/// up for `STABLE`.
const RESTART_FIRST: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);
const STABLE: Duration = Duration::from_secs(60);
/// How much of ssh's stderr is kept for messages.
const STDERR_TAIL: usize = 2048;
/// `sun_path` holds 108 bytes with the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// What ssh said before it exited: logged as an error's source, never returned by the API.
#[derive(Debug, thiserror::Error)]
#[error("ssh {status}: {stderr}")]
pub(super) struct SshExited {
    status: ExitStatus,
    stderr: String,
}

/// A running ssh forwarding a local socket to the daemon's.
pub(super) struct Tunnel {
    socket: PathBuf,
    /// The current ssh process's pid, 0 while it is being restarted.
    pid: Arc<AtomicU32>,
    supervisor: JoinHandle<()>,
    /// Removed (with the socket) when the tunnel is dropped.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel").field("socket", &self.socket).field("pid", &self.pid()).finish()
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        // The task owns the ssh child; dropping it kills the process.
        self.supervisor.abort();
    }
}

impl Tunnel {
    /// Starts ssh and waits (at most [`READY_TIMEOUT`]) until the local socket accepts
    /// connections. `shown` is the address for messages.
    pub(super) async fn open(target: &SshTarget, shown: &str) -> Result<Tunnel> {
        let dir = tempfile::Builder::new()
            .prefix("porthole-ssh-")
            .tempdir()
            .map_err(|e| EngineError::internal("cannot create a directory for the SSH tunnel", e))?;
        // tempfile creates it 0700 already; say so rather than rely on it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| EngineError::internal("cannot protect the SSH tunnel's directory", e))?;
        let socket = dir.path().join("docker.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(EngineError::invalid(format!(
                "the temporary directory is too deep for a unix socket ({}); set TMPDIR to a shorter path",
                socket.display()
            )));
        }
        let running = start(target, &socket, shown).await?;
        let pid = Arc::new(AtomicU32::new(running.child.id().unwrap_or(0)));
        tracing::info!("docker: SSH tunnel to {shown} on {}", socket.display());
        let supervisor =
            tokio::spawn(supervise(running, target.clone(), socket.clone(), pid.clone(), shown.to_string()));
        Ok(Tunnel { socket, pid, supervisor, _dir: dir })
    }

    /// The local end: a unix socket that reaches the remote daemon.
    pub(super) fn socket(&self) -> &Path {
        &self.socket
    }

    /// The pid of the ssh process forwarding now, if one is running.
    pub(super) fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::Relaxed)).filter(|pid| *pid != 0)
    }
}

/// ssh's command line (without the program).
fn ssh_args(target: &SshTarget, socket: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut option = |text: String| {
        args.push("-o".into());
        args.push(text.into());
    };
    // Never prompt (for a passphrase, a password or an unknown host key): fail instead.
    option("BatchMode=yes".into());
    option("ExitOnForwardFailure=yes".into());
    option(format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"));
    option(format!("ServerAliveInterval={ALIVE_INTERVAL_SECS}"));
    option(format!("ServerAliveCountMax={ALIVE_COUNT}"));
    // A socket left by an ssh that was killed is replaced rather than failing the bind.
    option("StreamLocalBindUnlink=yes".into());
    // A connection of its own, not one multiplexed through a user's control master: killing this
    // ssh must end this tunnel and nothing else, and a dead master must not take it along.
    option("ControlMaster=no".into());
    option("ControlPath=none".into());
    if let Some(known_hosts) = &target.known_hosts {
        option(format!("UserKnownHostsFile={}", known_hosts.display()));
    }
    if let Some(identity) = &target.identity {
        // Only this key, not every key an agent holds (servers stop after a few attempts).
        option("IdentitiesOnly=yes".into());
        args.push("-i".into());
        args.push(identity.into());
    }
    if let Some(config) = &target.config {
        args.push("-F".into());
        args.push(config.into());
    }
    if let Some(port) = target.port {
        args.push("-p".into());
        args.push(port.to_string().into());
    }
    if let Some(user) = &target.user {
        args.push("-l".into());
        args.push(user.into());
    }
    let mut forward = OsString::from(socket);
    forward.push(":");
    forward.push(&target.remote_socket);
    // -n: no stdin, -N: no remote command, -T: no terminal.
    args.extend(["-n", "-N", "-T", "-L"].map(OsString::from));
    args.push(forward);
    args.push("--".into());
    args.push(target.host.clone().into());
    args
}

/// One ssh process and what it has said on stderr.
struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: JoinHandle<()>,
}

impl Running {
    async fn said(&mut self) -> String {
        // Its stderr closes with it; a process it started could keep the pipe open, hence the bound.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.reader).await;
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).trim().to_string()
    }
}

async fn read_stderr(stderr: ChildStderr, tail: Arc<Mutex<String>>, shown: String) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!("docker: ssh to {shown}: {line}");
        let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.push_str(&line);
        tail.push('\n');
        if tail.len() > STDERR_TAIL {
            let mut cut = tail.len() - STDERR_TAIL;
            while !tail.is_char_boundary(cut) {
                cut += 1;
            }
            tail.drain(..cut);
        }
    }
}

/// Starts ssh and waits until the forwarded socket accepts a connection.
async fn start(target: &SshTarget, socket: &Path, shown: &str) -> Result<Running> {
    let _ = std::fs::remove_file(socket);
    let mut child = Command::new("ssh")
        .args(ssh_args(target, socket))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                EngineError::unavailable(format!("cannot reach {shown}: ssh is not installed (openssh-client)"))
                    .with_source(e)
            } else {
                EngineError::internal("cannot start ssh", e)
            }
        })?;
    let stderr = Arc::new(Mutex::new(String::new()));
    let reader = match child.stderr.take() {
        Some(pipe) => tokio::spawn(read_stderr(pipe, stderr.clone(), shown.to_string())),
        None => tokio::spawn(async {}),
    };
    let mut running = Running { child, stderr, reader };
    let began = Instant::now();
    loop {
        match running.child.try_wait() {
            Ok(Some(status)) => {
                let said = running.said().await;
                return Err(exit_error(shown, status, said));
            }
            Ok(None) => {}
            Err(e) => return Err(EngineError::internal("cannot watch the ssh process", e)),
        }
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Ok(running);
        }
        if began.elapsed() >= READY_TIMEOUT {
            // Dropping `running` kills ssh.
            let said = running.stderr.lock().unwrap_or_else(|e| e.into_inner()).trim().to_string();
            return Err(EngineError::unavailable(format!(
                "cannot open the SSH tunnel to {shown}: no forwarded socket after {} s",
                READY_TIMEOUT.as_secs()
            ))
            .with_source(std::io::Error::other(said)));
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Why ssh gave up, in words, from what it printed (the whole text goes to the logs).
fn exit_error(shown: &str, status: ExitStatus, said: String) -> EngineError {
    let why = if said.contains("Host key verification failed") || said.contains("HOST IDENTIFICATION HAS CHANGED") {
        "the host's SSH key is not known or does not match (add it to known_hosts, or give known-hosts=)".to_string()
    } else if said.contains("Permission denied") || said.contains("Too many authentication failures") {
        "the SSH server refused the login (check the key: identity=, ~/.ssh/config or the agent)".to_string()
    } else if said.contains("Could not resolve hostname") {
        "the host name does not resolve".to_string()
    } else if ["Connection refused", "timed out", "No route to host", "Network is unreachable", "Connection closed"]
        .iter()
        .any(|s| said.contains(s))
    {
        "the SSH server cannot be reached".to_string()
    } else if said.contains("forwarding") || said.contains("listen") {
        "ssh could not forward the Docker socket".to_string()
    } else {
        format!("ssh exited ({status})")
    };
    EngineError::unavailable(format!("cannot open the SSH tunnel to {shown}: {why}"))
        .with_source(SshExited { status, stderr: said })
}

/// Keeps the tunnel up for as long as the engine holds it: when ssh exits it is started again on
/// the same socket, with back-off.
async fn supervise(mut running: Running, target: SshTarget, socket: PathBuf, pid: Arc<AtomicU32>, shown: String) {
    let mut delay = RESTART_FIRST;
    let mut up_since = Instant::now();
    loop {
        let status = running.child.wait().await;
        pid.store(0, Ordering::Relaxed);
        let said = running.said().await;
        let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
        tracing::warn!("docker: the SSH tunnel to {shown} ended ({status}; ssh said: {said:?}); starting it again");
        if up_since.elapsed() >= STABLE {
            delay = RESTART_FIRST;
        }
        running = loop {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RESTART_MAX);
            match start(&target, &socket, &shown).await {
                Ok(running) => break running,
                Err(e) => tracing::warn!("docker: {}", e.detail()),
            }
        };
        up_since = Instant::now();
        pid.store(running.child.id().unwrap_or(0), Ordering::Relaxed);
        tracing::info!("docker: the SSH tunnel to {shown} is up again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::address::{AddressKind, DockerAddress};

    fn target(address: &str) -> SshTarget {
        match DockerAddress::parse(address).unwrap().kind {
            AddressKind::Ssh(target) => target,
            other => panic!("{other:?}"),
        }
    }

    fn args(address: &str) -> Vec<String> {
        ssh_args(&target(address), Path::new("/tmp/p/docker.sock")).iter().map(|a| a.to_string_lossy().into()).collect()
    }

    #[test]
    fn the_command_line_keeps_host_key_checking_and_ends_options_before_the_host() {
        let plain = args("ssh://me@host.example");
        assert!(plain.windows(2).any(|w| w == ["-o", "BatchMode=yes"]));
        assert!(plain.windows(2).any(|w| w == ["-L", "/tmp/p/docker.sock:/var/run/docker.sock"]));
        assert!(plain.windows(2).any(|w| w == ["-l", "me"]));
        assert_eq!(&plain[plain.len() - 2..], ["--", "host.example"]);
        assert!(!plain.iter().any(|a| a.contains("StrictHostKeyChecking")), "never weakened");
        assert!(!plain.iter().any(|a| a == "-i" || a == "-F" || a == "-p"));

        let full = args("ssh://h:2222/run/d.sock?identity=/k/id&known-hosts=/k/kh&config=/k/cfg");
        for pair in [["-i", "/k/id"], ["-F", "/k/cfg"], ["-p", "2222"], ["-o", "UserKnownHostsFile=/k/kh"]] {
            assert!(full.windows(2).any(|w| w == pair), "{pair:?} in {full:?}");
        }
        assert!(full.iter().any(|a| a == "IdentitiesOnly=yes"));
        assert!(full.iter().any(|a| a == "/tmp/p/docker.sock:/run/d.sock"));
    }

    #[tokio::test]
    async fn a_login_that_fails_says_why_and_leaves_nothing_behind() {
        // Nothing listens on port 1: ssh exits at once, with its words in the log only.
        let target = target("ssh://nobody@127.0.0.1:1");
        let err = match Tunnel::open(&target, "ssh://nobody@127.0.0.1:1").await {
            Ok(_) => panic!("a tunnel to a closed port"),
            Err(err) => err,
        };
        assert_eq!(err.kind(), crate::api::ErrorKind::Unavailable, "{}", err.detail());
        assert!(err.message().contains("ssh://nobody@127.0.0.1:1"), "{}", err.detail());
    }
}
