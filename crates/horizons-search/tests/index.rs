//! Behaviour of `SearchIndex` on a real index in a temporary directory (no services).

use std::sync::Arc;

use horizons_search::{CommentDoc, SearchError, SearchIndex, MAX_PER_PAGE};
use tempfile::TempDir;

fn doc(id: &str, author: &str, body: &str) -> CommentDoc {
    CommentDoc {
        id: id.to_owned(),
        post_id: format!("post-{id}"),
        author: author.to_owned(),
        body: body.to_owned(),
        created_at_ms: 1_700_000_000_000,
    }
}

fn open() -> (TempDir, SearchIndex) {
    let tmp = tempfile::tempdir().unwrap();
    let index = SearchIndex::open(tmp.path()).unwrap();
    (tmp, index)
}

fn ids(index: &SearchIndex, q: &str) -> Vec<String> {
    let mut ids: Vec<_> = index.search(q, 1, MAX_PER_PAGE).unwrap().hits.into_iter().map(|h| h.id).collect();
    ids.sort();
    ids
}

#[test]
fn is_send_sync_and_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SearchIndex>();
    assert_send_sync::<Arc<SearchIndex>>();
}

#[test]
fn upsert_commit_search_finds_it_with_highlighted_snippet() {
    let (_tmp, index) = open();
    index
        .upsert(&doc("c1", "Karl Jansky", "Interference at 20.5 MHz turned out to come from the galactic centre."))
        .unwrap();
    // Not visible before commit: the reader only moves in commit().
    assert_eq!(index.search("galactic", 1, 10).unwrap().total, 0);
    index.commit().unwrap();

    let page = index.search("galactic", 1, 10).unwrap();
    assert_eq!(page.total, 1);
    assert_eq!((page.page, page.per_page), (1, 10));
    let hit = &page.hits[0];
    assert_eq!(hit.id, "c1");
    assert_eq!(hit.post_id, "post-c1");
    assert_eq!(hit.author, "Karl Jansky");
    assert_eq!(hit.created_at_ms, 1_700_000_000_000);
    assert!(hit.score > 0.0);
    assert_eq!(hit.snippet, "Interference at 20.5 MHz turned out to come from the <mark>galactic</mark> centre.");
    assert_eq!(index.count().unwrap(), 1);
}

#[test]
fn stemming_matches_other_word_forms() {
    let (_tmp, index) = open();
    index.upsert(&doc("c1", "a", "Two telescopes observed it")).unwrap();
    index.commit().unwrap();
    let page = index.search("telescope observing", 1, 10).unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.hits[0].snippet, "Two <mark>telescopes</mark> <mark>observed</mark> it");
}

#[test]
fn terms_are_combined_with_and() {
    let (_tmp, index) = open();
    index.upsert(&doc("c1", "a", "radio telescope")).unwrap();
    index.upsert(&doc("c2", "a", "radio silence")).unwrap();
    index.commit().unwrap();
    assert_eq!(ids(&index, "radio telescope"), ["c1"]);
    assert_eq!(ids(&index, "radio OR silence"), ["c1", "c2"]);
    assert_eq!(ids(&index, "radio -silence"), ["c1"]);
    assert_eq!(ids(&index, "\"radio silence\""), ["c2"]);
}

#[test]
fn author_is_searchable_and_snippet_falls_back_to_body_start() {
    let (_tmp, index) = open();
    index.upsert(&doc("c1", "Grote Reber", "Backyard dish, 1937.")).unwrap();
    index.commit().unwrap();
    let page = index.search("reber", 1, 10).unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.hits[0].snippet, "Backyard dish, 1937.");
    assert_eq!(ids(&index, "author:reber"), ["c1"]);
    assert_eq!(ids(&index, "post_id:post-c1"), ["c1"]);
}

#[test]
fn edit_replaces_old_words() {
    let (_tmp, index) = open();
    index.upsert(&doc("c1", "a", "the pulsar spins fast")).unwrap();
    index.commit().unwrap();
    assert_eq!(ids(&index, "pulsar"), ["c1"]);

    index.upsert(&doc("c1", "a", "actually it is a magnetar")).unwrap();
    index.commit().unwrap();
    assert!(ids(&index, "pulsar").is_empty());
    assert_eq!(ids(&index, "magnetar"), ["c1"]);
    assert_eq!(index.count().unwrap(), 1);
}

