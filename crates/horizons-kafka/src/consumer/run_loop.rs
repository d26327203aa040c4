//! A member's thread: settle what came back, fire timers, hand out deliveries up to the
//! prefetch, pause partitions that hold too much, commit on an interval, poll Kafka.
//!
//! Never holds the tracker lock across `poll`: librdkafka runs the rebalance and commit
//! callbacks inside `poll`, and they take the lock themselves.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use horizons_bus::Delivery;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::TopicPartitionList;

use super::{delivery, Ctx, MemberAcks, Shared};
use crate::tracker::Tp;

/// Records read per turn before the loop looks at settlements again.
const BURST: usize = 512;

pub(super) fn run(
    consumer: BaseConsumer<Ctx>,
    shared: Arc<Shared>,
    out: flume::Sender<Vec<Delivery>>,
    stop: Arc<AtomicBool>,
    prefetch: usize,
) {
    let (max_open, max_bytes) =
        (shared.bus.cfg.max_buffered_per_partition, shared.bus.cfg.max_buffered_bytes_per_partition);
    let commit_every = shared.bus.cfg.commit_interval;
    let mut last_commit = Instant::now();
    let mut paused: HashSet<Tp> = HashSet::new();
    // The partitions read from since the last turn (a member owns few: a Vec beats a set).
    let mut touched: Vec<Tp> = Vec::new();
    let mut last_error: Option<Instant> = None;
    let acks = Arc::new(MemberAcks(shared.cmd_tx.clone()));
    while !stop.load(Ordering::Acquire) && !out.is_disconnected() {
        let now = Instant::now();
        if shared.reassigned.swap(false, Ordering::AcqRel) {
            paused.clear();
        }
        let mut t = shared.tracker.lock();
        // One lock of the channel for everything that came back.
        for cmd in shared.cmd_rx.drain() {
            shared.apply(&consumer, &mut t, cmd, now);
        }
        t.fire_timers(now);
        let mut batch = Vec::new();
        while t.outstanding() < prefetch {
            let Some((slot, seq)) = t.next_delivery(now) else { break };
            batch.extend(delivery(&t, &acks, slot, seq));
        }
        let (mut pause, mut resume) = (Vec::new(), Vec::new());
        for tp in touched.drain(..) {
            let (open, bytes) = t.open_in(tp);
            if (open >= max_open || bytes >= max_bytes) && paused.insert(tp) {
                pause.push(tp);
            }
        }
        paused.retain(|tp| {
            let (open, bytes) = t.open_in(*tp);
            let keep = open > max_open / 2 || bytes > max_bytes / 2;
            if !keep {
                resume.push(*tp);
            }
            keep
        });
        let commits = if now.duration_since(last_commit) >= commit_every {
            last_commit = now;
            t.commits()
        } else {
            Vec::new()
        };
        let busy = t.outstanding() > 0 || !shared.cmd_rx.is_empty();
        let next_timer = t.next_timer();
        drop(t);
        if !batch.is_empty() {
            let _ = out.send(batch);
        }

        if !pause.is_empty() {
            tracing::debug!(group = %shared.group_id, partitions = ?pause, "buffer full: pausing");
            let _ = consumer.pause(&list(&shared, &pause));
        }
        if !resume.is_empty() {
            let _ = consumer.resume(&list(&shared, &resume));
        }
        if !commits.is_empty() {
            let tpl = shared.tp_list(&commits);
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(group = %shared.group_id, error = %e, "offset commit not sent; retried");
            }
        }
        let mut timeout = if !shared.cmd_rx.is_empty() {
            Duration::ZERO
        } else if busy {
            Duration::from_millis(2)
        } else {
            Duration::from_millis(50)
        };
        if let Some(at) = next_timer {
            timeout = timeout.min(at.saturating_duration_since(Instant::now()));
        }
        let mut wait = timeout;
        for _ in 0..BURST {
            match consumer.poll(wait) {
                Some(Ok(m)) => {
                    if let Some(tp) = shared.ingest(&consumer, &m) {
                        if !touched.contains(&tp) {
                            touched.push(tp);
                        }
                    }
                }
                Some(Err(e)) => {
                    // Broker outages surface here over and over; one line a few seconds is enough.
                    if last_error.is_none_or(|at| at.elapsed() > Duration::from_secs(5)) {
                        tracing::warn!(group = %shared.group_id, error = %e, "consumer error; librdkafka retries");
                        last_error = Some(Instant::now());
                    }
                    break;
                }
                None => break,
            }
            wait = Duration::ZERO;
        }
    }
    shutdown(consumer, &shared, &stop);
}

fn list(shared: &Shared, tps: &[Tp]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(tps.len());
    for (i, p) in tps {
        tpl.add_partition(&shared.topics[*i], *p);
    }
    tpl
}

/// Settles what already came back, then closes the consumer: its revocation callback commits
/// what is done and keeps the attempt counts of what is not.
fn shutdown(consumer: BaseConsumer<Ctx>, shared: &Arc<Shared>, stop: &AtomicBool) {
    {
        let mut t = shared.tracker.lock();
        let now = Instant::now();
        while let Ok(cmd) = shared.cmd_rx.try_recv() {
            shared.apply(&consumer, &mut t, cmd, now);
        }
    }
    shared.closing.store(true, Ordering::Release);
    if let Ok(assigned) = consumer.assignment() {
        // The same work as a revocation, done here so it also happens if close skips the callback.
        shared.on_revoke(&consumer, &assigned);
    }
    drop(consumer);
    let key = (shared.topic.clone(), shared.group.clone());
    let mut members = shared.bus.members.lock();
    if let Some(v) = members.get_mut(&key) {
        v.retain(|m| !std::ptr::eq(Arc::as_ptr(&m.stop), stop));
        if v.is_empty() {
            members.remove(&key);
        }
    }
}
