//! Key ring parsing, secrecy of key material, rotation and sealing.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use horizons_audit::{open, seal, verify_with_keys, AuditError, BrokenKind, KeyRing};
use serde_json::json;

#[test]
fn parse_errors_name_the_problem_and_never_the_key() {
    let k = key_b64("k1");
    let short = STANDARD.encode([9u8; 16]);
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "k1",
            vec![k.clone()],
            "audit key entry #0 is not `<key-id>:<base64 key>` (entry not shown: it may contain key material)",
        ),
        ("k1", vec![format!("{k}:k1")], "audit key entry #0: invalid key id (longer than 32 characters; id not shown)"),
        (
            "k1",
            vec![format!("k 1:{k}")],
            "audit key entry #0: invalid key id (only A-Z a-z 0-9 . _ - are allowed; id not shown)",
        ),
        ("k1", vec![format!(":{k}")], "audit key entry #0: invalid key id (empty; id not shown)"),
        (
            "k1",
            vec![format!("k1:{}!", &k[..20])],
            "audit key \"k1\": key is not valid base64 (standard alphabet, padded)",
        ),
        ("k1", vec![format!("k1:{short}")], "audit key \"k1\": key is 16 bytes, AES-256 needs 32"),
        ("k1", vec![entry("k1"), entry("k2"), entry("k1")], "audit key \"k1\" is configured twice"),
        ("k3", vec![entry("k1"), entry("k2")], "current audit key \"k3\" is not among the configured keys"),
    ];
    for (current, entries, want) in cases {
        let err = KeyRing::new(current, &entries).unwrap_err();
        let msg = err.to_string();
        assert_eq!(msg, want);
        let dbg = format!("{err:?}");
        for secret in [&k, &short, &key_b64("k2")] {
            assert!(!msg.contains(&secret[..16]), "{msg}");
            assert!(!dbg.contains(&secret[..16]), "{dbg}");
        }
    }
}

#[test]
fn debug_and_display_show_ids_only() {
    let keys = ring("k2", &["k1", "k2"]);
    let dbg = format!("{keys:?}");
    let disp = keys.to_string();
    assert_eq!(dbg, r#"KeyRing { current: "k2", ids: ["k1", "k2"] }"#);
    assert_eq!(disp, r#"audit key ring (current "k2"; ids: k1 k2)"#);
    for id in ["k1", "k2"] {
        let k = key_b64(id);
        assert!(!dbg.contains(&k[..16]) && !disp.contains(&k[..16]));
    }
    assert_eq!(keys.current_id(), "k2");
    assert_eq!(keys.ids().collect::<Vec<_>>(), ["k1", "k2"]);
    assert!(keys.contains("k1") && !keys.contains("k3"));
}

#[test]
fn from_pairs_and_whitespace() {
    let keys = KeyRing::from_pairs("b", [("a", key_b64("a")), ("b", format!(" {}\n", key_b64("b")))]).unwrap();
    assert_eq!(keys.ids().collect::<Vec<_>>(), ["a", "b"]);
    let keys = KeyRing::new("a", &[format!("  {}\n", entry("a"))]).unwrap();
    assert_eq!(keys.current_id(), "a");
}

#[test]
fn generated_entries_parse_and_differ() {
    let a = KeyRing::generate_entry("2025-01").unwrap();
    let b = KeyRing::generate_entry("2025-01").unwrap();
    assert_ne!(*a, *b);
    let (id, key) = a.split_once(':').unwrap();
    assert_eq!(id, "2025-01");
    assert_eq!(STANDARD.decode(key).unwrap().len(), 32);
    let keys = KeyRing::new("2025-01", &[a.as_str()]).unwrap();
    let sealed = seal(&keys, &json!("x"), b"aad").unwrap();
    assert_eq!(open(&keys, &sealed, b"aad").unwrap(), json!("x"));
    assert!(matches!(KeyRing::generate_entry("bad id"), Err(AuditError::InvalidKeyId { .. })));
}

#[test]
fn seal_open_round_trip_with_random_nonces() {
    let keys = ring("k1", &["k1"]);
    let v = json!({"email": "a@example.org", "note": "free text"});
    let s1 = seal(&keys, &v, b"ctx").unwrap();
    let s2 = seal(&keys, &v, b"ctx").unwrap();
    assert_eq!(s1.kid, "k1");
    assert_eq!(STANDARD.decode(&s1.nonce).unwrap().len(), 12);
    assert_ne!(s1.nonce, s2.nonce);
    assert_ne!(s1.ct, s2.ct);
    assert_eq!(open(&keys, &s1, b"ctx").unwrap(), v);
    // Other associated data: does not open.
    assert!(matches!(open(&keys, &s1, b"other"), Err(AuditError::OpenFailed { .. })));
    // Same id, different key behind it: does not open.
    let impostor = KeyRing::new("k1", &[format!("k1:{}", key_b64("zz"))]).unwrap();
    assert!(matches!(open(&impostor, &s1, b"ctx"), Err(AuditError::OpenFailed { .. })));
    // Malformed fields are named.
    let mut bad = s1.clone();
    bad.nonce = STANDARD.encode([0u8; 8]);
    assert_eq!(open(&keys, &bad, b"ctx").unwrap_err().to_string(), "sealed field (key \"k1\"): nonce is not 12 bytes");
}

#[test]
fn rotation_keeps_old_records_readable_until_the_key_is_removed() {
    let k1 = ring("k1", &["k1"]);
    let mut records = build(10, &k1);
    // Rotate: k2 current, k1 kept.
    let rotated = ring("k2", &["k1", "k2"]);
    extend(&mut records, 10, 20, &rotated);
    let kids: Vec<_> = records.iter().filter_map(|r| r.sealed.as_ref().map(|s| (r.seq, s.kid.as_str()))).collect();
    assert!(kids.iter().all(|(seq, kid)| *kid == if *seq <= 10 { "k1" } else { "k2" }));
    assert!(kids.iter().any(|(_, kid)| *kid == "k2"));
    for r in &records {
        r.open_sensitive(&rotated).unwrap();
    }
    verify_with_keys(None, records.clone(), &rotated).unwrap();

    // k1 removed: old sealed records fail, naming k1; new ones still open.
    let only_k2 = ring("k2", &["k2"]);
    let err = records[0].open_sensitive(&only_k2).unwrap_err();
    assert_eq!(err.to_string(), "sealed field uses audit key \"k1\", which is not in the key ring");
    assert!(records[12].open_sensitive(&only_k2).unwrap().is_some());
    let broken = verify_with_keys(None, records, &only_k2).unwrap_err();
    assert_eq!(broken.seq, 1);
    assert!(matches!(broken.kind, BrokenKind::Unreadable { .. }));
    assert_eq!(broken.to_string(), "record 1: sealed field uses audit key \"k1\", which is not in the key ring");
}
