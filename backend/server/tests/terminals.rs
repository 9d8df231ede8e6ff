//! Shared terminals end to end: a real server on a random port, the native engine, real
//! WebSocket clients. Several clients see identical bytes, viewers cannot type, the owner
//! grants and takes back writing and hands ownership over, late joiners and reconnects get
//! exactly the bytes they lack, a stalled client does not hold up the others, share links work
//! until revoked, foreign origins are refused and CORS answers only configured origins.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use porthole::{auth, db, AppState};

use porthole_engine::native::{NativeConfig, NativeEngine};
use porthole_engine::Engine;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod common;

use common::{server, Server, LIMIT};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A test client: everything it received, and its acknowledgements.
struct Client {
    ws: Ws,
    hello: Value,
    /// Stream offset of `received[0]`.
    start: u64,
    received: Vec<u8>,
    controls: Vec<Value>,
    ack: bool,
}

enum Auth<'a> {
    Token(&'a str),
    Link(&'a str),
}

async fn open(server: &Server, terminal: &str, auth: Auth<'_>, query: &str, origin: Option<&str>) -> Result<Ws, u16> {
    let mut url = format!("ws://{}/api/terminals/{terminal}/ws?{query}", server.addr);
    if let Auth::Link(secret) = auth {
        url.push_str(&format!("&link={secret}&name=Guest"));
    }
    let mut request = url.into_client_request().unwrap();
    if let Auth::Token(token) = auth {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().unwrap());
    }
    match tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(request)).await.expect("connect in time") {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

impl Client {
    async fn connect(server: &Server, terminal: &str, auth: Auth<'_>, query: &str) -> Client {
        let ws = open(server, terminal, auth, query, None).await.expect("upgrade accepted");
        let mut client =
            Client { ws, hello: Value::Null, start: 0, received: Vec::new(), controls: Vec::new(), ack: true };
        let hello = client.next_control("hello").await;
        client.start = hello["offset"].as_u64().unwrap();
        client.hello = hello;
        client
    }

    fn id(&self) -> u64 {
        self.hello["client"].as_u64().unwrap()
    }

    fn end(&self) -> u64 {
        self.start + self.received.len() as u64
    }

    /// Reads one message; `None` when the connection ended.
    async fn pump(&mut self) -> Option<()> {
        let message = tokio::time::timeout(LIMIT, self.ws.next()).await.expect("a message in time")?;
        match message.ok()? {
            Message::Binary(data) => {
                self.received.extend_from_slice(&data);
                if self.ack {
                    let ack = json!({"type": "ack", "offset": self.end()}).to_string();
                    self.ws.send(Message::Text(ack.into())).await.ok()?;
                }
            }
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                if value["type"] == "reset" {
                    // Output was skipped: what follows starts at the new offset.
                    self.start = value["offset"].as_u64().unwrap() - self.received.len() as u64;
                }
                self.controls.push(value);
            }
            Message::Close(_) => return None,
            _ => {}
        }
        Some(())
    }

    async fn read_until(&mut self, needle: &str) {
        let began = Instant::now();
        while !contains(&self.received, needle.as_bytes()) {
            assert!(began.elapsed() < LIMIT, "no {needle:?} in {:?}", String::from_utf8_lossy(&self.received));
            self.pump()
                .await
                .unwrap_or_else(|| panic!("closed before {needle:?}: {:?}", String::from_utf8_lossy(&self.received)));
        }
    }

    async fn next_control(&mut self, kind: &str) -> Value {
        let began = Instant::now();
        loop {
            if let Some(i) = self.controls.iter().position(|c| c["type"] == kind) {
                return self.controls.remove(i);
            }
            assert!(began.elapsed() < LIMIT, "no {kind} message; got {:?}", self.controls);
            self.pump().await.unwrap_or_else(|| panic!("closed before a {kind} message; got {:?}", self.controls));
        }
    }

    /// Waits for a presence message whose (client, role) list satisfies `done`.
    async fn presence_until(&mut self, done: impl Fn(&[(u64, String)]) -> bool) {
        let mut last = Vec::new();
        for _ in 0..50 {
            let presence = self.next_control("presence").await;
            last = presence["clients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c["client"].as_u64().unwrap(), c["role"].as_str().unwrap().to_string()))
                .collect();
            if done(&last) {
                return;
            }
        }
        panic!("presence never matched; last: {last:?}");
    }

    async fn type_keys(&mut self, keys: &str) {
        self.ws.send(Message::Binary(keys.as_bytes().to_vec().into())).await.unwrap();
    }

    async fn send_json(&mut self, value: Value) {
        self.ws.send(Message::Text(value.to_string().into())).await.unwrap();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn clients_share_one_screen_and_only_writers_type() {
    let s = server(&[]).await;
    let (container, terminal) = s.shell_terminal().await;
    let mut owner = Client::connect(&s, &terminal, Auth::Token(&s.owner), "").await;
    assert_eq!(owner.hello["role"], "owner");
    let mut viewer = Client::connect(&s, &terminal, Auth::Token(&s.other), "").await;
    assert_eq!(viewer.hello["role"], "viewer");
    let presence = owner.next_control("presence").await;
    assert_eq!(presence["clients"].as_array().unwrap().len(), 2, "{presence}");

    owner.type_keys("echo first-$((6*7))\n").await;
    owner.read_until("first-42").await;
    viewer.read_until("first-42").await;

    // A viewer's keystrokes are refused by the server, not just hidden.
    viewer.type_keys("echo viewer-typed-$((1+1))\n").await;
    let refused = viewer.next_control("error").await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    owner.type_keys("echo second-$((7*7))\n").await;
    owner.read_until("second-49").await;
    viewer.read_until("second-49").await;
    assert!(!contains(&owner.received, b"viewer-typed"), "the viewer's input reached the shell");

    // Identical bytes, from the same offset.
    assert_eq!((owner.start, viewer.start), (0, 0));
    let common = owner.received.len().min(viewer.received.len());
    assert_eq!(owner.received[..common], viewer.received[..common]);

    // The owner grants writing, then takes it back.
    owner.send_json(json!({"type": "set_role", "client": viewer.id(), "role": "writer"})).await;
    let viewer_id = viewer.id();
    viewer.presence_until(|roles| roles.contains(&(viewer_id, "writer".into()))).await;
    viewer.type_keys("echo granted-$((2+3))\n").await;
    owner.read_until("granted-5").await;
    owner.send_json(json!({"type": "set_role", "client": viewer.id(), "role": "viewer"})).await;
    viewer.presence_until(|roles| roles.contains(&(viewer_id, "viewer".into()))).await;
    viewer.type_keys("echo revoked-$((3+3))\n").await;
    assert_eq!(viewer.next_control("error").await["code"], "forbidden");

    // A viewer cannot change roles; the owner can hand the terminal over.
    viewer.send_json(json!({"type": "set_role", "client": owner.id(), "role": "viewer"})).await;
    assert_eq!(viewer.next_control("error").await["code"], "forbidden");
    owner.send_json(json!({"type": "set_role", "client": viewer.id(), "role": "owner"})).await;
    let expected = [(owner.id(), "writer"), (viewer.id(), "owner")];
    owner.presence_until(|roles| expected.iter().all(|(id, role)| roles.contains(&(*id, role.to_string())))).await;

    // The size follows the (new) owner, and everyone is told.
    viewer.send_json(json!({"type": "resize", "rows": 33, "cols": 101})).await;
    let size = owner.next_control("size").await;
    assert_eq!((size["rows"].as_u64(), size["cols"].as_u64()), (Some(33), Some(101)));
    owner.send_json(json!({"type": "resize", "rows": 10, "cols": 10})).await;
    owner.type_keys("stty size; echo sized-$((9+9))\n").await;
    owner.read_until("sized-18\r\n").await;
    assert!(contains(&owner.received, b"33 101"), "{:?}", String::from_utf8_lossy(&owner.received));

    // Presence shrinks when someone leaves; the process's exit reaches everyone.
    drop(viewer);
    owner.presence_until(|roles| roles.len() == 1).await;
    owner.type_keys("exit 3\n").await;
    let exit = owner.next_control("exit").await;
    assert_eq!(exit["code"], 3, "{exit}");
    s.cleanup(&container).await;
}

#[tokio::test]
async fn viewers_ask_the_owner_for_control_at_most_every_few_seconds() {
    let s = server(&[]).await;
    let (container, terminal) = s.shell_terminal().await;
    let mut owner = Client::connect(&s, &terminal, Auth::Token(&s.owner), "").await;
    let mut viewer = Client::connect(&s, &terminal, Auth::Token(&s.other), "").await;

    viewer.send_json(json!({"type": "request_control"})).await;
    let request = owner.next_control("control_request").await;
    assert_eq!(request["client"], viewer.id(), "{request}");
    assert_eq!(request["name"], "second person", "{request}");
    // Asking again at once is refused (the owner's screen is not flooded).
    viewer.send_json(json!({"type": "request_control"})).await;
    assert_eq!(viewer.next_control("error").await["code"], "invalid");
    // Those who can type have nothing to ask for.
    owner.send_json(json!({"type": "request_control"})).await;
    assert_eq!(owner.next_control("error").await["code"], "invalid");
    s.cleanup(&container).await;
}

#[tokio::test]
async fn late_joiners_and_reconnects_get_exactly_the_missing_bytes() {
    let s = server(&[]).await;
    let (container, terminal) = s.shell_terminal().await;
    let mut owner = Client::connect(&s, &terminal, Auth::Token(&s.owner), "").await;
    // A multi-byte character split across reads must arrive intact: print many of them.
    // (The marker is computed, so the echo of the typed line does not contain it.)
    owner
        .type_keys("for i in 1 2 3 4 5 6 7 8; do printf 'é€%.0s' $(seq 1 500); done; echo; echo one-$((2+3))-done\n")
        .await;
    owner.read_until("one-5-done\r\n").await;

    let mut late = Client::connect(&s, &terminal, Auth::Token(&s.other), "").await;
    late.read_until("one-5-done\r\n").await;
    assert_eq!(late.start, 0);
    // Both read at least to the marker; either may have more (the prompt that follows it).
    let common = late.received.len().min(owner.received.len());
    assert_eq!(late.received[..common], owner.received[..common], "the late joiner's history differs");
    assert!(std::str::from_utf8(&late.received).is_ok(), "history is not valid UTF-8");

    // Disconnect at a known offset, miss some output, resume from there.
    let resume_at = late.end();
    drop(late);
    owner.type_keys("echo while-away-$((8*8))\n").await;
    owner.read_until("while-away-64\r\n").await;
    let mut back = Client::connect(&s, &terminal, Auth::Token(&s.other), &format!("offset={resume_at}")).await;
    assert_eq!(back.start, resume_at);
    back.read_until("while-away-64\r\n").await;
    let expected = &owner.received[resume_at as usize..];
    assert_eq!(
        &back.received[..expected.len().min(back.received.len())],
        &expected[..back.received.len().min(expected.len())]
    );
    assert!(back.controls.iter().all(|c| c["type"] != "reset"), "resume within the buffer needs no reset");

    // An offset from the future is refused with a reset to the start of the history.
    let mut bogus = Client::connect(&s, &terminal, Auth::Token(&s.other), "offset=99999999").await;
    assert_eq!(bogus.next_control("error").await["code"], "invalid");
    let reset = bogus.next_control("reset").await;
    assert_eq!(reset["offset"], 0);
    s.cleanup(&container).await;
}

#[tokio::test]
async fn a_stalled_client_does_not_hold_up_the_terminal_or_others() {
    let s = server(&[]).await;
    let (container, terminal) = s.shell_terminal().await;
    let mut active = Client::connect(&s, &terminal, Auth::Token(&s.owner), "").await;
    // Settle the prompt first.
    active.type_keys("echo ready-$((1+1))\n").await;
    active.read_until("ready-2\r\n").await;

    // Baseline: 8 MB of output with only the active client.
    let flood = "yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz | head -c 8000000 >/dev/tty; echo flood-$((1+1))-done\n";
    let began = Instant::now();
    active.type_keys(flood).await;
    active.read_until("flood-2-done\r\n").await;
    let alone = began.elapsed();

    // Now with a client that connects and then reads nothing and acknowledges nothing.
    let mut stalled = Client::connect(&s, &terminal, Auth::Token(&s.other), "").await;
    stalled.ack = false;
    let stalled_seen = stalled.received.len();
    let began = Instant::now();
    active.type_keys(&flood.replace("flood-$((1+1))", "flood-$((2+1))")).await;
    active.read_until("flood-3-done\r\n").await;
    let with_stalled = began.elapsed();
    println!("8 MB through the terminal: alone {alone:?}, beside a stalled client {with_stalled:?}");
    assert!(
        with_stalled < alone * 3 + Duration::from_secs(2),
        "a stalled client slowed the others: {alone:?} alone, {with_stalled:?} with it"
    );

    // When the stalled client reads again it is told what it missed, then catches up.
    stalled.ack = true;
    let reset = stalled.next_control("reset").await;
    assert!(reset["missed"].as_u64().unwrap() > 0, "{reset}");
    stalled.read_until("flood-3-done\r\n").await;
    assert!(stalled.received.len() >= stalled_seen);
    s.cleanup(&container).await;
}

#[tokio::test]
async fn share_links_grant_one_terminal_until_revoked() {
    let s = server(&[]).await;
    let (container, terminal) = s.shell_terminal().await;
    let (other_container, other_terminal) = s.shell_terminal().await;
    let post = reqwest::Method::POST;

    // Only the owner manages links, and links never grant ownership.
    let links = format!("/api/terminals/{terminal}/links");
    let (status, body) = s.api(post.clone(), &links, &s.other, Some(json!({"role": "viewer"}))).await;
    assert_eq!((status, body["error"]["kind"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, _) = s.api(post.clone(), &links, &s.owner, Some(json!({"role": "owner"}))).await;
    assert_eq!(status, 400);
    let (status, _) = s.api(post.clone(), &links, &s.owner, Some(json!({"role": "viewer", "expires_in": 0}))).await;
    assert_eq!(status, 400);

    let (status, viewer_link) = s.api(post.clone(), &links, &s.owner, Some(json!({"role": "viewer"}))).await;
    assert_eq!(status, 201, "{viewer_link}");
    let (_, writer_link) =
        s.api(post.clone(), &links, &s.owner, Some(json!({"role": "writer", "expires_in": 600}))).await;
    let viewer_secret = viewer_link["secret"].as_str().unwrap();
    let writer_secret = writer_link["secret"].as_str().unwrap();

    let mut owner = Client::connect(&s, &terminal, Auth::Token(&s.owner), "").await;
    let mut guest = Client::connect(&s, &terminal, Auth::Link(viewer_secret), "").await;
    assert_eq!(
        (guest.hello["role"].as_str(), guest.hello["clients"][1]["name"].as_str()),
        (Some("viewer"), Some("Guest"))
    );
    let mut helper = Client::connect(&s, &terminal, Auth::Link(writer_secret), "").await;
    assert_eq!(helper.hello["role"], "writer");
    helper.type_keys("echo from-link-$((4*4))\n").await;
    owner.read_until("from-link-16").await;
    guest.read_until("from-link-16").await;
    guest.type_keys("echo nope\n").await;
    assert_eq!(guest.next_control("error").await["code"], "forbidden");

    // A link opens its own terminal only, and nothing else of the API.
    assert_eq!(open(&s, &other_terminal, Auth::Link(viewer_secret), "", None).await.err(), Some(401));
    let (status, _) = s.api(reqwest::Method::GET, "/api/containers", viewer_secret, None).await;
    assert_eq!(status, 401);

    // Revoking closes the open connection at once and refuses new ones.
    let link_id = viewer_link["id"].as_str().unwrap();
    let (status, _) = s.api(reqwest::Method::DELETE, &format!("{links}/{link_id}"), &s.owner, None).await;
    assert_eq!(status, 204);
    let closed = guest.next_control("closed").await;
    assert_eq!(closed["reason"], "revoked");
    while guest.pump().await.is_some() {}
    assert_eq!(open(&s, &terminal, Auth::Link(viewer_secret), "", None).await.err(), Some(401));
    // The writer link is unaffected.
    helper.type_keys("echo still-here-$((5*5))\n").await;
    helper.read_until("still-here-25").await;
    let (_, listed) = s.api(reqwest::Method::GET, &links, &s.owner, None).await;
    let revoked: Vec<bool> = listed.as_array().unwrap().iter().map(|l| l["revoked"].as_bool().unwrap()).collect();
    assert_eq!(revoked, vec![true, false]);
    assert!(listed.to_string().find("phl_").is_none(), "secrets are never listed");

    // An expiring link closes its connection when it expires.
    let (_, short) = s.api(post, &links, &s.owner, Some(json!({"role": "viewer", "expires_in": 1}))).await;
    let mut brief = Client::connect(&s, &terminal, Auth::Link(short["secret"].as_str().unwrap()), "").await;
    assert_eq!(brief.next_control("closed").await["reason"], "expired");
    s.cleanup(&container).await;
    s.cleanup(&other_container).await;
}

#[tokio::test]
async fn websockets_check_the_origin_and_cors_is_closed_unless_configured() {
    let s = server(&["https://demo.example.org"]).await;
    let (container, terminal) = s.shell_terminal().await;
    let own = format!("http://{}", s.addr);
    assert!(open(&s, &terminal, Auth::Token(&s.owner), "", Some(&own)).await.is_ok());
    assert!(open(&s, &terminal, Auth::Token(&s.owner), "", Some("https://demo.example.org")).await.is_ok());
    assert_eq!(open(&s, &terminal, Auth::Token(&s.owner), "", Some("http://evil.example")).await.err(), Some(403));
    assert_eq!(open(&s, &terminal, Auth::Token(&s.owner), "", Some("null")).await.err(), Some(403));
    assert_eq!(open(&s, &terminal, Auth::Token("ph_wrong"), "", None).await.err(), Some(401));

    let preflight = |origin: &'static str, addr| async move {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, format!("http://{addr}/api/containers"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap()
    };
    let allowed = preflight("https://demo.example.org", s.addr).await;
    assert_eq!(allowed.headers().get("access-control-allow-origin").unwrap(), "https://demo.example.org");
    let other = preflight("http://evil.example", s.addr).await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
    s.cleanup(&container).await;

    let closed = server(&[]).await;
    let response = preflight("https://demo.example.org", closed.addr).await;
    assert!(response.headers().get("access-control-allow-origin").is_none(), "CORS must be closed by default");
    let get = reqwest::Client::new()
        .get(format!("http://{}/api/containers", closed.addr))
        .bearer_auth(&closed.owner)
        .header("origin", "https://demo.example.org")
        .send()
        .await
        .unwrap();
    assert!(get.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn terminals_are_found_again_after_a_server_restart() {
    let root = tempfile::Builder::new().prefix("phr").tempdir_in("/tmp").unwrap();
    let open_engine = || async {
        let engine = NativeEngine::open(NativeConfig {
            root: root.path().to_path_buf(),
            shim_exe: env!("CARGO_BIN_EXE_porthole").into(),
            starter_image: true,
        })
        .await
        .unwrap();
        Arc::new(engine) as Arc<dyn Engine>
    };
    let serve = |state: AppState| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move { porthole::serve_app(listener, state).await });
        (addr, task)
    };
    let engine = open_engine().await;
    let pool = db::open(root.path()).await.unwrap();
    let token = auth::bootstrap(&pool).await.unwrap().unwrap();
    let state = AppState::new(engine.clone(), pool.clone());
    let (addr, task) = serve(state.clone()).await;
    let s = Server {
        addr,
        owner: token.clone(),
        other: token.clone(),
        engine,
        http: reqwest::Client::new(),
        root: tempfile::Builder::new().prefix("phx").tempdir_in("/tmp").unwrap(),
    };
    let (container, terminal) = s.shell_terminal().await;
    let mut client = Client::connect(&s, &terminal, Auth::Token(&token), "").await;
    client.type_keys("echo before-restart-$((10*10))\n").await;
    client.read_until("before-restart-100\r\n").await;
    drop(client);
    // The old server goes away: its tasks and terminal registry with it.
    task.abort();
    drop(state);

    let engine = open_engine().await;
    let pool = db::open(root.path()).await.unwrap();
    let state = AppState::new(engine.clone(), pool);
    assert_eq!(state.terminals.restore(&state.engines).await.unwrap(), 1);
    let (addr, _task) = serve(state).await;
    let s2 = Server { addr, engine, ..s };
    let mut again = Client::connect(&s2, &terminal, Auth::Token(&token), "").await;
    assert_eq!(again.hello["role"], "owner", "the owner is remembered");
    again.read_until("before-restart-100\r\n").await;
    again.type_keys("echo after-restart-$((11*11))\n").await;
    again.read_until("after-restart-121\r\n").await;
    s2.cleanup(&container).await;
}
