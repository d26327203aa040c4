//! Topology: the bus's topics and groups as RabbitMQ exchanges, quorum queues and bindings.
//!
//! Names use `:`, which topic and group names cannot contain, so they never collide:
//!
//! | object | name | what |
//! |---|---|---|
//! | direct exchange | `hz:T:direct` | one per topic, what publishes go to; routing key `<priority>.<bucket>` |
//! | topic exchange | `hz:T` | one per topic, for delayed publishes coming out of the ladder (their routing key starts with the delay's bits) |
//! | priority queue | `hz:T:G:p0` … `p9` | a `requeue` group: one quorum queue per level, bound to the direct exchange with the 64 keys `<level>.<b>` and to the topic exchange with `#.<level>.*` |
//! | shard queue | `hz:T:G:s0` … | a `block-key` group: `block_key_shards` quorum queues with `x-single-active-consumer`, shard `i` bound to the buckets `b ≡ i (mod n)` (every `<p>.<b>` on the direct exchange, `#.*.<b>` on the topic exchange) |
//! | dead letters | `hz:T:G:dlq` | one quorum queue per group |
//! | delay ladder | `hz:delay:xNN` / `hz:delay:qNN`, `hz:delay:out` | shared by everything; see [`crate::publisher`] |
//!
//! Why two exchanges: a topic exchange matches every routing key against a trie of patterns,
//! and on a 2-core broker that cost a third of the throughput of a confirmed, persistent stream
//! (README, RabbitMQ section). A direct exchange looks the key up in a table, so the hot path
//! goes through one, at the price of 640 exact bindings per group (declared without waiting
//! for each reply, then checked with one synchronous call). Delayed publishes carry the ladder's
//! bits in front of the key, which only a pattern can match, so they keep the topic exchange.
//!
//! The bucket is a hash of the key (of the id for keyless messages) into 64 buckets, so a key
//! always lands in the same shard. Work queues dead-letter (`x-dead-letter-strategy =
//! at-least-once`, `x-overflow = reject-publish`) to the group's DLQ once `x-delivery-limit`
//! returns are exceeded: the crash-loop backstop.
//!
//! Redeclaring is idempotent. A conflict is found twice: against what this process declared
//! (every field of the bus's `TopicSpec`), and by the broker, whose `PRECONDITION_FAILED`
//! ("inequivalent arg 'x-delivery-limit' for queue …") becomes a `TopologyConflict` naming the
//! queue and the argument. A group's ordering mode and shard count, which are not queue
//! arguments, are checked by looking for the other layout's queues.

use std::time::Duration;

