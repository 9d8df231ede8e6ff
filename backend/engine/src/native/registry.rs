//! Pulling images from OCI Distribution (registry v2) servers with `oci-client`, which speaks
//! the protocol (the Bearer token flow, anonymous or with credentials; ranged blob requests).
//!
//! What this module adds is trust and storage: the manifest (after picking the host's entry
//! from a manifest list or OCI index), the config and every blob are checked against their
//! digests, and every layer against the config's diff id, before anything is put in place.
//! Blobs download into `ingest/<hex>.partial`, so an interrupted pull resumes where it stopped
//! (a byte range), and only a verified blob is renamed into `blobs/`; layers unpack into
//! `staging/` and are renamed into `layers/` once their diff id matches. Layers already stored
//! are not fetched again. Progress goes to the caller as a stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::api::{
    EngineError, ErrorKind, LayerDescriptor, LayerPhase, LayerProgress, PullOptions, PullProgress, Result,
};

use super::credentials::RegistrySettings;
use super::images::{
    check_digest, host_architecture, normalize_reference, short_digest, BlobRecord, ImageStore, LayerRecord,
    OciImageConfig, MAX_METADATA_BYTES,
};

const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Layers fetched at once.
const PARALLEL_LAYERS: usize = 3;
/// Progress is reported at most this often per layer (in bytes).
const PROGRESS_STEP: u64 = 1 << 20;

