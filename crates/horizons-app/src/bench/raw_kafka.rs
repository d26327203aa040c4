//! Kafka's `--baseline raw`: the same load through bare rdkafka, in the same run.
//!
//! The very producer and consumer settings of the adapter ([`KafkaConfig::producer`] and
//! [`KafkaConfig::consumer`]: idempotent, `acks=all`, the same linger, batch size and
//! compression, `read_committed`, manual commits), the same payloads, the same publish
//! concurrency (`producers` × `in_flight` batches of `batch`, each batch awaited as a whole),
//! one consumer per partition of a fresh one-partition topic — but no envelope, no delivery
//! objects, no acks: what is left is the client library and the broker, the ceiling the adapter
//! is measured against.
//!
//! [`Records::WithHeader`] runs it again with the records the adapter writes: the same payload
//! plus one 27-byte `hz` header, which the consumer reads back. The difference between the two
//! runs is what carrying the envelope in a Kafka header costs librdkafka and the broker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use horizons_kafka::codec::{HZ_LEN, H_ENVELOPE};
use horizons_kafka::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::load::Load;
use crate::error::AppError;
use crate::payload;

/// Which records the bare run writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Records {
    /// The payload alone.
    PayloadOnly,
    /// The payload and a 27-byte `hz` header, as the adapter writes them; the consumer reads
    /// the header back.
    WithHeader,
}

/// What bare rdkafka achieved.
#[derive(Clone, Debug)]
pub struct RawKafka {
    /// Messages acknowledged per second (first send → last delivery report).
    pub publish_msgs_per_sec: f64,
    /// Messages consumed per second (first → last received).
    pub consume_msgs_per_sec: f64,
    /// First send → last received.
    pub end_to_end_msgs_per_sec: f64,
    /// Payload MB/s end to end.
    pub mb_per_sec: f64,
}

