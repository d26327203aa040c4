//! Commits skip `fsync`; what a crashed process and a machine restart leave behind
//! (`horizons_search::durability`). A crash is a real one: a child process (this test binary,
//! re-run on one test) commits and aborts. A machine restart is played by opening with another
//! boot id.

use std::path::Path;
use std::process::Command;

use horizons_search::durability::{self, MARKER};
use horizons_search::{CommentDoc, SearchIndex};

/// Set in the child process: the index directory it writes before aborting.
const CHILD_DIR: &str = "HORIZONS_SEARCH_TEST_CRASH_DIR";

fn doc(i: usize) -> CommentDoc {
    CommentDoc {
        id: format!("c{i}"),
        post_id: "p".into(),
        author: "Jocelyn Bell".into(),
        body: format!("pulsar number {i} with a period of 1.337 s"),
        created_at_ms: 1_700_000_000_000,
    }
}

/// Not a test of its own: the body of the child process of [`crash_after_commit`]. Run
/// normally (no `CHILD_DIR`), it returns at once.
#[test]
fn child_commits_three_comments_then_aborts() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let index = SearchIndex::open_in_boot(Path::new(&dir), Some("boot-1")).unwrap();
    for i in 0..3 {
        index.upsert(&doc(i)).unwrap();
    }
    index.commit().unwrap();
    assert_eq!(index.count().unwrap(), 3);
    // No destructor runs: the index is not synced and its marker stays.
    std::process::abort();
}

/// Runs the child in a process of its own, in boot "boot-1", and checks that it crashed.
fn crash_after_commit(dir: &Path) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["child_commits_three_comments_then_aborts", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .status()
        .unwrap();
    assert!(!status.success(), "the child should have aborted");
    assert!(dir.join(MARKER).exists(), "a crashed writer leaves its unsynced marker");
}

/// Opens `dir` as boot `boot` and checks that it kept `n` comments and asks for no rebuild.
fn reopen_keeps(dir: &Path, boot: &str, n: u64) -> SearchIndex {
    let index = SearchIndex::open_in_boot(dir, Some(boot)).unwrap();
    assert!(!index.rebuild_needed());
    assert_eq!(index.count().unwrap(), n);
    index
}

#[test]
fn a_crashed_process_loses_nothing_in_the_same_boot() {
    let tmp = tempfile::tempdir().unwrap();
    crash_after_commit(tmp.path());
    let index = reopen_keeps(tmp.path(), "boot-1", 3);
    assert_eq!(index.search("pulsar", 1, 10).unwrap().total, 3);
}

#[test]
fn unsynced_writes_from_an_earlier_boot_empty_the_index_until_a_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    crash_after_commit(tmp.path());

    let index = SearchIndex::open_in_boot(tmp.path(), Some("boot-2")).unwrap();
    assert!(index.rebuild_needed(), "a torn index must be reported");
    assert_eq!(index.count().unwrap(), 0, "a torn index must not be served");
    let n = index.rebuild((0..5).map(doc), |_| {}).unwrap();
    assert_eq!(n, 5);
    assert!(!index.rebuild_needed());
    assert_eq!(index.search("pulsar", 1, 10).unwrap().total, 5);
    drop(index);

    // Closed cleanly after the rebuild: a further restart keeps it.
    assert!(!tmp.path().join(MARKER).exists());
    reopen_keeps(tmp.path(), "boot-3", 5);
}

#[test]
fn a_clean_close_survives_a_machine_restart() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let index = SearchIndex::open_in_boot(tmp.path(), Some("boot-1")).unwrap();
        for i in 0..4 {
            index.upsert(&doc(i)).unwrap();
            index.commit().unwrap();
        }
        assert!(tmp.path().join(MARKER).exists(), "commits leave writes unsynced until close");
    }
    assert!(!tmp.path().join(MARKER).exists(), "closing syncs and removes the marker");
    reopen_keeps(tmp.path(), "boot-2", 4);
}

#[test]
fn without_a_boot_id_every_commit_is_synced_and_nothing_is_marked() {
    let tmp = tempfile::tempdir().unwrap();
    let index = SearchIndex::open_in_boot(tmp.path(), None).unwrap();
    index.upsert(&doc(1)).unwrap();
    index.commit().unwrap();
    assert!(!tmp.path().join(MARKER).exists());
    assert_eq!(index.count().unwrap(), 1);
}

#[test]
fn this_machine_has_a_boot_id() {
    // The deferred mode is what `horizons up` uses here; without a boot id it would silently
    // fall back to synced commits (slower, not wrong).
    assert!(durability::boot_id().is_some_and(|b| b.len() >= 32));
}