use async_trait::async_trait;
use horizons_bus::{
    Admin, BusError, Envelope, GroupInfo, GroupSpec, OrderingMode, Topic, TopicInfo, TopicSpec, Topology,
};
use lapin::options::{ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::config::AmqpConfig;
use crate::connection::Live;
use crate::{codec, AmqpBus, AmqpError, Inner};

/// Buckets keys are hashed into; shards take buckets modulo their count.
pub const BUCKETS: u32 = 64;
/// Priority levels, one queue each in a `requeue` group.
pub const LEVELS: usize = 10;
/// Delay ladder levels: level `k` holds messages for 2^k ms, so delays up to 2^25 − 1 ms (9.3 h).
pub const DELAY_BITS: u32 = 25;
/// Where the delay ladder releases messages: a headers exchange.
pub(crate) const DELAY_OUT: &str = "hz:delay:out";

pub(crate) fn exchange(topic: &Topic) -> String {
    format!("hz:{topic}")
}
/// The direct exchange publishes go to.
pub(crate) fn direct_exchange(topic: &Topic) -> String {
    format!("hz:{topic}:direct")
}
pub(crate) fn dlq(topic: &Topic, group: &str) -> String {
    format!("hz:{topic}:{group}:dlq")
}
fn level_queue(topic: &Topic, group: &str, level: usize) -> String {
    format!("hz:{topic}:{group}:p{level}")
}
fn shard_queue(topic: &Topic, group: &str, shard: u32) -> String {
    format!("hz:{topic}:{group}:s{shard}")
}
pub(crate) fn delay_exchange(k: u32) -> String {
    format!("hz:delay:x{k:02}")
}
fn delay_queue(k: u32) -> String {
    format!("hz:delay:q{k:02}")
}

/// FNV-1a of the key (or the id) into [`BUCKETS`].
pub(crate) fn bucket(env: &Envelope) -> u32 {
    let id;
    let bytes = match &env.key {
        Some(k) => k.as_bytes(),
        None => {
            id = env.id.0.into_bytes();
            &id[..]
        }
    };
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
    (h % u64::from(BUCKETS)) as u32
}

/// Routing key of `env` on its topic exchange.
pub(crate) fn routing_key(env: &Envelope) -> String {
    format!("{}.{}", env.priority.get(), bucket(env))
}

/// The delay in whole milliseconds, rounded up and capped at the ladder's maximum.
pub(crate) fn delay_ms(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    ms.min((1u128 << DELAY_BITS) - 1) as u64
}

/// Routing key through the ladder: the delay's bits, highest first, then `tail`.
pub(crate) fn delay_routing_key(ms: u64, tail: &str) -> String {
    let mut rk = String::with_capacity(2 * DELAY_BITS as usize + tail.len());
    for k in (0..DELAY_BITS).rev() {
        rk.push(if ms >> k & 1 == 1 { '1' } else { '0' });
        rk.push('.');
    }
    rk.push_str(tail);
    rk
}

/// Where a group's messages live.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub topic: Topic,
    pub group: String,
    pub ordering: OrderingMode,
    /// Priority queues (index = level) or shard queues (index = shard).
    pub queues: Vec<String>,
    pub dlq: String,
    pub visibility: Duration,
    /// `x-delivery-limit` of the work queues.
    pub delivery_limit: u32,
    /// Deliveries larger than this go to the DLQ unhandled (the topic's `max_message_bytes`).
    pub max_bytes: usize,
}

impl Layout {
    pub fn new(cfg: &AmqpConfig, topic: &Topic, g: &GroupSpec) -> Self {
        let queues = match g.ordering {
            OrderingMode::Requeue => (0..LEVELS).map(|l| level_queue(topic, &g.name, l)).collect(),
            OrderingMode::BlockKey => (0..cfg.block_key_shards).map(|s| shard_queue(topic, &g.name, s)).collect(),
        };
        Self {
            topic: topic.clone(),
            group: g.name.clone(),
            ordering: g.ordering,
            queues,
            dlq: dlq(topic, &g.name),
            visibility: g.visibility_timeout,
            delivery_limit: cfg.delivery_limit.unwrap_or(g.retry.max_attempts),
            max_bytes: cfg.max_message_bytes,
        }
    }

    /// The work queue `env` belongs in.
    pub fn target(&self, env: &Envelope) -> &str {
        let i = match self.ordering {
            OrderingMode::Requeue => usize::from(env.priority.get()),
            OrderingMode::BlockKey => (bucket(env) % self.queues.len() as u32) as usize,
        };
        &self.queues[i]
    }
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}
fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}
fn ms(d: Duration) -> AMQPValue {
    AMQPValue::LongLongInt(d.as_millis().min(i64::MAX as u128) as i64)
}

fn quorum(cfg: Option<&AmqpConfig>) -> Vec<(&'static str, AMQPValue)> {
    let mut a = vec![("x-queue-type", s("quorum"))];
    if let Some(e) = cfg.and_then(|c| c.queue_expires) {
        a.push(("x-expires", ms(e)));
    }
    a
}

fn dead_letter_to(exchange: &str, routing_key: Option<&str>) -> Vec<(&'static str, AMQPValue)> {
    let mut a = vec![
        ("x-dead-letter-exchange", s(exchange)),
        ("x-dead-letter-strategy", s("at-least-once")),
        ("x-overflow", s("reject-publish")),
    ];
    if let Some(rk) = routing_key {
        a.push(("x-dead-letter-routing-key", s(rk)));
    }
    a
}

