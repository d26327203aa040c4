//! A consumer group's dispatcher: the work queue over a topic's log.
//!
//! One task per group owns all of its state, so nothing here takes a lock. It reads the log
//! into a bounded window, keeps ready messages by priority (offset order within a priority),
//! holds delayed ones and pending retries on a timer, hands deliveries to the group's channel
//! while fewer than `max_in_flight` are unsettled, and takes settlements back as commands.
//!
//! - Ack / dead-letter: the offset is settled (the DLQ copy is durable before the command).
//! - Retry-after: the message waits for its delay, then is ready again.
//! - Release (a dropped delivery) or an expired lease: ready again at once.
//! - `BlockKey`: only the oldest unsettled message of a key is ever ready or in flight.
//! - Starvation: a ready message that waited longer than `max_priority_wait` goes first.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use horizons_bus::{
    now_millis, Acker, BusError, DeadLetter, Delivery, Envelope, FailureRecord, GroupSpec, Millis, OrderingMode,
    Position, Settlement,
};
use tokio::sync::oneshot;

use crate::error::LogError;
use crate::log::{Cursor, TopicLog};
use crate::ready::ReadySet;
use crate::state::{GroupState, Saved};
use crate::writer::{Append, WriterMsg};

/// The channel members of a group receive from; owned outside the engine so that it survives
/// an engine restart.
#[derive(Clone, Debug)]
pub struct GroupChannel {
    /// Where deliveries go, in batches.
    pub tx: flume::Sender<Vec<Delivery>>,
    /// Where members take them (the dispatcher keeps a clone to drain it).
    pub rx: flume::Receiver<Vec<Delivery>>,
    /// Sum of the members' prefetch.
    pub max_in_flight: Arc<AtomicUsize>,
}

impl GroupChannel {
    /// A new channel with no members.
    pub fn new() -> Self {
        let (tx, rx) = flume::unbounded();
        Self { tx, rx, max_in_flight: Arc::new(AtomicUsize::new(0)) }
    }
}

impl Default for GroupChannel {
    fn default() -> Self {
        Self::new()
    }
}

/// Most deliveries sent to the group's channel in one message.
const MAX_BATCH: usize = 64;

