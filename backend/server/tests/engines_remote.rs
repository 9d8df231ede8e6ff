//! Remote Docker daemons, for real: a daemon of the test's own listening on 127.0.0.1 with TLS
//! client certificates (`--tlsverify`, a CA and certificates made with `openssl`), and a daemon
//! reached through an `sshd` of the test's own (own host key, own authorized key, own
//! known_hosts). Containers run and terminals (exec and attach, the engine's hijacked
//! connections) carry bytes both ways over each; bad certificates, an unknown host key and a
//! refused key fail with clear errors; a killed ssh is replaced by the engine by itself, and
//! nothing (process, socket) is left once the engine is gone.
//!
//! Needs root, Debian's `docker.io` (`dockerd`), `openssl`, `openssh-client` and
//! `openssh-server` (`scripts/install-deps.sh` installs them). Without `dockerd` the tests fail
//! under CI (`CI` or `PORTHOLE_REQUIRE_DOCKER=1`) and are skipped, saying so, elsewhere; so are
//! the SSH tests without ssh and sshd.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dockerd::{dockerd_available, Daemon};
use common::LIMIT;
use futures::StreamExt;
use porthole::engines::{EngineSet, EngineSpec};
use porthole_engine::api::{
    AttachOptions, ContainerConfig, Containers, ExecConfig, ProcessIo, RemoveOptions, Terminals,
};
use porthole_engine::docker::DockerEngine;
use porthole_engine::{Engine, EngineError, ErrorKind};
use tokio::io::AsyncWriteExt;

const IMAGE: &str = "busybox:latest";

/// Runs a tool that must succeed.
fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(output.status.success(), "{command:?}: {}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
        || std::env::var("PORTHOLE_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

/// A key and a certificate signed by `ca` (self-signed when `None`), with these extensions.
fn certificate(dir: &Path, name: &str, ca: Option<&str>, extensions: &str) {
    let key = dir.join(format!("{name}-key.pem"));
    let cert = dir.join(format!("{name}-cert.pem"));
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, extensions).unwrap();
    let subject = format!("/CN=porthole-test-{name}");
    let curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    match ca {
        None => run(Command::new("openssl")
            .args(["req", "-x509", "-days", "2", "-subj", &subject])
            .args(curve)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .arg("-extensions")
            .arg("v3")
            .arg("-config")
            .arg(config_with(dir, name, extensions))),
        Some(ca) => {
            let csr = dir.join(format!("{name}.csr"));
            run(Command::new("openssl")
                .args(["req", "-new", "-subj", &subject])
                .args(curve)
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr));
            run(Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-set_serial", &format!("{}", rand_serial())])
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(dir.join(format!("{ca}-cert.pem")))
                .arg("-CAkey")
                .arg(dir.join(format!("{ca}-key.pem")))
                .arg("-out")
                .arg(&cert)
                .arg("-extfile")
                .arg(&ext));
        }
    }
}

/// A minimal openssl configuration whose `v3` section holds `extensions` (for self-signed CAs).
fn config_with(dir: &Path, name: &str, extensions: &str) -> PathBuf {
    let path = dir.join(format!("{name}.cnf"));
    std::fs::write(&path, format!("[req]\ndistinguished_name = dn\n[dn]\n[v3]\n{extensions}")).unwrap();
    path
}

fn rand_serial() -> u64 {
    use std::time::SystemTime;
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64 & 0x7fff_ffff_ffff
}

const CA_EXT: &str = "basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n";

/// The test's PKI: a CA, the daemon's certificate (for IP 127.0.0.1), a client certificate,
/// and a second CA that signed neither.
fn make_pki(dir: &Path) {
    certificate(dir, "ca", None, CA_EXT);
    certificate(dir, "other-ca", None, CA_EXT);
    certificate(
        dir,
        "server",
        Some("ca"),
        "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\nkeyUsage = critical, digitalSignature\n",
    );
    certificate(dir, "client", Some("ca"), "extendedKeyUsage = clientAuth\nkeyUsage = critical, digitalSignature\n");
    // The client's files as Docker's DOCKER_CERT_PATH lays them out, for `tls-dir=`.
    let client = dir.join("client");
    std::fs::create_dir_all(&client).unwrap();
    for (from, to) in [("ca-cert.pem", "ca.pem"), ("client-cert.pem", "cert.pem"), ("client-key.pem", "key.pem")] {
        std::fs::copy(dir.join(from), client.join(to)).unwrap();
    }
}

