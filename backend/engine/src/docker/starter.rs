//! The `busybox:latest` starter image inside a Docker daemon, without a registry: a root
//! filesystem of the same shape as the native engine's starter image (the host's static busybox,
//! a symlink per applet, `/etc/passwd`, `/etc/group`, `/etc/hostname`) is written as a tar in
//! memory and imported (`docker import` semantics, `POST /images/create?fromSrc=-`) with
//! `CMD ["sh"]` and the usual `PATH`.

use std::collections::BTreeSet;
use std::path::Path;

use bollard::query_parameters::CreateImageOptions;
use futures::StreamExt;

use super::convert::docker_error;
use super::DockerEngine;
use crate::api::{EngineError, Images, Result};

/// Where a host's busybox-static usually is.
pub const BUSYBOX_PATHS: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n";
const GROUP: &[u8] = b"root:x:0:\ndaemon:x:1:\ntty:x:5:\nusers:x:100:\nnogroup:x:65534:\n";

impl DockerEngine {
    /// Makes sure `reference` (e.g. `busybox:latest`) exists in the daemon, importing it from the
    /// host's busybox when it does not. Returns the image id, or `None` when the image is missing
    /// and this host has no busybox.
    pub async fn ensure_busybox_image(&self, reference: &str) -> Result<Option<String>> {
        if let Ok(image) = self.inspect_image(reference).await {
            return Ok(Some(image.summary.id));
        }
        let Some(busybox) = BUSYBOX_PATHS.iter().map(Path::new).find(|p| p.is_file()) else {
            return Ok(None);
        };
        self.load_busybox_image(busybox, reference).await.map(Some)
    }

    /// Imports a busybox root filesystem built from the `busybox` binary as `reference`,
    /// replacing the tag if it exists. Returns the image id.
    pub async fn load_busybox_image(&self, busybox: &Path, reference: &str) -> Result<String> {
        let (repo, tag) = match reference.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
            _ => (reference.to_string(), "latest".to_string()),
        };
        let busybox = busybox.to_path_buf();
        let archive = tokio::task::spawn_blocking(move || busybox_rootfs_tar(&busybox))
            .await
            .map_err(|e| EngineError::internal("image task failed", e))?
            .map_err(|e| EngineError::internal("cannot assemble the busybox image", e))?;
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repo),
            tag: Some(tag),
            changes: vec![
                r#"CMD ["sh"]"#.into(),
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ],
            ..Default::default()
        };
        let mut progress =
            self.client().create_image(Some(options), Some(bollard::body_full(archive.into())), None).boxed();
        while let Some(message) = progress.next().await {
            message.map_err(|e| docker_error("cannot import the busybox image", e))?;
        }
        Ok(self.inspect_image(reference).await?.summary.id)
    }
}

/// The root filesystem as an uncompressed tar, every entry owned by root with a fixed time.
fn busybox_rootfs_tar(busybox: &Path) -> std::io::Result<Vec<u8>> {
    let binary = std::fs::read(busybox)?;
    let listing = std::process::Command::new(busybox).arg("--list-full").output()?;
    if !listing.status.success() {
        return Err(std::io::Error::other(format!("{} --list-full failed", busybox.display())));
    }
    let applets: BTreeSet<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|a| !a.is_empty() && a != "bin/busybox" && !a.split('/').any(|part| part == ".." || part.is_empty()))
        .collect();

    let mut dirs: BTreeSet<String> =
        ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "home", "proc", "sys", "dev", "var/tmp"]
            .into_iter()
            .map(String::from)
            .collect();
    for applet in &applets {
        if let Some((parent, _)) = applet.rsplit_once('/') {
            dirs.insert(parent.to_string());
        }
    }
    // Every ancestor gets its own entry, parents before children (sorted order does that).
    for dir in dirs.clone() {
        let mut ancestor = dir.as_str();
        while let Some((parent, _)) = ancestor.rsplit_once('/') {
            dirs.insert(parent.to_string());
            ancestor = parent;
        }
    }

    let mut builder = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    };
    for dir in &dirs {
        let mode = if dir == "tmp" || dir == "var/tmp" { 0o1777 } else { 0o755 };
        let mut h = header(tar::EntryType::Directory, mode, 0);
        builder.append_data(&mut h, format!("{dir}/"), std::io::empty())?;
    }
    let mut h = header(tar::EntryType::Regular, 0o755, binary.len() as u64);
    builder.append_data(&mut h, "bin/busybox", binary.as_slice())?;
    for applet in &applets {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        builder.append_link(&mut h, applet, "/bin/busybox")?;
    }
    for (path, data) in [("etc/passwd", PASSWD), ("etc/group", GROUP), ("etc/hostname", &b"busybox\n"[..])] {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        builder.append_data(&mut h, path, data)?;
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rootfs_has_busybox_its_applets_and_accounts() {
        let Some(busybox) = BUSYBOX_PATHS.iter().map(Path::new).find(|p| p.is_file()) else {
            panic!("busybox-static is required (scripts/install-deps.sh installs it)");
        };
        let archive = busybox_rootfs_tar(busybox).unwrap();
        let mut reader = tar::Archive::new(std::io::Cursor::new(archive));
        let mut seen = std::collections::HashMap::new();
        for entry in reader.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().trim_end_matches('/').to_string();
            let link = entry.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
            seen.insert(path, (entry.header().entry_type(), entry.header().mode().unwrap(), link));
        }
        assert_eq!(seen["bin/busybox"].0, tar::EntryType::Regular);
        assert_eq!(seen["bin/sh"], (tar::EntryType::Symlink, 0o777, Some("/bin/busybox".into())));
        assert_eq!(seen["tmp"].1, 0o1777);
        assert_eq!(seen["etc/passwd"].0, tar::EntryType::Regular);
        assert!(seen.contains_key("usr/bin"), "parents of applets have entries");
    }
}
