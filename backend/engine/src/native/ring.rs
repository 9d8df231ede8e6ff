//! A rolling output buffer: the most recent bytes of a process's output, addressed by absolute
//! offset, so a client that (re)connects gets the recent history, or exactly what it missed.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::api::StdStream;

#[derive(Debug)]
pub struct Ring {
    chunks: VecDeque<(StdStream, u64, Bytes)>,
    held: usize,
    capacity: usize,
    end: u64,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Ring { chunks: VecDeque::new(), held: 0, capacity, end: 0 }
    }

    /// Appends output; returns the offset of its first byte. The oldest chunks are dropped to
    /// stay within capacity (a single chunk larger than capacity keeps only its tail).
    pub fn push(&mut self, stream: StdStream, data: &[u8]) -> u64 {
        let offset = self.end;
        self.end += data.len() as u64;
        let (start, kept) = if data.len() > self.capacity {
            let cut = data.len() - self.capacity;
            (offset + cut as u64, &data[cut..])
        } else {
            (offset, data)
        };
        self.held += kept.len();
        self.chunks.push_back((stream, start, Bytes::copy_from_slice(kept)));
        while self.held > self.capacity {
            match self.chunks.pop_front() {
                Some((_, _, chunk)) => self.held -= chunk.len(),
                None => break,
            }
        }
        offset
    }

    /// Offset just past the newest byte.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Offset of the oldest byte still held.
    pub fn start(&self) -> u64 {
        self.chunks.front().map(|(_, offset, _)| *offset).unwrap_or(self.end)
    }

    /// Everything held from `from` on (from the oldest held byte if `from` is older or `None`),
    /// as (stream, offset, bytes) chunks.
    pub fn since(&self, from: Option<u64>) -> Vec<(StdStream, u64, Bytes)> {
        let from = from.unwrap_or(0).max(self.start());
        self.chunks
            .iter()
            .filter(|(_, offset, chunk)| offset + chunk.len() as u64 > from)
            .map(|(stream, offset, chunk)| {
                if *offset >= from {
                    (*stream, *offset, chunk.clone())
                } else {
                    let skip = (from - offset) as usize;
                    (*stream, from, chunk.slice(skip..))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concat(chunks: &[(StdStream, u64, Bytes)]) -> Vec<u8> {
        chunks.iter().flat_map(|(_, _, b)| b.to_vec()).collect()
    }

    #[test]
    fn keeps_the_most_recent_bytes_with_absolute_offsets() {
        let mut ring = Ring::new(10);
        assert_eq!(ring.push(StdStream::Stdout, b"hello "), 0);
        assert_eq!(ring.push(StdStream::Stdout, b"world"), 6);
        assert_eq!(ring.end(), 11);
        // "hello " was dropped whole to stay within 10 bytes.
        assert_eq!(ring.start(), 6);
        assert_eq!(concat(&ring.since(None)), b"world");
    }

    #[test]
    fn resumes_from_an_offset_inside_a_chunk_without_gaps_or_duplicates() {
        let mut ring = Ring::new(100);
        ring.push(StdStream::Stdout, b"abc");
        ring.push(StdStream::Stderr, b"defgh");
        let rest = ring.since(Some(4));
        assert_eq!(rest[0], (StdStream::Stderr, 4, Bytes::from_static(b"efgh")));
        assert_eq!(concat(&ring.since(Some(8))), b"");
        assert_eq!(concat(&ring.since(Some(0))), b"abcdefgh");
    }

    #[test]
    fn an_oversized_chunk_keeps_its_tail() {
        let mut ring = Ring::new(4);
        ring.push(StdStream::Stdout, b"0123456789");
        assert_eq!(ring.start(), 6);
        assert_eq!(concat(&ring.since(None)), b"6789");
    }
}
