//! Retries and dead letters: retry delays are honoured, exhausted and permanent failures end in
//! the group's dead-letter queue with their reasons, and a redrive brings them back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{
    ack, declare, expect_delivery, expect_quiet, parse_seq, publish, publish_batch, seq_msg, seq_msgs, subscribe,
    unique_topic, wait_for_dead_letters, within, Harness, RunningRouter, QUIET, WAIT,
};
use crate::envelope::{Envelope, MessageId};
use crate::retry::{HandlerError, RetryPolicy};
use crate::router::{handler_fn, json_handler, Context, Router};
use crate::topology::{GroupSpec, TopicSpec};

/// `retry_after(1.5 s)` brings the message back to the group, not before 1.5 s, with attempt 2.
pub async fn retry_after_is_honoured<H: Harness>(h: &H) {
    let backend = h.backend().await;
    let topic = unique_topic("retry_after");
    declare(&backend, TopicSpec::new(topic.clone()).group(GroupSpec::new("g"))).await;
    publish(&backend, seq_msg(&topic, 0)).await;
    let sub = subscribe(&backend, &topic, "g", 1).await;
    let d = expect_delivery(&sub, WAIT, "the first delivery").await;
    let id = d.envelope.id;
    let delay = Duration::from_millis(1500);
    let settled = Instant::now();
    within("retry_after", WAIT, d.retry_after(delay, "conformance: try again later"))
        .await
        .unwrap_or_else(|e| panic!("conformance: retry_after failed: {e}"));
    let d = expect_delivery(&sub, WAIT + delay, "the retried message").await;
    let after = settled.elapsed();
    assert_eq!(d.envelope.id, id, "conformance: expected the retried message");
    assert_eq!(d.attempt, 2, "conformance: the delivery after one retry must have attempt 2");
    assert!(
        after + Duration::from_millis(20) >= delay,
        "conformance: a message retried after {delay:?} came back after only {after:?}"
    );
    ack(d, "retried message").await;
    expect_quiet(&[&sub], QUIET, "the retried message was acked and must not come back").await;
}

/// A handler that always fails (retryable, a distinct error each time) under
/// `RetryPolicy::fast(3)`: the message ends in the dead-letter queue after exactly 3 attempts,
/// unchanged, with a reason and its first and last errors, and is not delivered again.
pub async fn retries_then_dlq<H: Harness>(h: &H) {
    let backend = h.backend().await;
    let topic = unique_topic("retries_then_dlq");
    let policy = RetryPolicy::fast(3);
    declare(&backend, TopicSpec::new(topic.clone()).group(GroupSpec::new("g").retry(policy.clone()))).await;
    let msg = seq_msg(&topic, 0).with_key("k").with_header("x-conformance", "keep me");
    publish(&backend, msg.clone()).await;

    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let handler = handler_fn(move |_env: Envelope, cx: Context| {
        let seen = seen.clone();
        async move {
            seen.lock().push(cx.attempt);
            Err(HandlerError::retryable(format!("conformance failure #{}", cx.attempt)))
        }
    });
    let router = RunningRouter::start(Router::new(backend.clone()).route(topic.clone(), "g", policy, 1, handler));
    let dead = wait_for_dead_letters(&backend, &topic, "g", 1).await;
    tokio::time::sleep(QUIET).await;
    router.stop().await;

    assert_eq!(dead.len(), 1, "conformance: exactly one dead letter expected, got {}", dead.len());
    let dl = &dead[0];
    assert_eq!(dl.envelope, msg, "conformance: the dead letter must be the original message (same id, topic, payload)");
    assert_eq!(
        dl.attempts, 3,
        "conformance: dead-lettered after max_attempts = 3 deliveries, recorded {}",
        dl.attempts
    );
    assert!(!dl.reason.is_empty(), "conformance: a dead letter must carry its reason");
    assert_eq!(
        dl.first_error.as_deref(),
        Some("conformance failure #1"),
        "conformance: first_error must be the first attempt's error"
    );
    let last = dl.last_error.as_deref().unwrap_or_else(|| panic!("conformance: last_error must be recorded"));
    assert!(
        last == "conformance failure #2" || last.contains("conformance failure #3"),
        "conformance: last_error must be a later attempt's error (#3, or #2 if only retries record errors), got {last:?}"
    );
    let calls = attempts.lock().clone();
    assert_eq!(calls, [1, 2, 3], "conformance: the handler must run for attempts 1, 2, 3 and then never again");
}

