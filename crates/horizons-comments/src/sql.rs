//! Batches of statements in one call: [`Store::write`] runs them in one transaction,
//! [`Store::read`] reads; on SQLite through connections of our own, one hand-off per batch.
//!
//! sqlx's SQLite driver runs each connection on a thread of its own and passes every command
//! (begin, each statement, commit) and every returned row across threads, a wake-up each. On
//! the hot paths — the outbox relay, the jobs loader and recorder, hundreds of batches a second
//! — those hand-offs cost more CPU than SQLite's own work. Here a batch crosses once: on a
//! SQLite file it goes to a thread that owns a `rusqlite` connection to the same file (one
//! thread for writes, which also takes the store's writer turn, one for reads); on PostgreSQL,
//! or an in-memory SQLite database that a second connection cannot see, it runs through the
//! pool like any other query. The statements are the same text on both (`$N` placeholders,
//! which SQLite numbers in order of first use) and values are BIGINT or TEXT, as everywhere in
//! the store.

use std::path::PathBuf;
use std::sync::Arc;

use sqlx::{Row as _, ValueRef as _};
use tokio::sync::oneshot;

use crate::store::Store;

/// A parameter or a column value: the store's two column types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// BIGINT (and booleans, as 0 or 1); `None` is NULL.
    Int(Option<i64>),
    /// TEXT; `None` is NULL.
    Text(Option<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_string()))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}
impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        Value::Text(v.map(str::to_string))
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::Text(v)
    }
}

/// A statement and its parameters (`$1`, `$2`, … in order).
#[derive(Clone, Debug)]
pub struct Stmt {
    sql: String,
    params: Vec<Value>,
}

impl Stmt {
    /// A statement without parameters yet.
    pub fn new(sql: impl Into<String>) -> Self {
        Self { sql: sql.into(), params: Vec::new() }
    }

    /// Binds the next parameter.
    pub fn bind(mut self, v: impl Into<Value>) -> Self {
        self.params.push(v.into());
        self
    }
}

/// The rows one statement returned.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    columns: Arc<[String]>,
    rows: Vec<Vec<Value>>,
}

impl Rows {
    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The first row.
    pub fn first(&self) -> Option<Row<'_>> {
        self.iter().next()
    }

    /// The rows, in order.
    pub fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(|values| Row { columns: &self.columns, values })
    }
}

/// One row of [`Rows`].
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    columns: &'a [String],
    values: &'a [Value],
}

/// A column by position or name.
pub trait Column {
    /// Its position among `columns`.
    fn position(&self, columns: &[String]) -> usize;
}

impl Column for usize {
    fn position(&self, columns: &[String]) -> usize {
        assert!(*self < columns.len(), "column {self} of {}", columns.len());
        *self
    }
}

impl Column for &str {
    fn position(&self, columns: &[String]) -> usize {
        columns.iter().position(|c| c == self).unwrap_or_else(|| panic!("no column {self:?} in {columns:?}"))
    }
}

/// A Rust type a [`Value`] converts to.
pub trait FromValue: Sized {
    /// The conversion; `None` if the value is of another type (or NULL where none is allowed).
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(Some(i)) => Some(*i),
            _ => None,
        }
    }
}
impl FromValue for Option<i64> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            Value::Text(None) => Some(None),
            Value::Text(Some(_)) => None,
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(Some(s)) => Some(s.clone()),
            _ => None,
        }
    }
}
impl FromValue for Option<String> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            // SQLite reports NULL without a type.
            Value::Int(None) => Some(None),
            Value::Int(Some(_)) => None,
        }
    }
}

impl Row<'_> {
    /// The value of `column` as `T`; panics if the column is missing or of another type (a
    /// query and its reader disagreeing is a bug, as with sqlx's `Row::get`).
    pub fn get<T: FromValue>(&self, column: impl Column) -> T {
        let i = column.position(self.columns);
        T::from_value(&self.values[i]).unwrap_or_else(|| {
            panic!("column {:?} holds {:?}, not a {}", self.columns[i], self.values[i], std::any::type_name::<T>())
        })
    }
}