fn kafka_err(context: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> AppError {
    move |e| AppError::Bench(format!("raw rdkafka baseline: {context}: {e}"))
}

/// Deletes the adapter's bench topic (with its retry and dead-letter topics): a broker keeps
/// topics, and a million-message bench leaves ~150 MB behind otherwise. Best effort.
pub async fn cleanup(cfg: &KafkaConfig, topic: &horizons_bus::Topic) {
    let deleted = match horizons_kafka::KafkaBus::connect(cfg.clone()).await {
        Ok(bus) => bus.delete_topics_with_prefix(topic.as_str()).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = deleted {
        tracing::warn!(%topic, error = %e, "could not delete the bench topic");
    }
}

/// Runs `load` through bare rdkafka on a topic of its own, deleted afterwards.
pub async fn run(cfg: &KafkaConfig, load: &Load, records: Records) -> Result<RawKafka, AppError> {
    let topic = format!("bench-raw-{}", &uuid_hex()[..16]);
    let admin: AdminClient<DefaultClientContext> = cfg.admin().create().map_err(kafka_err("admin client"))?;
    let opts = AdminOptions::new().operation_timeout(Some(cfg.admin_timeout));
    let new = NewTopic::new(&topic, 1, TopicReplication::Fixed(cfg.replication_factor))
        .set("message.timestamp.type", "LogAppendTime");
    admin.create_topics([&new], &opts).await.map_err(kafka_err("creating the topic"))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let result = measure(cfg, load, &topic, records).await;
    let _ = admin.delete_topics(&[&topic], &opts).await;
    result
}

async fn measure(cfg: &KafkaConfig, load: &Load, topic: &str, records: Records) -> Result<RawKafka, AppError> {
    let n = load.messages;
    let consumer: BaseConsumer = cfg.consumer(&format!("{topic}-group")).create().map_err(kafka_err("consumer"))?;
    consumer.subscribe(&[topic]).map_err(kafka_err("subscribing"))?;
    let (first, last) = (Arc::new(AtomicU64::new(u64::MAX)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let reader = {
        let (first, last, stop, topic) = (first.clone(), last.clone(), stop.clone(), topic.to_string());
        let every = cfg.commit_interval;
        std::thread::spawn(move || {
            let (mut count, mut next, mut last_commit) = (0u64, 0i64, Instant::now());
            while count < n && !stop.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    if records == Records::WithHeader {
                        // As the adapter does: librdkafka parses a record's headers when asked.
                        let hz = m.headers().and_then(|h| h.iter().find(|h| h.key == H_ENVELOPE)).and_then(|h| h.value);
                        if hz.map(<[u8]>::len) != Some(HZ_LEN) {
                            stop.store(true, Ordering::Relaxed);
                            break;
                        }
                    }
                    let now = t0.elapsed().as_nanos() as u64;
                    first.fetch_min(now, Ordering::Relaxed);
                    last.store(now, Ordering::Relaxed);
                    next = m.offset() + 1;
                    count += 1;
                }
                if last_commit.elapsed() >= every && next > 0 {
                    let mut tpl = TopicPartitionList::new();
                    let _ = tpl.add_partition_offset(&topic, 0, Offset::Offset(next));
                    let _ = consumer.commit(&tpl, CommitMode::Async);
                    last_commit = Instant::now();
                }
            }
            count
        })
    };

    let producer: FutureProducer = cfg.producer().create().map_err(kafka_err("producer"))?;
    let started = t0.elapsed();
    let share = n.div_ceil(load.producers.max(1) as u64);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..load.producers.max(1) as u64 {
        let (lo, hi) = (i * share, ((i + 1) * share).min(n));
        let (producer, topic, load) = (producer.clone(), topic.to_string(), load.clone());
        tasks.spawn(async move { produce(&producer, &topic, lo..hi, &load, t0, records).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| AppError::Task(format!("raw producer: {e}")))??;
    }
    let published = t0.elapsed() - started;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !reader.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let got = tokio::task::spawn_blocking(move || reader.join().unwrap_or(0))
        .await
        .map_err(|e| AppError::Task(format!("raw consumer: {e}")))?;
    if got < n {
        return Err(AppError::Bench(format!("raw rdkafka baseline: consumed {got} of {n} messages")));
    }
    let ns = |a: &AtomicU64| Duration::from_nanos(a.load(Ordering::Relaxed));
    let rate = |d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let e2e = rate(ns(&last).saturating_sub(started));
    Ok(RawKafka {
        publish_msgs_per_sec: rate(published),
        consume_msgs_per_sec: rate(ns(&last).saturating_sub(ns(&first))),
        end_to_end_msgs_per_sec: e2e,
        mb_per_sec: e2e * load.size as f64 / 1e6,
    })
}

/// Sends `range` in batches of `load.batch`, `load.in_flight` batches outstanding.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    range: std::ops::Range<u64>,
    load: &Load,
    t0: Instant,
    records: Records,
) -> Result<(), AppError> {
    let batch = load.batch.max(1) as u64;
    let last = range.end;
    let send_batch = |start: u64| async move {
        let end = (start + batch).min(last);
        let stamp = t0.elapsed().as_nanos() as u64;
        let mut pending = Vec::with_capacity((end - start) as usize);
        for seq in start..end {
            let mut p = vec![0u8; load.size];
            payload::fill(seq, &mut p);
            payload::stamp(&mut p, stamp);
            let mut record = FutureRecord::<(), [u8]>::to(topic).payload(&p[..]);
            if records == Records::WithHeader {
                // The adapter's envelope header: version, 16-byte id, timestamp, priority, flags.
                let mut hz = [0u8; HZ_LEN];
                hz[0] = 1;
                hz[1..9].copy_from_slice(&seq.to_be_bytes());
                hz[17..25].copy_from_slice(&(stamp as i64).to_be_bytes());
                record = record
                    .headers(OwnedHeaders::new_with_capacity(1).insert(Header { key: H_ENVELOPE, value: Some(&hz) }));
            }
            loop {
                match producer.send_result(record) {
                    Ok(f) => break pending.push(f),
                    Err((_, r)) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }
        for f in pending {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(kafka_err("delivery")(e)),
                Err(_) => return Err(AppError::Bench("raw rdkafka baseline: delivery cancelled".into())),
            }
        }
        Ok(())
    };
    let starts = (range.start..range.end).step_by(batch as usize);
    let mut acks = futures::stream::iter(starts).map(send_batch).buffer_unordered(load.in_flight.max(1));
    while let Some(r) = acks.next().await {
        r?;
    }
    Ok(())
}

fn uuid_hex() -> String {
    format!("{:032x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()))
        .chars()
        .rev()
        .collect()
}
