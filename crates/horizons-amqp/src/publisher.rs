//! Publishing: pipelined publisher confirms, `mandatory`, and resending across reconnects.
//!
//! A batch is sent on one channel (so its order holds) without waiting between messages: each
//! `basic.publish` is polled once, which queues its frames in order, and its confirm is
//! collected later. At most `confirm_window` confirms are outstanding per channel (a
//! semaphore shared by every caller of that channel). Channels are used round robin.
//!
//! A message is done when the broker acks it. A returned message (unroutable, `mandatory`)
//! or a nack fails the call. When the channel or connection dies, the messages not yet
//! confirmed are published again, same ids, on the next connection: callers see at most a
//! delay of up to `unavailable_wait`, and consumers may see duplicates (at-least-once).
//!
//! # Delays
//! A message with a future `not_before`, and a `retry_after` of a `requeue` group, go through
//! the delay ladder ([`crate::topology::declare_ladder`]): the routing key spells the delay in
//! milliseconds as 25 bits, highest first. Ladder exchange `k` routes bit `k` = 1 into queue
//! `k` (message TTL 2^k ms), which dead-letters into exchange `k − 1` when it expires, and bit
//! 0 straight on; the total wait is the delay. The last step, a headers exchange, releases a
//! delayed publish into its topic (`hz-fanout`) and a retry into its one queue (`hz-dest`).
//! All ladder queues hold messages of one TTL each, so expiry is in order.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use horizons_bus::{now_millis, BusError, Envelope, Publisher, Topic};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};
use parking_lot::RwLock;
use tokio::sync::Semaphore;

use crate::codec::{self, Trail};
use crate::config::AmqpConfig;
use crate::connection::Live;
use crate::topology::{self, DELAY_BITS};
use crate::{AmqpBus, AmqpError, Inner};

/// One message ready for the wire.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub props: BasicProperties,
    pub payload: Bytes,
    pub id: String,
}

impl Outgoing {
    /// `env` to its topic, or through the delay ladder if `not_before` is in the future.
    pub fn to_topic(env: &Envelope) -> Self {
        let rk = topology::routing_key(env);
        let wait = env.not_before.map_or(0, |nb| nb - now_millis());
        if wait > 0 {
            let ms = topology::delay_ms(Duration::from_millis(wait as u64));
            let props = codec::encode(env, &Trail::default(), &[(codec::H_FANOUT, env.topic.as_str())]);
            return Self::ladder(env, ms, &rk, props);
        }
        let props = codec::encode(env, &Trail::default(), &[]);
        Self {
            exchange: topology::direct_exchange(&env.topic),
            routing_key: rk,
            props,
            payload: env.payload.clone(),
            id: env.id.to_string(),
        }
    }

    /// `env` straight into `queue` (default exchange), or into it after `delay`.
    pub fn to_queue(env: &Envelope, trail: &Trail, queue: &str, delay: Duration) -> Self {
        let ms = topology::delay_ms(delay);
        if ms > 0 {
            let props = codec::encode(env, trail, &[(codec::H_DEST, queue)]);
            return Self::ladder(env, ms, "r", props);
        }
        let props = codec::encode(env, trail, &[]);
        Self {
            exchange: String::new(),
            routing_key: queue.into(),
            props,
            payload: env.payload.clone(),
            id: env.id.to_string(),
        }
    }

    fn ladder(env: &Envelope, ms: u64, tail: &str, props: BasicProperties) -> Self {
        Self {
            exchange: topology::delay_exchange(DELAY_BITS - 1),
            routing_key: topology::delay_routing_key(ms, tail),
            props,
            payload: env.payload.clone(),
            id: env.id.to_string(),
        }
    }
}

#[derive(Clone)]
struct PubChannel {
    gen: u64,
    ch: Channel,
    window: Arc<Semaphore>,
}

/// The publishing channels of a bus, and topics known to exist.
pub(crate) struct Channels {
    slots: Vec<tokio::sync::Mutex<Option<PubChannel>>>,
    next: AtomicUsize,
    window: usize,
    /// Topics declared by another process, found by a passive declare.
    external: RwLock<HashSet<Topic>>,
}

impl Channels {
    pub fn new(cfg: &AmqpConfig) -> Self {
        Self {
            slots: (0..cfg.publish_channels).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            window: cfg.confirm_window,
            external: RwLock::new(HashSet::new()),
        }
    }

    async fn get(&self, live: &Live) -> Result<PubChannel, BusError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(p) = &*slot {
            if p.gen == live.gen && p.ch.status().connected() {
                return Ok(p.clone());
            }
        }
        let ch = live.channel("publishing").await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| AmqpError::lapin("enabling publisher confirms", e))?;
        let p = PubChannel { gen: live.gen, ch, window: Arc::new(Semaphore::new(self.window)) };
        *slot = Some(p.clone());
        Ok(p)
    }
}

/// How one message ended on one channel.
enum Outcome {
    Confirmed,
    /// The channel or connection failed: try again on the next one.
    Lost(lapin::Error),
    Failed(BusError),
}

fn outcome(o: &Outgoing, r: lapin::Result<Confirmation>) -> Outcome {
    match r {
        Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => Outcome::Confirmed,
        Ok(Confirmation::Ack(Some(_))) => Outcome::Failed(
            AmqpError::Unroutable {
                id: o.id.clone(),
                exchange: o.exchange.clone(),
                routing_key: o.routing_key.clone(),
            }
            .into(),
        ),
        Ok(Confirmation::Nack(_)) => {
            Outcome::Failed(AmqpError::Nacked { id: o.id.clone(), exchange: o.exchange.clone() }.into())
        }
        Err(e) if AmqpError::soft_code(&e) == Some(404) => {
            Outcome::Failed(AmqpError::lapin(format!("publishing to {}", o.exchange), e).into())
        }
        Err(e) => Outcome::Lost(e),
    }
}

