//! Replay by timestamp with no live member: the group's offsets are committed at the first
//! record the broker stored at or after the time, and a member joining afterwards gets exactly
//! the later messages, in order per partition.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use horizons_bus::conformance::{consume_acked, expect_quiet, seq_msgs, unique_topic};
use horizons_bus::{
    now_millis, Admin, GroupSpec, Publisher, Replay, ReplayFrom, SubscribeOptions, Subscriber, TopicSpec, Topology,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_by_timestamp_rewinds_an_idle_group() {
    let bus = common::connect().await;
    let topic = unique_topic("replay_ts");
    let spec = TopicSpec::new(topic.clone()).partitions(3).group(GroupSpec::new("audit"));
    bus.declare(&Topology::new().topic(spec)).await.expect("declare");
    bus.publish_batch(seq_msgs(&topic, 0..30)).await.expect("batch A");
    // The group consumes everything once, then goes away.
    {
        let sub = bus.subscribe(&topic, "audit", SubscribeOptions::default()).await.expect("subscribe");
        consume_acked(&sub, &(0..30).collect(), Duration::from_secs(30), "first pass").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = now_millis();
    tokio::time::sleep(Duration::from_millis(200)).await;
    bus.publish_batch(seq_msgs(&topic, 30..50)).await.expect("batch B");
    // Let the departed member's leave settle before rewinding an empty group.
    tokio::time::sleep(Duration::from_secs(1)).await;

    bus.replay(&topic, "audit", ReplayFrom::Time(t)).await.expect("replay by time with no live member");
    let sub = bus.subscribe(&topic, "audit", SubscribeOptions::default()).await.expect("subscribe again");
    let later: BTreeSet<u64> = (30..50).collect();
    let counts = consume_acked(&sub, &later, Duration::from_secs(30), "messages stored after the time").await;
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    expect_quiet(&[&sub], Duration::from_secs(2), "messages stored before the time must not come back").await;
}

/// A bounded replay of an idle group over three partitions: batch B (between T1 and T2) comes
/// back to a member joining afterwards; batch C, settled after T2, does not — the fence in the
/// committed offsets' metadata passes over it — and batch D, published later, arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bounded_replay_of_an_idle_group_redelivers_only_its_range() {
    let bus = common::connect().await;
    let topic = unique_topic("replay_range_idle");
    let spec = TopicSpec::new(topic.clone()).partitions(3).group(GroupSpec::new("audit"));
    bus.declare(&Topology::new().topic(spec)).await.expect("declare");
    let mut marks = Vec::new();
    for r in [0..30, 30..60] {
        bus.publish_batch(seq_msgs(&topic, r)).await.expect("publish");
        tokio::time::sleep(Duration::from_millis(200)).await;
        marks.push(now_millis());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bus.publish_batch(seq_msgs(&topic, 60..90)).await.expect("batch C");
    {
        let sub = bus.subscribe(&topic, "audit", SubscribeOptions::default()).await.expect("subscribe");
        consume_acked(&sub, &(0..90).collect(), Duration::from_secs(30), "first pass").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let n = bus
        .replay_range(&topic, "audit", ReplayFrom::Time(marks[0]), marks[1])
        .await
        .expect("bounded replay with no live member");
    assert_eq!(n, 30, "the range holds batch B");
    let sub = bus.subscribe(&topic, "audit", SubscribeOptions::default()).await.expect("subscribe again");
    let counts = consume_acked(&sub, &(30..60).collect(), Duration::from_secs(30), "batch B again").await;
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    expect_quiet(&[&sub], Duration::from_secs(2), "batches A and C must not come back").await;
    bus.publish_batch(seq_msgs(&topic, 90..100)).await.expect("batch D");
    let counts = consume_acked(&sub, &(90..100).collect(), Duration::from_secs(30), "batch D").await;
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    expect_quiet(&[&sub], Duration::from_secs(2), "nothing after batch D").await;
}
