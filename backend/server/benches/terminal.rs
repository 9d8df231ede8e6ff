//! Shared-terminal benchmark, against a real `porthole serve` process and the native engine
//! (root needed). Prints:
//!
//! - output throughput from a container to one WebSocket client (MB/s), beside the raw PTY read
//!   rate of the same command run on a host PTY (target: at least 90%);
//! - keystroke echo latency p50/p99 over 1000 keystrokes, idle and while another terminal
//!   floods output (targets: p99 at most 2 ms idle, 5 ms flooded);
//! - fan-out of one busy terminal to 1, 10, 50 and 100 viewers: throughput per viewer, whether
//!   every viewer got every byte, and the server's CPU use.
//!
//! `PORTHOLE_BENCH_ONLY=throughput,echo,fanout,docker` runs only the parts it lists.
//! Sizes: `PORTHOLE_BENCH_MB` (default 100) for throughput, a fifth of it for fan-out.
//! Throughput alternates raw and WebSocket runs `PORTHOLE_BENCH_ROUNDS` times (default 3) and
//! compares medians: the raw rate alone varies by a third from one run to the next here.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const LINE: &str = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz";
const LIMIT: Duration = Duration::from_secs(120);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Server {
    child: Child,
    base: String,
    token: String,
    http: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(docker: Option<&str>) -> Server {
    let data = tempfile::Builder::new().prefix("phb").tempdir_in("/tmp").expect("a data directory");
    let mut command = Command::new(env!("CARGO_BIN_EXE_porthole"));
    command.args(["serve", "--listen", "127.0.0.1:0", "--log", "warn,porthole=info", "--engine", "native=native"]);
    if let Some(address) = docker {
        command.arg("--engine").arg(format!("docker={address}"));
    }
    let mut child = command
        .arg("--data-dir")
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("porthole starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(("base", rest.trim().trim_end_matches('/').to_string()));
            }
            if let Some(rest) = line.split("/login?token=").nth(1) {
                let _ = tx.send(("token", rest.trim().to_string()));
            }
        }
    });
    let (mut base, mut token) = (None, None);
    while base.is_none() || token.is_none() {
        let (what, value) = rx.recv_timeout(Duration::from_secs(60)).expect("the server reports address and token");
        if what == "base" {
            base = Some(value);
        } else {
            token = Some(value);
        }
    }
    Server { child, base: base.unwrap(), token: token.unwrap(), http: reqwest::Client::new(), _data: data }
}

impl Server {
    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("http://{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("the API answers");
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {value}");
        value
    }

    async fn container(&self, engine: &str) -> String {
        let path = format!("/api/containers?start=true&engine={engine}");
        let created = self.post(&path, json!({"image": "busybox", "cmd": ["sleep", "3600"]})).await;
        created["id"].as_str().unwrap().to_string()
    }

    async fn terminal(&self, container: &str, cmd: &[&str]) -> String {
        let body = json!({"kind": "exec", "cmd": cmd, "size": {"rows": 50, "cols": 200}});
        let created = self.post(&format!("/api/containers/{container}/terminals"), body).await;
        created["id"].as_str().unwrap().to_string()
    }

    /// Server CPU time so far (user + system), from /proc.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: u64 = fields.get(11..13).map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum()).unwrap_or(0);
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }
}

/// A client that acknowledges what it receives and counts bytes and resets.
struct Viewer {
    ws: Ws,
    received: u64,
    tail: Vec<u8>,
    resets: u64,
    missed: u64,
    frames: u64,
}

impl Viewer {
    async fn connect(server: &Server, terminal: &str) -> Viewer {
        Viewer::connect_to(&server.base, &server.token, terminal).await
    }

    async fn connect_to(base: &str, token: &str, terminal: &str) -> Viewer {
        let url = format!("ws://{base}/api/terminals/{terminal}/ws");
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .expect("the terminal WebSocket opens");
        let mut viewer = Viewer { ws, received: 0, tail: Vec::new(), resets: 0, missed: 0, frames: 0 };
        // Wait for hello, then drain the history so measurements start from live output.
        viewer.next().await;
        viewer
    }

