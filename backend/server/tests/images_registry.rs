//! Pulling from a real `docker-registry` on 127.0.0.1, filled with `skopeo`: a plain pull that
//! runs, resumes and reuses layers; a manifest list; whiteouts the container must honour; and
//! a registry serving a blob that does not match its digest. Needs root.

mod images_support;

use images_support::*;
use porthole_engine::api::*;

/// Run defaults of images without /data.
fn plain_config() -> serde_json::Value {
    serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]})
}

fn run_config() -> serde_json::Value {
    serde_json::json!({
        "Env": ["PATH=/bin", "GREETING=hello"],
        "Cmd": ["/bin/sh", "-c", "cat /data/hello"],
        "WorkingDir": "/data",
        "Labels": {"org.example.team": "images"},
        "ExposedPorts": {"8080/tcp": {}},
    })
}

/// busybox (gzip) + a data layer (zstd).
fn two_layer_image(layout: &OciLayout, marker: &str) -> serde_json::Value {
    let base = Layer::gzip(LayerTar::new().busybox().finish());
    let data = Layer::zstd(LayerTar::new().dir("data/", 0o755).file("data/hello", 0o644, marker.as_bytes()).finish());
    layout.image(&[base, data], host_arch(), run_config())
}

fn host_arch() -> &'static str {
    porthole_engine::native::images::host_architecture()
}

