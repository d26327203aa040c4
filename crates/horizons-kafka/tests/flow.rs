//! How messages flow through partitions and members:
//! - keyless messages of one batch land in one partition, batches taking the partitions in turn;
//! - a member's flow control: with tiny `max_buffered_per_partition` and
//!   `max_buffered_bytes_per_partition` it pauses and resumes its partition over and over (a
//!   pause makes librdkafka drop what it prefetched and fetch it again), and still delivers
//!   every message once, in offset order, without stalling.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use horizons_bus::conformance::{next_within, parse_seq, seq_msgs, seq_payload_padded, unique_topic};
use horizons_bus::{Admin, Backend, Envelope, GroupSpec, Publisher, SubscribeOptions, Subscriber, TopicSpec, Topology};
use horizons_kafka::{KafkaBus, KafkaConfig};

/// Publishes `n` messages of `size` bytes (the sequence number first) and consumes them with a
/// member limited to `max_open` messages or `max_bytes` bytes per partition.
async fn every_message_once_in_order(name: &str, n: u64, size: usize, max_open: usize, max_bytes: usize) {
    let cfg = KafkaConfig {
        max_buffered_per_partition: max_open,
        max_buffered_bytes_per_partition: max_bytes,
        ..KafkaConfig::from_env()
    };
    let bus = KafkaBus::connect(cfg).await.expect("a broker from `scripts/services up kafka`");
    let topic = unique_topic(name);
    bus.declare(&Topology::new().topic(TopicSpec::new(topic.clone()).group(GroupSpec::new("g"))))
        .await
        .expect("declare");
    let msgs: Vec<Envelope> = (0..n).map(|seq| Envelope::new(topic.clone(), seq_payload_padded(seq, size))).collect();
    bus.publish_batch(msgs).await.expect("publish");

    let sub = bus.subscribe(&topic, "g", SubscribeOptions { prefetch: 8 }).await.expect("subscribe");
    for expected in 0..n {
        let d = next_within(&sub, Duration::from_secs(30), name)
            .await
            .unwrap_or_else(|| panic!("{name}: message {expected} of {n} not delivered within 30 s"));
        let seq = parse_seq(&d.envelope.payload);
        assert_eq!((seq, d.attempt), (expected, 1), "{name}: offset order, first delivery");
        d.ack().await.expect("ack");
    }
    assert!(next_within(&sub, Duration::from_millis(500), name).await.is_none(), "{name}: a message came twice");
    drop(sub);
    bus.delete_topics_with_prefix(topic.as_str()).await.expect("clean up");
    bus.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_at_its_message_bound_pauses_and_resumes_without_loss() {
    every_message_once_in_order("flow_count", 3000, 16, 20, usize::MAX).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_at_its_byte_bound_pauses_and_resumes_without_loss() {
    every_message_once_in_order("flow_bytes", 600, 2048, usize::MAX, 16 << 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_batches_each_land_in_one_partition_and_take_the_partitions_in_turn() {
    let bus = common::connect().await;
    let topic = unique_topic("flow_keyless");
    bus.declare(&Topology::new().topic(TopicSpec::new(topic.clone()).partitions(3).group(GroupSpec::new("g"))))
        .await
        .expect("declare");
    for batch in 0..6u64 {
        bus.publish_batch(seq_msgs(&topic, batch * 10..batch * 10 + 10)).await.expect("publish");
    }
    let sub = bus.subscribe(&topic, "g", SubscribeOptions::default()).await.expect("subscribe");
    let mut partition_of_batch: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for _ in 0..60 {
        let d = next_within(&sub, Duration::from_secs(30), "keyless batches").await.expect("all 60 delivered");
        let seq = parse_seq(&d.envelope.payload);
        partition_of_batch.entry(seq / 10).or_default().push(d.position.partition.expect("kafka has partitions"));
        d.ack().await.expect("ack");
    }
    let mut used = Vec::new();
    for (batch, parts) in &partition_of_batch {
        assert!(parts.iter().all(|p| *p == parts[0]), "batch {batch} was split across partitions: {parts:?}");
        used.push(parts[0]);
    }
    assert_eq!(used.len(), 6, "{partition_of_batch:?}");
    for w in used.windows(3) {
        let mut three = w.to_vec();
        three.sort_unstable();
        assert_eq!(three, vec![0, 1, 2], "three batches in a row take the three partitions: {used:?}");
    }
    drop(sub);
    bus.delete_topics_with_prefix(topic.as_str()).await.expect("clean up");
    bus.close().await.expect("close");
}
