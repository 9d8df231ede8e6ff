//! Streaming routes: container logs (a WebSocket for the dashboard, Docker's multiplexed stream
//! over plain HTTP for scripts), the engine's event stream (server-sent events), and one-shot
//! exec. A reader that stops reading only pauses its own stream: logs are read from disk at the
//! reader's pace, events from a bounded broadcast that drops the oldest for laggards.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::{SinkExt, StreamExt};
use porthole_engine::api::{ExecConfig, LogOptions, LogRecord, StdStream};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiResult};
use crate::engines::SetEvent;
use crate::AppState;

/// Output a one-shot exec may return; more is cut (and says so).
const EXEC_OUTPUT_LIMIT: usize = 4 << 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/containers/{id}/logs", get(logs))
        .route("/api/containers/{id}/logs/ws", get(logs_ws))
        .route("/api/containers/{id}/exec", post(exec))
        .route("/api/events", get(events))
}

/// What `docker logs` takes, as query parameters.
#[derive(Debug, Deserialize)]
struct LogQuery {
    tail: Option<String>,
    /// RFC 3339 time or Unix seconds.
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    timestamps: bool,
    stdout: Option<bool>,
    stderr: Option<bool>,
}

fn parse_time(name: &str, value: &str) -> ApiResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            if let Some(t) = DateTime::from_timestamp(secs.trunc() as i64, (secs.fract() * 1e9) as u32) {
                return Ok(t);
            }
        }
    }
    Err(ApiError::bad_request(format!("{name} must be an RFC 3339 time or Unix seconds, not '{value}'")))
}

impl LogQuery {
    fn options(&self) -> ApiResult<LogOptions> {
        let tail =
            match self.tail.as_deref() {
                None | Some("all") => None,
                Some(n) => Some(n.parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!("tail must be a number of lines or 'all', not '{n}'"))
                })?),
            };
        let (stdout, stderr) = match (self.stdout, self.stderr) {
            (None, None) => (true, true),
            (out, err) => (out.unwrap_or(false), err.unwrap_or(false)),
        };
        Ok(LogOptions {
            tail,
            since: self.since.as_deref().map(|s| parse_time("since", s)).transpose()?,
            until: self.until.as_deref().map(|s| parse_time("until", s)).transpose()?,
            follow: self.follow,
            stdout,
            stderr,
        })
    }
}

fn stream_byte(stream: StdStream) -> u8 {
    match stream {
        StdStream::Stdout => 1,
        StdStream::Stderr => 2,
    }
}

/// A record in Docker's multiplexed-stream framing: `[stream, 0, 0, 0, len (u32 BE)]` then the
/// bytes; with timestamps the bytes start with the RFC 3339 time and a space, as Docker's do.
fn multiplexed(record: &LogRecord, timestamps: bool) -> Bytes {
    let stamp = timestamps.then(|| format!("{} ", record.time.to_rfc3339_opts(SecondsFormat::Nanos, true)));
    let stamp_len = stamp.as_ref().map_or(0, String::len);
    let mut frame = BytesMut::with_capacity(8 + stamp_len + record.data.len());
    frame.put_u8(stream_byte(record.stream));
    frame.put_bytes(0, 3);
    frame.put_u32((stamp_len + record.data.len()) as u32);
    if let Some(stamp) = stamp {
        frame.put_slice(stamp.as_bytes());
    }
    frame.put_slice(&record.data);
    frame.freeze()
}

