//! Full-text search over portal comments: an embedded [tantivy] index in one directory.
//!
//! The search indexer consumer feeds comment events in with [`SearchIndex::upsert`] /
//! [`SearchIndex::delete`] and calls [`SearchIndex::commit`] (per event, or better per batch of
//! events); `GET /api/search` calls [`SearchIndex::search`] and renders [`Hit::snippet`] as is.
//! The product target is comment → searchable at p99 ≤ 100 ms, which is why `commit` both
//! commits and reloads the reader before it returns (see [`index`] for the concurrency model,
//! group commit and the durability contract).
//!
//! Everything is synchronous: the calls do disk I/O, so async callers wrap them in
//! `tokio::task::spawn_blocking`. Commits skip `fsync`; [`durability`] says why that is safe
//! and what a caller does when the machine went down with an index open.
//!
//! ```
//! use horizons_search::{CommentDoc, SearchIndex};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! let index = SearchIndex::open(tmp.path())?;
//! index.upsert(&CommentDoc {
//!     id: "c1".into(),
//!     post_id: "p1".into(),
//!     author: "Grote Reber".into(),
//!     body: "First radio map of the Milky Way".into(),
//!     created_at_ms: 1_700_000_000_000,
//! })?;
//! index.commit()?;
//! let page = index.search("milky way", 1, 20)?;
//! assert_eq!(page.total, 1);
//! assert_eq!(page.hits[0].snippet, "First radio map of the <mark>Milky</mark> <mark>Way</mark>");
//! # Ok(()) }
//! ```

pub mod durability;
pub mod error;
pub mod index;
mod schema;
mod snippet;

pub use error::SearchError;

/// The name prefix of tantivy's merge threads, for callers that lower their CPU priority.
pub const MERGE_THREAD_PREFIX: &str = "merge_thread_";
pub use index::{CommentDoc, Hit, SearchIndex, SearchPage, MAX_PER_PAGE, MAX_QUERY_BYTES};
