//! The native engine's local image store: unpacked layers stored once by diff id, image configs
//! (OCI image config JSON) by image id, and tags. Also reads files *through* an image's layers
//! (whiteouts, opaque directories and symlinks confined to the image), and builds the starter
//! image from the host's busybox-static so a fresh install without internet can run something.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{EngineError, ImageDetails, ImageHistoryEntry, ImageRunConfig, ImageSummary, PruneReport, Result};

use super::layout::{read_json, write_json_atomic};

/// The starter image's tag.
pub const STARTER_IMAGE: &str = "busybox:latest";
const BUSYBOX_PATHS: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// The subset of the OCI image config the engine uses (extra fields are kept on disk as-is).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OciImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_time")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default)]
    pub config: OciRunConfig,
    pub rootfs: OciRootfs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<OciHistory>,
}

/// One line of an image config's history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OciHistory {
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_time")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// A time that does not parse (configs in the wild carry odd ones) is no time, not an error.
fn lenient_time<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<DateTime<Utc>>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    Ok(text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc)))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OciRunConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OciRootfs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// A resolved image: id, config and the host directories of its layers (lowest first).
#[derive(Debug, Clone)]
pub struct Image {
    pub id: String,
    pub config: OciImageConfig,
    pub layers: Vec<PathBuf>,
}

impl Image {
    pub fn run_config(&self) -> ImageRunConfig {
        let c = &self.config.config;
        ImageRunConfig {
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
            env: c.env.clone().unwrap_or_default(),
            working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
            user: c.user.clone().filter(|u| !u.is_empty()),
            labels: c.labels.clone().unwrap_or_default(),
            exposed_ports: c.exposed_ports.as_ref().map(|p| p.keys().cloned().collect()).unwrap_or_default(),
        }
    }

    pub fn fs(&self) -> ImageFs<'_> {
        ImageFs { layers: &self.layers }
    }
}

/// A layer of a stored image: its diff id and, when the store kept it, the blob it came from
/// (what `save` exports, so the layer's digest is the one the config names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub diff_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// A directory or file under `staging/`, removed when dropped unless it was moved into place.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
}

impl Staging {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir_all(&self.path);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&self.path);
            }
            Err(_) => {}
        }
    }
}

/// Keeps layers and blobs that an unfinished pull or import relies on safe from removal and
/// pruning. Released when dropped.
pub struct Lease {
    keys: Vec<String>,
    leases: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        for key in &self.keys {
            if let Some(n) = leases.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    leases.remove(key);
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    /// Serialises changes to tags, configs and layer records, and removals against commits.
    lock: Arc<Mutex<()>>,
    leases: Arc<Mutex<HashMap<String, usize>>>,
    /// One download at a time per blob digest (concurrent pulls share layers).
    fetches: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// The longest image config or manifest accepted (real ones are a few KiB).
pub const MAX_METADATA_BYTES: u64 = 4 << 20;

impl ImageStore {
    pub fn open(root: &Path) -> Result<Self> {
        for dir in ["layers", "configs", "records", "blobs/sha256", "ingest", "staging"] {
            std::fs::create_dir_all(root.join(dir))
                .map_err(|e| EngineError::internal("cannot create the image store", e))?;
        }
        // Whatever a crash left half-done; partial downloads in ingest/ are kept for resuming.
        if let Ok(entries) = std::fs::read_dir(root.join("staging")) {
            for entry in entries.flatten() {
                drop(Staging { path: entry.path() });
            }
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
            lock: Arc::default(),
            leases: Arc::default(),
            fetches: Arc::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tags_path(&self) -> PathBuf {
        self.root.join("repositories.json")
    }

    fn tags(&self) -> BTreeMap<String, String> {
        read_json(&self.tags_path()).unwrap_or_default()
    }

    fn save_tags(&self, tags: &BTreeMap<String, String>) -> Result<()> {
        write_json_atomic(&self.tags_path(), tags).map_err(|e| EngineError::internal("cannot save image tags", e))
    }

    fn config_path(&self, id: &str) -> PathBuf {
        self.root.join("configs").join(format!("{}.json", hex_of(id)))
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.root.join("records").join(format!("{}.json", hex_of(id)))
    }

    pub fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.root.join("layers").join(hex_of(diff_id))
    }

    /// Where the blob `digest` is kept once verified.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex_of(digest))
    }

    /// Where a download of `digest` accumulates until it is complete and verified.
    pub fn ingest_path(&self, digest: &str) -> PathBuf {
        self.root.join("ingest").join(format!("{}.partial", hex_of(digest)))
    }

    pub fn has_layer(&self, diff_id: &str) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_file()
    }

    /// A fresh path under `staging/` (not created), removed again when the guard drops.
    pub fn staging(&self, what: &str) -> Staging {
        let n: u64 = rand::random();
        Staging { path: self.root.join("staging").join(format!("{what}-{n:016x}")) }
    }

    /// Protects `keys` (diff ids and blob digests) from removal until the lease drops.
    pub fn lease(&self, keys: impl IntoIterator<Item = String>) -> Lease {
        let keys: Vec<String> = keys.into_iter().collect();
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        for key in &keys {
            *leases.entry(key.clone()).or_default() += 1;
        }
        Lease { keys, leases: self.leases.clone() }
    }

    /// The lock that serialises downloads of one blob.
    pub fn fetch_lock(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut fetches = self.fetches.lock().unwrap_or_else(|e| e.into_inner());
        fetches.retain(|_, lock| Arc::strong_count(lock) > 1);
        fetches.entry(digest.to_string()).or_default().clone()
    }

    /// Moves the verified file `file` into the blob store as `digest`.
    pub fn adopt_blob(&self, file: &Path, digest: &str) -> Result<()> {
        check_digest(digest)?;
        std::fs::File::open(file)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(file, self.blob_path(digest)))
            .map_err(|e| EngineError::internal("cannot store a blob", e))
    }

