//! A topic's log: its segments, its two ends, reads by offset and time, retention.
//!
//! Only the engine's writer thread appends (see [`crate::writer`]); any number of readers read
//! concurrently up to the written end. Records are served once written (in the page cache),
//! not once fsynced, so a slow fsync delays publishers' acknowledgements but not consumers —
//! as a Kafka broker serves what it appended. The durable end trails it: what is below it
//! survives a machine crash. Consumer groups never save a position past the durable end (see
//! [`crate::group`]), so a machine crash that loses an unsynced tail cannot leave a group
//! skipping the records written at those offsets after the restart.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use horizons_bus::{Envelope, Millis, Topic};
use parking_lot::{Mutex, RwLock};

use crate::error::LogError;
use crate::record::{self, Record};
use crate::segment::{sync_dir, Segment, HEADER_LEN};

/// Where a reader is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Next offset to read.
    pub offset: u64,
    /// Segment base and byte position of `offset`, if known.
    hint: Option<(u64, u64)>,
}

impl Cursor {
    /// A cursor at `offset`.
    pub fn at(offset: u64) -> Self {
        Self { offset, hint: None }
    }
}

/// Writer-side state: bytes encoded but not yet written.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub buf: Vec<u8>,
    /// (offset, position in buf, length, append_ms) for the index.
    pub records: Vec<(u64, usize, usize, Millis)>,
    pub next_offset: u64,
    pub last_ms: Millis,
}

/// One topic's log.
#[derive(Debug)]
pub struct TopicLog {
    /// The topic.
    pub topic: Topic,
    dir: PathBuf,
    segment_bytes: u64,
    segments: RwLock<Vec<Arc<Segment>>>,
    /// One past the last offset written (readable).
    written_end: AtomicU64,
    /// One past the last offset fsynced.
    durable_end: AtomicU64,
    pub(crate) pending: Mutex<Pending>,
    notify: tokio::sync::watch::Sender<u64>,
}

