//! The embedded backend's `--baseline raw`: the disk's fdatasync'd sequential ceiling.
//!
//! A minimal loop appends the very bytes the engine would write — records encoded by
//! [`horizons_log::record::encode`] from envelopes shaped like the bench's — to a plain file in
//! the same directory, calling `sync_data` after every `records_per_sync` records, the
//! engine's measured group-commit size. No engine, no async, no reads: what is left is the
//! disk's cost of durable appends at that cadence, the physical limit of any durable log here.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use horizons_bus::{Envelope, Topic};

use crate::payload;

/// What the raw loop achieved.
#[derive(Clone, Debug)]
pub struct RawResult {
    /// Records appended per second.
    pub msgs_per_sec: f64,
    /// Payload megabytes (10^6) per second: comparable with the bench's `mb_per_sec`.
    pub mb_per_sec: f64,
    /// Bytes on disk (records with their headers) per second, in MB.
    pub disk_mb_per_sec: f64,
    /// `sync_data` calls made.
    pub syncs: u64,
}

/// Appends `messages` records of `size`-byte payloads to `dir/raw-baseline.log`, fsyncing every
/// `records_per_sync` records. Blocking.
pub fn run(dir: &Path, topic: &Topic, messages: u64, size: usize, records_per_sync: u64) -> std::io::Result<RawResult> {
    let per_sync = records_per_sync.clamp(1, messages.max(1));
    // One sync's worth of records, encoded once; every record has the same length.
    let mut buf = Vec::new();
    let mut p = vec![0u8; size];
    for seq in 0..per_sync {
        payload::fill(seq, &mut p);
        let env = Envelope::new(topic.clone(), p.clone());
        horizons_log::record::encode(&mut buf, seq, env.timestamp, &env);
    }
    let record_len = buf.len() / per_sync as usize;

    let path = dir.join("raw-baseline.log");
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let started = Instant::now();
    let (mut written, mut syncs) = (0u64, 0u64);
    while written < messages {
        let n = per_sync.min(messages - written);
        file.write_all(&buf[..n as usize * record_len])?;
        file.sync_data()?;
        written += n;
        syncs += 1;
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(RawResult {
        msgs_per_sec: messages as f64 / secs,
        mb_per_sec: (messages as f64 * size as f64) / secs / 1e6,
        disk_mb_per_sec: (messages as f64 * record_len as f64) / secs / 1e6,
        syncs,
    })
}
