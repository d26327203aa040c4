//! Group members: each `subscribe` starts one Kafka consumer on its own thread, reading the
//! bus topic and the group's retry topics, handing out [`Delivery`]s and settling them.
//!
//! Delivery semantics on Kafka:
//! - **Commit after settlement.** Offsets are committed by hand, per partition, up to the first
//!   message that is not settled (acked, or its retry / dead-letter copy durably written);
//!   never past one still out with a handler. A crash redelivers from there (at-least-once).
//! - **Unsettled deliveries** (dropped, or held past the visibility timeout) come back from the
//!   member's memory with attempt + 1; a late settlement of the old delivery is ignored.
//! - **Rebalances**: before giving up partitions the member waits (up to the visibility timeout,
//!   at most 10 s) for their deliveries to be settled, commits what is done, and forgets them;
//!   attempt counts of messages it let go stay in the process for the next member.
//! - **Retries** per the group's ordering mode, see [`crate::tracker`].
//!
//! A settlement is handed to the member's thread and returns at once: `ack` does not wait for
//! the offset commit (a crash before it means a redelivery, which the inbox absorbs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use horizons_bus::{
    BusError, DeadLetter, Delivery, FailureRecord, Position, Settlement, SubscribeOptions, Subscriber, Subscription,
    TokenAcker, Topic,
};
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use rustc_hash::FxHashMap;

use crate::codec::{self, CopyMeta};
use crate::publisher::{delivered, enqueue};
use crate::reports::{Pending, Producer};
use crate::topology::names;
use crate::tracker::{Action, Tp, Tracker};
use crate::{Inner, KafkaBus};

mod run_loop;

/// What reaches a member's thread.
pub(crate) enum Cmd {
    Settle {
        slot: u64,
        seq: u32,
        s: Settlement,
    },
    Release {
        slot: u64,
        seq: u32,
    },
    Moved {
        slot: u64,
        ok: bool,
    },
    /// Rewind partitions of the bus topic: (partition, start, end of a bounded replay).
    Seek {
        offsets: Vec<(i32, i64, Option<i64>)>,
        reply: tokio::sync::oneshot::Sender<Vec<(i32, i64)>>,
    },
}

/// A live member, as the backend knows it (for replay).
#[derive(Clone)]
pub(crate) struct MemberHandle {
    pub(crate) tx: flume::Sender<Cmd>,
    pub(crate) stop: Arc<AtomicBool>,
}

/// Everything a member's thread and its rebalance callbacks share.
pub(crate) struct Shared {
    pub(crate) bus: Arc<Inner>,
    pub(crate) topic: Topic,
    pub(crate) group: String,
    pub(crate) group_id: String,
    /// Kafka topics read: the bus topic first, then the retry tiers.
    pub(crate) topics: Vec<String>,
    pub(crate) tracker: Mutex<Tracker>,
    pub(crate) cmd_tx: flume::Sender<Cmd>,
    pub(crate) cmd_rx: flume::Receiver<Cmd>,
    pub(crate) producer: Producer,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) lease: Duration,
    pub(crate) closing: AtomicBool,
    pub(crate) joined: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// Set when an assignment changed, so the loop forgets what it paused.
    pub(crate) reassigned: AtomicBool,
    /// Per partition of the bus topic: the skip a bounded replay left, as read from the
    /// committed offset's metadata (`None`: none). Cleared on every assignment.
    pub(crate) fences: Mutex<FxHashMap<i32, Option<Fence>>>,
}

/// What a bounded replay leaves in a partition: offsets `[end, resume)` were settled before
/// the replay and are passed over, not delivered again. It travels as the metadata of the
/// group's committed offset until the group's position passes `resume`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fence {
    pub end: i64,
    pub resume: i64,
}

impl Fence {
    const PREFIX: &'static str = "horizons-skip:";

    pub(crate) fn encode(&self) -> String {
        format!("{}{}-{}", Self::PREFIX, self.end, self.resume)
    }

    pub(crate) fn decode(metadata: &str) -> Option<Fence> {
        let (end, resume) = metadata.strip_prefix(Self::PREFIX)?.split_once('-')?;
        let f = Fence { end: end.parse().ok()?, resume: resume.parse().ok()? };
        (f.end < f.resume).then_some(f)
    }
}

