//! A consumer group's durable position: low-water mark, settled offsets above it, and the
//! retry history of messages still pending. Saved as a small JSON snapshot (write to a temp
//! file, fsync, rename), every flush interval and on close.
//!
//! Losing the last interval of acks to a crash only causes redeliveries (at-least-once); it
//! never loses a message.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;

use horizons_bus::Millis;
use serde::{Deserialize, Serialize};

use crate::error::LogError;

/// Retry history of one pending message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// Its offset.
    pub offset: u64,
    /// Deliveries made.
    pub attempts: u32,
    /// First handler error.
    pub first_error: Option<String>,
    /// Last handler error.
    pub last_error: Option<String>,
    /// Not to be delivered before (a pending retry).
    pub due: Option<Millis>,
}

/// The snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// Every offset below this is settled.
    pub low_water: u64,
    /// Settled offsets at or above `low_water`.
    pub done: BTreeSet<u64>,
    /// Retry history of pending messages.
    pub saved: Vec<Saved>,
    /// Settled ranges `[start, end)` above `low_water`, sorted and disjoint: what a bounded
    /// replay left settled after the range it rewound (see [`GroupState::rewound`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<(u64, u64)>,
}

impl GroupState {
    /// Reads a snapshot; `None` if there is none.
    pub fn load(path: &Path) -> Result<Option<GroupState>, LogError> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| LogError::Corrupt {
                path: path.to_path_buf(),
                position: 0,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LogError::io("reading group state", path)(e)),
        }
    }

    /// Writes a snapshot atomically.
    pub fn save(&self, path: &Path) -> Result<(), LogError> {
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(self).expect("state serialises");
        let mut f = fs::File::create(&tmp).map_err(LogError::io("writing group state", &tmp))?;
        f.write_all(&bytes).map_err(LogError::io("writing group state", &tmp))?;
        f.sync_data().map_err(LogError::io("syncing group state", &tmp))?;
        fs::rename(&tmp, path).map_err(LogError::io("renaming group state", path))?;
        Ok(())
    }

    /// Marks `offset` settled and advances the low-water mark.
    pub fn settle(&mut self, offset: u64) {
        if offset < self.low_water {
            return;
        }
        if offset == self.low_water && self.done.is_empty() && self.skip.is_empty() {
            // In-order acks, the common case, never touch the set.
            self.low_water += 1;
            return;
        }
        if self.skip.iter().any(|&(s, e)| s <= offset && offset < e) {
            return;
        }
        self.done.insert(offset);
        self.advance();
    }

    /// Moves the low-water mark over settled offsets and ranges that start at it.
    fn advance(&mut self) {
        loop {
            if self.done.first() == Some(&self.low_water) {
                self.done.pop_first();
                self.low_water += 1;
            } else if let Some(&(_, end)) = self.skip.first().filter(|(s, _)| *s <= self.low_water) {
                self.skip.remove(0);
                self.low_water = self.low_water.max(end);
                self.done = self.done.split_off(&self.low_water);
            } else {
                return;
            }
        }
    }

    /// Whether `offset` is settled.
    pub fn is_settled(&self, offset: u64) -> bool {
        offset < self.low_water
            || self.done.contains(&offset)
            || self.skip.iter().any(|&(s, e)| s <= offset && offset < e)
    }

    /// How many offsets at or above `low_water` are settled.
    pub fn settled_above(&self) -> u64 {
        self.done.len() as u64 + self.skip.iter().map(|(s, e)| e - s).sum::<u64>()
    }

    /// The part of the position below `end`: what may be saved while the log is durable only
    /// up to `end`. Settlements at or past it are dropped (redelivered after a crash), never
    /// kept: after a machine crash, new records take those offsets.
    pub fn below(mut self, end: u64) -> GroupState {
        self.low_water = self.low_water.min(end);
        self.done.retain(|o| *o < end);
        self.saved.retain(|s| s.offset < end);
        self.skip = self.skip.iter().map(|&(a, b)| (a, b.min(end))).filter(|(a, b)| a < b).collect();
        self
    }

    /// Forgets offsets below `start` (deleted by retention).
    pub fn skip_to(&mut self, start: u64) {
        if self.low_water < start {
            self.low_water = start;
            self.done = self.done.split_off(&start);
            self.skip.retain(|&(_, e)| e > start);
            for r in &mut self.skip {
                r.0 = r.0.max(start);
            }
            self.advance();
        }
    }

    /// The state after a replay from `start`: offsets below it count as settled, offsets from it
    /// on are delivered again — up to `end` if given; offsets at or after `end` keep the state
    /// they have now (settled ones stay settled, pending ones stay pending). Retry histories are
    /// dropped, so attempts count from 1 again.
    pub fn rewound(&self, start: u64, end: Option<u64>) -> GroupState {
        let Some(end) = end else {
            return GroupState { low_water: start, ..Default::default() };
        };
        if end <= start {
            // An empty range changes nothing.
            return self.clone();
        }
        let mut skip = Vec::new();
        if self.low_water > end {
            skip.push((end, self.low_water));
        }
        for &(s, e) in &self.skip {
            if e > end {
                skip.push((s.max(end), e));
            }
        }
        skip.sort_unstable();
        let mut next =
            GroupState { low_water: start, done: self.done.range(end..).copied().collect(), saved: Vec::new(), skip };
        next.advance();
        next
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn below_keeps_nothing_at_or_past_the_durable_end() {
        let saved = |offset| Saved { offset, attempts: 1, first_error: None, last_error: None, due: None };
        let state = GroupState {
            low_water: 10,
            done: [12, 14, 20].into_iter().collect(),
            saved: vec![saved(11), saved(15)],
            skip: vec![(12, 13), (14, 18)],
        };
        assert_eq!(state.clone().below(100), state, "all durable: unchanged");
        let b = state.clone().below(15);
        assert_eq!((b.low_water, b.done.iter().copied().collect::<Vec<_>>()), (10, vec![12, 14]));
        assert_eq!(b.saved, vec![saved(11)]);
        assert_eq!(b.skip, vec![(12, 13), (14, 15)]);
        let b = state.below(7);
        assert_eq!((b.low_water, b.done.len(), b.saved.len(), b.skip.len()), (7, 0, 0, 0));
    }

    use super::*;

    #[test]
    fn low_water_advances_over_contiguous_settles() {
        let mut s = GroupState::default();
        s.settle(1);
        s.settle(2);
        assert_eq!((s.low_water, s.done.len()), (0, 2));
        s.settle(0);
        assert_eq!((s.low_water, s.done.len()), (3, 0));
        s.settle(5);
        s.skip_to(4);
        assert_eq!((s.low_water, s.done.len()), (4, 1));
        s.settle(4);
        assert_eq!((s.low_water, s.done.len()), (6, 0));
        assert!(s.is_settled(5) && !s.is_settled(6));
    }

    #[test]
    fn a_bounded_rewind_redelivers_only_its_range() {
        // Settled: everything below 10, and 12. Pending: 10, 11, 13…
        let mut s = GroupState { low_water: 10, ..Default::default() };
        s.settle(12);
        let r = s.rewound(3, Some(6));
        assert_eq!(r.low_water, 3);
        assert!((0..3).all(|o| r.is_settled(o)), "before the range: settled");
        assert!((3..6).all(|o| !r.is_settled(o)), "the range: delivered again");
        assert!((6..10).all(|o| r.is_settled(o)), "after the range, settled before: still settled");
        assert!(!r.is_settled(10) && !r.is_settled(11) && r.is_settled(12) && !r.is_settled(13));
        assert_eq!(r.settled_above(), 5);

        // Settling the range carries the low-water mark over the skipped part.
        let mut r2 = r.clone();
        for o in 3..6 {
            r2.settle(o);
        }
        assert_eq!((r2.low_water, r2.skip.len()), (10, 0));
        r2.settle(10);
        r2.settle(11);
        assert_eq!((r2.low_water, r2.done.len()), (13, 0));

        // Unbounded: the old replay. Empty range: nothing changes.
        assert_eq!(s.rewound(3, None), GroupState { low_water: 3, ..Default::default() });
        assert_eq!(s.rewound(5, Some(5)), s);

        // A second bounded rewind inside a skipped part keeps the rest of it.
        let r3 = r.rewound(7, Some(8));
        assert!(r3.is_settled(6) && !r3.is_settled(7) && (8..10).all(|o| r3.is_settled(o)) && !r3.is_settled(10));

        // Retention past a skipped range.
        let mut r4 = r.clone();
        r4.skip_to(8);
        assert_eq!((r4.low_water, r4.skip.len()), (10, 0));
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.state");
        assert_eq!(GroupState::load(&p).unwrap(), None);
        let mut s = GroupState { low_water: 7, ..Default::default() };
        s.settle(9);
        s.saved.push(Saved {
            offset: 8,
            attempts: 2,
            first_error: Some("a".into()),
            last_error: Some("b".into()),
            due: Some(5),
        });
        s.save(&p).unwrap();
        assert_eq!(GroupState::load(&p).unwrap(), Some(s));
        fs::write(&p, b"{not json").unwrap();
        let err = GroupState::load(&p).unwrap_err().to_string();
        assert!(err.contains("g.state"), "{err}");
    }
}