/// Commands to a dispatcher.
#[derive(Debug)]
pub(crate) enum Cmd {
    Ack {
        offset: u64,
        epoch: u64,
    },
    Retry {
        offset: u64,
        token: u64,
        epoch: u64,
        delay: Duration,
        error: String,
    },
    Dead {
        offset: u64,
        token: u64,
        epoch: u64,
        reason: String,
        error: Option<String>,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    /// The DLQ copy of `offset` is durable.
    DeadDone {
        offset: u64,
        epoch: u64,
    },
    Release {
        offset: u64,
        token: u64,
        epoch: u64,
    },
    /// Rewind to `start`, up to `end` if given (see [`GroupState::rewound`]).
    Replay {
        start: u64,
        end: Option<u64>,
        reply: oneshot::Sender<()>,
    },
    Stats {
        reply: oneshot::Sender<u64>,
    },
    Wake,
    Shutdown,
}

/// Tunables.
#[derive(Clone, Debug)]
pub(crate) struct DispatchConfig {
    pub window: usize,
    pub flush_interval: Duration,
    pub max_priority_wait: Duration,
}

/// Where dead letters go.
#[derive(Clone)]
pub(crate) struct DlqSink {
    pub writer: flume::Sender<WriterMsg>,
    pub log: Arc<TopicLog>,
}

impl DlqSink {
    pub async fn append(&self, env: Envelope) -> Result<(), LogError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(WriterMsg::Append(Append { log: self.log.clone(), envs: Arc::from(vec![env]), reply }))
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?.map(|_| ())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum St {
    /// Behind an older message of its key (BlockKey).
    Waiting,
    Ready,
    Delayed(Millis),
    InFlight,
}

struct Entry {
    env: Envelope,
    attempts: u32,
    first_error: Option<String>,
    last_error: Option<String>,
    token: u64,
    st: St,
    ready_since: Instant,
}

pub(crate) struct Dispatcher {
    pub log: Arc<TopicLog>,
    pub spec: GroupSpec,
    pub chan: GroupChannel,
    pub cmd_tx: flume::Sender<Cmd>,
    pub cmd_rx: flume::Receiver<Cmd>,
    pub dlq: DlqSink,
    pub state_path: PathBuf,
    pub cfg: DispatchConfig,
    pub state: GroupState,
    epoch: u64,
    cursor: Cursor,
    /// Boxed: the table stays small and dense, and entries never move.
    entries: HashMap<u64, Box<Entry>, BuildHasherDefault<OffsetHasher>>,
    ready: [ReadySet; 10],
    /// Bit p set when `ready[p]` is not empty.
    ready_mask: u16,
    delayed: BinaryHeap<Reverse<(Millis, u64)>>,
    /// (deadline, offset, token) in dispatch order: one visibility timeout per group makes
    /// deadlines monotonic, so a queue suffices.
    leases: VecDeque<(Instant, u64, u64)>,
    keys: HashMap<String, VecDeque<u64>>,
    saved: HashMap<u64, Saved>,
    outstanding: usize,
    dirty: bool,
    saving: Option<tokio::task::JoinHandle<Result<(), LogError>>>,
}

impl Dispatcher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        log: Arc<TopicLog>,
        spec: GroupSpec,
        chan: GroupChannel,
        cmd: (flume::Sender<Cmd>, flume::Receiver<Cmd>),
        dlq: DlqSink,
        state_path: PathBuf,
        cfg: DispatchConfig,
        mut state: GroupState,
    ) -> Self {
        state.skip_to(log.start());
        let end = log.end();
        if state.low_water > end {
            // Cannot happen with snapshots that stop at the durable end; if the files say
            // otherwise, redeliver rather than skip what is written at those offsets later.
            tracing::warn!(group = %spec.name, saved = state.low_water, end, "group position past the log's end; starting at the end");
            state.low_water = end;
        }
        state.done.retain(|o| *o < end);
        let saved = state.saved.drain(..).map(|s| (s.offset, s)).collect();
        Dispatcher {
            cursor: Cursor::at(state.low_water),
            log,
            spec,
            chan,
            cmd_tx: cmd.0,
            cmd_rx: cmd.1,
            dlq,
            state_path,
            cfg,
            state,
            epoch: 1,
            entries: HashMap::default(),
            ready: Default::default(),
            ready_mask: 0,
            delayed: BinaryHeap::new(),
            leases: VecDeque::new(),
            keys: HashMap::new(),
            saved,
            outstanding: 0,
            dirty: false,
            saving: None,
        }
    }

