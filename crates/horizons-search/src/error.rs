//! The one error type of this crate.
//!
//! Callers (the indexer consumer and the HTTP route) need to tell three situations apart, so the
//! variants are shaped around them rather than around tantivy's internals:
//!
//! - the user typed something we refuse ([`SearchError::BadQuery`]): a 400, never a 500;
//! - the index directory cannot be used as it is ([`SearchError::SchemaMismatch`],
//!   [`SearchError::Locked`], [`SearchError::Open`], [`SearchError::Io`]): an operator problem,
//!   and every one of them names the directory so the log line alone says what to fix;
//! - tantivy failed while running ([`SearchError::Index`]): retry or alert.
//!
//! tantivy's own error is kept as `#[source]` so `{:#}`-style reporters print the whole chain.

use std::path::PathBuf;

/// Everything that can go wrong in [`crate::SearchIndex`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// The query (or its paging parameters) was refused before reaching the index. The HTTP side
    /// maps this to `400 Bad Request`; `reason` is safe to show to the user.
    #[error("bad search query {query:?}: {reason}")]
    BadQuery {
        /// The query as the user typed it.
        query: String,
        /// Why it was refused, in words a user can act on.
        reason: String,
    },

    /// Reading the documents to rebuild from failed ([`crate::SearchIndex::rebuild_with`]);
    /// the index is as it was.
    #[error("reading the documents to rebuild the search index from: {reason}")]
    Source {
        /// What the source said.
        reason: String,
    },

    /// A document handed to `upsert`, `delete` or `rebuild` cannot be indexed (an empty id).
    #[error("invalid comment document: {reason}")]
    InvalidDocument {
        /// What is wrong with it.
        reason: String,
    },

    /// The directory holds a tantivy index whose fields are not the ones this version of the
    /// crate writes. Nothing is changed on disk; rebuild into an empty directory instead.
    #[error(
        "search index at {} was written with a different schema; \
         move it away (or point at an empty directory) and run a rebuild",
        dir.display()
    )]
    SchemaMismatch {
        /// The index directory.
        dir: PathBuf,
    },

    /// Another writer holds the directory's lock: another process, or another [`crate::SearchIndex`]
    /// in this one. tantivy allows a single writer per index.
    #[error(
        "search index at {} is locked by another writer (another process, or another \
         SearchIndex in this one, has it open); only one may write it at a time",
        dir.display()
    )]
    Locked {
        /// The index directory.
        dir: PathBuf,
        /// tantivy's lock error.
        #[source]
        source: tantivy::TantivyError,
    },

    /// The index was opened read-only ([`crate::SearchIndex::open_read_only`]): writes go
    /// through the process that holds the writer.
    #[error("search index at {} is open read-only here; another process writes it", dir.display())]
    ReadOnly {
        /// The index directory.
        dir: PathBuf,
    },

    /// The directory exists but tantivy could not open the index in it (corrupt or unreadable
    /// files, an index from an incompatible tantivy version, ...).
    #[error("cannot open search index at {}", dir.display())]
    Open {
        /// The index directory.
        dir: PathBuf,
        /// tantivy's error.
        #[source]
        source: tantivy::TantivyError,
    },

    /// A filesystem operation of ours (creating the directory) failed.
    #[error("search index directory {}: {op} failed", dir.display())]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The index directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// tantivy failed while indexing, committing or searching.
    #[error("search index {op} failed")]
    Index {
        /// What we were doing (`"commit"`, `"search"`, ...).
        op: &'static str,
        /// tantivy's error.
        #[source]
        source: tantivy::TantivyError,
    },
}

impl SearchError {
    /// Wraps a tantivy error raised while doing `op` on an open index.
    pub(crate) fn index(op: &'static str) -> impl FnOnce(tantivy::TantivyError) -> Self {
        move |source| SearchError::Index { op, source }
    }

    /// A refused query.
    pub(crate) fn bad_query(query: &str, reason: impl Into<String>) -> Self {
        SearchError::BadQuery { query: query.to_owned(), reason: reason.into() }
    }
}