/// Five permanently failing messages are listed (with reasons, attempts 1, `limit` honoured);
/// a bulk redrive returns 5, empties the queue, and the messages (same ids, attempts reset) are
/// then handled successfully.
pub async fn dlq_list_and_redrive<H: Harness>(h: &H) {
    let backend = h.backend().await;
    let topic = unique_topic("dlq_redrive");
    let policy = RetryPolicy::fast(2);
    declare(&backend, TopicSpec::new(topic.clone()).group(GroupSpec::new("g").retry(policy.clone()))).await;
    let empty = within("dlq_list", WAIT, backend.dlq_list(&topic, "g", 10)).await;
    assert!(empty.is_ok_and(|l| l.is_empty()), "conformance: a fresh group's dead-letter queue must list empty");
    let msgs = seq_msgs(&topic, 0..5);
    let ids: BTreeMap<MessageId, u64> = msgs.iter().map(|m| (m.id, parse_seq(&m.payload))).collect();
    publish_batch(&backend, msgs).await;

    let failing = handler_fn(|env: Envelope, _cx: Context| async move {
        Err(HandlerError::permanent(format!("bad seq {}", parse_seq(&env.payload))))
    });
    let router =
        RunningRouter::start(Router::new(backend.clone()).route(topic.clone(), "g", policy.clone(), 1, failing));
    let dead = wait_for_dead_letters(&backend, &topic, "g", 5).await;
    router.stop().await;
    assert_eq!(dead.len(), 5, "conformance: 5 dead letters expected, listed {}", dead.len());
    for dl in &dead {
        let seq =
            ids.get(&dl.envelope.id).unwrap_or_else(|| panic!("conformance: unknown id {} in DLQ", dl.envelope.id));
        assert_eq!(parse_seq(&dl.envelope.payload), *seq, "conformance: dead letter payload changed");
        assert_eq!(dl.envelope.topic, topic, "conformance: a dead letter must name its original topic");
        assert!(dl.reason.contains(&format!("bad seq {seq}")), "conformance: reason must carry the error: {dl:?}");
        assert_eq!(dl.attempts, 1, "conformance: a permanent failure is dead-lettered on its first attempt: {dl:?}");
    }
    let limited = within("dlq_list with limit 2", WAIT, backend.dlq_list(&topic, "g", 2)).await;
    assert_eq!(limited.map(|l| l.len()).ok(), Some(2), "conformance: dlq_list must honour its limit");
    if let Ok(topics) = within("topics", WAIT, backend.topics()).await {
        let group = topics.iter().filter(|t| t.name == topic.as_str()).flat_map(|t| &t.groups).find(|g| g.name == "g");
        if let Some(dead) = group.and_then(|g| g.dead) {
            assert_eq!(dead, 5, "conformance: topics() reports {dead} dead letters in {topic}/g, the DLQ holds 5");
        }
    }

    let handled = Arc::new(Mutex::new(Vec::new()));
    let log = handled.clone();
    let ok = handler_fn(move |env: Envelope, cx: Context| {
        let log = log.clone();
        async move {
            log.lock().push((env.id, cx.attempt));
            Ok(())
        }
    });
    let mut router = RunningRouter::start(Router::new(backend.clone()).route(topic.clone(), "g", policy, 1, ok));
    let moved = within("dlq_redrive", WAIT, backend.dlq_redrive(&topic, "g", None))
        .await
        .unwrap_or_else(|e| panic!("conformance: dlq_redrive failed: {e}"));
    assert_eq!(moved, 5, "conformance: dlq_redrive(None) must move all 5 dead letters and say so");
    let want: BTreeSet<MessageId> = ids.keys().copied().collect();
    router
        .wait_until("the redriven messages must be consumed again", WAIT, || {
            handled.lock().iter().map(|(id, _)| *id).collect::<BTreeSet<_>>() == want
        })
        .await;
    let listed = within("dlq_list", WAIT, backend.dlq_list(&topic, "g", 10)).await;
    assert!(
        listed.as_ref().is_ok_and(|l| l.is_empty()),
        "conformance: the DLQ must be empty after a redrive: {listed:?}"
    );
    let again = within("dlq_redrive", WAIT, backend.dlq_redrive(&topic, "g", None)).await;
    assert_eq!(again.ok(), Some(0), "conformance: redriving an empty DLQ must move 0");
    tokio::time::sleep(QUIET).await;
    router.stop().await;
    for (id, attempt) in handled.lock().iter() {
        assert_eq!(*attempt, 1, "conformance: a redriven message starts again at attempt 1 ({id} had {attempt})");
    }
}

#[derive(serde::Deserialize)]
struct Sample {
    seq: u64,
    name: String,
}

/// A `json_handler` given `b"not json"` dead-letters it at once with reason "malformed
/// payload"; the well-formed message next to it is handled.
pub async fn malformed_payload_to_dlq<H: Harness>(h: &H) {
    let backend = h.backend().await;
    let topic = unique_topic("malformed_payload");
    let policy = RetryPolicy::fast(3);
    declare(&backend, TopicSpec::new(topic.clone()).group(GroupSpec::new("g").retry(policy.clone()))).await;
    let bad = Envelope::new(topic.clone(), &b"not json"[..]);
    publish(&backend, Envelope::new(topic.clone(), &br#"{"seq": 7, "name": "fine"}"#[..])).await;
    publish(&backend, bad.clone()).await;

    let handled = Arc::new(Mutex::new(Vec::new()));
    let log = handled.clone();
    let handler = json_handler(move |s: Sample, _env: Envelope, _cx: Context| {
        let log = log.clone();
        async move {
            log.lock().push((s.seq, s.name));
            Ok(())
        }
    });
    let mut router = RunningRouter::start(Router::new(backend.clone()).route(topic.clone(), "g", policy, 1, handler));
    let dead = wait_for_dead_letters(&backend, &topic, "g", 1).await;
    router.wait_until("the well-formed message must be handled", WAIT, || !handled.lock().is_empty()).await;
    tokio::time::sleep(QUIET).await;
    router.stop().await;
    assert_eq!(*handled.lock(), [(7, "fine".to_string())], "conformance: the well-formed message must be handled once");
    assert_eq!(dead.len(), 1, "conformance: exactly the malformed message must be dead-lettered: {dead:?}");
    let dl = &dead[0];
    assert_eq!(dl.envelope.id, bad.id);
    assert_eq!(dl.envelope.payload, bad.payload, "conformance: the dead letter must keep the malformed payload");
    assert!(dl.reason.contains("malformed payload"), "conformance: reason must say malformed payload: {:?}", dl.reason);
    assert_eq!(dl.attempts, 1, "conformance: a malformed payload is permanent and must not be retried");
}