    /// Copies `reader` into the blob store, verifying it against `expected` when given, and
    /// returns its digest and size, and a lease that keeps it from removal meanwhile.
    pub fn put_blob(&self, reader: impl Read, expected: Option<&str>, what: &str) -> Result<(String, u64, Lease)> {
        if let Some(expected) = expected {
            check_digest(expected)?;
        }
        let staging = self.staging("blob");
        let mut file =
            std::fs::File::create(staging.path()).map_err(|e| EngineError::internal("cannot stage a blob", e))?;
        let mut hashing = HashingReader { inner: reader, hasher: Sha256::new(), count: 0 };
        std::io::copy(&mut hashing, &mut file).map_err(|e| EngineError::invalid(format!("cannot read {what}: {e}")))?;
        let digest = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
        if let Some(expected) = expected {
            if digest != expected {
                return Err(EngineError::invalid(format!(
                    "{what} does not match its digest {expected} (got {digest})"
                )));
            }
        }
        // Leased before it appears, so no sweep can take it before the caller records it.
        let lease = self.lease([digest.clone()]);
        if !self.has_blob(&digest) {
            file.sync_all().map_err(|e| EngineError::internal("cannot store a blob", e))?;
            std::fs::rename(staging.path(), self.blob_path(&digest))
                .map_err(|e| EngineError::internal("cannot store a blob", e))?;
        }
        Ok((digest, hashing.count, lease))
    }

