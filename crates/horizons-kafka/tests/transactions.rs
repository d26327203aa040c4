//! Exactly-once consume-transform-produce on Kafka transactions: a batch whose transform fails
//! midway is aborted and nothing of it reaches a `read_committed` consumer downstream; running
//! the stage again delivers every output exactly once.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use horizons_bus::conformance::{expect_quiet, parse_seq, seq_msgs, seq_payload, unique_topic};
use horizons_bus::{Admin, Envelope, GroupSpec, Publisher, SubscribeOptions, Subscriber, TopicSpec, Topology};
use horizons_kafka::transaction::{ExactlyOnceStage, StageError};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aborted_batch_is_invisible_and_a_rerun_is_exactly_once() {
    const N: u64 = 10;
    let bus = common::connect().await;
    let (input, output) = (unique_topic("txn_in"), unique_topic("txn_out"));
    let topology = Topology::new()
        .topic(TopicSpec::new(input.clone()).partitions(2).group(GroupSpec::new("stage")))
        .topic(TopicSpec::new(output.clone()).group(GroupSpec::new("down")));
    bus.declare(&topology).await.expect("declare");
    let down = bus.subscribe(&output, "down", SubscribeOptions::default()).await.expect("subscribe downstream");
    bus.publish_batch(seq_msgs(&input, 0..N)).await.expect("publish inputs");

    // First run: the transform fails on the sixth message it sees, after producing five outputs
    // inside the transaction.
    let out_topic = output.clone();
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let stage = ExactlyOnceStage::new(&bus, input.clone(), "stage", "txn-test-stage").batch(N as usize);
    let failing = stage.clone().run(CancellationToken::new(), move |env: &Envelope| {
        if counter.fetch_add(1, Ordering::SeqCst) == 5 {
            return Err("schema version 99 is unknown".to_string());
        }
        Ok(vec![Envelope::new(out_topic.clone(), seq_payload(parse_seq(&env.payload) + 1000)).caused_by(env)])
    });
    match tokio::time::timeout(Duration::from_secs(60), failing).await.expect("the failing stage must stop") {
        Err(StageError::Transform { reason, batch, .. }) => {
            assert!(reason.contains("schema version"), "{reason}");
            assert!(batch > 5, "the whole batch is aborted, not just the failing message: {batch}");
        }
        other => panic!("expected the transform's error, got {other:?}"),
    }
    assert!(seen.load(Ordering::SeqCst) >= 6, "the transform ran midway into the batch");
    expect_quiet(&[&down], Duration::from_secs(3), "an aborted transaction must stay invisible downstream").await;

    // Second run: every input is transformed once more and committed with its input offsets.
    let out_topic = output.clone();
    let cancel = CancellationToken::new();
    let (done, stop) = (Arc::new(AtomicU64::new(0)), cancel.clone());
    let count = done.clone();
    let rerun = tokio::spawn(stage.run(cancel.clone(), move |env: &Envelope| {
        if count.fetch_add(1, Ordering::SeqCst) + 1 == N {
            stop.cancel();
        }
        Ok(vec![Envelope::new(out_topic.clone(), seq_payload(parse_seq(&env.payload) + 1000)).caused_by(env)])
    }));
    let mut got = BTreeMap::new();
    while got.len() < N as usize {
        let d = down.next_timeout(Duration::from_secs(60)).await.expect("downstream output of the rerun");
        *got.entry(parse_seq(&d.envelope.payload)).or_insert(0) += 1;
        d.ack().await.expect("ack");
    }
    let stats = tokio::time::timeout(Duration::from_secs(60), rerun).await.expect("stage stops").expect("join");
    let stats = stats.expect("the rerun commits");
    assert_eq!(stats.consumed, N, "{stats:?}");
    expect_quiet(&[&down], Duration::from_secs(2), "every output arrives exactly once").await;
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), (1000..1000 + N).collect::<Vec<_>>());
    assert!(got.values().all(|&n| n == 1), "duplicates downstream: {got:?}");
}
