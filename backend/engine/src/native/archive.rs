//! Image archives: importing `docker save` output (legacy and OCI-layout variants), OCI image
//! layouts (directories or tarballs) and plain root filesystem tarballs (`docker import`), and
//! saving images as an archive `docker load` accepts.
//!
//! An archive is first made seekable (a stream is spooled to `staging/`, a compressed archive
//! decompressed there), its entries indexed, and the format detected from what it holds:
//! `manifest.json` means `docker save`, `oci-layout` + `index.json` an OCI layout, anything else
//! a root filesystem. Every name the archive's JSON points at is looked up in that index (never
//! as a host path), every blob an OCI layout names is checked against its digest, and every
//! layer against the config's diff id, through the same hostile-input-safe unpacker as pulls.
//!
//! `save` writes Docker's current format, which is both: an OCI layout (`oci-layout`,
//! `index.json`, `blobs/sha256/`) plus `manifest.json` for `docker load`. Layers are the blobs
//! the store kept (so their diff ids are unchanged); an image built here without a kept blob has
//! its layer tar regenerated and checked against its diff id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{ArchiveFormat, EngineError, ImportOptions, ImportReport, ImportedImage, Result};

use super::images::{
    check_digest, host_architecture, normalize_reference, short_digest, shorten_reference, write_dir_tar, BlobRecord,
    Image, ImageStore, LayerRecord, OciHistory, OciImageConfig, OciRootfs, OciRunConfig, MAX_METADATA_BYTES,
};
use super::unpack::{clean_path, decompress, Compression};

const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MEDIA_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// How many symlinks deep a `docker save` layer path may point (legacy archives link shared
/// layers to one copy).
const MAX_LINK_HOPS: usize = 8;
/// Entries an archive's index holds at most (the index lives in memory).
const MAX_INDEX_ENTRIES: u64 = 2_000_000;

fn bad(reason: impl std::fmt::Display) -> EngineError {
    EngineError::invalid(format!("bad image archive: {reason}"))
}

/// The files of an archive, by their cleaned names (the Docker backend's import reads archives
/// through this too).
pub(crate) trait ArchiveFiles {
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send + '_>>;
    fn contains(&self, name: &str) -> bool;

    fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open(name)?
            .take(MAX_METADATA_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("{name:?}: {e}")))?;
        if bytes.len() as u64 > MAX_METADATA_BYTES {
            return Err(bad(format!("{name:?} is too large")));
        }
        Ok(bytes)
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T>
    where
        Self: Sized,
    {
        serde_json::from_slice(&self.read_small(name)?).map_err(|e| bad(format!("{name:?} is not valid: {e}")))
    }
}

fn clean_name(name: &str) -> Result<String> {
    clean_path(name).map(|parts| parts.join("/")).map_err(|reason| bad(format!("{name:?}: {reason}")))
}

#[derive(Debug, Clone)]
enum TarItem {
    File { offset: u64, size: u64 },
    Symlink(String),
    Other,
}

/// A tar file indexed once, read at random.
pub(crate) struct TarFiles {
    path: PathBuf,
    items: HashMap<String, TarItem>,
}

impl TarFiles {
    pub(crate) fn index(path: &Path) -> Result<TarFiles> {
        let file = std::fs::File::open(path).map_err(|e| EngineError::internal("cannot open the archive", e))?;
        let mut archive = tar::Archive::new(file);
        let mut items = HashMap::new();
        let entries = archive.entries_with_seek().map_err(bad)?;
        for (count, entry) in entries.enumerate() {
            if count as u64 >= MAX_INDEX_ENTRIES {
                return Err(bad(format!("more than {MAX_INDEX_ENTRIES} entries")));
            }
            let entry = entry.map_err(bad)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            // Names that escape are never looked up; the layer unpacker judges rootfs entries.
            let Ok(parts) = clean_path(&raw) else { continue };
            let kind = entry.header().entry_type();
            let item = if kind.is_file() {
                TarItem::File { offset: entry.raw_file_position(), size: entry.size() }
            } else if kind.is_symlink() {
                TarItem::Symlink(
                    entry.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned()).unwrap_or_default(),
                )
            } else {
                TarItem::Other
            };
            items.insert(parts.join("/"), item);
        }
        Ok(TarFiles { path: path.to_path_buf(), items })
    }

    /// Follows symlinks inside the archive (relative to the link's directory).
    fn resolve(&self, name: &str) -> Result<(u64, u64)> {
        let mut current = clean_name(name)?;
        for _ in 0..MAX_LINK_HOPS {
            match self.items.get(&current) {
                Some(TarItem::File { offset, size }) => return Ok((*offset, *size)),
                Some(TarItem::Symlink(target)) => {
                    let base = current.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
                    let joined = if target.starts_with('/') { target.clone() } else { format!("{base}/{target}") };
                    current =
                        resolve_dots(&joined).ok_or_else(|| bad(format!("{name:?} links outside the archive")))?;
                }
                _ => return Err(bad(format!("{name:?} is not in the archive"))),
            }
        }
        Err(bad(format!("{name:?}: too many symlinks")))
    }
}

