//! The on-disk log store for container output: the shim's [`LogWriter`] (record framing and
//! rotation) and the server's readers ([`read_logs`] for tail/since/until, [`LogCursor`] to follow).
//!
//! Output is kept as bytes, never decoded: chunks may end anywhere, even inside a UTF-8 character,
//! and concatenating the data of the records returned gives back exactly what the container wrote.
//!
//! # Files
//!
//! A container's log directory holds `container.log` (the file being written) and up to
//! `max_files - 1` rotated files, `container.log.1` (newest) to `container.log.N` (oldest).
//! A new file is first written as `container.log.new` and renamed into place, so a reader never
//! sees a current file without its header.
//!
//! # Format (version 1, integers little-endian)
//!
//! Each file starts with a 16-byte file header:
//!
//! | offset | size | field                                                       |
//! |--------|------|-------------------------------------------------------------|
//! | 0      | 7    | magic `PTHLOGF`                                             |
//! | 7      | 1    | format version, 1                                           |
//! | 8      | 8    | generation (u64): 1 for the first file, +1 at each rotation |
//!
//! then records, back to back:
//!
//! | offset | size | field                                                          |
//! |--------|------|----------------------------------------------------------------|
//! | 0      | 1    | record magic `0xB7`                                            |
//! | 1      | 1    | record version, 1                                              |
//! | 2      | 1    | flags: bit 0 = stderr, bit 1 = partial (no final `\n`); rest 0 |
//! | 3      | 1    | reserved, 0                                                    |
//! | 4      | 4    | data length `L` (u32, at most [`MAX_RECORD_DATA`])             |
//! | 8      | 8    | time (i64): nanoseconds since the Unix epoch, UTC              |
//! | 16     | L    | data                                                           |
//! | 16+L   | 4    | CRC-32 (IEEE) of bytes `0 .. 16+L`                             |
//! | 20+L   | 4    | `L` again                                                      |
//!
//! The trailing length lets a reader step backwards from the end of a file, so `tail` touches
//! only the end of a log however large it is. A record that fails its checks is skipped: the
//! reader searches byte by byte for the next (or, going backwards, previous) valid record. An
//! incomplete record at the end of the file being written is one still being written and is left
//! for later; the writer removes a torn record left by a failed write or a crash.
//!
//! The generation orders the files and tells a follower which file comes after the one it is
//! reading, without racing the renames of a rotation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::api::{LogOptions, LogRecord, StdStream};

/// The file being written; rotated files are this name plus `.1`, `.2`, …
pub const LOG_FILE_NAME: &str = "container.log";
/// The most data one record holds: longer runs without a newline are split.
pub const MAX_RECORD_DATA: usize = 16 * 1024;
/// How much log (data plus framing) one [`LogCursor::read_new`] call reads at most, bounding
/// its memory.
pub const FOLLOW_BATCH_BYTES: usize = 4 * 1024 * 1024;

const FILE_MAGIC: [u8; 7] = *b"PTHLOGF";
const FILE_VERSION: u8 = 1;
const FILE_HEADER_LEN: u64 = 16;

const REC_MAGIC: u8 = 0xB7;
const REC_VERSION: u8 = 1;
const REC_HEADER_LEN: usize = 16;
const REC_OVERHEAD: usize = REC_HEADER_LEN + 8;
const REC_MAX_TOTAL: usize = MAX_RECORD_DATA + REC_OVERHEAD;
const FLAG_STDERR: u8 = 1;
const FLAG_PARTIAL: u8 = 2;

const READ_CHUNK: usize = 64 * 1024;
const TMP_SUFFIX: &str = ".new";
/// Stops the probe for rotated files on a directory that is not what it should be.
const MAX_PROBED_FILES: usize = 10_000;

/// How much log one container may keep on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Size at which the current file is rotated, file header and record framing included.
    /// A record too large for an empty file is still written, alone in its file.
    pub max_file_bytes: u64,
    /// Files kept, the current one included (Docker's `max-file`); 0 counts as 1.
    pub max_files: usize,
}

impl Default for LogLimits {
    /// 10 MiB × 5 files: at most about 50 MiB of log per container.
    fn default() -> Self {
        LogLimits { max_file_bytes: 10 * 1024 * 1024, max_files: 5 }
    }
}

/// Appends a container's output to its log directory, rotating files by [`LogLimits`].
///
/// Made for the shim's single thread: each [`write`](LogWriter::write) goes to the file as one
/// unbuffered append of whole records, so readers in other processes see it at once and never a
/// torn record except at the very end of the file. Nothing is fsynced; see [`sync`](Self::sync).
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    limits: LogLimits,
    file: File,
    /// Length of `file`: the writer is its only writer, so it is tracked rather than asked.
    size: u64,
    generation: u64,
    /// Encoded records of the current `write`, reused between calls.
    buf: Vec<u8>,
}

impl LogWriter {
    /// Opens `dir` (created if missing) for writing, appending to the current file if there is
    /// one. Rotated files beyond `limits.max_files` (left by a larger earlier limit) are removed.
    pub fn open(dir: &Path, limits: LogLimits) -> io::Result<LogWriter> {
        fs::create_dir_all(dir)?;
        let max_files = limits.max_files.max(1);
        let mut newest_rotated = 0;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let Some(index) = entry.file_name().to_str().and_then(rotated_index) else {
                continue;
            };
            if index >= max_files {
                remove_if_exists(&entry.path())?;
            } else if let Probe::Log(log) = open_log(&entry.path())? {
                newest_rotated = newest_rotated.max(log.generation);
            }
        }

