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