/// `a/b/../c` → `a/c`; `None` when `..` climbs above the top.
fn resolve_dots(path: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            p => out.push(p),
        }
    }
    Some(out.join("/"))
}

impl ArchiveFiles for TarFiles {
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send + '_>> {
        let (offset, size) = self.resolve(name)?;
        let mut file =
            std::fs::File::open(&self.path).map_err(|e| EngineError::internal("cannot open the archive", e))?;
        file.seek(SeekFrom::Start(offset)).map_err(|e| EngineError::internal("cannot read the archive", e))?;
        Ok(Box::new(std::io::BufReader::with_capacity(256 << 10, file.take(size))))
    }

    fn contains(&self, name: &str) -> bool {
        clean_name(name).is_ok_and(|n| self.items.contains_key(&n))
    }
}

/// An OCI layout directory on the host. Names are resolved without following symlinks.
pub(crate) struct DirFiles {
    pub(crate) root: PathBuf,
}

impl DirFiles {
    fn path(&self, name: &str) -> Result<PathBuf> {
        let mut path = self.root.clone();
        for part in clean_path(name).map_err(|reason| bad(format!("{name:?}: {reason}")))? {
            path.push(part);
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(bad(format!("{name:?} is a symlink")));
            }
        }
        Ok(path)
    }
}

