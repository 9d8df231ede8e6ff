//! Docker daemons of a test's own (`engines.rs`, `engines_remote.rs`): separate socket, data
//! root, exec root and pid file, no bridge of their own and no iptables rules (the tests use
//! network modes none and host), as `scripts/test.sh` starts its daemon. Extra `dockerd` arguments add
//! listeners, such as TCP with TLS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use porthole_engine::docker::DockerEngine;
use porthole_engine::Engine;

/// A Docker daemon of this test's own.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    extra: Vec<String>,
}

impl Daemon {
    pub fn start(dir: &Path) -> Daemon {
        Daemon::start_with(dir, &[])
    }

    /// A daemon that also gets `extra` arguments (e.g. `-H tcp://...` with `--tlsverify`).
    pub fn start_with(dir: &Path, extra: &[String]) -> Daemon {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("docker.sock");
        let mut daemon = Daemon { child: None, dir: dir.to_path_buf(), socket, extra: extra.to_vec() };
        daemon.spawn();
        daemon
    }

    /// The daemon's own unix socket.
    pub fn address(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::File::create(self.dir.join("dockerd.log")).unwrap();
        let mut command = Command::new("dockerd");
        command
            .arg("--host")
            .arg(self.address())
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("docker.pid"))
            .args(["--iptables=false", "--ip6tables=false"])
            .args(bridge_option())
            .args(&self.extra);
        if let Ok(driver) = std::env::var("PORTHOLE_TEST_DOCKER_STORAGE_DRIVER") {
            command.arg("--storage-driver").arg(driver);
        }
        let child = command.stdout(Stdio::null()).stderr(log).spawn().expect("dockerd starts");
        self.child = Some(child);
    }

    /// Waits (at most a minute) until the daemon answers on its unix socket.
    pub async fn wait_ready(&self) {
        let began = Instant::now();
        loop {
            if let Ok(engine) = DockerEngine::connect(&self.address()).await {
                if engine.info().await.is_ok() {
                    return;
                }
            }
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "dockerd at {} did not answer; log: {}",
                self.address(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
            let began = Instant::now();
            while began.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// No bridge for the test's daemon, unless the host has Docker's default bridge: a daemon
/// started with `--bridge=none` deletes `docker0` (the network namespace is shared), cutting the
/// containers of the host's own Docker off their network. Where `docker0` exists the daemon
/// takes it as it is instead (its address, no iptables rules); the tests never put a container
/// on a bridge network.
pub fn bridge_option() -> Option<&'static str> {
    (!Path::new("/sys/class/net/docker0").exists()).then_some("--bridge=none")
}

/// Whether `dockerd` can be run here. Without it the test fails under CI (`CI` or
/// `PORTHOLE_REQUIRE_DOCKER=1`) and is skipped, saying so, elsewhere.
pub fn dockerd_available() -> bool {
    let found = Command::new("dockerd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if found.is_ok_and(|s| s.success()) {
        return true;
    }
    let required = std::env::var_os("CI").is_some_and(|v| !v.is_empty())
        || std::env::var("PORTHOLE_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    assert!(!required, "dockerd is not installed, but CI/PORTHOLE_REQUIRE_DOCKER requires this test");
    eprintln!("skipped: no dockerd on this machine");
    false
}
