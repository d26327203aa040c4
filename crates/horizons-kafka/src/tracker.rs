//! A member's bookkeeping, free of librdkafka so it can be tested alone: which messages it
//! read, which it handed out (and under which lease), which wait for a retry, which keys are
//! blocked, and how far each partition may be committed — never past an unsettled message.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use horizons_bus::{Envelope, Millis, OrderingMode, Settlement};
use rustc_hash::FxHashMap;

/// A partition of one of the member's Kafka topics: (index into its topic list, partition).
pub(crate) type Tp = (usize, i32);

/// Where a message is in its life at this member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Read, waiting for its key or for delivery capacity.
    Queued,
    /// Handed out under lease number `seq`, until `deadline`.
    Delivered { seq: u32 },
    /// Waiting in memory until it is due (a `BlockKey` retry, or a retry copy not yet due).
    Waiting,
    /// Its copy is being written to a retry or dead-letter topic.
    Moving,
}

/// One message read by the member.
#[derive(Debug)]
pub(crate) struct Slot {
    pub tp: Tp,
    pub offset: i64,
    pub env: Envelope,
    pub stored_at: Option<Millis>,
    /// Number of the next (or current) delivery.
    pub attempt: u32,
    pub first_error: Option<String>,
    pub last_error: Option<String>,
    /// Where the original sat, for copies.
    pub source: Option<String>,
    pub state: State,
    seq: u32,
    delivered_once: bool,
}

/// What the member must do after a settlement.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing more.
    None,
    /// The delivery was not current (lease ran out, partition revoked, settled before).
    Stale,
    /// Write a copy to the retry topic of this delay, then call [`Tracker::moved`].
    Retry { slot: u64, delay: Duration },
    /// Write the dead letter, then call [`Tracker::moved`].
    DeadLetter { slot: u64, reason: String },
}

#[derive(Debug, Default)]
struct Part {
    /// Offsets read and not yet done.
    open: Open,
    /// Payload bytes of the open slots.
    bytes: usize,
    /// One past the highest offset read.
    next: Option<i64>,
    /// Last position committed (or known committed).
    committed: Option<i64>,
}

#[derive(Debug)]
struct KeyState {
    /// The one slot of the key that is out of `Queued` (or about to be delivered).
    holder: u64,
    waiting: VecDeque<u64>,
}

/// The member's state. `BlockKey` groups keep at most one message per key out of `Queued`.
#[derive(Debug)]
pub(crate) struct Tracker {
    mode: OrderingMode,
    lease: Duration,
    slots: Slots,
    /// By partition (a member owns few; Fx: the keys are not chosen by senders).
    parts: FxHashMap<Tp, Part>,
    ready: VecDeque<u64>,
    /// Busy keys (BlockKey only) and the slots queued behind them.
    keys: HashMap<String, KeyState>,
    /// Lease deadlines of deliveries, in the order handed out: every lease is as long, so this
    /// is also deadline order. Entries of settled deliveries are dropped from the front.
    leases: VecDeque<(Instant, u64, u32)>,
    /// When waiting slots become due.
    timers: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    outstanding: usize,
}

impl Tracker {
    pub fn new(mode: OrderingMode, lease: Duration) -> Self {
        Self {
            mode,
            lease,
            slots: Slots::default(),
            parts: FxHashMap::default(),
            ready: VecDeque::new(),
            keys: HashMap::new(),
            leases: VecDeque::new(),
            timers: BinaryHeap::new(),
            outstanding: 0,
        }
    }

    /// Deliveries handed out and not settled.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Messages read and not done in `tp`, and their payload bytes.
    pub fn open_in(&self, tp: Tp) -> (usize, usize) {
        self.parts.get(&tp).map_or((0, 0), |p| (p.open.len(), p.bytes))
    }

    pub fn slot(&self, id: u64) -> Option<&Slot> {
        self.slots.get(id)
    }

    /// Adds a message read at `offset`; `due` holds it back until then.
    pub fn push(&mut self, tp: Tp, offset: i64, env: Envelope, stored_at: Option<Millis>, attempt: u32) -> u64 {
        let part = self.parts.entry(tp).or_default();
        if part.open.insert(offset) {
            part.bytes += env.payload.len();
        }
        part.next = Some(part.next.map_or(offset + 1, |n| n.max(offset + 1)));
        let slot = Slot {
            tp,
            offset,
            env,
            stored_at,
            attempt: attempt.max(1),
            first_error: None,
            last_error: None,
            source: None,
            state: State::Queued,
            seq: 0,
            delivered_once: attempt > 1,
        };
        self.slots.insert(slot)
    }

