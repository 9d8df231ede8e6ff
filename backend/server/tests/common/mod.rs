//! What the server test files share: a real Porthole server on a random port over a native
//! engine and a fresh database, and an HTTP client for its API; Docker daemons of a test's own
//! ([`dockerd`]).
#![allow(dead_code)]

pub mod dockerd;

use std::sync::Arc;
use std::time::Duration;

use porthole::security::Origins;
use porthole::{auth, db, AppState};
use porthole_engine::api::{ContainerConfig, RemoveOptions};
use porthole_engine::native::{NativeConfig, NativeEngine};
use porthole_engine::Engine;
use serde_json::{json, Value};

/// No single wait in these tests may take longer.
pub const LIMIT: Duration = Duration::from_secs(30);

pub struct Server {
    pub addr: std::net::SocketAddr,
    /// The admin token (first start).
    pub owner: String,
    /// A second token: another person on the same Porthole.
    pub other: String,
    pub engine: Arc<dyn Engine>,
    pub http: reqwest::Client,
    pub root: tempfile::TempDir,
}

pub async fn server(allowed_origins: &[&str]) -> Server {
    let root = tempfile::Builder::new().prefix("pht").tempdir_in("/tmp").unwrap();
    let engine = NativeEngine::open(NativeConfig {
        root: root.path().to_path_buf(),
        shim_exe: env!("CARGO_BIN_EXE_porthole").into(),
        starter_image: true,
    })
    .await
    .unwrap();
    let pool = db::open(root.path()).await.unwrap();
    let owner = auth::bootstrap(&pool).await.unwrap().unwrap();
    let other = auth::create_token(&pool, "second person").await.unwrap();
    let engine: Arc<dyn Engine> = Arc::new(engine);
    let mut state = AppState::new(engine.clone(), pool);
    let origins: Vec<String> = allowed_origins.iter().map(|s| s.to_string()).collect();
    state.origins = Arc::new(Origins::new(&origins).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { porthole::serve_app(listener, state).await });
    Server { addr, owner, other, engine, http: reqwest::Client::new(), root }
}

impl Server {
    pub async fn api(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("http://{}{path}", self.addr)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A running busybox container and an exec shell terminal on it, owned by `owner`.
    pub async fn shell_terminal(&self) -> (String, String) {
        let config = ContainerConfig {
            image: "busybox".into(),
            cmd: Some(vec!["sleep".into(), "600".into()]),
            ..Default::default()
        };
        let container = self.engine.create_container(config).await.unwrap();
        self.engine.start_container(&container).await.unwrap();
        let (status, body) = self
            .api(
                reqwest::Method::POST,
                &format!("/api/containers/{container}/terminals"),
                &self.owner,
                Some(json!({"kind": "exec", "cmd": ["sh"], "size": {"rows": 24, "cols": 80}})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (container, body["id"].as_str().unwrap().to_string())
    }

    pub async fn cleanup(&self, container: &str) {
        let _ = self.engine.remove_container(container, RemoveOptions { force: true, volumes: true }).await;
    }
}
