//! The engine's side of the shim protocol: async requests over a shim's unix socket, and
//! turning attach/exec connections into the interface's `ProcessIo`.

use std::path::Path;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::api::{EngineError, OutputChunk, ProcessIo, Result};

use super::protocol::{self, FrameDecoder, FrameKind, Request, Response};

/// A connection to a shim after its request was answered.
pub struct ShimConnection {
    frames: FrameReader,
    writer: OwnedWriteHalf,
}

/// Connects and sends `request`; returns the shim's answer and the open connection.
/// A shim that is not there is `Unavailable` (the caller decides what that means).
pub async fn open(socket: &Path, request: &Request) -> Result<(serde_json::Value, ShimConnection)> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| EngineError::unavailable("the container's shim is not running").with_source(e))?;
    let (reader, mut writer) = stream.into_split();
    writer
        .write_all(&protocol::encode_json(FrameKind::Request, request))
        .await
        .map_err(|e| EngineError::unavailable("the container's shim went away").with_source(e))?;
    let mut conn = ShimConnection {
        frames: FrameReader { reader, decoder: FrameDecoder::default(), buf: vec![0u8; 256 << 10] },
        writer,
    };
    match conn.frames.next_frame().await? {
        Some((FrameKind::Response, payload)) => {
            let response: Response =
                serde_json::from_slice(&payload).map_err(|e| EngineError::internal("bad answer from the shim", e))?;
            Ok((response.into_result()?, conn))
        }
        _ => Err(EngineError::unavailable("the container's shim closed the connection")),
    }
}

/// A one-shot request.
pub async fn call(socket: &Path, request: &Request) -> Result<serde_json::Value> {
    open(socket, request).await.map(|(value, _)| value)
}

impl ShimConnection {
    /// The next frame, or `None` when the shim closed the connection.
    pub async fn next_frame(&mut self) -> Result<Option<(FrameKind, Vec<u8>)>> {
        self.frames.next_frame().await
    }

    /// Output frames as chunks; the stream ends at the process's exit (or the shim's).
    pub fn into_process_io(self, with_input: bool) -> ProcessIo {
        let ShimConnection { frames, writer } = self;
        let output = stream::unfold(Some(frames), |state| async move {
            let mut frames = state?;
            loop {
                match frames.next_frame().await {
                    Ok(Some((FrameKind::Output, payload))) => match protocol::decode_output(&payload) {
                        Ok((stream, _offset, data)) => {
                            let chunk = OutputChunk { stream, data: Bytes::copy_from_slice(data) };
                            return Some((Ok(chunk), Some(frames)));
                        }
                        Err(e) => return Some((Err(EngineError::internal("bad output frame", e)), None)),
                    },
                    Ok(Some((FrameKind::Exit, _))) | Ok(None) => return None,
                    Ok(Some(_)) => continue,
                    Err(e) => return Some((Err(e), None)),
                }
            }
        })
        .boxed();
        let input: Option<Pin<Box<dyn AsyncWrite + Send>>> =
            if with_input { Some(Box::pin(FramedInput { writer, pending: Vec::new(), written: 0 })) } else { None };
        ProcessIo { output, input }
    }
}

/// The reading half of a shim connection.
pub struct FrameReader {
    reader: OwnedReadHalf,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl FrameReader {
    pub async fn next_frame(&mut self) -> Result<Option<(FrameKind, Vec<u8>)>> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(e) => return Err(EngineError::internal("bad frame from the shim", e)),
            }
            let n = self
                .reader
                .read(&mut self.buf)
                .await
                .map_err(|e| EngineError::unavailable("lost the connection to the shim").with_source(e))?;
            if n == 0 {
                return Ok(None);
            }
            self.decoder.push(&self.buf[..n]);
        }
    }
}

/// Frames every write as an `Input` frame. A write is accepted only once the previous frame
/// was written completely, so frames never interleave.
struct FramedInput {
    writer: OwnedWriteHalf,
    pending: Vec<u8>,
    written: usize,
}

impl FramedInput {
    fn poll_pending(&mut self, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.pending.len() {
            let n = match Pin::new(&mut self.writer).poll_write(cx, &self.pending[self.written..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for FramedInput {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.poll_pending(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let take = buf.len().min(protocol::MAX_FRAME);
        self.pending = protocol::encode(FrameKind::Input, &buf[..take]);
        // Start sending now; whatever is left goes out on the next write or flush.
        let _ = self.poll_pending(cx);
        Poll::Ready(Ok(take))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.writer).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.poll_pending(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        if self.pending.is_empty() {
            self.pending = protocol::encode(FrameKind::CloseInput, &[]);
            self.written = 0;
        }
        match self.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.writer).poll_shutdown(cx),
            other => other,
        }
    }
}
