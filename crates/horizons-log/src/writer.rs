//! Group commit in two stages: one writer thread appends for every topic, and one sync thread
//! fsyncs what it wrote.
//!
//! The writer writes a batch (into the page cache), which makes it readable at once, and hands
//! it to the sync thread. One fsync per segment file covers every batch that arrived while
//! the previous fsync ran. A publish is acknowledged (its reply sent) only after the fsync
//! covering its records returned, and only then do its records count as durable
//! ([`TopicLog::durable_end`]). While an fsync is slow (the disk is busy with other files),
//! the writer goes on writing, so consumers are not held up by it; only acknowledgements are.
//!
//! An fsync that fails leaves the page cache in an unknown state (Linux may have dropped the
//! dirty pages and cleared the error). The engine then refuses every later append, naming the
//! failure, until it is reopened: recovery on open reads back what the files really hold.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use horizons_bus::{now_millis, Envelope};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::error::LogError;
use crate::log::TopicLog;
use crate::segment::Segment;

/// Bytes gathered into one commit at most, to bound latency.
const MAX_COMMIT_BYTES: usize = 32 << 20;

/// An append request: records for one topic and where to send their offsets once durable.
pub(crate) struct Append {
    pub log: Arc<TopicLog>,
    pub envs: Arc<[Envelope]>,
    pub reply: oneshot::Sender<Result<(u64, u64), LogError>>,
}

/// What the writer thread takes.
pub(crate) enum WriterMsg {
    Append(Append),
    /// Finish what is queued before this, then exit; later sends fail with `Closed`.
    Stop,
}

type Reply = oneshot::Sender<Result<(u64, u64), LogError>>;

/// What the writer hands the sync thread: written, not yet durable.
struct Written {
    /// Segment files written to (each fsynced once per round).
    files: Vec<Arc<Segment>>,
    /// Each log written, with its written end after this batch.
    ends: Vec<(Arc<TopicLog>, u64)>,
    /// Publishes to acknowledge, with their offsets.
    replies: Vec<(Reply, (u64, u64), Arc<TopicLog>)>,
    /// When the writer took the batch.
    started: Instant,
    records: usize,
}

/// The writer thread's handle.
pub(crate) struct Writer {
    pub tx: flume::Sender<WriterMsg>,
    pub thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn start() -> Writer {
        let (tx, rx) = flume::unbounded::<WriterMsg>();
        let thread = std::thread::Builder::new()
            .name("horizons-log-writer".into())
            .spawn(move || run(rx))
            .expect("spawning the writer thread");
        Writer { tx, thread: Some(thread) }
    }
}

fn io_error(log: &TopicLog, why: &str) -> LogError {
    LogError::Io { op: "appending to", path: log.topic.as_str().into(), source: std::io::Error::other(why.to_string()) }
}

fn run(rx: flume::Receiver<WriterMsg>) {
    // Set by the sync thread when an fsync failed: every later append is refused.
    let failed: Arc<Mutex<Option<String>>> = Arc::default();
    let (sync_tx, sync_rx) = flume::unbounded::<Written>();
    let syncer = {
        let failed = failed.clone();
        std::thread::Builder::new()
            .name("horizons-log-sync".into())
            .spawn(move || sync_loop(sync_rx, failed))
            .expect("spawning the sync thread")
    };
    let mut batch: Vec<Append> = Vec::new();
    let mut touched: Vec<Arc<TopicLog>> = Vec::new();
    let mut stopping = false;
    while !stopping {
        match rx.recv() {
            Ok(WriterMsg::Append(a)) => batch.push(a),
            Ok(WriterMsg::Stop) | Err(_) => break,
        }
        let mut bytes = 0usize;
        while bytes < MAX_COMMIT_BYTES {
            match rx.try_recv() {
                Ok(WriterMsg::Append(a)) => {
                    bytes += a.envs.iter().map(|e| e.payload.len() + 64).sum::<usize>();
                    batch.push(a);
                }
                Ok(WriterMsg::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if let Some(why) = failed.lock().clone() {
            for a in batch.drain(..) {
                let _ = a.reply.send(Err(io_error(&a.log, &why)));
            }
            continue;
        }
        let started = Instant::now();
        let now = now_millis();
        let mut ranges = Vec::with_capacity(batch.len());
        for a in &batch {
            let mut p = a.log.pending.lock();
            ranges.push(a.log.encode(&mut p, &a.envs, now));
            if !touched.iter().any(|t| Arc::ptr_eq(t, &a.log)) {
                touched.push(a.log.clone());
            }
        }
        let mut written = Written { files: Vec::new(), ends: Vec::new(), replies: Vec::new(), started, records: 0 };
        let mut refused: Vec<(Arc<TopicLog>, String)> = Vec::new();
        for log in touched.drain(..) {
            let mut p = log.pending.lock();
            match log.write_pending(&mut p) {
                Ok(files) => {
                    written.files.extend(files);
                    written.ends.push((log.clone(), log.end()));
                }
                Err(e) => {
                    tracing::error!(topic = %log.topic, error = %e, "append failed; publishes in this commit are rejected");
                    log.discard_pending(&mut p);
                    refused.push((log.clone(), e.to_string()));
                }
            }
        }
        for (a, range) in batch.drain(..).zip(ranges) {
            match refused.iter().find(|(l, _)| Arc::ptr_eq(l, &a.log)) {
                Some((_, why)) => {
                    let _ = a.reply.send(Err(io_error(&a.log, why)));
                }
                None => {
                    written.records += a.envs.len();
                    written.replies.push((a.reply, range, a.log));
                }
            }
        }
        if !written.replies.is_empty() {
            let _ = sync_tx.send(written);
        }
    }
    drop(sync_tx);
    let _ = syncer.join();
}

/// Fsyncs what the writer wrote, then marks it durable and acknowledges it.
fn sync_loop(rx: flume::Receiver<Written>, failed: Arc<Mutex<Option<String>>>) {
    let mut round: Vec<Written> = Vec::new();
    let mut files: Vec<Arc<Segment>> = Vec::new();
    while let Ok(w) = rx.recv() {
        round.push(w);
        round.extend(rx.try_iter());
        for w in &round {
            for f in &w.files {
                if !files.iter().any(|g| Arc::ptr_eq(g, f)) {
                    files.push(f.clone());
                }
            }
        }
        let mut error = failed.lock().clone();
        if error.is_none() {
            for f in files.drain(..) {
                if let Err(e) = f.file.sync_data() {
                    let why = format!("fsyncing {}: {e}", f.path.display());
                    tracing::error!(error = %why, "fsync failed; the log refuses appends until it is reopened");
                    *failed.lock() = Some(why.clone());
                    error = Some(why);
                    break;
                }
            }
        }
        files.clear();
        for w in round.drain(..) {
            if error.is_none() {
                for (log, end) in &w.ends {
                    log.mark_durable(*end);
                }
                metrics::counter!("horizons_log_commits_total").increment(1);
                metrics::histogram!("horizons_log_commit_records").record(w.records as f64);
                metrics::histogram!("horizons_log_commit_seconds").record(w.started.elapsed().as_secs_f64());
            }
            for (reply, range, log) in w.replies {
                let _ = reply.send(match &error {
                    None => Ok(range),
                    Some(why) => Err(io_error(&log, why)),
                });
            }
        }
    }
}