    /// Unpacks the stored blob `digest` into the layer store (unless the layer exists), checks
    /// that its diff id is `expected_diff_id` when given, and returns the diff id. `progress`
    /// is told how many blob bytes have been read.
    pub fn unpack_blob(
        &self,
        digest: &str,
        expected_diff_id: Option<&str>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<String> {
        if let Some(expected) = expected_diff_id {
            check_digest(expected)?;
            if self.has_layer(expected) {
                return Ok(expected.to_string());
            }
        }
        let file = std::fs::File::open(self.blob_path(digest))
            .map_err(|e| EngineError::internal(format!("cannot open the blob {}", short(digest)), e))?;
        let staging = self.staging("layer");
        std::fs::create_dir(staging.path()).map_err(|e| EngineError::internal("cannot stage a layer", e))?;
        let reader = ProgressReader { inner: file, done: 0, progress };
        let unpacked =
            super::unpack::unpack_layer(reader, staging.path(), super::unpack::Limits::default()).map_err(|e| {
                let message = format!("layer {}: {}", short(digest), e.message());
                EngineError::new(e.kind(), message).with_source(e)
            })?;
        if let Some(expected) = expected_diff_id {
            if unpacked.diff_id != expected {
                return Err(EngineError::invalid(format!(
                    "layer {} unpacks to {} but the image config says {expected}",
                    short(digest),
                    unpacked.diff_id
                )));
            }
        }
        // Leased before it appears (see `put_blob`); the caller leases it for longer.
        let _lease = self.lease([unpacked.diff_id.clone()]);
        let target = self.layer_dir(&unpacked.diff_id);
        if !target.exists() {
            match std::fs::rename(staging.path(), &target) {
                Ok(()) => {}
                // Another pull of the same layer finished first.
                Err(_) if target.is_dir() => {}
                Err(e) => return Err(EngineError::internal("cannot store a layer", e)),
            }
        }
        Ok(unpacked.diff_id)
    }

    /// Stores an image whose layers are all in the store: its config (exactly these bytes: the
    /// image id is their digest), its layer records, and `tags`. Returns the image id.
    pub fn commit_image(&self, config_bytes: &[u8], layers: &[LayerRecord], tags: &[String]) -> Result<String> {
        let config: OciImageConfig = serde_json::from_slice(config_bytes)
            .map_err(|e| EngineError::invalid(format!("the image config is not valid: {e}")))?;
        let diff_ids: Vec<&String> = layers.iter().map(|l| &l.diff_id).collect();
        if config.rootfs.diff_ids.iter().collect::<Vec<_>>() != diff_ids {
            return Err(EngineError::invalid("the image's layers do not match its config's diff ids"));
        }
        if layers.is_empty() {
            return Err(EngineError::invalid("the image has no layers"));
        }
        for layer in layers {
            check_digest(&layer.diff_id)?;
            if let Some(blob) = &layer.blob {
                check_digest(&blob.digest)?;
            }
            if !self.has_layer(&layer.diff_id) {
                return Err(EngineError::internal(
                    "cannot store the image",
                    std::io::Error::other(format!("layer {} is missing", layer.diff_id)),
                ));
            }
        }
        let normal: Vec<String> = tags.iter().map(|t| normalize_reference(t)).collect::<Result<_>>()?;
        let id = format!("sha256:{}", hex::encode(Sha256::digest(config_bytes)));
        let _guard = self.guard();
        // The record first: the config is what makes the image exist.
        write_json_atomic(&self.record_path(&id), &layers)
            .map_err(|e| EngineError::internal("cannot store the image", e))?;
        write_file_atomic(&self.config_path(&id), config_bytes)
            .map_err(|e| EngineError::internal("cannot store the image config", e))?;
        let mut all = self.tags();
        for tag in normal {
            all.insert(tag, id.clone());
        }
        self.save_tags(&all)?;
        Ok(id)
    }

    fn image_ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.join("configs")) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(|h| format!("sha256:{h}")))
            .collect();
        ids.sort();
        ids
    }

    fn load(&self, id: &str) -> Result<Image> {
        let config: OciImageConfig = read_json(&self.config_path(id))
            .map_err(|e| EngineError::internal(format!("cannot read image {}", short(id)), e))?;
        let layers = config.rootfs.diff_ids.iter().map(|d| self.layer_dir(d)).collect();
        Ok(Image { id: id.to_string(), config, layers })
    }

    /// The exact config bytes of a stored image.
    pub fn config_bytes(&self, id: &str) -> Result<Vec<u8>> {
        std::fs::read(self.config_path(id)).map_err(|e| EngineError::internal("cannot read the image config", e))
    }

    /// The layers of `image` with the blobs kept for them (none for images built here).
    pub fn layer_records(&self, image: &Image) -> Vec<LayerRecord> {
        let kept: Vec<LayerRecord> = read_json(&self.record_path(&image.id)).unwrap_or_default();
        image
            .config
            .rootfs
            .diff_ids
            .iter()
            .enumerate()
            .map(|(i, diff_id)| {
                let blob = kept
                    .get(i)
                    .filter(|r| &r.diff_id == diff_id)
                    .and_then(|r| r.blob.clone())
                    .filter(|b| self.has_blob(&b.digest));
                LayerRecord { diff_id: diff_id.clone(), blob }
            })
            .collect()
    }

    /// Finds an image by tag (`busybox`, `busybox:1`, `docker.io/library/busybox:latest`), by
    /// id (`sha256:...`), or by a unique id prefix of at least 4 hex digits.
    pub fn resolve(&self, reference: &str) -> Result<Image> {
        let reference = reference.trim();
        if reference.is_empty() {
            return Err(EngineError::invalid("no image given"));
        }
        let tags = self.tags();
        if let Ok(normal) = normalize_reference(reference) {
            if let Some(id) = tags.get(&normal) {
                return self.load(id);
            }
        }
        let wanted = reference.strip_prefix("sha256:").unwrap_or(reference);
        if wanted.len() >= 4 && wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<String> =
                self.image_ids().into_iter().filter(|id| hex_of(id).starts_with(wanted)).collect();
            match matches.as_slice() {
                [one] => return self.load(one),
                [] => {}
                _ => return Err(EngineError::invalid(format!("image id prefix {reference:?} is ambiguous"))),
            }
        }
        normalize_reference(reference)?;
        Err(EngineError::not_found(format!("No such image: {}", display_reference(reference))))
    }

    /// Whether `reference` names a tag (as opposed to an id).
    pub fn is_tag(&self, reference: &str) -> bool {
        normalize_reference(reference).is_ok_and(|n| self.tags().contains_key(&n))
    }

    pub fn tags_of(&self, id: &str) -> Vec<String> {
        self.tags().into_iter().filter(|(_, v)| v == id).map(|(k, _)| shorten_reference(&k)).collect()
    }

    pub fn summary(&self, image: &Image) -> ImageSummary {
        ImageSummary {
            id: image.id.clone(),
            tags: self.tags_of(&image.id),
            created: image.config.created,
            size: image.layers.iter().map(|l| dir_size(l)).sum(),
        }
    }

    pub fn details(&self, image: &Image) -> ImageDetails {
        ImageDetails {
            summary: self.summary(image),
            architecture: image.config.architecture.clone(),
            os: image.config.os.clone(),
            config: image.run_config(),
            layers: image.config.rootfs.diff_ids.clone(),
        }
    }

    /// `docker history`: the config's history, newest first, with each layer-making step
    /// matched to its layer.
    pub fn history(&self, image: &Image) -> Vec<ImageHistoryEntry> {
        let mut layers = image.config.rootfs.diff_ids.iter();
        let mut entries: Vec<ImageHistoryEntry> = image
            .config
            .history
            .iter()
            .map(|h| {
                let layer = if h.empty_layer { None } else { layers.next().cloned() };
                ImageHistoryEntry {
                    created: h.created,
                    created_by: h.created_by.clone().unwrap_or_default(),
                    comment: h.comment.clone().unwrap_or_default(),
                    size: layer.as_deref().map(|d| dir_size(&self.layer_dir(d))).unwrap_or(0),
                    layer,
                }
            })
            .collect();
        // Layers the history does not mention (images built without it) still show.
        for diff_id in layers {
            entries.push(ImageHistoryEntry {
                created: image.config.created,
                created_by: String::new(),
                comment: String::new(),
                size: dir_size(&self.layer_dir(diff_id)),
                layer: Some(diff_id.clone()),
            });
        }
        entries.reverse();
        entries
    }

    pub fn list(&self) -> Vec<Image> {
        self.image_ids().iter().filter_map(|id| self.load(id).ok()).collect()
    }

    /// Tags `id` as `reference`, moving the tag if it pointed elsewhere.
    pub fn tag(&self, id: &str, reference: &str) -> Result<()> {
        let normal = normalize_reference(reference)?;
        if normal.contains('@') {
            return Err(EngineError::invalid(format!("{reference:?} is a digest reference, not a tag")));
        }
        let _guard = self.guard();
        let mut tags = self.tags();
        tags.insert(normal, id.to_string());
        self.save_tags(&tags)
    }

    /// Removes one tag; the image stays.
    pub fn untag(&self, reference: &str) -> Result<()> {
        let normal = normalize_reference(reference)?;
        let _guard = self.guard();
        let mut tags = self.tags();
        tags.remove(&normal);
        self.save_tags(&tags)
    }

    /// Removes every tag of the image.
    pub fn untag_all(&self, id: &str) -> Result<()> {
        let _guard = self.guard();
        let mut tags = self.tags();
        tags.retain(|_, v| v != id);
        self.save_tags(&tags)
    }

    /// Removes an image's tags and config, then the layers and blobs nothing needs any more;
    /// `in_use` are layer directories containers still stack.
    pub fn remove(&self, image: &Image, in_use: &HashSet<PathBuf>) -> Result<()> {
        {
            let _guard = self.guard();
            let mut tags = self.tags();
            tags.retain(|_, v| v != &image.id);
            self.save_tags(&tags)?;
            std::fs::remove_file(self.config_path(&image.id))
                .map_err(|e| EngineError::internal("cannot remove the image", e))?;
            let _ = std::fs::remove_file(self.record_path(&image.id));
        }
        self.sweep(in_use, false);
        Ok(())
    }

    /// `docker image prune`: removes images no container uses (`in_use_images`) that are
    /// untagged (or all of them with `all`), then every layer, blob and partial download that
    /// nothing needs.
    pub fn prune(&self, all: bool, in_use_images: &HashSet<String>, in_use_layers: &HashSet<PathBuf>) -> PruneReport {
        let mut report = PruneReport::default();
        {
            let _guard = self.guard();
            let mut tags = self.tags();
            for id in self.image_ids() {
                let tagged = tags.values().any(|v| v == &id);
                if in_use_images.contains(&id) || (tagged && !all) {
                    continue;
                }
                tags.retain(|_, v| v != &id);
                if std::fs::remove_file(self.config_path(&id)).is_ok() {
                    let _ = std::fs::remove_file(self.record_path(&id));
                    report.images_deleted.push(id);
                }
            }
            if let Err(e) = self.save_tags(&tags) {
                tracing::warn!("prune: {}", e.detail());
            }
        }
        let (layers, bytes) = self.sweep(in_use_layers, true);
        report.layers_deleted = layers;
        report.space_reclaimed = bytes;
        report
    }

    /// Deletes layers and blobs no image, container or lease needs (and, with `partials`,
    /// unleased partial downloads). Returns how many layers went and the bytes freed.
    fn sweep(&self, in_use: &HashSet<PathBuf>, partials: bool) -> (usize, u64) {
        let _guard = self.guard();
        let needed = self.needed_keys();
        let (mut layers, mut bytes) = (0, 0);
        let sweep_dir = |dir: PathBuf, suffix: &str, count: &mut usize, bytes: &mut u64| {
            let Ok(entries) = std::fs::read_dir(&dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(hex) = name.strip_suffix(suffix) else { continue };
                if needed.contains(hex) || in_use.contains(&path) {
                    continue;
                }
                if let Some(size) = self.remove_unleased(&path, hex) {
                    *count += 1;
                    *bytes += size;
                }
            }
        };
        sweep_dir(self.root.join("layers"), "", &mut layers, &mut bytes);
        let mut blobs = 0;
        sweep_dir(self.root.join("blobs/sha256"), "", &mut blobs, &mut bytes);
        if partials {
            sweep_dir(self.root.join("ingest"), ".partial", &mut blobs, &mut bytes);
        }
        (layers, bytes)
    }

    /// Removes the layers and blobs named in `keys` (diff ids and blob digests) that no image
    /// needs and nobody leases: what a pull stored before the registry's content was found bad.
    pub fn discard(&self, keys: &[String]) {
        let _guard = self.guard();
        let needed = self.needed_keys();
        for key in keys {
            if check_digest(key).is_err() || needed.contains(hex_of(key)) {
                continue;
            }
            for path in [self.layer_dir(key), self.blob_path(key)] {
                if path.exists() {
                    self.remove_unleased(&path, hex_of(key));
                }
            }
        }
    }

    /// Hex digests of every layer and blob some image refers to. Called under the store guard.
    fn needed_keys(&self) -> HashSet<String> {
        let mut needed = HashSet::new();
        for image in &self.list() {
            needed.extend(image.config.rootfs.diff_ids.iter().map(|d| hex_of(d).to_string()));
            for record in self.layer_records(image) {
                if let Some(blob) = record.blob {
                    needed.insert(hex_of(&blob.digest).to_string());
                }
            }
        }
        needed
    }

    /// Deletes the layer directory or blob file `path` (named by `hex`) unless it is leased, and
    /// returns the bytes freed.
    fn remove_unleased(&self, path: &Path, hex: &str) -> Option<u64> {
        // Checked and deleted under the lease lock: a pull that leases it meanwhile either wins
        // (kept) or finds it gone (fetches it again).
        let leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if leases.contains_key(&format!("sha256:{hex}")) {
            return None;
        }
        let size = if path.is_dir() { dir_size(path) } else { std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) };
        let removed = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        drop(leases);
        removed.ok().map(|()| size)
    }

    /// Stores a single-layer image whose root filesystem is the directory `rootfs` (moved into
    /// the store), with `run` as its run defaults, and tags it. Returns the image id.
    pub fn add_directory_image(&self, rootfs: &Path, run: OciRunConfig, reference: &str) -> Result<String> {
        let diff_id =
            format!("sha256:{}", tar_digest(rootfs).map_err(|e| EngineError::internal("cannot hash the layer", e))?);
        let _lease = self.lease([diff_id.clone()]);
        let layer = self.layer_dir(&diff_id);
        if layer.exists() {
            let _ = std::fs::remove_dir_all(rootfs);
        } else {
            std::fs::rename(rootfs, &layer).map_err(|e| EngineError::internal("cannot store the layer", e))?;
        }
        let config = OciImageConfig {
            architecture: host_architecture().to_string(),
            os: "linux".into(),
            created: Some(Utc::now()),
            config: run,
            rootfs: OciRootfs { kind: "layers".into(), diff_ids: vec![diff_id.clone()] },
            history: Vec::new(),
        };
        let bytes =
            serde_json::to_vec(&config).map_err(|e| EngineError::internal("cannot encode the image config", e))?;
        self.commit_image(&bytes, &[LayerRecord { diff_id, blob: None }], &[reference.to_string()])
    }

    /// Builds `busybox:latest` from the host's static busybox, unless it exists already.
    /// Returns `Ok(None)` when the host has no busybox to build it from.
    pub fn ensure_starter_image(&self) -> Result<Option<String>> {
        if let Ok(image) = self.resolve(STARTER_IMAGE) {
            return Ok(Some(image.id));
        }
        let Some(busybox) = BUSYBOX_PATHS.iter().map(Path::new).find(|p| p.is_file()) else {
            return Ok(None);
        };
        let staging = self.staging("starter");
        build_busybox_rootfs(busybox, staging.path())
            .map_err(|e| EngineError::internal("cannot assemble the starter image", e))?;
        let run = OciRunConfig {
            cmd: Some(vec!["sh".into()]),
            env: Some(vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()]),
            ..Default::default()
        };
        self.add_directory_image(staging.path(), run, STARTER_IMAGE).map(Some)
    }
}

