//! The image half of the engine interface through the Docker backend, against a real daemon
//! (found as `conformance_docker.rs` finds it: `PORTHOLE_TEST_DOCKER_HOST`, required under CI):
//! a pull from a local `docker-registry` (127.0.0.0/8 registries are plain HTTP to dockerd by
//! default) with its progress and the image run afterwards; tag, history and a save → import
//! round trip; OCI layout and root filesystem imports; bad archives; pruning untagged images;
//! registry settings that keep no secret visible. Test images come from `images_support`
//! (busybox-static layers, pushed with `skopeo`).
//!
//! Every test uses names of its own (`porthole-imgtest/…`) and removes what it made; the tests
//! run one at a time, since they share the daemon.

mod images_support;

use std::time::Duration;

use futures::StreamExt;
use images_support::*;
use porthole_engine::api::*;
use porthole_engine::docker::DockerEngine;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The engine on the test daemon, or `None` (after saying so) when there is none and that is
/// allowed here.
async fn docker() -> Option<DockerEngine> {
    let required = std::env::var_os("CI").is_some_and(|v| !v.is_empty())
        || std::env::var("PORTHOLE_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let Some(host) = std::env::var("PORTHOLE_TEST_DOCKER_HOST").ok().filter(|h| !h.is_empty()) else {
        assert!(
            !required,
            "PORTHOLE_TEST_DOCKER_HOST is not set, but CI/PORTHOLE_REQUIRE_DOCKER requires the Docker image tests: \
             run them through scripts/test.sh, which starts a daemon"
        );
        eprintln!(
            "skipped: no docker daemon (set PORTHOLE_TEST_DOCKER_HOST, e.g. unix:///run/porthole-test/docker.sock)"
        );
        return None;
    };
    Some(
        DockerEngine::connect(&host)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the Docker daemon at {host}: {}", e.detail())),
    )
}

fn host_arch() -> &'static str {
    porthole_engine::native::images::host_architecture()
}

/// Removes images by reference, ignoring those already gone.
async fn remove_all(engine: &DockerEngine, references: &[&str]) {
    for reference in references {
        match engine.remove_image(reference, true).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => panic!("remove {reference}: {}", e.detail()),
        }
    }
}

/// Runs `cmd` (or the image's default command) in a container of `image`; returns its output.
async fn run(engine: &DockerEngine, image: &str, cmd: Option<&str>) -> String {
    let config = ContainerConfig {
        image: image.into(),
        cmd: cmd.map(|c| vec!["/bin/sh".into(), "-c".into(), c.into()]),
        ..Default::default()
    };
    let id = engine.create_container(config).await.unwrap_or_else(|e| panic!("create: {}", e.detail()));
    engine.start_container(&id).await.unwrap_or_else(|e| panic!("start: {}", e.detail()));
    let code = tokio::time::timeout(Duration::from_secs(60), engine.wait_container(&id))
        .await
        .expect("the container exits within 60 s")
        .unwrap();
    let mut logs = engine.logs(&id, LogOptions { stdout: true, stderr: true, ..Default::default() }).await.unwrap();
    let mut out = Vec::new();
    while let Some(Ok(record)) = tokio::time::timeout(Duration::from_secs(30), logs.next()).await.expect("logs end") {
        out.extend_from_slice(&record.data);
    }
    engine.remove_container(&id, RemoveOptions { force: true, volumes: true }).await.unwrap();
    assert_eq!(code, 0, "the container failed: {}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&out).into_owned()
}

/// busybox (gzip) + a data layer (gzip): Docker 20.10 pulls and loads gzip layers.
fn two_layer_image(layout: &OciLayout, marker: &str) -> serde_json::Value {
    let base = Layer::gzip(LayerTar::new().busybox().finish());
    let data = Layer::gzip(LayerTar::new().dir("data/", 0o755).file("data/hello", 0o644, marker.as_bytes()).finish());
    layout.image(
        &[base, data],
        host_arch(),
        serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["/bin/sh", "-c", "cat /data/hello"]}),
    )
}

