//! Group commit: one writer thread appends for every topic, and one fsync covers every publish
//! that arrived while the previous fsync ran.
//!
//! A publish is acknowledged (its reply sent) only after the fsync covering its records
//! returned. Publishers never wait for each other's fsyncs beyond the one in progress, so the
//! fsync rate (~350/s on the reference disk) bounds batches, not messages.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use horizons_bus::{now_millis, Envelope};
use tokio::sync::oneshot;

use crate::error::LogError;
use crate::log::TopicLog;

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

fn run(rx: flume::Receiver<WriterMsg>) {
    let mut batch: Vec<Append> = Vec::new();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
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
        let started = Instant::now();
        let now = now_millis();
        for a in &batch {
            let mut p = a.log.pending.lock();
            ranges.push(a.log.encode(&mut p, &a.envs, now));
            if !touched.iter().any(|t| Arc::ptr_eq(t, &a.log)) {
                touched.push(a.log.clone());
            }
        }
        let mut failed: Vec<(Arc<TopicLog>, String)> = Vec::new();
        for log in touched.drain(..) {
            let mut p = log.pending.lock();
            if let Err(e) = log.flush(&mut p) {
                tracing::error!(topic = %log.topic, error = %e, "append failed; publishes in this commit are rejected");
                log.discard_pending(&mut p);
                failed.push((log.clone(), e.to_string()));
            }
        }
        let records: usize = batch.iter().map(|a| a.envs.len()).sum();
        metrics::counter!("horizons_log_commits_total").increment(1);
        metrics::histogram!("horizons_log_commit_records").record(records as f64);
        metrics::histogram!("horizons_log_commit_seconds").record(started.elapsed().as_secs_f64());
        for (a, range) in batch.drain(..).zip(ranges.drain(..)) {
            let result = match failed.iter().find(|(l, _)| Arc::ptr_eq(l, &a.log)) {
                Some((_, why)) => Err(LogError::Io {
                    op: "appending to",
                    path: a.log.topic.as_str().into(),
                    source: std::io::Error::other(why.clone()),
                }),
                None => Ok(range),
            };
            let _ = a.reply.send(result);
        }
    }
}
