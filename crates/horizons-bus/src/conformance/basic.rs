//! Basic delivery: envelopes survive the trip byte for byte, acks are final, and unsettled
//! deliveries come back (after a drop, and after the visibility timeout).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    ack, declare, expect_delivery, expect_quiet, next_from_any, parse_seq, publish, publish_batch, seq_msg, seq_msgs,
    seq_payload, seq_payload_padded, subscribe, unique_topic, Harness, QUIET, WAIT,
};
use crate::envelope::{Envelope, MessageId, Priority, HEADER_CORRELATION_ID};
use crate::error::BusError;
use crate::topology::{GroupSpec, TopicSpec};

/// Panics naming the first field of `got` that differs from `sent`.
fn assert_same_envelope(sent: &Envelope, got: &Envelope) {
    let id = sent.id;
    assert_eq!(got.id, sent.id, "conformance: message id changed in transit");
    assert_eq!(got.topic, sent.topic, "conformance: {id}: topic changed in transit");
    assert_eq!(got.key, sent.key, "conformance: {id}: key changed in transit (None must stay None)");
    assert_eq!(got.headers, sent.headers, "conformance: {id}: headers changed in transit");
    assert_eq!(
        got.timestamp, sent.timestamp,
        "conformance: {id}: the producer's timestamp must be carried, not restamped"
    );
    assert_eq!(got.priority, sent.priority, "conformance: {id}: priority changed in transit");
    assert_eq!(got.not_before, sent.not_before, "conformance: {id}: not_before changed in transit");
    if got.payload != sent.payload {
        let at = got.payload.iter().zip(sent.payload.iter()).position(|(a, b)| a != b);
        panic!(
            "conformance: {id}: payload changed in transit: sent {} bytes, got {}, first difference at byte {:?}",
            sent.payload.len(),
            got.payload.len(),
            at
        );
    }
}

/// Every field of the envelope survives: id, key (and its absence), headers including
/// correlation and causation, binary and empty payloads, priority, producer timestamp. The first
/// delivery has attempt 1.
pub async fn round_trip<H: Harness>(h: &H) {
    let backend = h.backend().await;
    let topic = unique_topic("round_trip");
    declare(&backend, TopicSpec::new(topic.clone()).group(GroupSpec::new("g"))).await;

    let cause = Envelope::new(topic.clone(), "cause").with_header(HEADER_CORRELATION_ID, "corr-42");
    let mut payload = seq_payload(1).to_vec();
    payload.extend_from_slice(&[0, 1, 0x7f, 0x80, 0xfe, 0xff, b'\n', b'\r']);
    let mut full = Envelope::new(topic.clone(), payload)
        .with_key("key-1")
        .with_header("x-conformance", "hello, world: a=b; c=\"d\"")
        .caused_by(&cause);
    // A producer time distinct from the publish time shows the timestamp is carried, not restamped.
    full.timestamp -= 12_345;
    if backend.capabilities().priorities {
        full = full.with_priority(Priority::new(7).unwrap());
    }
    let bare = seq_msg(&topic, 2);
    let empty = Envelope::new(topic.clone(), Bytes::new()).with_key("empty-payload");
    let sent: BTreeMap<MessageId, Envelope> = [&full, &bare, &empty].into_iter().map(|e| (e.id, e.clone())).collect();
    publish(&backend, full.clone()).await;
    publish(&backend, bare).await;
    publish(&backend, empty).await;

    let sub = subscribe(&backend, &topic, "g", 16).await;
    let mut seen = BTreeSet::new();
    while seen.len() < sent.len() {
        let d = expect_delivery(&sub, WAIT, "the round-trip messages").await;
        let original = sent.get(&d.envelope.id).unwrap_or_else(|| {
            panic!("conformance: got message {} which was never published (did the id change?)", d.envelope.id)
        });
        assert_same_envelope(original, &d.envelope);
        assert_eq!(d.attempt, 1, "conformance: first delivery of {} must have attempt 1", d.envelope.id);
        seen.insert(d.envelope.id);
        ack(d, "round trip").await;
    }
}

/// A 1 MiB payload (the pipeline's block size) arrives intact.
pub async fn large_message<H: Harness>(h: &H) {
    let backend = h.backend().await;
    let topic = unique_topic("large_message");
    declare(&backend, TopicSpec::new(topic.clone()).group(GroupSpec::new("g"))).await;
    let msg = Envelope::new(topic.clone(), seq_payload_padded(7, 1 << 20)).with_key("big");
    publish(&backend, msg.clone()).await;
    let sub = subscribe(&backend, &topic, "g", 4).await;
    let d = expect_delivery(&sub, WAIT, "the 1 MiB message").await;
    assert_same_envelope(&msg, &d.envelope);
    ack(d, "large message").await;
}

