//! Streaming verification of a stored chain.
//!
//! Records are fed in the order storage returns them (ascending `seq`), one at a time, so memory
//! stays constant however long the chain. For each record, in this order:
//!
//! 1. its hash is recomputed ([`crate::Record::compute_hash`]); a difference means the record was
//!    edited (any field, including `seq`, `prev_hash` and the ciphertext);
//! 2. its `seq` must be exactly one more than the previous record's (or the anchor's, or 1 at the
//!    start); higher means records are missing, equal means a duplicate, lower means reordering;
//! 3. its `prev_hash` must equal the previous record's hash (or the anchor's, or
//!    [`crate::GENESIS_HASH`]); otherwise the record before it was replaced (its hash recomputed).
//!
//! Not detectable from the stored records alone: deletion of the newest records (the chain simply
//! ends earlier), and a rewrite that recomputes every hash from the changed record on. Compare
//! [`Verified::head_hash`] or individual records with a head published outside the database
//! for those (see the crate docs).

use std::fmt;

use crate::record::{Anchor, Record, GENESIS_HASH};
use crate::KeyRing;

/// What precedes a record in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// Nothing: the start of a chain with no retention anchor.
    Start,
    /// The retention anchor, with its seq.
    Anchor(i64),
    /// The record with this seq.
    Record(i64),
}

impl Position {
    fn seq(&self) -> i64 {
        match self {
            Position::Start => 0,
            Position::Anchor(s) | Position::Record(s) => *s,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Start => write!(f, "the start of the chain (no retention anchor)"),
            Position::Anchor(s) => write!(f, "the retention anchor (seq {s})"),
            Position::Record(s) => write!(f, "{s}"),
        }
    }
}

/// What is wrong with the record named by [`Broken::seq`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokenKind {
    /// The recomputed hash differs from the stored one: the record was edited.
    HashMismatch,
    /// The record's seq skips ahead of what follows `after`: records in between are missing.
    Missing {
        /// What the record follows.
        after: Position,
    },
    /// The record has the same seq as the one before it.
    Duplicate,
    /// The record's seq is below what it follows: records are out of order, or the record lies
    /// at or before the retention anchor.
    OutOfOrder {
        /// What the record follows.
        after: Position,
    },
    /// The record's `prev_hash` is not the hash of what it follows: the record before it was
    /// replaced (and its hash recomputed), or the anchor does not belong to this chain.
    LinkMismatch {
        /// What the record follows.
        after: Position,
    },
    /// The sealed field does not open with the configured ring (only from
    /// [`verify_with_keys`]): a missing or wrong key in configuration.
    Unreadable {
        /// Why, as [`crate::AuditError`] words it (names the key id, never key material).
        reason: String,
    },
}

/// The first broken record found by verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    /// Seq of the offending record, as stored in it.
    pub seq: i64,
    /// What is wrong.
    pub kind: BrokenKind,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seq = self.seq;
        match &self.kind {
            BrokenKind::HashMismatch => write!(f, "record {seq}: hash mismatch (record edited)"),
            BrokenKind::Missing { after } => {
                let from = after.seq() + 1;
                let to = seq - 1;
                write!(f, "record {seq} follows {after}: ")?;
                if from == to {
                    write!(f, "record {from} missing")
                } else {
                    write!(f, "records {from} to {to} missing")
                }?;
                if *after == Position::Start {
                    write!(f, " (head deleted without an anchor, or the anchor was not given)")?;
                }
                Ok(())
            }
            BrokenKind::Duplicate => write!(f, "record {seq} appears twice"),
            BrokenKind::OutOfOrder { after } => {
                write!(f, "record {seq} follows {after}: out of order")
            }
            BrokenKind::LinkMismatch { after } => match after {
                Position::Start => write!(f, "record {seq}: prev_hash is not the genesis hash (is an anchor missing?)"),
                Position::Anchor(a) => {
                    write!(f, "record {seq}: prev_hash does not match the retention anchor (seq {a})")
                }
                Position::Record(p) => {
                    write!(f, "record {seq}: prev_hash does not match the hash of record {p} (record {p} replaced)")
                }
            },
            BrokenKind::Unreadable { reason } => write!(f, "record {seq}: {reason}"),
        }
    }
}

impl std::error::Error for Broken {}

