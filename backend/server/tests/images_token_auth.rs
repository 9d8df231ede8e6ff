//! The Bearer token flow against a real `docker-registry` in `auth: token` mode. The token
//! server is written here: it checks HTTP Basic credentials and issues RS256 JWTs signed with
//! a key made by the `openssl` CLI, whose certificate the registry trusts (`x5c` header). An
//! anonymous pull is refused; a pull with credentials (given, or stored by
//! `configure_registry`) gets a token and succeeds; wrong credentials fail without echoing
//! the secret. Needs root.

mod images_support;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use images_support::*;
use porthole_engine::api::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVICE: &str = "porthole-test-registry";
const ISSUER: &str = "porthole-test-token-issuer";
const USER: &str = "alice";
const PASSWORD: &str = "wonderland-7f3a";

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// What the token server saw: one entry per token request, the user name or "" (anonymous).
type Seen = Arc<Mutex<Vec<String>>>;

struct TokenServer {
    key: String,
    cert_der_b64: String,
}

impl TokenServer {
    fn jwt(&self, subject: &str, access: serde_json::Value) -> String {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [self.cert_der_b64]});
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 60, "iat": now - 60,
            "jti": format!("{:x}", rand::random::<u64>()),
            "access": access,
        });
        let signing_input =
            format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let signature = openssl(&["dgst", "-sha256", "-sign", &self.key], Some(signing_input.as_bytes()));
        format!("{signing_input}.{}", b64url(&signature))
    }

    /// Answers one HTTP request on `stream`.
    async fn serve(&self, mut stream: tokio::net::TcpStream, seen: Seen) {
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&request).into_owned();
        let target = text.split_whitespace().nth(1).unwrap_or("/").to_string();
        let query: Vec<(String, String)> = target
            .split_once('?')
            .map(|(_, q)| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), percent_decode(v)))
                    .collect()
            })
            .unwrap_or_default();
        let basic = text
            .lines()
            .find_map(|l| l.strip_prefix("Authorization: Basic ").or_else(|| l.strip_prefix("authorization: Basic ")))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let user = match basic.as_deref().and_then(|b| b.split_once(':')) {
            Some((user, password)) if user == USER && password == PASSWORD => Some(user.to_string()),
            Some(_) => {
                seen.lock().unwrap().push("(bad credentials)".into());
                let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
                let response = format!("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = stream.write_all(response.as_bytes()).await;
                return;
            }
            None => None,
        };
        seen.lock().unwrap().push(user.clone().unwrap_or_default());
        // Only a logged-in user gets what they asked for; anonymous gets nothing.
        let access: Vec<serde_json::Value> = query
            .iter()
            .filter(|(k, _)| k == "scope")
            .filter_map(|(_, scope)| {
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                let actions: Vec<&str> = if user.is_some() { actions.split(',').collect() } else { Vec::new() };
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
            })
            .collect();
        let token = tokio::task::block_in_place(|| self.jwt(user.as_deref().unwrap_or(""), serde_json::json!(access)));
        let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Generates the signing key and certificate, and starts the token server; returns its port.
async fn start_token_server(dir: &Path, seen: Seen) -> u16 {
    let key = dir.join("token.key");
    let cert = dir.join("token.crt");
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=porthole-test-token",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
        None,
    );
    let der = openssl(&["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"], None);
    let server = Arc::new(TokenServer {
        key: key.display().to_string(),
        cert_der_b64: base64::engine::general_purpose::STANDARD.encode(der),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        // Ends with the test's runtime.
        while let Ok((stream, _)) = listener.accept().await {
            let server = server.clone();
            let seen = seen.clone();
            tokio::spawn(async move { server.serve(stream, seen).await });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_get_a_bearer_token_with_credentials_and_are_refused_without() {
    let dir = tempfile::tempdir().unwrap();
    let seen: Seen = Arc::default();
    let token_port = start_token_server(dir.path(), seen.clone()).await;
    let registry = Registry::start(RegistryAuth::Token {
        realm: format!("http://127.0.0.1:{token_port}/token"),
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        cert: dir.path().join("token.crt"),
    });

    let src = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::new(src.path());
    let base = Layer::gzip(LayerTar::new().busybox().file("secret-data", 0o644, b"classified\n").finish());
    let desc = layout.image(
        &[base],
        porthole_engine::native::images::host_architecture(),
        serde_json::json!({"Cmd": ["/bin/sh"]}),
    );
    layout.tag(&desc, "v1");
    let reference = format!("{}/private/app:v1", registry.host());
    let creds = format!("{USER}:{PASSWORD}");
    tokio::task::block_in_place(|| layout.push("v1", &reference, false, Some(&creds)));

    let root = temp_root();
    let engine = open(root.path()).await;
    engine.configure_registry(&registry.host(), RegistryConfig { insecure: true, credentials: None }).await.unwrap();

    // Anonymous: a token without access, so the registry refuses.
    seen.lock().unwrap().clear();
    let err = pull(&engine, &reference, PullOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{}", err.detail());
    assert!(err.message().contains("access denied"), "{}", err.message());
    assert!(seen.lock().unwrap().iter().any(|u| u.is_empty()), "an anonymous token was asked for");
    assert!(engine.list_images().await.unwrap().is_empty());

    // Wrong password: refused, and the secret appears nowhere.
    let wrong = RegistryCredentials { username: USER.into(), secret: "not-the-password-91c2".into() };
    let err =
        pull(&engine, &reference, PullOptions { credentials: Some(wrong), ..Default::default() }).await.unwrap_err();
    assert!(!err.detail().contains("not-the-password-91c2"), "{}", err.detail());
    assert!(seen.lock().unwrap().iter().any(|u| u == "(bad credentials)"));

    // Credentials for this pull.
    seen.lock().unwrap().clear();
    let given = RegistryCredentials { username: USER.into(), secret: PASSWORD.into() };
    pull(&engine, &reference, PullOptions { credentials: Some(given.clone()), ..Default::default() }).await.unwrap();
    assert!(seen.lock().unwrap().iter().any(|u| u == USER), "the token was issued to {USER}");
    assert_eq!(run(&engine, &reference, "cat /secret-data").await, "classified\n");

    // Stored credentials, in a fresh store.
    let root = temp_root();
    let engine = open(root.path()).await;
    engine
        .configure_registry(&registry.host(), RegistryConfig { insecure: true, credentials: Some(given) })
        .await
        .unwrap();
    let listed = engine.list_registries().await.unwrap();
    assert_eq!(
        listed,
        vec![RegistrySummary { registry: registry.host(), insecure: true, username: Some(USER.into()) }]
    );
    let on_disk = std::fs::read_to_string(root.path().join("images/registries.json")).unwrap();
    assert!(!on_disk.contains(PASSWORD), "the secret is sealed on disk");
    seen.lock().unwrap().clear();
    pull(&engine, &reference, PullOptions::default()).await.unwrap();
    assert!(seen.lock().unwrap().iter().any(|u| u == USER));
}