async fn insecure(engine: &porthole_engine::native::NativeEngine, registry: &Registry) {
    engine.configure_registry(&registry.host(), RegistryConfig { insecure: true, credentials: None }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_pull_stores_runs_and_is_not_downloaded_twice() {
    let registry = Registry::start(RegistryAuth::None);
    let src = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::new(src.path());
    let desc = two_layer_image(&layout, "from the registry\n");
    layout.tag(&desc, "v1");
    let reference = format!("{}/team/app:v1", registry.host());
    layout.push("v1", &reference, false, None);

    let root = temp_root();
    let engine = open(root.path()).await;
    // HTTPS unless the registry is configured as plain HTTP.
    let err = pull(&engine, &reference, PullOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.detail());
    insecure(&engine, &registry).await;

    let items = pull(&engine, &reference, PullOptions::default()).await.unwrap();
    let Some(PullProgress::Resolved { layers, .. }) = items.first() else { panic!("resolved first: {items:?}") };
    assert_eq!(layers.len(), 2);
    for layer in layers {
        let downloading: Vec<&LayerProgress> = items
            .iter()
            .filter_map(|i| match i {
                PullProgress::Layer(p) if p.digest == layer.digest && p.phase == LayerPhase::Downloading => Some(p),
                _ => None,
            })
            .collect();
        assert!(!downloading.is_empty(), "download progress for {}", layer.digest);
        assert_eq!(downloading.last().unwrap().done, layer.size, "the bar reaches the total");
        assert!(downloading.iter().all(|p| p.total == layer.size));
        assert!(items.iter().any(
            |i| matches!(i, PullProgress::Layer(p) if p.digest == layer.digest && p.phase == LayerPhase::Complete)
        ));
    }
    let PullProgress::Done { image_id, .. } = items.last().unwrap() else { unreachable!() };

    let details = engine.inspect_image(&reference).await.unwrap();
    assert_eq!(&details.summary.id, image_id);
    assert_eq!(details.summary.tags, vec![reference.clone()]);
    assert_eq!(
        details.config.cmd.as_deref(),
        Some(&["/bin/sh".to_string(), "-c".into(), "cat /data/hello".into()][..])
    );
    assert_eq!(details.config.working_dir.as_deref(), Some("/data"));
    assert_eq!(details.config.exposed_ports, vec!["8080/tcp".to_string()]);
    assert_eq!(details.config.labels.get("org.example.team").map(String::as_str), Some("images"));
    let history = engine.image_history(&reference).await.unwrap();
    assert_eq!(history.iter().map(|h| h.created_by.as_str()).collect::<Vec<_>>(), vec!["step 1", "step 0"]);

    // The image's config is the run default.
    let config = ContainerConfig { image: reference.clone(), ..Default::default() };
    let id = engine.create_container(config).await.unwrap();
    engine.start_container(&id).await.unwrap();
    assert_eq!(engine.wait_container(&id).await.unwrap(), 0);
    let inspect = engine.inspect_container(&id).await.unwrap();
    assert!(inspect.env.contains(&"GREETING=hello".to_string()));
    engine.remove_container(&id, RemoveOptions { force: true, volumes: true }).await.unwrap();
    assert_eq!(run(&engine, &reference, "cat /data/hello; pwd").await, "from the registry\n/data\n");

    // Again: every layer already exists, nothing is downloaded.
    let again = pull(&engine, &reference, PullOptions::default()).await.unwrap();
    assert!(
        again.iter().all(|i| !matches!(i, PullProgress::Layer(p) if p.phase == LayerPhase::Downloading)),
        "{again:?}"
    );
    assert_eq!(
        again.iter().filter(|i| matches!(i, PullProgress::Layer(p) if p.phase == LayerPhase::Exists)).count(),
        2
    );

    // A second image sharing the busybox layer stores only its own.
    let desc2 = two_layer_image(&layout, "second\n");
    layout.tag(&desc2, "v2");
    let reference2 = format!("{}/team/app:v2", registry.host());
    layout.push("v2", &reference2, false, None);
    let items = pull(&engine, &reference2, PullOptions::default()).await.unwrap();
    let phases: Vec<LayerPhase> = items
        .iter()
        .filter_map(|i| match i {
            PullProgress::Layer(p) => Some(p.phase),
            _ => None,
        })
        .collect();
    assert_eq!(phases.iter().filter(|p| **p == LayerPhase::Exists).count(), 1, "{phases:?}");
    assert_eq!(std::fs::read_dir(root.path().join("images/layers")).unwrap().count(), 3);
    assert_eq!(run(&engine, &reference2, "cat /data/hello").await, "second\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_resumes_and_a_corrupt_partial_stores_nothing() {
    let registry = Registry::start(RegistryAuth::None);
    let src = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::new(src.path());
    let big = (0..4_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect::<Vec<u8>>();
    let base = Layer::gzip(LayerTar::new().busybox().file("big", 0o644, &big).finish());
    let blob_digest = sha256(&base.blob);
    let half = base.blob[..base.blob.len() / 2].to_vec();
    let desc = layout.image(&[base], host_arch(), plain_config());
    layout.tag(&desc, "big");
    let reference = format!("{}/resume:big", registry.host());
    layout.push("big", &reference, false, None);

    // What an interrupted pull leaves: the first half of the blob in ingest/.
    let root = temp_root();
    let engine = open(root.path()).await;
    insecure(&engine, &registry).await;
    let partial = root.path().join(format!("images/ingest/{}.partial", &blob_digest[7..]));
    std::fs::write(&partial, &half).unwrap();
    let items = pull(&engine, &reference, PullOptions::default()).await.unwrap();
    let first = items
        .iter()
        .find_map(|i| match i {
            PullProgress::Layer(p) if p.phase == LayerPhase::Downloading => Some(p.done),
            _ => None,
        })
        .unwrap();
    assert_eq!(first, half.len() as u64, "the download resumed where it stopped");
    assert!(!partial.exists());
    assert_eq!(run(&engine, &reference, "cat /big | wc -c").await.trim(), big.len().to_string());

    // A partial download that is garbage: the pull fails on the digest and keeps nothing.
    let root = temp_root();
    let engine = open(root.path()).await;
    insecure(&engine, &registry).await;
    let partial = root.path().join(format!("images/ingest/{}.partial", &blob_digest[7..]));
    std::fs::write(&partial, vec![0u8; half.len()]).unwrap();
    let err = pull(&engine, &reference, PullOptions::default()).await.unwrap_err();
    assert!(err.message().contains("does not match its digest"), "{}", err.message());
    assert!(engine.list_images().await.unwrap().is_empty());
    assert!(tree(&root.path().join("images/layers")).is_empty());
    assert!(tree(&root.path().join("images/blobs/sha256")).is_empty());
    assert!(tree(&root.path().join("images/staging")).is_empty());
    assert!(!partial.exists(), "the bad partial download is gone");
    // And the next pull starts clean and succeeds.
    pull(&engine, &reference, PullOptions::default()).await.unwrap();
    assert_eq!(run(&engine, &reference, "cat /big | wc -c").await.trim(), big.len().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_list_resolves_to_the_wanted_platform() {
    let registry = Registry::start(RegistryAuth::None);
    let src = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::new(src.path());
    let mut images = Vec::new();
    for arch in ["amd64", "arm64", "ppc64le"] {
        let base = Layer::gzip(LayerTar::new().busybox().finish());
        let marker = Layer::gzip(LayerTar::new().file("arch", 0o644, arch.as_bytes()).finish());
        images.push((layout.image(&[base, marker], arch, plain_config()), arch));
    }
    let index = layout.platforms(&images);
    layout.tag(&index, "multi");
    let reference = format!("{}/multi:latest", registry.host());
    layout.push("multi", &reference, true, None);

    let root = temp_root();
    let engine = open(root.path()).await;
    insecure(&engine, &registry).await;
    pull(&engine, &reference, PullOptions::default()).await.unwrap();
    assert_eq!(engine.inspect_image(&reference).await.unwrap().architecture, host_arch());
    assert_eq!(run(&engine, &reference, "cat /arch").await, host_arch());

    let other = if host_arch() == "arm64" { "ppc64le" } else { "arm64" };
    let options = PullOptions { platform: Some(format!("linux/{other}")), ..Default::default() };
    pull(&engine, &reference, options).await.unwrap();
    let details = engine.inspect_image(&reference).await.unwrap();
    assert_eq!(details.architecture, other, "the tag now names the {other} image");

    let options = PullOptions { platform: Some("linux/s390x".into()), ..Default::default() };
    let err = pull(&engine, &reference, options).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.message().contains("linux/amd64, linux/arm64, linux/ppc64le"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_deleted_or_hidden_by_upper_layers_are_gone_in_the_container() {
    let registry = Registry::start(RegistryAuth::None);
    let src = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::new(src.path());
    let base = Layer::gzip(
        LayerTar::new()
            .busybox()
            .file("a", 0o644, b"A\n")
            .file("b", 0o644, b"B\n")
            .dir("d/", 0o755)
            .file("d/x", 0o644, b"x")
            .file("d/y", 0o644, b"y")
            .finish(),
    );
    let upper = Layer::gzip(
        LayerTar::new()
            .file(".wh.a", 0o644, b"")
            .dir("d/", 0o755)
            .file("d/.wh..wh..opq", 0o644, b"")
            .file("d/z", 0o644, b"z")
            .finish(),
    );
    // A third layer brings "a" back as a directory.
    let top = Layer::plain(LayerTar::new().dir("a/", 0o755).file("a/again", 0o644, b"again\n").finish());
    let desc = layout.image(&[base, upper, top], host_arch(), plain_config());
    layout.tag(&desc, "wh");
    let reference = format!("{}/whiteouts:wh", registry.host());
    layout.push("wh", &reference, false, None);

    let root = temp_root();
    let engine = open(root.path()).await;
    insecure(&engine, &registry).await;
    pull(&engine, &reference, PullOptions::default()).await.unwrap();
    let out =
        run(&engine, &reference, "ls /d; cat /b; ls /a; test -e /d/x || echo no-x; ls -a /d | grep -c wh || true")
            .await;
    assert_eq!(out, "z\nB\nagain\nno-x\n0\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_that_does_not_match_its_digest_fails_the_pull_and_stores_nothing() {
    let registry = Registry::start(RegistryAuth::None);
    let src = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::new(src.path());
    let base = Layer::gzip(LayerTar::new().busybox().finish());
    let data = Layer::gzip(LayerTar::new().file("data", 0o644, b"payload").finish());
    let bad_digest = sha256(&data.blob);
    let desc = layout.image(&[base, data], host_arch(), run_config());
    layout.tag(&desc, "bad");
    let reference = format!("{}/corrupt:bad", registry.host());
    layout.push("bad", &reference, false, None);
    // The registry now serves other bytes (same length) under that digest.
    let file = registry.blob_file(&bad_digest);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();

    let root = temp_root();
    let engine = open(root.path()).await;
    insecure(&engine, &registry).await;
    let err = pull(&engine, &reference, PullOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.detail());
    assert!(err.message().contains("does not match its digest"), "{}", err.message());
    assert!(err.message().contains(&bad_digest[7..19]), "the error names the layer: {}", err.message());
    assert!(engine.list_images().await.unwrap().is_empty(), "no image");
    assert!(engine.inspect_image(&reference).await.is_err());
    let images = root.path().join("images");
    assert!(!images.join("blobs/sha256").join(&bad_digest[7..]).exists(), "the bad blob is not stored");
    assert!(tree(&images.join("ingest")).is_empty(), "no partial download of bad data is kept");
    assert!(tree(&images.join("staging")).is_empty());
    assert!(tree(&images.join("configs")).is_empty());
    // The base layer did verify, but a pull of bad content keeps none of what it fetched.
    assert!(tree(&images.join("layers")).is_empty(), "no layer is kept: {:?}", tree(&images.join("layers")));
    assert!(tree(&images.join("blobs/sha256")).is_empty(), "no blob is kept");
    assert_eq!(engine.prune_images(true).await.unwrap().layers_deleted, 0, "nothing was left to prune");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_image_saved_by_porthole_loads_and_runs_in_docker() {
    let Some(docker) = DockerCli::find() else {
        eprintln!("no Docker daemon: the pull → save → docker load round trip was not tried");
        return;
    };
    let registry = Registry::start(RegistryAuth::None);
    let src = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::new(src.path());
    // Both layers gzip: the Docker of Debian 12 (20.10) loads no zstd layers.
    let base = Layer::gzip(LayerTar::new().busybox().finish());
    let data =
        Layer::gzip(LayerTar::new().dir("data/", 0o755).file("data/hello", 0o644, b"pulled, saved, loaded\n").finish());
    let desc = layout.image(&[base, data], host_arch(), run_config());
    layout.tag(&desc, "x");
    let reference = format!("{}/porthole-imgtest/exchange:1", registry.host());
    layout.push("x", &reference, false, None);

    let root = temp_root();
    let engine = open(root.path()).await;
    insecure(&engine, &registry).await;
    pull(&engine, &reference, PullOptions::default()).await.unwrap();
    let mut stream = engine.save_images(std::slice::from_ref(&reference)).await.unwrap();
    let mut archive = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        archive.extend_from_slice(&chunk.unwrap());
    }
    let file = src.path().join("saved.tar");
    std::fs::write(&file, archive).unwrap();

    let _ = docker.command().args(["rmi", "-f", &reference]).output();
    let loaded = docker.run(&["load", "-i", &file.to_string_lossy()]);
    assert!(loaded.contains(&reference), "docker load names the image: {loaded}");
    let out = docker.run(&["run", "--rm", "--network", "none", &reference]);
    docker.run(&["rmi", "-f", &reference]);
    assert_eq!(out, "pulled, saved, loaded\n", "the image's own command and working dir ran in Docker");
}
