//! Topology and limits: idempotent declarations and conflicts, undeclared names and oversize
//! messages rejected, and capabilities declared honestly in both directions.

use std::sync::Arc;
use std::time::Duration;

use super::{
    consume_acked, declare, expect_quiet, expect_unsupported, publish, seq_msg, seq_payload_padded, subscribe,
    unique_topic, within, Harness, QUIET, WAIT,
};
use crate::backend::{Backend, ReplayFrom, SubscribeOptions};
use crate::envelope::{now_millis, Envelope, Priority};
use crate::error::BusError;
use crate::retry::RetryPolicy;
use crate::topology::{GroupSpec, OrderingMode, TopicSpec, Topology};

async fn try_declare(backend: &Arc<dyn Backend>, spec: TopicSpec) -> Result<(), BusError> {
    within("declare", WAIT, backend.declare(&Topology::new().topic(spec))).await
}

/// Declaring the same topology twice is `Ok` and keeps stored messages; adding a group is `Ok`;
/// redeclaring a group with a different ordering (or, where block-key ordering is unsupported,
/// visibility timeout) is a [`BusError::TopologyConflict`] naming the object and the field, and
/// changes nothing.
pub async fn idempotent_topology<H: Harness>(h: &H) {
    let backend = h.backend().await;
    let caps = backend.capabilities();
    let topic = unique_topic("idempotent_topology");
    let ordering = if caps.block_key_ordering { OrderingMode::BlockKey } else { OrderingMode::Requeue };
    let group =
        GroupSpec::new("g").ordering(ordering).retry(RetryPolicy::fast(3)).visibility_timeout(Duration::from_secs(5));
    let spec = TopicSpec::new(topic.clone()).group(group.clone());
    declare(&backend, spec.clone()).await;
    publish(&backend, seq_msg(&topic, 0)).await;
    try_declare(&backend, spec.clone())
        .await
        .unwrap_or_else(|e| panic!("conformance: declaring the same topology twice must be Ok, got: {e}"));
    try_declare(&backend, spec.clone().group(GroupSpec::new("added")))
        .await
        .unwrap_or_else(|e| panic!("conformance: adding a group to an existing topic must be Ok, got: {e}"));

    let (changed, field) = if caps.block_key_ordering {
        (group.clone().ordering(OrderingMode::Requeue), "ordering")
    } else {
        (group.clone().visibility_timeout(Duration::from_secs(6)), "visibility_timeout")
    };
    match try_declare(&backend, TopicSpec::new(topic.clone()).group(changed)).await {
        Err(e) => {
            let BusError::TopologyConflict { object, field: named, .. } = &e else {
                panic!("conformance: redeclaring {topic}/g with a different {field} must be TopologyConflict, got: {e}")
            };
            assert!(
                named.contains(field) && object.contains(topic.as_str()),
                "conformance: a conflict on {topic}/g's {field} must name the object and the field, got: {e}"
            );
            assert!(e.to_string().contains(field), "conformance: the conflict's message must name {field}: {e}");
        }
        Ok(()) => panic!("conformance: redeclaring {topic}/g with a different {field} must fail, it succeeded"),
    }
    try_declare(&backend, spec)
        .await
        .unwrap_or_else(|e| panic!("conformance: a rejected conflicting declaration must change nothing, but: {e}"));
    let sub = subscribe(&backend, &topic, "g", 4).await;
    consume_acked(&sub, &[0].into(), WAIT, "a message published before redeclaring must survive it").await;
}

