//! The conformance suite: one set of cases every bus backend must pass.
//!
//! Modelled on Watermill's `pubsub/tests/test_pubsub.go` (one generic function per behaviour,
//! capabilities declared by the backend and checked both ways) and apalis' `generic_storage_test!`
//! (a macro that stamps out one test per case). A backend crate implements [`Harness`] and writes,
//! in an integration test:
//!
//! ```text
//! fn harness() -> MyHarness { MyHarness::start() }
//! horizons_bus::conformance_suite!(harness);
//! ```
//!
//! The calling crate needs `tokio` (features `macros`, `rt-multi-thread`) as a dev-dependency.
//!
//! Every case isolates itself with a unique topic ([`unique_topic`]), declares its topology
//! before publishing, bounds every wait so that a broken backend fails instead of hanging, and
//! panics with a message saying what was expected. Payloads start with an 8-byte big-endian
//! sequence number ([`seq_payload`], [`parse_seq`]), so a case can name exactly which messages
//! were lost or duplicated. The helpers here are public so backends can reuse them in their own
//! backend-specific tests.

mod basic;
mod declare;
mod groups;
mod ordering;
mod replay;
mod restart;
mod retries;
mod scheduling;
mod stress;
mod workers;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};

pub use self::basic::{
    ack_is_final, large_message, redelivery_after_drop, redelivery_after_visibility_timeout, round_trip,
};
pub use self::declare::{capabilities_are_declared_honestly, idempotent_topology, oversize_and_unknown_topic_rejected};
pub use self::groups::{concurrent_producers, members_split_the_work, two_groups_each_see_everything};
pub use self::ordering::{ordering_block_key_under_retries, ordering_requeue_keeps_throughput};
pub use self::replay::{replay_from_offset, replay_from_time, replay_time_range};
pub use self::restart::restart_mid_stream;
pub use self::retries::{dlq_list_and_redrive, malformed_payload_to_dlq, retries_then_dlq, retry_after_is_honoured};
pub use self::scheduling::{delayed_delivery, priorities};
pub use self::stress::stress;
pub use self::workers::{Member, MemberSpec, RunningRouter, SeqTally};

use crate::backend::{Backend, SubscribeOptions, Subscription};
use crate::delivery::{DeadLetter, Delivery};
use crate::envelope::{Envelope, Topic};
use crate::error::BusError;
use crate::topology::{TopicSpec, Topology};

/// What a backend's test crate provides to run the suite: a connected backend and a way to
/// restart the system under test.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// A backend connected to the system under test. Cases isolate themselves by unique topic
    /// names, so one broker (or one embedded data directory) may serve every case.
    async fn backend(&self) -> Arc<dyn Backend>;

    /// Stops the backend (the broker process, or the embedded engine) and starts it again, while
    /// the clients made by [`Harness::backend`] stay alive; they must recover by themselves.
    async fn restart(&self, backend: &Arc<dyn Backend>);

    /// Messages in [`restart_mid_stream`]'s stream (at least 50 000 for brokers).
    fn restart_stream_len(&self) -> usize {
        50_000
    }

    /// Messages in [`stress`] (at least 100 000).
    fn stress_len(&self) -> usize {
        100_000
    }
}

/// Expands into one `#[tokio::test]` per conformance case, each running the case against
/// `$make()`, a path to a `fn() -> H` where `H: Harness` (called once per test).
///
/// Invoke it once per test module; the tests are named after the cases.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@cases $make;
            round_trip,
            large_message,
            ack_is_final,
            redelivery_after_drop,
            redelivery_after_visibility_timeout,
            two_groups_each_see_everything,
            members_split_the_work,
            concurrent_producers,
            idempotent_topology,
            oversize_and_unknown_topic_rejected,
            capabilities_are_declared_honestly,
            retry_after_is_honoured,
            retries_then_dlq,
            dlq_list_and_redrive,
            malformed_payload_to_dlq,
            ordering_block_key_under_retries,
            ordering_requeue_keeps_throughput,
            priorities,
            delayed_delivery,
            replay_from_offset,
            replay_from_time,
            replay_time_range,
            stress,
            restart_mid_stream,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::conformance::$case(&$make()).await;
            }
        )*
    };
}

// Helpers shared by the cases. Every wait has a limit and panics saying what it waited for.

/// How long a case waits for one expected thing (a delivery, a dead letter, a backend call).
pub const WAIT: Duration = Duration::from_secs(30);

/// How long a case watches for something that must not happen (a duplicate, an acked message
/// coming back) before accepting that it did not.
pub const QUIET: Duration = Duration::from_secs(1);

