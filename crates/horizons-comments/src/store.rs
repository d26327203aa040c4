//! The store: one sqlx pool over SQLite (the default, a file under the data dir) or
//! PostgreSQL (when the URL says `postgres://`), with the schema migrated at start-up.
//!
//! Queries are written once for both engines through sqlx's `Any` driver: `$N` placeholders
//! (SQLite accepts them too), TEXT ids, BIGINT integers, no engine-specific types. Migrations
//! are embedded SQL files applied in order inside a transaction each and recorded in
//! `horizons_migrations`; a database with a migration this build does not know is refused
//! (an older binary must not write to a newer schema).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Executor, Row, Transaction};

use crate::CommentsError;

/// The migrations, in order. Never edit one that has shipped: add the next.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "portal", include_str!("../migrations/0001_portal.sql")),
    (2, "jobs", include_str!("../migrations/0002_jobs.sql")),
    (3, "job heartbeats", include_str!("../migrations/0003_job_heartbeats.sql")),
    (4, "inbox pruning", include_str!("../migrations/0004_inbox_pruning.sql")),
    (5, "products", include_str!("../migrations/0005_products.sql")),
    (6, "products delivered", include_str!("../migrations/0006_products_delivered.sql")),
];

/// Set on every SQLite connection: the pool's and [`crate::sql`]'s own.
pub(crate) const SQLITE_PRAGMAS: &str =
    "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL";

/// Also on every connection to a SQLite file: the store's checkpointer thread checkpoints the
/// WAL, not the commit that happens to cross its size (see `sql::start_checkpointer`).
pub(crate) const SQLITE_FILE_PRAGMAS: &str = "PRAGMA wal_autocheckpoint = 0";

/// Which engine a [`Store`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// SQLite, one file.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The database: a pool plus which engine it is.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    /// SQLite has one writer; queueing writers here, in order, instead of letting them spin
    /// in SQLite's busy handler (which sleeps up to 100 ms per try) keeps write latency flat.
    gate: Option<Arc<tokio::sync::Mutex<()>>>,
    /// On a SQLite file: our own connections to it ([`crate::sql`]).
    direct: Option<Arc<crate::sql::Direct>>,
}

/// A write transaction: the driver's transaction plus, on SQLite, this process's turn to
/// write. Derefs to the connection, so `&mut *tx` is an executor.
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteTx")
    }
}

impl std::ops::Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl WriteTx {
    /// Commits (and gives the turn to the next writer).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

/// For tests: the URL of a fresh database of its own (`<prefix>_<random>`) on the PostgreSQL
/// server of `HORIZONS_DATABASE_URL` (default: the one `scripts/services` starts). Panics naming
/// the URL if the server is not there: a missing service fails a test, it never skips it.
#[doc(hidden)]
pub async fn fresh_postgres_url_for_tests(prefix: &str) -> String {
    let base = std::env::var("HORIZONS_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://horizons:horizons@127.0.0.1:5432/horizons".into());
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&base).await.unwrap_or_else(|e| {
        panic!("PostgreSQL at {} (start it with scripts/services up postgres): {e}", redact_url(&base))
    });
    let db = format!("{prefix}_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {db}").as_str())
        .await
        .expect("creating a test database");
    format!("{}/{db}", &base[..base.rfind('/').expect("a database URL with a path")])
}

/// For this crate's tests: a store on a SQLite file (`t.db`) in a fresh temporary directory,
/// which lives as long as the returned guard.
#[cfg(test)]
pub(crate) async fn sqlite_for_tests() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
        .await
        .expect("opening the test database");
    (dir, store)
}

/// For tests: a store on [`fresh_postgres_url_for_tests`].
#[doc(hidden)]
pub async fn fresh_postgres_for_tests(prefix: &str) -> Store {
    Store::connect(&fresh_postgres_url_for_tests(prefix).await).await.expect("connecting to the test database")
}

