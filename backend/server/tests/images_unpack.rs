//! Hostile layer archives: each is unpacked into `sentinel/target` and nothing in `sentinel`
//! outside the target (nor anything the archive points at) may change; bad archives fail
//! with an error naming the entry and the reason. Also whiteouts, setuid bits and limits.

mod images_support;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use images_support::{gzip, tree, LayerTar};
use porthole_engine::api::ErrorKind;
use porthole_engine::native::unpack::{unpack_layer, Limits};

/// A sentinel directory with a secret file beside the (empty) target.
struct Sentinel {
    dir: tempfile::TempDir,
}

impl Sentinel {
    fn new() -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("target")).unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/secret"), b"untouched").unwrap();
        Sentinel { dir }
    }

    fn target(&self) -> std::path::PathBuf {
        self.dir.path().join("target")
    }

    fn outside(&self) -> String {
        self.dir.path().join("outside").display().to_string()
    }

    /// Everything outside `target`, with the secret's content and mode.
    fn state(&self) -> (Vec<String>, Vec<u8>, u32) {
        let all: Vec<String> = tree(self.dir.path()).into_iter().filter(|p| !p.starts_with("target")).collect();
        let secret = self.dir.path().join("outside/secret");
        (all, std::fs::read(&secret).unwrap(), std::fs::metadata(&secret).unwrap().mode())
    }
}

/// Unpacks `archive` in a fresh sentinel; asserts nothing outside changed; returns the result.
fn unpack(archive: &[u8], limits: Limits) -> (Sentinel, Result<String, String>) {
    let sentinel = Sentinel::new();
    let before = sentinel.state();
    let result = unpack_layer(archive, &sentinel.target(), limits).map(|u| u.diff_id).map_err(|e| {
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", e.detail());
        e.message().to_string()
    });
    assert_eq!(sentinel.state(), before, "nothing outside the target changed");
    for host_file in ["/etc/passwd", "/tmp/pwned"] {
        assert!(!std::fs::read(host_file).unwrap_or_default().starts_with(b"pwned"), "{host_file} untouched");
    }
    (sentinel, result)
}

fn expect_refused(archive: Vec<u8>, entry: &str, reason: &str) {
    let (_sentinel, result) = unpack(&archive, Limits::default());
    let message = result.expect_err("the archive is refused");
    assert!(message.contains(&format!("{entry:?}")), "the error names the entry {entry:?}: {message}");
    assert!(message.contains(reason), "the error says why ({reason}): {message}");
}

#[test]
fn paths_that_climb_or_are_absolute_are_refused() {
    expect_refused(
        LayerTar::new().file("ok", 0o644, b"x").file("../escape", 0o644, b"pwned").finish(),
        "../escape",
        "\"..\"",
    );
    expect_refused(LayerTar::new().file("a/../../escape", 0o644, b"pwned").finish(), "a/../../escape", "\"..\"");
    expect_refused(LayerTar::new().file("/tmp/pwned", 0o644, b"pwned").finish(), "/tmp/pwned", "absolute");
}

#[test]
fn writes_never_go_through_symlinks() {
    let s = Sentinel::new();
    let outside = s.outside();
    drop(s);
    // An absolute link to the real outside directory, then a file through it.
    expect_refused(
        LayerTar::new().symlink("link", &outside).file("link/pwned", 0o644, b"pwned").finish(),
        "link/pwned",
        "symlink",
    );
    // A relative link climbing out, then a directory and a file through it.
    expect_refused(LayerTar::new().symlink("up", "../outside").dir("up/sub/", 0o755).finish(), "up/sub/", "symlink");
    // A chain of links.
    expect_refused(
        LayerTar::new().symlink("a", "b").symlink("b", "/").file("a/tmp/pwned", 0o644, b"pwned").finish(),
        "a/tmp/pwned",
        "symlink",
    );
    // A directory replaced by a symlink, then written into.
    expect_refused(
        LayerTar::new().dir("d/", 0o755).symlink("d", "/tmp").file("d/pwned", 0o644, b"pwned").finish(),
        "d/pwned",
        "symlink",
    );
    // A whiteout through a symlink.
    expect_refused(
        LayerTar::new().symlink("w", "/etc").file("w/.wh.passwd", 0o644, b"").finish(),
        "w/.wh.passwd",
        "symlink",
    );
}

