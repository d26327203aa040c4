//! Chaining and verification: a 50-record chain verifies; every kind of tampering is caught
//! and named at the right record.

mod common;

use common::*;
use horizons_audit::{chain, verify, verify_with_keys, Broken, BrokenKind, Position, Record, GENESIS_HASH};
use serde_json::json;

#[test]
fn chain_links_and_verifies() {
    let keys = ring("k1", &["k1"]);
    let records = build(50, &keys);
    assert_eq!(records[0].seq, 1);
    assert_eq!(records[0].prev_hash, GENESIS_HASH);
    for w in records.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
    assert!(records.iter().filter(|r| r.sealed.is_some()).count() >= 15);
    let ok = verify(None, records.clone()).unwrap();
    assert_eq!(ok.count, 50);
    assert_eq!(ok.first_seq, Some(1));
    assert_eq!(ok.last_seq, Some(50));
    assert_eq!(ok.head_hash, records[49].hash);
    // Also with keys: every sealed field opens, and to what was sealed.
    verify_with_keys(None, records.clone(), &keys).unwrap();
    assert_eq!(
        records[3].open_sensitive(&keys).unwrap(),
        Some(json!({"email": "user3@example.org", "ip": "192.0.2.3"}))
    );
    assert_eq!(records[1].open_sensitive(&keys).unwrap(), None);
    // Sensitive plaintext appears nowhere in the stored record.
    let stored = serde_json::to_string(&records[3]).unwrap();
    assert!(!stored.contains("user3@example.org") && !stored.contains("192.0.2.3"));
}

#[test]
fn empty_chain_verifies_to_genesis() {
    let ok = verify(None, Vec::new()).unwrap();
    assert_eq!(ok.count, 0);
    assert_eq!(ok.first_seq, None);
    assert_eq!(ok.head_hash, GENESIS_HASH);
}

#[test]
fn record_json_round_trips_and_still_verifies() {
    let keys = ring("k1", &["k1"]);
    let records = build(10, &keys);
    let reread: Vec<Record> =
        records.iter().map(|r| serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap()).collect();
    assert_eq!(reread, records);
    verify_with_keys(None, reread, &keys).unwrap();
}

type Tamper = fn(&mut Vec<Record>);

fn first_sealed_from(records: &[Record], from: usize) -> usize {
    (from..records.len()).find(|&i| records[i].sealed.is_some()).unwrap()
}

