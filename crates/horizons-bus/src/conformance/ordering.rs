//! Per-key ordering under retries: `BlockKey` keeps publish order per key across retries with
//! several members and concurrency; `Requeue` lets later messages of a key overtake a retry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::{declare, parse_seq, publish_batch, seq_msg, unique_topic, within, Harness, RunningRouter, QUIET, WAIT};
use crate::envelope::Envelope;
use crate::retry::{HandlerError, RetryPolicy};
use crate::router::{handler_fn, Context, Router};
use crate::topology::{GroupSpec, OrderingMode, TopicSpec};

#[derive(Default)]
struct KeyLog {
    /// Handlers running per key right now.
    in_flight: BTreeMap<String, usize>,
    /// Messages delivered while another message of their key was being handled.
    overlaps: Vec<String>,
    /// Successfully handled sequence numbers per key, in order of success.
    done: BTreeMap<String, Vec<u64>>,
    /// Distinct sequence numbers handled successfully.
    distinct: BTreeSet<u64>,
}

/// Which attempts fail: every fifth message once, every seventh twice.
fn planned_failure(seq: u64, attempt: u32) -> bool {
    (seq % 5 == 2 && attempt == 1) || (seq % 7 == 3 && attempt <= 2)
}

/// `OrderingMode::BlockKey`, 8 keys × 25 messages, two members with 4 concurrent handlers each,
/// and planned retryable failures: no message is delivered while another of its key is being
/// handled, and each key's messages succeed in publish order. Skipped (the capabilities case
/// checks the refusal) where block-key ordering is not declared.
pub async fn ordering_block_key_under_retries<H: Harness>(h: &H) {
    const KEYS: u64 = 8;
    const N: u64 = 200;
    let backend = h.backend().await;
    if !backend.capabilities().block_key_ordering {
        println!(
            "conformance: ordering_block_key_under_retries skipped: {} declares no block-key ordering",
            backend.name()
        );
        return;
    }
    let topic = unique_topic("ordering_block_key");
    let policy = RetryPolicy::fast(5);
    let group = GroupSpec::new("g").ordering(OrderingMode::BlockKey).retry(policy.clone());
    declare(&backend, TopicSpec::new(topic.clone()).partitions(4).group(group)).await;
    let msgs = (0..N).map(|s| seq_msg(&topic, s).with_key(format!("key-{}", s % KEYS))).collect();
    publish_batch(&backend, msgs).await;

    let log = Arc::new(Mutex::new(KeyLog::default()));
    let handler = {
        let log = log.clone();
        handler_fn(move |env: Envelope, cx: Context| {
            let log = log.clone();
            async move {
                let key = env.key.clone().unwrap_or_default();
                let seq = parse_seq(&env.payload);
                {
                    let mut l = log.lock();
                    let running = l.in_flight.entry(key.clone()).or_default();
                    *running += 1;
                    if *running > 1 {
                        l.overlaps.push(format!("seq {seq} (attempt {}) of {key}", cx.attempt));
                    }
                }
                // Widens the window in which a second message of the key would overlap.
                tokio::time::sleep(Duration::from_millis(2)).await;
                let mut l = log.lock();
                *l.in_flight.entry(key.clone()).or_default() -= 1;
                if planned_failure(seq, cx.attempt) {
                    return Err(HandlerError::retryable(format!("planned failure of seq {seq}")));
                }
                l.done.entry(key).or_default().push(seq);
                l.distinct.insert(seq);
                Ok(())
            }
        })
    };
    let router = Router::new(backend.clone()).route(topic.clone(), "g", policy.clone(), 4, handler.clone()).route(
        topic.clone(),
        "g",
        policy,
        4,
        handler,
    );
    let mut router = RunningRouter::start(router);
    router
        .wait_until("every message must be handled successfully", Duration::from_secs(60), || {
            log.lock().distinct.len() == N as usize
        })
        .await;
    tokio::time::sleep(QUIET).await;
    router.stop().await;

    let dead = within("dlq_list", WAIT, backend.dlq_list(&topic, "g", 10)).await;
    assert!(dead.as_ref().is_ok_and(|d| d.is_empty()), "conformance: nothing should be dead-lettered: {dead:?}");
    let l = log.lock();
    assert!(
        l.overlaps.is_empty(),
        "conformance: BlockKey delivered {} message(s) while another of the same key was in flight: {:?}",
        l.overlaps.len(),
        &l.overlaps[..l.overlaps.len().min(10)]
    );
    let dups_allowed = backend.capabilities().duplicates_without_failure;
    for (key, seqs) in &l.done {
        let mut first = Vec::new();
        for s in seqs {
            if !first.contains(s) {
                first.push(*s);
            }
        }
        assert!(
            dups_allowed || first.len() == seqs.len(),
            "conformance: {key} handled twice without failure: {seqs:?}"
        );
        assert!(
            first.windows(2).all(|w| w[0] < w[1]),
            "conformance: BlockKey must keep publish order per key across retries; {key} succeeded in order {first:?}"
        );
    }
}

/// `OrderingMode::Requeue`, one key, one member handling one message at a time: the first
/// message asks to be retried after 3 s, and the 19 after it are handled meanwhile instead of
/// waiting behind it.
pub async fn ordering_requeue_keeps_throughput<H: Harness>(h: &H) {
    const N: u64 = 20;
    let backend = h.backend().await;
    let topic = unique_topic("ordering_requeue");
    let policy = RetryPolicy::fast(5);
    let group = GroupSpec::new("g").ordering(OrderingMode::Requeue).retry(policy.clone());
    declare(&backend, TopicSpec::new(topic.clone()).group(group)).await;
    publish_batch(&backend, (0..N).map(|s| seq_msg(&topic, s).with_key("one-key")).collect()).await;

    let done = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let done = done.clone();
        handler_fn(move |env: Envelope, cx: Context| {
            let done = done.clone();
            async move {
                let seq = parse_seq(&env.payload);
                if seq == 0 && cx.attempt == 1 {
                    return Err(HandlerError::RetryAfter(Duration::from_secs(3), "come back in 3 s".into()));
                }
                done.lock().push(seq);
                Ok(())
            }
        })
    };
    let mut router = RunningRouter::start(Router::new(backend.clone()).route(topic.clone(), "g", policy, 1, handler));
    router
        .wait_until("every message must be handled", WAIT, || {
            done.lock().iter().copied().collect::<BTreeSet<_>>().len() == N as usize
        })
        .await;
    router.stop().await;
    let order = done.lock().clone();
    let zero = order.iter().position(|&s| s == 0).unwrap_or(usize::MAX);
    let before_zero: BTreeSet<u64> = order[..zero.min(order.len())].iter().copied().collect();
    assert!(
        before_zero.len() == N as usize - 1,
        "conformance: with Requeue, messages after a retried one must go ahead of it; success order was {order:?}"
    );
}
