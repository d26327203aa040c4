//! Stress: `Harness::stress_len` messages from 8 batch producers to 4 acking members, nothing
//! lost, duplicates only where declared; prints the throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    declare, join, publish_batch, seq_payload_padded, subscribe, unique_topic, Harness, Member, MemberSpec, SeqTally,
    QUIET,
};
use crate::envelope::Envelope;
use crate::topology::{GroupSpec, TopicSpec};

/// Producers publishing concurrently.
const PRODUCERS: usize = 8;
/// Messages per `publish_batch`.
const BATCH: usize = 500;
/// Group members consuming concurrently, each with [`WORKERS`] tasks.
const MEMBERS: usize = 4;
const WORKERS: usize = 4;
/// Bytes per payload: the sequence number and filler.
const PAYLOAD: usize = 64;

/// How long a run of `n` messages may take: two minutes plus a millisecond per message.
pub(crate) fn stream_limit(n: usize) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(n as u64)
}

/// `h.stress_len()` messages (64 bytes, 64 keys) published by 8 tasks in batches of 500 while
/// 4 members of one group consume and ack them: every message is consumed, none twice unless
/// the backend declares `duplicates_without_failure`.
pub async fn stress<H: Harness>(h: &H) {
    let n = h.stress_len();
    assert!(n > 0, "conformance: stress_len must be positive");
    let backend = h.backend().await;
    let topic = unique_topic("stress");
    declare(&backend, TopicSpec::new(topic.clone()).partitions(4).group(GroupSpec::new("g"))).await;
    let tally = Arc::new(SeqTally::new(n, MEMBERS));
    let mut members = Vec::new();
    for m in 0..MEMBERS {
        let sub = Arc::new(subscribe(&backend, &topic, "g", 512).await);
        let spec = MemberSpec { workers: WORKERS, work: Duration::ZERO, tolerate_ack_errors: false };
        members.push(Member::spawn(sub, m, spec, tally.clone()));
    }

    let limit = stream_limit(n);
    let start = Instant::now();
    let batches = n.div_ceil(BATCH);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (backend, topic) = (backend.clone(), topic.clone());
            tokio::spawn(async move {
                for b in (p..batches).step_by(PRODUCERS) {
                    let msgs = (b * BATCH..((b + 1) * BATCH).min(n))
                        .map(|s| {
                            Envelope::new(topic.clone(), seq_payload_padded(s as u64, PAYLOAD))
                                .with_key(format!("k{}", s % 64))
                        })
                        .collect();
                    publish_batch(&backend, msgs).await;
                }
            })
        })
        .collect();
    for p in producers {
        join("a stress producer", limit, p).await;
    }
    let published = start.elapsed();
    let left = limit.saturating_sub(published).max(Duration::from_secs(60));
    tally.wait_all("stress: every published message must be consumed", left).await;
    let consumed = start.elapsed();
    tokio::time::sleep(QUIET).await;
    for m in members {
        m.stop().await;
    }
    tally.check_no_duplicates(&backend, "stress");
    let rate = |d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "conformance: stress on {}: {n} messages of {PAYLOAD} B; published in {published:.2?} ({:.0} msgs/s), \
         consumed end to end in {consumed:.2?} ({:.0} msgs/s); per member {:?}",
        backend.name(),
        rate(published),
        rate(consumed),
        tally.member_counts()
    );
}