/// Acked messages never come back: not after the visibility timeout (1 s here), and not to a
/// new member.
pub async fn ack_is_final<H: Harness>(h: &H) {
    let backend = h.backend().await;
    let topic = unique_topic("ack_is_final");
    let group = GroupSpec::new("g").visibility_timeout(Duration::from_secs(1));
    declare(&backend, TopicSpec::new(topic.clone()).group(group)).await;
    publish_batch(&backend, seq_msgs(&topic, 0..10)).await;

    let sub = subscribe(&backend, &topic, "g", 16).await;
    let counts = super::consume_acked(&sub, &(0..10).collect(), WAIT, "ack_is_final").await;
    super::check_no_duplicates(&backend, &counts, "ack_is_final");
    expect_quiet(
        &[&sub],
        Duration::from_millis(2500),
        "acked messages must not come back after the 1 s visibility timeout",
    )
    .await;
    drop(sub);
    let sub = subscribe(&backend, &topic, "g", 16).await;
    expect_quiet(&[&sub], QUIET, "acked messages must not be delivered to a new member").await;
}

/// A delivery dropped unsettled is delivered again with a higher attempt: first to the same
/// member, then (dropping delivery and subscription) to a new member of the group.
pub async fn redelivery_after_drop<H: Harness>(h: &H) {
    let backend = h.backend().await;
    let topic = unique_topic("redelivery_after_drop");
    let group = GroupSpec::new("g").visibility_timeout(Duration::from_secs(2));
    declare(&backend, TopicSpec::new(topic.clone()).group(group)).await;
    publish(&backend, seq_msg(&topic, 0)).await;

    let sub = subscribe(&backend, &topic, "g", 1).await;
    let d = expect_delivery(&sub, WAIT, "the first delivery").await;
    assert_eq!(d.attempt, 1, "conformance: first delivery must have attempt 1");
    let id = d.envelope.id;
    drop(d);
    let d = expect_delivery(&sub, WAIT, "the redelivery of a delivery dropped unsettled (same member)").await;
    assert_eq!(d.envelope.id, id, "conformance: expected the dropped message again");
    assert!(d.attempt >= 2, "conformance: a redelivery must have attempt >= 2, got {}", d.attempt);
    let previous = d.attempt;
    drop(d);
    drop(sub);

    let sub = subscribe(&backend, &topic, "g", 1).await;
    let d = expect_delivery(&sub, WAIT, "the redelivery to a new member after the old one was dropped").await;
    assert_eq!(d.envelope.id, id, "conformance: expected the dropped message again");
    assert!(d.attempt > previous, "conformance: attempt must grow with every delivery: {previous} then {}", d.attempt);
    assert_eq!(parse_seq(&d.envelope.payload), 0);
    ack(d, "redelivery after drop").await;
    expect_quiet(&[&sub], Duration::from_millis(2500), "the message was acked and must not come back").await;
}

/// A delivery held unsettled past the group's visibility timeout (1 s) is delivered again, to a
/// member of the group, not before the timeout; settling the stale delivery afterwards is `Ok`
/// or [`BusError::LeaseExpired`] and does not undo the redelivery's ack.
pub async fn redelivery_after_visibility_timeout<H: Harness>(h: &H) {
    let backend = h.backend().await;
    let topic = unique_topic("redelivery_after_vt");
    let timeout = Duration::from_secs(1);
    declare(&backend, TopicSpec::new(topic.clone()).group(GroupSpec::new("g").visibility_timeout(timeout))).await;
    let a = subscribe(&backend, &topic, "g", 1).await;
    let b = subscribe(&backend, &topic, "g", 1).await;
    let published = Instant::now();
    publish(&backend, seq_msg(&topic, 0)).await;

    let (holder, held) = next_from_any(&[&a, &b], WAIT, "the first delivery")
        .await
        .unwrap_or_else(|| panic!("conformance: no delivery within {WAIT:?}"));
    assert_eq!(held.attempt, 1);
    let (taker, again) = next_from_any(&[&a, &b], WAIT, "the redelivery after the visibility timeout")
        .await
        .unwrap_or_else(|| panic!("conformance: a delivery held past the 1 s visibility timeout was not redelivered"));
    let after = published.elapsed();
    assert_eq!(again.envelope.id, held.envelope.id, "conformance: expected the held message again");
    assert!(again.attempt >= 2, "conformance: a redelivery must have attempt >= 2, got {}", again.attempt);
    assert!(
        after + Duration::from_millis(50) >= timeout,
        "conformance: redelivered {after:?} after publishing, before the {timeout:?} visibility timeout ran out"
    );
    println!("conformance: member {holder} held the delivery; member {taker} got it again after {after:?}");
    ack(again, "redelivery after visibility timeout").await;
    match super::within("settling a stale delivery", WAIT, held.ack()).await {
        Ok(()) | Err(BusError::LeaseExpired) => {}
        Err(e) => panic!("conformance: acking a delivery whose lease ran out must be Ok or LeaseExpired, got: {e}"),
    }
    expect_quiet(&[&a, &b], Duration::from_millis(2500), "the redelivery was acked; the message must not come back")
        .await;
}
