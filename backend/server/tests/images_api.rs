//! The image routes through a real server: configure a registry (its secret never comes back),
//! pull from a real `docker-registry` on 127.0.0.1 with a progress stream, import an uploaded
//! root filesystem tarball and run it, tag, history, save as an archive, prune, and clear
//! errors for bad input. Needs root.

mod common;
mod images_support;

use std::time::Instant;

use common::{server, LIMIT};
use futures::StreamExt;
use images_support::{LayerTar, OciLayout, Registry, RegistryAuth};
use serde_json::{json, Value};

/// Reads a server-sent event stream to its end: (event, JSON data) pairs.
async fn read_events(response: reqwest::Response) -> Vec<(String, Value)> {
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let began = Instant::now();
    while let Some(chunk) = tokio::time::timeout(LIMIT, body.next()).await.expect("pull events in time") {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        assert!(began.elapsed() < LIMIT, "the pull did not finish: {text}");
    }
    text.split("\n\n")
        .filter_map(|block| {
            let event = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((event.to_string(), serde_json::from_str(data).unwrap()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_pulled_imported_saved_and_pruned_through_the_api() {
    let s = server(&[]).await;
    let url = |path: &str| format!("http://{}{path}", s.addr);
    let http = &s.http;

    // An image in a real registry.
    let registry = Registry::start(RegistryAuth::None);
    let src = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::new(src.path());
    let layer = images_support::Layer::gzip(LayerTar::new().busybox().file("hello", 0o644, b"pulled\n").finish());
    let desc = layout.image(
        &[layer],
        porthole_engine::native::images::host_architecture(),
        json!({"Env": ["PATH=/bin"], "Cmd": ["cat", "/hello"]}),
    );
    layout.tag(&desc, "v1");
    let reference = format!("{}/team/app:v1", registry.host());
    layout.push("v1", &reference, false, None);

    // The registry is plain HTTP: configure it, with credentials that must never come back.
    let registry_path = format!("/api/registries/{}", registry.host());
    let configured = http
        .put(url(&registry_path))
        .bearer_auth(&s.owner)
        .json(&json!({"insecure": true, "credentials": {"username": "ci", "secret": "s3cr3t-value"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(configured.status(), 204);
    let (status, listed) = s.api(reqwest::Method::GET, "/api/registries", &s.owner, None).await;
    assert_eq!(status, 200);
    assert!(listed.to_string().contains(&registry.host()), "{listed}");
    assert!(!listed.to_string().contains("s3cr3t"), "a secret came back: {listed}");
    let cleared =
        http.put(url(&registry_path)).bearer_auth(&s.owner).json(&json!({"insecure": true})).send().await.unwrap();
    assert_eq!(cleared.status(), 204);

    // Pull with progress.
    let response = http
        .post(url("/api/images/pull"))
        .bearer_auth(&s.owner)
        .json(&json!({"reference": reference}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = read_events(response).await;
    assert_eq!(events.first().map(|(e, d)| (e.as_str(), d["status"].clone())), Some(("progress", json!("resolved"))));
    assert!(
        events.iter().any(|(e, d)| e == "progress" && d["status"] == "layer" && d["phase"] == "downloading"),
        "{events:?}"
    );
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done", "{events:?}");
    let image_id = done["image_id"].as_str().unwrap().to_string();
    let (status, image) = s.api(reqwest::Method::GET, &format!("/api/images/{reference}"), &s.owner, None).await;
    assert_eq!((status, image["summary"]["id"].as_str()), (200, Some(image_id.as_str())), "{image}");
    let (status, run) =
        s.api(reqwest::Method::POST, "/api/containers?start=true", &s.owner, Some(json!({"image": reference}))).await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap();
    let (_, waited) = s.api(reqwest::Method::POST, &format!("/api/containers/{id}/wait"), &s.owner, None).await;
    assert_eq!(waited["exit_code"], 0);
    s.api(reqwest::Method::DELETE, &format!("/api/containers/{id}"), &s.owner, None).await;

    // A pull error arrives in the stream, classified.
    let missing = http
        .post(url("/api/images/pull"))
        .bearer_auth(&s.owner)
        .json(&json!({"reference": format!("{}/team/nope:v1", registry.host())}))
        .send()
        .await
        .unwrap();
    let events = read_events(missing).await;
    let (event, data) = events.last().expect("an error event");
    assert_eq!((event.as_str(), data["error"]["kind"].as_str()), ("error", Some("not_found")), "{events:?}");

    // Import an uploaded root filesystem, then run it.
    let rootfs = LayerTar::new().busybox().file("etc/motd", 0o644, b"imported\n").finish();
    let response = http
        .post(url("/api/images/import?tag=uploaded:1&cmd=%5B%22cat%22%2C%22%2Fetc%2Fmotd%22%5D"))
        .bearer_auth(&s.owner)
        .header("content-type", "application/x-tar")
        .body(rootfs)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["format"], "rootfs_tarball", "{report}");
    let (status, run) = s
        .api(reqwest::Method::POST, "/api/containers?start=true", &s.owner, Some(json!({"image": "uploaded:1"})))
        .await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap();
    s.api(reqwest::Method::POST, &format!("/api/containers/{id}/wait"), &s.owner, None).await;
    let logs = http.get(url(&format!("/api/containers/{id}/logs"))).bearer_auth(&s.owner).send().await.unwrap();
    let bytes = logs.bytes().await.unwrap();
    assert!(bytes.ends_with(b"imported\n"), "{:?}", String::from_utf8_lossy(&bytes));
    s.api(reqwest::Method::DELETE, &format!("/api/containers/{id}"), &s.owner, None).await;

    // Garbage is refused, saying why.
    let garbage = http
        .post(url("/api/images/import?tag=bad:1"))
        .bearer_auth(&s.owner)
        .body(vec![0x1f, 0x8b, 1, 2, 3, 4, 5])
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    let body: Value = garbage.json().await.unwrap();
    assert!(!body["error"]["message"].as_str().unwrap().is_empty(), "{body}");

    // Tag, history, save.
    let (status, body) = s
        .api(
            reqwest::Method::POST,
            "/api/images/tag",
            &s.owner,
            Some(json!({"source": "uploaded:1", "target": "again:2"})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, history) = s.api(reqwest::Method::GET, "/api/images/history?ref=again:2", &s.owner, None).await;
    assert_eq!(status, 200, "{history}");
    assert!(!history.as_array().unwrap().is_empty());
    let saved = http.get(url("/api/images/save?refs=again:2")).bearer_auth(&s.owner).send().await.unwrap();
    assert_eq!(saved.status(), 200);
    let archive = saved.bytes().await.unwrap();
    let mut names = Vec::new();
    for entry in tar::Archive::new(&archive[..]).entries().unwrap() {
        names.push(entry.unwrap().path().unwrap().display().to_string());
    }
    assert!(names.iter().any(|n| n == "manifest.json"), "{names:?}");
    let (status, _) = s.api(reqwest::Method::GET, "/api/images/save?refs=", &s.owner, None).await;
    assert_eq!(status, 400);

    // Remove the tags; prune takes what nothing uses.
    for tag in ["uploaded:1", "again:2"] {
        let (status, body) = s.api(reqwest::Method::DELETE, &format!("/api/images/{tag}"), &s.owner, None).await;
        assert_eq!(status, 204, "{tag}: {body}");
    }
    let (status, pruned) = s.api(reqwest::Method::POST, "/api/images/prune?all=true", &s.owner, None).await;
    assert_eq!(status, 200, "{pruned}");
    let (_, images) = s.api(reqwest::Method::GET, "/api/images", &s.owner, None).await;
    assert!(!images.to_string().contains("uploaded"), "{images}");
    let (status, _) = s.api(reqwest::Method::DELETE, &registry_path, &s.owner, None).await;
    assert_eq!(status, 204);
}