/// Hides a URL's password for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`) and migrates the schema. A SQLite
    /// file is created if missing, in WAL mode so readers never block the writer.
    pub async fn connect(url: &str) -> Result<Self, CommentsError> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Engine::Postgres
        } else {
            return Err(CommentsError::Config {
                key: "database_url",
                message: format!("{shown}: expected sqlite://PATH or postgres://…"),
            });
        };
        let url = match engine {
            Engine::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_string(),
        };
        let file = if engine == Engine::Sqlite { crate::sql::sqlite_file(&url) } else { None };
        let on_file = file.is_some();
        let opts = AnyConnectOptions::from_str(&url)
            .map_err(|e| CommentsError::db(format!("parsing the database URL {shown}"), e))?
            .disable_statement_logging();
        let pool = AnyPoolOptions::new()
            // SQLite has one writer; a small pool keeps lock waits short. Postgres gets more.
            .max_connections(if engine == Engine::Sqlite { 4 } else { 16 })
            .acquire_timeout(Duration::from_secs(10))
            // A SQLite connection is a local file handle: pinging it before each use costs a
            // round trip to its worker thread and finds nothing.
            .test_before_acquire(engine != Engine::Sqlite)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        conn.execute(SQLITE_PRAGMAS).await?;
                    }
                    if on_file {
                        conn.execute(SQLITE_FILE_PRAGMAS).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(|e| CommentsError::db(format!("connecting to the database at {shown}"), e))?;
        if engine == Engine::Sqlite {
            sqlx::raw_sql("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(|e| CommentsError::db("enabling WAL", e))?;
        }
        let gate = (engine == Engine::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        // A file's own connections, and with them its checkpointer, from the start.
        let direct = match (&file, &gate) {
            (Some(path), Some(gate)) => Some(Arc::new(
                crate::sql::Direct::open(path.clone(), gate.clone())
                    .map_err(|e| CommentsError::db(format!("opening {shown}"), e))?,
            )),
            _ => None,
        };
        let store = Self { pool, engine, gate, direct };
        // Processes starting together on a fresh database race to migrate it; the loser's
        // transaction fails (a duplicate type or table, or a busy SQLite writer). Reading what
        // is applied again settles it.
        let mut tries = 0;
        loop {
            match store.migrate().await {
                Ok(()) => break,
                // Only database errors can be a race; a configuration mistake fails at once.
                Err(e @ CommentsError::Db { .. }) if tries < 5 => {
                    tries += 1;
                    tracing::debug!(error = %e, tries, "migration raced another process; trying again");
                    tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(store)
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a write transaction (on SQLite, after this process's earlier writers).
    pub async fn begin(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = self.writer_turn().await;
        let tx = self.pool.begin().await?;
        Ok(WriteTx { tx, _turn: turn })
    }

    /// On SQLite, this process's turn to write (held until dropped).
    pub(crate) async fn writer_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.gate {
            Some(g) => Some(g.clone().lock_owned().await),
            None => None,
        }
    }

    /// Our own connections to the SQLite file, if this store is on one.
    pub(crate) fn direct(&self) -> Option<&crate::sql::Direct> {
        self.direct.as_deref()
    }

    /// Which engine this is.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    async fn migrate(&self) -> Result<(), CommentsError> {
        let db = |what: &str| {
            let what = what.to_string();
            move |e| CommentsError::db(what, e)
        };
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS horizons_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await
        .map_err(db("creating the migrations table"))?;
        let applied: Vec<i64> = sqlx::query("SELECT version FROM horizons_migrations ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading applied migrations"))?
            .iter()
            .map(|r| r.get::<i64, _>(0))
            .collect();
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if let Some(newer) = applied.iter().find(|v| **v > known) {
            return Err(CommentsError::Config {
                key: "database_url",
                message: format!("the database has schema migration {newer}, newer than this build knows ({known})"),
            });
        }
        for (version, name, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            let mut tx = self.pool.begin().await.map_err(db("starting a migration"))?;
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(db(&format!("applying migration {version} ({name})")))?;
            sqlx::query("INSERT INTO horizons_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                .bind(*version)
                .bind(*name)
                .bind(crate::now_ms())
                .execute(&mut *tx)
                .await
                .map_err(db("recording a migration"))?;
            tx.commit().await.map_err(db(&format!("committing migration {version}")))?;
            tracing::info!(version, name, "database migrated");
        }
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_passwords_only() {
        let check = |url: &str, want: &str| assert_eq!(redact_url(url), want);
        check("postgres://u:secret@h:5432/db", "postgres://u:***@h:5432/db");
        check("postgres://u@h/db", "postgres://u@h/db");
        check("sqlite:///tmp/x.db", "sqlite:///tmp/x.db");
    }
}
