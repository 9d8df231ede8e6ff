//! The Docker backend's image transfers: pulls (Docker's progress messages as the engine's
//! `PullProgress`), imports (`docker load` / `docker import`, with the archive checked and its
//! format detected here first, as the native engine does), and the registry settings the
//! backend keeps for its pulls.
//!
//! Why the archive is looked at before the daemon sees it: the daemon's own errors for a bad
//! archive name its temp paths and say little about the archive; the native engine's rules
//! (which format, which tags) must hold on both backends; and the test daemon (Docker 20.10)
//! loads only `docker save` archives. An OCI image layout is therefore sent with a generated
//! `manifest.json` (the `docker save` index, pointing at the layout's own blobs), and tags are
//! taken out of an archive when the caller names the image (`ImportOptions::reference`
//! replaces the archive's tags, as in the native engine). Everything is spooled to a temp file
//! (plain tar, decompressed here) so it can be read twice: once to check, once to send.
//!
//! Registry credentials live in this process's memory only: the daemon keeps its own logins
//! (`docker login` on its host) and has no API to store any, so credentials configured through
//! Porthole are sent along with each pull (`X-Registry-Auth`) and forgotten on restart. Whether a
//! registry is plain HTTP is the daemon's decision (`--insecure-registry`); configuring one as
//! insecure is accepted only when the daemon already treats it so.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::models::{CreateImageInfo, ImageHistoryResponseItem};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::convert::docker_error;
use crate::api::{
    ArchiveFormat, EngineError, ErrorKind, ImageHistoryEntry, ImportOptions, LayerDescriptor, LayerPhase,
    LayerProgress, PullProgress, RegistryConfig, RegistryCredentials, RegistrySummary, Result,
};
use crate::native::credentials::normalize_registry;
use crate::native::images::{check_digest, host_architecture, normalize_reference, shorten_reference};
use crate::native::unpack::{clean_path, decompress, Compression};

/// Largest archive an import accepts, compressed or not (the native engine's bound on one
/// unpacked layer): an upload cannot fill the disk the spool lives on.
pub(super) const MAX_IMPORT_BYTES: u64 = 64 << 30;
/// Most entries an archive may have (the native unpacker's bound on one layer).
const MAX_ENTRIES: u64 = 2_000_000;
/// Chunk size of the bodies sent to the daemon.
const CHUNK: usize = 256 << 10;
/// The environment `docker import` images get, as the native engine's rootfs imports do.
const DEFAULT_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Longest daemon message passed on to users.
const MAX_MESSAGE: usize = 300;

use crate::native::archive::{ArchiveFiles, DirFiles, TarFiles};

fn bad(reason: impl std::fmt::Display) -> EngineError {
    EngineError::invalid(format!("bad image archive: {reason}"))
}

/// `docker.io/library/busybox:latest` → (`docker.io/library/busybox`, `latest`); a digest
/// reference gives the digest as the second part (Docker's `tag` parameter takes either).
pub(super) fn split_reference(normal: &str) -> (&str, &str) {
    if let Some((repo, digest)) = normal.split_once('@') {
        return (repo, digest);
    }
    match normal.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (normal, "latest"),
    }
}

/// The registry part of a normalised reference.
fn registry_of(normal: &str) -> &str {
    normal.split('/').next().unwrap_or(normal)
}

/// A daemon message fit to show: its first line, absolute paths (the daemon's temp and data
/// directories) left out, and cut to a bounded length.
pub(super) fn daemon_words(message: &str) -> String {
    let line = message.trim().lines().next().unwrap_or_default();
    let cleaned: Vec<&str> = line
        .split(' ')
        .map(|word| if word.trim_start_matches(['"', '\'', '(']).starts_with('/') { "…" } else { word })
        .collect();
    let cleaned = cleaned.join(" ");
    let mut shown: String = cleaned.chars().take(MAX_MESSAGE).collect();
    if shown.len() < cleaned.len() {
        shown.push('…');
    }
    shown
}

// ---------------------------------------------------------------------------------------------
// Registries

/// Registry settings for this backend: in memory only (see the module docs).
#[derive(Default)]
pub(super) struct Registries {
    entries: Mutex<BTreeMap<String, StoredRegistry>>,
}

#[derive(Clone)]
struct StoredRegistry {
    insecure: bool,
    credentials: Option<RegistryCredentials>,
}

impl Registries {
    pub(super) fn set(&self, name: String, config: RegistryConfig) -> Result<()> {
        if let Some(creds) = &config.credentials {
            if creds.username.is_empty() || creds.secret.is_empty() {
                return Err(EngineError::invalid("registry credentials need a user name and a secret"));
            }
        }
        let stored = StoredRegistry { insecure: config.insecure, credentials: config.credentials };
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).insert(name, stored);
        Ok(())
    }

    pub(super) fn remove(&self, registry: &str) -> Result<()> {
        let name = normalize_registry(registry)?;
        match self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&name) {
            Some(_) => Ok(()),
            None => Err(EngineError::not_found(format!("registry {name} is not configured"))),
        }
    }

    pub(super) fn list(&self) -> Vec<RegistrySummary> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(registry, s)| RegistrySummary {
                registry: registry.clone(),
                insecure: s.insecure,
                username: s.credentials.as_ref().map(|c| c.username.clone()),
            })
            .collect()
    }

    fn credentials(&self, registry: &str) -> Option<RegistryCredentials> {
        let name = normalize_registry(registry).ok()?;
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).get(&name).and_then(|s| s.credentials.clone())
    }
}