/// Summary of a chain that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub count: u64,
    /// Seq of the first record, `None` when there were none.
    pub first_seq: Option<i64>,
    /// Seq of the last record, `None` when there were none.
    pub last_seq: Option<i64>,
    /// Hash of the last record (or the anchor's, or [`GENESIS_HASH`], when there were none):
    /// the value to publish outside the database.
    pub head_hash: String,
}

/// Checks records one at a time; [`verify`] and [`verify_with_keys`] drive it over an iterator.
/// Use it directly to interleave own checks (progress output, comparing a record with a
/// published head).
#[derive(Debug)]
pub struct Verifier<'k> {
    keys: Option<&'k KeyRing>,
    prev: Position,
    prev_hash: String,
    count: u64,
    first_seq: Option<i64>,
    broken: Option<Broken>,
}

impl<'k> Verifier<'k> {
    /// Starts at `anchor` if retention has deleted the head, else at seq 1.
    pub fn new(anchor: Option<&Anchor>) -> Self {
        let (prev, prev_hash) = match anchor {
            Some(a) => (Position::Anchor(a.seq), a.hash.clone()),
            None => (Position::Start, GENESIS_HASH.to_owned()),
        };
        Self { keys: None, prev, prev_hash, count: 0, first_seq: None, broken: None }
    }

    /// Like [`Verifier::new`], and also opens every sealed field with `keys`.
    pub fn with_keys(anchor: Option<&Anchor>, keys: &'k KeyRing) -> Self {
        Self { keys: Some(keys), ..Self::new(anchor) }
    }

    /// Checks the next record. After an error, every later call returns the same error.
    pub fn push(&mut self, record: &Record) -> Result<(), Broken> {
        if let Some(b) = &self.broken {
            return Err(b.clone());
        }
        self.check(record).inspect_err(|b| self.broken = Some(b.clone()))
    }

    fn check(&mut self, r: &Record) -> Result<(), Broken> {
        let broken = |kind| Broken { seq: r.seq, kind };
        if r.compute_hash() != r.hash {
            return Err(broken(BrokenKind::HashMismatch));
        }
        let after = self.prev.clone();
        let prev_seq = after.seq();
        // The record's own hash is intact, so its seq is what was written: compare it.
        // saturating: the anchor's seq comes from storage and may be anything.
        if r.seq > prev_seq.saturating_add(1) {
            return Err(broken(BrokenKind::Missing { after }));
        }
        if r.seq == prev_seq && matches!(after, Position::Record(_)) {
            return Err(broken(BrokenKind::Duplicate));
        }
        if r.seq <= prev_seq {
            return Err(broken(BrokenKind::OutOfOrder { after }));
        }
        if r.prev_hash != self.prev_hash {
            return Err(broken(BrokenKind::LinkMismatch { after }));
        }
        if let Some(keys) = self.keys {
            r.open_sensitive(keys).map_err(|e| broken(BrokenKind::Unreadable { reason: e.to_string() }))?;
        }
        self.prev = Position::Record(r.seq);
        self.prev_hash.clone_from(&r.hash);
        self.count += 1;
        self.first_seq.get_or_insert(r.seq);
        Ok(())
    }

    /// The summary so far (meaningful when every push succeeded).
    pub fn finish(self) -> Verified {
        Verified {
            count: self.count,
            first_seq: self.first_seq,
            last_seq: match self.prev {
                Position::Record(s) => Some(s),
                _ => None,
            },
            head_hash: self.prev_hash,
        }
    }
}

/// Verifies `records` (ascending seq, as stored) starting from `anchor` (the retention anchor,
/// `None` if retention never deleted anything). Stops at the first broken record.
pub fn verify<I>(anchor: Option<&Anchor>, records: I) -> Result<Verified, Broken>
where
    I: IntoIterator<Item = Record>,
{
    drive(Verifier::new(anchor), records)
}

/// Like [`verify`], and also checks that every sealed field opens with `keys` (catches a wrong
/// or missing key in configuration; tampered ciphertext already fails the hash).
pub fn verify_with_keys<I>(anchor: Option<&Anchor>, records: I, keys: &KeyRing) -> Result<Verified, Broken>
where
    I: IntoIterator<Item = Record>,
{
    drive(Verifier::with_keys(anchor, keys), records)
}

fn drive<I>(mut v: Verifier<'_>, records: I) -> Result<Verified, Broken>
where
    I: IntoIterator<Item = Record>,
{
    for r in records {
        v.push(&r)?;
    }
    Ok(v.finish())
}