/// Refuses anything but `sha256:` and 64 lowercase hex digits: digests from archives and
/// registries become file names.
pub fn check_digest(digest: &str) -> Result<()> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => Ok(()),
        _ => Err(EngineError::invalid(format!(
            "unsupported or malformed digest {:?} (only sha256 is supported)",
            digest.chars().take(80).collect::<String>()
        ))),
    }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Hashes and counts what is read through it.
pub struct HashingReader<R> {
    pub inner: R,
    pub hasher: Sha256,
    pub count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

struct ProgressReader<'a, R> {
    inner: R,
    done: u64,
    progress: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.progress)(self.done);
        Ok(n)
    }
}

fn build_busybox_rootfs(busybox: &Path, dir: &Path) -> std::io::Result<()> {
    for sub in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "home", "proc", "sys", "dev", "var/tmp"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::copy(busybox, dir.join("bin/busybox"))?;
    std::fs::set_permissions(dir.join("bin/busybox"), std::fs::Permissions::from_mode(0o755))?;
    let list = std::process::Command::new(busybox).arg("--list-full").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" || applet.contains("..") {
            continue;
        }
        let link = dir.join(applet);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if !link.exists() {
            std::os::unix::fs::symlink("/bin/busybox", &link)?;
        }
    }
    let mut passwd = std::fs::File::create(dir.join("etc/passwd"))?;
    passwd.write_all(b"root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n")?;
    let mut group = std::fs::File::create(dir.join("etc/group"))?;
    group.write_all(b"root:x:0:\ndaemon:x:1:\ntty:x:5:\nusers:x:100:\nnogroup:x:65534:\n")?;
    std::fs::write(dir.join("etc/hostname"), b"busybox\n")?;
    Ok(())
}

