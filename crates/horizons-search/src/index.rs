//! [`SearchIndex`]: the embedded comment index (one tantivy index in one directory).
//!
//! # Concurrency model
//!
//! tantivy allows one `IndexWriter` per index directory, enforced with a lock file; this type
//! owns that writer behind a mutex, so a single `SearchIndex` (in an `Arc`) serves every thread
//! of the process. A second `SearchIndex` on the same directory, in this process or another,
//! fails at [`SearchIndex::open`] with [`SearchError::Locked`] naming the directory.
//!
//! Searches never take that mutex: they run on the reader's current snapshot, which only moves
//! forward in [`SearchIndex::commit`] (`ReloadPolicy::Manual`). Manual reload is what lets
//! `commit` promise read-your-writes: with tantivy's default `OnCommitWithDelay` the reader
//! catches up some time *after* the commit, which would blur the comment-to-searchable latency
//! the product measures.
//!
//! # Group commit
//!
//! A commit writes a new segment (six files) and `meta.json`; doing one per comment is what
//! makes an index fall behind under load. Every write bumps a sequence number; `commit` notes
//! it on entry and does nothing if a commit that finished meanwhile already covered it. The
//! writer mutex is released fairly (FIFO), so writes that queued up during a commit go in
//! before the next queued commit, which then carries all of them. So when many threads each do
//! `upsert` + `commit`, commits batch themselves under load, while a lone comment is still
//! committed at once. A consumer that reads events in batches should still call `commit` once
//! per batch.
//!
//! Commits run on a thread of their own (`Committer`, below), at the priority of the thread that
//! opened the index, whatever thread calls `commit`.
//!
//! # Durability contract for callers
//!
//! Writes are neither durable nor visible until `commit` returns `Ok`. A consumer should
//! acknowledge its bus offsets only after that, so a crash re-delivers (and re-upserts, which is
//! idempotent by id) anything the index had not committed.
//!
//! "Durable" here means: a committed write survives the process, killed or not. Commits do not
//! `fsync` (see [`crate::durability`]); if the machine goes down before the index is closed,
//! the next [`SearchIndex::open`] finds out, empties the index and sets
//! [`SearchIndex::rebuild_needed`], and the caller rebuilds it from the database, which is
//! where every comment is durable. Without a boot id to tell (not Linux), every commit syncs.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::{Mutex, MutexGuard};
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::error::LockError;
use tantivy::directory::{Directory, MmapDirectory};
use tantivy::query::QueryParser;
use tantivy::schema::{Schema, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, TantivyDocument, TantivyError, Term};

use crate::durability::{self, DeferredSync, LastSession};
use crate::error::SearchError;
use crate::schema::{self, Fields};
use crate::snippet;

/// Largest page a caller may ask for; larger `per_page` values are lowered to this (and the
/// returned [`SearchPage::per_page`] says so). Bounds the work one HTTP request can cause.
pub const MAX_PER_PAGE: usize = 100;

/// Longest query accepted, in bytes. Real queries are a few words; a megabyte of query text is
/// an attack on the parser, not a search.
pub const MAX_QUERY_BYTES: usize = 1024;

/// Memory for the writer's in-RAM segment before tantivy flushes on its own: far more than a
/// commit's worth of comments. The writer has one indexing thread: each thread finalises a
/// segment of its own at every commit and starts a new one (multi-megabyte arenas), so with
/// frequent small commits a second thread cost more CPU than it saved.
const WRITER_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// Segments below this many documents are merged with others of about their size.
///
/// Paced commits make segments of a few dozen comments each. Tantivy's default (10 000) puts
/// every segment below it in one level, so each merge rewrote the growing small segment along
/// with seven new tiny ones: a comment was rewritten up to hundreds of times before its
/// segment passed 10 000 documents. Sized levels from here up make that logarithmic.
const MERGE_MIN_LAYER_DOCS: u32 = 64;

fn merge_policy() -> tantivy::indexer::LogMergePolicy {
    let mut p = tantivy::indexer::LogMergePolicy::default();
    p.set_min_layer_size(MERGE_MIN_LAYER_DOCS);
    p
}

/// How often [`SearchIndex::rebuild`] reports progress, in documents.
const PROGRESS_EVERY: u64 = 1000;

