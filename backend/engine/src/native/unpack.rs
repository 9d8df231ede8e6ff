//! Unpacking one image layer (a tar, plain, gzip or zstd) into an empty directory, treating the
//! archive as hostile.
//!
//! Every write is made relative to a directory descriptor that was opened component by
//! component with `O_NOFOLLOW | O_DIRECTORY`, so a symlink in the archive (or anything else)
//! can never redirect a write outside the target: an entry whose path goes *through* a symlink
//! or a file is refused. Paths with `..` or a leading `/` are refused; hard links must name an
//! entry already unpacked in the same layer. Symlinks are stored verbatim, as Docker does (a
//! container resolves them inside its own root) and nothing here ever follows them.
//!
//! Layer whiteouts become overlayfs's: `.wh.NAME` a 0:0 character device `NAME`, and
//! `.wh..wh..opq` the `trusted.overlay.opaque=y` attribute on its directory. Other device
//! nodes are dropped (a container gets its devices from the runtime, never from an image).
//! Modes, setuid/setgid bits included, owners and times are kept as in the archive.
//!
//! The decompressed stream is hashed on the way through: the result is the layer's diff id,
//! which callers check against the image config before the layer is put in place. Sizes and
//! entry counts are bounded, and every error names the entry and the reason. zstd layers are
//! read with ruzstd's single-frame decoder: a multi-frame stream would hash short, so its diff
//! id check fails (never a silently partial layer).

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use sha2::{Digest, Sha256};

use crate::api::{EngineError, Result};

/// The overlayfs attribute that makes a directory hide the lower layers' contents.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Bounds on what one layer may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Decompressed bytes (the whole tar stream, headers included).
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 64 << 30, max_entries: 2_000_000 }
    }
}

/// What unpacking a layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// `sha256:` of the decompressed tar stream: the layer's diff id.
    pub diff_id: String,
    /// Decompressed size in bytes.
    pub size: u64,
}

/// How a layer blob is compressed, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps `blob` (plain, gzip or zstd, detected from its first bytes) in a decompressing reader.
pub fn decompress<'a>(blob: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(256 << 10, blob);
    let head = buffered.fill_buf()?;
    Ok(match Compression::sniff(head) {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            ruzstd::StreamingDecoder::new(buffered)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad zstd stream: {e}")))?,
        ),
    })
}

/// Hashes and counts what passes through, and stops with an error past `limit` bytes.
struct Measured<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
}

impl<R: Read> Read for Measured<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count > self.limit {
            return Err(std::io::Error::other(format!("the layer is larger than the limit of {} bytes", self.limit)));
        }
        Ok(n)
    }
}

fn bad(entry: &str, reason: impl std::fmt::Display) -> EngineError {
    EngineError::invalid(format!("bad layer archive: entry {entry:?}: {reason}"))
}

/// Unpacks the layer `blob` (plain, gzip or zstd tar) into `target`, an existing empty
/// directory, and returns its diff id. On error `target` holds a partial layer: callers unpack
/// into a staging directory and delete it.
pub fn unpack_layer(blob: impl Read, target: &Path, limits: Limits) -> Result<Unpacked> {
    let root = rustix::fs::open(target, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| EngineError::internal("cannot open the layer directory", std::io::Error::from(e)))?;
    let reader =
        decompress(blob).map_err(|e| EngineError::invalid(format!("bad layer archive: cannot decompress: {e}")))?;
    let mut measured = Measured { inner: reader, hasher: Sha256::new(), count: 0, limit: limits.max_bytes };
    let mut dir_times: Vec<(Vec<String>, u64)> = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut measured);
        let entries = archive.entries().map_err(|e| bad("(start)", e))?;
        let mut writer = Writer { root: &root, cache: None };
        let mut last = String::from("(start)");
        let mut count = 0u64;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(&format!("after {last}"), e))?;
            count += 1;
            if count > limits.max_entries {
                return Err(bad(&last, format!("the layer has more than {} entries", limits.max_entries)));
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            writer.apply(&mut entry, &name, &mut dir_times).map_err(|e| match e {
                EntryError::Archive(reason) => bad(&name, reason),
                EntryError::Host(err) => EngineError::internal(format!("cannot unpack layer entry {name:?}"), err),
            })?;
            last = name;
        }
        // Directory times last: creating their children changed them.
        for (parts, mtime) in dir_times.iter().rev() {
            let _ = writer.set_times(parts, *mtime);
        }
    }
    // Whatever follows the end-of-archive marker is part of the diff id too.
    std::io::copy(&mut measured, &mut std::io::sink()).map_err(|e| bad("(end of archive)", e))?;
    Ok(Unpacked { diff_id: format!("sha256:{}", hex::encode(measured.hasher.finalize())), size: measured.count })
}

