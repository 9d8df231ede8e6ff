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
