//! Retention: planning head deletion, verifying from the anchor, and appending after it.

mod common;

use std::time::Duration;

use common::*;
use horizons_audit::{chain_after_anchor, plan_retention, verify, Anchor, Broken, BrokenKind, Position, Retention};

#[test]
fn retention_bounds() {
    assert_eq!(Retention::default().as_millis(), 30 * DAY);
    assert_eq!(Retention::from_days(7).unwrap().as_millis(), 7 * DAY);
    assert_eq!(Retention::from_millis(DAY).unwrap(), Retention::MIN);
    assert_eq!(Retention::from_duration(Duration::from_secs(86_400)).unwrap(), Retention::MIN);
    for bad in [
        Retention::from_days(0),
        Retention::from_millis(DAY - 1),
        Retention::from_millis(-5),
        Retention::from_duration(Duration::from_secs(3600)),
    ] {
        let msg = bad.unwrap_err().to_string();
        assert!(msg.contains("shorter than the minimum of 1 day"), "{msg}");
    }
    assert_eq!(
        Retention::from_millis(DAY - 1).unwrap_err().to_string(),
        "audit retention of 86399999 ms is shorter than the minimum of 1 day (86400000 ms)"
    );
}

#[test]
fn plan_delete_verify_from_anchor() {
    let keys = ring("k1", &["k1"]);
    let records = build(50, &keys);
    let retention = Retention::default();
    // Records are hourly from T0; at this `now`, those before T0 + 20 h (seq 1..=20) are due.
    let now = T0 + 20 * HOUR + 30 * DAY;

    // Nothing due yet.
    assert_eq!(plan_retention(T0 + 30 * DAY, retention, None, &records).unwrap(), None);

    let anchor = plan_retention(now, retention, None, &records).unwrap().unwrap();
    assert_eq!(anchor, Anchor { seq: 20, hash: records[19].hash.clone(), at_ms: records[19].at_ms });
    let kept: Vec<_> = records.iter().filter(|r| r.seq > anchor.seq).cloned().collect();
    let ok = verify(Some(&anchor), kept.clone()).unwrap();
    assert_eq!((ok.count, ok.first_seq, ok.last_seq), (30, Some(21), Some(50)));

    // Without the anchor the trimmed chain fails at its first record.
    assert_eq!(
        verify(None, kept.clone()).unwrap_err(),
        Broken { seq: 21, kind: BrokenKind::Missing { after: Position::Start } }
    );

    // A second round starts from the stored anchor.
    let later = plan_retention(now + 5 * HOUR, retention, Some(&anchor), &kept).unwrap().unwrap();
    assert_eq!(later.seq, 25);
    let kept2: Vec<_> = kept.into_iter().filter(|r| r.seq > later.seq).collect();
    verify(Some(&later), kept2).unwrap();
}

#[test]
fn tampering_after_the_anchor_is_detected() {
    let keys = ring("k1", &["k1"]);
    let records = build(50, &keys);
    let now = T0 + 20 * HOUR + 30 * DAY;
    let anchor = plan_retention(now, Retention::default(), None, &records).unwrap().unwrap();
    let kept: Vec<_> = records[20..].to_vec();

    // First record after the anchor edited.
    let mut edited = kept.clone();
    flip(&mut edited[0].subject);
    assert_eq!(verify(Some(&anchor), edited).unwrap_err().to_string(), "record 21: hash mismatch (record edited)");

    // ...edited with its hash recomputed: the next record's link catches it.
    let mut replaced = kept.clone();
    replaced[0].actor = "mallory".into();
    replaced[0].hash = replaced[0].compute_hash();
    assert_eq!(
        verify(Some(&anchor), replaced).unwrap_err().to_string(),
        "record 22: prev_hash does not match the hash of record 21 (record 21 replaced)"
    );

    // ...relinked elsewhere with its hash recomputed: it no longer links to the anchor.
    let mut relinked = kept.clone();
    relinked[0].prev_hash = records[10].hash.clone();
    relinked[0].hash = relinked[0].compute_hash();
    assert_eq!(
        verify(Some(&anchor), relinked).unwrap_err().to_string(),
        "record 21: prev_hash does not match the retention anchor (seq 20)"
    );

    // ...deleted.
    assert_eq!(
        verify(Some(&anchor), kept[1..].to_vec()).unwrap_err().to_string(),
        "record 22 follows the retention anchor (seq 20): record 21 missing"
    );

    // A record at or before the anchor that should have been deleted.
    assert_eq!(
        verify(Some(&anchor), records[19..].to_vec()).unwrap_err().to_string(),
        "record 20 follows the retention anchor (seq 20): out of order"
    );

    // An anchor whose hash was altered.
    let mut wrong = anchor.clone();
    wrong.hash = "f".repeat(64);
    assert_eq!(verify(Some(&wrong), kept).unwrap_err().kind, BrokenKind::LinkMismatch { after: Position::Anchor(20) });
}

#[test]
fn retention_refuses_to_anchor_past_a_broken_head() {
    let keys = ring("k1", &["k1"]);
    let mut records = build(50, &keys);
    records[4].actor = "mallory".into();
    let now = T0 + 20 * HOUR + 30 * DAY;
    let err = plan_retention(now, Retention::default(), None, &records).unwrap_err();
    assert_eq!(err.to_string(), "record 5: hash mismatch (record edited)");
}

#[test]
fn everything_due_then_append_after_anchor() {
    let keys = ring("k1", &["k1"]);
    let records = build(10, &keys);
    let anchor = plan_retention(T0 + 100 * DAY, Retention::default(), None, &records).unwrap().unwrap();
    assert_eq!(anchor.seq, 10);
    // All deleted: the next record continues from the anchor.
    let next = chain_after_anchor(&anchor, draft(10), &keys).unwrap();
    assert_eq!(next.seq, 11);
    assert_eq!(next.prev_hash, records[9].hash);
    let ok = verify(Some(&anchor), vec![next]).unwrap();
    assert_eq!(ok.count, 1);
    // And an empty chain with an anchor verifies to the anchor's hash.
    assert_eq!(verify(Some(&anchor), Vec::new()).unwrap().head_hash, anchor.hash);
}
