//! One subscription's delivery state: what the broker pushed, what is handed out, and what
//! comes next. No I/O here; [`crate::consumer`] drives it.
//!
//! - **`requeue` groups**: one buffer per priority level; the highest non-empty level goes
//!   first, except that a level the broker is about to refill is waited for (up to
//!   `priority_grace`): after a settle or hand-out left that level's prefetch full and its
//!   buffer empty, and at start-up for levels the broker reports non-empty. A released or
//!   expired delivery is requeued at the broker (`basic.reject`), which may give it to any member.
//! - **`block-key` groups**: one buffer in arrival order; a message is handed out only while no
//!   other message of its key is out or waiting for a retry. Retries, releases and expired leases
//!   go back to the front of the buffer here, still unacked at the broker, so the key's order
//!   holds.
//! - Leases: a delivery not settled within the visibility timeout is taken back; its acker's
//!   state becomes stale, so a late settle answers `LeaseExpired`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use horizons_bus::{Envelope, OrderingMode};
use tokio::time::Instant;

use crate::codec::Trail;

/// Handed out, not settled.
pub(crate) const HANDED: u8 = 0;
/// Its acker is talking to the broker.
pub(crate) const SETTLING: u8 = 1;
/// Settled or released.
pub(crate) const DONE: u8 = 2;
/// Taken back (lease ran out, or the channel was lost).
pub(crate) const STALE: u8 = 3;

/// Shared by a handed-out delivery's acker and the member.
pub(crate) type SlotState = Arc<AtomicU8>;

/// Moves `s` from `from` to `to`; `false` if it was elsewhere.
pub(crate) fn transition(s: &AtomicU8, from: u8, to: u8) -> bool {
    s.compare_exchange(from, to, AtomicOrdering::AcqRel, AtomicOrdering::Acquire).is_ok()
}

/// A message the broker pushed to this member.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub env: Envelope,
    /// Index of the queue it came from (level or shard).
    pub queue: usize,
    pub tag: u64,
    pub attempt: u32,
    pub trail: Trail,
}

/// What the acker tells the member after the user settled or dropped a delivery.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Done: ack it at the broker (after any retry or dead-letter copy was confirmed).
    Settled { token: u64 },
    /// Dropped unsettled.
    Release { token: u64 },
    /// `block-key`: deliver again after `delay`, in place.
    RetryInPlace { token: u64, delay: Duration, error: String },
}

/// Broker work the member asks its driver to do.
#[derive(Debug)]
pub(crate) enum Action {
    /// `basic.reject` with requeue.
    Requeue { queue: usize, tag: u64 },
    /// `basic.ack`, batched with others ([`crate::acks`]).
    Ack { queue: usize, tag: u64 },
}

struct InFlight {
    entry: Entry,
    state: SlotState,
    deadline: Option<Instant>,
}

/// See the module docs.
pub(crate) struct Member {
    mode: OrderingMode,
    prefetch: usize,
    grace: Duration,
    visibility: Duration,
    /// Per queue (level) buffers; `block-key` uses `fifo` instead.
    levels: Vec<VecDeque<Entry>>,
    fifo: VecDeque<Entry>,
    /// Per queue: pushed by the broker and not yet settled there.
    held: Vec<usize>,
    expect: Vec<Option<Instant>>,
    busy: HashSet<String>,
    delayed: Vec<(Instant, Entry)>,
    in_flight: HashMap<u64, InFlight>,
    leases: BinaryHeap<Reverse<(Instant, u64)>>,
    next_token: u64,
}

impl Member {
    pub fn new(mode: OrderingMode, queues: usize, prefetch: usize, grace: Duration, visibility: Duration) -> Self {
        Self {
            mode,
            prefetch,
            grace,
            visibility,
            levels: (0..queues).map(|_| VecDeque::new()).collect(),
            fifo: VecDeque::new(),
            held: vec![0; queues],
            expect: vec![None; queues],
            busy: HashSet::new(),
            delayed: Vec::new(),
            in_flight: HashMap::new(),
            leases: BinaryHeap::new(),
            next_token: 0,
        }
    }

    /// The broker reported messages waiting in `queue` at start-up: wait for them up to `until`.
    pub fn expect(&mut self, queue: usize, until: Instant) {
        if self.mode == OrderingMode::Requeue {
            self.expect[queue] = Some(until);
        }
    }

    /// A delivery from the broker.
    pub fn push(&mut self, e: Entry) {
        self.held[e.queue] += 1;
        match self.mode {
            OrderingMode::Requeue => {
                self.expect[e.queue] = None;
                self.levels[e.queue].push_back(e);
            }
            OrderingMode::BlockKey => self.fifo.push_back(e),
        }
    }

