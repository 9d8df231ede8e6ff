//! Import and save: `docker save` archives written by a real client (skopeo's docker-archive,
//! and `docker save` itself when a daemon is present), OCI layouts (directory and tarball),
//! root filesystem tarballs; saved archives read back by skopeo (and `docker load` when a
//! daemon is present); tags, history, removal and prune. Needs root.

mod images_support;

use std::path::Path;

use futures::StreamExt;
use images_support::*;
use porthole_engine::api::*;
use porthole_engine::native::NativeEngine;

fn arch() -> &'static str {
    porthole_engine::native::images::host_architecture()
}

/// An OCI layout with a three-layer image (busybox, data, a whiteout) tagged `name`.
fn layout_with_image(dir: &Path, name: &str) -> OciLayout {
    let mut layout = OciLayout::new(dir);
    let base = Layer::gzip(LayerTar::new().busybox().file("gone", 0o644, b"x").finish());
    let data = Layer::plain(LayerTar::new().dir("srv/", 0o755).file("srv/msg", 0o644, b"archived\n").finish());
    // gzip: Docker's archive format has no zstd layers (the registry tests pull zstd ones).
    let wh = Layer::gzip(LayerTar::new().file(".wh.gone", 0o644, b"").finish());
    let desc = layout.image(
        &[base, data, wh],
        arch(),
        serde_json::json!({"Cmd": ["/bin/cat", "/srv/msg"], "Env": ["PATH=/bin"]}),
    );
    layout.tag(&desc, name);
    layout
}

async fn check_runs(engine: &NativeEngine, image: &str) {
    assert_eq!(run(engine, image, "cat /srv/msg; test -e /gone || echo gone").await, "archived\ngone\n");
}

async fn stream_of(path: &Path) -> ImageSource {
    let bytes = tokio::fs::read(path).await.unwrap();
    let chunks: Vec<Result<bytes::Bytes>> =
        bytes.chunks(100_000).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
    ImageSource::Stream(futures::stream::iter(chunks).boxed())
}

