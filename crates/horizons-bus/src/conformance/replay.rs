//! Replay: a group rewound to an offset or a time gets settled messages again, on its live
//! members. Skipped where the variant is not declared; `capabilities_are_declared_honestly`
//! checks the refusal there.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::{
    check_no_duplicates, consume_acked, declare, expect_quiet, publish_batch, seq_msgs, subscribe, unique_topic,
    within, Harness, QUIET, WAIT,
};
use crate::backend::{Backend, ReplayFrom};
use crate::envelope::{now_millis, Topic};
use crate::topology::{GroupSpec, TopicSpec};

async fn replay(backend: &Arc<dyn Backend>, topic: &Topic, from: ReplayFrom) {
    let replay = backend
        .replay()
        .unwrap_or_else(|| panic!("conformance: replay is declared in capabilities() but backend.replay() is None"));
    within("replay", WAIT, replay.replay(topic, "g", from))
        .await
        .unwrap_or_else(|e| panic!("conformance: replay({topic}, g, {from:?}) failed: {e}"));
}

/// After all 20 messages were consumed and acked, `replay(Offset(0))` delivers all 20 again to
/// the live member, and then nothing more.
pub async fn replay_from_offset<H: Harness>(h: &H) {
    let backend = h.backend().await;
    if !backend.capabilities().replay_offset {
        println!("conformance: replay_from_offset skipped: {} declares no replay_offset", backend.name());
        return;
    }
    let topic = unique_topic("replay_offset");
    declare(&backend, TopicSpec::new(topic.clone()).group(GroupSpec::new("g"))).await;
    publish_batch(&backend, seq_msgs(&topic, 0..20)).await;
    let all: BTreeSet<u64> = (0..20).collect();
    let sub = subscribe(&backend, &topic, "g", 32).await;
    consume_acked(&sub, &all, WAIT, "the first pass").await;
    expect_quiet(&[&sub], Duration::from_millis(300), "everything was acked before the replay").await;

    replay(&backend, &topic, ReplayFrom::Offset(0)).await;
    let counts = consume_acked(&sub, &all, WAIT, "a replay from offset 0 must deliver every message again").await;
    check_no_duplicates(&backend, &counts, "replay from offset 0");
    expect_quiet(&[&sub], QUIET, "the replay delivered every message once").await;
}

/// Batch A (10 messages) is consumed, a time T is taken with 100 ms on each side, batch B (10)
/// is consumed; `replay(Time(T))` delivers exactly batch B again.
pub async fn replay_from_time<H: Harness>(h: &H) {
    let backend = h.backend().await;
    if !backend.capabilities().replay_time {
        println!("conformance: replay_from_time skipped: {} declares no replay_time", backend.name());
        return;
    }
    let topic = unique_topic("replay_time");
    declare(&backend, TopicSpec::new(topic.clone()).group(GroupSpec::new("g"))).await;
    let sub = subscribe(&backend, &topic, "g", 32).await;
    let (first, second): (BTreeSet<u64>, BTreeSet<u64>) = ((0..10).collect(), (10..20).collect());
    publish_batch(&backend, seq_msgs(&topic, first.iter().copied())).await;
    consume_acked(&sub, &first, WAIT, "batch A").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = now_millis();
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish_batch(&backend, seq_msgs(&topic, second.iter().copied())).await;
    consume_acked(&sub, &second, WAIT, "batch B").await;
    expect_quiet(&[&sub], Duration::from_millis(300), "everything was acked before the replay").await;

    replay(&backend, &topic, ReplayFrom::Time(t)).await;
    // consume_acked panics on anything outside batch B, so a message of batch A fails here.
    let counts = consume_acked(&sub, &second, WAIT, "a replay from time T must deliver batch B again").await;
    check_no_duplicates(&backend, &counts, "replay from a time");
    expect_quiet(&[&sub], QUIET, "a replay from a time between the batches must deliver only the second batch").await;
}

/// Batches A, B and C (10 messages each) are consumed with a time taken between them:
/// `replay_range(T1, T2)` says the range holds 10 and delivers exactly batch B again; A and C,
/// settled before, stay settled; batch D published afterwards is delivered once.
pub async fn replay_time_range<H: Harness>(h: &H) {
    let backend = h.backend().await;
    if !backend.capabilities().replay_time {
        println!("conformance: replay_time_range skipped: {} declares no replay_time", backend.name());
        return;
    }
    let topic = unique_topic("replay_range");
    declare(&backend, TopicSpec::new(topic.clone()).group(GroupSpec::new("g"))).await;
    let sub = subscribe(&backend, &topic, "g", 32).await;
    let batch = |r: std::ops::Range<u64>| -> BTreeSet<u64> { r.collect() };
    let (a, b, c, d) = (batch(0..10), batch(10..20), batch(20..30), batch(30..35));
    let mut marks = Vec::new();
    for (i, set) in [&a, &b, &c].into_iter().enumerate() {
        publish_batch(&backend, seq_msgs(&topic, set.iter().copied())).await;
        consume_acked(&sub, set, WAIT, &format!("batch {}", ["A", "B", "C"][i])).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        marks.push(now_millis());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_quiet(&[&sub], Duration::from_millis(300), "everything was acked before the replay").await;

    let replay = backend.replay().expect("conformance: replay_time is declared but backend.replay() is None");
    let n = within("replay_range", WAIT, replay.replay_range(&topic, "g", ReplayFrom::Time(marks[0]), marks[1]))
        .await
        .unwrap_or_else(|e| panic!("conformance: replay_range({topic}, g, T1, T2) failed: {e}"));
    assert_eq!(
        n, 10,
        "conformance: replay_range between batches A/B and B/C must say the range holds batch B's 10 messages"
    );
    // consume_acked panics on anything outside batch B, so a message of A or C fails here.
    let counts = consume_acked(&sub, &b, WAIT, "a bounded replay must deliver batch B again").await;
    check_no_duplicates(&backend, &counts, "bounded replay");
    expect_quiet(&[&sub], QUIET, "a bounded replay must not deliver batch C, settled before the replay, again").await;

    publish_batch(&backend, seq_msgs(&topic, d.iter().copied())).await;
    let counts = consume_acked(&sub, &d, WAIT, "after a bounded replay, new messages are delivered as usual").await;
    check_no_duplicates(&backend, &counts, "after a bounded replay");
    expect_quiet(&[&sub], QUIET, "after a bounded replay and batch D, nothing more").await;
}