    /// Records a message read at `offset` that is settled already (skipped by a bounded
    /// replay): the commit position passes over it.
    pub fn pass(&mut self, tp: Tp, offset: i64) {
        let part = self.parts.entry(tp).or_default();
        part.next = Some(part.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// Where `tp` would be committed now: the first offset not done, if anything was read.
    pub fn position(&self, tp: Tp) -> Option<i64> {
        let p = self.parts.get(&tp)?;
        p.open.first().or(p.next).or(p.committed)
    }

    /// Makes a pushed slot deliverable, now or at `due`.
    pub fn admit(&mut self, id: u64, due: Option<Instant>) {
        match due {
            Some(at) if at > Instant::now() => self.wait(id, at),
            _ => self.enqueue(id),
        }
    }

    pub fn slot_mut(&mut self, id: u64) -> Option<&mut Slot> {
        self.slots.get_mut(id)
    }

    /// Sends a slot that cannot be delivered (undecodable) straight to the dead-letter queue.
    pub fn reject(&mut self, id: u64, reason: String) -> Action {
        match self.slots.get_mut(id) {
            Some(s) => {
                s.state = State::Moving;
                Action::DeadLetter { slot: id, reason }
            }
            None => Action::Stale,
        }
    }

    fn key_of(&self, id: u64) -> Option<String> {
        match self.mode {
            OrderingMode::BlockKey => self.slots.get(id).and_then(|s| s.env.key.clone()),
            OrderingMode::Requeue => None,
        }
    }

    /// Queues a new slot, behind its key if the key is busy.
    fn enqueue(&mut self, id: u64) {
        if let Some(key) = self.key_of(id) {
            if let Some(k) = self.keys.get_mut(&key) {
                k.waiting.push_back(id);
                return;
            }
            self.keys.insert(key, KeyState { holder: id, waiting: VecDeque::new() });
        }
        self.ready.push_back(id);
    }

    fn wait(&mut self, id: u64, at: Instant) {
        if let Some(s) = self.slots.get_mut(id) {
            s.state = State::Waiting;
            self.timers.push(Reverse((at, id, s.seq)));
        }
    }

    /// The next slot to deliver, marked delivered under a fresh lease: (slot, lease seq).
    pub fn next_delivery(&mut self, now: Instant) -> Option<(u64, u32)> {
        while let Some(id) = self.ready.pop_front() {
            let Some(s) = self.slots.get_mut(id) else { continue };
            if s.state != State::Queued {
                continue;
            }
            s.seq += 1;
            s.state = State::Delivered { seq: s.seq };
            s.delivered_once = true;
            self.outstanding += 1;
            let at = now + self.lease;
            if self.leases.back().is_none_or(|(last, _, _)| *last <= at) {
                self.leases.push_back((at, id, s.seq));
            } else {
                // A caller's clock went backwards: keep the order, the heap takes it.
                self.timers.push(Reverse((at, id, s.seq)));
            }
            return Some((id, s.seq));
        }
        None
    }

    /// Whether `(id, seq)` is the current delivery of a slot.
    fn current(&self, id: u64, seq: u32) -> bool {
        self.slots.get(id).is_some_and(|s| s.state == State::Delivered { seq })
    }

    /// Takes a delivery back (dropped, lease ran out): it goes out again first, attempt + 1.
    fn redeliver(&mut self, id: u64) {
        if let Some(s) = self.slots.get_mut(id) {
            if matches!(s.state, State::Delivered { .. }) {
                self.outstanding -= 1;
            }
            s.attempt += 1;
            s.state = State::Queued;
            self.ready.push_front(id);
        }
    }

    /// A delivery was dropped unsettled.
    pub fn release(&mut self, id: u64, seq: u32) {
        if self.current(id, seq) {
            self.redeliver(id);
        }
    }

    /// Applies a settlement of delivery `(id, seq)`.
    pub fn settle(&mut self, id: u64, seq: u32, s: Settlement, now: Instant) -> Action {
        if !self.current(id, seq) {
            return Action::Stale;
        }
        self.outstanding -= 1;
        let slot = self.slots.get_mut(id).expect("current slot exists");
        let mut record = |e: &str| {
            slot.first_error.get_or_insert_with(|| e.to_string());
            slot.last_error = Some(e.to_string());
        };
        match s {
            Settlement::Ack => {
                self.done(id);
                Action::None
            }
            Settlement::RetryAfter { delay, error } => {
                record(&error);
                match self.mode {
                    OrderingMode::BlockKey => {
                        slot.attempt += 1;
                        self.wait(id, now + delay);
                        Action::None
                    }
                    OrderingMode::Requeue => {
                        slot.state = State::Moving;
                        Action::Retry { slot: id, delay }
                    }
                }
            }
            Settlement::DeadLetter { reason, error } => {
                if let Some(e) = &error {
                    record(e);
                }
                slot.state = State::Moving;
                Action::DeadLetter { slot: id, reason }
            }
        }
    }

    /// A slot's copy was written: the original is done.
    pub fn moved(&mut self, id: u64) {
        if self.slots.get(id).is_some_and(|s| s.state == State::Moving) {
            self.done(id);
        }
    }

    /// Writing a slot's copy failed: deliver it again (the handler runs again).
    pub fn move_failed(&mut self, id: u64) {
        if let Some(s) = self.slots.get_mut(id).filter(|s| s.state == State::Moving) {
            s.state = State::Queued;
            self.ready.push_front(id);
        }
    }

    fn done(&mut self, id: u64) {
        let Some(s) = self.slots.remove(id) else { return };
        if let Some(p) = self.parts.get_mut(&s.tp) {
            if p.open.remove(s.offset) {
                p.bytes -= s.env.payload.len();
            }
        }
        if let (OrderingMode::BlockKey, Some(key)) = (self.mode, s.env.key) {
            self.unblock(&key, id);
        }
    }

    /// If `id` held `key`, the next slot behind it (if any) becomes the holder and ready.
    fn unblock(&mut self, key: &str, id: u64) {
        let Some(k) = self.keys.get_mut(key) else { return };
        if k.holder != id {
            return;
        }
        while let Some(next) = k.waiting.pop_front() {
            if self.slots.get(next).is_some() {
                k.holder = next;
                self.ready.push_back(next);
                return;
            }
        }
        self.keys.remove(key);
    }

    /// Fires due timers: expired leases are redelivered, waiting slots become ready.
    pub fn fire_timers(&mut self, now: Instant) {
        while let Some(&(at, id, seq)) = self.leases.front() {
            let current = self.current(id, seq);
            if current && at > now {
                break;
            }
            self.leases.pop_front();
            if current {
                self.redeliver(id);
            }
        }
        while let Some(Reverse((at, id, seq))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.slots.get_mut(id) else { continue };
            if s.seq != seq {
                continue;
            }
            match s.state {
                State::Delivered { .. } => self.redeliver(id),
                State::Waiting => {
                    s.state = State::Queued;
                    self.ready.push_front(id);
                }
                _ => {}
            }
        }
    }

    /// When the next timer fires (possibly early: a lease settled since the last
    /// [`fire_timers`](Self::fire_timers) still counts).
    pub fn next_timer(&self) -> Option<Instant> {
        let lease = self.leases.front().map(|(at, _, _)| *at);
        let wait = self.timers.peek().map(|Reverse((at, _, _))| *at);
        match (lease, wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Partitions whose commit position moved since the last call: (tp, next offset to read).
    pub fn commits(&mut self) -> Vec<(Tp, i64)> {
        let mut out = Vec::new();
        for (tp, p) in &mut self.parts {
            let Some(next) = p.next else { continue };
            let at = p.open.first().unwrap_or(next);
            if p.committed != Some(at) {
                out.push((*tp, at));
            }
        }
        out
    }

    /// Records that `tp` is committed up to `at`.
    pub fn committed(&mut self, tp: Tp, at: i64) {
        if let Some(p) = self.parts.get_mut(&tp) {
            p.committed = Some(at);
        }
    }

    /// Unsettled slots of `tp` that were delivered at least once: (offset, deliveries made).
    pub fn delivered_in(&self, tp: Tp) -> Vec<(i64, u32)> {
        let mut v: Vec<_> = self
            .slots
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.tp == tp && s.delivered_once)
            .map(|s| {
                let made = match s.state {
                    State::Delivered { .. } | State::Moving => s.attempt,
                    State::Queued | State::Waiting => s.attempt - 1,
                };
                (s.offset, made)
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// Delivered slots of `tps` still out with a handler.
    pub fn in_flight(&self, tps: &[Tp]) -> usize {
        self.slots
            .iter()
            .map(|(_, s)| s)
            .filter(|s| tps.contains(&s.tp) && matches!(s.state, State::Delivered { .. } | State::Moving))
            .count()
    }

    /// Forgets `tp` entirely (revoked, or rewound): its deliveries become stale.
    pub fn drop_partition(&mut self, tp: Tp) {
        let ids: Vec<u64> = self.slots.iter().filter(|(_, s)| s.tp == tp).map(|(id, _)| id).collect();
        for id in ids {
            let s = self.slots.remove(id).expect("listed");
            if matches!(s.state, State::Delivered { .. }) {
                self.outstanding -= 1;
            }
            if let (OrderingMode::BlockKey, Some(key)) = (self.mode, s.env.key) {
                self.unblock(&key, id);
            }
        }
        self.parts.remove(&tp);
    }
}

/// The slots by id: a slab whose ids carry a generation in their high half, so a freed
/// index is reused under a new id and a stale id never finds the new occupant.
#[derive(Debug, Default)]
struct Slots {
    entries: Vec<(u32, Option<Slot>)>,
    free: Vec<u32>,
}

impl Slots {
    fn insert(&mut self, slot: Slot) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push((0, None));
                (self.entries.len() - 1) as u32
            }
        };
        let e = &mut self.entries[index as usize];
        e.0 = e.0.wrapping_add(1);
        e.1 = Some(slot);
        (u64::from(e.0) << 32) | u64::from(index)
    }

    /// The index `id` names, if its generation is the current one there.
    fn index(&self, id: u64) -> Option<usize> {
        let i = (id & u64::from(u32::MAX)) as usize;
        self.entries.get(i).filter(|e| u64::from(e.0) == id >> 32).map(|_| i)
    }

    fn get(&self, id: u64) -> Option<&Slot> {
        self.entries[self.index(id)?].1.as_ref()
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Slot> {
        let i = self.index(id)?;
        self.entries[i].1.as_mut()
    }

    fn remove(&mut self, id: u64) -> Option<Slot> {
        let i = self.index(id)?;
        let s = self.entries[i].1.take()?;
        self.free.push(i as u32);
        Some(s)
    }

    fn iter(&self) -> impl Iterator<Item = (u64, &Slot)> {
        self.entries.iter().enumerate().filter_map(|(i, (g, s))| Some(((u64::from(*g) << 32) | i as u64, s.as_ref()?)))
    }
}

/// The offsets of a partition read and not yet done, in order. Kafka hands a partition's
/// records out in offset order, so a read appends and a settlement (usually near the front)
/// marks its entry; done entries leave from the front.
#[derive(Debug, Default)]
struct Open {
    offsets: VecDeque<(i64, bool)>,
    live: usize,
}

impl Open {
    /// Marks `offset` open; whether it was not open already.
    fn insert(&mut self, offset: i64) -> bool {
        if self.offsets.back().is_none_or(|(last, _)| *last < offset) {
            self.offsets.push_back((offset, false));
            self.live += 1;
            return true;
        }
        let i = self.offsets.partition_point(|(o, _)| *o < offset);
        match self.offsets.get_mut(i) {
            Some((o, done)) if *o == offset => {
                let reopened = *done;
                if reopened {
                    *done = false;
                    self.live += 1;
                }
                reopened
            }
            _ => {
                self.offsets.insert(i, (offset, false));
                self.live += 1;
                true
            }
        }
    }

    /// Marks `offset` done; whether it was open.
    fn remove(&mut self, offset: i64) -> bool {
        // Settlements mostly come in offset order: the front first, then a search.
        let i = match self.offsets.front() {
            Some((o, _)) if *o == offset => 0,
            _ => self.offsets.partition_point(|(o, _)| *o < offset),
        };
        let mut was_open = false;
        if let Some((o, done)) = self.offsets.get_mut(i) {
            if *o == offset && !*done {
                *done = true;
                self.live -= 1;
                was_open = true;
            }
        }
        while self.offsets.front().is_some_and(|(_, done)| *done) {
            self.offsets.pop_front();
        }
        was_open
    }

    fn first(&self) -> Option<i64> {
        self.offsets.front().map(|(o, _)| *o)
    }

    fn len(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests;
