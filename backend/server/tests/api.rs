//! The HTTP API through the real router, with a real native engine and database: every API
//! route refuses anonymous requests, errors come back as classified JSON, and a container can
//! be run, inspected, waited for and removed.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use porthole::{auth, db, router, AppState};
use porthole_engine::native::{NativeConfig, NativeEngine};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Harness {
    app: axum::Router,
    token: String,
    _root: tempfile::TempDir,
}

async fn harness() -> Harness {
    let root = tempfile::Builder::new().prefix("pha").tempdir_in("/tmp").unwrap();
    let engine = NativeEngine::open(NativeConfig {
        root: root.path().to_path_buf(),
        shim_exe: env!("CARGO_BIN_EXE_porthole").into(),
        starter_image: true,
    })
    .await
    .unwrap();
    let pool = db::open(root.path()).await.unwrap();
    let token = auth::bootstrap(&pool).await.unwrap().expect("first token");
    assert_eq!(auth::bootstrap(&pool).await.unwrap(), None, "only the first start creates a token");
    let state = AppState::new(std::sync::Arc::new(engine), pool);
    Harness { app: router(state), token, _root: root }
}

async fn call(h: &Harness, method: &str, uri: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = match body {
        Some(body) => request.header("content-type", "application/json").body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    (status, value)
}

const API_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/info"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/events"),
    ("GET", "/api/containers/x/logs"),
    ("GET", "/api/containers/x/logs/ws"),
    ("POST", "/api/containers/x/exec"),
    ("GET", "/api/whoami"),
    ("GET", "/api/containers"),
    ("POST", "/api/containers"),
    ("GET", "/api/containers/x"),
    ("DELETE", "/api/containers/x"),
    ("POST", "/api/containers/x/start"),
    ("POST", "/api/containers/x/stop"),
    ("POST", "/api/containers/x/restart"),
    ("POST", "/api/containers/x/kill"),
    ("POST", "/api/containers/x/wait"),
    ("GET", "/api/containers/x/stats"),
    ("GET", "/api/images"),
    ("GET", "/api/images/busybox"),
    ("DELETE", "/api/images/busybox"),
    ("POST", "/api/containers/x/terminals"),
    ("GET", "/api/terminals"),
    ("GET", "/api/terminals/x"),
    ("GET", "/api/terminals/x/links"),
    ("POST", "/api/terminals/x/links"),
    ("DELETE", "/api/terminals/x/links/y"),
    ("GET", "/api/terminals/x/ws"),
    ("GET", "/api/terminals/x/ws?offset=0"),
    ("POST", "/api/images/pull"),
    ("POST", "/api/images/import"),
    ("GET", "/api/images/save?refs=busybox"),
    ("POST", "/api/images/tag"),
    ("GET", "/api/images/history?ref=busybox"),
    ("POST", "/api/images/prune"),
    ("GET", "/api/registries"),
    ("PUT", "/api/registries/127.0.0.1:5000"),
    ("DELETE", "/api/registries/127.0.0.1:5000"),
    ("GET", "/api/engines"),
    ("GET", "/api/no-such-route"),
];