/// Types a command into a shell on `io` and waits for its output (the echoed command line
/// itself does not contain the expected text).
async fn round_trip(io: &mut ProcessIo, marker: u32, what: &str) {
    let input = io.input.as_mut().expect("the terminal takes input");
    input.write_all(format!("echo remote-$(({marker}+1))\n").as_bytes()).await.unwrap();
    input.flush().await.unwrap();
    let expected = format!("remote-{}", marker + 1);
    let mut seen = Vec::new();
    let began = Instant::now();
    while !String::from_utf8_lossy(&seen).contains(&expected) {
        assert!(began.elapsed() < LIMIT, "{what}: no {expected}: {}", String::from_utf8_lossy(&seen));
        match tokio::time::timeout(LIMIT, io.output.next()).await.expect("terminal output in time") {
            Some(Ok(chunk)) => seen.extend_from_slice(&chunk.data),
            other => panic!("{what}: the terminal ended: {other:?}"),
        }
    }
}

/// An exec shell with a TTY on `container`, one command through it.
async fn exec_round_trip(engine: &DockerEngine, container: &str, marker: u32, what: &str) {
    let config = ExecConfig { cmd: vec!["sh".into()], tty: true, ..Default::default() };
    let exec = engine.create_exec(container, config).await.unwrap_or_else(|e| panic!("{what}: {}", e.detail()));
    let mut io = engine.start_exec(&exec).await.unwrap_or_else(|e| panic!("{what}: {}", e.detail()));
    round_trip(&mut io, marker, what).await;
}

/// A running `sleep` container and a running interactive `sh` (TTY, stdin open).
async fn containers(engine: &DockerEngine) -> (String, String) {
    let sleeper =
        ContainerConfig { image: IMAGE.into(), cmd: Some(vec!["sleep".into(), "600".into()]), ..Default::default() };
    let sleeper = engine.create_container(sleeper).await.unwrap_or_else(|e| panic!("{}", e.detail()));
    engine.start_container(&sleeper).await.unwrap();
    let shell = ContainerConfig {
        image: IMAGE.into(),
        cmd: Some(vec!["sh".into()]),
        tty: true,
        open_stdin: true,
        ..Default::default()
    };
    let shell = engine.create_container(shell).await.unwrap();
    engine.start_container(&shell).await.unwrap();
    (sleeper, shell)
}

async fn remove(engine: &DockerEngine, ids: &[&str]) {
    for id in ids {
        engine.remove_container(id, RemoveOptions { force: true, volumes: true }).await.unwrap();
    }
}