/// Whether the daemon talks plain HTTP to `registry` (`host` or `host:port`): listed as not
/// secure in its index configs, or an IP address (or `localhost`) inside one of its insecure
/// CIDRs (127.0.0.0/8 by default). Host names are not resolved here: the daemon would, so a
/// name it reaches through an insecure CIDR must be listed with `--insecure-registry` by name.
pub(super) fn daemon_treats_insecure(config: &bollard::models::RegistryServiceConfig, registry: &str) -> bool {
    if config.index_configs.as_ref().and_then(|c| c.get(registry)).and_then(|i| i.secure) == Some(false) {
        return true;
    }
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => registry.rsplit_once(':').map_or(registry, |(h, p)| if p.contains(':') { registry } else { h }),
    };
    let ip: IpAddr = match host {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        other => match other.parse() {
            Ok(ip) => ip,
            Err(_) => return false,
        },
    };
    config.insecure_registry_cidrs.iter().flatten().any(|cidr| cidr_contains(cidr, ip))
}

fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else { return false };
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else { return false };
    let (net, ip, width) = match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(u32::from(n)), u128::from(u32::from(i)), 32),
        (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
        _ => return false,
    };
    if bits > width {
        return false;
    }
    let shift = width - bits;
    shift >= 128 || (net >> shift) == (ip >> shift)
}

// ---------------------------------------------------------------------------------------------
// Pulls

/// Aborts the pull task when the progress stream is dropped: the daemon then sees the request
/// go away and stops the pull (what it fully fetched, it keeps).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Everything a pull needs, checked before the stream starts.
pub(super) struct PullRequest {
    pub normal: String,
    pub platform: Option<String>,
    pub auth: Option<DockerCredentials>,
}

impl PullRequest {
    pub(super) fn new(
        reference: &str,
        platform: Option<String>,
        credentials: Option<RegistryCredentials>,
        registries: &Registries,
    ) -> Result<PullRequest> {
        let normal = normalize_reference(reference)?;
        super::image_ref(&normal)?;
        if let Some(p) = &platform {
            crate::native::registry::Platform::parse(p)?;
        }
        let registry = registry_of(&normal).to_string();
        let credentials = credentials.or_else(|| registries.credentials(&registry));
        let auth = credentials.map(|c| DockerCredentials {
            username: Some(c.username),
            password: Some(c.secret),
            serveraddress: Some(registry),
            ..Default::default()
        });
        Ok(PullRequest { normal, platform, auth })
    }
}

/// Starts the pull; the stream reports progress and ends with `Done` or an error item.
pub(super) fn pull(docker: bollard::Docker, request: PullRequest) -> BoxStream<'static, Result<PullProgress>> {
    let (tx, rx) = mpsc::channel(256);
    let task = tokio::spawn(async move {
        if let Err(e) = run_pull(&docker, &request, &tx).await {
            if e.kind() == ErrorKind::Internal {
                tracing::warn!("docker: pull {}: {}", request.normal, e.detail());
            } else {
                tracing::debug!("docker: pull {}: {}", request.normal, e.detail());
            }
            let _ = tx.send(Err(e)).await;
        }
    });
    let abort = AbortOnDrop(task);
    tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(move |item| {
            let _keep = &abort;
            item
        })
        .boxed()
}

async fn run_pull(
    docker: &bollard::Docker,
    request: &PullRequest,
    tx: &mpsc::Sender<Result<PullProgress>>,
) -> Result<()> {
    let normal = request.normal.as_str();
    let send = |item: PullProgress| async move {
        tx.send(Ok(item)).await.map_err(|_| EngineError::unavailable("the pull was cancelled"))
    };
    // The manifest digest, asked of the daemon (through its own registry settings) before the
    // pull, since Docker's progress names it only at the end. A missing image or refused
    // credentials fail here already; anything else is left for the pull itself to report.
    let manifest_digest = match docker.inspect_registry_image(normal, request.auth.clone()).await {
        Ok(found) => found.descriptor.digest.unwrap_or_default(),
        Err(e) => {
            let transport = matches!(
                e,
                DockerError::IOError { .. }
                    | DockerError::HyperResponseError { .. }
                    | DockerError::SocketNotFoundError(_)
                    | DockerError::RequestTimeoutError
            );
            let err = pull_error(normal, e);
            if transport || matches!(err.kind(), ErrorKind::NotFound | ErrorKind::InvalidArgument) {
                return Err(err);
            }
            tracing::debug!("docker: pull {normal}: no manifest digest: {}", err.detail());
            String::new()
        }
    };
    let (repo, tag) = split_reference(normal);
    let options = bollard::query_parameters::CreateImageOptions {
        from_image: Some(repo.to_string()),
        tag: Some(tag.to_string()),
        platform: request.platform.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut messages = docker.create_image(Some(options), None, request.auth.clone());
    let mut mapper = ProgressMapper::new(normal, manifest_digest);
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| pull_error(normal, e))?;
        for item in mapper.feed(&message) {
            send(item).await?;
        }
    }
    let image = docker.inspect_image(normal).await.map_err(|e| docker_error("cannot inspect the pulled image", e))?;
    let layers = image.root_fs.and_then(|r| r.layers).unwrap_or_default();
    for item in mapper.finish(&layers) {
        send(item).await?;
    }
    send(PullProgress::Done { reference: normal.to_string(), image_id: image.id.unwrap_or_default() }).await
}