#[test]
fn tampering_is_detected_at_the_right_record() {
    let keys = ring("k1", &["k1"]);
    let original = build(50, &keys);
    let idx = first_sealed_from(&original, 20); // index 21, seq 22
    assert_eq!(idx, 21);

    let cases: Vec<(&str, Tamper, Broken, &str)> = vec![
        (
            "byte flipped in public",
            |r| {
                let s = r[19].public["comment_id"].as_str().unwrap().to_owned();
                let mut s = s;
                flip(&mut s);
                r[19].public["comment_id"] = json!(s);
            },
            Broken { seq: 20, kind: BrokenKind::HashMismatch },
            "record 20: hash mismatch (record edited)",
        ),
        (
            "key added to public",
            |r| r[19].public["extra"] = json!(null),
            Broken { seq: 20, kind: BrokenKind::HashMismatch },
            "record 20: hash mismatch (record edited)",
        ),
        (
            "byte flipped in actor",
            |r| flip(&mut r[9].actor),
            Broken { seq: 10, kind: BrokenKind::HashMismatch },
            "record 10: hash mismatch (record edited)",
        ),
        (
            "byte flipped in ciphertext",
            |r| flip_b64(&mut r[21].sealed.as_mut().unwrap().ct),
            Broken { seq: 22, kind: BrokenKind::HashMismatch },
            "record 22: hash mismatch (record edited)",
        ),
        (
            "byte flipped in nonce",
            |r| flip_b64(&mut r[21].sealed.as_mut().unwrap().nonce),
            Broken { seq: 22, kind: BrokenKind::HashMismatch },
            "record 22: hash mismatch (record edited)",
        ),
        (
            "key id of sealed field changed",
            |r| r[21].sealed.as_mut().unwrap().kid = "k2".into(),
            Broken { seq: 22, kind: BrokenKind::HashMismatch },
            "record 22: hash mismatch (record edited)",
        ),
        (
            "sealed field removed",
            |r| r[21].sealed = None,
            Broken { seq: 22, kind: BrokenKind::HashMismatch },
            "record 22: hash mismatch (record edited)",
        ),
        (
            "at_ms changed",
            |r| r[29].at_ms += 1,
            Broken { seq: 30, kind: BrokenKind::HashMismatch },
            "record 30: hash mismatch (record edited)",
        ),
        (
            "stored hash uppercased",
            |r| r[29].hash = r[29].hash.to_uppercase(),
            Broken { seq: 30, kind: BrokenKind::HashMismatch },
            "record 30: hash mismatch (record edited)",
        ),
        (
            "first record's prev_hash changed",
            |r| r[0].prev_hash = "1".repeat(64),
            Broken { seq: 1, kind: BrokenKind::HashMismatch },
            "record 1: hash mismatch (record edited)",
        ),
        (
            "middle record deleted",
            |r| {
                r.remove(24);
            },
            Broken { seq: 26, kind: BrokenKind::Missing { after: Position::Record(24) } },
            "record 26 follows 24: record 25 missing",
        ),
        (
            "three middle records deleted",
            |r| {
                r.drain(24..27);
            },
            Broken { seq: 28, kind: BrokenKind::Missing { after: Position::Record(24) } },
            "record 28 follows 24: records 25 to 27 missing",
        ),
        (
            "head deleted, no anchor",
            |r| {
                r.drain(0..4);
            },
            Broken { seq: 5, kind: BrokenKind::Missing { after: Position::Start } },
            "record 5 follows the start of the chain (no retention anchor): records 1 to 4 missing (head deleted without an anchor, or the anchor was not given)",
        ),
        (
            // Storage returns rows in seq order, so this only happens if it does not; the
            // second record is reported as skipping ahead.
            "two records swapped in read order",
            |r| r.swap(10, 11),
            Broken { seq: 12, kind: BrokenKind::Missing { after: Position::Record(10) } },
            "record 12 follows 10: record 11 missing",
        ),
        (
            "records 11 and 13 swapped in read order",
            |r| r.swap(10, 12),
            Broken { seq: 13, kind: BrokenKind::Missing { after: Position::Record(10) } },
            "record 13 follows 10: records 11 to 12 missing",
        ),
        (
            // Swapping the seq values of two rows (what a reorder looks like in SQL).
            "seq values of two records swapped",
            |r| {
                r[10].seq = 12;
                r[11].seq = 11;
                r.swap(10, 11);
            },
            Broken { seq: 11, kind: BrokenKind::HashMismatch },
            "record 11: hash mismatch (record edited)",
        ),
        (
            "record duplicated",
            |r| {
                let dup = r[30].clone();
                r.insert(31, dup);
            },
            Broken { seq: 31, kind: BrokenKind::Duplicate },
            "record 31 appears twice",
        ),
        (
            "earlier record replayed later",
            |r| {
                let old = r[5].clone();
                r.insert(31, old);
            },
            Broken { seq: 6, kind: BrokenKind::OutOfOrder { after: Position::Record(31) } },
            "record 6 follows 31: out of order",
        ),
        (
            // The editor recomputed the edited record's hash; the next record's link catches it.
            "record replaced with its hash recomputed",
            |r| {
                r[29].actor = "mallory".into();
                r[29].hash = r[29].compute_hash();
            },
            Broken { seq: 31, kind: BrokenKind::LinkMismatch { after: Position::Record(30) } },
            "record 31: prev_hash does not match the hash of record 30 (record 30 replaced)",
        ),
        (
            "first record's prev_hash changed, hash recomputed",
            |r| {
                r[0].prev_hash = "1".repeat(64);
                r[0].hash = r[0].compute_hash();
            },
            Broken { seq: 1, kind: BrokenKind::LinkMismatch { after: Position::Start } },
            "record 1: prev_hash is not the genesis hash (is an anchor missing?)",
        ),
    ];

    for (name, tamper, want, message) in cases {
        let mut records = original.clone();
        tamper(&mut records);
        let got = verify(None, records).expect_err(name);
        assert_eq!(got, want, "{name}");
        assert_eq!(got.to_string(), message, "{name}");
    }
}

