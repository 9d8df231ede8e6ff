//! A container's root filesystem: the image's read-only layers stacked under one writable
//! layer with overlayfs, mounted by the shim before the container starts and unmounted after.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags, MsFlags};

/// Characters that would break overlayfs's comma/colon separated option string.
fn check_option_path(path: &Path) -> io::Result<&str> {
    let text = path.to_str().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "layer path is not UTF-8"))?;
    if text.contains([',', ':']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("layer path {text:?} contains ',' or ':', which overlayfs cannot take"),
        ));
    }
    Ok(text)
}

/// The overlayfs mount options for `layers` (lowest first).
pub fn overlay_options(layers: &[PathBuf], upper: &Path, work: &Path) -> io::Result<String> {
    if layers.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "an image needs at least one layer"));
    }
    // overlayfs lists the topmost lower layer first.
    let lower = layers.iter().rev().map(|l| check_option_path(l)).collect::<io::Result<Vec<_>>>()?;
    Ok(format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        check_option_path(upper)?,
        check_option_path(work)?
    ))
}

pub fn mount_overlay(layers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
    let options = overlay_options(layers, upper, work)?;
    if options.len() >= 4000 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many image layers for one overlay mount"));
    }
    for dir in [upper, work, target] {
        std::fs::create_dir_all(dir)?;
    }
    nix::mount::mount(Some("overlay"), target, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
        .map_err(io::Error::from)
}

/// Unmounts `target` if something is mounted there; a target with nothing mounted is fine.
pub fn unmount(target: &Path) -> io::Result<()> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Whether `target` is a mount point (per /proc/self/mountinfo).
pub fn is_mounted(target: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Some(target) = target.to_str() else {
        return false;
    };
    info.lines().any(|line| line.split(' ').nth(4) == Some(target))
}

/// Creates the working directory `cwd` inside the mounted root filesystem when the image lacks
/// it, as Docker does (it lands in the container's writable layer). Every step is resolved
/// inside the root, so a symlink in the image cannot point the creation at the host.
pub fn ensure_working_dir(rootfs: &Path, cwd: &str) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let root = std::fs::File::open(rootfs)?;
    let mut prefix = String::new();
    for component in cwd.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if component == ".." {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the working directory contains '..'"));
        }
        let parent = super::sys::open_dir_in_root(root.as_fd(), if prefix.is_empty() { "/" } else { &prefix })?;
        match nix::sys::stat::mkdirat(
            Some(std::os::fd::AsRawFd::as_raw_fd(&parent)),
            component,
            nix::sys::stat::Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        prefix.push('/');
        prefix.push_str(component);
    }
    // The result must be a directory (reached inside the root).
    super::sys::open_dir_in_root(root.as_fd(), if prefix.is_empty() { "/" } else { &prefix }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_list_the_top_layer_first() {
        let layers = vec![PathBuf::from("/l/base"), PathBuf::from("/l/top")];
        let options = overlay_options(&layers, Path::new("/c/upper"), Path::new("/c/work")).unwrap();
        assert_eq!(options, "lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work");
    }

    #[test]
    fn paths_that_would_break_the_options_are_refused() {
        let err = overlay_options(&[PathBuf::from("/a:b")], Path::new("/u"), Path::new("/w")).unwrap_err();
        assert!(err.to_string().contains("/a:b"));
        assert!(overlay_options(&[], Path::new("/u"), Path::new("/w")).is_err());
    }
}