/// A failed pull as an engine error, classified as the native engine classifies registry
/// failures: an unknown image `not_found`, refused credentials `invalid_argument`, a registry
/// that cannot be reached `unavailable`, the daemon that cannot be reached `unavailable`.
pub(super) fn pull_error(normal: &str, err: DockerError) -> EngineError {
    let (status, text) = match &err {
        DockerError::DockerResponseServerError { status_code, message } => (Some(*status_code), message.clone()),
        DockerError::DockerStreamError { error } => (None, error.clone()),
        _ => return docker_error(&format!("cannot pull {normal}"), err),
    };
    let lower = text.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    let auth = has(&[
        "unauthorized",
        "authentication required",
        "access denied",
        "incorrect username or password",
        "no basic auth credentials",
        "denied:",
    ]);
    let missing = has(&["not found", "manifest unknown", "name unknown", "does not exist", "no such image"]);
    let source = std::io::Error::other(format!("status {status:?}: {text}"));
    let e = if status == Some(404) || (missing && !auth) {
        if has(&["no matching manifest"]) {
            EngineError::not_found(format!("{normal}: the image has no variant for the requested platform"))
        } else {
            EngineError::not_found(format!("{normal}: not found in the registry"))
        }
    } else if auth {
        EngineError::invalid(format!("{normal}: access denied by the registry (check the credentials)"))
    } else if has(&["no matching manifest"]) {
        EngineError::not_found(format!("{normal}: the image has no variant for the requested platform"))
    } else if status == Some(400) {
        EngineError::invalid(format!("cannot pull {normal}: {}", daemon_words(&text)))
    } else if has(&["toomanyrequests", "rate limit"]) {
        EngineError::unavailable(format!("{normal}: the registry's rate limit was reached"))
    } else if has(&["connection refused", "no such host", "i/o timeout", "dial tcp", "tls", "http response to https"]) {
        EngineError::unavailable(format!("{normal}: cannot reach the registry"))
    } else {
        EngineError::unavailable(format!("{normal}: the pull failed: {}", daemon_words(&text)))
    };
    e.with_source(source)
}

/// What one Docker progress message says about a layer.
#[derive(Debug, PartialEq)]
enum Step {
    /// The layer is part of the pull (`Pulling fs layer`, `Waiting`).
    Announce,
    Exists,
    Progress(LayerPhase, Option<u64>),
    Ignore,
}

fn step(message: &CreateImageInfo) -> Step {
    let current = message.progress_detail.as_ref().and_then(|d| d.current).filter(|c| *c >= 0).map(|c| c as u64);
    match message.status.as_deref().unwrap_or_default() {
        "Pulling fs layer" | "Waiting" => Step::Announce,
        "Already exists" => Step::Exists,
        "Downloading" => Step::Progress(LayerPhase::Downloading, current),
        // The download is whole: report it at its total.
        "Verifying Checksum" | "Download complete" => Step::Progress(LayerPhase::Downloading, None),
        "Extracting" => Step::Progress(LayerPhase::Extracting, current),
        "Pull complete" => Step::Progress(LayerPhase::Complete, None),
        // `Pulling from …`, `Digest: …`, `Status: …`, `Retrying in …`.
        _ => Step::Ignore,
    }
}

/// Turns Docker's pull messages into the engine's progress items, keeping the native stream's
/// shape: one `Resolved` (listing the layers Docker announced) before any layer item, then
/// layer items. Docker names layers by a short id (the first 12 hex digits of the blob digest)
/// and announces them without sizes, so `Resolved` carries those ids with size 0, and a layer's
/// size is the `total` of its progress items.
struct ProgressMapper {
    reference: String,
    manifest_digest: String,
    resolved: bool,
    announced: Vec<String>,
    held: Vec<PullProgress>,
    totals: HashMap<String, u64>,
}

impl ProgressMapper {
    fn new(reference: &str, manifest_digest: String) -> Self {
        ProgressMapper {
            reference: reference.to_string(),
            manifest_digest,
            resolved: false,
            announced: Vec::new(),
            held: Vec::new(),
            totals: HashMap::new(),
        }
    }

    fn announce(&mut self, id: &str) {
        if !self.announced.iter().any(|a| a == id) {
            self.announced.push(id.to_string());
        }
    }

    /// `Resolved` and what was held back for it, once.
    fn resolve(&mut self, layers: &[String]) -> Vec<PullProgress> {
        if self.resolved {
            return Vec::new();
        }
        self.resolved = true;
        let layers = if self.announced.is_empty() { layers.to_vec() } else { self.announced.clone() };
        let mut out = vec![PullProgress::Resolved {
            reference: self.reference.clone(),
            manifest_digest: self.manifest_digest.clone(),
            layers: layers.iter().map(|id| LayerDescriptor { digest: id.clone(), size: 0 }).collect(),
        }];
        out.append(&mut self.held);
        out
    }

    fn feed(&mut self, message: &CreateImageInfo) -> Vec<PullProgress> {
        if let Some(digest) = message.status.as_deref().and_then(|s| s.strip_prefix("Digest: ")) {
            if self.manifest_digest.is_empty() && check_digest(digest.trim()).is_ok() {
                self.manifest_digest = digest.trim().to_string();
            }
            return Vec::new();
        }
        let Some(id) = message.id.as_deref().filter(|id| !id.is_empty()) else { return Vec::new() };
        let total_reported = message.progress_detail.as_ref().and_then(|d| d.total).filter(|t| *t > 0);
        if let Some(total) = total_reported {
            self.totals.insert(id.to_string(), total as u64);
        }
        match step(message) {
            Step::Ignore => Vec::new(),
            Step::Announce => {
                self.announce(id);
                Vec::new()
            }
            Step::Exists => {
                self.announce(id);
                let item = PullProgress::Layer(LayerProgress {
                    digest: id.to_string(),
                    phase: LayerPhase::Exists,
                    done: 0,
                    total: 0,
                });
                if self.resolved {
                    vec![item]
                } else {
                    self.held.push(item);
                    Vec::new()
                }
            }
            Step::Progress(phase, current) => {
                let total = self.totals.get(id).copied().unwrap_or(0);
                let done = current.unwrap_or(total);
                let mut out = self.resolve(&[]);
                out.push(PullProgress::Layer(LayerProgress { digest: id.to_string(), phase, done, total }));
                out
            }
        }
    }