#[test]
fn edits_before_a_commit_keep_only_the_last_version() {
    let (_tmp, index) = open();
    for body in ["first quasar", "second blazar", "third maser"] {
        index.upsert(&doc("c1", "a", body)).unwrap();
    }
    index.commit().unwrap();
    assert_eq!(index.count().unwrap(), 1);
    assert!(ids(&index, "quasar").is_empty());
    assert!(ids(&index, "blazar").is_empty());
    assert_eq!(ids(&index, "maser"), ["c1"]);
}

#[test]
fn delete_removes_it_and_leaves_the_others() {
    let (_tmp, index) = open();
    index.upsert(&doc("c1", "a", "hydrogen line")).unwrap();
    index.upsert(&doc("c2", "a", "hydrogen maser")).unwrap();
    index.commit().unwrap();
    assert_eq!(ids(&index, "hydrogen"), ["c1", "c2"]);

    index.delete("c1").unwrap();
    index.delete("never-existed").unwrap();
    index.commit().unwrap();
    assert_eq!(ids(&index, "hydrogen"), ["c2"]);
    assert_eq!(index.count().unwrap(), 1);
}

#[test]
fn empty_id_is_refused() {
    let (_tmp, index) = open();
    assert!(matches!(index.upsert(&doc("", "a", "x")), Err(SearchError::InvalidDocument { .. })));
    assert!(matches!(index.delete(""), Err(SearchError::InvalidDocument { .. })));
}

#[test]
fn pagination_covers_every_hit_once() {
    let (_tmp, index) = open();
    for i in 0..25 {
        // Different lengths give different BM25 scores, so the order is meaningful.
        let body = format!("spectrum {}", "noise ".repeat(i));
        index.upsert(&doc(&format!("c{i:02}"), "a", &body)).unwrap();
    }
    index.upsert(&doc("other", "a", "unrelated")).unwrap();
    index.commit().unwrap();

    let pages: Vec<_> = (1..=4).map(|p| index.search("spectrum", p, 10).unwrap()).collect();
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page.total, 25);
        assert_eq!(page.page, i + 1);
        assert_eq!(page.per_page, 10);
    }
    assert_eq!(pages.iter().map(|p| p.hits.len()).collect::<Vec<_>>(), [10, 10, 5, 0]);
    // Shortest body scores best, so page 2 holds bodies 10..20.
    let page2: Vec<_> = pages[1].hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(page2, ["c10", "c11", "c12", "c13", "c14", "c15", "c16", "c17", "c18", "c19"]);
    let mut all: Vec<_> = pages.iter().flat_map(|p| p.hits.iter().map(|h| h.id.clone())).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "no hit appears on two pages");
    assert_eq!(n, 25);
    // Scores descend across page boundaries too.
    let scores: Vec<f32> = pages.iter().flat_map(|p| p.hits.iter().map(|h| h.score)).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn paging_parameters_are_validated_and_capped() {
    let (_tmp, index) = open();
    index.upsert(&doc("c1", "a", "beam")).unwrap();
    index.commit().unwrap();
    for (page, per_page) in [(0, 10), (1, 0)] {
        assert!(matches!(index.search("beam", page, per_page), Err(SearchError::BadQuery { .. })));
    }
    assert_eq!(index.search("beam", 1, 10_000).unwrap().per_page, MAX_PER_PAGE);
    // Far past the end: empty, not an error, and no huge allocation.
    let far = index.search("beam", usize::MAX / MAX_PER_PAGE, 100).unwrap();
    assert_eq!((far.total, far.hits.len()), (1, 0));
    assert!(matches!(index.search("beam", usize::MAX, 100), Err(SearchError::BadQuery { .. })));
}

