//! RabbitMQ's `--baseline raw`: the same load through bare lapin, in the same run.
//!
//! One fresh durable quorum queue (the adapter's queue type) on the default exchange;
//! persistent messages with the same payloads; publisher confirms on `publish_channels`
//! channels, each keeping up to `confirm_window` confirms outstanding (the adapter's window),
//! with the load's producers sharing them; `consumers` consumers on channels of their own with
//! `basic.qos` = the load's prefetch, acking every delivery on its own, or with `ack_every` = N
//! every Nth of its channel with `multiple` (and the run's last). No envelope, no priorities, no
//! leases: what is left is lapin and the broker, the ceiling the adapter is measured against.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use horizons_amqp::AmqpConfig;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use super::load::Load;
use crate::error::AppError;
use crate::payload;

/// What bare lapin achieved.
#[derive(Clone, Debug)]
pub struct RawAmqp {
    /// Messages confirmed per second (first publish → last confirm).
    pub publish_msgs_per_sec: f64,
    /// Messages consumed per second (first → last received).
    pub consume_msgs_per_sec: f64,
    /// First publish → last received.
    pub end_to_end_msgs_per_sec: f64,
    /// Payload MB/s end to end.
    pub mb_per_sec: f64,
}

fn err(context: &'static str) -> impl FnOnce(lapin::Error) -> AppError {
    move |e| AppError::Bench(format!("raw lapin baseline: {context}: {e}"))
}

/// Deletes the queues and exchanges the adapter declared for a bench's topic: a run leaves the
/// broker as it found it (quorum queues that pile up until they expire slow a small broker down).
pub async fn cleanup(cfg: &AmqpConfig, spec: horizons_bus::TopicSpec) {
    let topic = spec.name.clone();
    let deleted = match horizons_amqp::AmqpBus::connect(cfg.clone()).await {
        Ok(bus) => {
            let r = bus.delete(&[spec]).await.map_err(|e| e.to_string());
            let _ = horizons_bus::Backend::close(&bus).await;
            r
        }
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = deleted {
        tracing::warn!(%topic, error = %e, "could not delete the bench topic's queues");
    }
}

/// Runs `load` through bare lapin on a queue of its own, deleted afterwards.
pub async fn run(cfg: &AmqpConfig, load: &Load, ack_every: u64) -> Result<RawAmqp, AppError> {
    let conn = Connection::connect(cfg.url.expose(), ConnectionProperties::default())
        .await
        .map_err(|e| AppError::Bench(format!("raw lapin baseline: connecting to {}: {e}", cfg.url)))?;
    let queue = format!("bench-raw-{}", &horizons_bus::MessageId::new().0.simple().to_string()[16..]);
    let admin = conn.create_channel().await.map_err(err("opening a channel"))?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    admin
        .queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args)
        .await
        .map_err(err("declaring the queue"))?;
    let result = measure(&conn, cfg, load, &queue, ack_every.max(1)).await;
    let _ = admin.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = conn.close(200, "done".into()).await;
    result
}