    /// One message; returns the binary payload length (0 for control messages).
    async fn next(&mut self) -> Option<usize> {
        let message = tokio::time::timeout(LIMIT, self.ws.next()).await.ok()??.ok()?;
        match message {
            Message::Binary(data) => {
                self.received += data.len() as u64;
                self.frames += 1;
                self.tail.extend_from_slice(&data);
                if self.tail.len() > 256 {
                    self.tail.drain(..self.tail.len() - 256);
                }
                let ack = json!({"type": "ack", "offset": self.received}).to_string();
                self.ws.send(Message::Text(ack.into())).await.ok()?;
                Some(data.len())
            }
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                if value["type"] == "reset" {
                    self.resets += 1;
                    self.missed += value["missed"].as_u64().unwrap_or(0);
                    self.received = value["offset"].as_u64().unwrap_or(self.received);
                }
                if value["type"] == "hello" {
                    self.received = value["offset"].as_u64().unwrap_or(0);
                }
                Some(0)
            }
            Message::Close(_) => None,
            _ => Some(0),
        }
    }

    async fn until(&mut self, marker: &[u8]) -> bool {
        let began = Instant::now();
        while !self.tail.windows(marker.len()).any(|w| w == marker) {
            if began.elapsed() > LIMIT || self.next().await.is_none() {
                return false;
            }
        }
        self.tail.clear();
        true
    }

    async fn type_keys(&mut self, keys: &str) {
        self.ws.send(Message::Binary(keys.as_bytes().to_vec().into())).await.expect("send keys");
    }
}

fn flood_command(bytes: u64, marker: &str) -> String {
    format!("yes {LINE} | head -c {bytes}; echo {marker}-$((20+22))\n")
}

/// The same command on a host PTY, read as fast as possible: bytes and seconds.
fn raw_pty_rate(bytes: u64) -> Option<(u64, Duration)> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| std::path::Path::new(p).exists())?;
    let pty = nix::pty::openpty(None, None).ok()?;
    let slave = pty.slave;
    let began = Instant::now();
    let mut child = Command::new(busybox)
        .args(["sh", "-c", &format!("yes {LINE} | head -c {bytes}")])
        .stdin(Stdio::from(slave.try_clone().ok()?))
        .stdout(Stdio::from(slave.try_clone().ok()?))
        .stderr(Stdio::from(slave))
        .spawn()
        .ok()?;
    let mut master = std::fs::File::from(pty.master);
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            // EIO: the last holder of the slave side is gone.
            Err(_) => break,
        }
    }
    let elapsed = began.elapsed();
    let _ = child.wait();
    let _ = master.as_raw_fd();
    Some((total, elapsed))
}

fn mb_per_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64().max(1e-9)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Returns the median WebSocket rate (MB/s).
async fn throughput(server: &Server, container: &str, bytes: u64, engine: &str, rounds: usize) -> f64 {
    let terminal = server.terminal(container, &["sh"]).await;
    let mut viewer = Viewer::connect(server, &terminal).await;
    viewer.type_keys("echo ready-$((1+1))\n").await;
    viewer.until(b"ready-2").await;
    let (mut raw_rates, mut ws_rates) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let raw = raw_pty_rate(bytes);
        let (start_offset, start_frames) = (viewer.received, viewer.frames);
        let began = Instant::now();
        let marker = format!("THROUGHPUT{round}");
        viewer.type_keys(&flood_command(bytes, &marker)).await;
        let complete = viewer.until(format!("{marker}-42").as_bytes()).await;
        let elapsed = began.elapsed();
        let got = viewer.received - start_offset;
        let ws_rate = mb_per_s(got, elapsed);
        ws_rates.push(ws_rate);
        let raw_text = match raw {
            Some((raw_bytes, raw_time)) => {
                let raw_rate = mb_per_s(raw_bytes, raw_time);
                raw_rates.push(raw_rate);
                format!("raw host PTY {raw_rate:.1} MB/s ({raw_bytes} bytes)")
            }
            None => "raw PTY rate not measured (no busybox)".to_string(),
        };
        println!(
            "throughput ({engine}) round {round}: WebSocket client {ws_rate:.1} MB/s ({got} bytes in {elapsed:.2?}, {} frames{}), {raw_text}",
            viewer.frames - start_frames,
            if complete { "" } else { ", INCOMPLETE" },
        );
    }
    let ws = median(&mut ws_rates);
    if !raw_rates.is_empty() {
        let raw = median(&mut raw_rates);
        let ratio = 100.0 * ws / raw;
        println!(
            "throughput ({engine}): median WebSocket {ws:.1} MB/s, median raw {raw:.1} MB/s: {ratio:.0}% of raw (target >= 90%: {})",
            if ratio >= 90.0 { "met" } else { "missed" }
        );
    }
    if viewer.resets > 0 {
        println!("throughput: the client was reset {} times ({} bytes missed)", viewer.resets, viewer.missed);
    }
    ws
}

