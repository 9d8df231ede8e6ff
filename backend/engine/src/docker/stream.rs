//! Byte streams between the engine and a Docker daemon: the hijacked (HTTP-upgraded)
//! connections behind attach and exec start, the decoding of Docker's stream framing (an 8-byte
//! header per frame without a TTY, raw bytes with one), and the timestamp Docker puts in front of
//! every log record.
//!
//! The engine opens these connections itself instead of going through bollard: bollard guesses
//! the framing from the first byte of each read (a byte above 2 means "raw"), so TTY output that
//! happens to start with 0x00, 0x01 or 0x02 would be read as a frame header. Here the framing is
//! chosen from what the engine knows (the container's or exec's `Tty`), and payloads are passed on
//! as they are, never decoded as text. The connections go over the daemon's unix socket (for
//! `ssh://`, the tunnel's), plain TCP, or TLS with the configuration every other request uses
//! ([`super::tls`]).

use std::path::PathBuf;

use bytes::{Buf, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::convert::status_error;
use super::tls::{self, TlsTarget};
use crate::api::{EngineError, OutputChunk, Result, StdStream};

/// Where the daemon listens, as hijacked connections reach it.
#[derive(Debug, Clone)]
pub(super) enum Endpoint {
    /// A local socket (for `ssh://`, the tunnel's end).
    Unix(PathBuf),
    /// `host:port`, plain HTTP.
    Tcp(String),
    Tls(TlsTarget),
}

/// The two directions of a hijacked connection.
pub(super) type Hijacked =
    (tokio::io::ReadHalf<TokioIo<hyper::upgrade::Upgraded>>, tokio::io::WriteHalf<TokioIo<hyper::upgrade::Upgraded>>);

/// Sends `POST path` (an origin-form path with the API version prefix and query) asking to
/// upgrade the connection, and returns the raw connection once the daemon answered 101. `shown`
/// names the daemon in messages.
pub(super) async fn hijack(
    endpoint: &Endpoint,
    shown: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Hijacked> {
    let body = match body {
        Some(value) => {
            Bytes::from(serde_json::to_vec(&value).map_err(|e| EngineError::internal("bad request body", e))?)
        }
        None => Bytes::new(),
    };
    let request = hyper::Request::post(path)
        .header(HOST, "docker")
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "tcp")
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| EngineError::internal("cannot build the request to the Docker daemon", e))?;
    let unreachable = |e: std::io::Error| match tls::failure(&e) {
        Some(why) => {
            EngineError::unavailable(format!("TLS with the Docker daemon at {shown} failed: {why}")).with_source(e)
        }
        None => EngineError::unavailable(format!("cannot reach the Docker daemon at {shown}")).with_source(e),
    };
    let upgraded = match endpoint {
        Endpoint::Unix(socket) => {
            upgrade(tokio::net::UnixStream::connect(socket).await.map_err(unreachable)?, request).await?
        }
        Endpoint::Tcp(addr) => {
            let tcp = tokio::net::TcpStream::connect(addr).await.map_err(unreachable)?;
            // Terminal keystrokes are small writes; do not hold them back.
            tcp.set_nodelay(true).map_err(unreachable)?;
            upgrade(tcp, request).await?
        }
        Endpoint::Tls(target) => upgrade(target.connect().await.map_err(unreachable)?, request).await?,
    };
    Ok(tokio::io::split(TokioIo::new(upgraded)))
}

async fn upgrade<S>(io: S, request: hyper::Request<Full<Bytes>>) -> Result<hyper::upgrade::Upgraded>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let lost = |e: hyper::Error| match tls::failure(&e) {
        Some(why) => EngineError::unavailable(format!("TLS with the Docker daemon failed: {why}")).with_source(e),
        None => EngineError::unavailable("the connection to the Docker daemon failed").with_source(e),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(lost)?;
    // Drives the connection until the upgrade hands it over; ends with the connection.
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!("docker hijacked connection: {e}");
        }
    });
    let response = sender.send_request(request).await.map_err(lost)?;
    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return hyper::upgrade::on(response).await.map_err(lost);
    }
    // An error: Docker's body is `{"message": "..."}`.
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    Err(status_error(status.as_u16(), message, "the Docker daemon refused the connection"))
}

/// Frames larger than this are refused: dockerd writes at most 32 KiB per frame, so a bigger
/// length means the stream is not what the engine thinks it is.
const MAX_FRAME: usize = 1 << 20;
const READ_SIZE: usize = 64 * 1024;

/// Docker's multiplexed stream, decoded incrementally: `[stream, 0, 0, 0, len: u32 BE]` + payload.
#[derive(Debug, Default)]
pub(super) struct FrameDecoder {
    buf: BytesMut,
}

/// One decoded frame.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame {
    Output(StdStream, Bytes),
    /// Stream 3: the daemon reports an error in-band (for example an exec that failed to start).
    DaemonError(Bytes),
}

