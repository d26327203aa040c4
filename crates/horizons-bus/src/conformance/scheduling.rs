//! Scheduling capabilities: priorities (higher first among ready messages) and delays
//! (`not_before` respected). Each case is skipped where the backend does not declare the
//! capability; `capabilities_are_declared_honestly` checks the refusal there.

use std::time::Duration;

use super::{ack, declare, expect_delivery, expect_quiet, parse_seq, publish, publish_batch, seq_msg, subscribe};
use super::{unique_topic, Harness, QUIET, WAIT};
use crate::envelope::{now_millis, Priority};
use crate::topology::{GroupSpec, TopicSpec};

/// The priority of message `seq` in [`priorities`]: a fixed mix of all ten levels.
fn priority_of(seq: u64) -> u8 {
    ((seq * 7 + 3) % 10) as u8
}

/// 50 messages with mixed priorities 0–9, all published before the member subscribes with
/// prefetch 1: they are delivered highest priority first. A message may precede a higher one
/// delivered at most `prefetch` positions later (already handed out when the higher one was
/// chosen).
pub async fn priorities<H: Harness>(h: &H) {
    const N: u64 = 50;
    const PREFETCH: usize = 1;
    let backend = h.backend().await;
    if !backend.capabilities().priorities {
        println!("conformance: priorities skipped: {} declares no priorities", backend.name());
        return;
    }
    let topic = unique_topic("priorities");
    declare(&backend, TopicSpec::new(topic.clone()).group(GroupSpec::new("g"))).await;
    let msgs = (0..N).map(|s| seq_msg(&topic, s).with_priority(Priority::new(priority_of(s)).unwrap())).collect();
    publish_batch(&backend, msgs).await;

    let sub = subscribe(&backend, &topic, "g", PREFETCH).await;
    let mut order = Vec::new();
    for _ in 0..N {
        let d = expect_delivery(&sub, WAIT, "the prioritised messages").await;
        let seq = parse_seq(&d.envelope.payload);
        assert_eq!(d.envelope.priority.get(), priority_of(seq), "conformance: seq {seq}'s priority changed in transit");
        order.push(d.envelope.priority.get());
        ack(d, "priorities").await;
    }
    for (i, &p) in order.iter().enumerate() {
        if let Some(&later) = order.iter().skip(i + PREFETCH + 1).max() {
            assert!(
                p >= later,
                "conformance: delivery {i} had priority {p}, but priority {later} was delivered more than {PREFETCH} \
                 position(s) later; delivered priorities: {order:?}"
            );
        }
    }
    expect_quiet(&[&sub], QUIET, "all prioritised messages were acked").await;
}

/// A message delayed by 2 s is not delivered before its `not_before`, while an undelayed one
/// published after it is delivered at once; the delayed one still arrives. Skipped where delays
/// are not declared.
pub async fn delayed_delivery<H: Harness>(h: &H) {
    let backend = h.backend().await;
    if !backend.capabilities().delays {
        println!("conformance: delayed_delivery skipped: {} declares no delays", backend.name());
        return;
    }
    let topic = unique_topic("delayed_delivery");
    declare(&backend, TopicSpec::new(topic.clone()).group(GroupSpec::new("g"))).await;
    let delayed = seq_msg(&topic, 0).with_delay(Duration::from_secs(2));
    let due = delayed.not_before.expect("with_delay sets not_before");
    publish(&backend, delayed).await;
    publish(&backend, seq_msg(&topic, 1)).await;

    let sub = subscribe(&backend, &topic, "g", 4).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let d = expect_delivery(&sub, WAIT + Duration::from_secs(2), "the delayed and the undelayed message").await;
        let (seq, now) = (parse_seq(&d.envelope.payload), now_millis());
        if seq == 0 {
            assert!(now >= due, "conformance: a message due at {due} (ms) was delivered {} ms early", due - now);
        }
        got.push(seq);
        ack(d, "delayed delivery").await;
    }
    assert_eq!(got, [1, 0], "conformance: the undelayed message must not wait behind the delayed one");
}