/// Writes a deterministic tar of `dir` (what a layer built here is, byte for byte) to `out`.
pub fn write_dir_tar(dir: &Path, out: impl Write) -> std::io::Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir)?;
    builder.into_inner()?.flush()
}

/// The digest of [`write_dir_tar`]'s output: the diff id of a layer built here.
fn tar_digest(dir: &Path) -> std::io::Result<String> {
    struct HashWriter(Sha256);
    impl Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hasher = HashWriter(Sha256::new());
    write_dir_tar(dir, &mut hasher)?;
    Ok(hex::encode(hasher.0.finalize()))
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn hex_of(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

/// The first 12 hex digits of a digest, as Docker shows ids.
pub fn short_digest(id: &str) -> &str {
    short(id)
}

fn short(id: &str) -> &str {
    let h = hex_of(id);
    &h[..h.len().min(12)]
}

/// Docker's reference normalisation: `busybox` → `docker.io/library/busybox:latest`.
pub fn normalize_reference(reference: &str) -> Result<String> {
    let invalid = || EngineError::invalid(format!("invalid image reference {reference:?}"));
    if reference.is_empty() || reference.len() > 255 || reference.chars().any(|c| c.is_whitespace() || c.is_uppercase())
    {
        return Err(invalid());
    }
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let (mut repo, tag) = match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t)),
        _ => (name.to_string(), None),
    };
    let first = repo.split('/').next().unwrap_or_default();
    let has_registry = repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        let host_ok = match first.split_once(':') {
            Some((host, port)) => !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
            None => !first.is_empty(),
        };
        if !host_ok {
            return Err(invalid());
        }
    } else {
        if !repo.contains('/') {
            repo = format!("library/{repo}");
        }
        repo = format!("docker.io/{repo}");
    }
    let path_ok = repo.split('/').skip(1).all(|part| {
        !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
    });
    if !path_ok {
        return Err(invalid());
    }
    if let Some(t) = tag {
        if t.is_empty() || t.len() > 128 || !t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(invalid());
        }
    }
    Ok(match digest {
        Some(d) => format!("{repo}@{d}"),
        None => format!("{repo}:{}", tag.unwrap_or("latest")),
    })
}

