//! The ready messages of one priority level, oldest offset first.
//!
//! Most messages become ready in offset order, as the dispatcher reads them: those go to a
//! queue (O(1)). Messages that become ready again out of order (retries, releases, expired
//! leases, delays, unblocked keys) go to an ordered set. The oldest is the smaller of the two
//! fronts.

use std::collections::{BTreeSet, VecDeque};

/// Ready offsets of one priority.
#[derive(Debug, Default)]
pub(crate) struct ReadySet {
    in_order: VecDeque<u64>,
    again: BTreeSet<u64>,
}

impl ReadySet {
    /// Adds `offset`; `in_order` when it comes straight from reading the log.
    pub fn insert(&mut self, offset: u64, in_order: bool) {
        if in_order && self.in_order.back().is_none_or(|&b| b < offset) {
            self.in_order.push_back(offset);
        } else {
            self.again.insert(offset);
        }
    }

    /// The oldest ready offset.
    pub fn first(&self) -> Option<u64> {
        match (self.in_order.front(), self.again.first()) {
            (Some(&a), Some(&b)) => Some(a.min(b)),
            (a, b) => a.or(b).copied(),
        }
    }

    /// Takes the oldest ready offset.
    pub fn pop_first(&mut self) -> Option<u64> {
        match (self.in_order.front(), self.again.first()) {
            (Some(&a), Some(&b)) if b < a => self.again.pop_first(),
            (Some(_), _) => self.in_order.pop_front(),
            (None, _) => self.again.pop_first(),
        }
    }

    /// Removes `offset` wherever it is (rare: a late ack of a message that is ready again).
    pub fn remove(&mut self, offset: u64) {
        if !self.again.remove(&offset) {
            if let Ok(i) = self.in_order.binary_search(&offset) {
                self.in_order.remove(i);
            }
        }
    }

    /// Whether nothing is ready.
    pub fn is_empty(&self) -> bool {
        self.in_order.is_empty() && self.again.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_first_across_both_orders() {
        let mut r = ReadySet::default();
        for o in [3, 5, 8] {
            r.insert(o, true);
        }
        r.insert(4, true); // out of order although "in order": goes to the set
        r.insert(1, false);
        r.insert(6, false);
        r.remove(5);
        let mut got = Vec::new();
        while let Some(o) = r.pop_first() {
            got.push(o);
        }
        assert_eq!(got, vec![1, 3, 4, 6, 8]);
        assert!(r.is_empty() && r.first().is_none());
    }
}