    /// At the end of Docker's messages. For an image that was up to date, Docker announces no
    /// layer: its layers (diff ids, from the image) are reported as existing, as the native
    /// engine reports a pull of an image it already has.
    fn finish(&mut self, image_layers: &[String]) -> Vec<PullProgress> {
        if self.resolved {
            return Vec::new();
        }
        let nothing_announced = self.announced.is_empty();
        let mut out = self.resolve(image_layers);
        if nothing_announced {
            out.extend(image_layers.iter().map(|d| {
                PullProgress::Layer(LayerProgress { digest: d.clone(), phase: LayerPhase::Exists, done: 0, total: 0 })
            }));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Imports

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct SaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciDescriptor {
    digest: String,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    platform: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciDocument {
    #[serde(default)]
    manifests: Option<Vec<OciDescriptor>>,
    #[serde(default)]
    config: Option<OciDescriptor>,
    #[serde(default)]
    layers: Option<Vec<OciDescriptor>>,
}

#[derive(Debug, Deserialize)]
struct ImageConfig {
    rootfs: ImageRootfs,
}

#[derive(Debug, Deserialize)]
struct ImageRootfs {
    diff_ids: Vec<String>,
}

/// Checks an image config's layer count; returns the image id (the config's digest).
fn check_config(bytes: &[u8], layer_count: usize) -> Result<String> {
    let config: ImageConfig =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("the image config is not valid: {e}")))?;
    if config.rootfs.diff_ids.len() != layer_count {
        return Err(bad(format!(
            "the image lists {layer_count} layers but its config {}",
            config.rootfs.diff_ids.len()
        )));
    }
    for diff_id in &config.rootfs.diff_ids {
        check_digest(diff_id).map_err(|e| bad(e.message()))?;
    }
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap_or(digest))
}

/// Reads the blob `digest` of an OCI layout, checking it against its digest.
fn read_blob(files: &dyn ArchiveFiles, digest: &str) -> Result<Vec<u8>> {
    check_digest(digest).map_err(|e| bad(e.message()))?;
    let name = blob_name(digest);
    let bytes = files.read_small(&name)?;
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if actual != digest {
        return Err(bad(format!("{name:?} does not match its digest (got {actual})")));
    }
    Ok(bytes)
}

/// Tags as `manifest.json` carries them (Docker's short form); invalid ones are dropped.
fn archive_tags(tags: impl IntoIterator<Item = String>) -> Vec<String> {
    tags.into_iter()
        .filter_map(|t| normalize_reference(&t).ok())
        .filter(|t| !t.contains('@'))
        .map(|t| shorten_reference(&t))
        .collect()
}

/// What the daemon is sent, after the archive was checked.
pub(super) enum Body {
    /// A plain tar, sent as it is.
    Tar(PathBuf),
    /// A plain tar with some files replaced and some added.
    Edited { tar: PathBuf, edits: Edits },
    /// The regular files `files` of an OCI layout directory, edited likewise.
    Dir { root: PathBuf, files: Vec<String>, edits: Edits },
}

#[derive(Default)]
pub(super) struct Edits {
    replace: BTreeMap<String, Vec<u8>>,
    add: BTreeMap<String, Vec<u8>>,
}

/// An archive checked and ready to send.
pub(super) struct Prepared {
    pub format: ArchiveFormat,
    pub body: Body,
    /// The images' ids as the archive's configs give them, in order (for a rootfs, none).
    pub ids: Vec<String>,
    /// Temp files that must outlive the upload.
    pub _temps: Vec<tempfile::TempPath>,
}

/// Checks an archive (a file, optionally compressed, or an OCI layout directory) and plans what
/// to send: see the module docs. Blocking.
pub(super) fn prepare(path: &Path, options: &ImportOptions) -> Result<Prepared> {
    let meta = std::fs::metadata(path).map_err(|e| EngineError::invalid(format!("cannot open the archive: {e}")))?;
    if meta.is_dir() {
        return prepare_dir(path, options);
    }
    let mut temps = Vec::new();
    let mut file =
        std::fs::File::open(path).map_err(|e| EngineError::invalid(format!("cannot open the archive: {e}")))?;
    let mut head = [0u8; 4];
    let n = read_up_to(&mut file, &mut head).map_err(|e| EngineError::internal("cannot read the archive", e))?;
    // Random access needs the plain tar; the daemon is sent the plain tar too, so it need not
    // know the compression (Docker 20.10 reads no zstd).
    let plain = if Compression::sniff(&head[..n]) == Compression::None {
        path.to_path_buf()
    } else {
        let staged = tempfile::Builder::new()
            .prefix("porthole-import-")
            .tempfile()
            .map_err(|e| EngineError::internal("cannot stage the archive", e))?;
        let source = std::fs::File::open(path).map_err(|e| EngineError::internal("cannot open the archive", e))?;
        let reader = decompress(source).map_err(|e| bad(format!("cannot decompress: {e}")))?;
        let mut out = std::io::BufWriter::new(staged.as_file());
        let copied = std::io::copy(&mut reader.take(MAX_IMPORT_BYTES + 1), &mut out)
            .map_err(|e| bad(format!("cannot decompress: {e}")))?;
        out.flush().map_err(|e| EngineError::internal("cannot stage the archive", e))?;
        drop(out);
        if copied > MAX_IMPORT_BYTES {
            return Err(bad(format!("larger than {MAX_IMPORT_BYTES} bytes once decompressed")));
        }
        let staged = staged.into_temp_path();
        let plain = staged.to_path_buf();
        temps.push(staged);
        plain
    };
    let index = TarFiles::index(&plain)?;
    let (format, body, ids) = if index.contains("manifest.json") {
        let (edits, ids) = plan_docker_save(&index, options)?;
        let body = if edits.replace.is_empty() { Body::Tar(plain) } else { Body::Edited { tar: plain, edits } };
        (ArchiveFormat::DockerSave, body, ids)
    } else if index.contains("oci-layout") && index.contains("index.json") {
        let (edits, ids) = plan_oci_layout(&index, options)?;
        (ArchiveFormat::OciLayout, Body::Edited { tar: plain, edits }, ids)
    } else {
        (ArchiveFormat::RootfsTarball, Body::Tar(plain), Vec::new())
    };
    Ok(Prepared { format, body, ids, _temps: temps })
}

fn prepare_dir(root: &Path, options: &ImportOptions) -> Result<Prepared> {
    let files = DirFiles { root: root.to_path_buf() };
    if !files.contains("oci-layout") || !files.contains("index.json") {
        return Err(bad("the directory is not an OCI image layout (no oci-layout or index.json)"));
    }
    let (edits, ids) = plan_oci_layout(&files, options)?;
    // The layout's files: its two documents and its blobs (regular files only).
    let mut names = vec!["oci-layout".to_string(), "index.json".to_string()];
    let blobs = root.join("blobs");
    let algorithms = std::fs::read_dir(&blobs).map_err(|e| bad(format!("cannot read blobs/: {e}")))?;
    for algorithm in algorithms {
        let algorithm = algorithm.map_err(|e| bad(format!("cannot read blobs/: {e}")))?;
        if !algorithm.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir_name = algorithm.file_name().to_string_lossy().into_owned();
        let entries = std::fs::read_dir(algorithm.path()).map_err(|e| bad(format!("cannot read blobs/: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| bad(format!("cannot read blobs/: {e}")))?;
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                names.push(format!("blobs/{dir_name}/{}", entry.file_name().to_string_lossy()));
                if names.len() as u64 > MAX_ENTRIES {
                    return Err(bad(format!("more than {MAX_ENTRIES} blobs")));
                }
            }
        }
    }
    Ok(Prepared {
        format: ArchiveFormat::OciLayout,
        body: Body::Dir { root: root.to_path_buf(), files: names, edits },
        ids,
        _temps: Vec::new(),
    })
}

/// Checks a `docker save` archive's `manifest.json` (every config and layer present, layer
/// counts matching) and, when the caller names the image, takes the archive's own tags out.
fn plan_docker_save(files: &dyn ArchiveFiles, options: &ImportOptions) -> Result<(Edits, Vec<String>)> {
    let mut manifest: Vec<SaveEntry> = serde_json::from_slice(&files.read_small("manifest.json")?)
        .map_err(|e| bad(format!("manifest.json is not valid: {e}")))?;
    if manifest.is_empty() {
        return Err(bad("manifest.json lists no image"));
    }
    let mut ids = Vec::new();
    for entry in &manifest {
        let id = check_config(&files.read_small(&entry.config)?, entry.layers.len())?;
        for layer in &entry.layers {
            if !files.contains(layer) {
                return Err(bad(format!("{layer:?} is not in the archive")));
            }
        }
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let mut edits = Edits::default();
    if options.reference.is_some() {
        for entry in &mut manifest {
            entry.repo_tags = None;
        }
        let encoded =
            serde_json::to_vec(&manifest).map_err(|e| EngineError::internal("cannot encode manifest.json", e))?;
        edits.replace.insert("manifest.json".into(), encoded);
        // A containerd-backed daemon names images from index.json's annotations instead.
        if files.contains("index.json") {
            edits.replace.insert("index.json".into(), untagged_index(&files.read_small("index.json")?)?);
        }
    }
    Ok((edits, ids))
}

/// `index.json` without the annotations that name images.
fn untagged_index(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut index: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("index.json is not valid: {e}")))?;
    if let Some(manifests) = index.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        for manifest in manifests {
            if let Some(annotations) = manifest.get_mut("annotations").and_then(|a| a.as_object_mut()) {
                annotations.remove("io.containerd.image.name");
                annotations.remove("org.opencontainers.image.ref.name");
            }
        }
    }
    serde_json::to_vec(&index).map_err(|e| EngineError::internal("cannot encode index.json", e))
}

