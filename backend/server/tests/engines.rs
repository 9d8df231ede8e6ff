//! One Porthole driving three engines: the native engine and two Docker daemons of the test's
//! own (separate sockets, data and exec roots). Containers launch on each, terminals open on
//! each; stopping one daemon leaves the others working while it is shown unavailable (its
//! containers listed as unavailable), and starting it again brings it back by itself.
//!
//! Needs root and Debian's `docker.io` (`dockerd`); `scripts/test.sh` installs it. Without
//! `dockerd` the test fails under CI and is skipped, saying so, elsewhere.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dockerd::{dockerd_available, Daemon};
use common::LIMIT;
use futures::{SinkExt, StreamExt};
use porthole::engines::{EngineSet, EngineSpec};
use porthole::{auth, db, AppState};
use porthole_engine::docker::DockerEngine;
use porthole_engine::native::{NativeConfig, NativeEngine};
use porthole_engine::Engine;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

async fn api(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, format!("http://{base}{path}")).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Opens a shell terminal on a container and checks a command's output comes back.
async fn terminal_round_trip(http: &reqwest::Client, base: &str, token: &str, container: &str, marker: u32) {
    let (status, terminal) = api(
        http,
        base,
        token,
        reqwest::Method::POST,
        &format!("/api/containers/{container}/terminals"),
        Some(json!({"kind": "exec", "cmd": ["sh"]})),
    )
    .await;
    assert_eq!(status, 201, "{terminal}");
    let url = format!("ws://{base}/api/terminals/{}/ws", terminal["id"].as_str().unwrap());
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::Binary(format!("echo engine-$(({marker}+1))\n").into_bytes().into())).await.unwrap();
    let expected = format!("engine-{}", marker + 1);
    let mut seen = Vec::new();
    let began = Instant::now();
    while !String::from_utf8_lossy(&seen).contains(&expected) {
        assert!(began.elapsed() < LIMIT, "no {expected} from {container}: {}", String::from_utf8_lossy(&seen));
        match tokio::time::timeout(LIMIT, ws.next()).await.expect("terminal output in time") {
            Some(Ok(Message::Binary(data))) => seen.extend_from_slice(&data),
            Some(Ok(_)) => {}
            other => panic!("terminal on {container} closed: {other:?}"),
        }
    }
}

async fn engine_status(http: &reqwest::Client, base: &str, token: &str, name: &str) -> Value {
    let (_, engines) = api(http, base, token, reqwest::Method::GET, "/api/engines", None).await;
    engines.as_array().unwrap().iter().find(|e| e["name"] == name).cloned().unwrap()
}

