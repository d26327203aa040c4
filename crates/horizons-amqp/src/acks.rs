//! Acks in batches: one `basic.ack` with `multiple` for every run of settled deliveries.
//!
//! A consuming channel (one per queue: priority levels do not share tags) numbers its
//! deliveries 1, 2, 3, …; `basic.ack(tag, multiple)` acks
//! every delivery up to `tag` at once. [`Acks`] keeps the channel's open deliveries (pushed,
//! neither acked nor rejected) in tag order and acks the settled run at the bottom with one
//! frame once it holds `batch` settles (an eighth of the prefetch, at most 256; 1 for a
//! prefetch under 16, so a small window never waits) or its oldest settle is [`HOLD`] old.
//! A settled delivery above one still open (a slow handler, a `block-key` retry) cannot be
//! covered by a multiple ack; it waits up to
//! [`HOLD`] for the gap to close, then is acked on its own, so unacked deliveries never sit on
//! the channel's prefetch for long.
//!
//! Frames cost the client a hand-over to lapin's I/O thread each and the broker a channel
//! round each; under load the settles of a whole burst leave in one frame. The broker learns
//! of a settle up to [`HOLD`] later than with one ack per delivery, and a crash in between
//! delivers those messages again (at-least-once allows that; the inbox absorbs it).
//!
//! No I/O here: the driver ([`crate::consumer`]) sends what [`Acks::flush`] returns, in order.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// How long a settled delivery waits for the frame that acks it.
pub const HOLD: Duration = Duration::from_millis(5);

/// One frame to send: ack delivery `tag`, and with `multiple` every earlier one too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckFrame {
    pub tag: u64,
    pub multiple: bool,
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    /// Delivered, not settled.
    Open,
    /// Settled, waiting for its frame.
    Settled,
    /// Acked on its own, or rejected: no longer the channel's, and no gap either.
    Gone,
}

/// The deliveries of one channel above the last multiple ack.
#[derive(Debug)]
pub struct Acks {
    /// Every tag up to here is acked or rejected.
    floor: u64,
    /// Tags above `floor` seen so far. A tag not in here was not pushed yet (the deliveries of
    /// a channel's queues arrive through separate streams), so it stops a run too.
    slots: BTreeMap<u64, Slot>,
    /// Settled deliveries, oldest settle first (some may have been acked since: skipped).
    settled: VecDeque<(Instant, u64)>,
    /// Settles a run waits for before its frame goes.
    batch: usize,
}

impl Acks {
    /// The acks of a channel whose consumers hold up to `prefetch` deliveries each.
    pub fn new(prefetch: usize) -> Self {
        Self { floor: 0, slots: BTreeMap::new(), settled: VecDeque::new(), batch: (prefetch / 8).clamp(1, 256) }
    }

    /// The channel delivered `tag`.
    pub fn delivered(&mut self, tag: u64) {
        if tag > self.floor {
            self.slots.insert(tag, Slot::Open);
        }
    }

    /// `tag` is done: ack it.
    pub fn settled(&mut self, tag: u64, now: Instant) {
        if let Some(slot @ Slot::Open) = self.slots.get_mut(&tag) {
            *slot = Slot::Settled;
            self.settled.push_back((now, tag));
        }
    }

    /// `tag` left by another way (`basic.reject`): it no longer holds back later acks.
    pub fn forget(&mut self, tag: u64) {
        if let Some(slot) = self.slots.get_mut(&tag) {
            *slot = Slot::Gone;
        }
    }

    /// The channel is gone, and with it every open delivery; the next one starts at tag 1.
    pub fn clear(&mut self) {
        self.floor = 0;
        self.slots.clear();
        self.settled.clear();
    }

    fn is_settled(&self, tag: u64) -> bool {
        matches!(self.slots.get(&tag), Some(Slot::Settled))
    }

    /// Drops acked deliveries from the front of the settle order.
    fn trim(&mut self) {
        while self.settled.front().is_some_and(|(_, tag)| !self.is_settled(*tag)) {
            self.settled.pop_front();
        }
    }

    /// When the oldest held delivery must be acked on its own, if any waits.
    pub fn due(&self) -> Option<Instant> {
        self.settled.front().map(|(t, _)| *t + HOLD)
    }

    /// The run just above the floor (consecutive tags, none open): how many tags it spans,
    /// how many of them are settled, and the last settled one.
    fn run(&self) -> (u64, usize, Option<u64>) {
        let (mut len, mut settled, mut last) = (0, 0, None);
        for (tag, slot) in &self.slots {
            if *tag != self.floor + len + 1 {
                break;
            }
            match slot {
                Slot::Open => break,
                Slot::Settled => (settled, last) = (settled + 1, Some(*tag)),
                Slot::Gone => {}
            }
            len += 1;
        }
        (len, settled, last)
    }

    /// The frames to send now: the settled run just above the floor as one multiple ack once
    /// it is a batch or its oldest settle is due, then every delivery settled [`HOLD`] ago or
    /// earlier on its own.
    pub fn flush(&mut self, now: Instant) -> Vec<AckFrame> {
        let mut frames = Vec::new();
        let due = self.due().is_some_and(|t| now >= t);
        // `settled` holds every settled delivery (and some acked ones): fewer than a batch
        // there, nothing due, and the run cannot be a batch either — no walk on the hot path.
        if !due && self.settled.len() < self.batch {
            return frames;
        }
        let (len, settled, last) = self.run();
        if settled < self.batch && !due {
            return frames;
        }
        if len > 0 {
            self.floor += len;
            self.slots = self.slots.split_off(&(self.floor + 1));
        }
        if let Some(tag) = last {
            frames.push(AckFrame { tag, multiple: settled > 1 });
        }
        self.trim();
        while let Some(&(t, tag)) = self.settled.front() {
            if now < t + HOLD {
                break;
            }
            self.settled.pop_front();
            if let Some(slot @ Slot::Settled) = self.slots.get_mut(&tag) {
                *slot = Slot::Gone;
                frames.push(AckFrame { tag, multiple: false });
            }
            self.trim();
        }
        frames
    }

