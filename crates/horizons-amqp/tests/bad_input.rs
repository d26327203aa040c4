//! Bad input never crashes a consumer and is never dropped silently: a malformed payload, an
//! unknown event type and an oversize message (over the topic's `max_message_bytes`, sent by
//! a producer that did not check) each end in the group's DLQ with the reason in its headers,
//! while a good message next to them is handled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use horizons_amqp::{AmqpBus, AmqpConfig};
use horizons_bus::{
    dlq_headers, json_handler, Admin, Context, DeadLetters, Envelope, GroupSpec, HandlerError, Publisher, RetryPolicy,
    Router, Topic, TopicSpec, Topology,
};
use lapin::options::BasicPublishOptions;
use parking_lot::Mutex;

#[derive(serde::Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_reaches_the_dlq_with_its_reason() -> anyhow::Result<()> {
    let cfg = AmqpConfig::from_env();
    let bus = Arc::new(AmqpBus::connect(cfg.clone()).await?);
    let topic = Topic::new(format!("bad-input-{}", &uuid::Uuid::now_v7().simple().to_string()[16..]))?;
    let policy = RetryPolicy::fast(3);
    let spec = TopicSpec::new(topic.clone()).max_message_bytes(1024).group(GroupSpec::new("g").retry(policy.clone()));
    bus.declare(&Topology::new().topic(spec)).await?;

    let good = Envelope::new(topic.clone(), &br#"{"type": "comment.created"}"#[..]);
    let malformed = Envelope::new(topic.clone(), &b"{not json"[..]);
    let unknown = Envelope::new(topic.clone(), &br#"{"type": "comment.exploded"}"#[..]);
    bus.publish_batch(vec![good.clone(), malformed.clone(), unknown.clone()]).await?;
    // An oversize message from a producer that skipped the size check: straight through lapin.
    let oversize = Envelope::new(topic.clone(), vec![b'x'; 4096]);
    let conn = lapin::Connection::connect(cfg.url.expose(), lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let props = lapin::BasicProperties::default().with_message_id(oversize.id.to_string().into()).with_delivery_mode(2);
    let exchange = format!("hz:{topic}:direct");
    ch.basic_publish(exchange.into(), "4.0".into(), BasicPublishOptions::default(), &oversize.payload, props).await?;
    conn.close(200, "done".into()).await?;

    let handled = Arc::new(Mutex::new(Vec::new()));
    let log = handled.clone();
    let handler = json_handler(move |e: Event, _env: Envelope, _cx: Context| {
        let log = log.clone();
        async move {
            if e.kind != "comment.created" {
                return Err(HandlerError::permanent(format!("unknown event type {}", e.kind)));
            }
            log.lock().push(e.kind);
            Ok(())
        }
    });
    let cancel = tokio_util::sync::CancellationToken::new();
    let router = Router::new(bus.clone()).route(topic.clone(), "g", policy, 2, handler);
    let running = tokio::spawn(router.run(cancel.clone()));

    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = bus.dlq_list(&topic, "g", 10).await?;
        if dead.len() >= 3 || Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    cancel.cancel();
    running.await??;
    assert_eq!(*handled.lock(), ["comment.created"], "the good message is handled once");
    let reason_of = |id| dead.iter().find(|d| d.envelope.id == id).map(|d| d.reason.clone());
    let expect = [(malformed.id, "malformed payload"), (unknown.id, "unknown event type"), (oversize.id, "oversize")];
    for (id, why) in expect {
        let reason = reason_of(id).unwrap_or_else(|| panic!("{why}: message {id} is not in the DLQ: {dead:?}"));
        assert!(reason.contains(why), "{why}: reason {reason:?}");
    }
    for d in &dead {
        assert!(!d.envelope.headers.contains_key(dlq_headers::REASON), "DLQ headers are stripped when listed");
        assert_eq!(d.attempts, 1, "bad input is not retried: {d:?}");
    }
    bus.delete(&bus.declared()).await?;
    Ok(())
}