async fn queue(ch: &Channel, name: &str, args: Vec<(&str, AMQPValue)>) -> Result<(), lapin::Error> {
    ch.queue_declare(name.into(), QueueDeclareOptions::durable(), table(&args)).await.map(|_| ())
}

async fn topic_exchange(ch: &Channel, name: &str, kind: ExchangeKind) -> Result<(), lapin::Error> {
    let opts = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    ch.exchange_declare(name.into(), kind, opts, FieldTable::default()).await
}

/// Declares the delay ladder (idempotent): exchange `k` sends bit `k` = 1 to queue `k` (TTL
/// 2^k ms) and bit 0 on to exchange `k − 1`; queue `k` dead-letters to exchange `k − 1`; the
/// last step is [`DELAY_OUT`].
pub(crate) async fn declare_ladder(ch: &Channel) -> Result<(), lapin::Error> {
    topic_exchange(ch, DELAY_OUT, ExchangeKind::Headers).await?;
    for k in 0..DELAY_BITS {
        let next = if k == 0 { DELAY_OUT.to_string() } else { delay_exchange(k - 1) };
        let (x, q) = (delay_exchange(k), delay_queue(k));
        topic_exchange(ch, &x, ExchangeKind::Topic).await?;
        let mut args = quorum(None);
        args.push(("x-message-ttl", AMQPValue::LongLongInt(1 << k)));
        args.extend(dead_letter_to(&next, None));
        queue(ch, &q, args).await?;
        let prefix = "*.".repeat((DELAY_BITS - 1 - k) as usize);
        let bind = QueueBindOptions::default();
        ch.queue_bind(q.as_str().into(), x.as_str().into(), format!("{prefix}1.#").into(), bind, FieldTable::default())
            .await?;
        let (dest, src, rk) = (next.as_str().into(), x.as_str().into(), format!("{prefix}0.#").into());
        ch.exchange_bind(dest, src, rk, ExchangeBindOptions::default(), FieldTable::default()).await?;
    }
    Ok(())
}