        let path = dir.join(LOG_FILE_NAME);
        let existing = match OpenOptions::new().read(true).append(true).open(&path) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut writer = LogWriter {
            dir: dir.to_path_buf(),
            limits,
            file: match existing {
                Some(file) => file,
                None => create_log(dir, newest_rotated + 1)?,
            },
            size: FILE_HEADER_LEN,
            generation: newest_rotated + 1,
            buf: Vec::new(),
        };
        let len = writer.file.metadata()?.len();
        match read_file_header(&writer.file)? {
            Some(generation) => {
                writer.generation = generation;
                writer.size = trim_torn_tail(&writer.file, len)?;
            }
            None if len == 0 => {
                fs::remove_file(&path)?;
                writer.file = create_log(dir, writer.generation)?;
            }
            None => {
                // Readers cannot place a file without a valid header among the others;
                // rotating it out keeps its bytes instead of appending to (or erasing) it.
                writer.size = len;
                writer.generation = newest_rotated;
                writer.rotate()?;
            }
        }
        Ok(writer)
    }

    /// Appends `data`, split into records at each `\n` (kept in the record) and every
    /// [`MAX_RECORD_DATA`] bytes. A trailing piece without `\n` is written at once as a partial
    /// record rather than held back for the rest of its line.
    ///
    /// Not to be retried on error: what was written stays (never a torn record). A failed
    /// rotation is reported only after the data went to the current file, which then grows past
    /// its limit until a later rotation succeeds.
    pub fn write(&mut self, time: DateTime<Utc>, stream: StdStream, data: &[u8]) -> io::Result<()> {
        let time_ns = to_nanos(time);
        let mut rotation_error = None;
        self.buf.clear();
        let mut rest = data;
        while !rest.is_empty() {
            let (piece, partial) = next_record(rest);
            rest = &rest[piece.len()..];
            let queued = self.size + self.buf.len() as u64;
            let record_len = (piece.len() + REC_OVERHEAD) as u64;
            if rotation_error.is_none() && queued > FILE_HEADER_LEN && queued + record_len > self.limits.max_file_bytes
            {
                self.append_queued()?;
                if let Err(e) = self.rotate() {
                    rotation_error = Some(e);
                }
            }
            encode_record(&mut self.buf, time_ns, stream, partial, piece);
        }
        self.append_queued()?;
        match rotation_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Flushes the current file to disk (not done per write: it would make output slow).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn append_queued(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.buf);
        match result {
            Ok(()) => self.size += self.buf.len() as u64,
            // A short write (disk full) would leave a torn record that later records follow;
            // cutting it off keeps the file well-formed for readers.
            Err(_) => {
                let _ = self.file.set_len(self.size);
            }
        }
        self.buf.clear();
        result
    }

    /// Shifts `current → .1 → .2 …`, dropping the oldest, and starts a new current file. On
    /// failure the writer keeps its old file, so no output is lost.
    fn rotate(&mut self) -> io::Result<()> {
        let generation = self.generation + 1;
        let (tmp, file) = create_tmp(&self.dir, generation)?;
        if let Err(e) = self.shift_files(&tmp) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.file = file;
        self.size = FILE_HEADER_LEN;
        self.generation = generation;
        Ok(())
    }

    fn shift_files(&self, new_file: &Path) -> io::Result<()> {
        let current = self.dir.join(LOG_FILE_NAME);
        let max_files = self.limits.max_files.max(1);
        if max_files > 1 {
            remove_if_exists(&log_path(&self.dir, max_files - 1))?;
            for index in (1..max_files - 1).rev() {
                rename_if_exists(&log_path(&self.dir, index), &log_path(&self.dir, index + 1))?;
            }
            rename_if_exists(&current, &log_path(&self.dir, 1))?;
        }
        // With a single file, this rename replaces (and so drops) the old one.
        fs::rename(new_file, &current)
    }
}

/// Reads the records of the log in `dir`, oldest first: those of the wanted streams (both when
/// neither `stdout` nor `stderr` is set) within `since..until`, then only the last `tail` of them.
/// `tail` reads backwards from the end of the log, touching only the files and bytes it needs.
///
/// A missing directory is an empty log. `follow` is not handled here: see
/// [`read_logs_with_cursor`].
pub fn read_logs(dir: &Path, opts: &LogOptions) -> io::Result<Vec<LogRecord>> {
    Ok(read_logs_with_cursor(dir, opts)?.0)
}

/// [`read_logs`], plus a [`LogCursor`] at exactly where the read stopped, so a follower neither
/// misses nor repeats a record written between the read and the start of following.
pub fn read_logs_with_cursor(dir: &Path, opts: &LogOptions) -> io::Result<(Vec<LogRecord>, LogCursor)> {
    let mut files = open_all(dir)?;
    let mut lens = Vec::with_capacity(files.len());
    for log in &files {
        lens.push(log.file.metadata()?.len());
    }
    let sources: Vec<(&File, u64)> = files.iter().map(|log| &log.file).zip(lens).collect();
    let (records, end) = read_from(&sources, opts)?;
    let cursor = LogCursor { dir: dir.to_path_buf(), offset: end, current: files.pop(), pending: false };
    Ok((records, cursor))
}

/// The reading behind [`read_logs`], over `(file, length)` pairs oldest first; also returns where
/// the newest file's complete records end.
fn read_from<R: ReadAt + ?Sized>(files: &[(&R, u64)], opts: &LogOptions) -> io::Result<(Vec<LogRecord>, u64)> {
    let mut windows: Vec<Window<'_, R>> =
        files.iter().map(|&(src, len)| Window::new(src, FILE_HEADER_LEN, len, Direction::Backward)).collect();
    let mut end = FILE_HEADER_LEN;
    if let Some(newest) = windows.last_mut() {
        // The newest file may end in a record still being written: stop before it. The window
        // keeps what this read, for `tail` to go on from.
        end = valid_end(newest, FILE_HEADER_LEN)?.unwrap_or(FILE_HEADER_LEN);
        newest.hi = end;
    }
    let filter = Filter::new(opts);
    let mut out = Vec::new();
    match opts.tail {
        Some(0) => {}
        Some(n) => {
            for window in windows.iter_mut().rev() {
                scan_backward(window, |header, data| {
                    if filter.wants(&header) {
                        out.push(to_record(header, data));
                    }
                    out.len() < n
                })?;
                if out.len() >= n {
                    break;
                }
            }
            out.reverse();
        }
        None => {
            for window in &mut windows {
                window.direction = Direction::Forward;
                let from = window.lo;
                scan_forward(window, from, true, u64::MAX, |header, data| {
                    if filter.wants(&header) {
                        out.push(to_record(header, data));
                    }
                })?;
            }
        }
    }
    Ok((out, end))
}

/// A position in a container's log from which new records are read as they are written
/// (`docker logs --follow`). Polled: call [`read_new`](Self::read_new) every 100 ms or so.
#[derive(Debug)]
pub struct LogCursor {
    dir: PathBuf,
    /// The file being read; `None` until the log has a file.
    current: Option<LogFile>,
    /// Where the next record of `current` starts.
    offset: u64,
    pending: bool,
}

impl LogCursor {
    /// A cursor after the last complete record now in the log in `dir` (which need not exist
    /// yet: then every record to come is new).
    pub fn at_end(dir: &Path) -> io::Result<LogCursor> {
        let opts = LogOptions { tail: Some(0), ..LogOptions::default() };
        Ok(read_logs_with_cursor(dir, &opts)?.1)
    }

    /// The records written since the last call (or since the cursor was made) that `opts` wants
    /// (`tail` is ignored), oldest first. Follows rotations: the old file is read to its end
    /// before the next one is started. Reads at most [`FOLLOW_BATCH_BYTES`] of log per call;
    /// [`pending`](Self::pending) then tells that more is already there. A cursor that falls so
    /// far behind that rotation deletes files it has not opened goes on with the oldest file left.
    pub fn read_new(&mut self, opts: &LogOptions) -> io::Result<Vec<LogRecord>> {
        let filter = Filter::new(opts);
        let mut out = Vec::new();
        let mut budget = FOLLOW_BATCH_BYTES as u64;
        self.pending = false;
        loop {
            // Looked for *before* reading: once a newer file exists the writer is done with
            // ours, so what is read of ours from then on is all it will ever hold.
            let next = match &self.current {
                Some(log) if !current_path_moved(&self.dir, log)? => None,
                Some(log) => find_successor(&self.dir, log.generation)?,
                None => find_successor(&self.dir, 0)?,
            };
            if let Some(log) = &self.current {
                let len = log.file.metadata()?.len().max(FILE_HEADER_LEN);
                let mut window = Window::new(&log.file, FILE_HEADER_LEN, len, Direction::Forward);
                let scan = scan_forward(&mut window, self.offset, next.is_some(), budget, |header, data| {
                    if filter.wants(&header) {
                        out.push(to_record(header, data));
                    }
                })?;
                budget = budget.saturating_sub(scan.stop - self.offset);
                self.offset = scan.stop;
                if scan.exhausted {
                    self.pending = true;
                    return Ok(out);
                }
            }
            match next {
                Some(log) => {
                    self.current = Some(log);
                    self.offset = FILE_HEADER_LEN;
                }
                None => return Ok(out),
            }
        }
    }