/// A topic name no other case or run uses: `conf-<case>-<16 hex>`.
pub fn unique_topic(case: &str) -> Topic {
    let id = uuid::Uuid::now_v7().simple().to_string();
    // The tail of a UUIDv7 is random; the head is the timestamp shared by cases started together.
    let name = format!("conf-{case}-{}", &id[16..]);
    Topic::new(name.clone()).unwrap_or_else(|e| panic!("conformance: bad generated topic name {name:?}: {e}"))
}

/// A payload that is just the sequence number, 8 bytes big-endian.
pub fn seq_payload(seq: u64) -> Bytes {
    Bytes::copy_from_slice(&seq.to_be_bytes())
}

/// A payload of `len` bytes (at least 8): the sequence number, then a deterministic filler.
pub fn seq_payload_padded(seq: u64, len: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(len.max(8));
    b.put_u64(seq);
    for i in 8..len {
        b.put_u8((i.wrapping_mul(31) ^ seq as usize) as u8);
    }
    b.freeze()
}

/// The sequence number at the start of `payload`.
pub fn parse_seq(payload: &[u8]) -> u64 {
    match payload.get(..8) {
        Some(b) => u64::from_be_bytes(b.try_into().expect("eight bytes")),
        None => panic!(
            "conformance: payload of {} bytes has no 8-byte sequence number; was it truncated or replaced?",
            payload.len()
        ),
    }
}

/// A message on `topic` whose payload is `seq`.
pub fn seq_msg(topic: &Topic, seq: u64) -> Envelope {
    Envelope::new(topic.clone(), seq_payload(seq))
}

/// Messages for every sequence number in `seqs`.
pub fn seq_msgs(topic: &Topic, seqs: impl IntoIterator<Item = u64>) -> Vec<Envelope> {
    seqs.into_iter().map(|s| seq_msg(topic, s)).collect()
}

/// Runs `fut`, panicking if it takes longer than `limit`.
pub async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("conformance: {what} did not complete within {limit:?}"),
    }
}

/// Waits for a spawned task, re-raising its panic so the case fails with the task's message.
pub async fn join<T>(what: &str, limit: Duration, handle: tokio::task::JoinHandle<T>) -> T {
    match within(what, limit, handle).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("conformance: {what} was cancelled: {e}"),
    }
}

/// Declares `spec` (a topic with its groups), panicking on error.
pub async fn declare(backend: &Arc<dyn Backend>, spec: TopicSpec) {
    let name = spec.name.clone();
    let topology = Topology::new().topic(spec);
    within(&format!("declaring topic {name}"), WAIT, backend.declare(&topology))
        .await
        .unwrap_or_else(|e| panic!("conformance: declaring topic {name} failed: {}", crate::error_chain(&e)));
}

/// Publishes one message, panicking on error.
pub async fn publish(backend: &Arc<dyn Backend>, msg: Envelope) {
    let what = format!("publishing {} to {}", msg.id, msg.topic);
    within(&what, WAIT, backend.publish(msg))
        .await
        .unwrap_or_else(|e| panic!("conformance: {what} failed: {}", crate::error_chain(&e)));
}

/// Publishes a batch, panicking on error.
pub async fn publish_batch(backend: &Arc<dyn Backend>, msgs: Vec<Envelope>) {
    let what = format!("publishing a batch of {}", msgs.len());
    within(&what, WAIT, backend.publish_batch(msgs))
        .await
        .unwrap_or_else(|e| panic!("conformance: {what} failed: {}", crate::error_chain(&e)));
}

/// Joins `group` on `topic` as a new member with `prefetch`, panicking on error.
pub async fn subscribe(backend: &Arc<dyn Backend>, topic: &Topic, group: &str, prefetch: usize) -> Subscription {
    let what = format!("subscribing to {topic}/{group}");
    within(&what, WAIT, backend.subscribe(topic, group, SubscribeOptions { prefetch }))
        .await
        .unwrap_or_else(|e| panic!("conformance: {what} failed: {}", crate::error_chain(&e)))
}

/// The next delivery within `limit`, or `None`; panics if the backend closed the subscription.
pub async fn next_within(sub: &Subscription, limit: Duration, what: &str) -> Option<Delivery> {
    match tokio::time::timeout(limit, sub.next()).await {
        Ok(Some(d)) => Some(d),
        Ok(None) => panic!("conformance: the backend closed the subscription while waiting for {what}"),
        Err(_) => None,
    }
}

/// The next delivery; panics if none arrives within `limit`.
pub async fn expect_delivery(sub: &Subscription, limit: Duration, what: &str) -> Delivery {
    next_within(sub, limit, what).await.unwrap_or_else(|| panic!("conformance: no delivery within {limit:?}: {what}"))
}