#[tokio::test]
async fn every_api_route_refuses_anonymous_and_revoked_callers() {
    let h = harness().await;
    for (method, uri) in API_ROUTES {
        let (status, body) = call(&h, method, uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(body["error"]["kind"], "unauthenticated", "{method} {uri}");
        let (status, _) = call(&h, method, uri, Some("ph_not-a-real-token"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} with a bad token");
    }
    let (status, body) = call(&h, "GET", "/api/whoami", Some(&h.token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["name"].as_str().unwrap().contains("admin"));
    // The image is still there after the refused anonymous DELETE.
    let (status, _) = call(&h, "GET", "/api/images/busybox", Some(&h.token), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn containers_run_through_the_api_and_errors_are_classified() {
    let h = harness().await;
    let t = Some(h.token.as_str());
    let (status, body) = call(
        &h,
        "POST",
        "/api/containers?start=true",
        t,
        Some(json!({"image": "busybox", "cmd": ["sh", "-c", "exit 4"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (status, body) = call(&h, "POST", &format!("/api/containers/{id}/wait"), t, None).await;
    assert_eq!((status, body["exit_code"].as_i64()), (StatusCode::OK, Some(4)));
    let (status, body) = call(&h, "GET", &format!("/api/containers/{id}"), t, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"]["status"], "exited");
    let (_, list) = call(&h, "GET", "/api/containers?all=true", t, None).await;
    assert!(list.as_array().unwrap().iter().any(|c| c["id"] == id));
    let (_, running) = call(&h, "GET", "/api/containers", t, None).await;
    assert!(running.as_array().unwrap().iter().all(|c| c["id"] != id));

    // Filters, as `docker ps --filter`.
    let (status, labelled) = call(
        &h,
        "POST",
        "/api/containers",
        t,
        Some(json!({"image": "busybox", "name": "filter-me", "labels": {"team": "blue", "tier": "web"}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{labelled}");
    let ids = |list: Value| -> Vec<String> {
        list.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect()
    };
    let lid = labelled["id"].as_str().unwrap().to_string();
    for (query, expected) in [
        ("status=exited", vec![id.clone()]),
        ("status=created", vec![lid.clone()]),
        ("all=true&name=filter", vec![lid.clone()]),
        ("all=true&label=team=blue,tier", vec![lid.clone()]),
        ("all=true&label=team=red", vec![]),
        ("all=true&image=busybox&label=tier", vec![lid.clone()]),
    ] {
        let (status, list) = call(&h, "GET", &format!("/api/containers?{query}"), t, None).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert_eq!(ids(list), expected, "{query}");
    }
    let (status, body) = call(&h, "GET", "/api/containers?status=sleeping", t, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("sleeping"));
    let (status, _) = call(&h, "DELETE", &format!("/api/containers/{lid}"), t, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let cases = [
        ("POST", "/api/containers".to_string(), Some(json!({"image": "nope:1"})), StatusCode::NOT_FOUND, "not_found"),
        (
            "POST",
            "/api/containers".to_string(),
            Some(json!({"image": "busybox", "cmd": ["/bin/nope"]})),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/containers".to_string(),
            Some(json!({"imgae": "busybox"})),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        ("POST", format!("/api/containers/{id}/kill"), None, StatusCode::CONFLICT, "conflict"),
        ("GET", "/api/containers/0000000000ff".to_string(), None, StatusCode::NOT_FOUND, "not_found"),
        ("POST", format!("/api/containers/{id}/stop?t=999999"), None, StatusCode::BAD_REQUEST, "invalid_argument"),
    ];
    for (method, uri, body, expected, kind) in cases {
        let (status, response) = call(&h, method, &uri, t, body.clone()).await;
        assert_eq!(status, expected, "{method} {uri} {body:?}: {response}");
        assert_eq!(response["error"]["kind"], kind, "{method} {uri}");
        assert!(!response["error"]["message"].as_str().unwrap().is_empty());
    }
    let (_, body) = call(&h, "POST", "/api/containers", t, Some(json!({"imgae": "busybox"}))).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("imgae"), "the message names the bad field: {body}");

    let (status, _) = call(&h, "DELETE", &format!("/api/containers/{id}"), t, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&h, "GET", &format!("/api/containers/{id}"), t, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Every `.route("/api/...")` in the server's source, with axum's `{*rest}` written `{rest}`.
fn routes_in_source() -> std::collections::BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut found = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for piece in source.split(".route(\"").skip(1) {
            let path = piece.split('"').next().unwrap();
            found.insert(path.replace("{*", "{"));
        }
    }
    found
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes() {
    let h = harness().await;
    let (status, served) = call(&h, "GET", "/api/openapi.json", Some(&h.token), None).await;
    assert_eq!(status, StatusCode::OK);
    let file: Value = serde_json::from_str(porthole::api::OPENAPI).unwrap();
    assert_eq!(served, file);
    assert_eq!(served["openapi"], "3.1.0");
    let paths = served["paths"].as_object().unwrap();
    let documented: std::collections::BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(documented, routes_in_source(), "documented paths vs routes in the source");

    // Each documented operation reaches a handler; every other method is 405.
    for (path, item) in paths {
        let uri = path
            .replace("{id}", "doc-check")
            .replace("{link}", "doc-link")
            .replace("{reference}", "doc/none")
            .replace("{registry}", "doc-registry:5000");
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let documented = item.get(method.to_ascii_lowercase()).is_some();
            let body = if method == "POST" { Body::from("{}") } else { Body::empty() };
            let request = Request::builder()
                .method(method)
                .uri(&uri)
                .header("authorization", format!("Bearer {}", h.token))
                .header("content-type", "application/json")
                .body(body)
                .unwrap();
            let response = h.app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            if !documented {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri} is served but not documented");
                continue;
            }
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri} is documented but not served");
            if status == StatusCode::NOT_FOUND {
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&bytes).unwrap();
                assert_ne!(
                    body["error"]["message"], "no such API route",
                    "{method} {uri} is documented but not routed"
                );
            }
        }
    }
}

#[tokio::test]
async fn pages_need_a_login_except_the_page_a_share_link_opens() {
    let h = harness().await;
    let get = |uri: &str, token: Option<&str>| {
        let mut request = Request::builder().uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        h.app.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    for page in ["/", "/launch", "/images", "/containers/abc", "/terminals/abc", "/terminals/abc?offset=1"] {
        let anonymous = get(page, None).await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(anonymous.headers()["location"], "/login", "{page}");
        let signed_in = get(page, Some(&h.token)).await.unwrap();
        assert_eq!(signed_in.status(), StatusCode::OK, "{page}");
        assert!(signed_in.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    }

    // A guest with a link gets the terminal shell: no data, no navigation, no referrer.
    let guest = get("/terminals/abc?link=phl_whatever", None).await.unwrap();
    assert_eq!(guest.status(), StatusCode::OK);
    assert_eq!(guest.headers()["referrer-policy"], "no-referrer");
    let html = String::from_utf8(guest.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(html.contains(r#"data-terminal="abc""#), "{html}");
    assert!(!html.contains("/logout") && !html.contains(r#"href="/images""#), "{html}");
    // The link opens that page only: not other pages, not the API.
    assert_eq!(get("/containers/abc?link=phl_whatever", None).await.unwrap().status(), StatusCode::SEE_OTHER);
    assert_eq!(get("/api/terminals/abc?link=phl_whatever", None).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // Ids in page URLs are plain identifiers.
    assert_eq!(get("/containers/%3Cscript%3E", Some(&h.token)).await.unwrap().status(), StatusCode::NOT_FOUND);
}