async fn connect_err(address: &str) -> EngineError {
    match DockerEngine::connect(address).await {
        Ok(_) => panic!("{address}: connected"),
        Err(err) => err,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    if !dockerd_available() {
        return;
    }
    let root = tempfile::Builder::new().prefix("phr").tempdir_in("/tmp").unwrap();
    let pki = root.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_pki(&pki);
    let port = free_port();
    let file = |name: &str| pki.join(name).display().to_string();
    let daemon = Daemon::start_with(
        &root.path().join("docker"),
        &[
            "--tlsverify".into(),
            format!("--tlscacert={}", file("ca-cert.pem")),
            format!("--tlscert={}", file("server-cert.pem")),
            format!("--tlskey={}", file("server-key.pem")),
            format!("--host=tcp://127.0.0.1:{port}"),
        ],
    );
    daemon.wait_ready().await;
    let local = DockerEngine::connect(&daemon.address()).await.unwrap();
    local.ensure_busybox_image(IMAGE).await.unwrap().expect("busybox on this host");

    // The right CA and client certificate, from a DOCKER_CERT_PATH-style directory.
    let address = format!("tcp://127.0.0.1:{port}?tls-dir={}", pki.join("client").display());
    let engine = DockerEngine::connect(&address)
        .await
        .unwrap_or_else(|e| panic!("{address}: {}\ndockerd: {}", e.detail(), daemon.log()));
    assert!(format!("{engine:?}").contains("(TLS)"), "{engine:?}");
    engine.info().await.unwrap();
    let (sleeper, shell) = containers(&engine).await;
    // Both hijacked connections, over TLS: an exec and an attach.
    exec_round_trip(&engine, &sleeper, 10, "exec over TLS").await;
    let mut attached = engine.attach(&shell, AttachOptions::default()).await.unwrap();
    round_trip(&mut attached, 20, "attach over TLS").await;
    // The same files given one by one.
    let files = format!(
        "tcp://127.0.0.1:{port}?ca={}&cert={}&key={}",
        file("ca-cert.pem"),
        file("client-cert.pem"),
        file("client-key.pem")
    );
    let by_files = DockerEngine::connect(&files).await.unwrap_or_else(|e| panic!("{}", e.detail()));
    exec_round_trip(&by_files, &sleeper, 30, "exec over TLS, files one by one").await;

    // No client certificate: the daemon refuses, and the error says what is missing.
    let err = connect_err(&format!("tcp://127.0.0.1:{port}?ca={}", file("ca-cert.pem"))).await;
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.detail());
    assert!(err.message().contains("client certificate"), "{}", err.detail());

    // A CA that did not sign the daemon's certificate: refused on this side.
    let wrong_ca = format!(
        "tcp://127.0.0.1:{port}?ca={}&cert={}&key={}",
        file("other-ca-cert.pem"),
        file("client-cert.pem"),
        file("client-key.pem")
    );
    let err = connect_err(&wrong_ca).await;
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.detail());
    assert!(err.message().contains("not signed by the configured CA"), "{}", err.detail());

    // Files that are missing or do not fit: invalid, the file named (its path only in the detail).
    let missing = pki.join("absent");
    let err = connect_err(&format!("tcp://127.0.0.1:{port}?tls-dir={}", missing.display())).await;
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{}", err.detail());
    assert!(err.message().contains("CA certificate (ca=) does not exist"), "{}", err.message());
    assert!(!err.message().contains("absent"), "{}", err.message());
    assert!(err.detail().contains(&missing.join("ca.pem").display().to_string()), "{}", err.detail());
    let mismatched = format!(
        "tcp://127.0.0.1:{port}?ca={}&cert={}&key={}",
        file("ca-cert.pem"),
        file("client-cert.pem"),
        file("server-key.pem")
    );
    let err = connect_err(&mismatched).await;
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{}", err.detail());
    assert!(err.message().contains("client key (key=) does not belong"), "{}", err.detail());

    // Plain HTTP to the TLS port gets nowhere.
    assert!(DockerEngine::connect(&format!("tcp://127.0.0.1:{port}")).await.is_err());

    drop(attached);
    remove(&engine, &[&sleeper, &shell]).await;
}