/// One comment, as the indexer consumer hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentDoc {
    /// Comment id; unique, the key for [`SearchIndex::upsert`] and [`SearchIndex::delete`].
    pub id: String,
    /// Id of the post the comment belongs to.
    pub post_id: String,
    /// Author's display name (searchable).
    pub author: String,
    /// Comment text, as written (plain text; it is escaped when rendered into snippets).
    pub body: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// One page of search results.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// Number of matching comments in all pages.
    pub total: usize,
    /// The page returned, 1-based.
    pub page: usize,
    /// Page size actually used (the requested one, lowered to [`MAX_PER_PAGE`]).
    pub per_page: usize,
    /// The hits of this page, best first; empty past the last page.
    pub hits: Vec<Hit>,
}

/// One matching comment.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Comment id.
    pub id: String,
    /// Post the comment belongs to (to build the link).
    pub post_id: String,
    /// Author's display name.
    pub author: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// BM25 relevance score; only meaningful relative to the other hits of the same query.
    pub score: f32,
    /// Part of the body as HTML: all text escaped, matched words wrapped in `<mark>…</mark>`,
    /// `…` where the body was cut. Safe to insert into a page as is.
    pub snippet: String,
}

/// The comment index in one directory. `Send + Sync`; share it in an `Arc`.
///
/// Every method blocks (disk I/O; `commit` waits for its commit thread); async callers run them in
/// `spawn_blocking`.
pub struct SearchIndex {
    /// Where the index lives, for error messages.
    dir: PathBuf,
    fields: Fields,
    reader: IndexReader,
    /// Built once: it holds the schema and tokenizers, and parsing does not mutate it.
    parser: QueryParser,
    /// `None` when opened read-only.
    writer: Option<Arc<Mutex<WriterState>>>,
    /// Upserts and deletes ever accepted, bumped under the writer lock. `commit` reads it
    /// *before* taking the lock, to learn which writes it must cover; see [`WriterState`].
    write_seq: Arc<AtomicU64>,
    /// Commits actually performed (not the calls that found their writes already committed).
    commits: Arc<AtomicU64>,
    /// Runs the commits of a writer; see [`Committer`].
    committer: Option<Committer>,
    /// The writer's directory when its commits skip `fsync` (see [`crate::durability`]);
    /// synced when this is dropped.
    deferred: Option<DeferredSync>,
    /// The index was found torn after the machine went down, and emptied; cleared by a rebuild.
    rebuild_needed: AtomicBool,
    /// Held (`flock`) for the writer's life, so two writers never check and wipe at once.
    _writer_lock: Option<File>,
}

/// The single writer and what is pending on it.
struct WriterState {
    writer: IndexWriter<TantivyDocument>,
    /// `write_seq` as of the last successful commit (or of a rebuild, which discards older
    /// writes). A `commit` whose target is not above it has been done by someone else.
    committed_seq: u64,
    /// A commit succeeded but the reader reload after it failed: the next `commit` must reload
    /// even with nothing new to commit, or those writes would stay invisible.
    reader_stale: bool,
}

