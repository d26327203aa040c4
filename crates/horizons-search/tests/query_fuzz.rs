//! Property test: no user-typed query makes `search` panic or fail, except the ones it refuses
//! on purpose (empty or too long), which fail with `BadQuery`.

use horizons_search::{CommentDoc, SearchError, SearchIndex, MAX_QUERY_BYTES};
use proptest::prelude::*;

proptest! {
    // Each case is a real search on a small index; 256 cases keep this under a few seconds.
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_query_is_answered_or_refused_as_bad(
        // Query syntax characters weighted up, so the parser's corners get hit, plus any text.
        q in prop_oneof![
            "[a-z \"():\\[\\]{}*^~!+\\-\\\\/'<>&|=.,0-9]{0,40}",
            "(AND|OR|NOT|TO|IN|body|author|id|post_id|created_at_ms|:|\\(|\\)|\"|\\*|\\[|\\]| ){0,12}",
            any::<String>(),
        ],
        page in 1usize..4,
        per_page in 1usize..150,
    ) {
        let index = INDEX.with(|i| i.clone());
        match index.search(&q, page, per_page) {
            Ok(p) => {
                prop_assert!(p.hits.len() <= p.per_page);
                prop_assert!(p.per_page <= 100);
            }
            Err(SearchError::BadQuery { .. }) => {
                prop_assert!(q.trim().is_empty() || q.len() > MAX_QUERY_BYTES, "refused {:?}", q);
            }
            Err(e) => prop_assert!(false, "query {:?} failed: {}", q, e),
        }
    }
}

thread_local! {
    // One index per test thread, built once: opening an index per case would dominate the run.
    static INDEX: std::sync::Arc<SearchIndex> = {
        let dir = tempfile::tempdir().unwrap().keep();
        let index = SearchIndex::open(&dir).unwrap();
        for (i, body) in ["radio telescope array", "pulsar timing (noise)", "\"quoted\" <b>html</b>"]
            .iter()
            .enumerate()
        {
            index
                .upsert(&CommentDoc {
                    id: format!("c{i}"),
                    post_id: "p".into(),
                    author: "and or not".into(),
                    body: (*body).into(),
                    created_at_ms: i as i64,
                })
                .unwrap();
        }
        index.commit().unwrap();
        std::sync::Arc::new(index)
    };
}
