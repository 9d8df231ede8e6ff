//! One client's WebSocket on a shared terminal (protocol: `docs/TERMINAL_PROTOCOL.md`).
//!
//! Two halves run side by side. The writer sends output from the client's own offset in the
//! terminal's buffer, in large binary frames, never more than [`WINDOW`] bytes ahead of what
//! the client acknowledged, plus control messages (presence, size, exit). The reader takes
//! keystrokes (refused for viewers) and control messages. Nothing a client does, or fails to
//! do, holds up the terminal or other clients: a client that falls behind the buffer is told
//! how much it missed and continues from the oldest byte kept.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use porthole_engine::api::TtySize;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};

use super::buffer::Read;
use super::{ClientInfo, Notice, Participant, Role, Terminal, TerminalError};

/// Bytes a client may have unacknowledged; beyond that the server waits for its `ack`.
pub const WINDOW: u64 = 1 << 20;
/// The largest output frame.
pub const MAX_FRAME: usize = 256 << 10;
/// A client whose socket accepts nothing for this long is disconnected.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Replies (errors) waiting for the writer, per client; more are dropped.
const REPLY_QUEUE: usize = 16;

/// Control messages from the server.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Hello {
        client: u64,
        terminal: String,
        role: Role,
        /// Stream offset of the first output byte that follows.
        offset: u64,
        size: Option<TtySize>,
        clients: Vec<ClientInfo>,
        /// Whether the process takes input at all.
        input: bool,
    },
    Presence {
        clients: Vec<ClientInfo>,
    },
    Size {
        rows: u16,
        cols: u16,
    },
    /// Output was lost for this client (it fell behind the buffer, or asked to resume from an
    /// offset no longer kept): the screen must be reset; output continues from `offset`.
    Reset {
        offset: u64,
        missed: u64,
    },
    Exit {
        code: Option<i64>,
    },
    Error {
        code: &'static str,
        message: String,
    },
    /// The server ends this connection (`revoked`, `expired`).
    Closed {
        reason: &'static str,
    },
    /// A viewer asks the owner to let them type.
    ControlRequest {
        client: u64,
        name: String,
    },
}

/// Control messages from a client.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// The client has processed output up to this stream offset.
    Ack {
        offset: u64,
    },
    Resize {
        rows: u16,
        cols: u16,
    },
    /// Owner only: give another client a role (`owner` hands the terminal over).
    SetRole {
        client: u64,
        role: Role,
    },
    /// A viewer asks the owner for typing (at most once per [`REQUEST_INTERVAL`]).
    RequestControl,
}

/// How often one connection may ask for control, so a guest cannot flood the owner's screen.
const REQUEST_INTERVAL: Duration = Duration::from_secs(5);

type Sink = SplitSink<WebSocket, Message>;

/// Runs one client until it leaves, the terminal ends, or its share link is revoked or expires.
pub async fn run(socket: WebSocket, terminal: Arc<Terminal>, participant: Participant, resume: Option<u64>) {
    let client = terminal.join(&participant);
    let (sink, stream) = socket.split();
    let (ack_tx, ack_rx) = watch::channel(0u64);
    let (reply_tx, reply_rx) = mpsc::channel(REPLY_QUEUE);
    let mut writer = tokio::spawn(write_loop(sink, terminal.clone(), client, participant, resume, ack_rx, reply_rx));
    tokio::select! {
        _ = read_loop(stream, &terminal, client, ack_tx, reply_tx) => writer.abort(),
        _ = &mut writer => {}
    }
    terminal.leave(client);
}

async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    terminal: &Terminal,
    client: u64,
    acks: watch::Sender<u64>,
    replies: mpsc::Sender<ServerMessage>,
) {
    let reply_error = |err: TerminalError| {
        let code = match err {
            TerminalError::Forbidden(_) => "forbidden",
            _ => "invalid",
        };
        let _ = replies.try_send(ServerMessage::Error { code, message: err.to_string() });
    };
    let mut last_request = None;
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Binary(data)) => {
                if let Err(err) = terminal.write_input(client, data).await {
                    reply_error(err);
                }
            }
            Ok(Message::Text(text)) => match serde_json::from_str::<ClientMessage>(text.as_str()) {
                Ok(ClientMessage::Ack { offset }) => {
                    acks.send_if_modified(|acked| {
                        let newer = offset > *acked;
                        if newer {
                            *acked = offset;
                        }
                        newer
                    });
                }
                Ok(ClientMessage::Resize { rows, cols }) => {
                    if let Err(err) = terminal.report_size(client, TtySize { rows, cols }).await {
                        reply_error(err);
                    }
                }
                Ok(ClientMessage::SetRole { client: target, role }) => {
                    if let Err(err) = terminal.set_role(client, target, role) {
                        reply_error(err);
                    }
                }
                Ok(ClientMessage::RequestControl) => {
                    if last_request.is_some_and(|at: tokio::time::Instant| at.elapsed() < REQUEST_INTERVAL) {
                        reply_error(TerminalError::Invalid("you asked a moment ago: wait for the owner".into()));
                    } else if let Err(err) = terminal.request_control(client) {
                        reply_error(err);
                    } else {
                        last_request = Some(tokio::time::Instant::now());
                    }
                }
                Err(err) => reply_error(TerminalError::Invalid(format!("unreadable control message: {err}"))),
            },
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

