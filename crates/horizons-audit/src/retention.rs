//! Retention: deleting records older than a configured age from the head of the chain while
//! keeping the rest verifiable.
//!
//! The storage layer asks [`plan_retention`] which head records are due, then, in **one
//! transaction**, deletes records with `seq <= anchor.seq` and replaces the stored anchor with
//! the returned [`Anchor`]. Verification then starts from that anchor ([`crate::verify()`]), and
//! appending after an emptied chain uses [`crate::chain_after_anchor`].
//!
//! [`plan_retention`] verifies the records it walks over (and the first kept one), so retention
//! never deletes the evidence of tampering by anchoring past it: if the head is broken it
//! refuses with the [`Broken`] record.
//!
//! What this does not protect against: the anchor is a row in the same database. Someone who can
//! rewrite both the records and the anchor can delete head records early and move the anchor
//! forward (the chain stays valid from the new anchor), just as someone who can write the store
//! can delete the newest records. Detecting that needs state outside the database, such as a
//! periodically published head hash, and a check that a published record is still present or
//! was old enough to be deleted.

use std::time::Duration;

use crate::record::{Anchor, Record};
use crate::verify::{Broken, Verifier};
use crate::AuditError;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// How long records are kept: at least one day, 30 days unless configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Retention {
    ms: i64,
}

impl Retention {
    /// The shortest retention accepted: one day. Shorter would almost certainly be a unit
    /// mistake in configuration (seconds for days), and would destroy the audit trail.
    pub const MIN: Retention = Retention { ms: DAY_MS };

    /// The default: 30 days.
    pub const DEFAULT: Retention = Retention { ms: 30 * DAY_MS };

    /// A retention of `ms` milliseconds; refuses less than one day.
    pub fn from_millis(ms: i64) -> Result<Self, AuditError> {
        if ms < Self::MIN.ms {
            return Err(AuditError::RetentionTooShort { ms: ms.into() });
        }
        Ok(Self { ms })
    }

    /// A retention of `days` days; refuses 0.
    pub fn from_days(days: u32) -> Result<Self, AuditError> {
        Self::from_millis(i64::from(days) * DAY_MS)
    }

    /// A retention of `d` (e.g. from humantime in configuration); refuses less than one day.
    pub fn from_duration(d: Duration) -> Result<Self, AuditError> {
        let ms = d.as_millis();
        match i64::try_from(ms) {
            Ok(ms) => Self::from_millis(ms),
            // Longer than i64 milliseconds (292 million years): keep forever, in effect.
            Err(_) => Ok(Self { ms: i64::MAX }),
        }
    }

    /// The retention in milliseconds.
    pub fn as_millis(self) -> i64 {
        self.ms
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Which head records are due for deletion at `now_ms`.
///
/// `head` is the chain from its start (after `anchor`, the currently stored anchor, if any) in
/// ascending seq; it is read only until the first record young enough to keep. A record is due
/// when `at_ms < now_ms - retention`. Deletion stops at the first record that is not due, even if
/// later ones are older (timestamps need not be monotonic; seq order is what the chain needs).
///
/// Returns `Ok(None)` when nothing is due, else the anchor to store: delete `seq <= anchor.seq`.
/// Returns the first [`Broken`] record if the records walked over do not verify.
pub fn plan_retention<'a, I>(
    now_ms: i64,
    retention: Retention,
    anchor: Option<&Anchor>,
    head: I,
) -> Result<Option<Anchor>, Broken>
where
    I: IntoIterator<Item = &'a Record>,
{
    let cutoff = now_ms.saturating_sub(retention.ms);
    let mut verifier = Verifier::new(anchor);
    let mut last_due = None;
    for record in head {
        verifier.push(record)?;
        if record.at_ms >= cutoff {
            // Verified too, so the new anchor is known to link to the first kept record.
            break;
        }
        last_due = Some(record);
    }
    Ok(last_due.map(Anchor::of))
}
