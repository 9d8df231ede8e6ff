//! Shared by the image tests: a real `docker-registry` on 127.0.0.1 (a generated config, a
//! random free port, a temp dir, stopped on drop), test images written as OCI layouts from
//! busybox-static, `skopeo` to push them, and small helpers around the native engine.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use porthole_engine::api::*;
use porthole_engine::native::{NativeConfig, NativeEngine};
use sha2::{Digest, Sha256};

pub async fn open(root: &Path) -> NativeEngine {
    NativeEngine::open(NativeConfig {
        root: root.to_path_buf(),
        shim_exe: env!("CARGO_BIN_EXE_porthole").into(),
        starter_image: false,
    })
    .await
    .expect("the native engine opens")
}

pub fn temp_root() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("phi").tempdir_in("/tmp").unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits (bounded) until something accepts connections on `port`.
pub fn wait_for_port(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the process listening on {port} exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port} after 15 s");
}

/// How the test registry authenticates.
pub enum RegistryAuth {
    None,
    /// `auth: token` against a token server at `realm`, trusting `cert` (PEM).
    Token {
        realm: String,
        service: String,
        issuer: String,
        cert: PathBuf,
    },
}

/// A `docker-registry` process serving from a temp dir on 127.0.0.1.
pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Registry {
    pub fn start(auth: RegistryAuth) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let auth = match auth {
            RegistryAuth::None => String::new(),
            RegistryAuth::Token { realm, service, issuer, cert } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                cert.display()
            ),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed (scripts/install-deps.sh)");
        wait_for_port(port, &mut child);
        Registry { port, dir, child }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file the registry serves for blob `digest`.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.path().join(format!("data/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs skopeo (bounded in time by its own timeouts; the registry is local).
pub fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(["--command-timeout", "120s"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("skopeo is installed (scripts/install-deps.sh)");
    assert!(out.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    let mut child = Command::new("zstd")
        .args(["-q", "-c", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd is installed");
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A layer tar under construction. Entries are written with raw headers, so tests can put
/// anything in them.
pub struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerTar {
    pub fn new() -> Self {
        LayerTar { builder: tar::Builder::new(Vec::new()) }
    }

    fn header(kind: tar::EntryType, path: &str, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        // Raw bytes: the tar crate's own setters refuse `..` and absolute paths.
        let name = &mut h.as_old_mut().name;
        assert!(path.len() < name.len(), "test paths fit the old header");
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h
    }

    pub fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, path, mode, data.len() as u64);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, path, mode, 0);
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    fn link(mut self, kind: tar::EntryType, path: &str, target: &str) -> Self {
        let mut h = Self::header(kind, path, 0o777, 0);
        let linkname = &mut h.as_old_mut().linkname;
        linkname.fill(0);
        linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.link(tar::EntryType::Symlink, path, target)
    }

    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.link(tar::EntryType::Link, path, target)
    }

    pub fn device(mut self, path: &str, char: bool, major: u32, minor: u32) -> Self {
        let kind = if char { tar::EntryType::Char } else { tar::EntryType::Block };
        let mut h = Self::header(kind, path, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    /// busybox-static as `/bin/busybox` with the applets a test uses, `/etc/passwd`, `/tmp`.
    pub fn busybox(self) -> Self {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .expect("busybox-static is installed (scripts/install-deps.sh)");
        let mut t = self.dir("bin/", 0o755).file("bin/busybox", 0o755, &busybox);
        for applet in ["sh", "ls", "cat", "echo", "test", "id", "sleep", "true", "wc", "grep", "pwd"] {
            t = t.symlink(&format!("bin/{applet}"), "/bin/busybox");
        }
        t.dir("etc/", 0o755)
            .file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
            .file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")
            .dir("tmp/", 0o1777)
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// A layer as it goes into a layout: the blob (maybe compressed) and the diff id.
pub struct Layer {
    pub blob: Vec<u8>,
    pub diff_id: String,
    pub media_type: &'static str,
}

impl Layer {
    pub fn gzip(tar: Vec<u8>) -> Layer {
        Layer { diff_id: sha256(&tar), blob: gzip(&tar), media_type: "application/vnd.oci.image.layer.v1.tar+gzip" }
    }
    pub fn zstd(tar: Vec<u8>) -> Layer {
        Layer { diff_id: sha256(&tar), blob: zstd(&tar), media_type: "application/vnd.oci.image.layer.v1.tar+zstd" }
    }
    pub fn plain(tar: Vec<u8>) -> Layer {
        Layer { diff_id: sha256(&tar), blob: tar, media_type: "application/vnd.oci.image.layer.v1.tar" }
    }
}

/// An OCI image layout directory being written.
pub struct OciLayout {
    pub dir: PathBuf,
    index: Vec<serde_json::Value>,
}

impl OciLayout {
    pub fn new(dir: &Path) -> OciLayout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        OciLayout { dir: dir.to_path_buf(), index: Vec::new() }
    }

    /// Stores a blob and returns its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> serde_json::Value {
        let digest = sha256(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(&digest[7..]), bytes).unwrap();
        serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
    }

    /// Stores an image (config from `run`, for `arch`) and returns its manifest descriptor.
    pub fn image(&self, layers: &[Layer], arch: &str, run: serde_json::Value) -> serde_json::Value {
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "created": "2024-01-02T03:04:05Z",
            "config": run,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
            "history": layers.iter().enumerate().map(|(i, _)| serde_json::json!({
                "created": "2024-01-02T03:04:05Z", "created_by": format!("step {i}")
            })).collect::<Vec<_>>(),
        });
        let config = self.blob("application/vnd.oci.image.config.v1+json", config.to_string().as_bytes());
        let layer_descs: Vec<_> = layers.iter().map(|l| self.blob(l.media_type, &l.blob)).collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layer_descs,
        });
        self.blob("application/vnd.oci.image.manifest.v1+json", manifest.to_string().as_bytes())
    }

    /// A multi-platform index over `(manifest descriptor, arch)` pairs; returns its descriptor.
    pub fn platforms(&self, images: &[(serde_json::Value, &str)]) -> serde_json::Value {
        let manifests: Vec<_> = images
            .iter()
            .map(|(desc, arch)| {
                let mut d = desc.clone();
                d["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
                d
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        self.blob("application/vnd.oci.image.index.v1+json", index.to_string().as_bytes())
    }

    /// Names `desc` as `name` in index.json.
    pub fn tag(&mut self, desc: &serde_json::Value, name: &str) {
        let mut d = desc.clone();
        d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": name});
        self.index.push(d);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": self.index});
        std::fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }

    /// Pushes the image named `name` in this layout to `dest` (`host:port/repo:tag`).
    pub fn push(&self, name: &str, dest: &str, all: bool, creds: Option<&str>) {
        let src = format!("oci:{}:{name}", self.dir.display());
        let dst = format!("docker://{dest}");
        let mut args = vec!["copy", "--dest-tls-verify=false"];
        if all {
            args.push("--all");
        }
        if let Some(c) = creds {
            args.extend(["--dest-creds", c]);
        }
        args.extend([src.as_str(), dst.as_str()]);
        skopeo(&args);
    }
}

/// Runs a pull to the end and returns every progress item, or the error.
pub async fn pull(engine: &impl Images, reference: &str, options: PullOptions) -> Result<Vec<PullProgress>> {
    let mut stream = engine.pull_image(reference, options).await?;
    let mut items = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next()).await.expect("the pull ends within 120 s");
        match next {
            Some(Ok(item)) => items.push(item),
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    assert!(matches!(items.last(), Some(PullProgress::Done { .. })), "a pull ends with Done: {items:?}");
    Ok(items)
}

/// Runs `cmd` in a container of `image` and returns its output (bounded wait).
pub async fn run(engine: &NativeEngine, image: &str, script: &str) -> String {
    let config = ContainerConfig {
        image: image.into(),
        cmd: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
        ..Default::default()
    };
    let id = engine.create_container(config).await.expect("create");
    if let Err(e) = engine.start_container(&id).await {
        let log = std::fs::read_to_string(engine.layout().shim_log(&id)).unwrap_or_default();
        panic!("start: {}\nshim log:\n{log}", e.detail());
    }
    let code = tokio::time::timeout(Duration::from_secs(60), engine.wait_container(&id))
        .await
        .expect("the container exits within 60 s")
        .unwrap();
    let mut logs = engine.logs(&id, LogOptions { stdout: true, stderr: true, ..Default::default() }).await.unwrap();
    let mut out = Vec::new();
    while let Some(Ok(record)) = logs.next().await {
        out.extend_from_slice(&record.data);
    }
    engine.remove_container(&id, RemoveOptions { force: true, volumes: true }).await.unwrap();
    assert_eq!(code, 0, "the container failed: {}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&out).into_owned()
}

/// Every path under `dir` (relative), sorted: to show that nothing appeared or vanished.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The `docker` client, pointed at the test daemon when `PORTHOLE_TEST_DOCKER_HOST` names one
/// (scripts/test.sh starts its own daemon there) and at the client's default otherwise.
pub struct DockerCli {
    host: Option<String>,
}

impl DockerCli {
    /// The client when a daemon answers it. `None` when none does and that is allowed; under
    /// CI or `PORTHOLE_REQUIRE_DOCKER=1` a missing daemon fails the caller instead of skipping.
    pub fn find() -> Option<DockerCli> {
        let host = std::env::var("PORTHOLE_TEST_DOCKER_HOST").ok().filter(|h| !h.is_empty());
        let cli = DockerCli { host };
        let answers = cli
            .command()
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let required = std::env::var_os("CI").is_some_and(|v| !v.is_empty())
            || std::env::var("PORTHOLE_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
        assert!(
            answers || !required,
            "no Docker daemon answers the docker client (DOCKER_HOST={:?}), but CI/PORTHOLE_REQUIRE_DOCKER requires \
             the Docker round trips: run the tests through scripts/test.sh, which starts a daemon",
            cli.host
        );
        answers.then_some(cli)
    }

    /// A `docker` command for this daemon.
    pub fn command(&self) -> Command {
        let mut command = Command::new("docker");
        if let Some(host) = &self.host {
            command.env("DOCKER_HOST", host);
        }
        command
    }

    /// Runs `docker args…` and returns its stdout; panics with its stderr when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
        assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