enum EntryError {
    /// The archive is at fault: shown to the user with the entry's name.
    Archive(String),
    /// The host failed (disk full, permissions): logged.
    Host(std::io::Error),
}

impl From<std::io::Error> for EntryError {
    fn from(e: std::io::Error) -> Self {
        EntryError::Host(e)
    }
}

impl From<rustix::io::Errno> for EntryError {
    fn from(e: rustix::io::Errno) -> Self {
        EntryError::Host(e.into())
    }
}

fn archive_err(reason: impl Into<String>) -> EntryError {
    EntryError::Archive(reason.into())
}

/// Splits an archive path into plain components: `./a//b/` → `[a, b]`. Refuses `..`, absolute
/// paths and NUL bytes. An empty result is the layer root itself.
pub fn clean_path(raw: &str) -> std::result::Result<Vec<String>, String> {
    if raw.starts_with('/') {
        return Err("absolute paths are not allowed in a layer".into());
    }
    if raw.contains('\0') {
        return Err("the path contains a NUL byte".into());
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("the path contains \"..\"".into()),
            other => parts.push(other.to_string()),
        }
    }
    Ok(parts)
}

struct Writer<'a> {
    root: &'a OwnedFd,
    /// The last parent directory opened, by its components: tar entries come grouped by directory.
    cache: Option<(Vec<String>, OwnedFd)>,
}