/// An `os/arch[/variant]` platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn host() -> Platform {
        Platform { os: "linux".into(), architecture: host_architecture().into(), variant: None }
    }

    pub fn parse(text: &str) -> Result<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => {
                Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: None })
            }
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: Some(variant.to_string()) })
            }
            _ => Err(EngineError::invalid(format!("invalid platform {text:?}: use os/arch[/variant]"))),
        }
    }

    fn describe(os: &str, arch: &str, variant: Option<&str>) -> String {
        match variant {
            Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
            _ => format!("{os}/{arch}"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<IndexPlatform>,
}

#[derive(Debug, Clone, Deserialize)]
struct IndexPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// Picks `want` from a manifest list's entries; a wanted platform without a variant takes any.
fn choose_platform(entries: &[IndexEntry], want: &Platform) -> Result<String> {
    let matches = |e: &&IndexEntry, exact: bool| {
        e.platform.as_ref().is_some_and(|p| {
            p.os == want.os
                && p.architecture == want.architecture
                && match (&want.variant, exact) {
                    (Some(v), _) => p.variant.as_deref() == Some(v.as_str()),
                    (None, true) => p.variant.as_deref().is_none_or(|v| v.is_empty() || v == "v8"),
                    (None, false) => true,
                }
        })
    };
    if let Some(entry) =
        entries.iter().find(|e| matches(e, true)).or_else(|| entries.iter().find(|e| matches(e, false)))
    {
        return Ok(entry.digest.clone());
    }
    let available: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(|p| Platform::describe(&p.os, &p.architecture, p.variant.as_deref()))
        .collect();
    Err(EngineError::not_found(format!(
        "the image has no variant for {} (it has: {})",
        Platform::describe(&want.os, &want.architecture, want.variant.as_deref()),
        if available.is_empty() { "none".to_string() } else { available.join(", ") }
    )))
}

/// Turns a registry client error into an engine error that says what was being fetched.
fn registry_error(what: &str, e: OciDistributionError) -> EngineError {
    let denied = || EngineError::invalid(format!("{what}: access denied by the registry (check the credentials)"));
    let missing = || EngineError::not_found(format!("{what}: not found in the registry"));
    let err = match &e {
        OciDistributionError::ImageManifestNotFoundError(_) => missing(),
        OciDistributionError::AuthenticationFailure(_) | OciDistributionError::UnauthorizedError { .. } => denied(),
        OciDistributionError::ServerError { code: 404, .. } => missing(),
        OciDistributionError::ServerError { code: 401 | 403, .. } => denied(),
        OciDistributionError::RegistryError { envelope, .. } => match envelope.errors.first().map(|e| &e.code) {
            Some(OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::BlobUnknown) => missing(),
            Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => denied(),
            Some(OciErrorCode::Toomanyrequests) => {
                EngineError::unavailable(format!("{what}: the registry's rate limit was reached"))
            }
            _ => EngineError::unavailable(format!("{what}: the registry refused the request")),
        },
        OciDistributionError::RequestError(_) => EngineError::unavailable(format!("{what}: cannot reach the registry")),
        OciDistributionError::DigestError(_) => EngineError::new(
            ErrorKind::Unavailable,
            format!("{what}: the registry sent content that does not match its digest"),
        ),
        _ => EngineError::unavailable(format!("{what}: the registry's answer was not usable")),
    };
    err.with_source(e)
}

fn mismatch(what: &str, expected: &str, actual: &str) -> EngineError {
    EngineError::unavailable(format!(
        "{what}: the registry sent content that does not match its digest {expected} (got {actual})"
    ))
}

/// One pull: the registry client and where results go.
struct Pull {
    client: Client,
    reference: Reference,
    store: ImageStore,
    progress: mpsc::Sender<Result<PullProgress>>,
    /// Blobs and layers this pull added to the store.
    added: std::sync::Mutex<Vec<String>>,
    /// Set when the registry sent content that failed verification: the pull then stores
    /// nothing, while a pull that merely broke off keeps its verified layers to resume.
    rejected: AtomicBool,
}

/// Starts pulling `reference`; the returned stream reports progress, and dropping it stops the
/// pull (verified blobs and layers are kept; a partial download is kept to resume).
pub fn pull(
    store: ImageStore,
    settings: &RegistrySettings,
    reference: &str,
    options: PullOptions,
) -> Result<BoxStream<'static, Result<PullProgress>>> {
    let normal = normalize_reference(reference)?;
    let parsed: Reference = normal.parse().map_err(|e: oci_client::ParseError| {
        EngineError::invalid(format!("invalid image reference {reference:?}: {e}"))
    })?;
    let platform = match &options.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let access = settings.access(parsed.registry())?;
    let credentials = options.credentials.or(access.credentials);
    let auth = match credentials {
        Some(c) => RegistryAuth::Basic(c.username, c.secret),
        None => RegistryAuth::Anonymous,
    };
    // rustls needs a process-wide crypto provider; a second install is a harmless no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ClientConfig {
        protocol: if access.insecure {
            ClientProtocol::HttpsExcept(vec![parsed.registry().to_string()])
        } else {
            ClientProtocol::Https
        },
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    };
    let client = Client::try_from(config).map_err(|e| EngineError::internal("cannot set up the registry client", e))?;
    let (tx, rx) = mpsc::channel(256);
    let pull = Arc::new(Pull {
        client,
        reference: parsed,
        store,
        progress: tx.clone(),
        added: Default::default(),
        rejected: AtomicBool::new(false),
    });
    let task = tokio::spawn(async move {
        let result = pull.run(&normal, &platform, auth).await;
        if result.is_err() && pull.rejected.load(Ordering::SeqCst) {
            let added = std::mem::take(&mut *pull.added.lock().unwrap_or_else(|e| e.into_inner()));
            let store = pull.store.clone();
            let _ = tokio::task::spawn_blocking(move || store.discard(&added)).await;
        }
        if let Err(e) = result {
            if e.kind() == ErrorKind::Internal {
                tracing::warn!("pull {normal}: {}", e.detail());
            }
            let _ = tx.send(Err(e)).await;
        }
    });
    let abort = AbortOnDrop(task);
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(move |item| {
            let _keep = &abort;
            item
        })
        .boxed())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Pull {
    /// Marks the pull as having received bad content; returns `err`.
    fn reject(&self, err: EngineError) -> EngineError {
        self.rejected.store(true, Ordering::SeqCst);
        err
    }

    fn record_added(&self, key: &str) {
        self.added.lock().unwrap_or_else(|e| e.into_inner()).push(key.to_string());
    }

    async fn report(&self, item: PullProgress) -> Result<()> {
        self.progress.send(Ok(item)).await.map_err(|_| EngineError::unavailable("the pull was cancelled"))
    }

    /// Fetches a manifest by tag or digest, verifying its digest.
    async fn manifest(&self, reference: &Reference, auth: &RegistryAuth) -> Result<(Vec<u8>, String)> {
        let accepted = [MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST];
        let what = format!("manifest of {reference}");
        let (bytes, _) =
            self.client.pull_manifest_raw(reference, auth, &accepted).await.map_err(|e| registry_error(&what, e))?;
        if bytes.len() as u64 > MAX_METADATA_BYTES {
            return Err(EngineError::unavailable(format!("{what}: the manifest is too large")));
        }
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if let Some(expected) = reference.digest() {
            if expected != digest {
                return Err(self.reject(mismatch(&what, expected, &digest)));
            }
        }
        Ok((bytes.to_vec(), digest))
    }

    async fn run(self: &Arc<Self>, normal: &str, platform: &Platform, auth: RegistryAuth) -> Result<()> {
        let (mut bytes, mut digest) = self.manifest(&self.reference, &auth).await?;
        let mut manifest: RawManifest = serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::unavailable(format!("the manifest of {normal} is not valid JSON: {e}")))?;
        if let Some(entries) = &manifest.manifests {
            let chosen = choose_platform(entries, platform)?;
            check_digest(&chosen)?;
            let by_digest = self.reference.clone_with_digest(chosen.clone());
            (bytes, digest) = self.manifest(&by_digest, &auth).await?;
            if digest != chosen {
                return Err(self.reject(mismatch(&format!("manifest of {normal}"), &chosen, &digest)));
            }
            manifest = serde_json::from_slice(&bytes)
                .map_err(|e| EngineError::unavailable(format!("the manifest of {normal} is not valid JSON: {e}")))?;
        }
        if manifest.schema_version == 1 {
            return Err(EngineError::invalid(format!(
                "{normal} uses a Docker schema 1 manifest, which is not supported"
            )));
        }
        if let Some(media) = manifest.media_type.as_deref() {
            if media != MEDIA_OCI_MANIFEST && media != MEDIA_DOCKER_MANIFEST {
                return Err(EngineError::invalid(format!("{normal} is not a container image (manifest type {media})")));
            }
        }
        let (Some(config_desc), Some(layers)) = (manifest.config, manifest.layers) else {
            return Err(EngineError::invalid(format!("{normal}: the manifest has no config or no layers")));
        };
        check_digest(&config_desc.digest)?;
        for layer in &layers {
            check_digest(&layer.digest)?;
            if !layer.media_type.is_empty() && !layer.media_type.contains("tar") {
                return Err(EngineError::invalid(format!(
                    "{normal} is not a container image (layer type {})",
                    layer.media_type
                )));
            }
        }
        if config_desc.size > MAX_METADATA_BYTES {
            return Err(EngineError::unavailable(format!("{normal}: the image config is too large")));
        }

        // The config: small, fetched whole and verified.
        let mut config_bytes = Vec::new();
        self.client
            .pull_blob(&self.reference, config_desc.digest.as_str(), &mut config_bytes)
            .await
            .map_err(|e| registry_error(&format!("config of {normal}"), e))?;
        let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config_bytes)));
        if config_digest != config_desc.digest {
            return Err(self.reject(mismatch(&format!("config of {normal}"), &config_desc.digest, &config_digest)));
        }
        let config: OciImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| EngineError::invalid(format!("the image config of {normal} is not valid: {e}")))?;
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(EngineError::invalid(format!(
                "{normal}: the manifest lists {} layers but the config {}",
                layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        for diff_id in &config.rootfs.diff_ids {
            check_digest(diff_id)?;
        }
        let _lease =
            self.store.lease(layers.iter().map(|l| l.digest.clone()).chain(config.rootfs.diff_ids.iter().cloned()));
        self.report(PullProgress::Resolved {
            reference: normal.to_string(),
            manifest_digest: digest,
            layers: layers.iter().map(|l| LayerDescriptor { digest: l.digest.clone(), size: l.size }).collect(),
        })
        .await?;

        let jobs = layers.iter().cloned().zip(config.rootfs.diff_ids.iter().cloned()).map(|(layer, diff_id)| {
            let this = self.clone();
            async move { this.layer(layer, diff_id).await }
        });
        // Every job runs to its end even when one fails, so a failed pull leaves a settled
        // store: verified layers kept for next time (unless the content was bad, see `rejected`),
        // nothing half-written.
        let results: Vec<Result<LayerRecord>> = futures::stream::iter(jobs).buffered(PARALLEL_LAYERS).collect().await;
        let records = results.into_iter().collect::<Result<Vec<LayerRecord>>>()?;

        let store = self.store.clone();
        let tag = normal.to_string();
        let image_id = tokio::task::spawn_blocking(move || store.commit_image(&config_bytes, &records, &[tag]))
            .await
            .map_err(|e| EngineError::internal("pull task failed", e))??;
        self.report(PullProgress::Done { reference: normal.to_string(), image_id }).await
    }

    /// Makes one layer present: blob downloaded and verified, then unpacked and checked
    /// against its diff id.
    async fn layer(self: Arc<Self>, layer: Descriptor, diff_id: String) -> Result<LayerRecord> {
        let record = LayerRecord {
            diff_id: diff_id.clone(),
            blob: Some(BlobRecord {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
                size: layer.size,
            }),
        };
        let progress = |phase, done| {
            PullProgress::Layer(LayerProgress { digest: layer.digest.clone(), phase, done, total: layer.size })
        };
        if self.store.has_layer(&diff_id) && self.store.has_blob(&layer.digest) {
            self.report(progress(LayerPhase::Exists, layer.size)).await?;
            return Ok(record);
        }
        self.download(&layer).await?;
        if !self.store.has_layer(&diff_id) {
            self.report(progress(LayerPhase::Extracting, 0)).await?;
            let store = self.store.clone();
            let sender = self.progress.clone();
            let (digest, expected, total) = (layer.digest.clone(), diff_id.clone(), layer.size);
            tokio::task::spawn_blocking(move || {
                let mut reported = 0;
                store.unpack_blob(&digest, Some(&expected), &mut |done| {
                    if done >= reported + PROGRESS_STEP {
                        reported = done;
                        // Lossy on purpose: a slow reader must not slow the unpacking.
                        let _ = sender.try_send(Ok(PullProgress::Layer(LayerProgress {
                            digest: digest.clone(),
                            phase: LayerPhase::Extracting,
                            done,
                            total,
                        })));
                    }
                })
            })
            .await
            .map_err(|e| EngineError::internal("unpack task failed", e))?
            .map_err(|e| {
                // A layer that is no valid archive, or unpacks to another diff id, is bad content.
                if e.kind() == ErrorKind::InvalidArgument {
                    self.reject(e)
                } else {
                    e
                }
            })?;
            self.record_added(&diff_id);
        }
        self.report(progress(LayerPhase::Complete, layer.size)).await?;
        Ok(record)
    }

    /// Downloads the blob into `ingest/`, resuming a partial download, verifies its digest and
    /// size, and moves it into the blob store.
    async fn download(&self, layer: &Descriptor) -> Result<()> {
        let digest = layer.digest.as_str();
        let lock = self.store.fetch_lock(digest);
        let _guard = lock.lock().await;
        if self.store.has_blob(digest) {
            return Ok(());
        }
        let what = format!("layer {}", short_digest(digest));
        let partial = self.store.ingest_path(digest);
        let io = |e: std::io::Error| EngineError::internal(format!("cannot store {what}"), e);
        let mut offset = tokio::fs::metadata(&partial).await.map(|m| m.len()).unwrap_or(0);
        if offset >= layer.size {
            offset = 0;
        }
        // What is already on disk counts towards the digest.
        let mut hasher = Sha256::new();
        if offset > 0 {
            let path = partial.clone();
            hasher = tokio::task::spawn_blocking(move || -> std::io::Result<Sha256> {
                let mut h = Sha256::new();
                let file = std::fs::File::open(path)?;
                std::io::copy(&mut std::io::Read::take(file, offset), &mut h)?;
                Ok(h)
            })
            .await
            .map_err(|e| EngineError::internal("download task failed", e))?
            .map_err(io)?;
        }
        let mut stream = if offset > 0 {
            match self.client.pull_blob_stream_partial(&self.reference, digest, offset, None).await {
                Ok(BlobResponse::Partial(s)) => s,
                Ok(BlobResponse::Full(s)) => {
                    // No range support: start again.
                    offset = 0;
                    hasher = Sha256::new();
                    s
                }
                Err(e) => return Err(registry_error(&what, e)),
            }
        } else {
            self.client.pull_blob_stream(&self.reference, digest).await.map_err(|e| registry_error(&what, e))?
        };
        let file =
            tokio::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&partial).await.map_err(io)?;
        file.set_len(offset).await.map_err(io)?;
        let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
        {
            use tokio::io::AsyncSeekExt;
            file.seek(std::io::SeekFrom::Start(offset)).await.map_err(io)?;
        }
        let mut reported = offset;
        self.report(PullProgress::Layer(LayerProgress {
            digest: digest.to_string(),
            phase: LayerPhase::Downloading,
            done: offset,
            total: layer.size,
        }))
        .await?;
        while let Some(chunk) = stream.stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) if offset >= layer.size => {
                    // Everything arrived and the client's own check failed: the data is bad.
                    drop(file);
                    let _ = tokio::fs::remove_file(&partial).await;
                    return Err(self.reject(
                        EngineError::unavailable(format!(
                            "{what}: the registry sent content that does not match its digest {digest}"
                        ))
                        .with_source(e),
                    ));
                }
                Err(e) => {
                    // Keep what arrived: the next pull resumes from there.
                    let _ = file.flush().await;
                    return Err(EngineError::unavailable(format!("{what}: the download broke off")).with_source(e));
                }
            };
            offset += chunk.len() as u64;
            if offset > layer.size {
                drop(file);
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(self.reject(EngineError::unavailable(format!(
                    "{what}: the registry sent more than the {} bytes the manifest declares",
                    layer.size
                ))));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
            if offset >= reported + PROGRESS_STEP || offset == layer.size {
                reported = offset;
                self.report(PullProgress::Layer(LayerProgress {
                    digest: digest.to_string(),
                    phase: LayerPhase::Downloading,
                    done: offset,
                    total: layer.size,
                }))
                .await?;
            }
        }
        file.flush().await.map_err(io)?;
        let file = file.into_inner();
        file.sync_all().await.map_err(io)?;
        drop(file);
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if offset != layer.size || actual != digest {
            let _ = tokio::fs::remove_file(&partial).await;
            if offset != layer.size {
                return Err(self.reject(EngineError::unavailable(format!(
                    "{what}: the registry sent {offset} of the {} bytes the manifest declares",
                    layer.size
                ))));
            }
            return Err(self.reject(mismatch(&what, digest, &actual)));
        }
        let store = self.store.clone();
        let digest = digest.to_string();
        let adopted = digest.clone();
        tokio::task::spawn_blocking(move || store.adopt_blob(&partial, &digest))
            .await
            .map_err(|e| EngineError::internal("download task failed", e))??;
        self.record_added(&adopted);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(os: &str, arch: &str, variant: Option<&str>, digest: &str) -> IndexEntry {
        IndexEntry {
            digest: digest.into(),
            platform: Some(IndexPlatform {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            }),
        }
    }

    #[test]
    fn the_wanted_platform_is_picked_from_a_manifest_list() {
        let list = vec![
            entry("linux", "arm", Some("v7"), "a"),
            entry("linux", "arm64", Some("v8"), "b"),
            entry("linux", "amd64", None, "c"),
            entry("unknown", "unknown", None, "attestation"),
        ];
        assert_eq!(choose_platform(&list, &Platform::parse("linux/amd64").unwrap()).unwrap(), "c");
        assert_eq!(choose_platform(&list, &Platform::parse("linux/arm64").unwrap()).unwrap(), "b");
        assert_eq!(choose_platform(&list, &Platform::parse("linux/arm/v7").unwrap()).unwrap(), "a");
        let err = choose_platform(&list, &Platform::parse("linux/s390x").unwrap()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.message().contains("linux/arm/v7, linux/arm64/v8, linux/amd64"), "{}", err.message());
        assert!(Platform::parse("linux").is_err());
    }
}
