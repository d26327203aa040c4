//! A consumer killed with SIGKILL before it acks: the message goes to the next consumer, and
//! once the work queue's `x-delivery-limit` is used up it lands in the group's DLQ with a
//! reason. The consumer is a child process (`horizons-amqp-crash-consumer`) that takes one
//! delivery and hangs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use horizons_amqp::{AmqpBus, AmqpConfig};
use horizons_bus::{
    Admin, DeadLetters, Envelope, GroupSpec, Publisher, RetryPolicy, SubscribeOptions, Subscriber, Topic, TopicSpec,
    Topology,
};

/// Runs the crash consumer until it reports a delivery, kills it with SIGKILL, and returns
/// the reported (id, attempt).
fn crash_once(cfg: &AmqpConfig, topic: &Topic) -> (String, u32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_horizons-amqp-crash-consumer"))
        .args([topic.as_str(), "g"])
        .env("HORIZONS_AMQP_URL", cfg.url.expose())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the crash consumer");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60));
    child.kill().expect("SIGKILL the consumer");
    let status = child.wait().expect("reap the consumer");
    let line = line.unwrap_or_else(|_| panic!("the crash consumer reported no delivery within 60 s ({status})"));
    let mut words = line.split_whitespace().skip(1);
    let id = words.next().expect("an id").to_string();
    let attempt = words.next().and_then(|a| a.parse().ok()).expect("an attempt");
    (id, attempt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_consumer_redelivers_then_dead_letters() -> anyhow::Result<()> {
    let cfg = AmqpConfig {
        delivery_limit: Some(2),
        queue_expires: Some(Duration::from_secs(1200)),
        ..AmqpConfig::from_env()
    };
    let bus = AmqpBus::connect(cfg.clone()).await?;
    let topic = Topic::new(format!("sigkill-{}", &uuid::Uuid::now_v7().simple().to_string()[16..]))?;
    let group = GroupSpec::new("g").retry(RetryPolicy::fast(5));
    bus.declare(&Topology::new().topic(TopicSpec::new(topic.clone()).group(group))).await?;
    let msg = Envelope::new(topic.clone(), &b"work"[..]);
    bus.publish(msg.clone()).await?;

    // x-delivery-limit 2: the third return dead-letters it.
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let cfg = cfg.clone();
        let topic = topic.clone();
        let (id, attempt) = tokio::task::spawn_blocking(move || crash_once(&cfg, &topic)).await?;
        assert_eq!(id, msg.id.to_string(), "the killed consumer's message must come back to the next one");
        attempts.push(attempt);
    }
    assert_eq!(attempts, [1, 2, 3], "each consumer after a crash gets the message with a higher attempt");

    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = bus.dlq_list(&topic, "g", 10).await?;
        if !dead.is_empty() || Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead.len(), 1, "after the delivery limit the message is in the DLQ: {dead:?}");
    assert_eq!(dead[0].envelope.id, msg.id);
    assert_eq!(dead[0].envelope.payload, msg.payload);
    assert!(dead[0].reason.contains("x-delivery-limit"), "the reason says why: {}", dead[0].reason);
    assert!(dead[0].attempts >= 3, "attempts recorded: {}", dead[0].attempts);

    let sub = bus.subscribe(&topic, "g", SubscribeOptions { prefetch: 1 }).await?;
    assert!(sub.next_timeout(Duration::from_secs(1)).await.is_none(), "a dead-lettered message is not delivered again");
    bus.delete(&bus.declared()).await?;
    Ok(())
}
