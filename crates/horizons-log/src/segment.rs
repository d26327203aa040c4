//! Segment files: a header followed by records; recovery scans them on open.
//!
//! ```text
//! header (32 bytes) = magic "HZNLOG\r\n" | u32 version | u32 reserved | u64 base_offset
//!                     | u32 crc32c(previous 24 bytes) | u32 reserved
//! ```
//! A segment holds consecutive offsets starting at its base. Only the last segment of a topic
//! is written to; on open its torn tail (whatever follows the last valid record) is truncated.
//! A sealed segment that fails validation stops the engine from opening: its records were
//! acknowledged, so silently dropping them is not an option.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use horizons_bus::{Millis, Topic};
use parking_lot::Mutex;

use crate::error::LogError;
use crate::record::{decode, Decoded, Record};

/// File magic.
pub const MAGIC: &[u8; 8] = b"HZNLOG\r\n";
/// The on-disk version this build writes and reads.
pub const VERSION: u32 = 1;
/// Header length.
pub const HEADER_LEN: u64 = 32;
/// A sparse index entry is kept every this many bytes.
const INDEX_EVERY: u64 = 64 * 1024;
/// Read size while scanning.
const SCAN_CHUNK: usize = 4 << 20;

/// Mutable facts about a segment, updated by the writer.
#[derive(Debug, Clone, Default)]
pub struct SegmentState {
    /// One past the last offset stored.
    pub end_offset: u64,
    /// Bytes in the file.
    pub size: u64,
    /// Append time of the first record.
    pub first_ms: Option<Millis>,
    /// Append time of the last record.
    pub last_ms: Option<Millis>,
    /// Sparse (offset, byte position) pairs, ascending.
    pub index: Vec<(u64, u64)>,
}

impl SegmentState {
    /// Records that a record at `offset` starts at `pos` and was appended at `ms`.
    pub fn note(&mut self, offset: u64, pos: u64, len: u64, ms: Millis) {
        if self.index.last().is_none_or(|&(_, p)| pos >= p + INDEX_EVERY) {
            self.index.push((offset, pos));
        }
        self.first_ms.get_or_insert(ms);
        self.last_ms = Some(ms);
        self.end_offset = offset + 1;
        self.size = pos + len;
    }

    /// The byte position to start scanning from to find `offset`.
    pub fn seek(&self, offset: u64) -> (u64, u64) {
        match self.index.partition_point(|&(o, _)| o <= offset) {
            0 => (u64::MAX, HEADER_LEN),
            i => self.index[i - 1],
        }
    }
}

/// One segment file.
#[derive(Debug)]
pub struct Segment {
    /// Its path.
    pub path: PathBuf,
    /// First offset it holds.
    pub base: u64,
    /// The open file (read + append).
    pub file: File,
    /// What the writer knows about it.
    pub state: Mutex<SegmentState>,
}

/// The file name of the segment starting at `base`.
pub fn file_name(base: u64) -> String {
    format!("{base:020}.log")
}

impl Segment {
    /// Creates a new empty segment (header written and synced).
    pub fn create(dir: &Path, base: u64) -> Result<Segment, LogError> {
        let path = dir.join(file_name(base));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(LogError::io("creating segment", &path))?;
        let mut h = Vec::with_capacity(HEADER_LEN as usize);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&base.to_le_bytes());
        let crc = crc32c::crc32c(&h);
        h.extend_from_slice(&crc.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        file.write_all(&h).map_err(LogError::io("writing segment header", &path))?;
        file.sync_all().map_err(LogError::io("syncing segment", &path))?;
        sync_dir(dir)?;
        let state = SegmentState { end_offset: base, size: HEADER_LEN, ..Default::default() };
        Ok(Segment { path, base, file, state: Mutex::new(state) })
    }