/// A SQLite error from our own connections, carried as a sqlx database error so that callers
/// handle every store error alike.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct SqliteError {
    message: String,
    /// SQLite's extended result code, if the error came from SQLite.
    code: Option<std::ffi::c_int>,
}

impl SqliteError {
    fn from_rusqlite(e: rusqlite::Error) -> sqlx::Error {
        let code = e.sqlite_error().map(|f| f.extended_code);
        sqlx::Error::Database(Box::new(SqliteError { message: e.to_string(), code }))
    }
}

impl sqlx::error::DatabaseError for SqliteError {
    fn message(&self) -> &str {
        &self.message
    }
    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }
    fn kind(&self) -> sqlx::error::ErrorKind {
        use rusqlite::ffi;
        use sqlx::error::ErrorKind;
        match self.code {
            Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => ErrorKind::UniqueViolation,
            Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => ErrorKind::ForeignKeyViolation,
            Some(ffi::SQLITE_CONSTRAINT_NOTNULL) => ErrorKind::NotNullViolation,
            Some(ffi::SQLITE_CONSTRAINT_CHECK) => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// A batch for a connection thread, and where its answer goes.
struct Work {
    stmts: Vec<Stmt>,
    reply: oneshot::Sender<Result<Vec<Rows>, sqlx::Error>>,
}

impl Work {
    fn answer(self, rows: Result<Vec<Rows>, sqlx::Error>) {
        let _ = self.reply.send(rows);
    }
}

/// Answers every batch of `group` with the same failure.
fn fail_all(group: Vec<Work>, e: rusqlite::Error) {
    let e = SqliteError::from_rusqlite(e).to_string();
    for w in group {
        w.answer(Err(sqlx::Error::Protocol(e.clone())));
    }
}

/// A thread that owns one SQLite connection and runs the batches sent to it in order.
#[derive(Debug)]
struct Connection {
    work: std::sync::mpsc::Sender<Work>,
}

/// Write batches one group commit takes at most.
const GROUP_MAX: usize = 128;

impl Connection {
    /// Starts a thread (named `name`) for a connection to `path`, opened there before its first
    /// batch (a failed open fails that batch, and the next batch tries again); the thread ends
    /// when this is dropped.
    ///
    /// A reader (`gate` is `None`) runs each batch in a read transaction of its own. The writer
    /// takes the `gate` (this process's writer turn) for each transaction, and every batch that
    /// queued up meanwhile joins that transaction (group commit): one `BEGIN IMMEDIATE …
    /// COMMIT` and one WAL append for all of them, each batch in a savepoint of its own, so one
    /// batch failing rolls back only itself.
    fn start(path: PathBuf, name: &str, gate: Option<Arc<tokio::sync::Mutex<()>>>) -> Result<Self, sqlx::Error> {
        let (work, queue) = std::sync::mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut conn = None;
                let mut wal = WalIndex::new(&path);
                while let Ok(first) = queue.recv() {
                    let Some(gate) = &gate else {
                        let rows = open_once(&mut conn, &path).and_then(|c| run_sqlite(c, &first.stmts, false));
                        first.answer(rows.map_err(SqliteError::from_rusqlite));
                        continue;
                    };
                    let _turn = gate.blocking_lock();
                    let mut group = vec![first];
                    group.extend(queue.try_iter().take(GROUP_MAX - 1));
                    match open_once(&mut conn, &path) {
                        Ok(c) => {
                            run_group(c, group);
                            hold_the_wal(c, &mut wal);
                        }
                        Err(e) => fail_all(group, e),
                    }
                }
            })
            .map_err(sqlx::Error::Io)?;
        Ok(Self { work })
    }

    /// Runs `stmts` on the thread: in a transaction of the reader, or in the writer's group.
    async fn run(&self, stmts: Vec<Stmt>) -> Result<Vec<Rows>, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.work.send(Work { stmts, reply }).map_err(|_| sqlx::Error::WorkerCrashed)?;
        answer.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }
}