async fn save_to(engine: &NativeEngine, references: &[String], path: &Path) {
    let mut stream = engine.save_images(references).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    std::fs::write(path, out).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_save_archives_from_a_real_client_import_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout_with_image(&dir.path().join("layout"), "v1");
    let archive = dir.path().join("saved.tar");
    let src = format!("oci:{}:v1", layout.dir.display());
    let dst = format!("docker-archive:{}:example/app:1", archive.display());
    skopeo(&["copy", &src, &dst]);

    let root = temp_root();
    let engine = open(root.path()).await;
    let report = engine.import_image(ImageSource::Path(archive.clone()), ImportOptions::default()).await.unwrap();
    assert_eq!(report.format, ArchiveFormat::DockerSave);
    assert_eq!(report.images.len(), 1);
    assert_eq!(report.images[0].tags, vec!["example/app:1".to_string()]);
    check_runs(&engine, "example/app:1").await;

    // The same archive, gzip-compressed and streamed (an upload), into a fresh store.
    let gz = dir.path().join("saved.tar.gz");
    std::fs::write(&gz, gzip(&std::fs::read(&archive).unwrap())).unwrap();
    let root2 = temp_root();
    let engine2 = open(root2.path()).await;
    let options = ImportOptions { reference: Some("renamed:2".into()), cmd: None };
    let report2 = engine2.import_image(stream_of(&gz).await, options).await.unwrap();
    assert_eq!(report2.images[0].id, report.images[0].id, "the same config bytes, the same image id");
    assert_eq!(report2.images[0].tags, vec!["renamed:2".to_string()]);
    check_runs(&engine2, "renamed:2").await;
    assert!(tree(&root2.path().join("images/staging")).is_empty());

    if let Some(docker) = DockerCli::find() {
        // `docker save` output of an image Docker made itself (a commit on top of the one we
        // just loaded into it): the native engine imports and runs it.
        docker.run(&["load", "-i", &archive.to_string_lossy()]);
        let name = format!("porthole-archive-test-{}", std::process::id());
        docker.run(&["run", "--network", "none", "--name", &name, "example/app:1", "sh", "-c", "echo docker > /made"]);
        docker.run(&["commit", "--change", "CMD [\"cat\", \"/made\"]", &name, "example/app:committed"]);
        docker.run(&["rm", "-f", &name]);
        let from_docker = dir.path().join("from-docker.tar");
        docker.run(&["save", "-o", &from_docker.to_string_lossy(), "example/app:1", "example/app:committed"]);
        docker.run(&["rmi", "-f", "example/app:1", "example/app:committed"]);
        let root3 = temp_root();
        let engine3 = open(root3.path()).await;
        let report = engine3.import_image(ImageSource::Path(from_docker), ImportOptions::default()).await.unwrap();
        assert_eq!(report.images.len(), 2, "{:?}", report.images);
        check_runs(&engine3, "example/app:1").await;
        assert_eq!(run(&engine3, "example/app:committed", "cat /made").await, "docker\n");
    } else {
        eprintln!("no Docker daemon: the `docker save` import ran on skopeo's docker-archive only");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_layouts_import_from_a_directory_and_a_tarball() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout_with_image(&dir.path().join("layout"), "v1");
    let root = temp_root();
    let engine = open(root.path()).await;

    // A bare tag annotation is no image name: untagged unless a reference is given.
    let report = engine.import_image(ImageSource::Path(layout.dir.clone()), ImportOptions::default()).await.unwrap();
    assert_eq!(report.format, ArchiveFormat::OciLayout);
    assert!(report.images[0].tags.is_empty());
    let options = ImportOptions { reference: Some("oci/dir:1".into()), cmd: None };
    engine.import_image(ImageSource::Path(layout.dir.clone()), options).await.unwrap();
    check_runs(&engine, "oci/dir:1").await;

    // skopeo's oci-archive (a tar of a layout) names the image fully.
    let archive = dir.path().join("oci.tar");
    let src = format!("oci:{}:v1", layout.dir.display());
    let dst = format!("oci-archive:{}:registry.example/team/app:3", archive.display());
    skopeo(&["copy", &src, &dst]);
    let report = engine.import_image(ImageSource::Path(archive), ImportOptions::default()).await.unwrap();
    assert_eq!(report.format, ArchiveFormat::OciLayout);
    // The same image as before (same config): it now has both tags.
    assert_eq!(report.images[0].tags, vec!["oci/dir:1".to_string(), "registry.example/team/app:3".into()]);
    check_runs(&engine, "registry.example/team/app:3").await;

    // A layout whose blob does not match its digest is refused and stores nothing.
    let bad = tempfile::tempdir().unwrap();
    let bad_layout = layout_with_image(bad.path(), "v1");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bad_layout.dir.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(bad_layout.dir.join("blobs/sha256").join(&manifest_digest[7..])).unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][1]["digest"].as_str().unwrap();
    let layer_file = bad_layout.dir.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&layer_file).unwrap();
    bytes[600] ^= 1;
    std::fs::write(&layer_file, bytes).unwrap();
    let root2 = temp_root();
    let engine2 = open(root2.path()).await;
    let options = ImportOptions { reference: Some("bad:1".into()), cmd: None };
    let err = engine2.import_image(ImageSource::Path(bad_layout.dir.clone()), options).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("does not match its digest"), "{}", err.message());
    assert!(engine2.list_images().await.unwrap().is_empty());
    assert!(tree(&root2.path().join("images/staging")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_filesystem_tarball_imports_like_docker_import() {
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("rootfs.tar.gz");
    std::fs::write(&tarball, gzip(&LayerTar::new().busybox().file("hello", 0o644, b"rootfs\n").finish())).unwrap();
    let root = temp_root();
    let engine = open(root.path()).await;
    let options =
        ImportOptions { reference: Some("local/rootfs:1".into()), cmd: Some(vec!["/bin/cat".into(), "/hello".into()]) };
    let report = engine.import_image(ImageSource::Path(tarball), options).await.unwrap();
    assert_eq!(report.format, ArchiveFormat::RootfsTarball);
    let details = engine.inspect_image("local/rootfs:1").await.unwrap();
    assert_eq!(details.config.cmd, Some(vec!["/bin/cat".to_string(), "/hello".into()]));
    let id = engine
        .create_container(ContainerConfig { image: "local/rootfs:1".into(), ..Default::default() })
        .await
        .unwrap();
    engine.start_container(&id).await.unwrap();
    assert_eq!(engine.wait_container(&id).await.unwrap(), 0);
    let mut logs = engine.logs(&id, LogOptions { stdout: true, stderr: true, ..Default::default() }).await.unwrap();
    let record = logs.next().await.unwrap().unwrap();
    assert_eq!(&record.data[..], b"rootfs\n");

    // A tarball with a hostile entry: refused, naming it; nothing stored.
    let hostile = dir.path().join("hostile.tar");
    std::fs::write(&hostile, LayerTar::new().busybox().file("../../../tmp/porthole-pwned", 0o644, b"x").finish())
        .unwrap();
    let err = engine
        .import_image(ImageSource::Path(hostile), ImportOptions { reference: Some("hostile:1".into()), cmd: None })
        .await
        .unwrap_err();
    assert!(err.message().contains("../../../tmp/porthole-pwned") && err.message().contains(".."), "{}", err.message());
    assert!(!Path::new("/tmp/porthole-pwned").exists());
    assert!(engine.inspect_image("hostile:1").await.is_err());
    assert!(tree(&root.path().join("images/staging")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_archives_are_read_by_skopeo_and_load_back() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout_with_image(&dir.path().join("layout"), "v1");
    let root = temp_root();
    let engine = open(root.path()).await;
    let options = ImportOptions { reference: Some("team/app:1".into()), cmd: None };
    let imported = engine.import_image(ImageSource::Path(layout.dir.clone()), options).await.unwrap();
    let id = imported.images[0].id.clone();

    let saved = dir.path().join("saved.tar");
    save_to(&engine, &["team/app:1".to_string()], &saved).await;
    // skopeo reads it as `docker load` would (manifest.json) and checks every layer digest.
    let out = dir.path().join("out");
    let src = format!("docker-archive:{}", saved.display());
    let dst = format!("oci:{}:copied", out.display());
    skopeo(&["copy", &src, &dst]);
    let root2 = temp_root();
    let engine2 = open(root2.path()).await;
    let back = engine2.import_image(ImageSource::Path(saved.clone()), ImportOptions::default()).await.unwrap();
    assert_eq!(back.images[0].id, id, "the image id survives save and load");
    assert_eq!(back.images[0].tags, vec!["team/app:1".to_string()]);
    check_runs(&engine2, "team/app:1").await;
    let copied = ImportOptions { reference: Some("copied:1".into()), cmd: None };
    engine2.import_image(ImageSource::Path(out), copied).await.unwrap();
    check_runs(&engine2, "copied:1").await;

    // The starter image (built here, no kept blob) saves too: its layer is regenerated.
    let root3 = temp_root();
    let with_starter = porthole_engine::native::NativeEngine::open(porthole_engine::native::NativeConfig {
        root: root3.path().to_path_buf(),
        shim_exe: env!("CARGO_BIN_EXE_porthole").into(),
        starter_image: true,
    })
    .await
    .unwrap();
    let starter = dir.path().join("busybox.tar");
    save_to(&with_starter, &["busybox".to_string()], &starter).await;
    let root4 = temp_root();
    let engine4 = open(root4.path()).await;
    engine4.import_image(ImageSource::Path(starter.clone()), ImportOptions::default()).await.unwrap();
    assert_eq!(run(&engine4, "busybox", "echo starter").await, "starter\n");

    if let Some(docker) = DockerCli::find() {
        docker.run(&["load", "-i", &saved.to_string_lossy()]);
        assert_eq!(docker.run(&["run", "--rm", "--network", "none", "team/app:1"]), "archived\n");
        docker.run(&["rmi", "-f", "team/app:1"]);
    } else {
        eprintln!("no Docker daemon: `docker load` of the saved archive was not tried (skopeo read it)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_history_removal_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout_with_image(&dir.path().join("layout"), "v1");
    let root = temp_root();
    let engine = open(root.path()).await;
    let options = ImportOptions { reference: Some("app:1".into()), cmd: None };
    let id = engine.import_image(ImageSource::Path(layout.dir.clone()), options).await.unwrap().images[0].id.clone();

    engine.tag_image("app:1", "docker.io/library/mine:latest").await.unwrap();
    engine.tag_image(&id[7..19], "registry.example:5000/x/y:z").await.unwrap();
    let listed = engine.list_images().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].tags, vec!["app:1", "mine:latest", "registry.example:5000/x/y:z"]);
    assert_eq!(engine.tag_image("app:1", "Bad Name").await.unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(engine.tag_image("nope:1", "x:1").await.unwrap_err().kind(), ErrorKind::NotFound);
    let history = engine.image_history("mine").await.unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].created_by, "step 2");
    assert!(history.iter().all(|h| h.layer.is_some()));

    // One of several tags: only untagged.
    engine.remove_image("mine", false).await.unwrap();
    engine.remove_image("registry.example:5000/x/y:z", false).await.unwrap();
    assert_eq!(engine.inspect_image("app:1").await.unwrap().summary.tags, vec!["app:1"]);

    // In use: refused; forced: untagged, kept for the container.
    let cid = engine.create_container(ContainerConfig { image: "app:1".into(), ..Default::default() }).await.unwrap();
    let err = engine.remove_image("app:1", false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    engine.remove_image("app:1", true).await.unwrap();
    assert!(engine.inspect_image("app:1").await.is_err());
    assert!(engine.inspect_image(&id).await.unwrap().summary.tags.is_empty());
    let report = engine.prune_images(true).await.unwrap();
    assert!(report.images_deleted.is_empty(), "a container still uses it");
    engine.start_container(&cid).await.unwrap();
    assert_eq!(engine.wait_container(&cid).await.unwrap(), 0);
    engine.remove_container(&cid, RemoveOptions::default()).await.unwrap();

    // Unused and untagged: pruned with its layers and blobs.
    let report = engine.prune_images(false).await.unwrap();
    assert_eq!(report.images_deleted, vec![id]);
    assert_eq!(report.layers_deleted, 3);
    assert!(report.space_reclaimed > 1 << 20);
    for sub in ["layers", "blobs/sha256", "configs", "records", "staging"] {
        assert!(tree(&root.path().join("images").join(sub)).is_empty(), "{sub} is empty");
    }

    // A removed image with a layer shared by another keeps that layer.
    let a = ImportOptions { reference: Some("a:1".into()), cmd: None };
    engine.import_image(ImageSource::Path(layout.dir.clone()), a).await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let mut other_layout = OciLayout::new(other.path());
    let base = Layer::gzip(LayerTar::new().busybox().file("gone", 0o644, b"x").finish());
    let desc = other_layout.image(&[base], arch(), serde_json::json!({"Cmd": ["/bin/sh"]}));
    other_layout.tag(&desc, "b");
    let b = ImportOptions { reference: Some("b:1".into()), cmd: None };
    engine.import_image(ImageSource::Path(other_layout.dir.clone()), b).await.unwrap();
    assert_eq!(tree(&root.path().join("images/layers")).iter().filter(|p| !p.contains('/')).count(), 3);
    engine.remove_image("a:1", false).await.unwrap();
    assert_eq!(tree(&root.path().join("images/layers")).iter().filter(|p| !p.contains('/')).count(), 1);
    assert_eq!(run(&engine, "b:1", "echo still-runs").await, "still-runs\n");
}