/// librdkafka's callbacks for a member; they run on the member's thread inside `poll`.
pub(crate) struct Ctx(pub(crate) Arc<Shared>);

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.0.on_revoke(consumer, tpl),
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!(group = %self.0.group_id, error = %e, "rebalance failed"),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::debug!(group = %self.0.group_id, partitions = tpl.count(), "partitions assigned");
            self.0.fences.lock().clear();
            self.0.reassigned.store(true, Ordering::Release);
            if let Some(tx) = self.0.joined.lock().take() {
                let _ = tx.send(());
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                let mut t = self.0.tracker.lock();
                for e in offsets.elements() {
                    if let (Some(i), Offset::Offset(o)) = (self.0.topic_index(e.topic()), e.offset()) {
                        t.committed((i, e.partition()), o);
                    }
                }
            }
            Err(e) => tracing::debug!(group = %self.0.group_id, error = %e, "offset commit failed; retried"),
        }
    }
}

impl Shared {
    pub(crate) fn topic_index(&self, name: &str) -> Option<usize> {
        self.topics.iter().position(|t| t == name)
    }

    /// Offsets to commit, with the fence of a bounded replay as metadata while the position has
    /// not passed it.
    pub(crate) fn tp_list(&self, items: &[(Tp, i64)]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::with_capacity(items.len());
        let fences = self.fences.lock();
        for ((i, p), o) in items {
            let mut e = tpl.add_partition(&self.topics[*i], *p);
            if e.set_offset(Offset::Offset(*o)).is_err() {
                continue;
            }
            if let (0, Some(Some(f))) = (*i, fences.get(p)) {
                if *o < f.resume {
                    e.set_metadata(f.encode());
                }
            }
        }
        tpl
    }