async fn wait_for_availability(http: &reqwest::Client, base: &str, token: &str, name: &str, available: bool) {
    let began = Instant::now();
    loop {
        let status = engine_status(http, base, token, name).await;
        if status["available"] == available {
            return;
        }
        assert!(began.elapsed() < LIMIT, "engine {name} never became available={available}: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn one_porthole_drives_native_and_two_docker_daemons_and_survives_one_going_down() {
    if !dockerd_available() {
        return;
    }
    let root = tempfile::Builder::new().prefix("phe").tempdir_in("/tmp").unwrap();
    let mut daemon_a = Daemon::start(&root.path().join("docker-a"));
    let mut daemon_b = Daemon::start(&root.path().join("docker-b"));
    daemon_a.wait_ready().await;
    daemon_b.wait_ready().await;
    for daemon in [&daemon_a, &daemon_b] {
        let engine = DockerEngine::connect(&daemon.address()).await.unwrap();
        engine.ensure_busybox_image("busybox:latest").await.unwrap().expect("busybox on this host");
    }

    let specs: Vec<EngineSpec> = vec![
        "local=native".parse().unwrap(),
        format!("alpha={}", daemon_a.address()).parse().unwrap(),
        format!("beta={}", daemon_b.address()).parse().unwrap(),
    ];
    let native_root = root.path().join("native");
    let engines = EngineSet::open(&specs, || async move {
        let engine = NativeEngine::open(NativeConfig {
            root: native_root,
            shim_exe: env!("CARGO_BIN_EXE_porthole").into(),
            starter_image: true,
        })
        .await?;
        Ok(Arc::new(engine) as Arc<dyn Engine>)
    })
    .await
    .unwrap();
    let pool = db::open(root.path()).await.unwrap();
    let token = auth::bootstrap(&pool).await.unwrap().unwrap();
    let state = AppState::with_engines(engines, pool);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { porthole::serve_app(listener, state).await });
    let http = reqwest::Client::new();
    let post = reqwest::Method::POST;

    // A container and a terminal on each engine, from the one API.
    let mut containers = Vec::new();
    for (i, engine) in ["local", "alpha", "beta"].into_iter().enumerate() {
        let body = json!({"image": "busybox", "name": format!("on-{engine}"), "cmd": ["sleep", "600"]});
        let (status, created) =
            api(&http, &base, &token, post.clone(), &format!("/api/containers?start=true&engine={engine}"), Some(body))
                .await;
        assert_eq!(status, 201, "{engine}: {created}");
        assert_eq!(created["engine"], engine);
        let id = created["id"].as_str().unwrap().to_string();
        terminal_round_trip(&http, &base, &token, &id, i as u32 * 10).await;
        containers.push((engine, id));
    }
    let (_, listed) = api(&http, &base, &token, reqwest::Method::GET, "/api/containers", None).await;
    for (engine, id) in &containers {
        let item =
            listed.as_array().unwrap().iter().find(|c| c["id"] == *id).unwrap_or_else(|| panic!("{id} not listed"));
        assert_eq!((item["engine"].as_str(), item["engine_available"].as_bool()), (Some(*engine), Some(true)));
    }
    let (status, body) =
        api(&http, &base, &token, post.clone(), "/api/containers?engine=gamma", Some(json!({"image": "busybox"})))
            .await;
    assert_eq!((status, body["error"]["kind"].as_str()), (404, Some("not_found")), "{body}");

    // Daemon B goes down: it is shown unavailable, its containers greyed out, the rest works.
    daemon_b.stop();
    wait_for_availability(&http, &base, &token, "beta", false).await;
    let (_, listed) = api(&http, &base, &token, reqwest::Method::GET, "/api/containers?all=true", None).await;
    let beta_id = &containers[2].1;
    let beta = listed.as_array().unwrap().iter().find(|c| c["id"] == *beta_id).expect("beta's container still listed");
    assert_eq!(beta["engine_available"], false);
    let (status, body) =
        api(&http, &base, &token, post.clone(), "/api/containers?engine=beta", Some(json!({"image": "busybox"}))).await;
    assert_eq!((status, body["error"]["kind"].as_str()), (503, Some("unavailable")), "{body}");
    terminal_round_trip(&http, &base, &token, &containers[0].1, 100).await;
    terminal_round_trip(&http, &base, &token, &containers[1].1, 200).await;
    let (status, _) = api(&http, &base, &token, reqwest::Method::GET, "/healthz", None).await;
    assert_eq!(status, 200, "the server stays healthy while a secondary engine is down");

    // It comes back by itself when the daemon returns.
    daemon_b.spawn();
    daemon_b.wait_ready().await;
    wait_for_availability(&http, &base, &token, "beta", true).await;
    let (status, started) =
        api(&http, &base, &token, post.clone(), &format!("/api/containers/{beta_id}/start"), None).await;
    assert_eq!(status, 204, "{started}");
    terminal_round_trip(&http, &base, &token, beta_id, 300).await;

    for (_, id) in &containers {
        let (status, _) =
            api(&http, &base, &token, reqwest::Method::DELETE, &format!("/api/containers/{id}?force=true"), None).await;
        assert_eq!(status, 204);
    }
    daemon_a.stop();
    daemon_b.stop();
}