    /// Opens and validates an existing segment. With `last`, a torn tail is truncated; otherwise
    /// any invalid byte is an error.
    pub fn open(path: &Path, topic: &Topic, last: bool) -> Result<Segment, LogError> {
        let file =
            OpenOptions::new().read(true).write(true).open(path).map_err(LogError::io("opening segment", path))?;
        let len = file.metadata().map_err(LogError::io("reading metadata of", path))?.len();
        let corrupt = |position: u64, reason: String| LogError::Corrupt { path: path.to_path_buf(), position, reason };
        if len < HEADER_LEN {
            return Err(corrupt(0, format!("file is {len} bytes, shorter than the {HEADER_LEN}-byte header")));
        }
        let mut h = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut h, 0).map_err(LogError::io("reading segment header", path))?;
        if &h[0..8] != MAGIC {
            return Err(corrupt(0, "not a horizons segment (bad magic)".into()));
        }
        let crc = u32::from_le_bytes(h[24..28].try_into().expect("4 bytes"));
        if crc32c::crc32c(&h[0..24]) != crc {
            return Err(corrupt(0, "segment header checksum mismatch".into()));
        }
        let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(LogError::UnknownVersion { path: path.to_path_buf(), found: version, supported: VERSION });
        }
        let base = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
        let named = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok());
        if named != Some(base) {
            return Err(corrupt(16, format!("header base offset {base} does not match the file name")));
        }
        let mut state = SegmentState { end_offset: base, size: HEADER_LEN, ..Default::default() };
        let mut pos = HEADER_LEN;
        let mut expected = base;
        'scan: while pos < len {
            let want = SCAN_CHUNK.min((len - pos) as usize);
            let mut buf = vec![0u8; want];
            file.read_exact_at(&mut buf, pos).map_err(LogError::io("reading segment", path))?;
            let buf = Bytes::from(buf);
            let mut at = 0usize;
            loop {
                let problem = match decode(&buf.slice(at..), topic) {
                    Decoded::Record(r, n) if r.offset == expected => {
                        state.note(r.offset, pos + at as u64, n as u64, r.append_ms);
                        expected += 1;
                        at += n;
                        continue;
                    }
                    Decoded::Record(r, _) => format!("record offset {} where {expected} was expected", r.offset),
                    Decoded::Incomplete if pos + (at as u64) < len && want == SCAN_CHUNK && at > 0 => {
                        // The record continues past this chunk: read on from its start.
                        pos += at as u64;
                        continue 'scan;
                    }
                    Decoded::Incomplete if pos + (at as u64) >= len => break 'scan,
                    Decoded::Incomplete => "record runs past the end of the file".to_string(),
                    Decoded::Corrupt(why) => why,
                };
                let at_pos = pos + at as u64;
                if !last {
                    return Err(corrupt(at_pos, problem));
                }
                tracing::warn!(path = %path.display(), position = at_pos, dropped_bytes = len - at_pos, %problem,
                    "truncating torn tail of the last segment");
                file.set_len(at_pos).map_err(LogError::io("truncating segment", path))?;
                file.sync_all().map_err(LogError::io("syncing segment", path))?;
                break 'scan;
            }
        }
        Ok(Segment { path: path.to_path_buf(), base, file, state: Mutex::new(state) })
    }

    /// Reads records from `pos` for about `max_bytes`, returning those with offsets in
    /// `[from, until)` and the position after the last record returned.
    pub fn read(
        &self,
        topic: &Topic,
        from: u64,
        until: u64,
        pos: u64,
        max_bytes: usize,
    ) -> Result<(Vec<Record>, u64), LogError> {
        let size = self.state.lock().size;
        let mut out = Vec::new();
        let mut pos = pos;
        let mut want = max_bytes.max(64 * 1024);
        while pos < size {
            let n = want.min((size - pos) as usize);
            let mut buf = vec![0u8; n];
            self.file.read_exact_at(&mut buf, pos).map_err(LogError::io("reading segment", &self.path))?;
            let buf = Bytes::from(buf);
            let mut at = 0usize;
            let mut progressed = false;
            loop {
                match decode(&buf.slice(at..), topic) {
                    Decoded::Record(r, len) => {
                        if r.offset >= until {
                            return Ok((out, pos + at as u64));
                        }
                        at += len;
                        progressed = true;
                        if r.offset >= from {
                            out.push(r);
                        }
                    }
                    Decoded::Incomplete => break,
                    Decoded::Corrupt(reason) => {
                        return Err(LogError::Corrupt { path: self.path.clone(), position: pos + at as u64, reason })
                    }
                }
            }
            pos += at as u64;
            if !out.is_empty() {
                break;
            }
            if !progressed {
                // A record larger than the read: read more at once.
                want = want.saturating_mul(2).min(crate::record::MAX_BODY * 2);
            }
        }
        Ok((out, pos))
    }
}

/// Fsyncs a directory so that created or removed entries survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(LogError::io("syncing directory", dir))
}