impl fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchIndex").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl SearchIndex {
    /// Opens the index in `dir`, creating the directory and an empty index if there is none.
    ///
    /// # Errors
    /// - [`SearchError::SchemaMismatch`] if `dir` holds an index with other fields;
    /// - [`SearchError::Locked`] if another writer (process or `SearchIndex`) has it open;
    /// - [`SearchError::Open`] / [`SearchError::Io`] if the directory or its files are unusable.
    ///
    /// All of them name `dir`.
    pub fn open(dir: &Path) -> Result<Self, SearchError> {
        Self::open_in_boot(dir, durability::boot_id().as_deref())
    }

    /// [`open`](Self::open) as if the kernel's boot id were `boot` (`None`: no boot id, every
    /// write synced). Lets tests play a machine restart.
    #[doc(hidden)]
    pub fn open_in_boot(dir: &Path, boot: Option<&str>) -> Result<Self, SearchError> {
        let (schema, fields) = schema::build();
        let io_err = |op| move |source| SearchError::Io { op, dir: dir.to_owned(), source };
        create_dir(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(durability::WRITER_LOCK))
            .map_err(io_err("open the writer lock"))?;
        if let Err(e) = lock.try_lock() {
            let source = TantivyError::LockFailure(LockError::LockBusy, Some(e.to_string()));
            return Err(SearchError::Locked { dir: dir.to_owned(), source });
        }
        let mut rebuild_needed = false;
        let (index, deferred) = match boot {
            Some(boot) => {
                let last = durability::last_session(dir, boot).map_err(io_err("read the unsynced marker"))?;
                if last == LastSession::OtherBoot {
                    tracing::warn!(
                        dir = %dir.display(),
                        "search index was being written when the machine went down; emptying it (rebuild it from the database)"
                    );
                    durability::wipe(dir).map_err(io_err("empty a torn index"))?;
                    rebuild_needed = true;
                }
                let directory = DeferredSync::open(dir, boot.to_owned(), last == LastSession::SameBoot)
                    .map_err(open_dir_err(dir))?;
                (open_or_create(dir, directory.clone(), schema)?, Some(directory))
            }
            None => (open_or_create(dir, MmapDirectory::open(dir).map_err(open_dir_err(dir))?, schema)?, None),
        };
        let open_err = |source| SearchError::Open { dir: dir.to_owned(), source };

        let writer =
            index.writer_with_num_threads::<TantivyDocument>(1, WRITER_MEMORY_BYTES).map_err(
                |source| match source {
                    TantivyError::LockFailure(..) => SearchError::Locked { dir: dir.to_owned(), source },
                    source => open_err(source),
                },
            )?;
        writer.set_merge_policy(Box::new(merge_policy()));
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(open_err)?;
        let parser = query_parser(&index, &fields);
        let committer = Committer::start().map_err(io_err("start the commit thread"))?;
        tracing::info!(dir = %dir.display(), docs = reader.searcher().num_docs(), synced_commits = deferred.is_none(), "search index open");
        Ok(SearchIndex {
            dir: dir.to_owned(),
            fields,
            reader,
            parser,
            writer: Some(Arc::new(Mutex::new(WriterState { writer, committed_seq: 0, reader_stale: false }))),
            write_seq: Arc::default(),
            commits: Arc::default(),
            committer: Some(committer),
            deferred,
            rebuild_needed: AtomicBool::new(rebuild_needed),
            _writer_lock: Some(lock),
        })
    }

    /// Whether this index was found torn at open, after the machine went down while it held
    /// unsynced writes, and was emptied: rebuild it from the database
    /// ([`rebuild`](Self::rebuild), `horizons search reindex`). False again after a rebuild.
    pub fn rebuild_needed(&self) -> bool {
        self.rebuild_needed.load(Ordering::Acquire)
    }

    /// Opens the index in `dir` for searching only, while another process holds the writer
    /// (`horizons serve` next to a `horizons worker --role search`). The reader follows that
    /// writer's commits on its own (tantivy watches `meta.json`, reloading shortly after each
    /// commit), so results lag the writer by a few milliseconds. Writes answer
    /// [`SearchError::ReadOnly`].
    ///
    /// # Errors
    /// As [`open`](Self::open), except that no lock is taken.
    pub fn open_read_only(dir: &Path) -> Result<Self, SearchError> {
        let (schema, fields) = schema::build();
        create_dir(dir)?;
        let index = open_or_create(dir, MmapDirectory::open(dir).map_err(open_dir_err(dir))?, schema)?;
        let open_err = |source| SearchError::Open { dir: dir.to_owned(), source };
        let reader =
            index.reader_builder().reload_policy(ReloadPolicy::OnCommitWithDelay).try_into().map_err(open_err)?;
        let parser = query_parser(&index, &fields);
        tracing::info!(dir = %dir.display(), docs = reader.searcher().num_docs(), "search index open read-only");
        Ok(SearchIndex {
            dir: dir.to_owned(),
            fields,
            reader,
            parser,
            writer: None,
            write_seq: Arc::default(),
            commits: Arc::default(),
            committer: None,
            deferred: None,
            rebuild_needed: AtomicBool::new(false),
            _writer_lock: None,
        })
    }

    fn writer(&self) -> Result<&Arc<Mutex<WriterState>>, SearchError> {
        self.writer.as_ref().ok_or_else(|| SearchError::ReadOnly { dir: self.dir.clone() })
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds `doc`, replacing any document with the same id. Visible after the next
    /// [`commit`](Self::commit).
    ///
    /// # Errors
    /// [`SearchError::InvalidDocument`] for an empty id (it would match every id-less document
    /// on delete); [`SearchError::Index`] if tantivy's indexing pipeline is gone.
    pub fn upsert(&self, doc: &CommentDoc) -> Result<(), SearchError> {
        check_id(&doc.id)?;
        let d = self.to_document(doc);
        let st = self.writer()?.lock();
        // Delete then add under one lock: tantivy applies a delete to documents with a smaller
        // opstamp only, so the new version survives and every older one (committed or not) goes.
        st.writer.delete_term(self.id_term(&doc.id));
        st.writer.add_document(d).map_err(SearchError::index("upsert"))?;
        self.write_seq.fetch_add(1, Ordering::Release);
        // Fair unlock hands the lock to the longest waiter: under load that lets queued writes in
        // before a queued commit, so that commit carries them all (group commit).
        MutexGuard::unlock_fair(st);
        Ok(())
    }

    /// Removes the document with this id, if any. Visible after the next
    /// [`commit`](Self::commit).
    ///
    /// # Errors
    /// [`SearchError::InvalidDocument`] for an empty id.
    pub fn delete(&self, id: &str) -> Result<(), SearchError> {
        check_id(id)?;
        let st = self.writer()?.lock();
        st.writer.delete_term(self.id_term(id));
        self.write_seq.fetch_add(1, Ordering::Release);
        MutexGuard::unlock_fair(st);
        Ok(())
    }

    /// Makes every write that returned before this call durable and visible to
    /// [`search`](Self::search) and [`count`](Self::count) by the time it returns.
    ///
    /// Cheap when there is nothing to commit, which is what makes concurrent callers share one
    /// commit (see the module docs).
    ///
    /// # Errors
    /// [`SearchError::Index`] if the commit or the reader reload failed. A later `commit` tries
    /// again, but tantivy may have dropped the documents of a failed commit, so the caller
    /// should treat those writes as not done (not acknowledge their events, and re-deliver
    /// them; `upsert` is idempotent by id).
    pub fn commit(&self) -> Result<(), SearchError> {
        let (writer, write_seq, commits, reader) =
            (self.writer()?.clone(), self.write_seq.clone(), self.commits.clone(), self.reader.clone());
        let job = move || commit_on(&writer, &write_seq, &commits, &reader);
        match &self.committer {
            Some(c) => c.run(job).unwrap_or_else(|| {
                Err(SearchError::Index {
                    op: "commit",
                    source: TantivyError::SystemError("the search index's commit thread is gone".into()),
                })
            }),
            None => job(),
        }
    }

    /// Number of commits this `SearchIndex` has performed (rebuilds included), as opposed to
    /// `commit` calls: the gap is what group commit saved. Meant for a metrics counter.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Searches `body` and `author` for `q`, returning page `page` (1-based) of `per_page` hits
    /// (at most [`MAX_PER_PAGE`]), best first.
    ///
    /// `q` uses tantivy's query syntax (`radio AND telescope`, `"phrase"`, `author:reber`,
    /// `-excluded`), parsed leniently: malformed syntax such as `"unbalanced` or `AND OR (` is
    /// repaired or dropped rather than refused, because it comes from a search box. Terms are
    /// combined with AND, like web search.
    ///
    /// # Errors
    /// [`SearchError::BadQuery`] for an empty or whitespace-only query, one longer than
    /// [`MAX_QUERY_BYTES`], `page == 0`, `per_page == 0`, or a page so far out that its offset
    /// overflows; [`SearchError::Index`] if tantivy fails reading the index.
    pub fn search(&self, q: &str, page: usize, per_page: usize) -> Result<SearchPage, SearchError> {
        let text = q.trim();
        if text.is_empty() {
            return Err(SearchError::bad_query(q, "the query is empty"));
        }
        if q.len() > MAX_QUERY_BYTES {
            return Err(SearchError::bad_query(q, format!("the query is longer than {MAX_QUERY_BYTES} bytes")));
        }
        if page == 0 {
            return Err(SearchError::bad_query(q, "page numbers start at 1"));
        }
        if per_page == 0 {
            return Err(SearchError::bad_query(q, "per_page must be at least 1"));
        }
        let per_page = per_page.min(MAX_PER_PAGE);
        let offset =
            (page - 1).checked_mul(per_page).ok_or_else(|| SearchError::bad_query(q, "page number out of range"))?;

        let (mut query, errors) = self.parser.parse_query_lenient(text);
        if !errors.is_empty() {
            tracing::debug!(query = text, ?errors, "search query repaired leniently");
        }

        // One searcher for both passes, so `total` and `hits` describe the same snapshot.
        let searcher = self.reader.searcher();
        let total = match searcher.search(&query, &Count) {
            Ok(total) => total,
            // Some syntax parses but cannot run on this schema (`body:*` wants a fast field, a
            // range on a text field, ...). That is the user's syntax, not a broken index: search
            // the plain words instead, as a search box would.
            Err(e) if is_query_error(&e) => {
                tracing::debug!(query = text, error = %e, "query cannot run; searching its words");
                let words = plain_words(text);
                if words.is_empty() {
                    return Ok(SearchPage { total: 0, page, per_page, hits: Vec::new() });
                }
                query = self.parser.parse_query_lenient(&words).0;
                searcher.search(&query, &Count).map_err(SearchError::index("search"))?
            }
            Err(e) => return Err(SearchError::index("search")(e)),
        };
        let mut hits = Vec::new();
        // Skipping the top-docs pass past the end is not only a shortcut: TopDocs sizes its heap
        // from offset + limit, so a huge page number must never reach it.
        if offset < total {
            let top = searcher
                .search(&query, &TopDocs::with_limit(per_page).and_offset(offset).order_by_score())
                .map_err(SearchError::index("search"))?;
            let mut snippets = SnippetGenerator::create(&searcher, &*query, self.fields.body)
                .map_err(SearchError::index("snippet"))?;
            snippets.set_max_num_chars(snippet::MAX_SNIPPET_CHARS);
            hits.reserve(top.len());
            for (score, address) in top {
                let doc: TantivyDocument = searcher.doc(address).map_err(SearchError::index("fetch document"))?;
                let body = self.text(&doc, self.fields.body);
                let snippet = snippet::render(&snippets.snippet(body), body);
                hits.push(Hit {
                    id: self.text(&doc, self.fields.id).to_owned(),
                    post_id: self.text(&doc, self.fields.post_id).to_owned(),
                    author: self.text(&doc, self.fields.author).to_owned(),
                    created_at_ms: doc
                        .get_first(self.fields.created_at_ms)
                        .and_then(|v| v.as_i64())
                        .unwrap_or_default(),
                    score,
                    snippet,
                });
            }
        }
        Ok(SearchPage { total, page, per_page, hits })
    }

    /// Number of searchable (committed, not deleted) comments.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for a count that reads the index.
    pub fn count(&self) -> Result<u64, SearchError> {
        Ok(self.reader.searcher().num_docs())
    }

    /// Replaces the whole index with `docs`, in one commit, and returns how many were indexed.
    ///
    /// `progress` gets the running count every 1000 documents and once at the end. Searches
    /// keep seeing the old contents until the final commit, then see only the new ones. The
    /// writer is held throughout, so concurrent `upsert`/`delete`/`commit` wait for the
    /// rebuild; writes pending from before it are discarded with the old contents. If indexing
    /// or the commit fails, the index is rolled back to its state before the rebuild.
    ///
    /// # Errors
    /// [`SearchError::InvalidDocument`] for a document with an empty id, [`SearchError::Index`]
    /// for tantivy failures; in both cases nothing changed.
    pub fn rebuild(
        &self,
        docs: impl Iterator<Item = CommentDoc>,
        progress: impl FnMut(u64),
    ) -> Result<u64, SearchError> {
        self.rebuild_with(|| Ok(docs), progress)
    }

    /// As [`rebuild`](Self::rebuild), with the documents read by `load` once the writer is
    /// held. Reading the source of truth there is what makes
    /// a rebuild safe beside a live indexer: a write made before the rebuild took the writer
    /// (committed or dropped) read a state at least as old as what `load` reads, and a write
    /// made after it waits and lands on top of the rebuilt index. Documents read earlier would
    /// lose whatever changed between that read and the rebuild.
    ///
    /// # Errors
    /// As [`rebuild`](Self::rebuild), and [`SearchError::Source`] when `load` fails.
    pub fn rebuild_with<I: IntoIterator<Item = CommentDoc>>(
        &self,
        load: impl FnOnce() -> Result<I, String>,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, SearchError> {
        let mut st = self.writer()?.lock();
        // A source that fails leaves everything as it was, pending writes included.
        let docs = load().map_err(|reason| SearchError::Source { reason })?;
        // Drop writes pending from before the rebuild: `delete_all_documents` only removes
        // segments already flushed, and documents still in the indexing queue would otherwise
        // land in the rebuilt index. They were made before `load` read the source, so what
        // they wrote is in `docs` (or newer there).
        st.writer.rollback().map_err(SearchError::index("rebuild: drop pending writes"))?;
        st.committed_seq = self.write_seq.load(Ordering::Acquire);
        let result = (|| {
            st.writer.delete_all_documents().map_err(SearchError::index("rebuild: clear"))?;
            let mut n = 0u64;
            for doc in docs {
                check_id(&doc.id)?;
                // No delete_term here: the index was just cleared, and `docs` is assumed to have
                // unique ids (a duplicate would be indexed twice).
                st.writer.add_document(self.to_document(&doc)).map_err(SearchError::index("rebuild: add"))?;
                n += 1;
                if n.is_multiple_of(PROGRESS_EVERY) {
                    progress(n);
                }
            }
            st.writer.commit().map_err(SearchError::index("rebuild: commit"))?;
            self.commits.fetch_add(1, Ordering::Relaxed);
            Ok(n)
        })();
        match result {
            Ok(n) => {
                progress(n);
                st.reader_stale = true;
                self.reader.reload().map_err(SearchError::index("reload"))?;
                st.reader_stale = false;
                self.rebuild_needed.store(false, Ordering::Release);
                tracing::info!(dir = %self.dir.display(), docs = n, "search index rebuilt");
                Ok(n)
            }
            Err(e) => {
                if let Err(rollback) = st.writer.rollback() {
                    tracing::error!(dir = %self.dir.display(), error = %rollback, "rebuild rollback failed");
                }
                Err(e)
            }
        }
    }

    fn to_document(&self, doc: &CommentDoc) -> TantivyDocument {
        let f = &self.fields;
        let mut d = TantivyDocument::default();
        d.add_text(f.id, &doc.id);
        d.add_text(f.post_id, &doc.post_id);
        d.add_text(f.author, &doc.author);
        d.add_text(f.body, &doc.body);
        d.add_i64(f.created_at_ms, doc.created_at_ms);
        d
    }

    fn id_term(&self, id: &str) -> Term {
        Term::from_field_text(self.fields.id, id)
    }

    /// The first text value of `field`, or "" (every field is always written, so "" means an
    /// index written by something else; a hit with blanks beats failing the whole page).
    fn text<'a>(&self, doc: &'a TantivyDocument, field: tantivy::schema::Field) -> &'a str {
        doc.get_first(field).and_then(|v| v.as_str()).unwrap_or("")
    }
}

