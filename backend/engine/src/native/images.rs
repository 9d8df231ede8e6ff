//! The native engine's local image store: unpacked layers stored once by diff id, image configs
//! (OCI image config JSON) by image id, and tags. Also reads files *through* an image's layers
//! (whiteouts, opaque directories and symlinks confined to the image), and builds the starter
//! image from the host's busybox-static so a fresh install without internet can run something.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{EngineError, ImageDetails, ImageRunConfig, ImageSummary, Result};

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default)]
    pub config: OciRunConfig,
    pub rootfs: OciRootfs,
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

#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    pub fn open(root: &Path) -> Result<Self> {
        for dir in ["layers", "configs"] {
            std::fs::create_dir_all(root.join(dir))
                .map_err(|e| EngineError::internal("cannot create the image store", e))?;
        }
        Ok(ImageStore { root: root.to_path_buf() })
    }

    fn tags_path(&self) -> PathBuf {
        self.root.join("repositories.json")
    }

    fn tags(&self) -> BTreeMap<String, String> {
        read_json(&self.tags_path()).unwrap_or_default()
    }

    fn config_path(&self, id: &str) -> PathBuf {
        self.root.join("configs").join(format!("{}.json", hex_of(id)))
    }

    pub fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.root.join("layers").join(hex_of(diff_id))
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

    pub fn list(&self) -> Vec<Image> {
        self.image_ids().iter().filter_map(|id| self.load(id).ok()).collect()
    }

    /// Tags `id` as `reference`, moving the tag if it pointed elsewhere.
    pub fn tag(&self, id: &str, reference: &str) -> Result<()> {
        let normal = normalize_reference(reference)?;
        let mut tags = self.tags();
        tags.insert(normal, id.to_string());
        write_json_atomic(&self.tags_path(), &tags).map_err(|e| EngineError::internal("cannot save image tags", e))
    }

    /// Removes an image's tags and config, and the layers no other image uses.
    pub fn remove(&self, image: &Image) -> Result<()> {
        let mut tags = self.tags();
        tags.retain(|_, v| v != &image.id);
        write_json_atomic(&self.tags_path(), &tags).map_err(|e| EngineError::internal("cannot save image tags", e))?;
        std::fs::remove_file(self.config_path(&image.id))
            .map_err(|e| EngineError::internal("cannot remove the image", e))?;
        let still_used: Vec<PathBuf> = self.list().into_iter().flat_map(|i| i.layers).collect();
        for layer in &image.layers {
            if !still_used.contains(layer) {
                let _ = std::fs::remove_dir_all(layer);
            }
        }
        Ok(())
    }

    /// Stores a single-layer image whose root filesystem is the directory `rootfs` (moved into
    /// the store), with `run` as its run defaults, and tags it. Returns the image id.
    pub fn add_directory_image(&self, rootfs: &Path, run: OciRunConfig, reference: &str) -> Result<String> {
        let diff_id =
            format!("sha256:{}", tar_digest(rootfs).map_err(|e| EngineError::internal("cannot hash the layer", e))?);
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
            rootfs: OciRootfs { kind: "layers".into(), diff_ids: vec![diff_id] },
        };
        let bytes =
            serde_json::to_vec(&config).map_err(|e| EngineError::internal("cannot encode the image config", e))?;
        let id = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let path = self.config_path(&id);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| EngineError::internal("cannot store the image config", e))?;
        self.tag(&id, reference)?;
        Ok(id)
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
        let staging = self.root.join(format!(".starter-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let result = build_busybox_rootfs(busybox, &staging)
            .map_err(|e| EngineError::internal("cannot assemble the starter image", e))
            .and_then(|()| {
                let run = OciRunConfig {
                    cmd: Some(vec!["sh".into()]),
                    env: Some(vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()]),
                    ..Default::default()
                };
                self.add_directory_image(&staging, run, STARTER_IMAGE)
            });
        let _ = std::fs::remove_dir_all(&staging);
        result.map(Some)
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

/// The digest of a deterministic tar of `dir`: what the layer's diff id would be.
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
    let mut builder = tar::Builder::new(HashWriter(Sha256::new()));
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir)?;
    let writer = builder.into_inner()?;
    Ok(hex::encode(writer.0.finalize()))
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