    /// Whether the last [`read_new`](Self::read_new) stopped at its size bound with more log
    /// already written: call again without waiting.
    pub fn pending(&self) -> bool {
        self.pending
    }
}

/// Whether `container.log` is no longer the file `log` (a rotation happened). A missing
/// `container.log` is the moment inside a rotation before the new file is renamed in: not yet.
fn current_path_moved(dir: &Path, log: &LogFile) -> io::Result<bool> {
    match fs::metadata(dir.join(LOG_FILE_NAME)) {
        Ok(meta) => Ok(meta.dev() != log.dev || meta.ino() != log.ino),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The file written after generation `generation`: normally `generation + 1`, or the oldest
/// left if rotation has already dropped it.
fn find_successor(dir: &Path, generation: u64) -> io::Result<Option<LogFile>> {
    let mut found = None;
    // A second look if the very next generation was not seen, in case the probe raced a
    // rotation in a way that hid it.
    for _ in 0..2 {
        found = open_all(dir)?.into_iter().find(|log| log.generation > generation);
        if found.as_ref().is_some_and(|log| log.generation == generation + 1) {
            break;
        }
    }
    Ok(found)
}

#[derive(Debug)]
struct LogFile {
    file: File,
    generation: u64,
    dev: u64,
    ino: u64,
}

enum Probe {
    Missing,
    Foreign,
    Log(LogFile),
}

fn open_log(path: &Path) -> io::Result<Probe> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::Missing),
        Err(e) => return Err(e),
    };
    let Some(generation) = read_file_header(&file)? else {
        return Ok(Probe::Foreign);
    };
    let meta = file.metadata()?;
    Ok(Probe::Log(LogFile { file, generation, dev: meta.dev(), ino: meta.ino() }))
}

/// Opens every log file of `dir`, oldest generation first.
fn open_all(dir: &Path) -> io::Result<Vec<LogFile>> {
    let mut found = Vec::new();
    let mut misses = 0;
    // Names are probed in increasing index because rotation only ever moves a file to a higher
    // index: a file present when the probe starts cannot slip behind it. Mid-rotation a single
    // name may be missing, hence two misses in a row to stop. A file seen twice is deduplicated.
    for index in 0..MAX_PROBED_FILES {
        match open_log(&log_path(dir, index))? {
            Probe::Missing => {
                misses += 1;
                if misses == 2 {
                    break;
                }
                continue;
            }
            Probe::Foreign => {}
            Probe::Log(log) => found.push(log),
        }
        misses = 0;
    }
    found.sort_by_key(|log| log.generation);
    found.dedup_by_key(|log| log.generation);
    Ok(found)
}

fn log_path(dir: &Path, index: usize) -> PathBuf {
    match index {
        0 => dir.join(LOG_FILE_NAME),
        n => dir.join(format!("{LOG_FILE_NAME}.{n}")),
    }
}

/// `N` for a rotated file name `container.log.N`.
fn rotated_index(name: &str) -> Option<usize> {
    let digits = name.strip_prefix(LOG_FILE_NAME)?.strip_prefix('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n > 0)
}

fn file_header(generation: u64) -> [u8; FILE_HEADER_LEN as usize] {
    let mut header = [0u8; FILE_HEADER_LEN as usize];
    header[..7].copy_from_slice(&FILE_MAGIC);
    header[7] = FILE_VERSION;
    header[8..].copy_from_slice(&generation.to_le_bytes());
    header
}

fn read_file_header<R: ReadAt + ?Sized>(src: &R) -> io::Result<Option<u64>> {
    let mut header = [0u8; FILE_HEADER_LEN as usize];
    if read_full(src, &mut header, 0)? < header.len() || header[..7] != FILE_MAGIC || header[7] != FILE_VERSION {
        return Ok(None);
    }
    Ok(Some(u64::from_le_bytes(header[8..].try_into().unwrap_or_default())))
}

/// Writes a new log file under a temporary name; the caller renames it into place.
fn create_tmp(dir: &Path, generation: u64) -> io::Result<(PathBuf, File)> {
    let tmp = dir.join(format!("{LOG_FILE_NAME}{TMP_SUFFIX}"));
    remove_if_exists(&tmp)?;
    let mut file = OpenOptions::new().read(true).append(true).create_new(true).open(&tmp)?;
    if let Err(e) = file.write_all(&file_header(generation)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok((tmp, file))
}

fn create_log(dir: &Path, generation: u64) -> io::Result<File> {
    let (tmp, file) = create_tmp(dir, generation)?;
    fs::rename(&tmp, dir.join(LOG_FILE_NAME))?;
    Ok(file)
}

/// Cuts off an incomplete record at the end of `file` (a write cut short by a crash), so new
/// records do not follow garbage. Returns the new length. Only the last record's worth of bytes
/// is examined: anything worse is left for readers to skip.
fn trim_torn_tail(file: &File, len: u64) -> io::Result<u64> {
    let mut window = Window::new(file, FILE_HEADER_LEN, len, Direction::Backward);
    match valid_end(&mut window, len.saturating_sub(REC_MAX_TOTAL as u64))? {
        Some(end) if end < len => {
            file.set_len(end)?;
            Ok(end)
        }
        _ => Ok(len),
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The next record's worth of `data`: up to and including the first `\n`, at most
/// [`MAX_RECORD_DATA`] bytes. The flag says it is partial (does not end a line).
fn next_record(data: &[u8]) -> (&[u8], bool) {
    let limit = data.len().min(MAX_RECORD_DATA);
    match data[..limit].iter().position(|&b| b == b'\n') {
        Some(newline) => (&data[..=newline], false),
        None => (&data[..limit], true),
    }
}

fn encode_record(buf: &mut Vec<u8>, time_ns: i64, stream: StdStream, partial: bool, data: &[u8]) {
    let start = buf.len();
    let mut flags = 0;
    if stream == StdStream::Stderr {
        flags |= FLAG_STDERR;
    }
    if partial {
        flags |= FLAG_PARTIAL;
    }
    let len = (data.len() as u32).to_le_bytes();
    buf.extend_from_slice(&[REC_MAGIC, REC_VERSION, flags, 0]);
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&time_ns.to_le_bytes());
    buf.extend_from_slice(data);
    let crc = crc32(&buf[start..]);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&len);
}

/// What a record's header says.
#[derive(Debug, Clone, Copy)]
struct Header {
    stream: StdStream,
    len: usize,
    time_ns: i64,
}

fn parse_header(bytes: &[u8]) -> Option<Header> {
    let flags = bytes[2];
    if bytes[0] != REC_MAGIC || bytes[1] != REC_VERSION || flags & !(FLAG_STDERR | FLAG_PARTIAL) != 0 || bytes[3] != 0 {
        return None;
    }
    let len = le_u32(&bytes[4..8]) as usize;
    if len > MAX_RECORD_DATA {
        return None;
    }
    let stream = if flags & FLAG_STDERR != 0 { StdStream::Stderr } else { StdStream::Stdout };
    let time_ns = i64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
    Some(Header { stream, len, time_ns })
}

/// Checks the trailer of a whole record of `len` data bytes.
fn check_record(record: &[u8], len: usize) -> bool {
    let body = REC_HEADER_LEN + len;
    le_u32(&record[body + 4..body + 8]) as usize == len && le_u32(&record[body..body + 4]) == crc32(&record[..body])
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().unwrap_or_default())
}

fn to_nanos(time: DateTime<Utc>) -> i64 {
    // Beyond 1677..2262 nanoseconds overflow i64: clamp, which keeps the order.
    time.timestamp_nanos_opt().unwrap_or(if time.timestamp() < 0 { i64::MIN } else { i64::MAX })
}

fn to_record(header: Header, data: &[u8]) -> LogRecord {
    LogRecord {
        time: DateTime::from_timestamp_nanos(header.time_ns),
        stream: header.stream,
        data: Bytes::copy_from_slice(data),
    }
}

/// The selection of [`LogOptions`], in the records' own terms.
struct Filter {
    stdout: bool,
    stderr: bool,
    since_ns: Option<i64>,
    until_ns: Option<i64>,
}

impl Filter {
    fn new(opts: &LogOptions) -> Self {
        let both = !opts.stdout && !opts.stderr;
        Filter {
            stdout: opts.stdout || both,
            stderr: opts.stderr || both,
            since_ns: opts.since.map(to_nanos),
            until_ns: opts.until.map(to_nanos),
        }
    }

    fn wants(&self, header: &Header) -> bool {
        let stream = match header.stream {
            StdStream::Stdout => self.stdout,
            StdStream::Stderr => self.stderr,
        };
        stream
            && self.since_ns.is_none_or(|since| header.time_ns >= since)
            && self.until_ns.is_none_or(|until| header.time_ns < until)
    }
}

/// Positioned reads, so tests can see how much of a file a read touches.
trait ReadAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

/// Reads as much of `buf` as the file holds from `offset`.
fn read_full<R: ReadAt + ?Sized>(src: &R, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match src.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Backward,
}

/// A buffered view of the bytes `lo..hi` of a file, refilled in chunks in the direction of travel.
struct Window<'a, R: ?Sized> {
    src: &'a R,
    lo: u64,
    hi: u64,
    direction: Direction,
    /// File offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
}

