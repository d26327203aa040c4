//! The traits a backend implements. Composition roots hold them as `Arc<dyn Backend>`.
//!
//! Delivery semantics, for every backend:
//! - **Publish** returns `Ok` only after the backend made the message durable (fsync, publisher
//!   confirm, `acks=all`). On `Err` the message may or may not have been stored: publishing is
//!   at-least-once, and a retried publish keeps the message id so consumers can dedupe.
//! - **Consume** is at-least-once per consumer group. A delivery that is not acked (the consumer
//!   dropped it, crashed, or let the visibility timeout pass) is delivered again, to any member.
//!   Duplicates therefore happen after crashes and reconnects; consumers dedupe by message id
//!   ([`crate::inbox`]).

use std::time::Duration;

use async_trait::async_trait;

use crate::delivery::{DeadLetter, Delivery};
use crate::envelope::{Envelope, Millis, Topic};
use crate::error::BusError;
use crate::topology::Topology;

/// What a backend can do. The conformance suite checks each `false` by asking for the thing and
/// expecting [`BusError::Unsupported`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Priority 0–9 honoured (higher delivered first among ready messages).
    pub priorities: bool,
    /// `not_before` honoured.
    pub delays: bool,
    /// A group can be rewound to an offset.
    pub replay_offset: bool,
    /// A group can be rewound to a timestamp.
    pub replay_time: bool,
    /// [`crate::OrderingMode::BlockKey`] supported.
    pub block_key_ordering: bool,
    /// Duplicates can appear without a crash or reconnect (e.g. a redelivery after a lease ran
    /// out while the handler was still running). All backends may duplicate after crashes.
    pub duplicates_without_failure: bool,
}

/// Sends messages.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes one message; `Ok` once it is durable. See the module docs.
    async fn publish(&self, msg: Envelope) -> Result<(), BusError> {
        self.publish_batch(vec![msg]).await
    }

    /// Publishes several messages with one durability wait; `Ok` once all are durable. On `Err`
    /// any prefix may have been stored; retrying the whole batch is safe (same ids).
    async fn publish_batch(&self, msgs: Vec<Envelope>) -> Result<(), BusError>;
}

/// Options for one member of a consumer group.
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    /// Deliveries this member may hold unsettled.
    pub prefetch: usize,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self { prefetch: 256 }
    }
}

/// A stream of deliveries for one member of a consumer group. Dropping it releases whatever it
/// holds unsettled.
pub struct Subscription {
    feed: Feed,
    _guard: Box<dyn Send + Sync>,
}

/// How deliveries reach a subscription: one at a time, or in batches (fewer channel operations
/// and wake-ups on hot paths) that members of the subscription take from a shared buffer.
enum Feed {
    One(flume::Receiver<Delivery>),
    Batched {
        rx: flume::Receiver<Vec<Delivery>>,
        buffer: parking_lot::Mutex<std::collections::VecDeque<Delivery>>,
        refilled: tokio::sync::Notify,
    },
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queued = match &self.feed {
            Feed::One(rx) => rx.len(),
            Feed::Batched { buffer, .. } => buffer.lock().len(),
        };
        f.debug_struct("Subscription").field("queued", &queued).finish()
    }
}

impl Subscription {
    /// Wraps a channel fed by the backend; `guard` is dropped with the subscription (stop the
    /// feeding task there).
    pub fn new(rx: flume::Receiver<Delivery>, guard: Box<dyn Send + Sync>) -> Self {
        Self { feed: Feed::One(rx), _guard: guard }
    }

    /// Like [`Subscription::new`], for a backend that sends deliveries in batches. Deliveries
    /// of a batch wait in this subscription's buffer (they count against its prefetch) and are
    /// released if it is dropped.
    pub fn batched(rx: flume::Receiver<Vec<Delivery>>, guard: Box<dyn Send + Sync>) -> Self {
        let feed = Feed::Batched { rx, buffer: Default::default(), refilled: tokio::sync::Notify::new() };
        Self { feed, _guard: guard }
    }