impl ArchiveFiles for DirFiles {
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send + '_>> {
        let path = self.path(name)?;
        let file = std::fs::File::open(&path).map_err(|_| bad(format!("{name:?} is not in the layout")))?;
        Ok(Box::new(std::io::BufReader::with_capacity(256 << 10, file)))
    }

    fn contains(&self, name: &str) -> bool {
        self.path(name).is_ok_and(|p| p.is_file())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SaveManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciIndexOrManifest {
    #[serde(default)]
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manifests: Option<Vec<OciDescriptor>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<OciDescriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layers: Option<Vec<OciDescriptor>>,
}

/// Where an import reads from, once on the host.
pub enum LocalSource {
    /// A tar file (optionally gzip or zstd compressed).
    File(PathBuf),
    /// An OCI image layout directory.
    Dir(PathBuf),
}

/// Imports an archive into the store (blocking).
pub fn import(store: &ImageStore, source: LocalSource, options: &ImportOptions) -> Result<ImportReport> {
    if let Some(reference) = &options.reference {
        normalize_reference(reference)?;
    }
    match source {
        LocalSource::Dir(dir) => {
            let files = DirFiles { root: dir };
            if !files.contains("oci-layout") || !files.contains("index.json") {
                return Err(bad("the directory is not an OCI image layout (no oci-layout or index.json)"));
            }
            let images = import_oci_layout(store, &files, options)?;
            Ok(ImportReport { format: ArchiveFormat::OciLayout, images })
        }
        LocalSource::File(path) => {
            let mut file = std::fs::File::open(&path)
                .map_err(|e| EngineError::invalid(format!("cannot open the archive: {e}")))?;
            let mut head = [0u8; 4];
            let n =
                read_up_to(&mut file, &mut head).map_err(|e| EngineError::internal("cannot read the archive", e))?;
            // Random access needs the plain tar: decompress a compressed archive to staging.
            let decompressed;
            let tar_path = if Compression::sniff(&head[..n]) == Compression::None {
                path.clone()
            } else {
                decompressed = store.staging("import-tar");
                let source =
                    std::fs::File::open(&path).map_err(|e| EngineError::internal("cannot open the archive", e))?;
                let mut reader = decompress(source).map_err(|e| bad(format!("cannot decompress: {e}")))?;
                let mut out = std::fs::File::create(decompressed.path())
                    .map_err(|e| EngineError::internal("cannot stage the archive", e))?;
                std::io::copy(&mut reader, &mut out).map_err(|e| bad(format!("cannot decompress: {e}")))?;
                decompressed.path().to_path_buf()
            };
            let files = TarFiles::index(&tar_path)?;
            if files.contains("manifest.json") {
                let images = import_docker_save(store, &files, options)?;
                Ok(ImportReport { format: ArchiveFormat::DockerSave, images })
            } else if files.contains("oci-layout") && files.contains("index.json") {
                let images = import_oci_layout(store, &files, options)?;
                Ok(ImportReport { format: ArchiveFormat::OciLayout, images })
            } else {
                let image = import_rootfs(store, &path, options)?;
                Ok(ImportReport { format: ArchiveFormat::RootfsTarball, images: vec![image] })
            }
        }
    }
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Stores the layer `name` of an archive: the blob kept as it is (verified against `digest`
/// when the archive names one), unpacked and checked against `diff_id`.
fn import_layer(
    store: &ImageStore,
    files: &dyn ArchiveFiles,
    name: &str,
    digest: Option<&str>,
    diff_id: &str,
) -> Result<LayerRecord> {
    let (blob_digest, size, _blob_lease) = store
        .put_blob(files.open(name)?, digest, &format!("layer {name:?}"))
        .map_err(|e| if e.kind() == crate::api::ErrorKind::InvalidArgument { bad(e.message()) } else { e })?;
    let _lease = store.lease([blob_digest.clone(), diff_id.to_string()]);
    let media_type = {
        let mut head = [0u8; 4];
        let mut blob = std::fs::File::open(store.blob_path(&blob_digest))
            .map_err(|e| EngineError::internal("cannot read a blob", e))?;
        let n = read_up_to(&mut blob, &mut head).map_err(|e| EngineError::internal("cannot read a blob", e))?;
        match Compression::sniff(&head[..n]) {
            Compression::None => MEDIA_LAYER_TAR,
            Compression::Gzip => MEDIA_LAYER_GZIP,
            Compression::Zstd => MEDIA_LAYER_ZSTD,
        }
    };
    store.unpack_blob(&blob_digest, Some(diff_id), &mut |_| {})?;
    Ok(LayerRecord {
        diff_id: diff_id.to_string(),
        blob: Some(BlobRecord { digest: blob_digest, media_type: media_type.into(), size }),
    })
}

fn parse_config(bytes: &[u8], layer_count: usize) -> Result<OciImageConfig> {
    let config: OciImageConfig =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("the image config is not valid: {e}")))?;
    if config.rootfs.diff_ids.len() != layer_count {
        return Err(bad(format!(
            "the image lists {layer_count} layers but its config {}",
            config.rootfs.diff_ids.len()
        )));
    }
    for diff_id in &config.rootfs.diff_ids {
        check_digest(diff_id)?;
    }
    Ok(config)
}

fn tags_for(options: &ImportOptions, archive_tags: Vec<String>, index: usize) -> Vec<String> {
    match &options.reference {
        Some(reference) if index == 0 => vec![reference.clone()],
        Some(_) => Vec::new(),
        None => archive_tags.into_iter().filter(|t| normalize_reference(t).is_ok()).collect(),
    }
}

fn import_docker_save(store: &ImageStore, files: &TarFiles, options: &ImportOptions) -> Result<Vec<ImportedImage>> {
    let manifest: Vec<SaveManifestEntry> = files.read_json("manifest.json")?;
    if manifest.is_empty() {
        return Err(bad("manifest.json lists no image"));
    }
    let mut imported = Vec::new();
    for (i, entry) in manifest.into_iter().enumerate() {
        let config_bytes = files.read_small(&entry.config)?;
        let config = parse_config(&config_bytes, entry.layers.len())?;
        let _lease = store.lease(config.rootfs.diff_ids.iter().cloned());
        let records = entry
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(name, diff_id)| {
                // The OCI-layout variant names layers by digest: check that too.
                let digest = name.strip_prefix("blobs/sha256/").map(|h| format!("sha256:{h}"));
                import_layer(store, files, name, digest.as_deref().filter(|d| check_digest(d).is_ok()), diff_id)
            })
            .collect::<Result<Vec<_>>>()?;
        let tags = tags_for(options, entry.repo_tags.unwrap_or_default(), i);
        let id = store.commit_image(&config_bytes, &records, &tags)?;
        imported.push(ImportedImage { tags: store.tags_of(&id), id });
    }
    Ok(imported)
}