/// Checks an OCI layout (index, manifests and configs verified against their digests, every
/// layer blob present; a multi-platform image resolved to this host's platform, as the native
/// engine does) and writes the `manifest.json` that lets `docker load` read it.
fn plan_oci_layout(files: &dyn ArchiveFiles, options: &ImportOptions) -> Result<(Edits, Vec<String>)> {
    let index_bytes = files.read_small("index.json")?;
    let index: OciDocument =
        serde_json::from_slice(&index_bytes).map_err(|e| bad(format!("index.json is not valid: {e}")))?;
    let entries = index.manifests.unwrap_or_default();
    if entries.is_empty() {
        return Err(bad("index.json lists no image"));
    }
    let mut save: Vec<SaveEntry> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for entry in &entries {
        let short = |d: &str| d.strip_prefix("sha256:").unwrap_or(d).chars().take(12).collect::<String>();
        let mut manifest: OciDocument = serde_json::from_slice(&read_blob(files, &entry.digest)?)
            .map_err(|e| bad(format!("manifest {} is not valid: {e}", short(&entry.digest))))?;
        if let Some(nested) = &manifest.manifests {
            let host = host_architecture();
            let chosen = nested
                .iter()
                .find(|m| {
                    m.platform.as_ref().is_some_and(|p| {
                        p.get("os").and_then(|v| v.as_str()) == Some("linux")
                            && p.get("architecture").and_then(|v| v.as_str()) == Some(host)
                    })
                })
                .ok_or_else(|| bad(format!("the image has no linux/{host} variant")))?;
            manifest = serde_json::from_slice(&read_blob(files, &chosen.digest)?)
                .map_err(|e| bad(format!("manifest {} is not valid: {e}", short(&chosen.digest))))?;
        }
        let (Some(config), Some(layers)) = (manifest.config, manifest.layers) else {
            return Err(bad(format!("manifest {} has no config or no layers", short(&entry.digest))));
        };
        let id = check_config(&read_blob(files, &config.digest)?, layers.len())?;
        let mut layer_names = Vec::new();
        for layer in &layers {
            check_digest(&layer.digest).map_err(|e| bad(e.message()))?;
            let name = blob_name(&layer.digest);
            if !files.contains(&name) {
                return Err(bad(format!("{name:?} is not in the archive")));
            }
            layer_names.push(name);
        }
        let annotations = entry.annotations.clone().unwrap_or_default();
        let tag = annotations
            .get("io.containerd.image.name")
            .or_else(|| annotations.get("org.opencontainers.image.ref.name").filter(|r| r.contains([':', '/'])))
            .cloned();
        let tags = if options.reference.is_some() { Vec::new() } else { archive_tags(tag) };
        match ids.iter().position(|i| *i == id) {
            Some(at) => {
                let known = save[at].repo_tags.get_or_insert_with(Vec::new);
                for tag in tags {
                    if !known.contains(&tag) {
                        known.push(tag);
                    }
                }
            }
            None => {
                ids.push(id);
                save.push(SaveEntry { config: blob_name(&config.digest), repo_tags: Some(tags), layers: layer_names });
            }
        }
    }
    let mut edits = Edits::default();
    let encoded = serde_json::to_vec(&save).map_err(|e| EngineError::internal("cannot encode manifest.json", e))?;
    edits.add.insert("manifest.json".into(), encoded);
    if options.reference.is_some() {
        edits.replace.insert("index.json".into(), untagged_index(&index_bytes)?);
    }
    Ok((edits, ids))
}