impl Writer<'_> {
    /// Opens the directory `parts` beneath the root without following any symlink, creating
    /// missing directories (mode 0755, as Docker does) when `create`.
    fn open_dir(&mut self, parts: &[String], create: bool) -> std::result::Result<OwnedFd, EntryError> {
        if let Some((cached, fd)) = &self.cache {
            if cached.as_slice() == parts {
                return Ok(fd.try_clone()?);
            }
        }
        let mut current = self.root.try_clone()?;
        for (i, part) in parts.iter().enumerate() {
            let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
            current = match rustix::fs::openat(&current, part.as_str(), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) if create => {
                    rustix::fs::mkdirat(&current, part.as_str(), Mode::from_raw_mode(0o755))?;
                    rustix::fs::openat(&current, part.as_str(), flags, Mode::empty())?
                }
                Err(rustix::io::Errno::NOENT) => {
                    return Err(archive_err(format!("{:?} does not exist in the layer", parts[..=i].join("/"))))
                }
                Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                    return Err(archive_err(format!(
                        "{:?} is a symlink or not a directory: the path would leave the layer",
                        parts[..=i].join("/")
                    )))
                }
                Err(e) => return Err(e.into()),
            };
        }
        self.cache = Some((parts.to_vec(), current.try_clone()?));
        Ok(current)
    }

    /// Removes whatever is at `name` in `dir` unless both it and the new entry are directories.
    /// Returns whether a directory is left in place.
    fn clear(&mut self, dir: &OwnedFd, parts: &[String], new_is_dir: bool) -> std::result::Result<bool, EntryError> {
        let name = parts.last().expect("a named entry").as_str();
        let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(rustix::io::Errno::NOENT) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
        if is_dir && new_is_dir {
            return Ok(true);
        }
        if is_dir {
            // Its contents go too; the cached descriptor may be inside it.
            self.cache = None;
            remove_tree(dir, name)?;
        } else {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
        }
        Ok(false)
    }

    fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw_name: &str,
        dir_times: &mut Vec<(Vec<String>, u64)>,
    ) -> std::result::Result<(), EntryError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let parts = clean_path(raw_name).map_err(archive_err)?;
        let header = entry.header();
        let mode = header.mode().map_err(|e| archive_err(format!("bad mode: {e}")))? & 0o7777;
        let uid = header.uid().map_err(|e| archive_err(format!("bad uid: {e}")))?;
        let gid = header.gid().map_err(|e| archive_err(format!("bad gid: {e}")))?;
        let mtime = header.mtime().unwrap_or(0);
        let owner = (
            Some(rustix::fs::Uid::from_raw(u32::try_from(uid).map_err(|_| archive_err("uid out of range"))?)),
            Some(rustix::fs::Gid::from_raw(u32::try_from(gid).map_err(|_| archive_err("gid out of range"))?)),
        );
        let Some((name, parent_parts)) = parts.split_last() else {
            // The layer root itself (`./`): only its metadata applies.
            if kind.is_dir() {
                rustix::fs::fchown(self.root, owner.0, owner.1)?;
                rustix::fs::fchmod(self.root, Mode::from_raw_mode(mode))?;
            }
            return Ok(());
        };
        if name.len() > 255 {
            return Err(archive_err("a path component is longer than 255 bytes"));
        }
        let parent = self.open_dir(parent_parts, true)?;

        // Whiteouts: translated, never stored under their own names.
        if name == OPAQUE_MARKER {
            rustix::fs::fsetxattr(&parent, OPAQUE_XATTR, b"y", XattrFlags::empty())?;
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(WHITEOUT_PREFIX) {
                // aufs bookkeeping (`.wh..wh.plnk`, ...): meaningless to overlayfs.
                return Ok(());
            }
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(archive_err("a whiteout must name a file"));
            }
            let mut target = parent_parts.to_vec();
            target.push(hidden.to_string());
            self.clear(&parent, &target, false)?;
            make_whiteout(&parent, hidden)?;
            return Ok(());
        }

        if kind.is_dir() {
            if !self.clear(&parent, &parts, true)? {
                rustix::fs::mkdirat(&parent, name.as_str(), Mode::from_raw_mode(0o700))?;
            }
            let dir = self.open_dir(&parts, false)?;
            rustix::fs::fchown(&dir, owner.0, owner.1)?;
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))?;
            apply_xattrs(entry, &dir)?;
            dir_times.push((parts, mtime));
        } else if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            self.clear(&parent, &parts, false)?;
            let file = rustix::fs::openat(
                &parent,
                name.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let expected = entry.size();
            let mut out = std::fs::File::from(file);
            let written =
                std::io::copy(entry, &mut out).map_err(|e| archive_err(format!("cannot read the data: {e}")))?;
            if written != expected {
                return Err(archive_err(format!("truncated: {written} of {expected} bytes")));
            }
            // chown first: it clears setuid/setgid bits, which the chmod then sets.
            rustix::fs::fchown(&out, owner.0, owner.1)?;
            rustix::fs::fchmod(&out, Mode::from_raw_mode(mode))?;
            apply_xattrs(entry, &out)?;
            let time = timestamps(mtime);
            rustix::fs::futimens(&out, &time)?;
        } else if kind.is_symlink() {
            let link = entry.link_name_bytes().ok_or_else(|| archive_err("a symlink without a target"))?;
            let link =
                std::str::from_utf8(&link).map_err(|_| archive_err("the symlink target is not UTF-8"))?.to_string();
            if link.is_empty() || link.contains('\0') {
                return Err(archive_err("the symlink target is empty or has a NUL byte"));
            }
            self.clear(&parent, &parts, false)?;
            rustix::fs::symlinkat(link.as_str(), &parent, name.as_str())?;
            rustix::fs::chownat(&parent, name.as_str(), owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)?;
            let time = timestamps(mtime);
            rustix::fs::utimensat(&parent, name.as_str(), &time, AtFlags::SYMLINK_NOFOLLOW)?;
        } else if kind.is_hard_link() {
            let link = entry.link_name_bytes().ok_or_else(|| archive_err("a hard link without a target"))?;
            let link = String::from_utf8_lossy(&link).into_owned();
            let target = clean_path(&link).map_err(|reason| archive_err(format!("hard link to {link:?}: {reason}")))?;
            let Some((target_name, target_parent)) = target.split_last() else {
                return Err(archive_err("a hard link to the layer root"));
            };
            if target == parts {
                return Ok(());
            }
            let target_dir = self
                .open_dir(target_parent, false)
                .map_err(|_| archive_err(format!("hard link to {link:?}, which is not in the layer")))?;
            let stat = rustix::fs::statat(&target_dir, target_name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|_| archive_err(format!("hard link to {link:?}, which is not in the layer")))?;
            if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                return Err(archive_err(format!("hard link to the directory {link:?}")));
            }
            let parent = self.open_dir(parent_parts, false)?;
            self.clear(&parent, &parts, false)?;
            // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
            rustix::fs::linkat(&target_dir, target_name.as_str(), &parent, name.as_str(), AtFlags::empty())?;
        } else if kind.is_character_special() || kind.is_block_special() {
            let major = header.device_major().ok().flatten().unwrap_or(1);
            let minor = header.device_minor().ok().flatten().unwrap_or(1);
            if kind.is_character_special() && major == 0 && minor == 0 {
                // Already an overlayfs whiteout (images built on overlay-backed daemons).
                self.clear(&parent, &parts, false)?;
                make_whiteout(&parent, name)?;
            } else {
                tracing::debug!(entry = raw_name, "device node in a layer dropped");
            }
        } else if kind.is_fifo() {
            self.clear(&parent, &parts, false)?;
            rustix::fs::mknodat(&parent, name.as_str(), FileType::Fifo, Mode::from_raw_mode(mode), 0)?;
            rustix::fs::chownat(&parent, name.as_str(), owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)?;
        } else {
            return Err(archive_err(format!("unsupported entry type {:?}", kind.as_byte() as char)));
        }
        Ok(())
    }

    fn set_times(&mut self, parts: &[String], mtime: u64) -> std::result::Result<(), EntryError> {
        let dir = self.open_dir(parts, false)?;
        rustix::fs::futimens(&dir, &timestamps(mtime))?;
        Ok(())
    }
}