    /// Removes the most recently pushed entry if it is larger than `max` bytes.
    pub fn remove_oversize(&mut self, max: usize) -> Option<Entry> {
        let buf = match self.mode {
            OrderingMode::Requeue => {
                self.levels.iter_mut().find(|b| b.back().is_some_and(|e| e.env.wire_size() > max))?
            }
            OrderingMode::BlockKey => &mut self.fifo,
        };
        if buf.back().is_some_and(|e| e.env.wire_size() > max) {
            buf.pop_back()
        } else {
            None
        }
    }

    /// What to hand out now, or `Err(when)` to look again (`None`: when something happens).
    pub fn next_ready(&mut self, now: Instant) -> Result<Entry, Option<Instant>> {
        match self.mode {
            OrderingMode::Requeue => {
                let top = self.levels.iter().rposition(|b| !b.is_empty());
                let wait =
                    self.expect[top.map_or(0, |l| l + 1)..].iter().flatten().filter(|t| **t > now).min().copied();
                match (top, wait) {
                    (_, Some(t)) => Err(Some(t)),
                    (Some(l), None) => Ok(self.levels[l].pop_front().expect("non-empty")),
                    (None, None) => Err(None),
                }
            }
            OrderingMode::BlockKey => {
                self.delayed.sort_by_key(|(t, _)| Reverse(*t));
                while self.delayed.last().is_some_and(|(t, _)| *t <= now) {
                    let (_, e) = self.delayed.pop().expect("checked");
                    if let Some(k) = &e.env.key {
                        self.busy.remove(k);
                    }
                    self.fifo.push_front(e);
                }
                let free = |e: &Entry| e.env.key.as_ref().is_none_or(|k| !self.busy.contains(k));
                match self.fifo.iter().position(free) {
                    Some(i) => Ok(self.fifo.remove(i).expect("in range")),
                    None => Err(self.delayed.last().map(|(t, _)| *t)),
                }
            }
        }
    }

    /// `e` is offered to the subscription; returns its token and acker state.
    pub fn offer(&mut self, e: Entry) -> (u64, SlotState) {
        self.next_token += 1;
        let token = self.next_token;
        if let (OrderingMode::BlockKey, Some(k)) = (self.mode, &e.env.key) {
            self.busy.insert(k.clone());
        }
        let state = Arc::new(AtomicU8::new(HANDED));
        self.in_flight.insert(token, InFlight { entry: e, state: state.clone(), deadline: None });
        (token, state)
    }

    /// The offered delivery was taken by a consumer: its lease starts.
    pub fn taken(&mut self, token: u64, now: Instant) {
        let Some(f) = self.in_flight.get_mut(&token) else { return };
        let deadline = now + self.visibility;
        f.deadline = Some(deadline);
        self.leases.push(Reverse((deadline, token)));
        let q = f.entry.queue;
        if self.mode == OrderingMode::Requeue && self.held[q] >= self.prefetch && self.levels[q].is_empty() {
            self.expect[q] = Some(now + self.grace);
        }
    }

    fn freed(&mut self, queue: usize, now: Instant) {
        if self.mode == OrderingMode::Requeue && self.held[queue] >= self.prefetch {
            self.expect[queue] = Some(now + self.grace);
        }
        self.held[queue] = self.held[queue].saturating_sub(1);
    }

    /// Applies an acker's report; returns broker work to do.
    pub fn command(&mut self, cmd: Cmd, now: Instant) -> Option<Action> {
        match cmd {
            Cmd::Settled { token } => {
                let f = self.in_flight.remove(&token)?;
                if let Some(k) = &f.entry.env.key {
                    if self.mode == OrderingMode::BlockKey {
                        self.busy.remove(k);
                    }
                }
                self.freed(f.entry.queue, now);
                Some(Action::Ack { queue: f.entry.queue, tag: f.entry.tag })
            }
            Cmd::Release { token } => {
                let f = self.in_flight.remove(&token)?;
                self.take_back(f.entry, now)
            }
            Cmd::RetryInPlace { token, delay, error } => {
                let mut e = self.in_flight.remove(&token)?.entry;
                e.attempt += 1;
                e.trail.first_error.get_or_insert_with(|| error.clone());
                e.trail.last_error = Some(error);
                self.delayed.push((now + delay, e));
                None
            }
        }
    }

    /// A delivery that came back unsettled: requeue at the broker, or in place for `block-key`.
    fn take_back(&mut self, mut e: Entry, now: Instant) -> Option<Action> {
        match self.mode {
            OrderingMode::Requeue => {
                self.freed(e.queue, now);
                Some(Action::Requeue { queue: e.queue, tag: e.tag })
            }
            OrderingMode::BlockKey => {
                if let Some(k) = &e.env.key {
                    self.busy.remove(k);
                }
                e.attempt += 1;
                self.fifo.push_front(e);
                None
            }
        }
    }