/// The next delivery from any of `subs`, with the index of the member that got it.
pub async fn next_from_any(subs: &[&Subscription], limit: Duration, what: &str) -> Option<(usize, Delivery)> {
    let next = futures::future::select_all(subs.iter().map(|s| Box::pin(s.next())));
    match tokio::time::timeout(limit, next).await {
        Ok((Some(d), i, _)) => Some((i, d)),
        Ok((None, i, _)) => {
            panic!("conformance: the backend closed member {i}'s subscription while waiting for {what}")
        }
        Err(_) => None,
    }
}

/// Panics if any of `subs` gets a delivery within `period`. `what` says why none may come.
pub async fn expect_quiet(subs: &[&Subscription], period: Duration, what: &str) {
    if let Some((i, d)) = next_from_any(subs, period, what).await {
        panic!(
            "conformance: {what}, but member {i} got message {} (seq {:?}, attempt {})",
            d.envelope.id,
            d.envelope.payload.get(..8).map(parse_seq),
            d.attempt
        );
    }
}

/// How often each sequence number was delivered.
pub type SeqCounts = BTreeMap<u64, u32>;

/// Receives from `sub`, acking each delivery, until every sequence number in `expected` arrived
/// at least once. Panics on a timeout (naming the missing ones), on a sequence number outside
/// `expected`, or on a failed ack.
pub async fn consume_acked(sub: &Subscription, expected: &BTreeSet<u64>, limit: Duration, what: &str) -> SeqCounts {
    let deadline = Instant::now() + limit;
    let mut counts = SeqCounts::new();
    while expected.iter().any(|s| !counts.contains_key(s)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(d) = next_within(sub, left, what).await else {
            let missing: Vec<u64> = expected.iter().filter(|s| !counts.contains_key(s)).copied().collect();
            panic!(
                "conformance: {what}: {} of {} messages not delivered within {limit:?}; missing seqs (first 20): {:?}",
                missing.len(),
                expected.len(),
                &missing[..missing.len().min(20)]
            );
        };
        let seq = parse_seq(&d.envelope.payload);
        assert!(expected.contains(&seq), "conformance: {what}: got seq {seq}, which was never published here");
        *counts.entry(seq).or_default() += 1;
        ack(d, what).await;
    }
    counts
}

/// Acks `d`, panicking on error or if the ack takes longer than [`WAIT`].
pub async fn ack(d: Delivery, what: &str) {
    let id = d.envelope.id;
    within(&format!("acking {id} ({what})"), WAIT, d.ack())
        .await
        .unwrap_or_else(|e| panic!("conformance: acking {id} failed ({what}): {e}"));
}

/// Panics if a sequence number was delivered more than once, unless the backend declares
/// `duplicates_without_failure`. Only for runs without restarts or lease expiries.
pub fn check_no_duplicates(backend: &Arc<dyn Backend>, counts: &SeqCounts, what: &str) {
    let dups: Vec<(u64, u32)> = counts.iter().filter(|(_, n)| **n > 1).map(|(s, n)| (*s, *n)).collect();
    if dups.is_empty() {
        return;
    }
    if backend.capabilities().duplicates_without_failure {
        println!("conformance: {what}: {} duplicate(s), allowed by duplicates_without_failure", dups.len());
        return;
    }
    panic!(
        "conformance: {what}: {} message(s) delivered more than once without any failure, and the backend does \
         not declare duplicates_without_failure; (seq, deliveries), first 20: {:?}",
        dups.len(),
        &dups[..dups.len().min(20)]
    );
}

/// Polls `cond` every 20 ms until it holds; panics after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "conformance: {what}: not reached within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the dead-letter queue of `group` until it holds at least `n` entries; returns them.
pub async fn wait_for_dead_letters(
    backend: &Arc<dyn Backend>,
    topic: &Topic,
    group: &str,
    n: usize,
) -> Vec<DeadLetter> {
    let deadline = Instant::now() + WAIT;
    loop {
        let listed = within("dlq_list", WAIT, backend.dlq_list(topic, group, n + 100))
            .await
            .unwrap_or_else(|e| panic!("conformance: dlq_list({topic}, {group}) failed: {e}"));
        if listed.len() >= n {
            return listed;
        }
        assert!(
            Instant::now() < deadline,
            "conformance: expected {n} dead letter(s) in {topic}/{group} within {WAIT:?}, found {}",
            listed.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Panics unless `result` is [`BusError::Unsupported`]; `what` names the request.
pub fn expect_unsupported<T>(backend: &Arc<dyn Backend>, what: &str, result: Result<T, BusError>) {
    match result {
        Err(BusError::Unsupported { .. }) => {}
        Err(e) => panic!(
            "conformance: {} declares no support for {what}, so asking for it must fail with BusError::Unsupported, \
             got a different error: {e}",
            backend.name()
        ),
        Ok(_) => panic!(
            "conformance: {} declares no support for {what}, but asking for it succeeded; declare the capability \
             or reject the request with BusError::Unsupported",
            backend.name()
        ),
    }
}