fn timestamps(mtime: u64) -> Timestamps {
    let t = Timespec { tv_sec: mtime.min(i64::MAX as u64) as i64, tv_nsec: 0 };
    Timestamps { last_access: t, last_modification: t }
}

/// An overlayfs whiteout: a character device 0:0.
fn make_whiteout(dir: &OwnedFd, name: &str) -> std::result::Result<(), EntryError> {
    rustix::fs::mknodat(dir, name, FileType::CharacterDevice, Mode::empty(), rustix::fs::makedev(0, 0))?;
    Ok(())
}

/// Extended attributes from PAX headers that an image may legitimately carry. `trusted.*`
/// (overlayfs's own) and `security.selinux` are not taken from an archive.
fn apply_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, fd: impl AsFd) -> std::result::Result<(), EntryError> {
    let Ok(Some(extensions)) = entry.pax_extensions() else {
        return Ok(());
    };
    for ext in extensions.flatten() {
        let Ok(key) = ext.key() else { continue };
        let Some(name) = key.strip_prefix("SCHILY.xattr.") else { continue };
        if name == "security.capability" || name.starts_with("user.") {
            rustix::fs::fsetxattr(&fd, name, ext.value_bytes(), XattrFlags::empty())?;
        }
    }
    Ok(())
}

/// Removes the directory `name` in `dir` and everything in it, without following symlinks.
fn remove_tree(dir: &OwnedFd, name: &str) -> std::result::Result<(), EntryError> {
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut children = Vec::new();
    {
        let mut listing = rustix::fs::Dir::read_from(&sub)?;
        while let Some(child) = listing.read() {
            let child = child?;
            let child_name = child.file_name().to_string_lossy().into_owned();
            if child_name != "." && child_name != ".." {
                children.push((child_name, child.file_type() == FileType::Directory));
            }
        }
    }
    for (child, is_dir) in children {
        if is_dir {
            remove_tree(&sub, &child)?;
        } else {
            rustix::fs::unlinkat(&sub, child.as_str(), AtFlags::empty())?;
        }
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_and_escapes_refused() {
        assert_eq!(clean_path("./a//b/").unwrap(), vec!["a", "b"]);
        assert!(clean_path("./").unwrap().is_empty());
        assert!(clean_path("/etc/passwd").is_err());
        assert!(clean_path("a/../../b").is_err());
        assert!(clean_path("..").is_err());
    }

    #[test]
    fn compression_is_sniffed_from_magic_bytes() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(Compression::sniff(b"etc/passwd"), Compression::None);
    }
}