/// Publishes one pass of `items` on `p`; returns each item's outcome.
async fn pass(p: &PubChannel, items: &[&Outgoing]) -> Vec<Outcome> {
    let mut out: Vec<Option<Outcome>> = items.iter().map(|_| None).collect();
    let mut inflight = FuturesUnordered::new();
    let opts = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    for (i, o) in items.iter().enumerate() {
        let permit = loop {
            tokio::select! {
                biased;
                Some((j, r)) = inflight.next(), if !inflight.is_empty() => out[j] = Some(outcome(items[j], r)),
                p = p.window.clone().acquire_owned() => break p.ok(),
            }
        };
        let ch = &p.ch;
        let mut fut = Box::pin(async move {
            let r = match ch
                .basic_publish(
                    o.exchange.as_str().into(),
                    o.routing_key.as_str().into(),
                    opts,
                    &o.payload,
                    o.props.clone(),
                )
                .await
            {
                Ok(confirm) => confirm.await,
                Err(e) => Err(e),
            };
            drop(permit);
            (i, r)
        });
        // The first poll queues the frames, so messages leave in batch order.
        match futures::poll!(&mut fut) {
            std::task::Poll::Ready((j, r)) => out[j] = Some(outcome(items[j], r)),
            std::task::Poll::Pending => inflight.push(fut),
        }
    }
    while let Some((j, r)) = inflight.next().await {
        out[j] = Some(outcome(items[j], r));
    }
    out.into_iter().map(|o| o.unwrap_or(Outcome::Failed(BusError::Unavailable("publish lost".into())))).collect()
}

impl Inner {
    /// Publishes `items`, resending unconfirmed ones across reconnects for up to
    /// `unavailable_wait`; `Ok` once every one is confirmed.
    pub(crate) async fn send(&self, items: Vec<Outgoing>) -> Result<(), BusError> {
        let deadline = tokio::time::Instant::now() + self.cfg.unavailable_wait;
        let mut pending: Vec<Outgoing> = items;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let live = self.conn.live(Some(left)).await?;
            let p = match self.publisher.get(&live).await {
                Ok(p) => p,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "no publishing channel; retrying");
                    self.conn.report(live.gen);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let refs: Vec<&Outgoing> = pending.iter().collect();
            let outcomes = pass(&p, &refs).await;
            let mut again = Vec::new();
            let mut lost = None;
            for (o, r) in pending.iter().zip(outcomes) {
                match r {
                    Outcome::Confirmed => {}
                    Outcome::Failed(e) => return Err(e),
                    Outcome::Lost(e) => {
                        lost.get_or_insert(e);
                        again.push(o.clone());
                    }
                }
            }
            let Some(e) = lost else { return Ok(()) };
            tracing::warn!(error = %e, unconfirmed = again.len(), "publishing channel lost; resending");
            self.conn.report(live.gen);
            if tokio::time::Instant::now() >= deadline {
                return Err(AmqpError::lapin(format!("publishing {} message(s)", again.len()), e).into());
            }
            pending = again;
        }
    }

    /// The size limit of `topic`, checking that it exists.
    async fn topic_limit(&self, topic: &Topic) -> Result<usize, BusError> {
        if let Some(t) = self.topics.read().get(topic) {
            return Ok(t.max_message_bytes);
        }
        if self.publisher.external.read().contains(topic) {
            return Ok(self.cfg.max_message_bytes);
        }
        let live = self.conn.live(Some(self.cfg.unavailable_wait)).await?;
        let ch = live.channel("checking a topic").await?;
        let opts = ExchangeDeclareOptions { passive: true, durable: true, ..ExchangeDeclareOptions::default() };
        match ch
            .exchange_declare(
                topology::direct_exchange(topic).into(),
                ExchangeKind::Direct,
                opts,
                FieldTable::default(),
            )
            .await
        {
            Ok(()) => {
                let _ = ch.close(200, "checked".into()).await;
                self.publisher.external.write().insert(topic.clone());
                Ok(self.cfg.max_message_bytes)
            }
            Err(e) if AmqpError::soft_code(&e) == Some(404) => Err(BusError::UnknownTopic(topic.to_string())),
            Err(e) => Err(AmqpError::lapin(format!("checking topic {topic}"), e).into()),
        }
    }
}

#[async_trait]
impl Publisher for AmqpBus {
    async fn publish_batch(&self, msgs: Vec<Envelope>) -> Result<(), BusError> {
        if msgs.is_empty() {
            return Ok(());
        }
        let mut items = Vec::with_capacity(msgs.len());
        let mut limit: Option<(Topic, usize)> = None;
        for env in &msgs {
            let max = match &limit {
                Some((t, max)) if *t == env.topic => *max,
                _ => {
                    let max = self.inner.topic_limit(&env.topic).await?;
                    limit = Some((env.topic.clone(), max));
                    max
                }
            };
            let size = env.wire_size();
            if size > max {
                return Err(BusError::TooLarge { topic: env.topic.to_string(), size, max });
            }
            items.push(Outgoing::to_topic(env));
        }
        self.inner.send(items).await
    }
}
