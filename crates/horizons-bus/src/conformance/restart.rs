//! Restart mid-stream: the backend (broker or embedded engine) is restarted while producers
//! publish and members consume; clients recover by themselves, on the same subscriptions, and
//! every message whose publish was acknowledged is consumed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stress::stream_limit;
use super::{
    declare, join, seq_payload_padded, subscribe, unique_topic, wait_until, within, Harness, Member, MemberSpec,
    SeqTally, QUIET,
};
use crate::backend::Backend;
use crate::envelope::{Envelope, Topic};
use crate::topology::{GroupSpec, TopicSpec};

const PRODUCERS: usize = 4;
const BATCH: usize = 250;
const MEMBERS: usize = 2;
/// How long a batch may keep failing before the client is judged not to recover.
const RECOVERY: Duration = Duration::from_secs(120);

/// What the producers report.
#[derive(Default)]
struct Published {
    /// Messages whose publish returned `Ok`.
    acked: AtomicUsize,
    /// Per sequence number: publish returned `Ok`.
    acked_seqs: Vec<AtomicBool>,
    /// Failed publish attempts, each retried with the same envelopes.
    failed_attempts: AtomicUsize,
}

/// Publishes `batches` (batch number `b` holds sequence numbers `b*BATCH..`), retrying each
/// failed batch with the same envelopes (same ids) until it is acknowledged.
async fn produce(backend: Arc<dyn Backend>, topic: Topic, batches: Vec<usize>, n: usize, out: Arc<Published>) {
    for b in batches {
        let range = b * BATCH..((b + 1) * BATCH).min(n);
        let msgs: Vec<Envelope> =
            range.clone().map(|s| Envelope::new(topic.clone(), seq_payload_padded(s as u64, 32))).collect();
        let mut failing_since: Option<Instant> = None;
        loop {
            let err = match tokio::time::timeout(Duration::from_secs(30), backend.publish_batch(msgs.clone())).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "publish_batch took longer than 30 s".to_string(),
            };
            out.failed_attempts.fetch_add(1, Ordering::Relaxed);
            let since = *failing_since.get_or_insert_with(Instant::now);
            assert!(
                since.elapsed() < RECOVERY,
                "conformance: a batch kept failing for {RECOVERY:?}: the client did not recover from the restart; \
                 last error: {err}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for s in range.clone() {
            out.acked_seqs[s].store(true, Ordering::Relaxed);
        }
        out.acked.fetch_add(range.len(), Ordering::Relaxed);
    }
}

/// `h.restart_stream_len()` messages published by 4 producers in batches of 250 (a failed batch
/// is retried with the same ids until `Ok`) while 2 members consume and ack on subscriptions made
/// once, up front. After about a third of the stream is acknowledged, `h.restart` restarts the
/// backend. Every acknowledged message must then be consumed at least once, within a bounded
/// time, on the same subscriptions; duplicates are allowed (at-least-once) and reported.
pub async fn restart_mid_stream<H: Harness>(h: &H) {
    let n = h.restart_stream_len();
    assert!(n > 0, "conformance: restart_stream_len must be positive");
    let backend = h.backend().await;
    let topic = unique_topic("restart_mid_stream");
    let group = GroupSpec::new("g").visibility_timeout(Duration::from_secs(10));
    declare(&backend, TopicSpec::new(topic.clone()).partitions(4).group(group)).await;

    let tally = Arc::new(SeqTally::new(n, MEMBERS));
    // The only subscriptions of the case: they must survive the restart.
    let mut members = Vec::new();
    for m in 0..MEMBERS {
        let sub = Arc::new(subscribe(&backend, &topic, "g", 256).await);
        let spec = MemberSpec { workers: 2, work: Duration::ZERO, tolerate_ack_errors: true };
        members.push(Member::spawn(sub, m, spec, tally.clone()));
    }

    let published =
        Arc::new(Published { acked_seqs: (0..n).map(|_| AtomicBool::new(false)).collect(), ..Published::default() });
    let limit = stream_limit(n) + RECOVERY;
    let start = Instant::now();
    let batches = n.div_ceil(BATCH);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let mine = (p..batches).step_by(PRODUCERS).collect();
            tokio::spawn(produce(backend.clone(), topic.clone(), mine, n, published.clone()))
        })
        .collect();

    let third = n / 3;
    wait_until("a third of the stream must be published before the restart", limit, || {
        published.acked.load(Ordering::Relaxed) >= third || producers.iter().any(|p| p.is_finished())
    })
    .await;
    if published.acked.load(Ordering::Relaxed) < third {
        // A producer stopped early: joining re-raises its panic.
        for p in producers {
            join("a producer", limit, p).await;
        }
        panic!("conformance: the producers stopped before a third of the stream was published");
    }
    let consumed_before = tally.distinct();
    let restart_started = Instant::now();
    within("Harness::restart", RECOVERY, h.restart(&backend)).await;
    let restart_took = restart_started.elapsed();
    println!(
        "conformance: restart_mid_stream: restarted {} after {} published / {consumed_before} consumed, in {restart_took:.2?}",
        backend.name(),
        published.acked.load(Ordering::Relaxed)
    );

    for p in producers {
        join("a producer", limit, p).await;
    }
    let unacked = published.acked_seqs.iter().filter(|a| !a.load(Ordering::Relaxed)).count();
    assert_eq!(unacked, 0, "conformance: every batch must be acknowledged eventually");
    let left = limit.saturating_sub(start.elapsed()).max(RECOVERY);
    tally.wait_all("every message acknowledged to a producer must be consumed after the restart", left).await;
    let done = start.elapsed();
    tokio::time::sleep(QUIET).await;
    for m in members {
        m.stop().await;
    }

    let (dups, first) = tally.duplicates();
    println!(
        "conformance: restart_mid_stream on {}: {n} messages consumed in {done:.2?}; {} failed publish attempts \
         retried; {} failed acks; {dups} duplicate(s) (allowed, at-least-once), first (seq, deliveries): {first:?}",
        backend.name(),
        published.failed_attempts.load(Ordering::Relaxed),
        tally.ack_errors()
    );
}
