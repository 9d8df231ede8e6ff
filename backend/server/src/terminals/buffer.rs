//! The rolling output buffer of one terminal (after sshx): the last `capacity` bytes of the
//! terminal's output, addressed by absolute stream offsets. Every viewer reads from its own
//! offset, so a slow viewer costs nothing but its position; one that falls behind the start of
//! the buffer is told how much it missed and carries on from the oldest byte still kept.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Bytes of a terminal's output, kept as the chunks they arrived in (shared, never copied on
/// append), with the offset of the first byte kept.
#[derive(Debug)]
pub struct OutputBuffer {
    chunks: VecDeque<Bytes>,
    /// Stream offset of the first byte of `chunks[0]`.
    start: u64,
    /// Stream offset one past the last byte.
    end: u64,
    capacity: usize,
}

/// What a viewer gets when it asks for bytes from an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Bytes starting exactly at the requested offset (empty when the viewer is up to date).
    Data(Bytes),
    /// The requested offset is older than anything kept; reading resumes at `start`.
    Lagged { start: u64 },
    /// The offset is beyond the end of the stream: the client claims bytes never sent.
    Ahead { end: u64 },
}

impl OutputBuffer {
    pub fn new(capacity: usize) -> Self {
        OutputBuffer { chunks: VecDeque::new(), start: 0, end: 0, capacity: capacity.max(1) }
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    pub fn append(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.end += data.len() as u64;
        self.chunks.push_back(data);
        let mut excess = (self.end - self.start).saturating_sub(self.capacity as u64);
        while excess > 0 {
            let Some(front) = self.chunks.front_mut() else { break };
            if front.len() as u64 <= excess {
                excess -= front.len() as u64;
                self.start += front.len() as u64;
                self.chunks.pop_front();
            } else {
                // Keep the tail of a chunk that straddles the limit so the buffer holds exactly
                // `capacity` bytes.
                let cut = excess as usize;
                *front = front.slice(cut..);
                self.start += cut as u64;
                excess = 0;
            }
        }
    }

    /// Up to `max` bytes from `offset`. A single chunk is returned without copying; several are
    /// joined into one frame so viewers get few, large messages.
    pub fn read(&self, offset: u64, max: usize) -> Read {
        if offset < self.start {
            return Read::Lagged { start: self.start };
        }
        if offset > self.end {
            return Read::Ahead { end: self.end };
        }
        if offset == self.end || max == 0 {
            return Read::Data(Bytes::new());
        }
        // Find the chunk holding `offset`, scanning from whichever end is nearer: viewers are
        // usually close to the end.
        let mut chunk_start = self.end;
        let mut index = self.chunks.len();
        while chunk_start > offset {
            index -= 1;
            chunk_start -= self.chunks[index].len() as u64;
        }
        let first = self.chunks[index].slice((offset - chunk_start) as usize..);
        if first.len() >= max {
            return Read::Data(first.slice(..max));
        }
        if index + 1 == self.chunks.len() {
            return Read::Data(first);
        }
        let total = ((self.end - offset) as usize).min(max);
        let mut joined = BytesMut::with_capacity(total);
        joined.extend_from_slice(&first);
        for chunk in self.chunks.iter().skip(index + 1) {
            let room = total - joined.len();
            if room == 0 {
                break;
            }
            joined.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        Read::Data(joined.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(read: Read) -> Vec<u8> {
        match read {
            Read::Data(b) => b.to_vec(),
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn reads_from_any_offset_across_chunks() {
        let mut buffer = OutputBuffer::new(1024);
        buffer.append(Bytes::from_static(b"hello "));
        buffer.append(Bytes::from_static(b"shared "));
        buffer.append(Bytes::from_static(b"world"));
        assert_eq!(data(buffer.read(0, 100)), b"hello shared world");
        assert_eq!(data(buffer.read(3, 100)), b"lo shared world");
        assert_eq!(data(buffer.read(6, 7)), b"shared ");
        assert_eq!(data(buffer.read(8, 8)), b"ared wor");
        assert_eq!(data(buffer.read(18, 100)), b"");
        assert_eq!(buffer.read(19, 100), Read::Ahead { end: 18 });
    }

    #[test]
    fn keeps_exactly_the_last_capacity_bytes() {
        let mut buffer = OutputBuffer::new(10);
        buffer.append(Bytes::from_static(b"0123456"));
        buffer.append(Bytes::from_static(b"789abcd"));
        assert_eq!((buffer.start(), buffer.end()), (4, 14));
        assert_eq!(buffer.read(0, 100), Read::Lagged { start: 4 });
        assert_eq!(data(buffer.read(4, 100)), b"456789abcd");
        buffer.append(Bytes::from_static(b"0123456789xyz"));
        assert_eq!((buffer.start(), buffer.end()), (17, 27));
        assert_eq!(data(buffer.read(17, 100)), b"3456789xyz");
    }

    #[test]
    fn a_utf8_character_split_across_chunks_is_joined_intact() {
        let mut buffer = OutputBuffer::new(64);
        let euro = "€".as_bytes();
        buffer.append(Bytes::copy_from_slice(&euro[..1]));
        buffer.append(Bytes::copy_from_slice(&euro[1..]));
        assert_eq!(std::str::from_utf8(&data(buffer.read(0, 64))).unwrap(), "€");
    }
}
