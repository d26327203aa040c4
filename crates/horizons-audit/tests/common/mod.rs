//! Shared fixtures: deterministic key rings and a chain of drafts, some with sensitive fields.

#![allow(dead_code)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use horizons_audit::{chain, Draft, KeyRing, Record};
use serde_json::json;

pub const T0: i64 = 1_700_000_000_000;
pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 24 * HOUR;

/// Base64 of a fixed key per id, so tests can check it never leaks.
pub fn key_b64(id: &str) -> String {
    let byte = id.bytes().fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    STANDARD.encode([byte; 32])
}

pub fn entry(id: &str) -> String {
    format!("{id}:{}", key_b64(id))
}

pub fn ring(current: &str, ids: &[&str]) -> KeyRing {
    let entries: Vec<String> = ids.iter().map(|id| entry(id)).collect();
    KeyRing::new(current, &entries).unwrap()
}

/// Draft number `i` (from 0): one an hour; every third carries sensitive fields.
pub fn draft(i: i64) -> Draft {
    Draft {
        at_ms: T0 + i * HOUR,
        event_id: format!("evt-{i}"),
        action: ["comment.created", "comment.edited", "comment.deleted", "moderation.decided"][(i % 4) as usize]
            .to_owned(),
        actor: format!("user-{}", i % 7),
        subject: format!("comment-{i}"),
        public: json!({"comment_id": format!("c{i}"), "len": i * 3, "tags": ["a", "b"]}),
        sensitive: (i % 3 == 0).then(|| json!({"email": format!("user{i}@example.org"), "ip": format!("192.0.2.{i}")})),
    }
}

/// Appends drafts `from..to` after `prev`.
pub fn extend(records: &mut Vec<Record>, from: i64, to: i64, keys: &KeyRing) {
    for i in from..to {
        let r = chain(records.last(), draft(i), keys).unwrap();
        records.push(r);
    }
}

/// A fresh chain of `n` records (seq 1..=n).
pub fn build(n: i64, keys: &KeyRing) -> Vec<Record> {
    let mut v = Vec::new();
    extend(&mut v, 0, n, keys);
    v
}

/// Flips the lowest bit of the last byte of an ASCII string.
pub fn flip(s: &mut String) {
    let mut b = std::mem::take(s).into_bytes();
    *b.last_mut().unwrap() ^= 1;
    *s = String::from_utf8(b).unwrap();
}

/// Flips one bit in the middle of a base64 field's decoded bytes and re-encodes it.
pub fn flip_b64(s: &mut String) {
    let mut b = STANDARD.decode(&*s).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    *s = STANDARD.encode(b);
}