/// How Docker shows a normalised reference: `docker.io/library/busybox:latest` → `busybox:latest`.
pub fn shorten_reference(normal: &str) -> String {
    normal
        .strip_prefix("docker.io/library/")
        .or_else(|| normal.strip_prefix("docker.io/"))
        .unwrap_or(normal)
        .to_string()
}

fn display_reference(reference: &str) -> String {
    normalize_reference(reference).map(|n| shorten_reference(&n)).unwrap_or_else(|_| reference.to_string())
}

/// Reads an image's files through its layers as overlayfs would show them.
pub struct ImageFs<'a> {
    /// Lowest first.
    layers: &'a [PathBuf],
}

impl ImageFs<'_> {
    /// Resolves `path` inside the image (following symlinks, never leaving the image) and
    /// returns the host path of the file that overlayfs would show there.
    pub fn resolve(&self, path: &str) -> Option<PathBuf> {
        let mut pending: Vec<String> = components(path);
        pending.reverse();
        let mut current: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                current.pop();
                continue;
            }
            current.push(part);
            let host = self.lookup(&current)?;
            let meta = std::fs::symlink_metadata(&host).ok()?;
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = std::fs::read_link(&host).ok()?;
                let target = target.to_str()?.to_string();
                current.pop();
                if target.starts_with('/') {
                    current.clear();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
        }
        self.lookup(&current)
    }

    /// The topmost layer's entry for a symlink-free path, honouring whiteouts and opaque dirs.
    fn lookup(&self, parts: &[String]) -> Option<PathBuf> {
        if parts.is_empty() {
            return self.layers.last().cloned();
        }
        let (name, parents) = parts.split_last()?;
        for layer in self.layers.iter().rev() {
            let mut dir = layer.clone();
            for p in parents {
                dir.push(p);
            }
            let candidate = dir.join(name);
            if let Ok(meta) = std::fs::symlink_metadata(&candidate) {
                if is_whiteout(&meta) {
                    return None;
                }
                return Some(candidate);
            }
            if dir.join(format!(".wh.{name}")).exists() {
                return None;
            }
            // Anything below an opaque directory in this layer hides lower layers.
            let mut probe = layer.clone();
            for p in parents {
                probe.push(p);
                if is_opaque(&probe) {
                    return None;
                }
            }
        }
        None
    }

    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        let host = self.resolve(path)?;
        if !std::fs::metadata(&host).ok()?.is_file() {
            return None;
        }
        std::fs::read(host).ok()
    }

    /// Whether `command` names an executable file in the image, searched in `path_var` when it
    /// has no slash (as execvp does).
    pub fn has_executable(&self, command: &str, path_var: &str) -> bool {
        use std::os::unix::fs::PermissionsExt;
        let is_exec = |p: &str| {
            self.resolve(p)
                .and_then(|h| std::fs::metadata(h).ok())
                .is_some_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        if command.contains('/') {
            return is_exec(command);
        }
        path_var
            .split(':')
            .filter(|d| d.starts_with('/'))
            .any(|d| is_exec(&format!("{}/{}", d.trim_end_matches('/'), command)))
    }
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => n.to_str().map(str::to_string),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    dir.join(".wh..wh..opq").exists() || xattr_opaque(dir)
}