/// A message above the topic's `max_message_bytes` fails with [`BusError::TooLarge`] and is
/// not delivered; publishing to an undeclared topic, and subscribing to an undeclared topic or
/// group, fail with a clear error.
pub async fn oversize_and_unknown_topic_rejected<H: Harness>(h: &H) {
    let backend = h.backend().await;
    let topic = unique_topic("oversize");
    declare(&backend, TopicSpec::new(topic.clone()).max_message_bytes(1024).group(GroupSpec::new("g"))).await;
    let big = Envelope::new(topic.clone(), seq_payload_padded(0, 2048));
    match within("publishing an oversize message", WAIT, backend.publish(big)).await {
        Err(BusError::TooLarge { size, max, .. }) => assert!(
            max == 1024 && size >= 2048,
            "conformance: TooLarge must report the size and the limit: size {size}, max {max} (expected >= 2048, 1024)"
        ),
        Err(e) => panic!("conformance: a 2048-byte message on a topic limited to 1024 must be TooLarge, got: {e}"),
        Ok(()) => panic!("conformance: a 2048-byte message on a topic limited to 1024 bytes was accepted"),
    }
    publish(&backend, Envelope::new(topic.clone(), seq_payload_padded(1, 100))).await;
    let sub = subscribe(&backend, &topic, "g", 4).await;
    consume_acked(&sub, &[1].into(), WAIT, "the small message after a rejected oversize one").await;
    expect_quiet(&[&sub], QUIET, "the oversize message was rejected and must not be delivered").await;

    let unknown = unique_topic("never_declared");
    let clear = |e: &BusError, name: &str| {
        matches!(e, BusError::UnknownTopic(_) | BusError::UnknownGroup { .. }) || e.to_string().contains(name)
    };
    match within("publishing to an undeclared topic", WAIT, backend.publish(seq_msg(&unknown, 0))).await {
        Err(e) => assert!(clear(&e, unknown.as_str()), "conformance: the error must say the topic is unknown: {e}"),
        Ok(()) => panic!("conformance: publishing to the undeclared topic {unknown} must fail, it succeeded"),
    }
    let opts = SubscribeOptions::default();
    match within("subscribing to an undeclared topic", WAIT, backend.subscribe(&unknown, "g", opts.clone())).await {
        Err(e) => assert!(clear(&e, unknown.as_str()), "conformance: the error must say the topic is unknown: {e}"),
        Ok(_) => panic!("conformance: subscribing to the undeclared topic {unknown} must fail, it succeeded"),
    }
    match within("subscribing to an undeclared group", WAIT, backend.subscribe(&topic, "nobody", opts)).await {
        Err(e) => assert!(clear(&e, "nobody"), "conformance: the error must say the group is unknown: {e}"),
        Ok(_) => panic!("conformance: subscribing to the undeclared group {topic}/nobody must fail, it succeeded"),
    }
}

/// Each capability declared `false` is refused with [`BusError::Unsupported`]; each declared
/// `true` is accepted (the behaviour itself is checked by its own case).
pub async fn capabilities_are_declared_honestly<H: Harness>(h: &H) {
    let backend = h.backend().await;
    let caps = backend.capabilities();
    assert!(!backend.name().is_empty(), "conformance: a backend must have a name");
    assert_eq!(caps, backend.capabilities(), "conformance: capabilities must not change between calls");
    println!("conformance: {} declares {caps:?}", backend.name());
    let topic = unique_topic("capabilities");
    declare(&backend, TopicSpec::new(topic.clone()).group(GroupSpec::new("g"))).await;

    publish(&backend, seq_msg(&topic, 0).with_priority(Priority::DEFAULT)).await;
    let high = seq_msg(&topic, 1).with_priority(Priority::new(7).unwrap());
    let r = within("publishing with priority 7", WAIT, backend.publish(high)).await;
    if caps.priorities {
        r.unwrap_or_else(|e| panic!("conformance: priorities are declared, but publishing priority 7 failed: {e}"));
    } else {
        expect_unsupported(&backend, "priorities (publishing priority 7)", r);
    }

    let delayed = seq_msg(&topic, 2).with_delay(Duration::from_millis(50));
    let r = within("publishing with not_before", WAIT, backend.publish(delayed)).await;
    if caps.delays {
        r.unwrap_or_else(|e| panic!("conformance: delays are declared, but publishing with not_before failed: {e}"));
    } else {
        expect_unsupported(&backend, "delays (publishing with not_before)", r);
    }

    let blocky = TopicSpec::new(topic.clone()).group(GroupSpec::new("blocky").ordering(OrderingMode::BlockKey));
    let r = try_declare(&backend, blocky).await;
    if caps.block_key_ordering {
        r.unwrap_or_else(|e| panic!("conformance: block-key ordering is declared, but declaring it failed: {e}"));
    } else {
        expect_unsupported(&backend, "block-key ordering (declaring a BlockKey group)", r);
    }

    match backend.replay() {
        None => assert!(
            !caps.replay_offset && !caps.replay_time,
            "conformance: replay is declared ({caps:?}) but backend.replay() is None"
        ),
        Some(replay) => {
            assert!(
                caps.replay_offset || caps.replay_time,
                "conformance: backend.replay() is Some although neither replay_offset nor replay_time is declared"
            );
            for (from, declared, what) in [
                (ReplayFrom::Offset(0), caps.replay_offset, "replay from an offset"),
                (ReplayFrom::Time(now_millis() - 60_000), caps.replay_time, "replay from a time"),
            ] {
                let r = within(what, WAIT, replay.replay(&topic, "g", from)).await;
                if declared {
                    r.unwrap_or_else(|e| panic!("conformance: {what} is declared, but it failed: {e}"));
                } else {
                    expect_unsupported(&backend, what, r);
                }
            }
            let what = "a bounded replay (replay_range, part of replay_time)";
            let r = within(
                what,
                WAIT,
                replay.replay_range(&topic, "g", ReplayFrom::Time(now_millis() - 60_000), now_millis()),
            )
            .await
            .map(|_| ());
            if caps.replay_time {
                r.unwrap_or_else(|e| panic!("conformance: {what} is declared, but it failed: {e}"));
            } else {
                expect_unsupported(&backend, what, r);
            }
        }
    }
}
