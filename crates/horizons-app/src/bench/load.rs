//! One bench run on a backend: producers publish while a consumer group consumes.
//!
//! - `producers` tasks each publish a contiguous share of the sequence numbers with
//!   `publish_batch`, `in_flight` batches outstanding each.
//! - `consumers` members of one group, each with `prefetch` deliveries, check every payload,
//!   record its latency and ack it.
//!
//! Every payload carries its sequence number and, in bytes 8..16, the nanoseconds since the
//! run's start at which its batch was built; latency is receive time minus that stamp, so it
//! covers batching, the durability wait, dispatch and delivery. The run ends when every
//! sequence number was received once (duplicates are counted, not waited for).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use horizons_bus::{Backend, Envelope, GroupSpec, SubscribeOptions, Topic, TopicSpec, Topology};
use tokio_util::sync::CancellationToken;

use crate::error::AppError;
use crate::payload;

/// How long the consumers may make no progress before the run is declared stalled.
const STALL: Duration = Duration::from_secs(30);

/// The shape of a run.
#[derive(Clone, Debug)]
pub struct Load {
    /// Messages to send.
    pub messages: u64,
    /// Payload bytes (at least 16).
    pub size: usize,
    /// Concurrent producer tasks.
    pub producers: usize,
    /// Messages per `publish_batch`.
    pub batch: usize,
    /// Batches in flight per producer.
    pub in_flight: usize,
    /// Members of the consumer group.
    pub consumers: usize,
    /// Prefetch of each member.
    pub prefetch: usize,
}

/// What a run measured.
#[derive(Debug)]
pub struct Measured {
    /// From the first publish to the last acknowledged one.
    pub publish: Duration,
    /// From the first delivery to the last.
    pub consume: Duration,
    /// From the first publish to the last delivery.
    pub end_to_end: Duration,
    /// Latency in microseconds.
    pub latency_us: Histogram<u64>,
    /// Deliveries of an already-received sequence number.
    pub duplicates: u64,
    /// Payloads that failed the check.
    pub corrupt: u64,
}

/// Shared by the consumers.
struct Progress {
    unique: AtomicU64,
    duplicates: AtomicU64,
    corrupt: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    seen: Vec<AtomicU64>,
}

