//! Property tests: any sequence of drafts chains into a verifying log; any single-byte change
//! to any stored record (as JSON) is either unparseable or fails verification.

mod common;

use common::ring;
use horizons_audit::{chain, verify, Draft, Record};
use proptest::prelude::*;
use serde_json::json;

fn arb_draft() -> impl Strategy<Value = Draft> {
    (
        0i64..4_000_000_000_000,
        "[a-z]{1,8}\\.[a-z]{1,8}",
        "[a-z0-9-]{0,10}",
        "[a-z0-9-]{0,10}",
        proptest::collection::btree_map("[a-z]{1,5}", any::<i32>(), 0..4),
        proptest::option::of("[a-z0-9@.]{0,20}"),
    )
        .prop_map(|(at_ms, action, actor, subject, public, sensitive)| Draft {
            at_ms,
            event_id: format!("e-{at_ms}"),
            action,
            actor,
            subject,
            public: json!(public),
            sensitive: sensitive.map(|s| json!({ "email": s })),
        })
}

fn build(drafts: Vec<Draft>) -> Vec<Record> {
    let keys = ring("k1", &["k1"]);
    let mut out: Vec<Record> = Vec::new();
    for d in drafts {
        let r = chain(out.last(), d, &keys).unwrap();
        out.push(r);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn chains_verify(drafts in proptest::collection::vec(arb_draft(), 0..20)) {
        let n = drafts.len() as u64;
        let records = build(drafts);
        let ok = verify(None, records).unwrap();
        prop_assert_eq!(ok.count, n);
    }

    #[test]
    fn single_byte_mutation_is_caught(
        drafts in proptest::collection::vec(arb_draft(), 1..12),
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let records = build(drafts);
        let mut stored: Vec<Vec<u8>> =
            records.iter().map(|r| serde_json::to_vec(r).unwrap()).collect();
        let i = which.index(stored.len());
        let j = at.index(stored[i].len());
        stored[i][j] ^= xor;
        let parsed: Result<Vec<Record>, _> =
            stored.iter().map(|b| serde_json::from_slice::<Record>(b)).collect();
        if let Ok(parsed) = parsed {
            let broken = verify(None, parsed);
            prop_assert!(broken.is_err(), "mutation of record {} byte {} went unnoticed", i + 1, j);
        }
    }
}
