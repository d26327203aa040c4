//! The self-checking test payload of `bus publish`, `bus consume --check-sequence` and the
//! bench.
//!
//! ```text
//! bytes 0..8   sequence number, big-endian
//! bytes 8..    filler: byte i = (seq as u8) + i  (wrapping)
//! ```
//! The bench overwrites bytes 8..16 with a send timestamp ([`STAMP_RANGE`]) and checks the
//! filler after it. A payload shorter than 8 bytes, or whose filler does not match its sequence
//! number, is corrupt.

use std::ops::Range;

use serde::Serialize;

/// Bytes taken by the sequence number.
pub const SEQ_LEN: usize = 8;
/// Where the bench keeps its send timestamp.
pub const STAMP_RANGE: Range<usize> = 8..16;
/// Sequence numbers at or above this are counted as corrupt: it bounds the memory of
/// [`SequenceCheck`] (a bitset of 2^32 bits is 512 MiB) against a garbled first word.
pub const MAX_SEQ: u64 = 1 << 32;

/// Writes the payload for `seq` into `out` (whose length is the payload size, at least 8).
pub fn fill(seq: u64, out: &mut [u8]) {
    out[..SEQ_LEN].copy_from_slice(&seq.to_be_bytes());
    let base = seq as u8;
    for (i, b) in out.iter_mut().enumerate().skip(SEQ_LEN) {
        *b = base.wrapping_add(i as u8);
    }
}

/// Writes `stamp` into the bench's timestamp bytes (payload of at least 16 bytes).
pub fn stamp(out: &mut [u8], stamp: u64) {
    out[STAMP_RANGE].copy_from_slice(&stamp.to_be_bytes());
}

/// The bench's timestamp of `payload`.
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    payload.get(STAMP_RANGE).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// The sequence number of `payload` if it is intact; bytes in `skip` are not checked.
pub fn check(payload: &[u8], skip: Range<usize>) -> Option<u64> {
    let seq = u64::from_be_bytes(payload.get(..SEQ_LEN)?.try_into().expect("8 bytes"));
    let base = seq as u8;
    let ok =
        payload.iter().enumerate().skip(SEQ_LEN).all(|(i, &b)| skip.contains(&i) || b == base.wrapping_add(i as u8));
    ok.then_some(seq)
}

/// What `consume --check-sequence` prints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SequenceSummary {
    /// Deliveries seen, duplicates and corrupt ones included.
    pub count: u64,
    /// Smallest sequence number seen.
    pub first_seq: Option<u64>,
    /// Largest sequence number seen.
    pub last_seq: Option<u64>,
    /// Sequence numbers missing from `[0, last_seq]` (counted from 0, not from `first_seq`,
    /// because the publisher always starts at 0: a lost head is a gap too).
    pub gaps: u64,
    /// Deliveries of a sequence number already seen.
    pub duplicates: u64,
    /// Payloads shorter than 8 bytes, with a filler that does not match, or a sequence number
    /// of [`MAX_SEQ`] or more.
    pub corrupt: u64,
    /// With `consume --acked N`: how many of the sequence numbers `0..N` (those a publisher
    /// printed as acknowledged) were not delivered. Must be 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_below_acked: Option<u64>,
}

/// Tracks which sequence numbers arrived, in a bitset that grows with the largest one.
#[derive(Debug, Default)]
pub struct SequenceCheck {
    seen: Vec<u64>,
    distinct: u64,
    summary: SequenceSummary,
}

impl SequenceCheck {
    /// A check that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one delivered payload.
    pub fn observe(&mut self, payload: &[u8]) {
        self.summary.count += 1;
        let seq = match check(payload, 0..0) {
            Some(s) if s < MAX_SEQ => s,
            _ => {
                self.summary.corrupt += 1;
                return;
            }
        };
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            self.seen.resize((word + 1).next_power_of_two(), 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.summary.duplicates += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.distinct += 1;
        let s = &mut self.summary;
        s.first_seq = Some(s.first_seq.map_or(seq, |f| f.min(seq)));
        s.last_seq = Some(s.last_seq.map_or(seq, |l| l.max(seq)));
    }

    /// How many of `0..n` were not seen.
    pub fn missing_below(&self, n: u64) -> u64 {
        let seen: u64 = (0..n)
            .step_by(64)
            .map(|start| {
                let word = self.seen.get((start / 64) as usize).copied().unwrap_or(0);
                let bits = (n - start).min(64);
                let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
                (word & mask).count_ones() as u64
            })
            .sum();
        n - seen
    }

    /// The summary so far.
    pub fn summary(&self) -> SequenceSummary {
        let mut s = self.summary.clone();
        s.gaps = s.last_seq.map_or(0, |l| l + 1 - self.distinct);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(seq: u64, size: usize) -> Vec<u8> {
        let mut p = vec![0; size];
        fill(seq, &mut p);
        p
    }

    /// Feeds `payloads` and compares (count, first, last, gaps, duplicates, corrupt).
    fn check_seq(payloads: &[Vec<u8>], expected: (u64, Option<u64>, Option<u64>, u64, u64, u64)) {
        let mut c = SequenceCheck::new();
        for p in payloads {
            c.observe(p);
        }
        let s = c.summary();
        assert_eq!((s.count, s.first_seq, s.last_seq, s.gaps, s.duplicates, s.corrupt), expected);
    }

    #[test]
    fn sequences() {
        check_seq(&[], (0, None, None, 0, 0, 0));
        check_seq(&(0..1000).map(|s| payload(s, 100)).collect::<Vec<_>>(), (1000, Some(0), Some(999), 0, 0, 0));
        check_seq(&[payload(2, 8), payload(0, 8), payload(2, 8)], (3, Some(0), Some(2), 1, 1, 0));
        // A lost head counts: gaps are counted from 0.
        check_seq(&[payload(5, 20), payload(6, 20)], (2, Some(5), Some(6), 5, 0, 0));
        check_seq(&[vec![1, 2, 3], payload(0, 30)], (2, Some(0), Some(0), 0, 0, 1));
        let mut flipped = payload(7, 64);
        flipped[40] ^= 1;
        check_seq(&[flipped, payload(7, 64)], (2, Some(7), Some(7), 7, 0, 1));
        check_seq(&[payload(MAX_SEQ, 8)], (1, None, None, 0, 0, 1));
    }

    #[test]
    fn stamps_are_skipped_when_asked() {
        let mut p = payload(300, 64);
        stamp(&mut p, 0xdead_beef);
        assert_eq!(check(&p, STAMP_RANGE), Some(300));
        assert_eq!(check(&p, 0..0), None);
        assert_eq!(read_stamp(&p), Some(0xdead_beef));
    }
}

#[cfg(test)]
mod missing_tests {
    use super::*;

    #[test]
    fn missing_below_counts_holes_under_the_bound() {
        let mut c = SequenceCheck::new();
        for seq in (0..200u64).filter(|s| *s != 5 && *s != 130) {
            let mut p = vec![0; 16];
            fill(seq, &mut p);
            c.observe(&p);
        }
        assert_eq!(c.missing_below(0), 0);
        assert_eq!(c.missing_below(5), 0);
        assert_eq!(c.missing_below(6), 1);
        assert_eq!(c.missing_below(128), 1);
        assert_eq!(c.missing_below(200), 2);
        assert_eq!(c.missing_below(300), 102);
    }
}