/// Reads the blob `digest` of an OCI layout, verifying it.
fn read_oci_blob(files: &dyn ArchiveFiles, digest: &str) -> Result<Vec<u8>> {
    check_digest(digest)?;
    let name = format!("blobs/sha256/{}", short_digest_full(digest));
    let mut bytes = Vec::new();
    files
        .open(&name)?
        .take(MAX_METADATA_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("{name:?}: {e}")))?;
    if bytes.len() as u64 > MAX_METADATA_BYTES {
        return Err(bad(format!("{name:?} is too large")));
    }
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if actual != digest {
        return Err(bad(format!("{name:?} does not match its digest (got {actual})")));
    }
    Ok(bytes)
}

fn short_digest_full(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn import_oci_layout(
    store: &ImageStore,
    files: &dyn ArchiveFiles,
    options: &ImportOptions,
) -> Result<Vec<ImportedImage>> {
    let index: OciIndexOrManifest = serde_json::from_slice(&files.read_small("index.json")?)
        .map_err(|e| bad(format!("index.json is not valid: {e}")))?;
    let entries = index.manifests.unwrap_or_default();
    if entries.is_empty() {
        return Err(bad("index.json lists no image"));
    }
    let mut imported = Vec::new();
    let mut seen = HashSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let mut manifest: OciIndexOrManifest = serde_json::from_slice(&read_oci_blob(files, &entry.digest)?)
            .map_err(|e| bad(format!("manifest {} is not valid: {e}", short_digest(&entry.digest))))?;
        // A nested index (a multi-platform image): take this host's platform.
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
            manifest = serde_json::from_slice(&read_oci_blob(files, &chosen.digest)?)
                .map_err(|e| bad(format!("manifest {} is not valid: {e}", short_digest(&chosen.digest))))?;
        }
        let (Some(config_desc), Some(layers)) = (manifest.config, manifest.layers) else {
            return Err(bad(format!("manifest {} has no config or no layers", short_digest(&entry.digest))));
        };
        let config_bytes = read_oci_blob(files, &config_desc.digest)?;
        let config = parse_config(&config_bytes, layers.len())?;
        let _lease = store.lease(config.rootfs.diff_ids.iter().cloned());
        let records = layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(layer, diff_id)| {
                check_digest(&layer.digest)?;
                let name = format!("blobs/sha256/{}", short_digest_full(&layer.digest));
                import_layer(store, files, &name, Some(&layer.digest), diff_id)
            })
            .collect::<Result<Vec<_>>>()?;
        let annotations = entry.annotations.clone().unwrap_or_default();
        let archive_tag = annotations
            .get("io.containerd.image.name")
            .or_else(|| annotations.get("org.opencontainers.image.ref.name").filter(|r| r.contains([':', '/'])))
            .cloned();
        let tags = tags_for(options, archive_tag.into_iter().collect(), i);
        let id = store.commit_image(&config_bytes, &records, &tags)?;
        if seen.insert(id.clone()) {
            imported.push(ImportedImage { tags: store.tags_of(&id), id });
        }
    }
    Ok(imported)
}

