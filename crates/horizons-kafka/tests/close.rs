//! Closing the bus takes its members out of their groups at once: the group rebalances (and can
//! be rewound) right away instead of after the session timeout, and what was acked is
//! committed, so the next member starts after it.

mod common;

use std::time::Duration;

use horizons_bus::conformance::{consume_acked, expect_quiet, seq_msgs, unique_topic};
use horizons_bus::{Admin, Backend, GroupSpec, Publisher, SubscribeOptions, Subscriber, TopicSpec, Topology};
use horizons_kafka::topology::names;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_the_bus_leaves_its_groups_at_once() {
    let bus = common::connect().await;
    let topic = unique_topic("close_leaves");
    let spec = TopicSpec::new(topic.clone()).partitions(2).group(GroupSpec::new("g"));
    bus.declare(&Topology::new().topic(spec.clone())).await.expect("declare");
    bus.publish_batch(seq_msgs(&topic, 0..20)).await.expect("publish");
    let sub = bus.subscribe(&topic, "g", SubscribeOptions::default()).await.expect("subscribe");
    consume_acked(&sub, &(0..20).collect(), Duration::from_secs(30), "before closing").await;
    let group_id = names::group_id(&topic, "g");
    let client = common::group_client();
    let members = |id: &str| common::describe_group(&client, id).expect("group list").1;
    assert_eq!(members(&group_id), 1, "the member is in its group");

    // The subscription is still held: close stops its member too.
    bus.close().await.expect("close");
    // Well inside the 6 s session timeout: the member left, it did not time out.
    assert_eq!(members(&group_id), 0, "the member is still in its group after close");
    drop(sub);

    let again = common::connect().await;
    again.declare(&Topology::new().topic(spec)).await.expect("declare again");
    let sub = again.subscribe(&topic, "g", SubscribeOptions::default()).await.expect("subscribe again");
    expect_quiet(&[&sub], Duration::from_secs(2), "acked messages must have been committed at close").await;
    drop(sub);
    again.close().await.expect("close again");
}