async fn echo_latency(server: &Server, container: &str, label: &str) -> (Duration, Duration) {
    let terminal = server.terminal(container, &["cat"]).await;
    let mut viewer = Viewer::connect(server, &terminal).await;
    // The PTY's line discipline echoes each keystroke.
    let mut samples = Vec::with_capacity(1000);
    for i in 0..1000 {
        let key = [b'a' + (i % 26) as u8];
        let before = viewer.received;
        let began = Instant::now();
        viewer.ws.send(Message::Binary(key.to_vec().into())).await.unwrap();
        while viewer.received == before {
            if viewer.next().await.is_none() {
                println!("echo {label}: the terminal closed");
                return (Duration::ZERO, Duration::ZERO);
            }
        }
        samples.push(began.elapsed());
    }
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!("echo latency {label}: p50 {p50:.2?} p99 {p99:.2?} over {} keystrokes", samples.len());
    (p50, p99)
}

/// Echo latency in `container` while a terminal of `flood_container` prints without pause to
/// a viewer of its own: another client, so it reads on its own thread, as another person's
/// browser would.
async fn flooded_echo_latency(server: &Server, container: &str, flood_container: &str, label: &str) {
    let flood = server.terminal(flood_container, &["sh", "-c", &format!("yes {LINE}")]).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_reader = stop.clone();
    let (base, token) = (server.base.clone(), server.token.clone());
    let reader = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async move {
            let mut flood_viewer = Viewer::connect_to(&base, &token, &flood).await;
            let (began, start) = (Instant::now(), flood_viewer.received);
            while !stop_reader.load(std::sync::atomic::Ordering::Relaxed) {
                if flood_viewer.next().await.is_none() {
                    break;
                }
            }
            let result = (flood_viewer.received - start, began.elapsed());
            // Ctrl-C ends the flood, so that it does not load the measurements after this one;
            // the terminal closes when its process has gone.
            flood_viewer.type_keys("\x03").await;
            let ended =
                tokio::time::timeout(Duration::from_secs(10), async { while flood_viewer.next().await.is_some() {} });
            if ended.await.is_err() {
                println!("  (the flooding terminal did not stop on Ctrl-C)");
            }
            result
        })
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, p99) = echo_latency(server, container, &format!("while {label} floods")).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Ok((bytes, time)) = tokio::task::spawn_blocking(move || reader.join()).await.expect("joined") {
        println!(
            "  (the flooding terminal delivered {:.1} MB/s meanwhile; p99 target <= 5 ms: {})",
            mb_per_s(bytes, time),
            if p99 <= Duration::from_millis(5) { "met" } else { "missed" }
        );
    }
}