/// Runs write batches in one transaction, each in a savepoint, and answers each after the
/// commit: its rows, or the error that rolled it back. If SQLite gives up the whole
/// transaction (an I/O error, a full disk), every batch of the group gets that error.
fn run_group(conn: &mut rusqlite::Connection, group: Vec<Work>) {
    if group.len() == 1 {
        // Alone: no savepoint needed.
        let w = group.into_iter().next().expect("one");
        let rows = run_sqlite(conn, &w.stmts, true).map_err(SqliteError::from_rusqlite);
        return w.answer(rows);
    }
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        return fail_all(group, e);
    }
    let mut answers: Vec<Option<Result<Vec<Rows>, rusqlite::Error>>> = Vec::with_capacity(group.len());
    let mut lost: Option<String> = None;
    for w in &group {
        if lost.is_some() {
            answers.push(None);
            continue;
        }
        let done = conn.execute_batch("SAVEPOINT hz_batch").and_then(|()| run_stmts(conn, &w.stmts));
        match done {
            Ok(rows) => match conn.execute_batch("RELEASE hz_batch") {
                Ok(()) => answers.push(Some(Ok(rows))),
                Err(e) => {
                    lost = Some(SqliteError::from_rusqlite(e).to_string());
                    answers.push(None);
                }
            },
            Err(e) if conn.is_autocommit() => {
                // SQLite rolled the whole transaction back: the batches before this one too.
                lost = Some(SqliteError::from_rusqlite(e).to_string());
                answers.push(None);
            }
            Err(e) => match conn.execute_batch("ROLLBACK TO hz_batch; RELEASE hz_batch") {
                Ok(()) => answers.push(Some(Err(e))),
                Err(r) => {
                    lost = Some(SqliteError::from_rusqlite(r).to_string());
                    answers.push(None);
                }
            },
        }
    }
    if lost.is_none() {
        if let Err(e) = conn.execute_batch("COMMIT") {
            lost = Some(SqliteError::from_rusqlite(e).to_string());
        }
    }
    if lost.is_some() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for (w, a) in group.into_iter().zip(answers) {
        let answer = match (&lost, a) {
            (_, Some(Err(e))) => Err(SqliteError::from_rusqlite(e)),
            (Some(l), _) => Err(sqlx::Error::Protocol(format!("the group transaction failed: {l}"))),
            (None, Some(Ok(rows))) => Ok(rows),
            (None, None) => unreachable!("every batch has an answer when nothing was lost"),
        };
        w.answer(answer);
    }
}

/// The connection in `slot`, opened on `path` first if it is not yet.
fn open_once<'a>(
    slot: &'a mut Option<rusqlite::Connection>,
    path: &std::path::Path,
) -> rusqlite::Result<&'a mut rusqlite::Connection> {
    if slot.is_none() {
        let c = rusqlite::Connection::open(path)?;
        // As the pool's connections; WAL is the file's own mode.
        c.execute_batch(crate::store::SQLITE_PRAGMAS)?;
        c.execute_batch(crate::store::SQLITE_FILE_PRAGMAS)?;
        c.set_prepared_statement_cache_capacity(256);
        *slot = Some(c);
    }
    Ok(slot.as_mut().expect("opened above"))
}

fn run_sqlite(conn: &mut rusqlite::Connection, stmts: &[Stmt], write: bool) -> rusqlite::Result<Vec<Rows>> {
    // A write takes the file's write lock at once (no deferred upgrade to fail halfway).
    let behavior =
        if write { rusqlite::TransactionBehavior::Immediate } else { rusqlite::TransactionBehavior::Deferred };
    let tx = conn.transaction_with_behavior(behavior)?;
    let out = run_stmts(&tx, stmts)?;
    tx.commit()?;
    Ok(out)
}

