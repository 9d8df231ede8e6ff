//! The wire protocol between the engine (in the server) and a container's shim, over the
//! shim's unix socket. Every message is a frame: kind (1 byte), payload length (u32, big
//! endian), payload. A connection opens with one `Request`; the shim answers with one
//! `Response`; `attach`/`exec` connections then carry `Output`/`Input` frames and end with
//! `Exit`, and `monitor` connections carry `Event` frames.

use serde::{Deserialize, Serialize};

use crate::api::{EngineError, ErrorKind, StdStream};

use super::spec::ProcessSpec;

/// Larger frames are a protocol error: output is sent in chunks well below this.
pub const MAX_FRAME: usize = 1 << 20;
pub const HEADER_LEN: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Request = 1,
    Response = 2,
    /// stream (1 byte) + offset of the first byte in the terminal's output (u64 BE) + bytes.
    Output = 3,
    Input = 4,
    Exit = 5,
    Event = 6,
    CloseInput = 7,
}

impl FrameKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::Output,
            4 => FrameKind::Input,
            5 => FrameKind::Exit,
            6 => FrameKind::Event,
            7 => FrameKind::CloseInput,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    #[error("malformed {0} frame")]
    Malformed(&'static str),
}

pub fn encode(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_into(&mut out, kind, payload);
    out
}

pub fn encode_into(out: &mut Vec<u8>, kind: FrameKind, payload: &[u8]) {
    out.push(kind as u8);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

pub fn encode_json<T: Serialize>(kind: FrameKind, value: &T) -> Vec<u8> {
    // Serialising our own plain structs cannot fail.
    encode(kind, &serde_json::to_vec(value).unwrap_or_default())
}

/// An `Output` frame's payload.
pub fn encode_output_into(out: &mut Vec<u8>, stream: StdStream, offset: u64, data: &[u8]) {
    out.push(FrameKind::Output as u8);
    out.extend_from_slice(&((9 + data.len()) as u32).to_be_bytes());
    out.push(stream_byte(stream));
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(data);
}

pub fn decode_output(payload: &[u8]) -> Result<(StdStream, u64, &[u8]), ProtocolError> {
    if payload.len() < 9 {
        return Err(ProtocolError::Malformed("output"));
    }
    let stream = match payload[0] {
        1 => StdStream::Stdout,
        2 => StdStream::Stderr,
        _ => return Err(ProtocolError::Malformed("output")),
    };
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&payload[1..9]);
    Ok((stream, u64::from_be_bytes(offset), &payload[9..]))
}

fn stream_byte(stream: StdStream) -> u8 {
    match stream {
        StdStream::Stdout => 1,
        StdStream::Stderr => 2,
    }
}

/// Splits a byte stream into frames. Consumed bytes are skipped by position and compacted
/// only now and then, so many small frames in one read cost no repeated copying.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
}

impl FrameDecoder {
    pub fn push(&mut self, data: &[u8]) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > (1 << 20) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<(FrameKind, Vec<u8>)>, ProtocolError> {
        let pending = &self.buf[self.pos..];
        if pending.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = FrameKind::from_byte(pending[0]).ok_or(ProtocolError::UnknownKind(pending[0]))?;
        let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
        if len > MAX_FRAME + 16 {
            return Err(ProtocolError::TooLarge(len));
        }
        if pending.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = pending[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.pos += HEADER_LEN + len;
        Ok(Some((kind, payload)))
    }

    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Which process of the container a request is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Main,
    Exec(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Stream a process's output; with `history`, first what the shim still holds (from
    /// `from_offset` when given).
    Attach {
        target: Target,
        history: bool,
        from_offset: Option<u64>,
    },
    Resize {
        target: Target,
        rows: u16,
        cols: u16,
    },
    Kill {
        signal: i32,
    },
    /// SIGTERM (or the given signal), then SIGKILL after `grace_ms`; disables restarting.
    Stop {
        signal: i32,
        grace_ms: u64,
    },
    /// Start an extra process; the connection then streams it like `Attach`.
    Exec {
        id: String,
        process: ProcessSpec,
        rows: u16,
        cols: u16,
    },
    Monitor,
}

/// A shim's answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub error: Option<WireError>,
    #[serde(default)]
    pub result: serde_json::Value,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Self {
        Response { error: None, result }
    }

    pub fn err(error: &EngineError) -> Self {
        Response {
            error: Some(WireError { kind: error.kind(), message: error.message().to_string() }),
            result: serde_json::Value::Null,
        }
    }

    pub fn into_result(self) -> Result<serde_json::Value, EngineError> {
        match self.error {
            Some(e) => Err(EngineError::new(e.kind, e.message)),
            None => Ok(self.result),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

/// What `Status` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimStatus {
    pub shim_pid: u32,
    pub state: super::layout::RunState,
    pub execs: Vec<ExecStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecStatus {
    pub id: String,
    pub pid: u32,
    pub terminal: bool,
    pub exit_code: Option<i64>,
}

/// Sent on `Exit` frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitReport {
    pub exit_code: i64,
}

/// Sent on `monitor` connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ShimEvent {
    Started {
        pid: u32,
    },
    Exited {
        exit_code: i64,
        oom_killed: bool,
    },
    Oom,
    Restarting {
        restart_count: u32,
    },
    ExecExited {
        id: String,
        exit_code: i64,
    },
    /// The container was removed (auto-remove) and the shim is going away.
    Removed,
}

/// The single line a starting shim prints on its stdout for the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StartReport {
    Started { pid: u32, shim_pid: u32 },
    Failed { error: WireError },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_arbitrary_splitting() {
        let mut wire = encode_json(FrameKind::Request, &Request::Status);
        encode_output_into(&mut wire, StdStream::Stderr, 42, b"\xe2\x82");
        wire.extend(encode(FrameKind::Input, b"ls\n"));
        for split in 0..wire.len() {
            let mut decoder = FrameDecoder::default();
            decoder.push(&wire[..split]);
            let mut frames = Vec::new();
            while let Some(f) = decoder.next_frame().unwrap() {
                frames.push(f);
            }
            decoder.push(&wire[split..]);
            while let Some(f) = decoder.next_frame().unwrap() {
                frames.push(f);
            }
            assert_eq!(frames.len(), 3, "split at {split}");
            assert_eq!(serde_json::from_slice::<Request>(&frames[0].1).unwrap(), Request::Status);
            assert_eq!(decode_output(&frames[1].1).unwrap(), (StdStream::Stderr, 42, &b"\xe2\x82"[..]));
            assert_eq!(frames[2], (FrameKind::Input, b"ls\n".to_vec()));
        }
    }

    #[test]
    fn hostile_frames_are_rejected() {
        let mut decoder = FrameDecoder::default();
        decoder.push(&[9, 0, 0, 0, 0]);
        assert_eq!(decoder.next_frame(), Err(ProtocolError::UnknownKind(9)));
        let mut decoder = FrameDecoder::default();
        decoder.push(&[4, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(decoder.next_frame(), Err(ProtocolError::TooLarge(_))));
        assert_eq!(decode_output(&[1, 0]), Err(ProtocolError::Malformed("output")));
    }
}