    pub async fn run(mut self) {
        let mut data = self.log.subscribe();
        let mut tick = tokio::time::interval(self.cfg.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One timer for the whole life of the dispatcher, moved only when the next deadline
        // changes: re-arming a timer per wake-up costs more than dispatching a message.
        let far = || Instant::now() + Duration::from_secs(3600);
        let sleep = tokio::time::sleep_until(far().into());
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            // Everything queued, under one lock.
            let cmds: Vec<Cmd> = self.cmd_rx.drain().collect();
            for cmd in cmds {
                if !self.handle(cmd) {
                    return self.stop().await;
                }
            }
            if let Err(e) = self.fill() {
                tracing::error!(topic = %self.log.topic, group = %self.spec.name, error = %e, "reading the log failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let now = now_millis();
            self.promote(now);
            self.expire(Instant::now());
            if self.chan.rx.receiver_count() <= 1 {
                // No member is listening: take back what waits in the channel.
                self.chan.rx.drain().for_each(drop);
            } else {
                self.dispatch();
            }
            let next_due = self
                .delayed
                .peek()
                .map(|Reverse((due, _))| Instant::now() + Duration::from_millis((*due - now_millis()).max(0) as u64));
            let next_lease = self.leases.front().map(|(d, _, _)| *d);
            let wake_at = [next_due, next_lease].into_iter().flatten().min();
            if wake_at != armed {
                armed = wake_at;
                sleep.as_mut().reset(wake_at.unwrap_or_else(far).into());
            }
            tokio::select! {
                cmd = self.cmd_rx.recv_async() => match cmd {
                    Ok(cmd) => if !self.handle(cmd) { return self.stop().await; },
                    Err(_) => return self.stop().await,
                },
                _ = data.changed() => {}
                _ = &mut sleep => { armed = None; }
                _ = tick.tick() => self.persist().await,
            }
        }
    }

    async fn stop(mut self) {
        self.persist_now().await;
        // Deliveries still queued belong to this dispatcher's life; drop them (their release
        // goes nowhere) so members do not process messages the next engine will deliver again.
        self.chan.rx.drain().for_each(drop);
    }

    /// Saves the group's position in the background: the dispatcher never waits for the
    /// fsync of a snapshot (at most one is in progress; a tick during it is skipped).
    async fn persist(&mut self) {
        if let Some(h) = self.saving.take() {
            if !h.is_finished() {
                self.saving = Some(h);
                return;
            }
            self.check_saved(h.await);
        }
        if !self.dirty {
            return;
        }
        let snap = self.snapshot();
        let path = self.state_path.clone();
        self.dirty = false;
        self.saving = Some(tokio::task::spawn_blocking(move || snap.save(&path)));
    }

    /// Saves now and waits (on shutdown), once what was written is durable, so that a clean
    /// close keeps every settlement (the snapshot stops at the durable end).
    async fn persist_now(&mut self) {
        if let Some(h) = self.saving.take() {
            self.check_saved(h.await);
        }
        let (log, written) = (self.log.clone(), self.log.end());
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while log.durable_end() < written && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let snap = self.snapshot();
        let path = self.state_path.clone();
        self.check_saved(tokio::task::spawn_blocking(move || snap.save(&path)).await);
    }

    fn check_saved(&mut self, r: Result<Result<(), LogError>, tokio::task::JoinError>) {
        let err = match r {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(group = %self.spec.name, error = %err, "saving group state failed; will retry");
        self.dirty = true;
    }

    /// The position plus the retry history of every message delivered at least once, so
    /// attempts keep counting across a restart. A crash loses at most one flush interval of
    /// it (see README: the embedded crash-loop backstop is weaker than a broker's).
    ///
    /// Nothing at or past the log's durable end is saved: consumers see records once written,
    /// before their fsync, and a machine crash can lose that tail. A position saved past it
    /// would make the group skip the records written at those offsets after the restart;
    /// stopping at it only redelivers them.
    fn snapshot(&self) -> GroupState {
        let mut snap = GroupState {
            low_water: self.state.low_water,
            done: self.state.done.clone(),
            saved: Vec::new(),
            skip: self.state.skip.clone(),
        };
        for (&offset, e) in &self.entries {
            if e.attempts > 0 || e.last_error.is_some() {
                let due = if let St::Delayed(d) = e.st { Some(d) } else { None };
                snap.saved.push(Saved {
                    offset,
                    attempts: e.attempts,
                    first_error: e.first_error.clone(),
                    last_error: e.last_error.clone(),
                    due,
                });
            }
        }
        // History loaded at start for messages not read into the window yet.
        snap.saved.extend(self.saved.values().cloned());
        snap.below(self.log.durable_end())
    }

    /// Reads the log into the window.
    fn fill(&mut self) -> Result<(), LogError> {
        let mut budget = 8usize << 20;
        let now = Instant::now();
        while self.entries.len() < self.cfg.window && self.cursor.offset < self.log.end() && budget > 0 {
            let records = self.log.read(&mut self.cursor, 1 << 20)?;
            if records.is_empty() {
                break;
            }
            self.state.skip_to(self.log.start());
            for r in records {
                budget = budget.saturating_sub(r.envelope.payload.len() + 64);
                if self.state.is_settled(r.offset) {
                    continue;
                }
                self.admit(r.offset, r.envelope, now);
            }
        }
        Ok(())
    }

    fn admit(&mut self, offset: u64, env: Envelope, now: Instant) {
        let saved = self.saved.remove(&offset);
        let key = env.key.clone();
        let mut e = Box::new(Entry {
            env,
            attempts: 0,
            first_error: None,
            last_error: None,
            token: 0,
            st: St::Waiting,
            ready_since: now,
        });
        let mut due = e.env.not_before;
        if let Some(s) = saved {
            e.attempts = s.attempts;
            e.first_error = s.first_error;
            e.last_error = s.last_error;
            due = due.max(s.due);
        }
        self.entries.insert(offset, e);
        let front = match (&key, self.spec.ordering) {
            (Some(k), OrderingMode::BlockKey) => {
                let q = self.keys.entry(k.clone()).or_default();
                q.push_back(offset);
                q.len() == 1
            }
            _ => true,
        };
        if front {
            self.activate_at(offset, due, now, true);
        }
    }

    /// Makes `offset` ready, or delayed until `due`.
    fn activate(&mut self, offset: u64, due: Option<Millis>) {
        self.activate_at(offset, due, Instant::now(), false);
    }

    fn activate_at(&mut self, offset: u64, due: Option<Millis>, now: Instant, in_order: bool) {
        let Some(e) = self.entries.get_mut(&offset) else { return };
        match due {
            Some(d) if d > now_millis() => {
                e.st = St::Delayed(d);
                self.delayed.push(Reverse((d, offset)));
            }
            _ => {
                e.st = St::Ready;
                e.ready_since = now;
                let p = e.env.priority.get() as usize;
                self.ready[p].insert(offset, in_order);
                self.ready_mask |= 1 << p;
            }
        }
    }

    fn promote(&mut self, now: Millis) {
        while let Some(&Reverse((due, offset))) = self.delayed.peek() {
            if due > now {
                break;
            }
            self.delayed.pop();
            if self.entries.get(&offset).is_some_and(|e| e.st == St::Delayed(due)) {
                self.activate(offset, None);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, offset, token)) = self.leases.front() {
            if deadline > now {
                break;
            }
            self.leases.pop_front();
            if self.entries.get(&offset).is_some_and(|e| e.st == St::InFlight && e.token == token) {
                tracing::debug!(group = %self.spec.name, offset, "lease expired; redelivering");
                metrics::counter!("horizons_bus_lease_expired_total", "topic" => self.log.topic.to_string())
                    .increment(1);
                self.outstanding -= 1;
                self.activate(offset, None);
            }
        }
    }

    fn pick(&mut self, now: Instant) -> Option<u64> {
        // Starvation matters only when more than one priority level is waiting.
        let levels = self.ready_mask.count_ones();
        if levels == 1 {
            let p = 15 - self.ready_mask.leading_zeros() as usize;
            let offset = self.ready[p].pop_first();
            if self.ready[p].is_empty() {
                self.ready_mask &= !(1 << p);
            }
            return offset;
        }
        let starving = if levels > 1 {
            self.ready
                .iter()
                .filter_map(ReadySet::first)
                .filter_map(|o| self.entries.get(&o).map(|e| (e.ready_since, o)))
                .min()
                .filter(|(since, _)| now.saturating_duration_since(*since) >= self.cfg.max_priority_wait)
                .map(|(_, o)| o)
        } else {
            None
        };
        let offset = starving.or_else(|| self.ready.iter().rev().find_map(ReadySet::first))?;
        let p = self.entries[&offset].env.priority.get() as usize;
        self.unready(p, offset);
        Some(offset)
    }

    fn unready(&mut self, p: usize, offset: u64) {
        self.ready[p].remove(offset);
        if self.ready[p].is_empty() {
            self.ready_mask &= !(1 << p);
        }
    }

    fn dispatch(&mut self) {
        let max = self.chan.max_in_flight.load(Ordering::Relaxed);
        let now = Instant::now();
        let deadline = now + self.spec.visibility_timeout;
        // Batches big enough to save channel operations, small enough that every member gets
        // a share of the prefetch window.
        let members = self.chan.rx.receiver_count().saturating_sub(1).max(1);
        let batch_size = (max / (4 * members)).clamp(1, MAX_BATCH);
        let mut batch = Vec::with_capacity(batch_size.min(max.saturating_sub(self.outstanding)));
        while self.outstanding < max {
            let Some(offset) = self.pick(now) else { break };
            let e = self.entries.get_mut(&offset).expect("ready entries exist");
            e.attempts += 1;
            e.token += 1;
            e.st = St::InFlight;
            self.leases.push_back((deadline, offset, e.token));
            self.outstanding += 1;
            self.dirty = true;
            let acker = LogAcker { cmd: self.cmd_tx.clone(), offset, token: e.token, epoch: self.epoch };
            batch.push(Delivery::new(e.env.clone(), e.attempts, Position::offset(offset), Box::new(acker)));
            if batch.len() >= batch_size {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                if self.chan.tx.send(full).is_err() {
                    return;
                }
            }
        }
        if !batch.is_empty() {
            let _ = self.chan.tx.send(batch);
        }
    }

    /// Applies a command; `false` means stop.
    fn handle(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Ack { offset, epoch } | Cmd::DeadDone { offset, epoch } if epoch == self.epoch => {
                self.complete(offset)
            }
            Cmd::Dead { offset, token, epoch, reason, error, reply } => {
                let Some(e) = self
                    .entries
                    .get(&offset)
                    .filter(|e| epoch == self.epoch && e.st == St::InFlight && e.token == token)
                else {
                    let _ = reply.send(Err(BusError::LeaseExpired));
                    return true;
                };
                let mut failures = FailureRecord {
                    attempts: e.attempts,
                    first_error: e.first_error.clone(),
                    last_error: e.last_error.clone(),
                };
                if let Some(err) = error {
                    failures.first_error.get_or_insert_with(|| err.clone());
                    failures.last_error = Some(err);
                }
                let copy = DeadLetter::encode(&e.env, &self.spec.name, &reason, &failures, &offset.to_string());
                // Stored durably in the DLQ before the offset counts as settled; a crash in
                // between only duplicates the dead letter. The append runs beside the
                // dispatcher so the group keeps moving meanwhile.
                let (dlq, cmd) = (self.dlq.clone(), self.cmd_tx.clone());
                tokio::spawn(async move {
                    match dlq.append(copy).await {
                        Ok(()) => {
                            metrics::counter!("horizons_bus_dead_lettered_total", "topic" => dlq.log.topic.to_string())
                                .increment(1);
                            let _ = cmd.send(Cmd::DeadDone { offset, epoch });
                            let _ = reply.send(Ok(()));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.into()));
                        }
                    }
                });
            }
            Cmd::Retry { offset, token, epoch, delay, error } if epoch == self.epoch => {
                if let Some(e) = self.entries.get_mut(&offset).filter(|e| e.st == St::InFlight && e.token == token) {
                    e.first_error.get_or_insert_with(|| error.clone());
                    e.last_error = Some(error);
                    self.outstanding -= 1;
                    self.dirty = true;
                    let due = now_millis() + delay.as_millis() as Millis;
                    self.activate(offset, Some(due.max(now_millis() + 1)));
                }
            }
            Cmd::Release { offset, token, epoch } if epoch == self.epoch => {
                if self.entries.get(&offset).is_some_and(|e| e.st == St::InFlight && e.token == token) {
                    self.outstanding -= 1;
                    self.activate(offset, None);
                }
            }
            Cmd::Replay { start, end, reply } => {
                self.epoch += 1;
                self.entries.clear();
                self.ready = Default::default();
                self.ready_mask = 0;
                self.delayed.clear();
                self.leases.clear();
                self.keys.clear();
                self.saved.clear();
                self.outstanding = 0;
                self.state = self.state.rewound(start, end);
                self.state.skip_to(self.log.start());
                self.cursor = Cursor::at(self.state.low_water);
                self.chan.rx.drain().for_each(drop);
                self.dirty = true;
                let _ = reply.send(());
            }
            Cmd::Stats { reply } => {
                let _ = reply.send(self.pending());
            }
            Cmd::Shutdown => return false,
            Cmd::Ack { .. } | Cmd::DeadDone { .. } | Cmd::Retry { .. } | Cmd::Release { .. } | Cmd::Wake => {}
        }
        true
    }

