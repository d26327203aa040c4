//! Records, the hash chain, and the canonical encoding the record hash covers.
//!
//! # Canonical encoding, version 1
//!
//! `Record::hash` is the lowercase hex SHA-256 of these bytes, in this order:
//!
//! | item                     | encoding                                                   |
//! |--------------------------|------------------------------------------------------------|
//! | version                  | one byte, `0x01`                                           |
//! | domain                   | `B("horizons-audit/record")`                               |
//! | `seq`                    | i64, 8 bytes big-endian                                    |
//! | `at_ms`                  | i64, 8 bytes big-endian                                    |
//! | `prev_hash`              | `B(prev_hash as stored)`                                   |
//! | `event_id`               | `B(event_id)`                                              |
//! | `action`                 | `B(action)`                                                |
//! | `actor`                  | `B(actor)`                                                 |
//! | `subject`                | `B(subject)`                                               |
//! | `public`                 | `B(canonical_json(public))`                                |
//! | `sealed`                 | `0x00` if absent; else `0x01`, `B(kid)`, `B(nonce)`, `B(ct)` (the base64 text as stored) |
//!
//! `B(x)` is the length of `x` in bytes as a u64, 8 bytes big-endian, then the UTF-8 bytes of
//! `x`. Length prefixes make the encoding unambiguous: no two different records encode alike.
//! Strings are hashed exactly as stored (no case folding, no base64 re-encoding), so changing
//! any byte of any field changes the hash.
//!
//! `canonical_json` writes JSON with no whitespace, object keys sorted by their UTF-8 bytes,
//! strings escaped minimally (`\"`, `\\`, `\b \f \n \r \t`, other control characters as
//! `\u00XX`, everything else verbatim) and numbers as serde_json prints them. It does not depend
//! on serde_json's `preserve_order` feature. **Storage must hand `public` back as the same JSON
//! value**: store it as text (or store [`canonical_json`] output), not as PostgreSQL `jsonb`,
//! which may rewrite numbers such as `1e2` or `1.50`.
//!
//! A future version 2 would change the version byte and need records to say which version they
//! use (a new field defaulting to 1); verification of version-1 records must stay as above.
//!
//! # Associated data of the sealed field
//!
//! [`Record::aad`] is `B("horizons-audit/record-aad/v1")`, `seq`, `at_ms` (i64 big-endian),
//! `B(event_id)`, `B(action)`, `B(actor)`, `B(subject)`: the sealed field opens only in the
//! record it was sealed for.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::encoding::Enc;
use crate::seal::{open, seal, Sealed};
use crate::{AuditError, KeyRing};

/// The version byte at the start of the hashed encoding.
pub const ENCODING_VERSION: u8 = 1;

/// `prev_hash` of the first record of a chain: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An audit entry before it has a place in the chain.
#[derive(Clone, PartialEq)]
pub struct Draft {
    /// When the audited event happened, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Id of the domain event (for idempotent consumption).
    pub event_id: String,
    /// What happened, e.g. `comment.deleted`.
    pub action: String,
    /// Who did it (user id, service name).
    pub actor: String,
    /// What it was done to (comment id, user id).
    pub subject: String,
    /// Details stored in the clear.
    pub public: serde_json::Value,
    /// Details stored encrypted (emails, IP addresses, free text marked sensitive).
    pub sensitive: Option<serde_json::Value>,
}

impl fmt::Debug for Draft {
    // The sensitive part is left out so drafts can be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Draft")
            .field("at_ms", &self.at_ms)
            .field("event_id", &self.event_id)
            .field("action", &self.action)
            .field("actor", &self.actor)
            .field("subject", &self.subject)
            .field("public", &self.public)
            .field("sensitive", &self.sensitive.as_ref().map(|_| format_args!("<redacted>")))
            .finish()
    }
}

/// One record of the chain, as stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the chain: 1 for the first record ever, then +1 each.
    pub seq: i64,
    /// When the audited event happened, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Id of the domain event.
    pub event_id: String,
    /// What happened.
    pub action: String,
    /// Who did it.
    pub actor: String,
    /// What it was done to.
    pub subject: String,
    /// Details in the clear.
    pub public: serde_json::Value,
    /// The sensitive details, sealed.
    pub sealed: Option<Sealed>,
    /// `hash` of the previous record (or of the retention anchor), [`GENESIS_HASH`] for seq 1.
    pub prev_hash: String,
    /// Lowercase hex SHA-256 of this record's canonical encoding (see the module docs).
    pub hash: String,
}