impl FrameDecoder {
    pub(super) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if the buffer holds one.
    pub(super) fn next_frame(&mut self) -> std::result::Result<Option<Frame>, String> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let kind = self.buf[0];
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if kind > 3 || self.buf[1..4] != [0, 0, 0] || len > MAX_FRAME {
            return Err(format!("unexpected stream header {:02x?}", &self.buf[..8]));
        }
        if self.buf.len() < 8 + len {
            return Ok(None);
        }
        self.buf.advance(8);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(match kind {
            // Stdin echoed back only happens with a TTY, which is never multiplexed.
            0 | 1 => Frame::Output(StdStream::Stdout, payload),
            2 => Frame::Output(StdStream::Stderr, payload),
            _ => Frame::DaemonError(payload),
        }))
    }

    /// Bytes left over that do not make a whole frame.
    pub(super) fn remainder(&self) -> usize {
        self.buf.len()
    }
}

/// The output side of an attach or exec connection as engine output chunks.
pub(super) fn output_stream<R>(reader: R, tty: bool) -> BoxStream<'static, Result<OutputChunk>>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    if tty {
        return futures::stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            let mut buf = BytesMut::with_capacity(READ_SIZE);
            match reader.read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(_) => Some((Ok(OutputChunk { stream: StdStream::Stdout, data: buf.freeze() }), Some(reader))),
                // A reset connection ends the output like an orderly close would.
                Err(e) if is_disconnect(&e) => None,
                Err(e) => Some((Err(EngineError::unavailable("the terminal stream broke").with_source(e)), None)),
            }
        })
        .boxed();
    }
    futures::stream::unfold(Some((reader, FrameDecoder::default())), |state| async move {
        let (mut reader, mut decoder) = state?;
        loop {
            match decoder.next_frame() {
                Ok(Some(Frame::Output(stream, data))) => {
                    if data.is_empty() {
                        continue;
                    }
                    return Some((Ok(OutputChunk { stream, data }), Some((reader, decoder))));
                }
                Ok(Some(Frame::DaemonError(message))) => {
                    tracing::warn!("docker stream error: {}", String::from_utf8_lossy(&message).trim());
                    let err = EngineError::internal(
                        "the Docker daemon reported an error on the process's stream",
                        std::io::Error::other(String::from_utf8_lossy(&message).trim().to_string()),
                    );
                    return Some((Err(err), None));
                }
                Ok(None) => {}
                Err(what) => {
                    let err =
                        EngineError::internal("malformed stream from the Docker daemon", std::io::Error::other(what));
                    return Some((Err(err), None));
                }
            }
            let mut buf = [0u8; READ_SIZE];
            match reader.read(&mut buf).await {
                Ok(0) => {
                    if decoder.remainder() > 0 {
                        tracing::debug!("docker stream ended inside a frame ({} bytes)", decoder.remainder());
                    }
                    return None;
                }
                Ok(n) => decoder.push(&buf[..n]),
                Err(e) if is_disconnect(&e) => return None,
                Err(e) => {
                    return Some((Err(EngineError::unavailable("the process's stream broke").with_source(e)), None))
                }
            }
        }
    })
    .boxed()
}

fn is_disconnect(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::UnexpectedEof
    )
}

/// Docker's log timestamp: RFC 3339 with exactly nine fractional digits, then one space.
const TIMESTAMP_SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.dddddddddZ ";