#[test]
fn what_is_not_detectable_without_an_external_head() {
    let keys = ring("k1", &["k1"]);
    let original = build(50, &keys);
    let published_head = original[49].hash.clone();

    // Deleting the newest record leaves a valid, shorter chain.
    let mut truncated = original.clone();
    truncated.pop();
    let ok = verify(None, truncated).unwrap();
    assert_eq!(ok.last_seq, Some(49));
    // ...which only a head kept elsewhere reveals.
    assert_ne!(ok.head_hash, published_head);

    // Rewriting from record 30 on and recomputing every hash also verifies.
    let mut rewritten = original[..29].to_vec();
    let mut forged = original[29].clone();
    forged.actor = "mallory".into();
    forged.hash = forged.compute_hash();
    rewritten.push(forged);
    for r in &original[30..] {
        let mut r = r.clone();
        r.prev_hash = rewritten.last().unwrap().hash.clone();
        r.hash = r.compute_hash();
        rewritten.push(r);
    }
    let ok = verify(None, rewritten).unwrap();
    assert_eq!(ok.count, 50);
    assert_ne!(ok.head_hash, published_head);
}

#[test]
fn moved_ciphertext_does_not_open() {
    let keys = ring("k1", &["k1"]);
    let records = build(10, &keys);
    // Records 1 and 4 (indices 0 and 3) are sealed; move 1's ciphertext into 4 and fix hashes,
    // as someone with write access could.
    let mut moved = records[3].clone();
    moved.sealed = records[0].sealed.clone();
    moved.hash = moved.compute_hash();
    let err = moved.open_sensitive(&keys).unwrap_err();
    assert_eq!(
        err.to_string(),
        "sealed field (key \"k1\") does not open: wrong key, tampered ciphertext, or ciphertext from another record"
    );
    // verify_with_keys reports it at that record.
    let got = verify_with_keys(None, vec![moved], &keys).err();
    assert!(matches!(got, Some(Broken { seq: 4, .. })), "{got:?}");
}

#[test]
fn tampered_ciphertext_with_recomputed_hash_fails_to_open() {
    let keys = ring("k1", &["k1"]);
    let mut records = build(10, &keys);
    flip_b64(&mut records[3].sealed.as_mut().unwrap().ct);
    records[3].hash = records[3].compute_hash();
    // Without keys, the next record's link catches the recomputed hash.
    assert_eq!(
        verify(None, records.clone()).unwrap_err().to_string(),
        "record 5: prev_hash does not match the hash of record 4 (record 4 replaced)"
    );
    // With keys, the record itself is named.
    let err = verify_with_keys(None, records, &keys).unwrap_err();
    assert_eq!(err.seq, 4);
    assert!(matches!(err.kind, BrokenKind::Unreadable { .. }));
    assert!(err.to_string().starts_with("record 4: sealed field (key \"k1\") does not open"));
}

#[test]
fn first_record_after_genesis_is_seq_1_and_seq_cannot_overflow() {
    let keys = ring("k1", &["k1"]);
    let mut last = chain(None, draft(0), &keys).unwrap();
    last.seq = i64::MAX;
    let err = chain(Some(&last), draft(1), &keys).unwrap_err();
    assert_eq!(err.to_string(), format!("cannot append after record {}: sequence number out of range", i64::MAX));
}

#[test]
fn hash_is_lowercase_hex_sha256_and_deterministic() {
    let keys = ring("k1", &["k1"]);
    let r = chain(None, draft(1), &keys).unwrap();
    assert_eq!(r.hash.len(), 64);
    assert!(r.hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(r.compute_hash(), r.hash);
    // Same draft, same place: same hash (no sealed field, so nothing random).
    assert_eq!(chain(None, draft(1), &keys).unwrap().hash, r.hash);
    // Key order in `public` does not matter: the JSON is canonicalised.
    let mut d = draft(1);
    d.public = serde_json::from_str(r#"{"tags":["a","b"],"len":3,"comment_id":"c1"}"#).unwrap();
    assert_eq!(chain(None, d, &keys).unwrap().hash, r.hash);
}

#[test]
fn draft_debug_redacts_sensitive() {
    let d = draft(3);
    let dbg = format!("{d:?}");
    assert!(dbg.contains("<redacted>"));
    assert!(!dbg.contains("user3@example.org"));
}