impl<'a, R: ReadAt + ?Sized> Window<'a, R> {
    fn new(src: &'a R, lo: u64, hi: u64, direction: Direction) -> Self {
        Window { src, lo, hi: hi.max(lo), direction, start: lo, buf: Vec::new() }
    }

    /// The bytes `pos .. pos+len`, or `None` if they are not (or no longer) all in `lo..hi`.
    fn get(&mut self, pos: u64, len: usize) -> io::Result<Option<&[u8]>> {
        let end = pos.saturating_add(len as u64);
        if pos < self.lo || end > self.hi {
            return Ok(None);
        }
        if pos < self.start || end > self.start + self.buf.len() as u64 {
            let (from, to) = match self.direction {
                Direction::Forward => (pos, self.hi.min(pos + len.max(READ_CHUNK) as u64)),
                // Also a record's worth above: a backward resync alternates between a candidate
                // trailer and the header it points at, up to a record apart.
                Direction::Backward => (
                    self.lo.max(end.saturating_sub((len + READ_CHUNK) as u64)),
                    self.hi.min(end.max(pos + REC_MAX_TOTAL as u64)),
                ),
            };
            self.buf.resize((to - from) as usize, 0);
            let read = read_full(self.src, &mut self.buf, from)?;
            self.buf.truncate(read);
            self.start = from;
            // A file can shrink under a reader (the writer cuts off a torn record): remembering it
            // spares a read per byte to a resync walking through the missing end.
            if end > from + read as u64 {
                self.hi = self.hi.min(from + read as u64).max(self.lo);
                return Ok(None);
            }
        }
        let offset = (pos - self.start) as usize;
        Ok(Some(&self.buf[offset..offset + len]))
    }
}

enum At<'b> {
    Valid(Header, &'b [u8], u64),
    Invalid,
    /// Runs past the end of the window: torn, or still being written.
    Incomplete,
}

/// The record starting at `pos`: its header, data and end.
fn record_at<'b, R: ReadAt + ?Sized>(window: &'b mut Window<'_, R>, pos: u64) -> io::Result<At<'b>> {
    let header = match window.get(pos, REC_HEADER_LEN)? {
        None => return Ok(At::Incomplete),
        Some(bytes) => match parse_header(bytes) {
            None => return Ok(At::Invalid),
            Some(header) => header,
        },
    };
    let total = REC_OVERHEAD + header.len;
    Ok(match window.get(pos, total)? {
        None => At::Incomplete,
        Some(record) if check_record(record, header.len) => {
            At::Valid(header, &record[REC_HEADER_LEN..REC_HEADER_LEN + header.len], pos + total as u64)
        }
        Some(_) => At::Invalid,
    })
}

/// The valid record ending exactly at `end`, with its start.
fn record_ending_at<'b, R: ReadAt + ?Sized>(
    window: &'b mut Window<'_, R>,
    end: u64,
) -> io::Result<Option<(Header, &'b [u8], u64)>> {
    if end < window.lo + REC_OVERHEAD as u64 {
        return Ok(None);
    }
    let Some(trailer) = window.get(end - 4, 4)? else {
        return Ok(None);
    };
    let len = le_u32(trailer) as usize;
    let total = (len + REC_OVERHEAD) as u64;
    if len > MAX_RECORD_DATA || end - window.lo < total {
        return Ok(None);
    }
    let start = end - total;
    let Some(record) = window.get(start, total as usize)? else {
        return Ok(None);
    };
    match parse_header(record) {
        Some(header) if header.len == len && check_record(record, len) => {
            Ok(Some((header, &record[REC_HEADER_LEN..REC_HEADER_LEN + len], start)))
        }
        _ => Ok(None),
    }
}