fn timestamp_at(data: &[u8]) -> Option<DateTime<Utc>> {
    let head = data.get(..TIMESTAMP_SHAPE.len())?;
    let shaped = head.iter().zip(TIMESTAMP_SHAPE).all(|(b, s)| if *s == b'd' { b.is_ascii_digit() } else { b == s });
    if !shaped {
        return None;
    }
    let text = std::str::from_utf8(&head[..head.len() - 1]).ok()?;
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

/// Splits one record of a multiplexed (non-TTY) log stream, where every frame is one record,
/// into its time and data.
pub(super) fn split_leading_timestamp(frame: &Bytes) -> (Option<DateTime<Utc>>, Bytes) {
    match timestamp_at(frame) {
        Some(time) => (Some(time), frame.slice(TIMESTAMP_SHAPE.len()..)),
        None => (None, frame.clone()),
    }
}

/// Splits a piece of a timestamped raw (TTY) log stream into records: `TS data` where `data` runs to the
/// next timestamp. Non-TTY logs come one record per frame, so this finds one; TTY logs are raw,
/// and a record without a trailing newline (a prompt, a line longer than Docker's 16 KiB) runs
/// straight into the next record's timestamp, which is where it is cut. Bytes before the first
/// timestamp (none, from a well-behaved daemon) are returned with `None`.
pub(super) fn split_log_records(data: &Bytes) -> Vec<(Option<DateTime<Utc>>, Bytes)> {
    let mut starts: Vec<(usize, DateTime<Utc>)> = Vec::new();
    let mut i = 0;
    while i < data.len() {
        // A record starts at the beginning or right after the previous record's data; only a
        // newline-free tail can hide a second timestamp, so only digits are worth checking.
        if data[i].is_ascii_digit() {
            if let Some(time) = timestamp_at(&data[i..]) {
                starts.push((i, time));
                i += TIMESTAMP_SHAPE.len();
                continue;
            }
        }
        i += 1;
    }
    let mut records = Vec::with_capacity(starts.len() + 1);
    match starts.first() {
        None => return vec![(None, data.clone())],
        Some((first, _)) if *first > 0 => records.push((None, data.slice(..*first))),
        Some(_) => {}
    }
    for (n, (start, time)) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(data.len(), |(next, _)| *next);
        records.push((Some(*time), data.slice(start + TIMESTAMP_SHAPE.len()..end)));
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, len: u32) -> Vec<u8> {
        let mut h = vec![kind, 0, 0, 0];
        h.extend_from_slice(&len.to_be_bytes());
        h
    }

    #[test]
    fn frames_decode_across_arbitrary_read_boundaries() {
        let mut wire = header(1, 3);
        wire.extend_from_slice(b"\x01\x02o");
        wire.extend(header(2, 4));
        wire.extend_from_slice(b"err\n");
        let mut decoder = FrameDecoder::default();
        let mut frames = Vec::new();
        for byte in &wire {
            decoder.push(std::slice::from_ref(byte));
            while let Some(frame) = decoder.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(
            frames,
            vec![
                Frame::Output(StdStream::Stdout, Bytes::from_static(b"\x01\x02o")),
                Frame::Output(StdStream::Stderr, Bytes::from_static(b"err\n")),
            ]
        );
        assert_eq!(decoder.remainder(), 0);
    }

    #[test]
    fn a_bad_header_is_an_error_not_a_huge_allocation() {
        let mut decoder = FrameDecoder::default();
        decoder.push(b"hello wo");
        assert!(decoder.next_frame().is_err());
        let mut decoder = FrameDecoder::default();
        decoder.push(&header(1, u32::MAX));
        assert!(decoder.next_frame().is_err());
        let mut decoder = FrameDecoder::default();
        decoder.push(&header(3, 4));
        decoder.push(b"oops");
        assert_eq!(decoder.next_frame().unwrap(), Some(Frame::DaemonError(Bytes::from_static(b"oops"))));
    }

    #[tokio::test]
    async fn tty_output_starting_with_low_bytes_is_passed_through() {
        let (mut writer, reader) = tokio::io::duplex(64);
        let stream = output_stream(reader, true);
        tokio::io::AsyncWriteExt::write_all(&mut writer, b"\x01\x00\x00\x00\x00\x00\x00\x09\xffraw").await.unwrap();
        drop(writer);
        let chunks: Vec<_> = stream.collect().await;
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap().data.to_vec()).collect();
        assert_eq!(bytes, b"\x01\x00\x00\x00\x00\x00\x00\x09\xffraw");
    }

    #[tokio::test]
    async fn multiplexed_output_keeps_streams_apart() {
        let (mut writer, reader) = tokio::io::duplex(64);
        let stream = output_stream(reader, false);
        let mut wire = header(1, 2);
        wire.extend_from_slice(b"o\n");
        wire.extend(header(2, 2));
        wire.extend_from_slice(b"e\n");
        tokio::io::AsyncWriteExt::write_all(&mut writer, &wire).await.unwrap();
        drop(writer);
        let chunks: Vec<_> = stream.map(|c| c.unwrap()).collect().await;
        assert_eq!(chunks.len(), 2);
        assert_eq!((chunks[0].stream, &chunks[0].data[..]), (StdStream::Stdout, &b"o\n"[..]));
        assert_eq!((chunks[1].stream, &chunks[1].data[..]), (StdStream::Stderr, &b"e\n"[..]));
    }

    #[test]
    fn log_records_split_at_timestamps() {
        let one = Bytes::from_static(b"2026-11-23T06:52:17.821873036Z line1\n");
        let records = split_log_records(&one);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].0.unwrap().timestamp_subsec_nanos(), 821_873_036);
        assert_eq!(&records[0].1[..], b"line1\n");

        // A TTY prompt without a newline runs into the next record.
        let joined = Bytes::from_static(b"2026-11-23T06:52:17.000000001Z / # 2026-11-23T06:52:18.000000002Z echo\r\n");
        let records = split_log_records(&joined);
        let data: Vec<&[u8]> = records.iter().map(|(_, d)| &d[..]).collect();
        assert_eq!(data, vec![&b"/ # "[..], &b"echo\r\n"[..]]);
        assert!(records[0].0.unwrap() < records[1].0.unwrap());

        // Dates that are not in Docker's exact shape are data.
        let plain = Bytes::from_static(b"2026-11-23T06:52:17.821873036Z at 2026-11-23T06:52:17Z ok\n");
        assert_eq!(split_log_records(&plain).len(), 1);

        // In a multiplexed frame only the leading timestamp counts.
        let frame = Bytes::from_static(b"2026-11-23T06:52:17.000000001Z 2026-11-23T06:52:18.000000002Z x\n");
        let (time, data) = split_leading_timestamp(&frame);
        assert!(time.is_some());
        assert_eq!(&data[..], b"2026-11-23T06:52:18.000000002Z x\n");
    }
}