    /// Deliveries delivered and not yet acked or rejected.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.slots.values().filter(|s| !matches!(s, Slot::Gone)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(frames: Vec<AckFrame>) -> Vec<(u64, bool)> {
        frames.into_iter().map(|f| (f.tag, f.multiple)).collect()
    }

    /// A channel with `prefetch` that delivered tags 1..=`last`.
    fn delivered(prefetch: usize, last: u64) -> Acks {
        let mut a = Acks::new(prefetch);
        (1..=last).for_each(|t| a.delivered(t));
        a
    }

    #[test]
    fn a_settled_run_leaves_in_one_multiple_ack() {
        let now = Instant::now();
        let mut a = delivered(8, 5);
        for t in [2, 1, 3] {
            a.settled(t, now);
        }
        assert_eq!(sent(a.flush(now)), vec![(3, true)], "1..=3 settled: one frame up to 3");
        a.settled(4, now);
        assert_eq!(sent(a.flush(now)), vec![(4, false)], "a run of one is a plain ack");
        assert_eq!(a.open(), 1);
        assert!(a.flush(now).is_empty(), "5 is still open");
    }

    #[test]
    fn a_settle_above_an_open_delivery_waits_for_the_gap_then_goes_alone() {
        let now = Instant::now();
        let mut a = delivered(8, 4);
        a.settled(2, now);
        a.settled(4, now);
        assert!(a.flush(now).is_empty(), "1 is open: 2 and 4 wait");
        assert_eq!(a.due(), Some(now + HOLD));
        assert!(a.flush(now + HOLD / 2).is_empty());
        assert_eq!(sent(a.flush(now + HOLD)), vec![(2, false), (4, false)], "after the hold, each on its own");
        assert_eq!(a.due(), None);
        a.settled(1, now + HOLD);
        assert_eq!(sent(a.flush(now + HOLD)), vec![(1, false)]);
        assert_eq!(a.open(), 1, "3 is open");
    }

    #[test]
    fn a_large_window_waits_for_a_batch_or_the_hold() {
        let now = Instant::now();
        let mut a = delivered(32, 6);
        (1..=3).for_each(|t| a.settled(t, now));
        assert!(a.flush(now).is_empty(), "3 settles, a batch is 4");
        a.settled(4, now);
        assert_eq!(sent(a.flush(now)), vec![(4, true)]);
        a.settled(5, now);
        assert!(a.flush(now + HOLD / 2).is_empty());
        assert_eq!(a.due(), Some(now + HOLD));
        assert_eq!(sent(a.flush(now + HOLD)), vec![(5, false)], "a lone settle goes after the hold");
        a.clear();
        (1..=4).for_each(|t| a.delivered(t));
        (1..=4).for_each(|t| a.settled(t, now));
        assert_eq!(sent(a.flush(now)), vec![(4, true)], "the batch size survives a new channel");
    }

    #[test]
    fn a_tag_not_yet_pushed_stops_the_run() {
        let now = Instant::now();
        let mut a = Acks::new(8);
        // Tags 1 and 3 came through one queue's stream; 2 is still in another's.
        a.delivered(1);
        a.delivered(3);
        a.settled(1, now);
        a.settled(3, now);
        assert_eq!(sent(a.flush(now)), vec![(1, false)], "a multiple ack up to 3 would ack 2 unseen");
        a.delivered(2);
        a.settled(2, now);
        assert_eq!(sent(a.flush(now)), vec![(3, true)]);
    }

    #[test]
    fn a_delivery_acked_alone_is_no_gap_for_the_next_run() {
        let now = Instant::now();
        let mut a = delivered(8, 4);
        a.settled(2, now);
        assert_eq!(sent(a.flush(now + HOLD)), vec![(2, false)]);
        a.settled(1, now + HOLD);
        a.settled(3, now + HOLD);
        assert_eq!(sent(a.flush(now + HOLD)), vec![(3, true)], "1 and 3 in one frame, over the acked 2");
    }

    #[test]
    fn a_closed_gap_sends_the_whole_run() {
        let now = Instant::now();
        let mut a = delivered(8, 4);
        a.settled(3, now);
        a.settled(2, now);
        assert!(a.flush(now).is_empty());
        a.settled(1, now);
        assert_eq!(sent(a.flush(now)), vec![(3, true)]);
        assert_eq!(a.due(), None, "nothing held");
    }

    #[test]
    fn rejected_and_unknown_tags_do_not_block_or_ack() {
        let now = Instant::now();
        let mut a = delivered(8, 3);
        a.forget(1);
        a.settled(9, now);
        a.settled(2, now);
        a.settled(2, now);
        assert_eq!(sent(a.flush(now)), vec![(2, false)], "1 was rejected; 9 was never delivered here");
        a.settled(3, now);
        a.clear();
        assert!(a.flush(now + HOLD).is_empty(), "a lost channel acks nothing");
    }
}