#[test]
fn a_file_entry_over_a_symlink_replaces_the_link_not_its_target() {
    let s = Sentinel::new();
    let secret = format!("{}/secret", s.outside());
    drop(s);
    let archive = LayerTar::new().symlink("s", &secret).file("s", 0o644, b"pwned").finish();
    let (sentinel, result) = unpack(&archive, Limits::default());
    result.unwrap();
    let meta = std::fs::symlink_metadata(sentinel.target().join("s")).unwrap();
    assert!(meta.is_file());
    assert_eq!(std::fs::read(sentinel.target().join("s")).unwrap(), b"pwned");
}

#[test]
fn symlinks_pointing_outside_are_kept_as_data_and_never_followed() {
    let archive = LayerTar::new().symlink("abs", "/etc/shadow").symlink("rel", "../../../../etc").finish();
    let (sentinel, result) = unpack(&archive, Limits::default());
    result.unwrap();
    assert_eq!(std::fs::read_link(sentinel.target().join("abs")).unwrap(), Path::new("/etc/shadow"));
    assert_eq!(std::fs::read_link(sentinel.target().join("rel")).unwrap(), Path::new("../../../../etc"));
}

#[test]
fn hard_links_must_stay_inside_the_layer() {
    let s = Sentinel::new();
    let secret = format!("{}/secret", s.outside());
    drop(s);
    expect_refused(LayerTar::new().hardlink("h", &secret).finish(), "h", "absolute");
    expect_refused(LayerTar::new().hardlink("h", "../outside/secret").finish(), "h", "\"..\"");
    expect_refused(LayerTar::new().hardlink("h", "missing").finish(), "h", "not in the layer");
    // Through a symlink in the layer.
    expect_refused(
        LayerTar::new().symlink("l", "../outside").hardlink("h", "l/secret").finish(),
        "h",
        "not in the layer",
    );
    // A link to a symlink links the symlink itself.
    let archive =
        LayerTar::new().file("f", 0o644, b"data").hardlink("g", "f").symlink("s", &secret).hardlink("t", "s").finish();
    let (sentinel, result) = unpack(&archive, Limits::default());
    result.unwrap();
    let t = sentinel.target();
    assert_eq!(std::fs::metadata(t.join("f")).unwrap().ino(), std::fs::metadata(t.join("g")).unwrap().ino());
    assert!(std::fs::symlink_metadata(t.join("t")).unwrap().file_type().is_symlink());
}

#[test]
fn devices_are_dropped_except_overlay_whiteouts_and_setuid_stays_inside() {
    let archive = LayerTar::new()
        .device("sda", false, 8, 0)
        .device("null", true, 1, 3)
        .device("gone", true, 0, 0)
        .file("su", 0o4755, b"#!/bin/sh\n")
        .file("sg", 0o2755, b"#!/bin/sh\n")
        .dir("sticky/", 0o1777)
        .finish();
    let (sentinel, result) = unpack(&archive, Limits::default());
    result.unwrap();
    let t = sentinel.target();
    assert!(!t.join("sda").exists() && std::fs::symlink_metadata(t.join("null")).is_err(), "real devices are dropped");
    let gone = std::fs::symlink_metadata(t.join("gone")).unwrap();
    assert!(gone.file_type().is_char_device() && gone.rdev() == 0, "a 0:0 device is a whiteout");
    assert_eq!(std::fs::metadata(t.join("su")).unwrap().permissions().mode() & 0o7777, 0o4755);
    assert_eq!(std::fs::metadata(t.join("sg")).unwrap().permissions().mode() & 0o7777, 0o2755);
    assert_eq!(std::fs::metadata(t.join("sticky")).unwrap().permissions().mode() & 0o7777, 0o1777);
}