/// Runs `stmts` in order on `conn` (inside the caller's transaction) and collects their rows.
fn run_stmts(conn: &rusqlite::Connection, stmts: &[Stmt]) -> rusqlite::Result<Vec<Rows>> {
    let mut out = Vec::with_capacity(stmts.len());
    for s in stmts {
        let mut st = conn.prepare_cached(&s.sql)?;
        for (i, p) in s.params.iter().enumerate() {
            match p {
                Value::Int(v) => st.raw_bind_parameter(i + 1, v)?,
                Value::Text(v) => st.raw_bind_parameter(i + 1, v)?,
            }
        }
        let columns: Arc<[String]> = st.column_names().into_iter().map(str::to_string).collect();
        let n = columns.len();
        let mut rows = Vec::new();
        let mut it = st.raw_query();
        while let Some(r) = it.next()? {
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                values.push(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => Value::Int(None),
                    rusqlite::types::ValueRef::Integer(v) => Value::Int(Some(v)),
                    rusqlite::types::ValueRef::Text(t) => Value::Text(Some(String::from_utf8_lossy(t).into_owned())),
                    other => return Err(rusqlite::Error::InvalidColumnType(i, columns[i].clone(), other.data_type())),
                });
            }
            rows.push(values);
        }
        out.push(Rows { columns, rows });
    }
    Ok(out)
}

/// The store's own SQLite connections and checkpointer, opened with the store.
#[derive(Debug)]
pub(crate) struct Direct {
    writer: Connection,
    reader: Connection,
    /// Dropping it stops the checkpointer.
    _checkpointer: std::sync::mpsc::Sender<()>,
}

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(25);

/// WAL frames (pages) past which the checkpointer lets the WAL start over.
const WAL_RESET_FRAMES: i64 = 8_192;

/// WAL frames past which the writer checkpoints under its own turn, whatever the
/// checkpointer is doing: the WAL's hard limit (64 MiB of 4 KiB pages, plus one group).
const WAL_HARD_FRAMES: u32 = 2 * WAL_RESET_FRAMES as u32;

/// A database's WAL index (its `-shm` file), kept open by the writer thread so that reading
/// the WAL's size after a commit is one read.
struct WalIndex {
    shm: PathBuf,
    file: Option<std::fs::File>,
}

impl WalIndex {
    fn new(db: &std::path::Path) -> WalIndex {
        let mut shm = db.as_os_str().to_owned();
        shm.push("-shm");
        WalIndex { shm: shm.into(), file: None }
    }

    /// Frames in the WAL now: `mxFrame` of the WAL-index header at the start of the `-shm`
    /// file (offset 16, native byte order; <https://www.sqlite.org/walformat.html>). `None`
    /// when there is no such file to read (it is opened again next time).
    fn frames(&mut self) -> Option<u32> {
        use std::os::unix::fs::FileExt;
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.shm).ok();
        }
        let mut header = [0u8; 20];
        if self.file.as_ref()?.read_exact_at(&mut header, 0).is_err() {
            self.file = None;
            return None;
        }
        Some(u32::from_ne_bytes(header[16..20].try_into().expect("four bytes")))
    }
}

/// The writer's backstop for the checkpointer (called after each group commit, with the
/// writer turn held): when the WAL has passed [`WAL_HARD_FRAMES`], checkpoints it here.
/// Nobody writes meanwhile, so the checkpoint copies every frame and the next commit starts
/// the WAL over. The checkpointer, a thread that a loaded machine may leave waiting, keeps it
/// well under this limit; without this step the WAL grew to four times its reset point when
/// CI ran other tests beside a writer (141 MB).
///
/// A checkpoint already running (the checkpointer's, or another process's) makes this one
/// busy at once, so it tries again every millisecond until that one is done, for at most
/// [`BACKSTOP_PATIENCE`].
fn hold_the_wal(conn: &mut rusqlite::Connection, wal: &mut WalIndex) {
    if wal.frames().is_none_or(|f| f <= WAL_HARD_FRAMES) {
        return;
    }
    let since = std::time::Instant::now();
    loop {
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0)) {
            Ok(0) => return,
            Ok(_busy) if since.elapsed() < BACKSTOP_PATIENCE => std::thread::sleep(std::time::Duration::from_millis(1)),
            Ok(_busy) => {
                return tracing::debug!("WAL checkpoint by the writer stayed busy; the next commit tries again")
            }
            Err(e) => {
                return tracing::debug!(error = %e, "WAL checkpoint by the writer failed; the next commit tries again")
            }
        }
    }
}