    /// The next delivery; `None` once the backend closed the subscription.
    pub async fn next(&self) -> Option<Delivery> {
        match &self.feed {
            Feed::One(rx) => rx.recv_async().await.ok(),
            Feed::Batched { rx, buffer, refilled } => loop {
                if let Some(d) = buffer.lock().pop_front() {
                    return Some(d);
                }
                // Register before looking at the channel, so a refill in between is not missed.
                let notified = refilled.notified();
                tokio::select! {
                    batch = rx.recv_async() => {
                        let mut batch = batch.ok()?.into_iter();
                        let first = batch.next();
                        let mut buf = buffer.lock();
                        buf.extend(batch);
                        if !buf.is_empty() {
                            refilled.notify_waiters();
                        }
                        drop(buf);
                        if first.is_some() {
                            return first;
                        }
                    }
                    _ = notified => {}
                }
            },
        }
    }

    /// The next delivery if one arrives within `d`.
    pub async fn next_timeout(&self, d: Duration) -> Option<Delivery> {
        tokio::time::timeout(d, self.next()).await.ok().flatten()
    }
}

/// Receives messages.
#[async_trait]
pub trait Subscriber: Send + Sync {
    /// Joins `group` on `topic` as one more member. Both must be declared. Members of a group
    /// share its messages; each message goes to one member at a time.
    async fn subscribe(&self, topic: &Topic, group: &str, opts: SubscribeOptions) -> Result<Subscription, BusError>;
}

/// A topic as `bus topics` lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TopicInfo {
    /// The topic.
    pub name: String,
    /// Messages stored, where the backend can tell.
    pub messages: Option<u64>,
    /// Per group: (name, messages not yet settled, dead letters).
    pub groups: Vec<GroupInfo>,
}

/// A group as `bus topics` lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GroupInfo {
    /// The group.
    pub name: String,
    /// Messages not yet settled, where known.
    pub pending: Option<u64>,
    /// Messages in its dead-letter queue, where known.
    pub dead: Option<u64>,
}

/// Declares and inspects topology.
#[async_trait]
pub trait Admin: Send + Sync {
    /// Applies `topology` idempotently: what exists and matches is left alone, what is missing
    /// is created, what conflicts is an error naming the object and the argument.
    async fn declare(&self, topology: &Topology) -> Result<(), BusError>;

    /// Lists topics with their groups.
    async fn topics(&self) -> Result<Vec<TopicInfo>, BusError>;
}

/// Inspects and redrives dead-letter queues (one per topic and group).
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Up to `limit` dead letters of `group` on `topic`, oldest first, without removing them.
    async fn dlq_list(&self, topic: &Topic, group: &str, limit: usize) -> Result<Vec<DeadLetter>, BusError>;

    /// Moves up to `limit` (all if `None`) dead letters back to `topic`, attempts reset, same
    /// message ids. Returns how many moved. At-least-once: a crash mid-way can leave a message
    /// both redriven and still listed.
    async fn dlq_redrive(&self, topic: &Topic, group: &str, limit: Option<usize>) -> Result<usize, BusError>;
}

/// Where a replay starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayFrom {
    /// This offset (backend-specific numbering; for partitioned backends, in every partition).
    Offset(u64),
    /// The first message stored at or after this time.
    Time(Millis),
}

/// Rewinds a group. Optional capability: see [`Capabilities::replay_offset`] / `replay_time`.
#[async_trait]
pub trait Replay: Send + Sync {
    /// Moves `group` on `topic` so its next deliveries start at `from`; messages before it
    /// count as settled, messages after it are delivered again even if settled before. Live
    /// members pick up the new position.
    async fn replay(&self, topic: &Topic, group: &str, from: ReplayFrom) -> Result<(), BusError>;

    /// A bounded replay: delivers again to `group` what was stored from `from` up to (not
    /// including) the first message stored at or after time `to`; messages stored from then on
    /// keep the state they have (settled ones stay settled, pending ones are delivered as
    /// usual), and messages before `from` count as settled as with [`Replay::replay`]. Returns
    /// how many messages the range holds. Declared with [`Capabilities::replay_time`].
    async fn replay_range(&self, topic: &Topic, group: &str, from: ReplayFrom, to: Millis) -> Result<u64, BusError>;
}

/// A whole backend.
#[async_trait]
pub trait Backend: Publisher + Subscriber + Admin + DeadLetters {
    /// Short name: `embedded`, `amqp`, `kafka`, `nats`.
    fn name(&self) -> &'static str;

    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// The replay capability, if declared.
    fn replay(&self) -> Option<&dyn Replay>;

    /// Flushes and closes; publishes after this fail.
    async fn close(&self) -> Result<(), BusError>;
}