impl Record {
    /// The hash this record should carry, computed from its fields (ignores `self.hash`).
    pub fn compute_hash(&self) -> String {
        let mut e = Enc::new();
        e.u8(ENCODING_VERSION)
            .str("horizons-audit/record")
            .i64(self.seq)
            .i64(self.at_ms)
            .str(&self.prev_hash)
            .str(&self.event_id)
            .str(&self.action)
            .str(&self.actor)
            .str(&self.subject)
            .str(&canonical_json(&self.public));
        match &self.sealed {
            None => {
                e.u8(0);
            }
            Some(s) => {
                e.u8(1).str(&s.kid).str(&s.nonce).str(&s.ct);
            }
        }
        hex::encode(Sha256::digest(e.finish()))
    }

    /// The associated data that binds this record's sealed field to it.
    pub fn aad(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.str("horizons-audit/record-aad/v1")
            .i64(self.seq)
            .i64(self.at_ms)
            .str(&self.event_id)
            .str(&self.action)
            .str(&self.actor)
            .str(&self.subject);
        e.finish()
    }

    /// Opens the sealed field, if any.
    pub fn open_sensitive(&self, keys: &KeyRing) -> Result<Option<serde_json::Value>, AuditError> {
        self.sealed.as_ref().map(|s| open(keys, s, &self.aad())).transpose()
    }
}

/// The chain position left behind when retention deletes head records: the last deleted
/// record's `seq`, `hash` and `at_ms`. Verification starts from it instead of from seq 1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    /// Seq of the last deleted record.
    pub seq: i64,
    /// Hash of the last deleted record (the next record's `prev_hash`).
    pub hash: String,
    /// Time of the last deleted record.
    pub at_ms: i64,
}

impl Anchor {
    /// The anchor that stands in for `record` once it is deleted.
    pub fn of(record: &Record) -> Self {
        Self { seq: record.seq, hash: record.hash.clone(), at_ms: record.at_ms }
    }
}

/// Turns `draft` into the record after `prev` (or the first record, seq 1, when `prev` is
/// `None`), sealing its sensitive part under the ring's current key.
pub fn chain(prev: Option<&Record>, draft: Draft, keys: &KeyRing) -> Result<Record, AuditError> {
    match prev {
        Some(p) => link(p.seq, &p.hash, draft, keys),
        None => link(0, GENESIS_HASH, draft, keys),
    }
}

/// Turns `draft` into the record after a retention anchor: for when retention has deleted every
/// record and the anchor is all that is left of the chain.
pub fn chain_after_anchor(anchor: &Anchor, draft: Draft, keys: &KeyRing) -> Result<Record, AuditError> {
    link(anchor.seq, &anchor.hash, draft, keys)
}

fn link(prev_seq: i64, prev_hash: &str, draft: Draft, keys: &KeyRing) -> Result<Record, AuditError> {
    let seq = prev_seq.checked_add(1).filter(|s| *s >= 1).ok_or(AuditError::SeqOutOfRange { seq: prev_seq })?;
    let mut record = Record {
        seq,
        at_ms: draft.at_ms,
        event_id: draft.event_id,
        action: draft.action,
        actor: draft.actor,
        subject: draft.subject,
        public: draft.public,
        sealed: None,
        prev_hash: prev_hash.to_owned(),
        hash: String::new(),
    };
    if let Some(sensitive) = &draft.sensitive {
        record.sealed = Some(seal(keys, sensitive, &record.aad())?);
    }
    record.hash = record.compute_hash();
    Ok(record)
}

/// JSON with sorted keys and no whitespace; see the module docs for the exact rules.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Sorted here rather than relying on serde_json's map type, whose order depends on
            // the `preserve_order` feature that any crate in the build may switch on.
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::canonical_json;
    use serde_json::json;

    #[test]
    fn canonical_json_cases() {
        let cases = [
            (json!(null), "null"),
            (json!({"b": 1, "a": [true, "x"]}), r#"{"a":[true,"x"],"b":1}"#),
            (json!({"z": {"y": 1, "x": 2}}), r#"{"z":{"x":2,"y":1}}"#),
            (json!("q\"\\\n\u{1}é"), "\"q\\\"\\\\\\n\\u0001é\""),
            (json!(-12), "-12"),
            (json!(1.5), "1.5"),
        ];
        for (value, want) in cases {
            let got = canonical_json(&value);
            assert_eq!(got, want);
            // Canonical output is valid JSON for the same value.
            assert_eq!(serde_json::from_str::<serde_json::Value>(&got).unwrap(), value);
        }
    }
}