/// `GET /api/containers/{id}/logs`: Docker's multiplexed stream, streamed as it is read.
async fn logs(State(state): State<AppState>, Path(id): Path<String>, Query(q): Query<LogQuery>) -> ApiResult<Response> {
    let options = q.options()?;
    let records = super::on(&state, &id).await?.logs(&id, options).await?;
    let timestamps = q.timestamps;
    let body = records.map(move |record| match record {
        Ok(record) => Ok::<_, std::io::Error>(multiplexed(&record, timestamps)),
        Err(err) => {
            tracing::warn!("log stream: {}", err.detail());
            Err(std::io::Error::other("the log stream failed"))
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/vnd.docker.multiplexed-stream")], Body::from_stream(body)).into_response())
}

/// `GET /api/containers/{id}/logs/ws`: one binary frame per record, `[stream (1 stdout, 2
/// stderr)][time: i64 nanoseconds since the epoch, big-endian][bytes]`; a text frame
/// `{"type":"end"}` when a non-follow read (or the container) ends.
async fn logs_ws(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    if !state.origins.websocket_allowed(&headers) {
        return Err(ApiError::forbidden("this origin may not open WebSockets here"));
    }
    let options = q.options()?;
    // Open the logs before upgrading so a bad container id is a plain HTTP error.
    let records = super::on(&state, &id).await?.logs(&id, options).await?;
    let upgrade = upgrade.map_err(|e| ApiError::bad_request(format!("not a WebSocket upgrade: {e}")))?;
    Ok(upgrade.on_upgrade(move |socket| send_logs(socket, records)))
}

async fn send_logs(
    socket: WebSocket,
    mut records: futures::stream::BoxStream<'static, porthole_engine::Result<LogRecord>>,
) {
    let (mut sink, mut incoming) = socket.split();
    loop {
        tokio::select! {
            record = records.next() => match record {
                Some(Ok(record)) => {
                    let mut frame = BytesMut::with_capacity(9 + record.data.len());
                    frame.put_u8(stream_byte(record.stream));
                    frame.put_i64(record.time.timestamp_nanos_opt().unwrap_or(0));
                    frame.put_slice(&record.data);
                    if sink.send(Message::Binary(frame.freeze())).await.is_err() {
                        return;
                    }
                }
                Some(Err(err)) => {
                    tracing::warn!("log stream: {}", err.detail());
                    let _ = sink.send(Message::Text(json!({"type": "error", "message": "the log stream failed"}).to_string().into())).await;
                    return;
                }
                None => {
                    let _ = sink.send(Message::Text(json!({"type": "end"}).to_string().into())).await;
                    let _ = sink.send(Message::Close(None)).await;
                    return;
                }
            },
            message = incoming.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// `GET /api/events`: every engine's events as server-sent events: `event: container` (the
/// event with its `engine`), `event: engine` (an engine became unavailable or available again).
/// A reader that falls behind loses the oldest events, and is told with `event: lagged`.
/// The stream opens with a comment: Firefox hands a response to the page (`EventSource` fires
/// `open`, `fetch` resolves) only once body bytes arrive, which would otherwise be the first
/// event or the keep-alive 15 s later.
async fn events(State(state): State<AppState>) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let hello = futures::stream::once(async { Ok(SseEvent::default().comment("connected")) });
    let stream = tokio_stream::wrappers::BroadcastStream::new(state.engines.subscribe()).map(|item| {
        let event = match item {
            Ok(SetEvent::Container(event)) => {
                SseEvent::default().event("container").data(serde_json::to_string(&event).unwrap_or_default())
            }
            Ok(SetEvent::Engine(status)) => {
                SseEvent::default().event("engine").data(serde_json::to_string(&status).unwrap_or_default())
            }
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                SseEvent::default().event("lagged").data(format!("{{\"missed\":{n}}}"))
            }
        };
        Ok(event)
    });
    Sse::new(hello.chain(stream)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecRequest {
    cmd: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    working_dir: Option<String>,
    /// Seconds to wait for the process (default 60, at most 3600).
    #[serde(default)]
    timeout: Option<u64>,
}

/// `POST /api/containers/{id}/exec`: runs a command to completion and returns its exit code
/// and output (`docker exec` without a terminal; interactive ones are terminals).
async fn exec(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<ExecRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(request) = body?;
    if request.cmd.is_empty() {
        return Err(ApiError::bad_request("cmd must name a command to run"));
    }
    let limit = Duration::from_secs(request.timeout.unwrap_or(60));
    if limit.is_zero() || limit > Duration::from_secs(3600) {
        return Err(ApiError::bad_request("timeout must be between 1 and 3600 seconds"));
    }
    let config = ExecConfig {
        cmd: request.cmd,
        env: request.env,
        working_dir: request.working_dir,
        user: request.user,
        tty: false,
        size: None,
    };
    let engine = super::on(&state, &id).await?;
    let exec_id = engine.create_exec(&id, config).await?;
    let mut io = engine.start_exec(&exec_id).await?;
    if let Some(mut input) = io.input.take() {
        // The command gets an empty stdin, as `docker exec` without `-i`.
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut input).await;
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut truncated = false;
    let collected = tokio::time::timeout(limit, async {
        while let Some(chunk) = io.output.next().await {
            let chunk = chunk?;
            let room = EXEC_OUTPUT_LIMIT.saturating_sub(stdout.len() + stderr.len());
            let target = if chunk.stream == StdStream::Stderr { &mut stderr } else { &mut stdout };
            truncated |= chunk.data.len() > room;
            target.extend_from_slice(&chunk.data[..chunk.data.len().min(room)]);
        }
        Ok::<_, porthole_engine::EngineError>(())
    })
    .await;
    match collected {
        Err(_) => {
            return Err(ApiError::timeout(format!(
                "the command did not finish within {}s (exec {exec_id} keeps running)",
                limit.as_secs()
            )))
        }
        Ok(result) => result?,
    }
    let mut exit_code = None;
    for _ in 0..100 {
        let details = engine.inspect_exec(&exec_id).await?;
        if !details.running {
            exit_code = details.exit_code;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((
        StatusCode::OK,
        Json(json!({
            "id": exec_id,
            "exit_code": exit_code,
            "stdout": String::from_utf8_lossy(&stdout),
            "stderr": String::from_utf8_lossy(&stderr),
            "truncated": truncated,
        })),
    )
        .into_response())
}