/// The body of [`SearchIndex::commit`], run on its [`Committer`].
fn commit_on(
    writer: &Mutex<WriterState>,
    write_seq: &AtomicU64,
    commits: &AtomicU64,
    reader: &IndexReader,
) -> Result<(), SearchError> {
    // Every write that returned before this call has bumped `write_seq` already.
    let target = write_seq.load(Ordering::Acquire);
    let mut st = writer.lock();
    if st.committed_seq < target {
        // Writes need the lock, so this is exact: the commit covers everything up to `now`,
        // including writes queued after `target` (their own commits will then be no-ops).
        let now = write_seq.load(Ordering::Acquire);
        st.writer.commit().map_err(SearchError::index("commit"))?;
        st.committed_seq = now;
        st.reader_stale = true;
    }
    if st.reader_stale {
        // Still under the writer lock: a caller that finds its writes committed must also find
        // the reader already showing them.
        reader.reload().map_err(SearchError::index("reload"))?;
        st.reader_stale = false;
        // Counted once searchable, so that a reader who sees the count change and searches
        // finds what the commit carried.
        commits.fetch_add(1, Ordering::Relaxed);
    }
    MutexGuard::unlock_fair(st);
    Ok(())
}

/// The thread that runs a writer's commits.
///
/// tantivy re-creates its indexing thread at every commit, from the committing thread, and a
/// new thread inherits its creator's CPU priority (nice value). The app calls `commit` from
/// worker threads it runs below the API's priority; indexing there was starved by the API's
/// threads on a busy machine (commits of 30 comments taking 120–210 ms, where at normal
/// priority they never passed 20 ms). A process without `CAP_SYS_NICE` cannot raise a
/// thread's priority again, so commits run here instead, on a thread started by `open` and so
/// at the priority of the thread that opened the index.
struct Committer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Job = Box<dyn FnOnce() + Send>;