    /// The fence of partition `p` of the bus topic, read from the group's committed offset the
    /// first time the partition is seen after an assignment.
    fn fence(&self, consumer: &BaseConsumer<Ctx>, p: i32) -> Option<Fence> {
        if let Some(f) = self.fences.lock().get(&p) {
            return *f;
        }
        // One round trip for every partition of the bus topic this member owns, so an
        // assignment costs one offset fetch, not one per partition.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topics[0], p);
        if let Ok(owned) = consumer.assignment() {
            for e in owned.elements_for_topic(&self.topics[0]) {
                if e.partition() != p {
                    tpl.add_partition(&self.topics[0], e.partition());
                }
            }
        }
        let found = match consumer.committed_offsets(tpl.clone(), self.bus.cfg.admin_timeout) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(group = %self.group_id, partition = p, error = %e, "reading the committed offset's metadata failed; no replay fence applied");
                tpl
            }
        };
        let mut fences = self.fences.lock();
        for e in found.elements_for_topic(&self.topics[0]) {
            fences.entry(e.partition()).or_insert_with(|| Fence::decode(e.metadata()));
        }
        fences.get(&p).copied().flatten()
    }

    /// Reads one record into the tracker (or straight to the DLQ if it does not decode);
    /// returns its partition.
    pub(crate) fn ingest(&self, consumer: &BaseConsumer<Ctx>, m: &BorrowedMessage<'_>) -> Option<Tp> {
        let i = self.topic_index(m.topic())?;
        if i == 0 {
            if let Some(f) = self.fence(consumer, m.partition()) {
                if m.offset() >= f.resume {
                    self.fences.lock().insert(m.partition(), None);
                } else if m.offset() >= f.end {
                    // Settled before the bounded replay that put the group back before it.
                    self.tracker.lock().pass((0, m.partition()), m.offset());
                    return Some((0, m.partition()));
                }
            }
        }
        let pos = (self.topics[i].as_str(), m.partition(), m.offset());
        let stored_at = m.timestamp().to_millis();
        let decoded = codec::decode(&self.topic, m.key(), m.payload(), m.headers(), pos, stored_at);
        let mut attempt = 1;
        if self.bus.attempts_hint.load(Ordering::Relaxed) {
            let key = (self.group_id.clone(), m.topic().to_string(), m.partition(), m.offset());
            if let Some(made) = self.bus.attempts.lock().remove(&key) {
                attempt = made + 1;
            }
        }
        let mut t = self.tracker.lock();
        match decoded {
            Ok(d) => {
                let attempt = attempt.max(d.meta.attempt);
                let id = t.push((i, m.partition()), m.offset(), d.envelope, stored_at, attempt);
                let due = d.meta.due.map(|due| {
                    let wait = (due - horizons_bus::now_millis()).max(0) as u64;
                    Instant::now() + Duration::from_millis(wait)
                });
                let s = t.slot_mut(id).expect("just pushed");
                s.first_error = d.meta.first_error;
                s.last_error = d.meta.last_error;
                s.source = d.meta.source;
                t.admit(id, due);
            }
            Err(e) => {
                let env = codec::raw_envelope(&self.topic, m.key(), m.payload(), pos);
                let id = t.push((i, m.partition()), m.offset(), env, stored_at, attempt);
                let action = t.reject(id, format!("undecodable record: {e}"));
                self.start_move(&t, action);
            }
        }
        Some((i, m.partition()))
    }

    /// Applies one command (`now`: the time of the batch of commands it belongs to).
    pub(crate) fn apply(&self, consumer: &BaseConsumer<Ctx>, t: &mut Tracker, cmd: Cmd, now: Instant) {
        match cmd {
            Cmd::Settle { slot, seq, s } => {
                let action = t.settle(slot, seq, s, now);
                self.start_move(t, action);
            }
            Cmd::Release { slot, seq } => t.release(slot, seq),
            Cmd::Moved { slot, ok: true } => t.moved(slot),
            Cmd::Moved { slot, ok: false } => t.move_failed(slot),
            Cmd::Seek { offsets, reply } => {
                let _ = reply.send(self.seek(consumer, t, offsets));
            }
        }
    }

    /// Rewinds the partitions of the bus topic this member owns, each to `start` and, for a
    /// bounded replay, with a fence from `end` to where the member had got; returns the
    /// partitions done with how many messages each replays.
    fn seek(
        &self,
        consumer: &BaseConsumer<Ctx>,
        t: &mut Tracker,
        offsets: Vec<(i32, i64, Option<i64>)>,
    ) -> Vec<(i32, i64)> {
        let owned = consumer.assignment().unwrap_or_default();
        let mut done = Vec::new();
        for (p, start, end) in offsets {
            if owned.find_partition(&self.topics[0], p).is_none() {
                continue;
            }
            let fence = match end {
                Some(end) => {
                    let resume = t.position((0, p)).or_else(|| {
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition(&self.topics[0], p);
                        consumer
                            .committed_offsets(tpl, self.bus.cfg.admin_timeout)
                            .ok()
                            .and_then(|c| c.find_partition(&self.topics[0], p).map(|e| e.offset()))
                            .and_then(|o| if let Offset::Offset(o) = o { Some(o) } else { None })
                    });
                    resume.filter(|r| *r > end).map(|resume| Fence { end, resume })
                }
                None => None,
            };
            if let Err(e) = consumer.seek(&self.topics[0], p, Offset::Offset(start), Duration::from_secs(5)) {
                tracing::warn!(group = %self.group_id, partition = p, error = %e, "replay seek failed");
                continue;
            }
            t.drop_partition((0, p));
            self.fences.lock().insert(p, fence);
            let tpl = self.tp_list(&[((0, p), start)]);
            if let Err(e) = consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync) {
                tracing::warn!(group = %self.group_id, partition = p, error = %e, "committing the replay position failed");
            }
            done.push((p, end.map_or(0, |e| (e - start).max(0))));
        }
        done
    }

    /// Writes the copy an action asks for, in a task; the result comes back as `Cmd::Moved`.
    pub(crate) fn start_move(&self, t: &Tracker, action: Action) {
        let (slot, topic, env, meta) = match action {
            Action::None | Action::Stale => return,
            Action::Retry { slot, delay } => {
                let Some(s) = t.slot(slot) else { return };
                let tiers = &self.bus.cfg.retry_tiers;
                let tier = tiers.iter().rev().find(|t| **t <= delay).unwrap_or(&tiers[0]);
                let meta = CopyMeta {
                    attempt: s.attempt + 1,
                    due: Some(horizons_bus::now_millis() + delay.as_millis() as i64),
                    first_error: s.first_error.clone(),
                    last_error: s.last_error.clone(),
                    source: Some(self.source_of(s)),
                };
                (slot, names::retry_topic(&self.topic, &self.group, *tier), s.env.clone(), Some(meta))
            }
            Action::DeadLetter { slot, reason } => {
                let Some(s) = t.slot(slot) else { return };
                let failures = FailureRecord {
                    attempts: s.attempt,
                    first_error: s.first_error.clone(),
                    last_error: s.last_error.clone(),
                };
                let env = DeadLetter::encode(&s.env, &self.group, &reason, &failures, &self.source_of(s));
                (slot, names::dlq_topic(&self.topic, &self.group), env, None)
            }
        };
        let (producer, tx, group) = (self.producer.clone(), self.cmd_tx.clone(), self.group_id.clone());
        self.runtime.spawn(async move {
            let pending = Pending::new();
            let result = match enqueue(&producer, &pending, &topic, None, &env, meta.as_ref()).await {
                Ok(()) => delivered(pending, &topic).await,
                Err(e) => Err(e),
            };
            if let Err(e) = &result {
                tracing::warn!(%group, %topic, error = %e, "writing a retry/dead-letter copy failed; redelivering");
            }
            let _ = tx.send(Cmd::Moved { slot, ok: result.is_ok() });
        });
    }

    fn source_of(&self, s: &crate::tracker::Slot) -> String {
        s.source.clone().unwrap_or_else(|| format!("{}/{}/{}", self.topics[s.tp.0], s.tp.1, s.offset))
    }

    /// Before partitions go: let their handlers finish (bounded), commit, remember attempts.
    pub(crate) fn on_revoke(&self, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
        let tps: Vec<Tp> =
            tpl.elements().iter().filter_map(|e| Some((self.topic_index(e.topic())?, e.partition()))).collect();
        if !self.closing.load(Ordering::Acquire) {
            let deadline = Instant::now() + self.lease.min(Duration::from_secs(10));
            loop {
                let mut t = self.tracker.lock();
                let now = Instant::now();
                while let Ok(cmd) = self.cmd_rx.try_recv() {
                    self.apply(consumer, &mut t, cmd, now);
                }
                if t.in_flight(&tps) == 0 || Instant::now() >= deadline {
                    break;
                }
                drop(t);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let mut t = self.tracker.lock();
        let commits: Vec<(Tp, i64)> = t.commits().into_iter().filter(|(tp, _)| tps.contains(tp)).collect();
        let mut remembered = Vec::new();
        for tp in &tps {
            for (offset, made) in t.delivered_in(*tp) {
                let key = (self.group_id.clone(), self.topics[tp.0].clone(), tp.1, offset);
                remembered.push((key, made));
            }
            t.drop_partition(*tp);
        }
        drop(t);
        if !remembered.is_empty() {
            self.bus.attempts.lock().extend(remembered);
            self.bus.attempts_hint.store(true, Ordering::Relaxed);
        }
        if !commits.is_empty() {
            if let Err(e) = consumer.commit(&self.tp_list(&commits), rdkafka::consumer::CommitMode::Sync) {
                tracing::warn!(group = %self.group_id, error = %e, "commit on revocation failed; messages will be redelivered");
            }
        }
    }
}

/// Settles a member's deliveries by handing the settlement to the member's thread; the token
/// is the delivery's (slot, lease seq).
pub(crate) struct MemberAcks(pub(crate) flume::Sender<Cmd>);

fn token(slot: u64, seq: u32) -> u128 {
    (u128::from(slot) << 32) | u128::from(seq)
}

fn untoken(token: u128) -> (u64, u32) {
    ((token >> 32) as u64, token as u32)
}

impl TokenAcker for MemberAcks {
    fn settle(&self, token: u128, s: Settlement) -> Result<(), BusError> {
        let (slot, seq) = untoken(token);
        self.0.send(Cmd::Settle { slot, seq, s }).map_err(|_| BusError::LeaseExpired)
    }

    fn release(&self, token: u128) {
        let (slot, seq) = untoken(token);
        let _ = self.0.send(Cmd::Release { slot, seq });
    }
}

/// Builds the delivery of `(slot, seq)`.
pub(crate) fn delivery(t: &Tracker, acks: &Arc<MemberAcks>, slot: u64, seq: u32) -> Option<Delivery> {
    let s = t.slot(slot)?;
    let position = Position { partition: Some(s.tp.1 as u32), offset: s.offset as u64 };
    let mut d = Delivery::with_token(s.env.clone(), s.attempt, position, acks.clone(), token(slot, seq));
    d.stored_at = s.stored_at;
    Some(d)
}

/// Stops the member's thread when the subscription is dropped.
struct Guard(Arc<AtomicBool>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[async_trait]
impl Subscriber for KafkaBus {
    async fn subscribe(&self, topic: &Topic, group: &str, opts: SubscribeOptions) -> Result<Subscription, BusError> {
        self.check_open()?;
        let spec = self.spec(topic).await?;
        let Some(g) = spec.find_group(group).cloned() else {
            return Err(BusError::UnknownGroup { topic: topic.to_string(), group: group.to_string() });
        };
        let cfg = &self.inner.cfg;
        let mut topics = vec![topic.to_string()];
        topics.extend(cfg.retry_tiers.iter().map(|t| names::retry_topic(topic, group, *t)));
        let group_id = names::group_id(topic, group);
        let (cmd_tx, cmd_rx) = flume::unbounded();
        let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
        let shared = Arc::new(Shared {
            bus: self.inner.clone(),
            topic: topic.clone(),
            group: group.to_string(),
            group_id: group_id.clone(),
            topics,
            tracker: Mutex::new(Tracker::new(g.ordering, g.visibility_timeout)),
            cmd_tx: cmd_tx.clone(),
            cmd_rx,
            producer: self.inner.producer.clone(),
            runtime: tokio::runtime::Handle::current(),
            lease: g.visibility_timeout,
            closing: AtomicBool::new(false),
            joined: Mutex::new(Some(joined_tx)),
            reassigned: AtomicBool::new(false),
            fences: Mutex::new(FxHashMap::default()),
        });
        let consumer: BaseConsumer<Ctx> = cfg
            .consumer(&group_id)
            .create_with_context(Ctx(shared.clone()))
            .map_err(|e| crate::KafkaError::client("creating a consumer", e))?;
        let names: Vec<&str> = shared.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(|e| crate::KafkaError::client(format!("subscribing {group_id}"), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let handle = MemberHandle { tx: cmd_tx, stop: stop.clone() };
        self.inner.members.lock().entry((topic.clone(), group.to_string())).or_default().push(handle);
        let (out_tx, out_rx) = flume::unbounded();
        let prefetch = opts.prefetch.max(1);
        std::thread::Builder::new()
            .name(format!("kafka-{group}"))
            .spawn({
                let stop = stop.clone();
                move || run_loop::run(consumer, shared, out_tx, stop, prefetch)
            })
            .map_err(|e| BusError::backend("starting a consumer thread", e))?;
        // Joined once the first assignment arrived (possibly empty); bounded, so a slow group
        // does not hold the caller: messages are not lost either way (earliest / committed).
        let _ = tokio::time::timeout(cfg.admin_timeout, joined_rx).await;
        Ok(Subscription::batched(out_rx, Box::new(Guard(stop))))
    }
}

#[cfg(test)]
mod tests {
    use super::{token, untoken, Fence};

    #[test]
    fn delivery_tokens_round_trip_whole_slot_ids_and_lease_numbers() {
        for (slot, seq) in [(0, 0), (1, 1), (u64::MAX, u32::MAX), ((7 << 32) | 3, 9), (u64::MAX, 0), (0, u32::MAX)] {
            assert_eq!(untoken(token(slot, seq)), (slot, seq));
        }
    }

    #[test]
    fn fences_round_trip_and_foreign_metadata_is_ignored() {
        let f = Fence { end: 10, resume: 42 };
        assert_eq!(Fence::decode(&f.encode()), Some(f));
        for other in ["", "anything", "horizons-skip:", "horizons-skip:5", "horizons-skip:9-3", "horizons-skip:a-b"] {
            assert_eq!(Fence::decode(other), None, "{other:?}");
        }
    }
}
