//! Bad input never crashes a member and is never dropped silently: records whose envelope
//! header is malformed or of an unknown version, and payloads the handler cannot accept
//! (malformed, unknown schema version), all end in the group's DLQ topic with the reason;
//! good messages next to them are handled. A broker that is down at start-up is a clear error
//! within a bounded time.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use horizons_bus::conformance::{unique_topic, wait_for_dead_letters, RunningRouter};
use horizons_bus::{
    json_handler, Admin, Backend, Context, Envelope, GroupSpec, HandlerError, Publisher, RetryPolicy, Router,
    TopicSpec, Topology,
};
use horizons_kafka::{codec, KafkaBus, KafkaConfig};
use parking_lot::Mutex;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(serde::Deserialize)]
struct Reading {
    v: u32,
    value: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_records_and_payloads_go_to_the_dlq_with_their_reason() {
    let bus = common::connect().await;
    let topic = unique_topic("bad_input");
    let policy = RetryPolicy::fast(3);
    let spec = TopicSpec::new(topic.clone()).group(GroupSpec::new("g").retry(policy.clone()));
    bus.declare(&Topology::new().topic(spec)).await.expect("declare");

    // Written around the adapter, as a foreign or broken producer would.
    let raw: FutureProducer = bus.config().producer().create().expect("producer");
    let good_env = Envelope::new(topic.clone(), &br#"{"v":1,"value":2.5}"#[..]);
    for (hz, what) in [(vec![9u8; 30], "unknown envelope version 9"), (vec![1u8, 2, 3], "malformed envelope header")] {
        let headers = OwnedHeaders::new().insert(Header { key: codec::H_ENVELOPE, value: Some(&hz[..]) });
        let record = FutureRecord::<(), [u8]>::to(topic.as_str()).payload(&b"whatever"[..]).headers(headers);
        raw.send(record, Duration::from_secs(30)).await.unwrap_or_else(|(e, _)| panic!("raw send ({what}): {e}"));
    }
    let unknown_schema = Envelope::new(topic.clone(), &br#"{"v":99,"value":1}"#[..]);
    let malformed = Envelope::new(topic.clone(), &b"{not json"[..]);
    bus.publish_batch(vec![unknown_schema.clone(), malformed.clone(), good_env.clone()]).await.expect("publish");

    let handled = Arc::new(Mutex::new(Vec::new()));
    let log = handled.clone();
    let handler = json_handler(move |r: Reading, _env: Envelope, _cx: Context| {
        let log = log.clone();
        async move {
            if r.v != 1 {
                return Err(HandlerError::permanent(format!("unknown schema version {}", r.v)));
            }
            log.lock().push(r.value);
            Ok(())
        }
    });
    let backend: Arc<dyn Backend> = Arc::new(bus.clone());
    let mut router = RunningRouter::start(Router::new(backend.clone()).route(topic.clone(), "g", policy, 2, handler));
    let dead = wait_for_dead_letters(&backend, &topic, "g", 4).await;
    router.wait_until("the good message is handled", Duration::from_secs(30), || !handled.lock().is_empty()).await;
    router.stop().await;

    assert_eq!(*handled.lock(), [2.5]);
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    for expected in
        ["unknown envelope version 9", "malformed envelope header", "unknown schema version 99", "malformed payload"]
    {
        assert!(reasons.iter().any(|r| r.contains(expected)), "no dead letter says {expected:?}: {reasons:?}");
    }
    for d in &dead {
        assert_eq!(d.envelope.topic, topic, "dead letters name their original topic");
        assert!(d.source_position.as_deref().is_some_and(|p| p.starts_with(topic.as_str())), "{d:?}");
    }
    let ids: Vec<_> = dead.iter().map(|d| d.envelope.id).collect();
    assert!(ids.contains(&unknown_schema.id) && ids.contains(&malformed.id), "same ids in the DLQ");
}

#[tokio::test]
async fn a_broker_that_is_down_at_start_up_is_a_clear_error_in_bounded_time() {
    // Nothing listens on port 1 of the loopback.
    let cfg =
        KafkaConfig { brokers: "127.0.0.1:1".into(), admin_timeout: Duration::from_secs(3), ..KafkaConfig::default() };
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), KafkaBus::connect(cfg))
        .await
        .expect("connect must give up on its own")
        .expect_err("no broker there");
    let took = started.elapsed();
    let msg = err.to_string();
    assert!(msg.contains("127.0.0.1:1") && msg.contains("no Kafka broker reachable"), "{msg}");
    assert!(took < Duration::from_secs(10), "gave up after {took:?}");
}