impl Progress {
    /// Marks `seq` received; `true` the first time.
    fn mark(&self, seq: u64) -> bool {
        let bit = 1u64 << (seq % 64);
        self.seen[(seq / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
}

/// The topic and consumer group a run declares.
pub fn spec(topic: &Topic) -> TopicSpec {
    TopicSpec::new(topic.clone()).group(GroupSpec::new("bench"))
}

/// Runs `load` on `backend` in topic `topic`; `progress` gets the count of unique deliveries.
pub async fn run(
    backend: Arc<dyn Backend>,
    topic: &Topic,
    load: &Load,
    on_progress: impl Fn(u64),
) -> Result<Measured, AppError> {
    let spec = spec(topic);
    let group = spec.groups[0].name.to_string();
    let topology = Topology::new().topic(spec);
    backend.declare(&topology).await.map_err(AppError::bus("declaring the bench topic"))?;
    let p = Arc::new(Progress {
        unique: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        corrupt: AtomicU64::new(0),
        first_ns: AtomicU64::new(u64::MAX),
        last_ns: AtomicU64::new(0),
        seen: (0..load.messages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
    });
    let done = CancellationToken::new();
    let t0 = Instant::now();

    let mut consumers = tokio::task::JoinSet::new();
    for _ in 0..load.consumers.max(1) {
        let sub = backend
            .subscribe(topic, &group, SubscribeOptions { prefetch: load.prefetch.max(1) })
            .await
            .map_err(AppError::bus("subscribing the bench consumers"))?;
        let (p, done, n) = (p.clone(), done.clone(), load.messages);
        consumers.spawn(async move {
            let mut hist = latency_histogram();
            loop {
                let d = tokio::select! {
                    d = sub.next() => match d { Some(d) => d, None => break },
                    _ = done.cancelled() => break,
                };
                let now = t0.elapsed().as_nanos() as u64;
                match payload::check(&d.envelope.payload, payload::STAMP_RANGE) {
                    Some(seq) if seq < n => {
                        let sent = payload::read_stamp(&d.envelope.payload).unwrap_or(now);
                        hist.saturating_record(now.saturating_sub(sent) / 1000);
                        if p.mark(seq) {
                            p.first_ns.fetch_min(now, Ordering::Relaxed);
                            p.last_ns.fetch_max(now, Ordering::Relaxed);
                            if p.unique.fetch_add(1, Ordering::AcqRel) + 1 == n {
                                done.cancel();
                            }
                        } else {
                            p.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        p.corrupt.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Err(e) = d.ack().await {
                    tracing::warn!(error = %e, "bench ack failed");
                }
            }
            hist
        });
    }

    let publish_started = Instant::now();
    let mut producers = tokio::task::JoinSet::new();
    let share = load.messages.div_ceil(load.producers.max(1) as u64);
    for i in 0..load.producers.max(1) as u64 {
        let (lo, hi) = (i * share, ((i + 1) * share).min(load.messages));
        let (backend, topic, load) = (backend.clone(), topic.clone(), load.clone());
        producers.spawn(async move { produce(backend, topic, lo..hi, &load, t0).await });
    }
    let mut publish_end = None;
    let mut last = (0u64, Instant::now());
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !done.is_cancelled() {
        tokio::select! {
            r = producers.join_next(), if publish_end.is_none() => match r {
                Some(r) => r.map_err(|e| AppError::Task(format!("bench producer: {e}")))??,
                None => publish_end = Some(publish_started.elapsed()),
            },
            _ = done.cancelled() => {}
            _ = tick.tick() => {
                let n = p.unique.load(Ordering::Acquire);
                on_progress(n);
                if n != last.0 {
                    last = (n, Instant::now());
                } else if last.1.elapsed() > STALL {
                    done.cancel();
                    return Err(AppError::Bench(format!(
                        "consumers stalled: {n} of {} messages received, none in the last {STALL:?}",
                        load.messages
                    )));
                }
            }
        }
    }
    // Every message was consumed, so every publish was acknowledged; collect the stragglers.
    while let Some(r) = producers.join_next().await {
        r.map_err(|e| AppError::Task(format!("bench producer: {e}")))??;
    }
    let publish = publish_end.unwrap_or_else(|| publish_started.elapsed());
    on_progress(p.unique.load(Ordering::Acquire));

    let mut latency_us = latency_histogram();
    while let Some(h) = consumers.join_next().await {
        let h = h.map_err(|e| AppError::Task(format!("bench consumer: {e}")))?;
        latency_us.add(h).map_err(|e| AppError::Bench(format!("merging histograms: {e}")))?;
    }
    let ns = |a: &AtomicU64| Duration::from_nanos(a.load(Ordering::Relaxed));
    let started = publish_started - t0;
    Ok(Measured {
        publish,
        consume: ns(&p.last_ns).saturating_sub(ns(&p.first_ns)),
        end_to_end: ns(&p.last_ns).saturating_sub(started),
        latency_us,
        duplicates: p.duplicates.load(Ordering::Relaxed),
        corrupt: p.corrupt.load(Ordering::Relaxed),
    })
}

/// Microseconds from 1 µs to 10 minutes, 3 significant figures; larger values are clamped.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// Publishes sequence numbers `range`, `load.in_flight` batches at a time.
async fn produce(
    backend: Arc<dyn Backend>,
    topic: Topic,
    range: std::ops::Range<u64>,
    load: &Load,
    t0: Instant,
) -> Result<(), AppError> {
    let batch = load.batch.max(1) as u64;
    let starts = (range.start..range.end).step_by(batch as usize);
    let make = |start: u64| {
        let end = (start + batch).min(range.end);
        let stamp = t0.elapsed().as_nanos() as u64;
        let envs: Vec<Envelope> = (start..end)
            .map(|seq| {
                let mut p = vec![0u8; load.size];
                payload::fill(seq, &mut p);
                payload::stamp(&mut p, stamp);
                Envelope::new(topic.clone(), p)
            })
            .collect();
        let backend = backend.clone();
        async move { backend.publish_batch(envs).await }
    };
    let mut acks = futures::stream::iter(starts).map(make).buffer_unordered(load.in_flight.max(1));
    while let Some(r) = acks.next().await {
        r.map_err(AppError::bus("bench publish"))?;
    }
    Ok(())
}