impl Committer {
    fn start() -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new().name("search-commit".into()).spawn(move || {
            for job in rx {
                job();
            }
        })?;
        Ok(Committer { jobs: Some(jobs), thread: Some(thread) })
    }

    /// Runs `f` on the thread and returns what it returned; `None` if the thread is gone (a
    /// job panicked).
    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs.as_ref()?.send(Box::new(move || drop(tx.send(f())))).ok()?;
        rx.recv().ok()
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SearchIndex {
    /// Closes the writer cleanly: waits for running merges, then makes every file durable and
    /// removes the unsynced marker (see [`crate::durability`]).
    fn drop(&mut self) {
        // The commit thread holds clones of the writer while it runs a job: stop it first.
        drop(self.committer.take());
        let (Some(writer), Some(deferred)) = (self.writer.take(), self.deferred.take()) else {
            return;
        };
        let Ok(writer) = Arc::try_unwrap(writer) else {
            tracing::error!(dir = %self.dir.display(), "search index writer still shared at close; left unsynced");
            return;
        };
        if let Err(e) = writer.into_inner().writer.wait_merging_threads() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "search index merges failed at close");
        }
        if let Err(e) = deferred.sync_all() {
            tracing::error!(dir = %self.dir.display(), error = %e, "search index could not be synced at close; it stays marked unsynced");
        }
    }
}