async fn measure(
    conn: &Connection,
    cfg: &AmqpConfig,
    load: &Load,
    queue: &str,
    ack_every: u64,
) -> Result<RawAmqp, AppError> {
    let n = load.messages;
    let t0 = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let (first_ns, last_ns) = (Arc::new(AtomicU64::new(u64::MAX)), Arc::new(AtomicU64::new(0)));
    let mut consumers = tokio::task::JoinSet::new();
    for _ in 0..load.consumers.max(1) {
        let ch = conn.create_channel().await.map_err(err("opening a consumer channel"))?;
        let prefetch = load.prefetch.clamp(1, usize::from(u16::MAX)) as u16;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(err("basic.qos"))?;
        let mut deliveries = ch
            .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(err("basic.consume"))?;
        let (received, first_ns, last_ns) = (received.clone(), first_ns.clone(), last_ns.clone());
        consumers.spawn(async move {
            while let Some(d) = deliveries.next().await {
                let d = d.map_err(err("consuming"))?;
                let now = t0.elapsed().as_nanos() as u64;
                if payload::check(&d.data, payload::STAMP_RANGE).is_none() {
                    return Err(AppError::Bench("raw lapin baseline: corrupt payload".into()));
                }
                first_ns.fetch_min(now, Ordering::Relaxed);
                last_ns.fetch_max(now, Ordering::Relaxed);
                let last = received.fetch_add(1, Ordering::AcqRel) + 1 >= n;
                if ack_every == 1 || d.delivery_tag % ack_every == 0 || last {
                    let opts = BasicAckOptions { multiple: ack_every > 1 };
                    d.acker.ack(opts).await.map_err(err("acking"))?;
                }
                if last {
                    break;
                }
            }
            drop(ch);
            Ok::<(), AppError>(())
        });
    }

    let mut channels = Vec::new();
    for _ in 0..cfg.publish_channels.max(1) {
        let ch = conn.create_channel().await.map_err(err("opening a publisher channel"))?;
        ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(err("confirm.select"))?;
        channels.push(ch);
    }
    let publish_started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut producers = tokio::task::JoinSet::new();
    for p in 0..load.producers.max(1) {
        let (ch, next, queue) = (channels[p % channels.len()].clone(), next.clone(), queue.to_string());
        let (size, window) = (load.size, cfg.confirm_window.max(1) / load.producers.div_ceil(channels.len()).max(1));
        producers.spawn(async move { produce(ch, &queue, next, n, size, window.max(1), t0).await });
    }
    while let Some(r) = producers.join_next().await {
        r.map_err(|e| AppError::Task(format!("raw lapin producer: {e}")))??;
    }
    let publish = publish_started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(Ordering::Acquire) < n {
        if Instant::now() > deadline {
            return Err(AppError::Bench(format!(
                "raw lapin baseline: {} of {n} received",
                received.load(Ordering::Acquire)
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    consumers.abort_all();
    let secs = |d: Duration| d.as_secs_f64().max(1e-9);
    let ns = |a: &AtomicU64| Duration::from_nanos(a.load(Ordering::Relaxed));
    let end_to_end = ns(&last_ns).saturating_sub(publish_started - t0);
    let e2e = n as f64 / secs(end_to_end);
    Ok(RawAmqp {
        publish_msgs_per_sec: n as f64 / secs(publish),
        consume_msgs_per_sec: n as f64 / secs(ns(&last_ns).saturating_sub(ns(&first_ns))),
        end_to_end_msgs_per_sec: e2e,
        mb_per_sec: e2e * load.size as f64 / 1e6,
    })
}

/// Publishes sequence numbers taken from `next` until `n`, keeping up to `window` confirms
/// outstanding on `ch`.
async fn produce(
    ch: Channel,
    queue: &str,
    next: Arc<AtomicU64>,
    n: u64,
    size: usize,
    window: usize,
    t0: Instant,
) -> Result<(), AppError> {
    let mut inflight = FuturesUnordered::new();
    let mut body = vec![0u8; size];
    loop {
        while inflight.len() >= window {
            check(inflight.next().await)?;
        }
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= n {
            break;
        }
        payload::fill(seq, &mut body);
        payload::stamp(&mut body, t0.elapsed().as_nanos() as u64);
        let props = BasicProperties::default().with_delivery_mode(2);
        let confirm = ch
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &body, props)
            .await
            .map_err(err("basic.publish"))?;
        inflight.push(confirm);
    }
    while !inflight.is_empty() {
        check(inflight.next().await)?;
    }
    Ok(())
}

fn check(c: Option<lapin::Result<Confirmation>>) -> Result<(), AppError> {
    match c {
        Some(Ok(Confirmation::Ack(None))) | None => Ok(()),
        Some(Ok(other)) => Err(AppError::Bench(format!("raw lapin baseline: not confirmed: {other:?}"))),
        Some(Err(e)) => Err(err("waiting for a confirm")(e)),
    }
}