async fn collect(mut stream: futures::stream::BoxStream<'static, Result<bytes::Bytes>>) -> Vec<u8> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Some(chunk) = tokio::time::timeout_at(deadline, stream.next()).await.expect("the archive ends in 120 s") {
        out.extend_from_slice(&chunk.expect("archive chunk"));
    }
    out
}

fn stream_of(bytes: Vec<u8>) -> ImageSource {
    let chunks: Vec<Result<bytes::Bytes>> =
        bytes.chunks(100_000).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
    ImageSource::Stream(futures::stream::iter(chunks).boxed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_from_a_local_registry_reports_progress_and_runs() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(engine) = docker().await else { return };
    let registry = Registry::start(RegistryAuth::None);
    let src = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::new(src.path());
    let desc = two_layer_image(&layout, "pulled through docker\n");
    layout.tag(&desc, "v1");
    let reference = format!("{}/porthole-imgtest/app:v1", registry.host());
    layout.push("v1", &reference, false, None);

    let items = pull(&engine, &reference, PullOptions::default()).await.unwrap_or_else(|e| panic!("{}", e.detail()));
    let Some(PullProgress::Resolved { reference: resolved, manifest_digest, layers }) = items.first() else {
        panic!("resolved first: {items:?}")
    };
    assert_eq!(resolved, &reference);
    assert!(manifest_digest.starts_with("sha256:"), "{manifest_digest}");
    assert_eq!(layers.len(), 2, "{items:?}");
    for layer in layers {
        let of_layer: Vec<&LayerProgress> = items
            .iter()
            .filter_map(|i| match i {
                PullProgress::Layer(p) if p.digest == layer.digest => Some(p),
                _ => None,
            })
            .collect();
        assert!(of_layer.iter().any(|p| p.phase == LayerPhase::Downloading), "downloading {}: {items:?}", layer.digest);
        let complete = of_layer.last().unwrap();
        assert_eq!(complete.phase, LayerPhase::Complete, "{items:?}");
        assert!(complete.total > 0 && complete.done == complete.total, "{complete:?}");
    }
    assert!(items[1..items.len() - 1].iter().all(|i| matches!(i, PullProgress::Layer(_))), "{items:?}");
    let Some(PullProgress::Done { reference: done_ref, image_id }) = items.last() else { unreachable!() };
    assert_eq!(done_ref, &reference);
    let details = engine.inspect_image(&reference).await.unwrap();
    assert_eq!(&details.summary.id, image_id);
    assert_eq!(details.summary.tags, vec![reference.clone()]);
    assert_eq!(run(&engine, &reference, None).await, "pulled through docker\n");

    // Pulled again: the same shape, every layer already there.
    let again = pull(&engine, &reference, PullOptions::default()).await.unwrap();
    assert!(matches!(again.first(), Some(PullProgress::Resolved { layers, .. }) if layers.len() == 2), "{again:?}");
    assert!(
        again.iter().all(|i| !matches!(i, PullProgress::Layer(p) if p.phase == LayerPhase::Downloading)),
        "{again:?}"
    );
    assert!(matches!(again.last(), Some(PullProgress::Done { image_id: id, .. }) if id == image_id));

    // Unknown tag and unknown repository: not found, as on the native engine.
    for missing in [
        format!("{}/porthole-imgtest/app:nope", registry.host()),
        format!("{}/porthole-imgtest/none:v1", registry.host()),
    ] {
        let err = pull(&engine, &missing, PullOptions::default()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{missing}: {}", err.detail());
    }
    // A registry nobody listens on.
    let err = pull(&engine, &format!("127.0.0.1:{}/x:1", free_port()), PullOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.detail());
    // A bad platform is refused before anything is asked.
    let bad = PullOptions { platform: Some("linux".into()), ..Default::default() };
    assert_eq!(engine.pull_image(&reference, bad).await.err().unwrap().kind(), ErrorKind::InvalidArgument);

    remove_all(&engine, &[&reference]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_history_save_and_import_round_trip() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(engine) = docker().await else { return };
    let (first, second) = ("porthole-imgtest/round:1", "porthole-imgtest/round-copy:2");
    remove_all(&engine, &[first, second]).await;

    // An OCI layout directory, named by the caller: its own name is replaced.
    let src = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::new(src.path());
    let desc = two_layer_image(&layout, "round trip\n");
    layout.tag(&desc, "porthole-imgtest/layout-own-name:x");
    let options = ImportOptions { reference: Some(first.into()), cmd: None };
    let report = engine
        .import_image(ImageSource::Path(src.path().into()), options)
        .await
        .unwrap_or_else(|e| panic!("{}", e.detail()));
    assert_eq!(report.format, ArchiveFormat::OciLayout);
    assert_eq!(report.images.len(), 1);
    assert_eq!(report.images[0].tags, vec![first.to_string()]);
    let id = report.images[0].id.clone();
    assert!(
        engine.inspect_image("porthole-imgtest/layout-own-name:x").await.is_err(),
        "the archive's tag was replaced"
    );

    engine.tag_image(first, second).await.unwrap();
    let details = engine.inspect_image(second).await.unwrap();
    assert_eq!(details.summary.id, id);
    assert_eq!(details.summary.tags.len(), 2, "{:?}", details.summary.tags);
    assert_eq!(
        engine.tag_image("porthole-imgtest/absent:1", "porthole-imgtest/x:1").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(engine.tag_image(first, "Bad Name").await.unwrap_err().kind(), ErrorKind::InvalidArgument);

    let history = engine.image_history(first).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0].created_by, "step 1", "newest first");
    let layers: Vec<Option<String>> = history.iter().rev().map(|h| h.layer.clone()).collect();
    assert_eq!(layers, details.layers.iter().cloned().map(Some).collect::<Vec<_>>());
    assert!(history.iter().all(|h| h.size > 0));

    // Saved by both tags, removed, imported back from a stream (gzip-compressed).
    let archive = collect(engine.save_images(&[first.to_string(), second.to_string()]).await.unwrap()).await;
    remove_all(&engine, &[first, second]).await;
    assert_eq!(engine.inspect_image(&id).await.unwrap_err().kind(), ErrorKind::NotFound);
    let report = engine
        .import_image(stream_of(gzip(&archive)), ImportOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{}", e.detail()));
    assert_eq!(report.format, ArchiveFormat::DockerSave);
    assert_eq!(report.images.len(), 1);
    assert_eq!(report.images[0].id, id, "the same image comes back");
    let mut tags = report.images[0].tags.clone();
    tags.sort();
    assert_eq!(tags, vec![second.to_string(), first.to_string()]);
    assert_eq!(run(&engine, first, None).await, "round trip\n");

    // Saving what does not exist fails before any byte; nothing to save is a bad request.
    assert_eq!(
        engine.save_images(&["porthole-imgtest/absent:1".into()]).await.err().unwrap().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(engine.save_images(&[]).await.err().unwrap().kind(), ErrorKind::InvalidArgument);
    remove_all(&engine, &[first, second]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rootfs_tarball_imports_with_its_command_and_untagged_ones_are_pruned() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(engine) = docker().await else { return };
    let reference = "porthole-imgtest/rootfs:1";
    remove_all(&engine, &[reference]).await;
    let rootfs = LayerTar::new().busybox().file("motd", 0o644, b"imported rootfs\n").finish();

    let options = ImportOptions { reference: Some(reference.into()), cmd: Some(vec!["cat".into(), "/motd".into()]) };
    let report =
        engine.import_image(stream_of(gzip(&rootfs)), options).await.unwrap_or_else(|e| panic!("{}", e.detail()));
    assert_eq!(report.format, ArchiveFormat::RootfsTarball);
    assert_eq!(report.images.len(), 1);
    assert_eq!(report.images[0].tags, vec![reference.to_string()]);
    let details = engine.inspect_image(reference).await.unwrap();
    assert_eq!(details.config.cmd, Some(vec!["cat".to_string(), "/motd".to_string()]));
    assert!(details.config.env.iter().any(|e| e.starts_with("PATH=")), "{:?}", details.config.env);
    assert_eq!(run(&engine, reference, None).await, "imported rootfs\n");

    // Without a name: an untagged image, which a plain prune removes (and a tagged one stays).
    let untagged = LayerTar::new().busybox().file("motd", 0o644, b"dangling\n").finish();
    let report = engine.import_image(stream_of(untagged), ImportOptions::default()).await.unwrap();
    assert!(report.images[0].tags.is_empty(), "{report:?}");
    let dangling = report.images[0].id.clone();
    let pruned = engine.prune_images(false).await.unwrap();
    assert!(pruned.images_deleted.contains(&dangling), "{pruned:?}");
    assert!(pruned.space_reclaimed > 0, "{pruned:?}");
    assert_eq!(engine.inspect_image(&dangling).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert!(engine.inspect_image(reference).await.is_ok(), "a tagged image survives a plain prune");
    remove_all(&engine, &[reference]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_archives_are_invalid_and_say_why() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(engine) = docker().await else { return };
    let tar_of = |files: &[(&str, &[u8])]| {
        let mut t = LayerTar::new();
        for (name, data) in files {
            t = t.file(name, 0o644, data);
        }
        t.finish()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (tar_of(&[("manifest.json", b"not json")]), "manifest.json is not valid"),
        (tar_of(&[("manifest.json", b"[]")]), "lists no image"),
        (
            tar_of(&[("manifest.json", br#"[{"Config":"c.json","RepoTags":null,"Layers":["l/layer.tar"]}]"#)]),
            "\"c.json\" is not in the archive",
        ),
        (tar_of(&[("oci-layout", b"{}"), ("index.json", br#"{"manifests":[]}"#)]), "index.json lists no image"),
        (b"\x1f\x8b not really gzip".to_vec(), "cannot decompress"),
    ];
    for (archive, reason) in cases {
        let err = engine.import_image(stream_of(archive), ImportOptions::default()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{reason}: {}", err.detail());
        assert!(err.message().contains(reason), "{reason}: {}", err.message());
    }
    // A layer that does not match the config's diff id: refused by the daemon, named as such.
    let src = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::new(src.path());
    let mut layer = Layer::gzip(LayerTar::new().busybox().finish());
    layer.diff_id = sha256(b"something else");
    let desc = layout.image(&[layer], host_arch(), serde_json::json!({}));
    layout.tag(&desc, "porthole-imgtest/bad:1");
    let err = engine.import_image(ImageSource::Path(src.path().into()), ImportOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{}", err.detail());
    assert!(err.message().starts_with("bad image archive"), "{}", err.message());
    assert!(!err.message().contains("/var/lib"), "no daemon paths: {}", err.message());
    // Not a layout directory.
    let empty = tempfile::tempdir().unwrap();
    let err = engine.import_image(ImageSource::Path(empty.path().into()), ImportOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_are_remembered_without_showing_secrets() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(engine) = docker().await else { return };
    let creds = RegistryCredentials { username: "ci".into(), secret: "hunter2".into() };
    engine
        .configure_registry("127.0.0.1:5999", RegistryConfig { insecure: true, credentials: Some(creds.clone()) })
        .await
        .unwrap();
    let listed = engine.list_registries().await.unwrap();
    assert_eq!(
        listed,
        vec![RegistrySummary { registry: "127.0.0.1:5999".into(), insecure: true, username: Some("ci".into()) }]
    );
    assert!(!format!("{listed:?}").contains("hunter2"));
    // Plain HTTP is the daemon's choice: a registry it treats as HTTPS cannot be made plain here.
    let err = engine
        .configure_registry("registry.example.com", RegistryConfig { insecure: true, credentials: None })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotImplemented);
    assert!(err.message().contains("--insecure-registry"), "{}", err.message());
    let empty = RegistryCredentials { username: "ci".into(), secret: String::new() };
    let err = engine.configure_registry("ghcr.io", RegistryConfig { insecure: false, credentials: Some(empty) }).await;
    assert_eq!(err.unwrap_err().kind(), ErrorKind::InvalidArgument);
    engine.remove_registry("127.0.0.1:5999").await.unwrap();
    assert_eq!(engine.remove_registry("127.0.0.1:5999").await.unwrap_err().kind(), ErrorKind::NotFound);
    assert!(engine.list_registries().await.unwrap().is_empty());
}