fn read_up_to(file: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn append_bytes(builder: &mut tar::Builder<impl Write>, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, name, bytes)
}

/// Writes the body as a tar to `out` (blocking).
fn write_body(body: &Body, mut out: impl Write) -> std::io::Result<()> {
    if let Body::Tar(path) = body {
        std::io::copy(&mut std::fs::File::open(path)?, &mut out)?;
        return out.flush();
    }
    let mut builder = tar::Builder::new(out);
    let edits = match body {
        // Sent as it is, above.
        Body::Tar(_) => return Ok(()),
        Body::Edited { tar, edits } => {
            let mut archive = tar::Archive::new(BufReader::with_capacity(CHUNK, std::fs::File::open(tar)?));
            for entry in archive.entries()? {
                let mut entry = entry?;
                let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                // Checked before: names that escape were never part of the images.
                let Ok(parts) = clean_path(&raw) else { continue };
                let name = parts.join("/");
                if name.is_empty() || edits.replace.contains_key(&name) || edits.add.contains_key(&name) {
                    continue;
                }
                let mut header = entry.header().clone();
                let kind = header.entry_type();
                if kind.is_file() {
                    builder.append_data(&mut header, &name, &mut entry)?;
                } else if kind.is_dir() {
                    builder.append_data(&mut header, &name, std::io::empty())?;
                } else if kind.is_symlink() {
                    let target = entry.link_name()?.map(|t| t.into_owned()).unwrap_or_default();
                    builder.append_link(&mut header, &name, target)?;
                }
            }
            edits
        }
        Body::Dir { root, files, edits } => {
            for name in files {
                if edits.replace.contains_key(name) || edits.add.contains_key(name) {
                    continue;
                }
                let path = root.join(name);
                // Listed as a regular file; a symlink put there since is not followed.
                let meta = std::fs::symlink_metadata(&path)?;
                if !meta.is_file() {
                    return Err(std::io::Error::other(format!("{name} is no longer a regular file")));
                }
                let mut header = tar::Header::new_ustar();
                header.set_size(meta.len());
                header.set_mode(0o644);
                header.set_mtime(0);
                header.set_entry_type(tar::EntryType::Regular);
                builder.append_data(&mut header, name, std::fs::File::open(&path)?.take(meta.len()))?;
            }
            edits
        }
    };
    for (name, bytes) in edits.replace.iter().chain(&edits.add) {
        append_bytes(&mut builder, name, bytes)?;
    }
    builder.into_inner()?.flush()
}

/// The body as a byte stream for the daemon, written by a blocking task as it is read.
pub(super) fn body_stream(body: Body) -> BoxStream<'static, std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let mut writer = crate::native::archive::ChannelWriter::new(tx.clone());
        if let Err(e) = write_body(&body, &mut writer).and_then(|()| writer.flush()) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::warn!("docker: cannot send the archive: {e}");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

/// Spools an upload to a temp file, refusing more than [`MAX_IMPORT_BYTES`].
pub(super) async fn spool(mut stream: BoxStream<'static, Result<Bytes>>) -> Result<tempfile::TempPath> {
    use tokio::io::AsyncWriteExt;
    let io = |e| EngineError::internal("cannot receive the archive", e);
    let path = tokio::task::spawn_blocking(|| tempfile::Builder::new().prefix("porthole-upload-").tempfile())
        .await
        .map_err(|e| EngineError::internal("import task failed", e))?
        .map_err(io)?
        .into_temp_path();
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(&path).await.map_err(io)?);
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if size > MAX_IMPORT_BYTES {
            return Err(bad(format!("larger than {MAX_IMPORT_BYTES} bytes")));
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    Ok(path)
}