/// Errors that a query causes by asking for something this schema cannot do, as opposed to a
/// failing index.
fn is_query_error(e: &TantivyError) -> bool {
    matches!(e, TantivyError::FieldNotFound(_) | TantivyError::SchemaError(_) | TantivyError::InvalidArgument(_))
}

/// `text` with every character that could be query syntax replaced by a space.
fn plain_words(text: &str) -> String {
    let words: String = text.chars().map(|c| if c.is_alphanumeric() { c } else { ' ' }).collect();
    words.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Ids are the delete key; an empty one would be a bug upstream, caught here before it can
/// delete or shadow other documents.
fn check_id(id: &str) -> Result<(), SearchError> {
    if id.is_empty() {
        return Err(SearchError::InvalidDocument { reason: "comment id is empty".to_owned() });
    }
    Ok(())
}

/// Creates `dir` (and its parents) if missing.
fn create_dir(dir: &Path) -> Result<(), SearchError> {
    std::fs::create_dir_all(dir).map_err(|source| SearchError::Io {
        op: "create directory",
        dir: dir.to_owned(),
        source,
    })
}

/// A failure to open `dir` as a tantivy directory.
fn open_dir_err(dir: &Path) -> impl FnOnce(tantivy::directory::error::OpenDirectoryError) -> SearchError + '_ {
    move |e| SearchError::Open { dir: dir.to_owned(), source: e.into() }
}

/// Opens the index in `directory` (which is `dir`) if there is one (checking its schema), or
/// creates it.
fn open_or_create(dir: &Path, directory: impl Directory, schema: Schema) -> Result<Index, SearchError> {
    let open_err = |source: TantivyError| SearchError::Open { dir: dir.to_owned(), source };
    let exists = Index::exists(&directory).map_err(|e| open_err(e.into()))?;
    if exists {
        let index = Index::open(directory).map_err(open_err)?;
        // Exact comparison: field names, types, tokenizers and options must all match, since a
        // different analyser on old segments would silently change what matches.
        if index.schema() != schema {
            return Err(SearchError::SchemaMismatch { dir: dir.to_owned() });
        }
        Ok(index)
    } else {
        Index::create(directory, schema, IndexSettings::default()).map_err(open_err)
    }
}

fn query_parser(index: &Index, fields: &Fields) -> QueryParser {
    let mut parser = QueryParser::for_index(index, vec![fields.body, fields.author]);
    // "radio telescope" should mean both words, as in every web search box; OR-by-default ranks
    // well but makes `total` meaninglessly large.
    parser.set_conjunction_by_default();
    parser
}
