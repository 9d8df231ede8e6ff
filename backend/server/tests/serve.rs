//! `porthole serve` as a user runs it: the real binary on a random port, a page, the health
//! endpoint, assets, and a graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    base: String,
    token: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let data = tempfile::Builder::new().prefix("ph-serve").tempdir_in("/tmp").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_porthole"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("porthole starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(("base", rest.trim().trim_end_matches('/').to_string()));
            }
            if let Some(rest) = line.split("/login?token=").nth(1) {
                let _ = tx.send(("token", rest.trim().to_string()));
            }
        }
    });
    let mut base = None;
    let mut token = None;
    while base.is_none() || token.is_none() {
        let (what, value) = rx.recv_timeout(Duration::from_secs(60)).expect("the server reports its address and token");
        match what {
            "base" => base = Some(value),
            _ => token = Some(value),
        }
    }
    Server { child, base: base.unwrap(), token: token.unwrap(), _data: data }
}

#[tokio::test]
async fn serves_the_page_health_and_assets_then_stops_gracefully_on_sigterm() {
    let mut server = start_server();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // Without a token the browser is sent to the login page; the API says 401.
    let anonymous = client.get(format!("{}/", server.base)).send().await.unwrap();
    assert_eq!(anonymous.status(), 303);
    assert_eq!(anonymous.headers()["location"], "/login");
    let api = client.get(format!("{}/api/containers", server.base)).send().await.unwrap();
    assert_eq!(api.status(), 401);

    // The login link printed at first start sets an HttpOnly cookie.
    let login = client.get(format!("{}/login?token={}", server.base, server.token)).send().await.unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_string();

    let page = client.get(format!("{}/", server.base)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>Porthole</title>"), "{html}");
    assert!(html.contains("/static/app.js"));

    let health: serde_json::Value =
        client.get(format!("{}/healthz", server.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["engine"], "native");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));

    let css = client.get(format!("{}/static/style.css", server.base)).send().await.unwrap();
    assert_eq!(css.status(), 200);
    assert!(css.headers()["content-type"].to_str().unwrap().starts_with("text/css"));
    let missing = client.get(format!("{}/static/nope.js", server.base)).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the server did not stop within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
}