/// What `docker load` said it loaded: ids, and names to look up.
pub(super) fn loaded(line: &str) -> Option<std::result::Result<String, String>> {
    let line = line.trim();
    if let Some(id) = line.strip_prefix("Loaded image ID: ") {
        return Some(Ok(id.trim().to_string()));
    }
    line.strip_prefix("Loaded image: ").map(|name| Err(name.trim().to_string()))
}

/// A daemon's refusal of an archive (load or import) as an engine error.
pub(super) fn archive_refused(err: DockerError) -> EngineError {
    match err {
        DockerError::DockerStreamError { error } => {
            bad(format!("the Docker daemon refused it: {}", daemon_words(&error)))
                .with_source(std::io::Error::other(error))
        }
        DockerError::DockerResponseServerError { status_code, message } if status_code <= 500 => {
            bad(format!("the Docker daemon refused it: {}", daemon_words(&message)))
                .with_source(std::io::Error::other(format!("status {status_code}: {message}")))
        }
        other => docker_error("cannot import the archive", other),
    }
}

/// The `changes` for `docker import`: the native engine's rootfs image defaults.
pub(super) fn import_changes(options: &ImportOptions) -> Result<Vec<String>> {
    let mut changes = vec![format!("ENV {DEFAULT_ENV}")];
    if let Some(cmd) = &options.cmd {
        let json = serde_json::to_string(cmd).map_err(|e| EngineError::internal("cannot encode the command", e))?;
        changes.push(format!("CMD {json}"));
    }
    Ok(changes)
}

/// A tag for Docker's tag and import APIs: `(repository, tag)` in Docker's short form.
pub(super) fn tag_parts(reference: &str) -> Result<(String, String)> {
    let normal = normalize_reference(reference)?;
    if normal.contains('@') {
        return Err(EngineError::invalid(format!("{reference:?} is a digest reference, not a tag")));
    }
    let short = shorten_reference(&normal);
    let (repo, tag) = split_reference(&short);
    Ok((repo.to_string(), tag.to_string()))
}

// ---------------------------------------------------------------------------------------------
// History

/// Build steps that make no layer, as builders write them.
const METADATA_STEPS: &[&str] = &[
    "ENV",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENTRYPOINT",
    "WORKDIR",
    "USER",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
    "MAINTAINER",
    "VOLUME",
];

fn makes_no_layer(created_by: &str) -> bool {
    let text = created_by.trim();
    let text = text.strip_prefix("/bin/sh -c ").unwrap_or(text);
    text.contains("#(nop)") || METADATA_STEPS.iter().any(|s| text.strip_prefix(s).is_some_and(|r| r.starts_with(' ')))
}