#[test]
fn hostile_queries_do_not_fail_but_empty_ones_do() {
    let (_tmp, index) = open();
    index.upsert(&doc("c1", "a", "unbalanced quote about interferometry")).unwrap();
    index.commit().unwrap();

    for q in [
        "\"unbalanced",
        "AND OR (",
        "(((",
        ")",
        "body:",
        ":",
        "nosuchfield:x",
        "created_at_ms:[0 TO",
        "created_at_ms:abc",
        "*",
        "body:*",
        "a^1e40",
        "\"x y\"~999999",
        "[* TO *]",
        "author: IN [a b",
        "/.*/",
        "- + ! ~ ^ \\",
        "'; DROP TABLE comments; --",
        "<script>alert(1)</script>",
        "日本語 🔭",
        "\u{0}",
    ] {
        if let Err(e) = index.search(q, 1, 10) {
            panic!("query {q:?} failed: {e}");
        }
    }
    assert_eq!(ids(&index, "\"unbalanced"), ["c1"]);

    for q in ["", "   ", "\t\n"] {
        match index.search(q, 1, 10) {
            Err(SearchError::BadQuery { query, reason }) => {
                assert_eq!(query, q);
                assert!(reason.contains("empty"), "{reason}");
            }
            other => panic!("{q:?}: expected BadQuery, got {other:?}"),
        }
    }
    let long = "x".repeat(horizons_search::MAX_QUERY_BYTES + 1);
    assert!(matches!(index.search(&long, 1, 10), Err(SearchError::BadQuery { .. })));
}

#[test]
fn snippet_escapes_html_in_bodies() {
    let (_tmp, index) = open();
    index.upsert(&doc("c1", "mallory", r#"nice <script>alert("owned")</script> & <b>bold</b> 'quasar'"#)).unwrap();
    index.commit().unwrap();
    let page = index.search("quasar", 1, 10).unwrap();
    assert_eq!(
        page.hits[0].snippet,
        "nice &lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt; &amp; \
         &lt;b&gt;bold&lt;/b&gt; &#39;<mark>quasar</mark>&#39;"
    );
    // The highlighted word itself is escaped too.
    let page = index.search("script", 1, 10).unwrap();
    assert!(page.hits[0].snippet.starts_with("nice &lt;<mark>script</mark>&gt;"));
}

#[test]
fn long_bodies_give_a_cut_snippet_around_the_match() {
    let (_tmp, index) = open();
    let body =
        format!("{} the flux density of Cassiopeia A is falling {}", "filler ".repeat(100), "padding ".repeat(100));
    index.upsert(&doc("c1", "a", &body)).unwrap();
    index.commit().unwrap();
    let snippet = &index.search("cassiopeia", 1, 10).unwrap().hits[0].snippet;
    assert!(snippet.contains("<mark>Cassiopeia</mark>"), "{snippet}");
    assert!(snippet.starts_with('…') && snippet.ends_with('…'), "{snippet}");
    assert!(snippet.chars().count() < 250, "{snippet}");
}

#[test]
fn reopen_after_drop_keeps_committed_docs() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let index = SearchIndex::open(tmp.path()).unwrap();
        index.upsert(&doc("c1", "a", "durable comment")).unwrap();
        index.commit().unwrap();
        index.upsert(&doc("c2", "a", "uncommitted comment")).unwrap();
        // Dropped without commit: c2 is lost, by contract.
    }
    let index = SearchIndex::open(tmp.path()).unwrap();
    assert_eq!(index.count().unwrap(), 1);
    assert_eq!(ids(&index, "comment"), ["c1"]);
}

#[test]
fn open_creates_missing_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/search");
    let index = SearchIndex::open(&dir).unwrap();
    assert_eq!(index.dir(), dir);
    assert_eq!(index.count().unwrap(), 0);
}