/// How long the writer's backstop waits for a checkpoint already running.
const BACKSTOP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Checkpoints `path`'s WAL every [`CHECKPOINT_EVERY`] on a connection of its own until `stop`
/// is dropped.
///
/// The store's connections do not checkpoint themselves (`wal_autocheckpoint = 0`): SQLite
/// runs that checkpoint inside the commit that crosses 1 000 WAL pages, and its copying and
/// fsyncs (8–12 ms here) held every writer queued behind that commit. A `PASSIVE` checkpoint
/// from this thread holds nobody, but under steady writes it never catches up with the newest
/// commit, and a WAL starts over only once it is wholly copied back. So when the WAL passes
/// [`WAL_RESET_FRAMES`] the checkpointer takes this process's writer turn for one more
/// `PASSIVE` checkpoint: all but the last few milliseconds of frames are copied already, so
/// writers wait for little more than one fsync, and the next write starts the WAL over.
fn start_checkpointer(
    path: PathBuf,
    gate: Arc<tokio::sync::Mutex<()>>,
) -> Result<std::sync::mpsc::Sender<()>, sqlx::Error> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("hz-sqlite-ckpt".into())
        .spawn(move || {
            let mut conn = None;
            let passive = |c: &mut rusqlite::Connection| -> rusqlite::Result<i64> {
                c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            };
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                let done = open_once(&mut conn, &path).and_then(|c| {
                    if passive(c)? > WAL_RESET_FRAMES {
                        let _turn = gate.blocking_lock();
                        passive(c)?;
                    }
                    Ok(())
                });
                if let Err(e) = done {
                    tracing::debug!(error = %e, "WAL checkpoint failed; next round tries again");
                }
            }
        })
        .map_err(sqlx::Error::Io)?;
    Ok(stop)
}

impl Direct {
    /// Connection threads for `path` (a SQLite file).
    pub(crate) fn open(path: PathBuf, gate: Arc<tokio::sync::Mutex<()>>) -> Result<Self, sqlx::Error> {
        Ok(Self {
            writer: Connection::start(path.clone(), "hz-sqlite-write", Some(gate.clone()))?,
            reader: Connection::start(path.clone(), "hz-sqlite-read", None)?,
            _checkpointer: start_checkpointer(path, gate)?,
        })
    }
}

/// The file behind a SQLite URL, if it is one a second connection can open.
pub(crate) fn sqlite_file(url: &str) -> Option<PathBuf> {
    use std::str::FromStr;
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let path = opts.get_filename();
    let s = path.to_string_lossy();
    (!s.is_empty() && !s.contains(":memory:") && !url.contains("mode=memory")).then(|| path.to_path_buf())
}

fn from_any(rows: Vec<sqlx::any::AnyRow>) -> Result<Rows, sqlx::Error> {
    use sqlx::any::AnyTypeInfoKind as K;
    let Some(first) = rows.first() else { return Ok(Rows::default()) };
    let columns: Arc<[String]> = sqlx::Row::columns(first).iter().map(|c| sqlx::Column::name(c).to_string()).collect();
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            let raw = r.try_get_raw(i)?;
            if raw.is_null() {
                values.push(Value::Int(None));
                continue;
            }
            let kind = raw.type_info().kind();
            values.push(match kind {
                K::Bool => Value::Int(Some(r.try_get::<bool, _>(i)? as i64)),
                K::SmallInt | K::Integer | K::BigInt => Value::Int(Some(r.try_get::<i64, _>(i)?)),
                K::Text => Value::Text(Some(r.try_get::<String, _>(i)?)),
                other => {
                    return Err(sqlx::Error::ColumnDecode {
                        index: columns[i].clone(),
                        source: format!("a {other:?} column; the store uses BIGINT and TEXT").into(),
                    })
                }
            });
        }
        out.push(values);
    }
    Ok(Rows { columns, rows: out })
}