    /// Takes back every delivery whose lease ran out by `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(Reverse((t, token))) = self.leases.peek().copied() {
            if t > now {
                break;
            }
            self.leases.pop();
            let live = self
                .in_flight
                .get(&token)
                .is_some_and(|f| f.deadline == Some(t) && transition(&f.state, HANDED, STALE));
            if live {
                let f = self.in_flight.remove(&token).expect("checked");
                tracing::debug!(message_id = %f.entry.env.id, "visibility timeout ran out; taking the delivery back");
                out.extend(self.take_back(f.entry, now));
            }
        }
        out
    }

    /// The next time something is due (a lease, an in-place retry), if any.
    pub fn next_due(&self) -> Option<Instant> {
        let lease = self.leases.peek().map(|Reverse((t, _))| *t);
        let retry = self.delayed.iter().map(|(t, _)| *t).min();
        lease.into_iter().chain(retry).min()
    }

    /// The channel died: everything it delivered is the broker's again.
    pub fn lost(&mut self) {
        for f in self.in_flight.values() {
            f.state.store(STALE, AtomicOrdering::Release);
        }
        self.in_flight.clear();
        self.leases.clear();
        self.levels.iter_mut().for_each(VecDeque::clear);
        self.fifo.clear();
        self.delayed.clear();
        self.busy.clear();
        self.held.iter_mut().for_each(|h| *h = 0);
        self.expect.iter_mut().for_each(|e| *e = None);
    }
}

#[cfg(test)]
mod tests {
    use horizons_bus::{Priority, Topic};

    use super::*;

    fn entry(queue: usize, seq: u8, key: Option<&str>) -> Entry {
        let mut env = Envelope::new(Topic::new("t").unwrap(), vec![seq]);
        env.priority = Priority::new(queue.min(9) as u8).unwrap();
        env.key = key.map(str::to_string);
        Entry { env, queue, tag: u64::from(seq), attempt: 1, trail: Trail::default() }
    }

    fn seq(e: &Entry) -> u8 {
        e.env.payload[0]
    }

    #[test]
    fn highest_level_first_and_waits_for_a_refill() {
        let now = Instant::now();
        let grace = Duration::from_millis(25);
        let mut m = Member::new(OrderingMode::Requeue, 10, 1, grace, Duration::from_secs(30));
        m.push(entry(2, 1, None));
        m.push(entry(9, 2, None));
        let top = m.next_ready(now).unwrap();
        assert_eq!(seq(&top), 2);
        let (token, _) = m.offer(top);
        m.taken(token, now);
        // Level 9's prefetch (1) is held by the consumer: wait for its refill before level 2.
        assert_eq!(m.next_ready(now).unwrap_err(), Some(now + grace));
        assert!(matches!(m.command(Cmd::Settled { token }, now), Some(Action::Ack { tag: 2, .. })));
        assert!(m.next_ready(now).is_err(), "a settle with a full window expects a refill");
        m.push(entry(9, 3, None));
        assert_eq!(seq(&m.next_ready(now).unwrap()), 3);
        // No refill within the grace: the lower level goes.
        assert_eq!(seq(&m.next_ready(now + grace * 2).unwrap()), 1);
    }

    #[test]
    fn block_key_holds_a_key_and_retries_in_place() {
        let now = Instant::now();
        let mut m = Member::new(OrderingMode::BlockKey, 1, 10, Duration::ZERO, Duration::from_secs(30));
        for (s, k) in [(1, "a"), (2, "a"), (3, "b")] {
            m.push(entry(0, s, Some(k)));
        }
        let first = m.next_ready(now).unwrap();
        assert_eq!(seq(&first), 1);
        let (token, _) = m.offer(first);
        m.taken(token, now);
        assert_eq!(seq(&m.next_ready(now).unwrap()), 3, "key a is blocked, b goes ahead");
        let delay = Duration::from_millis(50);
        m.command(Cmd::RetryInPlace { token, delay, error: "boom".into() }, now);
        assert_eq!(m.next_ready(now).unwrap_err(), Some(now + delay), "a stays blocked while its retry waits");
        let again = m.next_ready(now + delay).unwrap();
        assert_eq!((seq(&again), again.attempt), (1, 2), "the retried message comes back before seq 2");
        assert_eq!(again.trail.first_error.as_deref(), Some("boom"));
    }

    #[test]
    fn expired_leases_go_back_and_stale_acks_lose() {
        let now = Instant::now();
        let vt = Duration::from_secs(1);
        let mut m = Member::new(OrderingMode::Requeue, 10, 4, Duration::ZERO, vt);
        m.push(entry(4, 1, None));
        let e = m.next_ready(now).unwrap();
        let (token, state) = m.offer(e);
        m.taken(token, now);
        assert!(m.expire(now + vt / 2).is_empty());
        let actions = m.expire(now + vt);
        assert!(matches!(actions.as_slice(), [Action::Requeue { tag: 1, .. }]));
        assert!(!transition(&state, HANDED, SETTLING), "a stale delivery cannot be settled");
    }
}