fn import_rootfs(store: &ImageStore, path: &Path, options: &ImportOptions) -> Result<ImportedImage> {
    let file = std::fs::File::open(path).map_err(|e| EngineError::internal("cannot open the archive", e))?;
    let (blob_digest, size, _blob_lease) = store.put_blob(file, None, "the archive")?;
    // The diff id is known only once unpacked; the layer is leased inside `unpack_blob` until
    // then, and here until the image is committed.
    let diff_id = store.unpack_blob(&blob_digest, None, &mut |_| {})?;
    let _layer_lease = store.lease([diff_id.clone()]);
    let mut head = [0u8; 4];
    let mut blob = std::fs::File::open(store.blob_path(&blob_digest))
        .map_err(|e| EngineError::internal("cannot read a blob", e))?;
    let n = read_up_to(&mut blob, &mut head).map_err(|e| EngineError::internal("cannot read a blob", e))?;
    let media_type = match Compression::sniff(&head[..n]) {
        Compression::None => MEDIA_LAYER_TAR,
        Compression::Gzip => MEDIA_LAYER_GZIP,
        Compression::Zstd => MEDIA_LAYER_ZSTD,
    };
    let now = Utc::now();
    let config = OciImageConfig {
        architecture: host_architecture().into(),
        os: "linux".into(),
        created: Some(now),
        config: OciRunConfig {
            cmd: options.cmd.clone(),
            env: Some(vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()]),
            ..Default::default()
        },
        rootfs: OciRootfs { kind: "layers".into(), diff_ids: vec![diff_id.clone()] },
        history: vec![OciHistory {
            created: Some(now),
            created_by: Some("porthole import".into()),
            comment: Some("imported from a root filesystem tarball".into()),
            empty_layer: false,
        }],
    };
    let bytes = serde_json::to_vec(&config).map_err(|e| EngineError::internal("cannot encode the image config", e))?;
    let record =
        LayerRecord { diff_id, blob: Some(BlobRecord { digest: blob_digest, media_type: media_type.into(), size }) };
    let tags: Vec<String> = options.reference.iter().cloned().collect();
    let id = store.commit_image(&bytes, &[record], &tags)?;
    Ok(ImportedImage { tags: store.tags_of(&id), id })
}