impl Stmt {
    /// Runs this statement inside `tx` (a transaction of the pool, which the caller commits).
    pub async fn run_in(&self, tx: &mut crate::store::WriteTx) -> Result<Rows, sqlx::Error> {
        from_any(any_query(self).fetch_all(&mut **tx).await?)
    }
}

fn any_query(s: &Stmt) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    let mut q = sqlx::query(&s.sql);
    for p in &s.params {
        q = match p {
            Value::Int(v) => q.bind(*v),
            Value::Text(v) => q.bind(v.as_deref()),
        };
    }
    q
}

impl Store {
    /// Runs `stmts` in order in one write transaction (after this process's earlier writers);
    /// returns each statement's rows (`RETURNING`).
    pub async fn write(&self, stmts: Vec<Stmt>) -> Result<Vec<Rows>, sqlx::Error> {
        if let Some(d) = self.direct() {
            // The writer thread takes this process's writer turn itself, for a whole group.
            return d.writer.run(stmts).await;
        }
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(stmts.len());
        for s in &stmts {
            out.push(s.run_in(&mut tx).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Runs one reading statement.
    pub async fn read(&self, stmt: Stmt) -> Result<Rows, sqlx::Error> {
        if let Some(d) = self.direct() {
            let mut rows = d.reader.run(vec![stmt]).await?;
            return Ok(rows.pop().unwrap_or_default());
        }
        from_any(any_query(&stmt).fetch_all(self.pool()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(id: &str, key: Option<&str>) -> Stmt {
        Stmt::new(
            "INSERT INTO outbox (id, topic, event_type, msg_key, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind("t")
        .bind("E")
        .bind(key)
        .bind("{}")
        .bind(7)
    }

    async fn roundtrip(store: Store) {
        let out = store
            .write(vec![
                insert("a", None),
                Stmt::new("UPDATE outbox SET created_at = created_at + $1 WHERE id = $2 RETURNING id, created_at, msg_key, sent_at")
                    .bind(1)
                    .bind("a"),
            ])
            .await
            .unwrap();
        assert!(out[0].is_empty());
        let r = out[1].iter().next().unwrap();
        assert_eq!(
            (
                r.get::<String>("id"),
                r.get::<i64>(1),
                r.get::<Option<String>>("msg_key"),
                r.get::<Option<i64>>("sent_at")
            ),
            ("a".into(), 8, None, None)
        );
        let rows = store.read(Stmt::new("SELECT topic, created_at FROM outbox WHERE id = $1").bind("a")).await.unwrap();
        assert_eq!(rows.iter().map(|r| (r.get::<String>(0), r.get::<i64>(1))).collect::<Vec<_>>(), [("t".into(), 8)]);
        // A failing statement rolls the whole batch back, and the error says why.
        let e = store
            .write(vec![
                Stmt::new("UPDATE outbox SET created_at = 100 WHERE id = $1").bind("a"),
                insert("a", Some("k")),
            ])
            .await
            .unwrap_err();
        assert!(matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation()), "{e}");
        let rows = store.read(Stmt::new("SELECT created_at FROM outbox WHERE id = $1").bind("a")).await.unwrap();
        assert_eq!(rows.iter().next().unwrap().get::<i64>(0), 8);
    }

    #[tokio::test]
    async fn a_batch_on_a_sqlite_file() {
        let (_dir, store) = crate::store::sqlite_for_tests().await;
        assert!(store.direct().is_some(), "a file gets connections of its own");
        roundtrip(store).await;
    }

    /// Many writers at once on a SQLite file: their batches share group commits, one failing
    /// batch rolls back only itself, and a pool transaction (which takes the writer turn too)
    /// interleaves with them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_batches_commit_in_groups_and_fail_alone() {
        let (_dir, store) = crate::store::sqlite_for_tests().await;
        store.write(vec![insert("taken", None)]).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..400 {
            let s = store.clone();
            tasks.spawn(async move {
                let batch = if i % 50 == 7 {
                    // Its first insert is fine on its own, the second collides: neither stays.
                    vec![insert(&format!("doomed-{i}"), None), insert("taken", None)]
                } else {
                    vec![insert(&format!("m-{i}"), None), insert(&format!("n-{i}"), Some("k"))]
                };
                (i, s.write(batch).await)
            });
            if i % 100 == 0 {
                let s = store.clone();
                tasks.spawn(async move {
                    let mut tx = s.begin().await.unwrap();
                    insert(&format!("tx-{i}"), None).run_in(&mut tx).await.unwrap();
                    tx.commit().await.unwrap();
                    (usize::MAX, Ok(Vec::new()))
                });
            }
        }
        let mut failed = 0;
        while let Some(r) = tasks.join_next().await {
            let (i, result) = r.unwrap();
            match result {
                Ok(_) => assert!(i == usize::MAX || i % 50 != 7, "batch {i} should have failed"),
                Err(e) => {
                    assert_eq!(i % 50, 7, "batch {i} failed: {e}");
                    assert!(matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation()), "{e}");
                    failed += 1;
                }
            }
        }
        assert_eq!(failed, 8);
        let count = |sql: &'static str| {
            let store = store.clone();
            async move { store.read(Stmt::new(sql)).await.unwrap().first().unwrap().get::<i64>(0) }
        };
        assert_eq!(count("SELECT COUNT(*) FROM outbox WHERE id LIKE 'doomed-%'").await, 0);
        assert_eq!(count("SELECT COUNT(*) FROM outbox WHERE id LIKE 'm-%' OR id LIKE 'n-%'").await, 2 * 392);
        assert_eq!(count("SELECT COUNT(*) FROM outbox WHERE id LIKE 'tx-%'").await, 4);
    }

    /// The store's connections leave checkpoints to the checkpointer, which lets the WAL start
    /// over once it passes its limit: the WAL file does not grow with what was written.
    /// Without checkpoints it would hold all of it (eight times the reset point here). With
    /// them it stays near the reset point plus what is written while a checkpoint copies,
    /// and never past the writer's hard limit plus one write, however loaded the machine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_does_not_grow_with_what_is_written() {
        let (dir, store) = crate::store::sqlite_for_tests().await;
        let big = "x".repeat(128 * 1024);
        let writes = 8 * WAL_RESET_FRAMES / 32;
        for i in 0..writes {
            let mut s = insert(&format!("big-{i}"), None);
            s.params[4] = Value::from(big.as_str());
            store.write(vec![s]).await.unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("t.db-wal")).unwrap().len();
        let written = writes as u64 * 128 * 1024;
        // A frame is a 4 KiB page and its 24-byte header; a write of 128 KiB takes 33 pages.
        let limit = (u64::from(WAL_HARD_FRAMES) + 64) * (4096 + 24);
        assert!(wal <= limit, "WAL file {wal} bytes after writing {} MiB", written >> 20);
        assert!(limit < written / 2);
        let rows = store.read(Stmt::new("SELECT COUNT(*) FROM outbox WHERE id LIKE 'big-%'")).await.unwrap();
        assert_eq!(rows.first().unwrap().get::<i64>(0), writes);
    }

    /// Through the pool, on the PostgreSQL of `scripts/services` (`HORIZONS_DATABASE_URL`).
    #[tokio::test]
    async fn a_batch_on_postgres() {
        roundtrip(crate::store::fresh_postgres_for_tests("hz_sql").await).await;
    }
}
