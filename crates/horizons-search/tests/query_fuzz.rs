//! Property test: no user-typed query makes `search` panic or fail, except the ones it refuses
//! on purpose (empty or too long), which fail with `BadQuery`.

use horizons_search::{CommentDoc, SearchError, SearchIndex, MAX_PER_PAGE, MAX_QUERY_BYTES};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[test]
fn any_query_is_answered_or_refused_as_bad() {
    // One index for all cases: opening one per case would dominate the run.
    let tmp = tempfile::tempdir().unwrap();
    let index = SearchIndex::open(tmp.path()).unwrap();
    for (i, body) in ["radio telescope array", "pulsar timing (noise)", "\"quoted\" <b>html</b>"].iter().enumerate() {
        let doc = CommentDoc {
            id: format!("c{i}"),
            post_id: "p".into(),
            author: "and or not".into(),
            body: (*body).into(),
            created_at_ms: i as i64,
        };
        index.upsert(&doc).unwrap();
    }
    index.commit().unwrap();

    // Query syntax characters and keywords weighted up, so the parser's corners get hit, plus
    // arbitrary Unicode.
    let query = prop_oneof![
        "[a-z \"():\\[\\]{}*^~!+\\-\\\\/'<>&|=.,0-9]{0,40}",
        "(AND|OR|NOT|TO|IN|body|author|id|post_id|created_at_ms|:|\\(|\\)|\"|\\*|\\[|\\]|\\{|\\}|>|<|=| ){0,12}",
        any::<String>(),
    ];
    let mut runner = TestRunner::new(Config { cases: 512, ..Config::default() });
    runner
        .run(&(query, 1usize..4, 1usize..150), |(q, page, per_page)| {
            match index.search(&q, page, per_page) {
                Ok(p) => {
                    prop_assert!(p.hits.len() <= p.per_page);
                    prop_assert!(p.per_page <= MAX_PER_PAGE);
                }
                Err(SearchError::BadQuery { .. }) => {
                    prop_assert!(q.trim().is_empty() || q.len() > MAX_QUERY_BYTES, "refused {:?}", q);
                }
                Err(e) => prop_assert!(false, "query {:?} failed: {}", q, e),
            }
            Ok(())
        })
        .unwrap();
}
