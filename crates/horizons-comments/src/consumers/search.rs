//! The search worker: keeps the tantivy index (`horizons-search`) equal to the visible
//! comments.
//!
//! Whatever the event (created, edited, deleted, moderated), the worker reads the comment's
//! current row and upserts it if visible or removes it otherwise, so the index converges on
//! the database whatever the order or number of deliveries — redeliveries change nothing.
//! A delivery is acked only after a commit that covers its write. Commits are grouped: a
//! handler whose write is already covered by a commit another handler made returns at once,
//! so under load one commit (a few ms) serves every write made while the previous one ran.
//! Commits are also paced: one starts at most every [`COMMIT_EVERY`] (each costs a new
//! segment, its fsyncs and later merges whatever it holds, so back-to-back commits of a few
//! comments each would spend the CPU that indexing needs); a comment waits at most that long
//! for its commit to begin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use horizons_bus::{Context, Envelope, Handler, HandlerError};
use horizons_search::{CommentDoc, SearchIndex};
use sqlx::Row;

use crate::consumers::{decode, retryable};
use crate::events::Event;
use crate::sql::Stmt;
use crate::store::Store;
use crate::{now_ms, CommentsError};

/// The `search` group's handler.
pub struct Indexer {
    store: Store,
    index: Arc<SearchIndex>,
    /// Writes made so far (a ticket per write).
    written: AtomicU64,
    /// The highest ticket a finished commit covers, and when the last commit started.
    committed: tokio::sync::Mutex<(u64, Option<std::time::Instant>)>,
}

/// The shortest time between the starts of two commits.
pub const COMMIT_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer").field("written", &self.written.load(Ordering::Relaxed)).finish()
    }
}

fn index_err(e: horizons_search::SearchError) -> CommentsError {
    CommentsError::Other(format!("search index: {e}"))
}

impl Indexer {
    /// A handler keeping `index` in step with `store`.
    pub fn new(store: Store, index: Arc<SearchIndex>) -> Self {
        Self { store, index, written: AtomicU64::new(0), committed: tokio::sync::Mutex::new((0, None)) }
    }

    async fn sync(&self, comment_id: &str) -> Result<(), CommentsError> {
        let rows = self
            .store
            .read(
                Stmt::new("SELECT id, post_id, author, body, status, version, created_at FROM comments WHERE id = $1")
                    .bind(comment_id),
            )
            .await
            .map_err(|e| CommentsError::db("reading the comment", e))?;
        let Some(r) = rows.first() else {
            return Err(CommentsError::not_found("comment", comment_id));
        };
        let visible = r.get::<String>("status") == "visible";
        let version: i64 = r.get("version");
        let doc = CommentDoc {
            id: r.get("id"),
            post_id: r.get("post_id"),
            author: r.get("author"),
            body: r.get("body"),
            created_at_ms: r.get("created_at"),
        };
        let index = self.index.clone();
        // The ticket is taken after the write, so a commit that starts later covers it.
        let ticket =
            tokio::task::spawn_blocking(move || if visible { index.upsert(&doc) } else { index.delete(&doc.id) })
                .await
                .map_err(|e| CommentsError::Other(format!("index task: {e}")))?
                .map_err(index_err)
                .map(|()| self.written.fetch_add(1, Ordering::AcqRel) + 1)?;
        {
            let mut committed = self.committed.lock().await;
            if committed.0 < ticket {
                if let Some(wait) = committed.1.and_then(|at| COMMIT_EVERY.checked_sub(at.elapsed())) {
                    // Writes made meanwhile join this commit.
                    tokio::time::sleep(wait).await;
                }
                committed.1 = Some(std::time::Instant::now());
                let upto = self.written.load(Ordering::Acquire);
                let index = self.index.clone();
                tokio::task::spawn_blocking(move || index.commit())
                    .await
                    .map_err(|e| CommentsError::Other(format!("index task: {e}")))?
                    .map_err(index_err)?;
                committed.0 = upto;
            }
        }
        let state = Stmt::new(
            "INSERT INTO search_state (comment_id, version, indexed, at_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (comment_id) DO UPDATE SET version = excluded.version, indexed = excluded.indexed, at_ms = excluded.at_ms",
        )
        .bind(comment_id)
        .bind(version)
        .bind(i64::from(visible))
        .bind(now_ms());
        self.store.write(vec![state]).await.map(drop).map_err(|e| CommentsError::db("recording the index state", e))
    }
}

#[async_trait]
impl Handler for Indexer {
    async fn handle(&self, msg: &Envelope, _cx: &Context) -> Result<(), HandlerError> {
        let id = match decode(msg)? {
            Event::CommentCreated(e) => e.comment_id,
            Event::CommentEdited(e) => e.comment_id,
            Event::CommentDeleted(e) => e.comment_id,
            Event::ModerationDecided(e) => e.comment_id,
            _ => return Ok(()),
        };
        self.sync(&id).await.map_err(retryable)
    }
}

/// Rebuilds `index` from every visible comment in `store`, calling `progress` with the count
/// so far; returns how many were indexed. Safe while the search worker runs: the comments are
/// read once the index's writer is held ([`SearchIndex::rebuild_with`]), so a comment written
/// meanwhile is either in that read or indexed on top of the rebuild.
pub async fn reindex(
    store: &Store,
    index: Arc<SearchIndex>,
    progress: impl FnMut(u64) + Send + 'static,
) -> Result<u64, CommentsError> {
    let (store, runtime) = (store.clone(), tokio::runtime::Handle::current());
    let load = move || {
        let rows = runtime
            .block_on(
                sqlx::query(
                    "SELECT id, post_id, author, body, created_at FROM comments WHERE status = 'visible' ORDER BY id",
                )
                .fetch_all(store.pool()),
            )
            .map_err(|e| format!("reading comments: {e}"))?;
        Ok::<_, String>(
            rows.iter()
                .map(|r| CommentDoc {
                    id: r.get(0),
                    post_id: r.get(1),
                    author: r.get(2),
                    body: r.get(3),
                    created_at_ms: r.get(4),
                })
                .collect::<Vec<_>>(),
        )
    };
    tokio::task::spawn_blocking(move || index.rebuild_with(load, progress))
        .await
        .map_err(|e| CommentsError::Other(format!("index task: {e}")))?
        .map_err(index_err)
}