/// An sshd of the test's own on 127.0.0.1: its own host key, one authorized key.
struct Sshd {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Sshd {
    fn start(dir: &Path, authorized: &Path) -> Sshd {
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(dir.join("host_key")));
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nAllowStreamLocalForwarding yes\n\
                 LogLevel VERBOSE\n",
                dir.join("host_key").display(),
                dir.join("sshd.pid").display(),
                authorized.display()
            ),
        )
        .unwrap();
        // sshd refuses to start without its privilege separation directory (normally made by
        // the service's unit, which the test does not use).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd starts");
        let mut sshd = Sshd { child, dir: dir.to_path_buf(), port };
        let began = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(sshd.child.try_wait().unwrap().is_none(), "sshd exited: {}", sshd.log());
            assert!(began.elapsed() < LIMIT, "sshd does not listen: {}", sshd.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// A known_hosts line for this server.
    fn known_host(&self) -> String {
        let public = std::fs::read_to_string(self.dir.join("host_key.pub")).unwrap();
        let mut fields = public.split_whitespace();
        format!("[127.0.0.1]:{} {} {}\n", self.port, fields.next().unwrap(), fields.next().unwrap())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ssh_available() -> bool {
    let found = Path::new("/usr/sbin/sshd").exists()
        && Command::new("ssh").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        assert!(!required(), "ssh or sshd is not installed, but CI/PORTHOLE_REQUIRE_DOCKER requires this test");
        eprintln!("skipped: no ssh/sshd on this machine (openssh-client, openssh-server)");
    }
    found
}

/// Whether a process runs (a zombie, dead but not yet reaped, does not count).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The local socket an ssh forwards (`-L local:remote`), from its command line.
fn forwarded_socket(pid: u32) -> PathBuf {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let forward = args.iter().skip_while(|a| *a != "-L").nth(1).expect("ssh -L");
    PathBuf::from(forward.split_once(':').unwrap().0)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(began.elapsed() < LIMIT, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_tunnel_runs_terminals_and_comes_back_after_ssh_dies() {
    if !dockerd_available() || !ssh_available() {
        return;
    }
    let root = tempfile::Builder::new().prefix("phs").tempdir_in("/tmp").unwrap();
    let daemon = Daemon::start(&root.path().join("docker"));
    daemon.wait_ready().await;
    DockerEngine::connect(&daemon.address()).await.unwrap().ensure_busybox_image(IMAGE).await.unwrap();

    let keys = root.path().join("ssh");
    std::fs::create_dir_all(&keys).unwrap();
    for name in ["id", "stranger"] {
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(keys.join(name)));
    }
    let sshd = Sshd::start(&keys, &keys.join("id.pub"));
    std::fs::write(keys.join("known_hosts"), sshd.known_host()).unwrap();
    std::fs::write(keys.join("no_known_hosts"), "").unwrap();
    // A client configuration of the test's own, so root's ~/.ssh/config plays no part.
    std::fs::write(keys.join("empty_config"), "").unwrap();
    std::fs::write(
        keys.join("config"),
        format!(
            "Host 127.0.0.1\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n",
            keys.join("id").display(),
            keys.join("known_hosts").display()
        ),
    )
    .unwrap();
    let k = |name: &str| keys.join(name).display().to_string();
    let base = format!("ssh://root@127.0.0.1:{}{}", sshd.port, daemon.socket.display());

    // Host key checking stays on: an unknown host is refused, and so is a key sshd does not know.
    let err = connect_err(&format!(
        "{base}?identity={}&known-hosts={}&config={}",
        k("id"),
        k("no_known_hosts"),
        k("empty_config")
    ))
    .await;
    assert!(err.message().contains("SSH key is not known"), "{}\nsshd: {}", err.detail(), sshd.log());
    let err = connect_err(&format!(
        "{base}?identity={}&known-hosts={}&config={}",
        k("stranger"),
        k("known_hosts"),
        k("empty_config")
    ))
    .await;
    assert!(err.message().contains("refused the login"), "{}\nsshd: {}", err.detail(), sshd.log());

    let address = format!("{base}?identity={}&known-hosts={}&config={}", k("id"), k("known_hosts"), k("empty_config"));
    let engine = DockerEngine::connect(&address)
        .await
        .unwrap_or_else(|e| panic!("{address}: {}\nsshd: {}", e.detail(), sshd.log()));
    let (sleeper, shell) = containers(&engine).await;
    exec_round_trip(&engine, &sleeper, 40, "exec over ssh").await;
    let mut attached = engine.attach(&shell, AttachOptions::default()).await.unwrap();
    round_trip(&mut attached, 50, "attach over ssh").await;

    // The forwarding ssh dies: the engine starts another, and terminals work again.
    let first = engine.ssh_tunnel_pid().expect("an ssh runs");
    let socket = forwarded_socket(first);
    assert!(socket.starts_with(std::env::temp_dir()), "{}", socket.display());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(socket.parent().unwrap()).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "the socket's directory is private");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), nix::sys::signal::SIGKILL).unwrap();
    wait_until("a new ssh after the first was killed", || engine.ssh_tunnel_pid().is_some_and(|p| p != first)).await;
    let began = Instant::now();
    while let Err(err) = engine.info().await {
        assert!(began.elapsed() < LIMIT, "the engine did not come back: {}", err.detail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!alive(first), "the killed ssh is reaped");
    exec_round_trip(&engine, &sleeper, 60, "exec over ssh after a reconnect").await;
    let mut attached_again = engine.attach(&shell, AttachOptions::default()).await.unwrap();
    round_trip(&mut attached_again, 70, "attach over ssh after a reconnect").await;

    // The same daemon through a server's engine set, with the options in an ssh config file:
    // the API shows where, never which files.
    let spec: EngineSpec = format!("remote={base}?config={}", k("config")).parse().unwrap();
    let set =
        EngineSet::open(&[spec], || async { Err::<Arc<dyn Engine>, _>(EngineError::invalid("unused")) }).await.unwrap();
    let status = set.statuses().remove(0);
    assert!(status.available, "{status:?}\nsshd: {}", sshd.log());
    assert_eq!(status.address, base);
    let (_, remote) = set.get(Some("remote")).unwrap();
    let listed = remote.list_containers(false).await.unwrap();
    assert!(listed.iter().any(|c| c.id == sleeper), "the set's engine sees the same daemon");

    // Gone with the engine: its ssh and its socket directory.
    drop(attached);
    drop(attached_again);
    remove(&engine, &[&sleeper, &shell]).await;
    let second = engine.ssh_tunnel_pid().unwrap();
    let socket = forwarded_socket(second);
    drop(engine);
    wait_until("ssh ends with the engine", || !alive(second)).await;
    assert!(!socket.parent().unwrap().exists(), "{} is removed", socket.display());
}