#[test]
fn whiteouts_become_overlay_whiteouts_and_opaque_directories() {
    let archive = LayerTar::new()
        .dir("etc/", 0o755)
        .file("etc/.wh.motd", 0o644, b"")
        .dir("var/cache/", 0o755)
        .file("var/cache/.wh..wh..opq", 0o644, b"")
        .file("var/cache/new", 0o644, b"n")
        .file(".wh..wh.plnk", 0o644, b"")
        .finish();
    let (sentinel, result) = unpack(&archive, Limits::default());
    result.unwrap();
    let t = sentinel.target();
    let motd = std::fs::symlink_metadata(t.join("etc/motd")).unwrap();
    assert!(motd.file_type().is_char_device() && motd.rdev() == 0);
    assert!(!t.join("etc/.wh.motd").exists() && !t.join("var/cache/.wh..wh..opq").exists());
    assert!(!t.join(".wh..wh.plnk").exists());
    // The opaque attribute (no marker file is left) hides a lower layer's directory contents
    // and the whiteout hides the lower file: read through the engine's own overlay view.
    let lower = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(lower.path().join("var/cache")).unwrap();
    std::fs::create_dir_all(lower.path().join("etc")).unwrap();
    std::fs::write(lower.path().join("var/cache/old"), b"o").unwrap();
    std::fs::write(lower.path().join("etc/motd"), b"m").unwrap();
    std::fs::write(lower.path().join("etc/hostname"), b"h").unwrap();
    let image = porthole_engine::native::images::Image {
        id: String::new(),
        config: Default::default(),
        layers: vec![lower.path().to_path_buf(), t.clone()],
    };
    assert_eq!(image.fs().read("/var/cache/new").as_deref(), Some(&b"n"[..]));
    assert_eq!(image.fs().read("/var/cache/old"), None, "the opaque directory hides the lower one");
    assert_eq!(image.fs().read("/etc/motd"), None, "the whiteout hides the lower file");
    assert_eq!(image.fs().read("/etc/hostname").as_deref(), Some(&b"h"[..]));
    expect_refused(LayerTar::new().file(".wh..", 0o644, b"").finish(), ".wh..", "whiteout");
}

#[test]
fn truncated_corrupt_and_oversized_archives_fail_and_say_why() {
    let big = vec![7u8; 3 << 20];
    let archive = LayerTar::new().file("small", 0o644, b"x").file("big", 0o644, &big).finish();

    // Cut in the middle of "big"'s data.
    let (_s, result) = unpack(&archive[..2 << 20], Limits::default());
    let message = result.unwrap_err();
    assert!(message.contains("\"big\"") && message.contains("truncated"), "{message}");

    // A gzip stream with flipped bytes in the middle.
    let mut compressed = gzip(
        &LayerTar::new().file("f", 0o644, &(0..200_000u32).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>()).finish(),
    );
    let middle = compressed.len() / 2;
    for b in &mut compressed[middle..middle + 16] {
        *b ^= 0x5a;
    }
    let (_s, result) = unpack(&compressed, Limits::default());
    let message = result.unwrap_err();
    assert!(message.contains("bad layer archive"), "{message}");

    // A gzip stream cut short.
    let compressed = gzip(&archive);
    let (_s, result) = unpack(&compressed[..compressed.len() - 100], Limits::default());
    assert!(result.is_err());

    // Larger than the limit, counted on the decompressed stream (a "zip bomb").
    let bomb = gzip(&LayerTar::new().file("zeros", 0o644, &vec![0u8; 8 << 20]).finish());
    assert!(bomb.len() < 100 << 10);
    let (_s, result) = unpack(&bomb, Limits { max_bytes: 1 << 20, max_entries: 100 });
    let message = result.unwrap_err();
    assert!(message.contains("\"zeros\"") && message.contains("limit"), "{message}");

    // Too many entries.
    let mut many = LayerTar::new();
    for i in 0..20 {
        many = many.file(&format!("f{i}"), 0o644, b"");
    }
    let (_s, result) = unpack(&many.finish(), Limits { max_bytes: 1 << 20, max_entries: 10 });
    assert!(result.unwrap_err().contains("more than 10 entries"));
}

#[test]
fn a_good_layer_unpacks_with_its_diff_id_whatever_the_compression() {
    let tar = LayerTar::new().dir("a/", 0o755).file("a/b", 0o640, b"hello").symlink("a/c", "b").finish();
    let diff_id = images_support::sha256(&tar);
    for blob in [tar.clone(), gzip(&tar), images_support::zstd(&tar)] {
        let (sentinel, result) = unpack(&blob, Limits::default());
        assert_eq!(result.unwrap(), diff_id);
        let t = sentinel.target();
        assert_eq!(std::fs::read(t.join("a/b")).unwrap(), b"hello");
        assert_eq!(std::fs::metadata(t.join("a/b")).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(std::fs::metadata(t.join("a/b")).unwrap().mtime(), 1_700_000_000);
    }
}