impl TopicLog {
    /// Opens (recovering) or creates the log in `dir`.
    pub fn open(dir: &Path, topic: Topic, segment_bytes: u64) -> Result<TopicLog, LogError> {
        fs::create_dir_all(dir).map_err(LogError::io("creating topic directory", dir))?;
        let mut names: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(LogError::io("listing", dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        names.sort();
        let mut segments = Vec::with_capacity(names.len());
        for (i, p) in names.iter().enumerate() {
            let seg = Segment::open(p, &topic, i + 1 == names.len())?;
            if let Some(prev) = segments.last() {
                let prev: &Arc<Segment> = prev;
                let prev_end = prev.state.lock().end_offset;
                if seg.base < prev_end {
                    return Err(LogError::Corrupt {
                        path: p.clone(),
                        position: 0,
                        reason: format!(
                            "segment starts at offset {} inside the previous one (ends {prev_end})",
                            seg.base
                        ),
                    });
                }
            }
            segments.push(Arc::new(seg));
        }
        if segments.is_empty() {
            segments.push(Arc::new(Segment::create(dir, 0)?));
        }
        let last = segments.last().expect("one segment").state.lock().clone();
        let end = last.end_offset;
        let (notify, _) = tokio::sync::watch::channel(end);
        Ok(TopicLog {
            topic,
            dir: dir.to_path_buf(),
            segment_bytes,
            segments: RwLock::new(segments),
            written_end: AtomicU64::new(end),
            durable_end: AtomicU64::new(end),
            pending: Mutex::new(Pending { next_offset: end, last_ms: last.last_ms.unwrap_or(0), ..Default::default() }),
            notify,
        })
    }

    /// One past the last offset written: what readers can read.
    pub fn end(&self) -> u64 {
        self.written_end.load(Ordering::Acquire)
    }

    /// One past the last offset fsynced: what survives a machine crash.
    pub fn durable_end(&self) -> u64 {
        self.durable_end.load(Ordering::Acquire)
    }

    /// Records that everything below `end` is fsynced (the writer's sync thread only).
    pub(crate) fn mark_durable(&self, end: u64) {
        self.durable_end.fetch_max(end, Ordering::AcqRel);
    }

    /// The first offset still stored.
    pub fn start(&self) -> u64 {
        let segs = self.segments.read();
        let first = &segs[0];
        let st = first.state.lock();
        if st.end_offset > first.base {
            first.base
        } else {
            st.end_offset
        }
    }

    /// Bytes on disk.
    pub fn size_bytes(&self) -> u64 {
        self.segments.read().iter().map(|s| s.state.lock().size).sum()
    }

    /// A receiver that changes whenever the written end moves.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// Encodes records into the pending buffer (writer thread only). Returns their offsets.
    pub(crate) fn encode(&self, pending: &mut Pending, envs: &[Envelope], now: Millis) -> (u64, u64) {
        let first = pending.next_offset;
        let ms = now.max(pending.last_ms);
        pending.last_ms = ms;
        for env in envs {
            let at = pending.buf.len();
            record::encode(&mut pending.buf, pending.next_offset, ms, env);
            pending.records.push((pending.next_offset, at, pending.buf.len() - at, ms));
            pending.next_offset += 1;
        }
        (first, pending.next_offset)
    }

    /// Writes the pending buffer, rolling segments as needed, then publishes the new written
    /// end (writer thread only). Returns the segments written to, which the caller fsyncs
    /// before it calls [`TopicLog::mark_durable`] with [`TopicLog::end`].
    pub(crate) fn write_pending(&self, pending: &mut Pending) -> Result<Vec<Arc<Segment>>, LogError> {
        let mut written: Vec<Arc<Segment>> = Vec::new();
        if pending.records.is_empty() {
            return Ok(written);
        }
        let mut active = self.segments.read().last().expect("one segment").clone();
        let mut i = 0;
        while i < pending.records.len() {
            let size = active.state.lock().size;
            if size > HEADER_LEN && size >= self.segment_bytes {
                active = self.roll(pending.records[i].0)?;
                continue;
            }
            // Write as many records as fit in this segment in one call.
            let room = self.segment_bytes.saturating_sub(size).max(1);
            let start_pos = pending.records[i].1;
            let mut j = i;
            while j < pending.records.len() && (pending.records[j].1 + pending.records[j].2 - start_pos) as u64 <= room
            {
                j += 1;
            }
            if j == i {
                j = i + 1;
            }
            let end_pos = pending.records[j - 1].1 + pending.records[j - 1].2;
            write_at(&active, &pending.buf[start_pos..end_pos], size)?;
            if !written.last().is_some_and(|s| Arc::ptr_eq(s, &active)) {
                written.push(active.clone());
            }
            {
                let mut st = active.state.lock();
                for &(off, at, len, ms) in &pending.records[i..j] {
                    st.note(off, size + (at - start_pos) as u64, len as u64, ms);
                }
            }
            self.written_end.store(pending.records[j - 1].0 + 1, Ordering::Release);
            i = j;
        }
        pending.buf.clear();
        pending.records.clear();
        self.notify.send_replace(self.end());
        Ok(written)
    }

    fn roll(&self, base: u64) -> Result<Arc<Segment>, LogError> {
        let seg = Arc::new(Segment::create(&self.dir, base)?);
        self.segments.write().push(seg.clone());
        metrics::counter!("horizons_log_segments_rolled_total", "topic" => self.topic.to_string()).increment(1);
        Ok(seg)
    }

    /// Reads written records from `cursor` for about `max_bytes`, advancing it.
    pub fn read(&self, cursor: &mut Cursor, max_bytes: usize) -> Result<Vec<Record>, LogError> {
        let until = self.end();
        if cursor.offset >= until {
            return Ok(Vec::new());
        }
        let start = self.start();
        if cursor.offset < start {
            *cursor = Cursor::at(start);
        }
        let segs = self.segments.read().clone();
        let idx = match segs.partition_point(|s| s.base <= cursor.offset) {
            0 => 0,
            i => i - 1,
        };
        let seg = &segs[idx];
        let pos = match cursor.hint {
            Some((base, pos)) if base == seg.base => pos,
            _ => seg.state.lock().seek(cursor.offset).1,
        };
        let (records, next_pos) = seg.read(&self.topic, cursor.offset, until, pos, max_bytes)?;
        match records.last() {
            Some(r) => {
                cursor.offset = r.offset + 1;
                cursor.hint = Some((seg.base, next_pos));
            }
            None => {
                // Nothing left in this segment below `until`: move to the next one.
                if let Some(next) = segs.get(idx + 1) {
                    *cursor = Cursor { offset: cursor.offset.max(next.base), hint: Some((next.base, HEADER_LEN)) };
                    return self.read(cursor, max_bytes);
                }
            }
        }
        Ok(records)
    }

    /// The first offset stored at or after `ms` (append time), or the end.
    pub fn offset_for_time(&self, ms: Millis) -> Result<u64, LogError> {
        let segs = self.segments.read().clone();
        let Some(seg) = segs.iter().find(|s| s.state.lock().last_ms.is_some_and(|l| l >= ms)) else {
            return Ok(self.end());
        };
        let mut cursor = Cursor::at(seg.base.max(self.start()));
        loop {
            let batch = self.read(&mut cursor, 1 << 20)?;
            if batch.is_empty() {
                return Ok(self.end());
            }
            if let Some(r) = batch.iter().find(|r| r.append_ms >= ms) {
                return Ok(r.offset);
            }
        }
    }

    /// Deletes sealed segments older than `retention` or beyond `max_bytes`; returns how many.
    pub fn enforce_retention(
        &self,
        now: Millis,
        retention: Duration,
        max_bytes: Option<u64>,
    ) -> Result<usize, LogError> {
        let cutoff = now - retention.as_millis() as Millis;
        let mut removed = 0;
        loop {
            let victim = {
                let segs = self.segments.read();
                if segs.len() < 2 {
                    break;
                }
                let total: u64 = segs.iter().map(|s| s.state.lock().size).sum();
                let first = &segs[0];
                let st = first.state.lock();
                let too_old = st.last_ms.is_some_and(|l| l < cutoff);
                let too_big = max_bytes.is_some_and(|m| total > m);
                if too_old || too_big {
                    first.clone()
                } else {
                    break;
                }
            };
            self.segments.write().remove(0);
            fs::remove_file(&victim.path).map_err(LogError::io("deleting segment", &victim.path))?;
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
            metrics::counter!("horizons_log_segments_deleted_total", "topic" => self.topic.to_string())
                .increment(removed as u64);
        }
        Ok(removed)
    }
}

fn write_at(seg: &Segment, bytes: &[u8], pos: u64) -> Result<(), LogError> {
    use std::os::unix::fs::FileExt;
    seg.file.write_all_at(bytes, pos).map_err(LogError::io("writing segment", &seg.path))
}

impl TopicLog {
    /// Drops what could not be written, so offsets continue from the written end (writer only).
    pub(crate) fn discard_pending(&self, pending: &mut Pending) {
        pending.buf.clear();
        pending.records.clear();
        pending.next_offset = self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(log: &TopicLog, n: usize) -> Vec<Arc<Segment>> {
        let envs: Vec<Envelope> = (0..n).map(|i| Envelope::new(log.topic.clone(), vec![i as u8; 40])).collect();
        let mut p = log.pending.lock();
        log.encode(&mut p, &envs, 1);
        log.write_pending(&mut p).expect("written")
    }

    #[test]
    fn written_records_are_readable_before_they_are_durable() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = TopicLog::open(dir.path(), Topic::new("t").expect("a topic"), 1 << 20).expect("opened");
        assert_eq!(write(&log, 3).len(), 1);
        assert_eq!((log.end(), log.durable_end()), (3, 0));
        assert_eq!(log.read(&mut Cursor::at(0), 1 << 20).expect("read").len(), 3);
        log.mark_durable(log.end());
        assert_eq!(log.durable_end(), 3);
        // A write that rolls segments names each file it wrote to, for the sync thread.
        let small = TopicLog::open(&dir.path().join("small"), Topic::new("s").expect("a topic"), 400).expect("opened");
        let files = write(&small, 20);
        assert!(files.len() > 1, "{} files", files.len());
        assert_eq!(small.read(&mut Cursor::at(0), 1 << 20).expect("read").first().map(|r| r.offset), Some(0));
        assert_eq!(small.durable_end(), 0);
    }
}
