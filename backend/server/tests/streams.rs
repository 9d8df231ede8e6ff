//! Streaming routes through a real server: logs as Docker's multiplexed stream and over a
//! WebSocket (tail, since, follow, timestamps, stdout/stderr marked), a reader that never reads
//! does not hold the container back, events arrive as server-sent events, and one-shot exec
//! returns output and exit code.

mod common;

use std::time::Instant;

use common::{server, Server, LIMIT};
use futures::StreamExt;
use porthole_engine::api::{ContainerConfig, RemoveOptions};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

async fn run(s: &Server, script: &str) -> String {
    let config = ContainerConfig {
        image: "busybox".into(),
        cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
        ..Default::default()
    };
    let id = s.engine.create_container(config).await.unwrap();
    s.engine.start_container(&id).await.unwrap();
    id
}

/// Splits Docker's multiplexed stream into (stream byte, payload) frames.
fn demultiplex(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 8, "truncated frame header");
        let len = u32::from_be_bytes(body[4..8].try_into().unwrap()) as usize;
        assert_eq!(&body[1..4], &[0, 0, 0]);
        frames.push((body[0], body[8..8 + len].to_vec()));
        body = &body[8 + len..];
    }
    frames
}

async fn get_logs(s: &Server, id: &str, query: &str) -> (u16, Vec<u8>) {
    let response = s
        .http
        .get(format!("http://{}/api/containers/{id}/logs?{query}", s.addr))
        .bearer_auth(&s.owner)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.bytes().await.unwrap().to_vec())
}

fn joined(frames: &[(u8, Vec<u8>)], stream: u8) -> String {
    frames.iter().filter(|(s, _)| *s == stream).map(|(_, d)| String::from_utf8_lossy(d).into_owned()).collect()
}

#[tokio::test]
async fn logs_come_marked_by_stream_with_tail_since_and_timestamps() {
    let s = server(&[]).await;
    let id = run(&s, "echo out1; echo err1 >&2; sleep 0.3; echo out2").await;
    s.engine.wait_container(&id).await.unwrap();

    let (status, body) = get_logs(&s, &id, "").await;
    assert_eq!(status, 200);
    let frames = demultiplex(&body);
    assert_eq!(joined(&frames, 1), "out1\nout2\n");
    assert_eq!(joined(&frames, 2), "err1\n");

    let (_, body) = get_logs(&s, &id, "tail=1").await;
    assert_eq!(demultiplex(&body), vec![(1, b"out2\n".to_vec())]);
    let (_, body) = get_logs(&s, &id, "stderr=true").await;
    assert_eq!(demultiplex(&body), vec![(2, b"err1\n".to_vec())]);

    let (_, body) = get_logs(&s, &id, "timestamps=true&stdout=true").await;
    let frames = demultiplex(&body);
    let (stamp, line) = std::str::from_utf8(&frames[0].1).unwrap().split_once(' ').unwrap();
    let first_time = chrono::DateTime::parse_from_rfc3339(stamp).expect("an RFC 3339 timestamp");
    assert_eq!(line, "out1\n");
    let (stamp2, _) = std::str::from_utf8(&frames[1].1).unwrap().split_once(' ').unwrap();
    let second_time = chrono::DateTime::parse_from_rfc3339(stamp2).unwrap();
    assert!(second_time - first_time >= chrono::Duration::milliseconds(250), "{first_time} {second_time}");

    // Since the second line's time: only that line.
    let since = (second_time - chrono::Duration::milliseconds(1)).to_rfc3339();
    let (_, body) = get_logs(&s, &id, &format!("stdout=true&since={}", since.replace('+', "%2B"))).await;
    assert_eq!(joined(&demultiplex(&body), 1), "out2\n");

    for bad in ["tail=lots", "since=yesterday"] {
        let (status, body) = get_logs(&s, &id, bad).await;
        assert_eq!(status, 400, "{bad}");
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert!(error["error"]["message"].as_str().unwrap().contains(bad.split('=').next().unwrap()), "{error}");
    }
    let (status, _) = get_logs(&s, "no-such-container", "").await;
    assert_eq!(status, 404);
    s.cleanup(&id).await;
}