async fn fan_out(server: &Server, container: &str, viewers: usize, bytes: u64) -> f64 {
    let terminal = server.terminal(container, &["sh"]).await;
    let mut owner = Viewer::connect(server, &terminal).await;
    let mut clients = Vec::with_capacity(viewers);
    for _ in 0..viewers {
        clients.push(Viewer::connect(server, &terminal).await);
    }
    owner.type_keys("echo ready-$((1+1))\n").await;
    owner.until(b"ready-2").await;
    for c in &mut clients {
        c.until(b"ready-2").await;
    }
    let cpu_before = server.cpu();
    let began = Instant::now();
    let marker = format!("FANOUT{viewers}");
    owner.type_keys(&flood_command(bytes, &marker)).await;
    let expected = format!("{marker}-42").into_bytes();
    let mut tasks = Vec::new();
    for mut c in clients {
        let expected = expected.clone();
        tasks.push(tokio::spawn(async move {
            let start = c.received;
            let ok = c.until(&expected).await;
            (ok, c.received - start, began.elapsed(), c.resets, c.missed)
        }));
    }
    let owner_done = owner.until(&expected).await;
    let mut rates = Vec::new();
    let (mut complete, mut all_bytes, mut resets) = (owner_done, true, 0u64);
    for task in tasks {
        let (ok, got, time, r, missed) = task.await.unwrap();
        complete &= ok;
        all_bytes &= missed == 0;
        resets += r;
        rates.push(mb_per_s(got, time));
    }
    let wall = began.elapsed();
    let cpu = server.cpu().saturating_sub(cpu_before);
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    let min = rates.first().copied().unwrap_or(0.0);
    println!(
        "fan-out {viewers:>3} viewers: median {median:.1} MB/s per viewer (slowest {min:.1}), {} , server CPU {:.0}% of one core over {wall:.2?}{}",
        if all_bytes { "every viewer got every byte".to_string() } else { format!("{resets} resets (bytes skipped)") },
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        if complete { "" } else { ", SOME DID NOT FINISH" }
    );
    median
}

/// Whether a part of the benchmark runs: all of them, unless `PORTHOLE_BENCH_ONLY` lists some
/// (`throughput`, `echo`, `fanout`, `docker`, separated by commas).
fn wanted(part: &str) -> bool {
    match std::env::var("PORTHOLE_BENCH_ONLY") {
        Ok(only) if !only.trim().is_empty() => only.split(',').any(|p| p.trim() == part),
        _ => true,
    }
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        println!("terminal benchmark: needs root (the native engine); skipped");
        return;
    }
    let mb: u64 = std::env::var("PORTHOLE_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let rounds: usize = std::env::var("PORTHOLE_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let docker = std::env::var("PORTHOLE_BENCH_DOCKER_HOST").ok().filter(|h| !h.is_empty());
    runtime.block_on(async {
        if let Some(address) = &docker {
            match porthole_engine::docker::DockerEngine::connect(address).await {
                Ok(engine) => {
                    if let Err(e) = engine.ensure_busybox_image("busybox:latest").await {
                        println!("docker: cannot load busybox: {}", e.message());
                    }
                }
                Err(e) => println!("docker: {}", e.message()),
            }
        }
        let server = start_server(docker.as_deref());
        println!("server: porthole serve (pid {}) at {}", server.child.id(), server.base);
        let container = server.container("native").await;
        let neighbour = server.container("native").await;
        if wanted("throughput") {
            throughput(&server, &container, mb * 1_000_000, "native", rounds).await;
        }
        if wanted("echo") {
            let (_, p99) = echo_latency(&server, &container, "idle").await;
            println!("  (p99 target <= 2 ms: {})", if p99 <= Duration::from_millis(2) { "met" } else { "missed" });
            flooded_echo_latency(&server, &container, &container, "another terminal of the same container").await;
            flooded_echo_latency(&server, &container, &neighbour, "a terminal of another container").await;
        }
        let mut single = 0.0;
        let fan_outs: &[usize] = if wanted("fanout") { &[1, 10, 50, 100] } else { &[] };
        for &viewers in fan_outs {
            let median = fan_out(&server, &container, viewers, mb * 200_000).await;
            if viewers == 1 {
                single = median;
            }
            if viewers == 50 {
                println!(
                    "  (50 viewers: median {median:.1} MB/s against half the single viewer's {:.1} MB/s: {})",
                    single / 2.0,
                    if median >= single / 2.0 { "met" } else { "missed" }
                );
            }
        }
        let remove = |id: String| {
            let request = server.http.delete(format!("http://{}/api/containers/{id}?force=true", server.base));
            request.bearer_auth(&server.token).send()
        };
        let _ = remove(container).await;
        let _ = remove(neighbour).await;
        match &docker {
            Some(_) if !wanted("docker") => {}
            Some(_) => {
                let container = server.container("docker").await;
                throughput(&server, &container, mb * 1_000_000, "docker", rounds).await;
                echo_latency(&server, &container, "idle, Docker backend").await;
                let _ = remove(container).await;
            }
            None => println!("docker: set PORTHOLE_BENCH_DOCKER_HOST to measure through the Docker backend too"),
        }
    });
}