    fn complete(&mut self, offset: u64) {
        let Some(e) = self.entries.remove(&offset) else { return };
        match e.st {
            St::InFlight => self.outstanding -= 1,
            St::Ready => {
                self.unready(e.env.priority.get() as usize, offset);
            }
            St::Delayed(_) | St::Waiting => {}
        }
        self.state.settle(offset);
        self.dirty = true;
        if let (Some(k), OrderingMode::BlockKey) = (&e.env.key, self.spec.ordering) {
            if let Some(q) = self.keys.get_mut(k) {
                q.retain(|&o| o != offset);
                match q.front().copied() {
                    Some(next) if self.entries.get(&next).is_some_and(|n| n.st == St::Waiting) => {
                        let due = self.entries[&next].env.not_before;
                        self.activate(next, due);
                    }
                    Some(_) => {}
                    None => {
                        self.keys.remove(k);
                    }
                }
            }
        }
    }

    /// Messages not yet settled.
    fn pending(&self) -> u64 {
        self.log.end().saturating_sub(self.state.low_water).saturating_sub(self.state.settled_above())
    }
}

/// Settles one delivery by sending a command to its dispatcher.
struct LogAcker {
    cmd: flume::Sender<Cmd>,
    offset: u64,
    token: u64,
    epoch: u64,
}