/// The highest record boundary (the window's start, or the end of a valid record) below
/// `below` and not below `floor`.
fn boundary_before<R: ReadAt + ?Sized>(window: &mut Window<'_, R>, below: u64, floor: u64) -> io::Result<Option<u64>> {
    let floor = floor.max(window.lo);
    let mut pos = below;
    while pos > floor {
        pos -= 1;
        if pos == window.lo || record_ending_at(window, pos)?.is_some() {
            return Ok(Some(pos));
        }
    }
    Ok(None)
}

/// Where the last complete record of the window ends, searching no lower than `floor`.
fn valid_end<R: ReadAt + ?Sized>(window: &mut Window<'_, R>, floor: u64) -> io::Result<Option<u64>> {
    let hi = window.hi;
    if hi == window.lo || record_ending_at(window, hi)?.is_some() {
        return Ok(Some(hi));
    }
    boundary_before(window, hi, floor)
}

/// Visits the window's records newest first, skipping damaged stretches, while `visit` says so.
fn scan_backward<R: ReadAt + ?Sized>(
    window: &mut Window<'_, R>,
    mut visit: impl FnMut(Header, &[u8]) -> bool,
) -> io::Result<()> {
    let mut pos = window.hi;
    while pos > window.lo {
        match record_ending_at(window, pos)? {
            Some((header, data, start)) => {
                if !visit(header, data) {
                    return Ok(());
                }
                pos = start;
            }
            None => match boundary_before(window, pos, window.lo)? {
                Some(boundary) => pos = boundary,
                None => break,
            },
        }
    }
    Ok(())
}

struct Scan {
    /// Where the next record starts (or the end of a complete file).
    stop: u64,
    /// Stopped because `budget` bytes were read.
    exhausted: bool,
}

/// Visits the records from `from` to the window's end, oldest first, skipping damaged stretches.
/// Unless `complete`, the file is still being written and an incomplete record at its end is
/// one not written yet: the scan stops in front of it. Stops early rather than go past `budget`
/// bytes from `from`.
fn scan_forward<R: ReadAt + ?Sized>(
    window: &mut Window<'_, R>,
    from: u64,
    complete: bool,
    budget: u64,
    mut visit: impl FnMut(Header, &[u8]),
) -> io::Result<Scan> {
    let mut pos = from;
    while pos < window.hi {
        if pos - from >= budget {
            return Ok(Scan { stop: pos, exhausted: true });
        }
        match record_at(window, pos)? {
            At::Valid(_, _, next) if next - from > budget => {
                return Ok(Scan { stop: pos, exhausted: true });
            }
            At::Valid(header, data, next) => {
                visit(header, data);
                pos = next;
            }
            At::Incomplete if !complete => return Ok(Scan { stop: pos, exhausted: false }),
            At::Invalid | At::Incomplete => pos = resync_forward(window, pos + 1, complete)?,
        }
    }
    Ok(Scan { stop: pos.max(from), exhausted: false })
}