/// Writes `images` (each with the tags to give it) as one `docker load`-able archive to `out`.
pub fn save(store: &ImageStore, images: &[(Image, Vec<String>)], out: impl Write) -> Result<()> {
    let write_err = |e: std::io::Error| EngineError::unavailable("the archive could not be written").with_source(e);
    let mut builder = tar::Builder::new(out);
    let mut written: HashSet<String> = HashSet::new();
    let mut save_manifest = Vec::new();
    let mut index_entries = Vec::new();
    let mut staged = Vec::new();
    for (image, tags) in images {
        let mut layer_paths = Vec::new();
        let mut layer_descs = Vec::new();
        for record in store.layer_records(image) {
            let (digest, media_type, path) = match &record.blob {
                Some(blob) => (blob.digest.clone(), oci_layer_type(&blob.media_type), store.blob_path(&blob.digest)),
                None => {
                    // Built here: regenerate the tar, which must hash to the diff id.
                    let staging = store.staging("save-layer");
                    let file = std::fs::File::create(staging.path())
                        .map_err(|e| EngineError::internal("cannot stage a layer", e))?;
                    let mut hashing = HashingWriter { inner: std::io::BufWriter::new(file), hasher: Sha256::new() };
                    write_dir_tar(&store.layer_dir(&record.diff_id), &mut hashing)
                        .map_err(|e| EngineError::internal("cannot export a layer", e))?;
                    hashing.inner.flush().map_err(|e| EngineError::internal("cannot export a layer", e))?;
                    let digest = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
                    if digest != record.diff_id {
                        return Err(EngineError::unavailable(format!(
                            "layer {} of image {} cannot be exported: its original archive was not kept",
                            short_digest(&record.diff_id),
                            short_digest(&image.id)
                        )));
                    }
                    let path = staging.path().to_path_buf();
                    staged.push(staging);
                    (digest, MEDIA_LAYER_TAR, path)
                }
            };
            let name = format!("blobs/sha256/{}", short_digest_full(&digest));
            let size = std::fs::metadata(&path).map_err(|e| EngineError::internal("cannot read a blob", e))?.len();
            if written.insert(digest.clone()) {
                let file = std::fs::File::open(&path).map_err(|e| EngineError::internal("cannot read a blob", e))?;
                append(&mut builder, &name, size, file).map_err(write_err)?;
            }
            layer_paths.push(name);
            layer_descs.push(OciDescriptor {
                media_type: media_type.into(),
                digest,
                size,
                annotations: None,
                platform: None,
            });
        }
        let config_bytes = store.config_bytes(&image.id)?;
        let config_name = format!("blobs/sha256/{}", short_digest_full(&image.id));
        if written.insert(image.id.clone()) {
            append(&mut builder, &config_name, config_bytes.len() as u64, config_bytes.as_slice())
                .map_err(write_err)?;
        }
        let manifest = OciIndexOrManifest {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_MANIFEST.into()),
            manifests: None,
            config: Some(OciDescriptor {
                media_type: MEDIA_OCI_CONFIG.into(),
                digest: image.id.clone(),
                size: config_bytes.len() as u64,
                annotations: None,
                platform: None,
            }),
            layers: Some(layer_descs),
        };
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| EngineError::internal("cannot encode a manifest", e))?;
        let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest_bytes)));
        if written.insert(manifest_digest.clone()) {
            let name = format!("blobs/sha256/{}", short_digest_full(&manifest_digest));
            append(&mut builder, &name, manifest_bytes.len() as u64, manifest_bytes.as_slice()).map_err(write_err)?;
        }
        let short_tags: Vec<String> =
            tags.iter().filter_map(|t| normalize_reference(t).ok()).filter(|t| !t.contains('@')).collect();
        let annotated: Vec<Option<&String>> =
            if short_tags.is_empty() { vec![None] } else { short_tags.iter().map(Some).collect() };
        for tag in annotated {
            let annotations = tag.map(|t| {
                let mut a = BTreeMap::new();
                a.insert("io.containerd.image.name".to_string(), t.clone());
                a.insert(
                    "org.opencontainers.image.ref.name".to_string(),
                    t.rsplit_once(':').map(|(_, v)| v.to_string()).unwrap_or_default(),
                );
                a
            });
            index_entries.push(OciDescriptor {
                media_type: MEDIA_OCI_MANIFEST.into(),
                digest: manifest_digest.clone(),
                size: manifest_bytes.len() as u64,
                annotations,
                platform: None,
            });
        }
        save_manifest.push(serde_json::json!({
            "Config": config_name,
            "RepoTags": short_tags.iter().map(|t| shorten_reference(t)).collect::<Vec<_>>(),
            "Layers": layer_paths,
        }));
    }
    let index = OciIndexOrManifest {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_INDEX.into()),
        manifests: Some(index_entries),
        config: None,
        layers: None,
    };
    let encode = |e| EngineError::internal("cannot encode the archive index", e);
    let documents = [
        ("oci-layout", serde_json::to_vec(&serde_json::json!({"imageLayoutVersion": "1.0.0"})).map_err(encode)?),
        ("index.json", serde_json::to_vec(&index).map_err(encode)?),
        ("manifest.json", serde_json::to_vec(&save_manifest).map_err(encode)?),
    ];
    for (name, bytes) in documents {
        append(&mut builder, name, bytes.len() as u64, bytes.as_slice()).map_err(write_err)?;
    }
    builder.into_inner().and_then(|mut w| w.flush()).map_err(write_err)?;
    Ok(())
}

/// The OCI layer media type for a kept blob's (Docker or OCI) media type.
fn oci_layer_type(media_type: &str) -> &'static str {
    if media_type.contains("zstd") {
        MEDIA_LAYER_ZSTD
    } else if media_type.contains("gzip") {
        MEDIA_LAYER_GZIP
    } else {
        MEDIA_LAYER_TAR
    }
}

fn append(builder: &mut tar::Builder<impl Write>, name: &str, size: u64, data: impl Read) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, name, data)
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A `Write` that hands what is written to an async reader in chunks of [`STREAM_CHUNK`]
/// (from a blocking task: it blocks while the reader is behind). `flush` sends what is left.
pub struct ChannelWriter<E> {
    buffer: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<std::result::Result<bytes::Bytes, E>>,
}

/// The size of the chunks a [`ChannelWriter`] sends.
pub const STREAM_CHUNK: usize = 256 << 10;

impl<E> ChannelWriter<E> {
    pub fn new(tx: tokio::sync::mpsc::Sender<std::result::Result<bytes::Bytes, E>>) -> Self {
        ChannelWriter { buffer: Vec::with_capacity(STREAM_CHUNK), tx }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(STREAM_CHUNK)));
        // The reader went away: stop writing.
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl<E> Write for ChannelWriter<E> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= STREAM_CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_symlinks_resolve_inside_the_archive_only() {
        assert_eq!(resolve_dots("a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(resolve_dots("a/../../etc/passwd"), None);
    }
}