/// Declares `spec`'s exchange, groups, queues and bindings on `ch` (idempotent).
pub(crate) async fn declare_topic(ch: &Channel, cfg: &AmqpConfig, spec: &TopicSpec) -> Result<(), lapin::Error> {
    let x = exchange(&spec.name);
    topic_exchange(ch, &x, ExchangeKind::Topic).await?;
    let direct = direct_exchange(&spec.name);
    topic_exchange(ch, &direct, ExchangeKind::Direct).await?;
    let fanout = table(&[("x-match", s("all")), (codec::H_FANOUT, s(spec.name.as_str()))]);
    ch.exchange_bind(x.as_str().into(), DELAY_OUT.into(), "".into(), ExchangeBindOptions::default(), fanout).await?;
    for g in &spec.groups {
        let layout = Layout::new(cfg, &spec.name, g);
        // The DLQ records the ordering mode in an argument the broker compares, so another
        // process declaring the group with the other mode gets PRECONDITION_FAILED: the
        // overflow mode, which does nothing on a queue without a length limit.
        let mut dlq_args = quorum(Some(cfg));
        if g.ordering == OrderingMode::BlockKey {
            dlq_args.push(("x-overflow", s("reject-publish")));
        }
        queue(ch, &layout.dlq, dlq_args).await?;
        let limit = layout.delivery_limit.min(i32::MAX as u32) as i32;
        for (i, q) in layout.queues.iter().enumerate() {
            let mut args = quorum(Some(cfg));
            args.extend(dead_letter_to("", Some(&layout.dlq)));
            args.push(("x-delivery-limit", AMQPValue::LongInt(limit)));
            if g.ordering == OrderingMode::BlockKey {
                args.push(("x-single-active-consumer", AMQPValue::Boolean(true)));
            }
            queue(ch, q, args).await?;
            let (keys, exact): (Vec<String>, Vec<String>) = match g.ordering {
                OrderingMode::Requeue => (vec![format!("#.{i}.*")], (0..BUCKETS).map(|b| format!("{i}.{b}")).collect()),
                OrderingMode::BlockKey => {
                    let n = layout.queues.len() as u32;
                    let mine: Vec<u32> = (0..BUCKETS).filter(|b| b % n == i as u32).collect();
                    (
                        mine.iter().map(|b| format!("#.*.{b}")).collect(),
                        (0..=9).flat_map(|p| mine.iter().map(move |b| format!("{p}.{b}"))).collect(),
                    )
                }
            };
            // Exact keys without waiting for each reply: a failure closes the channel, and the
            // next synchronous call (the next declare, or the check at the end) reports it.
            for rk in exact {
                ch.queue_bind(
                    q.as_str().into(),
                    direct.as_str().into(),
                    rk.into(),
                    QueueBindOptions { nowait: true },
                    FieldTable::default(),
                )
                .await?;
            }
            for rk in keys {
                ch.queue_bind(
                    q.as_str().into(),
                    x.as_str().into(),
                    rk.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            }
            let dest = table(&[("x-match", s("all")), (codec::H_DEST, s(q))]);
            ch.queue_bind(q.as_str().into(), DELAY_OUT.into(), "".into(), QueueBindOptions::default(), dest).await?;
        }
    }
    // The check for the bindings sent without waiting: a synchronous no-op.
    topic_exchange(ch, &direct, ExchangeKind::Direct).await?;
    Ok(())
}

/// The message count of `queue` if it exists (a passive declare on a throwaway channel,
/// since a missing queue closes the channel).
pub(crate) async fn probe(live: &Live, queue: &str) -> Result<Option<u32>, BusError> {
    let ch = live.channel("probing a queue").await?;
    match ch.queue_declare(queue.into(), QueueDeclareOptions::durable().passive(), FieldTable::default()).await {
        Ok(q) => {
            let _ = ch.close(200, "probed".into()).await;
            Ok(Some(q.message_count()))
        }
        Err(e) if AmqpError::soft_code(&e) == Some(404) => Ok(None),
        Err(e) => Err(AmqpError::lapin(format!("probing queue {queue}"), e).into()),
    }
}

/// Checks, against the broker, that `g` does not contradict the layout another process gave
/// the group: the other ordering mode's queues, or a different shard count.
async fn check_layout(cfg: &AmqpConfig, live: &Live, topic: &Topic, g: &GroupSpec) -> Result<(), BusError> {
    let object = format!("{topic}/{}", g.name);
    let conflict = |field: &str, existing: String, declared: String| BusError::TopologyConflict {
        object: object.clone(),
        field: field.into(),
        existing,
        declared,
    };
    // The ordering mode is checked by the broker through the DLQ's arguments; the shard count
    // only by looking for the queues a different count would have made.
    let n = cfg.block_key_shards;
    if g.ordering == OrderingMode::BlockKey && probe(live, &shard_queue(topic, &g.name, 0)).await?.is_some() {
        let more = probe(live, &shard_queue(topic, &g.name, n)).await?.is_some();
        let fewer = !more && n > 1 && probe(live, &shard_queue(topic, &g.name, n - 1)).await?.is_none();
        if more || fewer {
            let existing = if more { format!("more than {n}") } else { format!("fewer than {n}") };
            return Err(conflict("block_key_shards (bus.amqp.block_key_shards)", existing, n.to_string()));
        }
    }
    Ok(())
}

impl Inner {
    /// Declares the ladder and every topic this process declared, on a new connection.
    pub(crate) async fn redeclare(&self, live: &Live) -> Result<(), BusError> {
        let topics: Vec<TopicSpec> = self.topics.read().values().cloned().collect();
        if topics.is_empty() {
            return Ok(());
        }
        let ch = live.channel("redeclaring the topology").await?;
        declare_ladder(&ch).await.map_err(|e| AmqpError::declare("the delay ladder", e))?;
        for t in &topics {
            declare_topic(&ch, &self.cfg, t).await.map_err(|e| AmqpError::declare(t.name.as_str(), e))?;
        }
        let _ = ch.close(200, "redeclared".into()).await;
        Ok(())
    }
}

fn check_names(t: &TopicSpec) -> Result<(), BusError> {
    for g in &t.groups {
        let longest = level_queue(&t.name, &g.name, 9).len().max(shard_queue(&t.name, &g.name, BUCKETS).len());
        if longest > 255 {
            return Err(BusError::InvalidName {
                what: "group",
                name: g.name.clone(),
                reason: format!("with topic {} it makes a {longest}-byte queue name; RabbitMQ allows 255", t.name),
            });
        }
    }
    Ok(())
}

#[async_trait]
impl Admin for AmqpBus {
    async fn declare(&self, topology: &Topology) -> Result<(), BusError> {
        topology.validate()?;
        let inner = &self.inner;
        for t in &topology.topics {
            check_names(t)?;
            if let Some(existing) = inner.topics.read().get(&t.name) {
                t.check_compatible(existing)?;
            }
        }
        let _one_at_a_time = inner.declaring.lock().await;
        let live = inner.conn.live(Some(inner.cfg.unavailable_wait)).await?;
        for t in &topology.topics {
            let known = inner.topics.read().get(&t.name).cloned();
            for g in &t.groups {
                if known.as_ref().and_then(|k| k.find_group(&g.name)).is_none() {
                    check_layout(&inner.cfg, &live, &t.name, g).await?;
                }
            }
        }
        let ch = live.channel("declaring the topology").await?;
        declare_ladder(&ch).await.map_err(|e| AmqpError::declare("the delay ladder", e))?;
        for t in &topology.topics {
            declare_topic(&ch, &inner.cfg, t).await.map_err(|e| AmqpError::declare(t.name.as_str(), e))?;
            let mut topics = inner.topics.write();
            let merged = topics.entry(t.name.clone()).or_insert_with(|| TopicSpec { groups: Vec::new(), ..t.clone() });
            for g in &t.groups {
                if merged.find_group(&g.name).is_none() {
                    merged.groups.push(g.clone());
                }
            }
        }
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>, BusError> {
        let specs: Vec<TopicSpec> = self.inner.topics.read().values().cloned().collect();
        let live = self.inner.conn.live(Some(self.inner.cfg.unavailable_wait)).await?;
        let mut out = Vec::new();
        for t in specs {
            let mut groups = Vec::new();
            for g in &t.groups {
                let layout = Layout::new(&self.inner.cfg, &t.name, g);
                let mut pending = Some(0u64);
                for q in &layout.queues {
                    let n = probe(&live, q).await?;
                    pending = pending.zip(n).map(|(a, b)| a + u64::from(b));
                }
                let dead = probe(&live, &layout.dlq).await?.map(u64::from);
                groups.push(GroupInfo { name: g.name.clone(), pending, dead });
            }
            out.push(TopicInfo { name: t.name.to_string(), messages: None, groups });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_keys_spell_the_bits() {
        assert_eq!(delay_ms(Duration::from_micros(1500)), 2);
        assert_eq!(delay_ms(Duration::from_secs(1_000_000)), (1 << DELAY_BITS) - 1);
        let rk = delay_routing_key(5, "4.17");
        assert_eq!(rk, format!("{}1.0.1.4.17", "0.".repeat(DELAY_BITS as usize - 3)));
    }

    #[test]
    fn keys_stay_in_their_bucket() {
        let t = Topic::new("t").unwrap();
        let a = Envelope::new(t.clone(), "a").with_key("k1");
        let b = Envelope::new(t, "b").with_key("k1");
        assert_eq!(bucket(&a), bucket(&b));
        assert!(routing_key(&a).starts_with("4."));
    }
}