#[async_trait]
impl Acker for LogAcker {
    fn settle_now(&mut self, s: &Settlement) -> Option<Result<(), BusError>> {
        let (offset, token, epoch) = (self.offset, self.token, self.epoch);
        let cmd = match s {
            Settlement::Ack => Cmd::Ack { offset, epoch },
            Settlement::RetryAfter { delay, error } => {
                Cmd::Retry { offset, token, epoch, delay: *delay, error: error.clone() }
            }
            Settlement::DeadLetter { .. } => return None,
        };
        Some(self.cmd.send(cmd).map_err(|_| BusError::LeaseExpired))
    }

    async fn settle(self: Box<Self>, s: Settlement) -> Result<(), BusError> {
        let (offset, token, epoch) = (self.offset, self.token, self.epoch);
        let cmd = match s {
            Settlement::Ack => Cmd::Ack { offset, epoch },
            Settlement::RetryAfter { delay, error } => Cmd::Retry { offset, token, epoch, delay, error },
            Settlement::DeadLetter { reason, error } => {
                let (reply, rx) = oneshot::channel();
                self.cmd
                    .send(Cmd::Dead { offset, token, epoch, reason, error, reply })
                    .map_err(|_| BusError::LeaseExpired)?;
                return rx.await.map_err(|_| BusError::LeaseExpired)?;
            }
        };
        self.cmd.send(cmd).map_err(|_| BusError::LeaseExpired)
    }

    fn release(self: Box<Self>) {
        let _ = self.cmd.send(Cmd::Release { offset: self.offset, token: self.token, epoch: self.epoch });
    }
}

/// A cheap hasher for offsets: the std SipHash costs more than the rest of an ack.
#[derive(Default)]
pub(crate) struct OffsetHasher(u64);

impl std::hash::Hasher for OffsetHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Low bits pick the bucket: keep them the offset itself, so neighbouring offsets sit in
        // neighbouring buckets (the window is read and acked in order: cache-friendly). The
        // top 7 bits are the table's tag byte: scramble them so tags still tell keys apart.
        let tag = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) & 0xFE00_0000_0000_0000;
        self.0 = n ^ tag;
    }
}