/// The first position from `pos` where a valid record starts; unless `complete`, also one where a
/// record might start but is not all written yet. The window's end if there is none.
fn resync_forward<R: ReadAt + ?Sized>(window: &mut Window<'_, R>, mut pos: u64, complete: bool) -> io::Result<u64> {
    while pos < window.hi {
        match record_at(window, pos)? {
            At::Valid(..) => return Ok(pos),
            At::Incomplete if !complete => return Ok(pos),
            _ => pos += 1,
        }
    }
    Ok(window.hi)
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { 0xEDB8_8320 ^ (crc >> 1) } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3, as zlib): no dependency for the few lines it takes.
fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| CRC_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use chrono::TimeZone;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn all() -> LogOptions {
        LogOptions::default()
    }

    fn tail(n: usize) -> LogOptions {
        LogOptions { tail: Some(n), ..LogOptions::default() }
    }

    fn data(records: &[LogRecord]) -> Vec<Vec<u8>> {
        records.iter().map(|r| r.data.to_vec()).collect()
    }

    fn lines(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
        range.map(|i| format!("line {i}\n").into_bytes()).collect()
    }

    fn small(max_file_bytes: u64, max_files: usize) -> LogLimits {
        LogLimits { max_file_bytes, max_files }
    }

    fn write_lines(writer: &mut LogWriter, range: std::ops::Range<usize>) {
        for i in range {
            writer.write(at(i as i64), StdStream::Stdout, format!("line {i}\n").as_bytes()).unwrap();
        }
    }

    /// (flags, data) of every record of a file, walked with the documented layout.
    fn raw_records(path: &Path) -> Vec<(u8, Vec<u8>)> {
        let bytes = fs::read(path).unwrap();
        assert_eq!(&bytes[..7], b"PTHLOGF");
        let mut pos = FILE_HEADER_LEN as usize;
        let mut out = Vec::new();
        while pos < bytes.len() {
            assert_eq!(bytes[pos], REC_MAGIC);
            let len = le_u32(&bytes[pos + 4..pos + 8]) as usize;
            out.push((bytes[pos + 2], bytes[pos + 16..pos + 16 + len].to_vec()));
            assert_eq!(le_u32(&bytes[pos + 20 + len..pos + 24 + len]) as usize, len);
            pos += len + REC_OVERHEAD;
        }
        out
    }

    fn append_raw(dir: &Path, bytes: &[u8]) {
        let mut file = OpenOptions::new().append(true).open(dir.join(LOG_FILE_NAME)).unwrap();
        file.write_all(bytes).unwrap();
    }

    fn encoded(time: DateTime<Utc>, stream: StdStream, data: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_record(&mut buf, to_nanos(time), stream, !data.ends_with(b"\n"), data);
        buf
    }

    struct Counting<'a> {
        file: &'a File,
        read: Cell<u64>,
    }

    impl ReadAt for Counting<'_> {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let n = ReadAt::read_at(self.file, buf, offset)?;
            self.read.set(self.read.get() + n as u64);
            Ok(n)
        }
    }

    #[test]
    fn crc32_matches_the_reference_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn binary_data_and_split_characters_come_back_identical() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), LogLimits::default()).unwrap();
        // "é" is C3 A9: its two bytes go in separate writes. FF FE and a lone NUL are not UTF-8.
        let chunks: [&[u8]; 5] = [b"caf\xC3", b"\xA9\n", b"\xFF\xFE\x00bin\r\n\n", b"\x80", b"tail"];
        for (i, chunk) in chunks.iter().enumerate() {
            writer.write(at(i as i64), StdStream::Stdout, chunk).unwrap();
        }

        let records = read_logs(dir.path(), &all()).unwrap();
        let joined: Vec<u8> = records.iter().flat_map(|r| r.data.iter().copied()).collect();
        assert_eq!(joined, chunks.concat());
        assert_eq!(records[0].data.as_ref(), b"caf\xC3");
        assert_eq!(records[1].data.as_ref(), b"\xA9\n");
        assert_eq!(records[0].time, at(0));
        assert_eq!(records.last().unwrap().time, at(4));
    }

    #[test]
    fn data_is_split_at_newlines_and_long_runs_with_partials_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), LogLimits::default()).unwrap();
        writer.write(at(0), StdStream::Stderr, b"a\nbb\n\nccc").unwrap();
        let long = vec![b'x'; 2 * MAX_RECORD_DATA + 100];
        writer.write(at(1), StdStream::Stdout, &long).unwrap();

        let records = read_logs(dir.path(), &all()).unwrap();
        let expected: Vec<Vec<u8>> = vec![
            b"a\n".to_vec(),
            b"bb\n".to_vec(),
            b"\n".to_vec(),
            b"ccc".to_vec(),
            vec![b'x'; MAX_RECORD_DATA],
            vec![b'x'; MAX_RECORD_DATA],
            vec![b'x'; 100],
        ];
        assert_eq!(data(&records), expected);
        assert!(records[..4].iter().all(|r| r.stream == StdStream::Stderr && r.time == at(0)));

        let flags: Vec<u8> = raw_records(&dir.path().join(LOG_FILE_NAME)).iter().map(|r| r.0).collect();
        let p = FLAG_PARTIAL;
        let e = FLAG_STDERR;
        assert_eq!(flags, vec![e, e, e, e | p, p, p, p]);
        // `tail` counts records, partial or not.
        assert_eq!(data(&read_logs(dir.path(), &tail(2)).unwrap()), expected[5..]);
    }

    #[test]
    fn tail_spans_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), small(200, 20)).unwrap();
        write_lines(&mut writer, 0..30);
        assert!(dir.path().join(format!("{LOG_FILE_NAME}.3")).exists());

        assert_eq!(data(&read_logs(dir.path(), &tail(7)).unwrap()), lines(23..30));
        assert_eq!(data(&read_logs(dir.path(), &tail(1)).unwrap()), lines(29..30));
        assert_eq!(data(&read_logs(dir.path(), &tail(0)).unwrap()), lines(0..0));
        assert_eq!(data(&read_logs(dir.path(), &tail(1000)).unwrap()), lines(0..30));
        assert_eq!(data(&read_logs(dir.path(), &all()).unwrap()), lines(0..30));
    }

    #[test]
    fn since_and_until_select_a_time_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), small(150, 50)).unwrap();
        write_lines(&mut writer, 0..10);

        let range = LogOptions { since: Some(at(3)), until: Some(at(6)), ..all() };
        assert_eq!(data(&read_logs(dir.path(), &range).unwrap()), lines(3..6));
        let since = LogOptions { since: Some(at(7)), ..all() };
        assert_eq!(data(&read_logs(dir.path(), &since).unwrap()), lines(7..10));
        let until = LogOptions { until: Some(at(2)), ..all() };
        assert_eq!(data(&read_logs(dir.path(), &until).unwrap()), lines(0..2));
        // tail applies after the time filter.
        let range_tail = LogOptions { tail: Some(2), ..range };
        assert_eq!(data(&read_logs(dir.path(), &range_tail).unwrap()), lines(4..6));
    }

    #[test]
    fn stream_filters_pick_stdout_stderr_or_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), LogLimits::default()).unwrap();
        writer.write(at(0), StdStream::Stdout, b"out 1\n").unwrap();
        writer.write(at(1), StdStream::Stderr, b"err 1\n").unwrap();
        writer.write(at(2), StdStream::Stdout, b"out 2\n").unwrap();

        let stdout = LogOptions { stdout: true, ..all() };
        let stderr = LogOptions { stderr: true, ..all() };
        let both = LogOptions { stdout: true, stderr: true, ..all() };
        assert_eq!(data(&read_logs(dir.path(), &stdout).unwrap()), [b"out 1\n", b"out 2\n"]);
        assert_eq!(data(&read_logs(dir.path(), &stderr).unwrap()), [b"err 1\n"]);
        assert_eq!(read_logs(dir.path(), &both).unwrap().len(), 3);
        assert_eq!(read_logs(dir.path(), &all()).unwrap().len(), 3);
        let stderr_tail = LogOptions { tail: Some(1), ..stdout };
        assert_eq!(data(&read_logs(dir.path(), &stderr_tail).unwrap()), [b"out 2\n"]);
    }

    #[test]
    fn rotation_keeps_at_most_max_files_of_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let limits = small(500, 3);
        let mut writer = LogWriter::open(dir.path(), limits).unwrap();
        write_lines(&mut writer, 0..200);

        let mut names: Vec<String> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["container.log", "container.log.1", "container.log.2"]);
        for name in &names {
            let len = fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len <= limits.max_file_bytes, "{name} is {len} bytes");
        }
        // What is left is the newest records, contiguous, oldest first.
        let kept = data(&read_logs(dir.path(), &all()).unwrap());
        assert!(kept.len() > 10 && kept.len() < 200);
        assert_eq!(kept, lines(200 - kept.len()..200));

        // A smaller limit on reopening drops the files beyond it.
        let writer = LogWriter::open(dir.path(), small(500, 2)).unwrap();
        drop(writer);
        assert!(!dir.path().join("container.log.2").exists());
        assert!(dir.path().join("container.log.1").exists());

        // A single file: rotation starts it afresh.
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), small(100, 1)).unwrap();
        write_lines(&mut writer, 0..20);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(data(&read_logs(dir.path(), &tail(1)).unwrap()), lines(19..20));
    }

    #[test]
    fn a_record_larger_than_the_file_limit_is_still_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), small(40, 3)).unwrap();
        writer.write(at(0), StdStream::Stdout, b"far longer than forty bytes with framing\n").unwrap();
        writer.write(at(1), StdStream::Stdout, b"again\n").unwrap();
        assert_eq!(
            data(&read_logs(dir.path(), &all()).unwrap()),
            [b"far longer than forty bytes with framing\n".to_vec(), b"again\n".to_vec()]
        );
    }

    #[test]
    fn follower_sees_new_records_and_survives_rotations() {
        let dir = tempfile::tempdir().unwrap();
        // Made before the log exists: everything written later is new.
        let mut cursor = LogCursor::at_end(dir.path()).unwrap();
        assert!(cursor.read_new(&all()).unwrap().is_empty());

        let mut writer = LogWriter::open(dir.path(), small(300, 50)).unwrap();
        let mut seen = Vec::new();
        write_lines(&mut writer, 0..3);
        seen.extend(data(&cursor.read_new(&all()).unwrap()));
        assert_eq!(seen, lines(0..3));
        assert!(cursor.read_new(&all()).unwrap().is_empty());

        // One rotation between polls, then several.
        write_lines(&mut writer, 3..12);
        seen.extend(data(&cursor.read_new(&all()).unwrap()));
        write_lines(&mut writer, 12..80);
        seen.extend(data(&cursor.read_new(&all()).unwrap()));
        write_lines(&mut writer, 80..81);
        seen.extend(data(&cursor.read_new(&all()).unwrap()));
        assert!(dir.path().join(format!("{LOG_FILE_NAME}.5")).exists());
        assert_eq!(seen, lines(0..81));

        // A cursor made at the end of an existing log only sees what follows.
        let mut late = LogCursor::at_end(dir.path()).unwrap();
        write_lines(&mut writer, 81..90);
        assert_eq!(data(&late.read_new(&all()).unwrap()), lines(81..90));
        assert_eq!(data(&cursor.read_new(&all()).unwrap()), lines(81..90));
    }

    #[test]
    fn follower_applies_filters_and_a_single_file_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), small(120, 1)).unwrap();
        let mut cursor = LogCursor::at_end(dir.path()).unwrap();
        let stderr = LogOptions { stderr: true, ..all() };
        let mut seen = Vec::new();
        for i in 0..20 {
            writer.write(at(i), StdStream::Stdout, b"out\n").unwrap();
            writer.write(at(i), StdStream::Stderr, format!("err {i}\n").as_bytes()).unwrap();
            // One rotation at most per poll: with a single file, a second one would drop a file
            // the cursor never opened (retention, not a reader bug).
            seen.extend(data(&cursor.read_new(&stderr).unwrap()));
        }
        seen.extend(data(&cursor.read_new(&stderr).unwrap()));
        let expected: Vec<Vec<u8>> = (0..20).map(|i| format!("err {i}\n").into_bytes()).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_follower_outrun_by_retention_goes_on_with_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), small(200, 2)).unwrap();
        let mut cursor = LogCursor::at_end(dir.path()).unwrap();
        write_lines(&mut writer, 0..2);
        assert_eq!(data(&cursor.read_new(&all()).unwrap()), lines(0..2));
        write_lines(&mut writer, 2..100);
        let seen = data(&cursor.read_new(&all()).unwrap());
        // The rest of the file the cursor had open, then the two files retention kept.
        let kept = data(&read_logs(dir.path(), &all()).unwrap());
        assert!(seen.len() > kept.len() && seen.len() < 98);
        assert!(seen.starts_with(&lines(2..3)));
        assert!(seen.ends_with(&kept));
        write_lines(&mut writer, 100..101);
        assert_eq!(data(&cursor.read_new(&all()).unwrap()), lines(100..101));
    }

    #[test]
    fn read_logs_with_cursor_neither_loses_nor_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), small(400, 10)).unwrap();
        write_lines(&mut writer, 0..20);
        let (records, mut cursor) = read_logs_with_cursor(dir.path(), &tail(5)).unwrap();
        assert_eq!(data(&records), lines(15..20));
        write_lines(&mut writer, 20..40);
        assert_eq!(data(&cursor.read_new(&all()).unwrap()), lines(20..40));
    }

    #[test]
    fn follower_returns_bounded_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), small(3 * 1024 * 1024, 10)).unwrap();
        let mut cursor = LogCursor::at_end(dir.path()).unwrap();
        let chunk = vec![b'z'; 64 * 1024];
        for i in 0..80 {
            writer.write(at(i), StdStream::Stdout, &chunk).unwrap();
        }
        let total = 80 * chunk.len();

        let mut got = 0;
        let mut calls = 0;
        loop {
            let batch = cursor.read_new(&all()).unwrap();
            let bytes: usize = batch.iter().map(|r| r.data.len()).sum();
            assert!(bytes <= FOLLOW_BATCH_BYTES);
            got += bytes;
            calls += 1;
            if !cursor.pending() {
                break;
            }
        }
        assert_eq!(got, total);
        assert!(total > FOLLOW_BATCH_BYTES && calls >= 2, "{calls} calls");
        assert!(cursor.read_new(&all()).unwrap().is_empty());
    }

    #[test]
    fn an_incomplete_last_record_waits_until_complete() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), LogLimits::default()).unwrap();
        write_lines(&mut writer, 0..3);
        let (records, mut cursor) = read_logs_with_cursor(dir.path(), &all()).unwrap();
        assert_eq!(records.len(), 3);

        let record = encoded(at(3), StdStream::Stdout, b"line 3\n");
        for cut in [1, REC_HEADER_LEN + 2, record.len() - 1] {
            let dir2 = tempfile::tempdir().unwrap();
            let mut w = LogWriter::open(dir2.path(), LogLimits::default()).unwrap();
            write_lines(&mut w, 0..3);
            append_raw(dir2.path(), &record[..cut]);
            assert_eq!(data(&read_logs(dir2.path(), &all()).unwrap()), lines(0..3), "cut at {cut}");
            assert_eq!(data(&read_logs(dir2.path(), &tail(2)).unwrap()), lines(1..3), "cut at {cut}");
        }

        // Half a record, as a reader would see a write in progress.
        append_raw(dir.path(), &record[..10]);
        assert!(cursor.read_new(&all()).unwrap().is_empty());
        assert_eq!(read_logs(dir.path(), &all()).unwrap().len(), 3);
        let mut late = LogCursor::at_end(dir.path()).unwrap();
        append_raw(dir.path(), &record[10..]);
        assert_eq!(data(&cursor.read_new(&all()).unwrap()), lines(3..4));
        assert_eq!(data(&late.read_new(&all()).unwrap()), lines(3..4));
        assert_eq!(data(&read_logs(dir.path(), &all()).unwrap()), lines(0..4));
    }

    #[test]
    fn a_reopened_writer_appends() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), LogLimits::default()).unwrap();
        write_lines(&mut writer, 0..3);
        drop(writer);
        let mut writer = LogWriter::open(dir.path(), LogLimits::default()).unwrap();
        write_lines(&mut writer, 3..5);
        assert_eq!(data(&read_logs(dir.path(), &all()).unwrap()), lines(0..5));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        // Continues the rotation sequence too.
        let mut writer = LogWriter::open(dir.path(), small(100, 5)).unwrap();
        write_lines(&mut writer, 5..8);
        drop(writer);
        let mut writer = LogWriter::open(dir.path(), small(100, 5)).unwrap();
        write_lines(&mut writer, 8..10);
        assert_eq!(data(&read_logs(dir.path(), &all()).unwrap()), lines(0..10));
    }

    #[test]
    fn a_reopened_writer_cuts_off_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), LogLimits::default()).unwrap();
        write_lines(&mut writer, 0..2);
        drop(writer);
        let record = encoded(at(9), StdStream::Stdout, b"never finished\n");
        append_raw(dir.path(), &record[..record.len() / 2]);
        let len = fs::metadata(dir.path().join(LOG_FILE_NAME)).unwrap().len();

        let mut writer = LogWriter::open(dir.path(), LogLimits::default()).unwrap();
        assert_eq!(fs::metadata(dir.path().join(LOG_FILE_NAME)).unwrap().len(), len - record.len() as u64 / 2);
        write_lines(&mut writer, 2..4);
        assert_eq!(data(&read_logs(dir.path(), &all()).unwrap()), lines(0..4));
        assert_eq!(raw_records(&dir.path().join(LOG_FILE_NAME)).len(), 4);
    }

    #[test]
    fn a_foreign_current_file_is_rotated_out_not_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LOG_FILE_NAME), b"not a porthole log\n").unwrap();
        let mut writer = LogWriter::open(dir.path(), LogLimits::default()).unwrap();
        write_lines(&mut writer, 0..2);
        assert_eq!(fs::read(dir.path().join("container.log.1")).unwrap(), b"not a porthole log\n");
        assert_eq!(data(&read_logs(dir.path(), &all()).unwrap()), lines(0..2));
    }

    #[test]
    fn corrupt_records_are_skipped_by_every_reader() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), LogLimits::default()).unwrap();
        let mut cursor = LogCursor::at_end(dir.path()).unwrap();
        write_lines(&mut writer, 0..10);
        drop(writer);

        // Damage the data of record 4 (its checksum no longer matches) and the header of record 7.
        let path = dir.path().join(LOG_FILE_NAME);
        let mut bytes = fs::read(&path).unwrap();
        let size = REC_OVERHEAD + b"line 0\n".len();
        let start = |i: usize| FILE_HEADER_LEN as usize + i * size;
        bytes[start(4) + REC_HEADER_LEN] ^= 0x20;
        bytes[start(7)] = 0;
        fs::write(&path, &bytes).unwrap();

        let expected: Vec<Vec<u8>> =
            lines(0..10).into_iter().enumerate().filter(|(i, _)| *i != 4 && *i != 7).map(|(_, l)| l).collect();
        assert_eq!(data(&read_logs(dir.path(), &all()).unwrap()), expected);
        assert_eq!(data(&read_logs(dir.path(), &tail(100)).unwrap()), expected);
        assert_eq!(data(&read_logs(dir.path(), &tail(4)).unwrap()), expected[4..]);
        assert_eq!(data(&cursor.read_new(&all()).unwrap()), expected);

        // Garbage between records (as an old crash could leave) is stepped over too.
        let mut bytes = fs::read(&path).unwrap();
        bytes.splice(start(2)..start(2), [0xB7, 1, 0, 0, 9, 9, 9].iter().copied().chain(vec![0u8; 40]));
        fs::write(&path, &bytes).unwrap();
        assert_eq!(data(&read_logs(dir.path(), &all()).unwrap()), expected);
        assert_eq!(data(&read_logs(dir.path(), &tail(100)).unwrap()), expected);
    }

    #[test]
    fn tail_reads_only_the_end_of_a_large_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), small(u64::MAX, 1)).unwrap();
        let line = vec![b'y'; 199];
        for i in 0..20_000 {
            writer.write(at(i), StdStream::Stdout, &line).unwrap();
            writer.write(at(i), StdStream::Stdout, b"\n").unwrap();
        }
        writer.write(at(20_000), StdStream::Stdout, b"last\n").unwrap();
        drop(writer);

        let file = File::open(dir.path().join(LOG_FILE_NAME)).unwrap();
        let len = file.metadata().unwrap().len();
        assert!(len > 4_000_000);
        let counting = Counting { file: &file, read: Cell::new(0) };
        let (records, end) = read_from(&[(&counting, len)], &tail(3)).unwrap();
        assert_eq!(end, len);
        assert_eq!(data(&records), [line.clone(), b"\n".to_vec(), b"last\n".to_vec()]);
        // One 64 KiB window, against the 5 MB a forward read takes below.
        assert!(counting.read.get() <= 80 * 1024, "tail read {} bytes", counting.read.get());

        let counting = Counting { file: &file, read: Cell::new(0) };
        let (records, _) = read_from(&[(&counting, len)], &all()).unwrap();
        assert_eq!(records.len(), 40_001);
        assert!(counting.read.get() >= len - FILE_HEADER_LEN);

        // The start of the file is never looked at: a wrecked first record does not matter.
        let damaged = OpenOptions::new().write(true).open(dir.path().join(LOG_FILE_NAME)).unwrap();
        std::os::unix::fs::FileExt::write_at(&damaged, &[0xFF; 48], FILE_HEADER_LEN).unwrap();
        assert_eq!(data(&read_logs(dir.path(), &tail(1)).unwrap()), [b"last\n"]);
    }

    #[test]
    fn readers_keep_up_with_a_concurrent_rotating_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let mut cursor = LogCursor::at_end(&path).unwrap();
        const LINES: usize = 3000;
        let writer = std::thread::spawn(move || {
            // Enough files that retention never drops one the follower has yet to open.
            let mut writer = LogWriter::open(&path, small(2000, 1000)).unwrap();
            for i in 0..LINES {
                // Lines split over two writes, so readers also meet partial records.
                let line = format!("line {i}\n");
                let (a, b) = line.as_bytes().split_at(3);
                writer.write(at(i as i64), StdStream::Stdout, a).unwrap();
                writer.write(at(i as i64), StdStream::Stdout, b).unwrap();
            }
        });

        let expected: Vec<u8> = lines(0..LINES).concat();
        let mut seen = Vec::new();
        let mut polls = 0;
        loop {
            let finished = writer.is_finished();
            for record in cursor.read_new(&all()).unwrap() {
                seen.extend_from_slice(&record.data);
            }
            let last = read_logs(dir.path(), &tail(4)).unwrap();
            let joined: Vec<u8> = last.iter().flat_map(|r| r.data.iter().copied()).collect();
            // The newest records, whole and in order: a piece of what was written.
            assert!(
                joined.is_empty() || expected.windows(joined.len()).any(|w| w == joined),
                "{:?}",
                String::from_utf8_lossy(&joined)
            );
            polls += 1;
            if finished && !cursor.pending() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        writer.join().unwrap();
        assert_eq!(seen.len(), expected.len(), "after {polls} polls");
        assert!(seen == expected);
        assert_eq!(read_logs(dir.path(), &all()).unwrap().len(), 2 * LINES);
    }

    #[test]
    fn a_missing_directory_is_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(read_logs(&missing, &all()).unwrap().is_empty());
        assert!(read_logs(&missing, &tail(5)).unwrap().is_empty());
        let mut cursor = LogCursor::at_end(&missing).unwrap();
        assert!(cursor.read_new(&all()).unwrap().is_empty());
        let mut writer = LogWriter::open(&missing, LogLimits::default()).unwrap();
        write_lines(&mut writer, 0..1);
        assert_eq!(data(&cursor.read_new(&all()).unwrap()), lines(0..1));
    }

    #[test]
    fn times_outside_the_nanosecond_range_are_clamped_in_order() {
        let far_future = Utc.with_ymd_and_hms(3000, 1, 1, 0, 0, 0).unwrap();
        let far_past = Utc.with_ymd_and_hms(1000, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(to_nanos(far_future), i64::MAX);
        assert_eq!(to_nanos(far_past), i64::MIN);
        assert!(to_nanos(at(0)) > 0);
    }

    #[test]
    fn rotated_names_are_recognised_exactly() {
        assert_eq!(rotated_index("container.log.3"), Some(3));
        assert_eq!(rotated_index("container.log.0"), None);
        assert_eq!(rotated_index("container.log"), None);
        assert_eq!(rotated_index("container.log.new"), None);
        assert_eq!(rotated_index("container.log.+1"), None);
        assert_eq!(rotated_index("container.logs.1"), None);
    }
}