/// `docker history` as the engine's entries, newest first. Docker does not say which step made
/// which layer; the image's diff ids are matched, oldest first, to the steps that have a size or
/// are not metadata-only, when that gives exactly as many steps as layers.
pub(super) fn history(items: Vec<ImageHistoryResponseItem>, diff_ids: &[String]) -> Vec<ImageHistoryEntry> {
    let mut oldest_first = items;
    oldest_first.reverse();
    let with_size: Vec<bool> = oldest_first.iter().map(|h| h.size > 0).collect();
    let likely: Vec<bool> = oldest_first.iter().map(|h| h.size > 0 || !makes_no_layer(&h.created_by)).collect();
    let count = |flags: &[bool]| flags.iter().filter(|f| **f).count();
    let layered = if count(&likely) == diff_ids.len() {
        Some(likely)
    } else if count(&with_size) == diff_ids.len() {
        Some(with_size)
    } else {
        None
    };
    let mut layers = diff_ids.iter();
    let mut entries: Vec<ImageHistoryEntry> = oldest_first
        .into_iter()
        .enumerate()
        .map(|(i, h)| ImageHistoryEntry {
            created: super::convert::unix_time(h.created),
            created_by: h.created_by,
            comment: h.comment,
            layer: match &layered {
                Some(flags) if flags[i] => layers.next().cloned(),
                _ => None,
            },
            size: h.size.max(0) as u64,
        })
        .collect();
    entries.reverse();
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ProgressDetail;

    fn msg(id: Option<&str>, status: &str, current: Option<i64>, total: Option<i64>) -> CreateImageInfo {
        CreateImageInfo {
            id: id.map(Into::into),
            status: Some(status.into()),
            progress_detail: Some(ProgressDetail { current, total }),
            ..Default::default()
        }
    }

    #[test]
    fn docker_progress_keeps_the_native_stream_shape() {
        let mut m = ProgressMapper::new("127.0.0.1:5000/app:1", "sha256:abc".into());
        let mut items = Vec::new();
        for message in [
            msg(Some("1"), "Pulling from app", None, None),
            msg(Some("aaaaaaaaaaaa"), "Already exists", None, None),
            msg(Some("bbbbbbbbbbbb"), "Pulling fs layer", None, None),
            msg(Some("bbbbbbbbbbbb"), "Waiting", None, None),
            msg(Some("bbbbbbbbbbbb"), "Downloading", Some(10), Some(100)),
            msg(Some("bbbbbbbbbbbb"), "Verifying Checksum", None, None),
            msg(Some("bbbbbbbbbbbb"), "Download complete", None, None),
            msg(Some("bbbbbbbbbbbb"), "Extracting", Some(100), Some(100)),
            msg(Some("bbbbbbbbbbbb"), "Pull complete", None, None),
            msg(None, "Digest: sha256:def", None, None),
            msg(None, "Status: Downloaded newer image for 127.0.0.1:5000/app:1", None, None),
        ] {
            items.extend(m.feed(&message));
        }
        items.extend(m.finish(&["sha256:x".into(), "sha256:y".into()]));
        let PullProgress::Resolved { layers, manifest_digest, .. } = &items[0] else { panic!("{items:?}") };
        assert_eq!(manifest_digest, "sha256:abc");
        assert_eq!(layers.iter().map(|l| l.digest.as_str()).collect::<Vec<_>>(), ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]);
        let phases: Vec<(String, LayerPhase, u64, u64)> = items[1..]
            .iter()
            .map(|i| match i {
                PullProgress::Layer(l) => (l.digest.clone(), l.phase, l.done, l.total),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(phases[0], ("aaaaaaaaaaaa".into(), LayerPhase::Exists, 0, 0));
        assert_eq!(phases[1], ("bbbbbbbbbbbb".into(), LayerPhase::Downloading, 10, 100));
        assert!(phases.contains(&("bbbbbbbbbbbb".into(), LayerPhase::Extracting, 100, 100)));
        assert_eq!(phases.last().unwrap(), &("bbbbbbbbbbbb".into(), LayerPhase::Complete, 100, 100));
    }

    #[test]
    fn an_up_to_date_pull_reports_the_image_layers_as_existing() {
        let mut m = ProgressMapper::new("docker.io/library/busybox:latest", String::new());
        for message in [
            msg(Some("latest"), "Pulling from library/busybox", None, None),
            msg(None, "Digest: sha256:0123456789012345678901234567890123456789012345678901234567890123", None, None),
            msg(None, "Status: Image is up to date for busybox:latest", None, None),
        ] {
            assert!(m.feed(&message).is_empty());
        }
        let items = m.finish(&["sha256:l1".into()]);
        assert!(matches!(&items[0], PullProgress::Resolved { manifest_digest, layers, .. }
                if manifest_digest.ends_with("0123") && layers.len() == 1));
        assert!(
            matches!(&items[1], PullProgress::Layer(l) if l.phase == LayerPhase::Exists && l.digest == "sha256:l1")
        );
    }

    #[test]
    fn pull_errors_are_classified() {
        let stream = |e: &str| DockerError::DockerStreamError { error: e.into() };
        let server = |s: u16, m: &str| DockerError::DockerResponseServerError { status_code: s, message: m.into() };
        let r = "127.0.0.1:5000/app:1";
        assert_eq!(
            pull_error(r, server(404, "manifest for x not found: manifest unknown")).kind(),
            ErrorKind::NotFound
        );
        assert_eq!(pull_error(r, stream("manifest unknown: manifest unknown")).kind(), ErrorKind::NotFound);
        let e = pull_error(r, server(500, "Head \"http://127.0.0.1:5000/v2/app/manifests/1\": unauthorized: x"));
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.message().contains("access denied"), "{}", e.message());
        let e = pull_error(
            r,
            server(500, "Get \"https://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused"),
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(pull_error(r, DockerError::RequestTimeoutError).kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn daemon_words_hide_paths() {
        let shown = daemon_words("open /var/lib/docker/tmp/docker-import-1/manifest.json: no such file\nmore");
        assert_eq!(shown, "open … no such file");
    }

    #[test]
    fn references_split_for_the_docker_api() {
        assert_eq!(split_reference("docker.io/library/busybox:latest"), ("docker.io/library/busybox", "latest"));
        assert_eq!(split_reference("127.0.0.1:5000/a/b:1.2"), ("127.0.0.1:5000/a/b", "1.2"));
        assert_eq!(split_reference("127.0.0.1:5000/a@sha256:ab"), ("127.0.0.1:5000/a", "sha256:ab"));
        assert_eq!(tag_parts("busybox").unwrap(), ("busybox".into(), "latest".into()));
        assert_eq!(tag_parts("127.0.0.1:5000/x:2").unwrap(), ("127.0.0.1:5000/x".into(), "2".into()));
        assert!(tag_parts("x@sha256:0000000000000000000000000000000000000000000000000000000000000000").is_err());
    }

    #[test]
    fn insecure_registries_follow_the_daemon() {
        let config = bollard::models::RegistryServiceConfig {
            insecure_registry_cidrs: Some(vec!["127.0.0.0/8".into(), "10.1.0.0/16".into()]),
            index_configs: Some(HashMap::from([(
                "plain.example:5000".to_string(),
                bollard::models::IndexInfo { secure: Some(false), ..Default::default() },
            )])),
            ..Default::default()
        };
        assert!(daemon_treats_insecure(&config, "127.0.0.1:5000"));
        assert!(daemon_treats_insecure(&config, "localhost:5000"));
        assert!(daemon_treats_insecure(&config, "10.1.2.3"));
        assert!(daemon_treats_insecure(&config, "plain.example:5000"));
        assert!(!daemon_treats_insecure(&config, "10.2.0.1:5000"));
        assert!(!daemon_treats_insecure(&config, "ghcr.io"));
    }

    #[test]
    fn history_matches_layers_to_steps() {
        let item = |created_by: &str, size: i64| ImageHistoryResponseItem {
            id: "<missing>".into(),
            created: 1_700_000_000,
            created_by: created_by.into(),
            tags: vec![],
            size,
            comment: String::new(),
        };
        // Newest first, as Docker answers.
        let items = vec![
            item("/bin/sh -c #(nop)  CMD [\"sh\"]", 0),
            item("RUN /bin/sh -c touch /x # buildkit", 0),
            item("/bin/sh -c #(nop) ADD file:abc in / ", 4_000_000),
        ];
        let entries = history(items, &["sha256:base".into(), "sha256:touch".into()]);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].layer, None);
        assert_eq!(entries[1].layer.as_deref(), Some("sha256:touch"));
        assert_eq!(entries[2].layer.as_deref(), Some("sha256:base"));
        assert_eq!(entries[2].size, 4_000_000);
    }
}