#[tokio::test]
async fn logs_follow_over_a_websocket_and_a_reader_that_never_reads_blocks_nothing() {
    let s = server(&[]).await;
    let ws_request = |id: &str, query: &str, origin: Option<&str>| {
        let mut request = format!("ws://{}/api/containers/{id}/logs/ws?{query}", s.addr).into_client_request().unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {}", s.owner).parse().unwrap());
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().unwrap());
        }
        request
    };

    // 6 MB of output while one follower never reads a byte.
    let id =
        run(&s, "sleep 0.5; yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 6000000; echo; echo done >&2").await;
    let (stalled, _) = tokio_tungstenite::connect_async(ws_request(&id, "follow=true", None)).await.unwrap();
    let (mut follower, _) = tokio_tungstenite::connect_async(ws_request(&id, "follow=true", None)).await.unwrap();
    let began = Instant::now();
    let code =
        tokio::time::timeout(LIMIT, s.engine.wait_container(&id)).await.expect("the container finished").unwrap();
    assert_eq!(code, 0);
    println!("6 MB written with a stalled log reader attached in {:?}", began.elapsed());

    let mut out_bytes = 0usize;
    let mut err = Vec::new();
    let mut ended = false;
    while let Some(message) = tokio::time::timeout(LIMIT, follower.next()).await.expect("log frames in time") {
        match message.unwrap() {
            Message::Binary(frame) => {
                let time = i64::from_be_bytes(frame[1..9].try_into().unwrap());
                assert!(time > 1_700_000_000_000_000_000, "a nanosecond timestamp: {time}");
                match frame[0] {
                    1 => out_bytes += frame.len() - 9,
                    2 => err.extend_from_slice(&frame[9..]),
                    other => panic!("stream byte {other}"),
                }
            }
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(value["type"], "end", "{value}");
                ended = true;
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(ended, "the follow ended with the container");
    assert_eq!(out_bytes, 6_000_001);
    assert_eq!(err, b"done\n");
    drop(stalled);

    let refused = tokio_tungstenite::connect_async(ws_request(&id, "", Some("http://evil.example"))).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 403),
        other => panic!("a foreign origin was not refused: {:?}", other.map(|_| ())),
    }
    s.cleanup(&id).await;
}

#[tokio::test]
async fn events_stream_as_server_sent_events() {
    let s = server(&[]).await;
    let response = s.http.get(format!("http://{}/api/events", s.addr)).bearer_auth(&s.owner).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    // Something at once, before any event: Firefox shows a page no response (EventSource stays
    // "connecting") until body bytes arrive, and the keep-alive comes only after 15 s.
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
        .await
        .expect("the stream says something at once")
        .unwrap()
        .unwrap();
    assert!(first.starts_with(b":"), "the stream opens with a comment, not {first:?}");
    let id = run(&s, "exit 7").await;
    let mut seen = String::new();
    let began = Instant::now();
    while !seen.contains("\"type\":\"die\",\"exit_code\":7") {
        assert!(began.elapsed() < LIMIT, "no die event in {seen}");
        let chunk = tokio::time::timeout(LIMIT, body.next()).await.expect("events in time").unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: container"));
    for action in ["\"create\"", "\"start\""] {
        assert!(seen.contains(action), "{action} missing from {seen}");
    }
    assert!(seen.contains(&id));
    s.engine.remove_container(&id, RemoveOptions::default()).await.unwrap();
}

#[tokio::test]
async fn exec_runs_a_command_and_returns_its_output_and_exit_code() {
    let s = server(&[]).await;
    let id = run(&s, "sleep 600").await;
    let exec = format!("/api/containers/{id}/exec");
    let (status, body) = s
        .api(
            reqwest::Method::POST,
            &exec,
            &s.owner,
            Some(json!({"cmd": ["sh", "-c", "echo hi from $(hostname); echo oops >&2; exit 5"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["exit_code"], 5);
    assert!(body["stdout"].as_str().unwrap().starts_with("hi from "), "{body}");
    assert_eq!(body["stderr"], "oops\n");

    let (status, _) = s.api(reqwest::Method::POST, &exec, &s.owner, Some(json!({"cmd": []}))).await;
    assert_eq!(status, 400);
    let (status, body) =
        s.api(reqwest::Method::POST, &exec, &s.owner, Some(json!({"cmd": ["/no/such/program"]}))).await;
    assert_eq!(status, 400, "{body}");
    s.engine.stop_container(&id, std::time::Duration::ZERO).await.unwrap();
    let (status, body) = s.api(reqwest::Method::POST, &exec, &s.owner, Some(json!({"cmd": ["true"]}))).await;
    assert_eq!(status, 409, "{body}");
    s.cleanup(&id).await;
}