#[test]
fn second_writer_on_the_same_dir_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let _first = SearchIndex::open(tmp.path()).unwrap();
    let err = SearchIndex::open(tmp.path()).unwrap_err();
    assert!(matches!(err, SearchError::Locked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
    assert!(msg.contains("locked"), "{msg}");
    // Released on drop.
    drop(_first);
    SearchIndex::open(tmp.path()).unwrap();
}

#[test]
fn incompatible_schema_is_refused_naming_the_dir() {
    use tantivy::schema::{Schema, TEXT};
    let tmp = tempfile::tempdir().unwrap();
    let mut schema = Schema::builder();
    schema.add_text_field("title", TEXT);
    tantivy::Index::create_in_dir(tmp.path(), schema.build()).unwrap();

    let err = SearchIndex::open(tmp.path()).unwrap_err();
    assert!(matches!(err, SearchError::SchemaMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
}

#[test]
fn garbage_in_the_directory_is_an_open_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("meta.json"), "not json").unwrap();
    let err = SearchIndex::open(tmp.path()).unwrap_err();
    assert!(matches!(err, SearchError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains(&tmp.path().display().to_string()));
    // The source chain is kept for logs.
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn rebuild_replaces_everything_and_reports_progress() {
    let (_tmp, index) = open();
    index.upsert(&doc("old1", "a", "stale words")).unwrap();
    index.upsert(&doc("old2", "a", "stale words")).unwrap();
    index.commit().unwrap();
    index.upsert(&doc("pending", "a", "stale pending")).unwrap();

    let mut reports = Vec::new();
    let docs = (0..2500).map(|i| doc(&format!("n{i}"), "b", &format!("fresh number {i}")));
    let n = index.rebuild(docs, |p| reports.push(p)).unwrap();

    assert_eq!(n, 2500);
    assert_eq!(reports, [1000, 2000, 2500]);
    assert_eq!(index.count().unwrap(), 2500);
    assert_eq!(index.search("stale", 1, 10).unwrap().total, 0);
    assert_eq!(index.search("fresh", 1, 10).unwrap().total, 2500);
    // Pending writes from before the rebuild went with the old contents.
    index.commit().unwrap();
    assert_eq!(index.count().unwrap(), 2500);
    // The index stays writable after a rebuild.
    index.upsert(&doc("n0", "b", "edited after rebuild")).unwrap();
    index.commit().unwrap();
    assert_eq!(ids(&index, "edited"), ["n0"]);
    assert_eq!(index.count().unwrap(), 2500);
}

#[test]
fn failed_rebuild_leaves_the_old_contents() {
    let (_tmp, index) = open();
    index.upsert(&doc("old", "a", "survivor")).unwrap();
    index.commit().unwrap();
    let docs = vec![doc("n1", "b", "new"), doc("", "b", "bad id")];
    let err = index.rebuild(docs.into_iter(), |_| {}).unwrap_err();
    assert!(matches!(err, SearchError::InvalidDocument { .. }), "{err:?}");
    assert_eq!(ids(&index, "survivor"), ["old"]);
    // And the writer still works after the rollback.
    index.upsert(&doc("n2", "b", "after")).unwrap();
    index.commit().unwrap();
    assert_eq!(ids(&index, "after"), ["n2"]);
    assert_eq!(index.count().unwrap(), 2);
}

#[test]
fn a_write_made_while_a_rebuild_reads_its_source_lands_on_top_of_the_rebuild() {
    let (_tmp, index) = open();
    let index = Arc::new(index);
    let (reading_tx, reading_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let rebuilder = {
        let index = index.clone();
        std::thread::spawn(move || {
            index.rebuild_with(
                || {
                    // The source is read with the writer held: a comment created now is not in
                    // this read, and its write must wait for the rebuild.
                    reading_tx.send(()).unwrap();
                    go_rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
                    Ok(vec![doc("old", "a", "kept words")])
                },
                |_| {},
            )
        })
    };
    reading_rx.recv().unwrap();
    let writer = {
        let index = index.clone();
        std::thread::spawn(move || {
            index.upsert(&doc("new", "b", "written during the rebuild")).unwrap();
            index.commit().unwrap();
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!writer.is_finished(), "the write waits for the rebuild");
    go_tx.send(()).unwrap();
    assert_eq!(rebuilder.join().unwrap().unwrap(), 1);
    writer.join().unwrap();
    assert_eq!(ids(&index, "kept"), ["old"]);
    assert_eq!(ids(&index, "rebuild"), ["new"]);
    assert_eq!(index.count().unwrap(), 2);
    // A source that fails leaves the index as it was, a pending write included.
    index.upsert(&doc("pending", "c", "not yet committed")).unwrap();
    let err = index.rebuild_with(|| Err::<Vec<CommentDoc>, _>("database down".to_string()), |_| {}).unwrap_err();
    assert!(matches!(err, SearchError::Source { .. }) && err.to_string().contains("database down"), "{err}");
    index.commit().unwrap();
    assert_eq!(ids(&index, "committed"), ["pending"]);
    assert_eq!(index.count().unwrap(), 3);
}

#[test]
fn rebuild_of_nothing_empties_the_index() {
    let (_tmp, index) = open();
    index.upsert(&doc("c1", "a", "gone soon")).unwrap();
    index.commit().unwrap();
    let mut reports = Vec::new();
    assert_eq!(index.rebuild(std::iter::empty(), |p| reports.push(p)).unwrap(), 0);
    assert_eq!(reports, [0]);
    assert_eq!(index.count().unwrap(), 0);
}

#[test]
fn concurrent_writers_all_become_visible() {
    let (_tmp, index) = open();
    let index = Arc::new(index);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let index = Arc::clone(&index);
            std::thread::spawn(move || {
                for i in 0..25 {
                    let id = format!("t{t}-{i}");
                    index.upsert(&doc(&id, "a", "concurrent beam")).unwrap();
                    index.commit().unwrap();
                    // Read-your-writes: once commit returns, this thread's comment is found.
                    let found = index.search(&format!("post_id:post-{id}"), 1, 1).unwrap();
                    assert_eq!(found.total, 1, "{id} not visible after its commit");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(index.count().unwrap(), 100);
    assert_eq!(index.search("beam", 1, 10).unwrap().total, 100);
    // Group commit may merge some of the 100 commit() calls; it never adds commits.
    assert!((1..=100).contains(&index.commits()), "{}", index.commits());
}

#[test]
fn commit_without_new_writes_does_no_commit() {
    let (_tmp, index) = open();
    index.commit().unwrap();
    assert_eq!(index.commits(), 0, "nothing to commit on a fresh index");
    index.upsert(&doc("c1", "a", "one")).unwrap();
    index.upsert(&doc("c2", "a", "two")).unwrap();
    index.commit().unwrap();
    index.commit().unwrap();
    assert_eq!(index.commits(), 1, "two writes, one commit; the second call had nothing to do");
    index.delete("c1").unwrap();
    index.commit().unwrap();
    assert_eq!(index.commits(), 2, "a delete is a write too");
    assert_eq!(index.count().unwrap(), 1);
}

/// Set by `second_process_gets_the_locked_error` for the copy of this test binary it starts.
const CHILD_DIR_ENV: &str = "HORIZONS_SEARCH_TEST_LOCKED_DIR";

#[test]
fn second_process_gets_the_locked_error() {
    let tmp = tempfile::tempdir().unwrap();
    let _held = SearchIndex::open(tmp.path()).unwrap();
    // Re-run this test binary, filtered to the child half below, as a genuinely separate process.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_half_of_the_lock_test", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("child saw: search index at"), "{stdout}");
}

/// Does nothing in a normal run; in the child started above it must fail to open the index.
#[test]
fn child_process_half_of_the_lock_test() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else { return };
    let err = SearchIndex::open(std::path::Path::new(&dir)).unwrap_err();
    assert!(matches!(err, SearchError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains(&*dir.to_string_lossy()), "{err}");
    println!("child saw: {err}");
}

#[test]
fn a_read_only_index_follows_the_writers_commits_and_refuses_writes() {
    let (dir, writer) = open();
    let reader = SearchIndex::open_read_only(dir.path()).unwrap();
    writer.upsert(&doc("c1", "alice", "faraday rotation in the lobes")).unwrap();
    writer.commit().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ids(&reader, "faraday").is_empty() {
        assert!(std::time::Instant::now() < deadline, "the read-only index never saw the commit");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(ids(&reader, "faraday"), ["c1"]);
    let err = reader.upsert(&doc("c2", "bob", "nope")).unwrap_err();
    assert!(matches!(err, SearchError::ReadOnly { .. }), "{err}");
    assert!(reader.commit().is_err());
}