fn xattr_opaque(dir: &Path) -> bool {
    let mut value = [0u8; 4];
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let name = c"trusted.overlay.opaque";
    // lgetxattr through nix is not exposed; a missing attribute is the common, cheap case.
    super::sys::lgetxattr(&path, name, &mut value).is_some_and(|n| n == 1 && value[0] == b'y')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise_like_docker() {
        assert_eq!(normalize_reference("busybox").unwrap(), "docker.io/library/busybox:latest");
        assert_eq!(normalize_reference("team/app:1.2").unwrap(), "docker.io/team/app:1.2");
        assert_eq!(normalize_reference("localhost:5000/app").unwrap(), "localhost:5000/app:latest");
        assert_eq!(normalize_reference("reg.example:5000/a/b:v1").unwrap(), "reg.example:5000/a/b:v1");
        assert_eq!(shorten_reference("docker.io/library/busybox:latest"), "busybox:latest");
        for bad in ["", "Busybox", "has space", "a//b", "app:", "app:bad/tag"] {
            assert!(normalize_reference(bad).is_err(), "{bad:?}");
        }
    }

    fn layer(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = root.join(name);
        for (path, content) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn upper_layers_hide_and_replace_lower_files() {
        let tmp = tempfile::tempdir().unwrap();
        let base = layer(tmp.path(), "base", &[("etc/passwd", "base"), ("etc/gone", "x"), ("opaque/old", "x")]);
        let top = layer(
            tmp.path(),
            "top",
            &[("etc/passwd", "top"), ("etc/.wh.gone", ""), ("opaque/.wh..wh..opq", ""), ("opaque/new", "n")],
        );
        let layers = vec![base, top];
        let fs = ImageFs { layers: &layers };
        assert_eq!(fs.read("/etc/passwd").unwrap(), b"top");
        assert_eq!(fs.read("/etc/gone"), None);
        assert_eq!(fs.read("/opaque/old"), None);
        assert_eq!(fs.read("/opaque/new").unwrap(), b"n");
    }

    #[test]
    fn symlinks_resolve_inside_the_image_only() {
        let tmp = tempfile::tempdir().unwrap();
        let base = layer(tmp.path(), "base", &[("usr/bin/tool", "#!")]);
        std::os::unix::fs::symlink("usr/bin", base.join("bin")).unwrap();
        std::fs::create_dir_all(base.join("etc")).unwrap();
        // An absolute link must resolve against the image root, not the host's.
        std::os::unix::fs::symlink("/../../../../etc/hostname", base.join("etc/escape")).unwrap();
        let layers = vec![base];
        let fs = ImageFs { layers: &layers };
        assert_eq!(fs.read("/bin/tool").unwrap(), b"#!");
        assert_eq!(fs.read("/etc/escape"), None);
    }

    #[test]
    fn the_starter_image_runs_sh_from_busybox() {
        let Some(busybox) = BUSYBOX_PATHS.iter().map(Path::new).find(|p| p.is_file()) else {
            panic!("busybox-static must be installed for the test suite (the set-up script installs it)");
        };
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(tmp.path()).unwrap();
        let id = store.ensure_starter_image().unwrap().expect("starter image");
        let image = store.resolve("busybox").unwrap();
        assert_eq!(image.id, id);
        assert_eq!(store.tags_of(&id), vec!["busybox:latest".to_string()]);
        let path = image.run_config().env.join(":");
        assert!(image.fs().has_executable("sh", path.trim_start_matches("PATH=")));
        assert!(!image.fs().has_executable("nope", "/bin"));
        assert!(busybox.exists());
        // A second call finds the existing image instead of building another.
        assert_eq!(store.ensure_starter_image().unwrap(), Some(id));
        let err = store.resolve("alpine:3").unwrap_err();
        assert_eq!(err.kind(), crate::api::ErrorKind::NotFound);
        assert_eq!(err.message(), "No such image: alpine:3");
    }
}