async fn send(sink: &mut Sink, message: Message) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn send_json(sink: &mut Sink, message: &ServerMessage) -> Result<(), ()> {
    let text = serde_json::to_string(message).map_err(|_| ())?;
    send(sink, Message::Text(text.into())).await
}

async fn close(sink: &mut Sink, reason: &'static str) {
    let _ = send_json(sink, &ServerMessage::Closed { reason }).await;
    let frame = CloseFrame { code: axum::extract::ws::close_code::POLICY, reason: reason.into() };
    let _ = send(sink, Message::Close(Some(frame))).await;
}

async fn write_loop(
    mut sink: Sink,
    terminal: Arc<Terminal>,
    client: u64,
    participant: Participant,
    resume: Option<u64>,
    mut acks: watch::Receiver<u64>,
    mut replies: mpsc::Receiver<ServerMessage>,
) -> Result<(), ()> {
    // Subscribe before reading any state so no change between the two is missed.
    let mut output = terminal.subscribe_output();
    let mut notices = terminal.subscribe_notices();
    let history_start = terminal.output_start();
    let mut offset = match resume {
        Some(offset) => offset,
        None => history_start,
    };
    let mut ack_floor = offset;
    let role = terminal.role_of_client(client).unwrap_or(Role::Viewer);
    let hello = ServerMessage::Hello {
        client,
        terminal: terminal.id.clone(),
        role,
        offset,
        size: terminal.size(),
        clients: terminal.clients(),
        input: terminal.input.is_some(),
    };
    send_json(&mut sink, &hello).await?;
    let link_id = participant.link.as_ref().map(|l| l.id.clone());
    let expiry = participant.link.as_ref().map(|l| {
        let left = (l.expires_at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::time::Instant::now() + left
    });
    let (mut ended, mut exit_code) = terminal.ended();
    loop {
        if ended {
            // The buffer is final: send the rest without waiting for acknowledgements.
            loop {
                match terminal.read(offset, MAX_FRAME) {
                    Read::Data(bytes) if !bytes.is_empty() => {
                        offset += bytes.len() as u64;
                        send(&mut sink, Message::Binary(bytes)).await?;
                    }
                    Read::Lagged { start } => {
                        send_json(&mut sink, &ServerMessage::Reset { offset: start, missed: start - offset }).await?;
                        offset = start;
                    }
                    _ => break,
                }
            }
            send_json(&mut sink, &ServerMessage::Exit { code: exit_code }).await?;
            let _ = send(&mut sink, Message::Close(None)).await;
            return Ok(());
        }

        let acked = (*acks.borrow()).max(ack_floor);
        let in_flight = offset.saturating_sub(acked);
        if in_flight < WINDOW {
            let room = (WINDOW - in_flight).min(MAX_FRAME as u64) as usize;
            match terminal.read(offset, room) {
                Read::Data(bytes) if !bytes.is_empty() => {
                    offset += bytes.len() as u64;
                    send(&mut sink, Message::Binary(bytes)).await?;
                    continue;
                }
                Read::Data(_) => {}
                Read::Lagged { start } => {
                    send_json(&mut sink, &ServerMessage::Reset { offset: start, missed: start - offset }).await?;
                    offset = start;
                    ack_floor = start;
                    continue;
                }
                Read::Ahead { end } => {
                    let message = format!("offset {offset} is beyond the output ({end} bytes so far)");
                    send_json(&mut sink, &ServerMessage::Error { code: "invalid", message }).await?;
                    let start = terminal.output_start();
                    send_json(&mut sink, &ServerMessage::Reset { offset: start, missed: 0 }).await?;
                    offset = start;
                    ack_floor = start;
                    continue;
                }
            }
        }

        tokio::select! {
            _ = output.changed() => {}
            changed = acks.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            notice = notices.recv() => match notice {
                Ok(Notice::Presence) => {
                    send_json(&mut sink, &ServerMessage::Presence { clients: terminal.clients() }).await?;
                }
                Ok(Notice::Size(size)) => {
                    send_json(&mut sink, &ServerMessage::Size { rows: size.rows, cols: size.cols }).await?;
                }
                Ok(Notice::Ended(code)) => {
                    ended = true;
                    exit_code = code;
                }
                Ok(Notice::ControlRequested { client, name }) => {
                    send_json(&mut sink, &ServerMessage::ControlRequest { client, name }).await?;
                }
                Ok(Notice::LinkRevoked(id)) => {
                    if link_id.as_deref() == Some(id.as_str()) {
                        close(&mut sink, "revoked").await;
                        return Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Missed notices are replaced by the current state.
                    send_json(&mut sink, &ServerMessage::Presence { clients: terminal.clients() }).await?;
                    if let Some(size) = terminal.size() {
                        send_json(&mut sink, &ServerMessage::Size { rows: size.rows, cols: size.cols }).await?;
                    }
                    (ended, exit_code) = terminal.ended();
                }
                Err(broadcast::error::RecvError::Closed) => {
                    (ended, exit_code) = (true, terminal.ended().1);
                }
            },
            reply = replies.recv() => match reply {
                Some(message) => send_json(&mut sink, &message).await?,
                None => return Ok(()),
            },
            _ = sleep_until(expiry) => {
                close(&mut sink, "expired").await;
                return Ok(());
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
