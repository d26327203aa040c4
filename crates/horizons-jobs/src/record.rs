//! The worker's attempt records, written many to a transaction.
//!
//! Every job a worker runs costs a few writes: claiming it (`running`, a new attempt row) and
//! ending it, or — for a job that ends before it needed claiming (see
//! [`crate::worker::JobWorker::claim_after`]) — one write that records start and end together.
//! On SQLite a transaction's begin and commit cost more than its statements, and writers take
//! turns on the one write lock, so one task per worker collects the writes that the worker's
//! concurrent jobs ask for and applies whatever has queued up (up to [`MAX_BATCH`]): the whole
//! records in one [`Store::write`] batch, the claims, ends and duplicates after them in one
//! transaction. Each caller's reply comes after its commit, so a caller that acknowledges its
//! bus message afterwards still does so only once its record is durable.
//!
//! If a batch fails, every write in it is tried again in a transaction of its own, so one bad
//! write fails alone.

use horizons_comments::sql::Stmt;
use horizons_comments::{Store, WriteTx};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use crate::model::{Job, JobState};
use crate::JobsError;

/// Most writes per transaction.
pub const MAX_BATCH: usize = 256;

/// One write the worker asks for.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    /// Claims a queued or retrying job, or a running one whose heartbeat is older than
    /// `stale`: attempt n+1 starts now.
    Claim { id: String, worker: String, now: i64, stale: i64 },
    /// Ends claimed attempt `attempt`.
    End { id: String, attempt: i64, ending: Ending, now: i64 },
    /// Records attempt `attempts + 1` of a queued or retrying job that was never claimed,
    /// started at `started` and ended now — if the job still has `attempts` attempts and is
    /// still queued or retrying.
    Whole { id: String, worker: String, attempts: i64, started: i64, ending: Ending, now: i64 },
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub(crate) struct Ending {
    /// The job's state afterwards.
    pub state: JobState,
    /// The attempt's outcome.
    pub outcome: &'static str,
    /// The error, if it failed.
    pub error: Option<String>,
}

/// What a write did.
#[derive(Debug)]
pub(crate) enum Written {
    /// `Claim`: `Ok((attempt, attempt_base))`, or `Err(running)` when the job was not claimable
    /// (`true`: running elsewhere with a fresh heartbeat).
    Claimed(Result<(i64, i64), bool>),
    /// `End` done.
    Ended,
    /// `Whole`: whether it was recorded (`false`: the job changed meanwhile).
    Recorded(bool),
}

type Request = (Write, oneshot::Sender<Result<Written, JobsError>>);

/// A request and where its answer goes.
type Asked<Q, A> = (Q, oneshot::Sender<A>);

/// A task started on first use that takes its callers' requests in batches of up to `max` and
/// answers each through its own reply channel; it ends when the last handle is dropped.
struct Batched<Q, A> {
    tx: std::sync::Arc<std::sync::OnceLock<mpsc::UnboundedSender<Asked<Q, A>>>>,
    /// What the task is, for the error when it has stopped.
    what: &'static str,
}

impl<Q, A> Clone for Batched<Q, A> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone(), what: self.what }
    }
}

impl<Q, A> std::fmt::Debug for Batched<Q, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batched").field("what", &self.what).field("started", &self.tx.get().is_some()).finish()
    }
}

impl<Q: Send + 'static, A: Send + 'static> Batched<Q, A> {
    fn new(what: &'static str) -> Self {
        Self { tx: Default::default(), what }
    }

    /// Sends `q` (starting the task with `handle` and `max` if it is not running) and waits for
    /// the answer.
    async fn ask<H, Fut>(&self, q: Q, max: usize, handle: impl FnOnce() -> H) -> Result<A, JobsError>
    where
        H: FnMut(Vec<Asked<Q, A>>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let tx = self.tx.get_or_init(|| {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut handle = handle();
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(max);
                while rx.recv_many(&mut batch, max).await > 0 {
                    handle(std::mem::replace(&mut batch, Vec::with_capacity(max))).await;
                }
            });
            tx
        });
        let (reply, answer) = oneshot::channel();
        tx.send((q, reply)).map_err(|_| JobsError::Closed(self.what))?;
        answer.await.map_err(|_| JobsError::Closed(self.what))
    }
}

/// A handle on the writer task (cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    store: Store,
    task: Batched<Write, Result<Written, JobsError>>,
}

impl Recorder {
    pub(crate) fn new(store: Store) -> Self {
        Self { store, task: Batched::new("the attempt recorder stopped") }
    }

    /// Applies `w` (in a transaction with others queued at the same time).
    pub(crate) async fn write(&self, w: Write) -> Result<Written, JobsError> {
        let handle = || {
            let store = self.store.clone();
            move |batch| apply(store.clone(), batch)
        };
        self.task.ask(w, MAX_BATCH, handle).await?
    }
}

/// Applies and answers every request in `batch`.
async fn apply(store: Store, mut batch: Vec<Request>) {
    let store = &store;
    if batch.len() > 1 {
        match together(store, &batch).await {
            Ok(results) => {
                for ((_, reply), r) in batch.drain(..).zip(results) {
                    let _ = reply.send(Ok(r));
                }
                return;
            }
            Err(e) => tracing::debug!(error = %e, writes = batch.len(), "batched attempt records failed; one by one"),
        }
    }
    for (w, reply) in batch.drain(..) {
        let r = async {
            let mut tx = store.begin().await.map_err(JobsError::db("recording an attempt"))?;
            let r = one(&mut tx, &w).await.map_err(JobsError::db(w.what()))?;
            tx.commit().await.map_err(JobsError::db(w.what()))?;
            Ok(r)
        }
        .await;
        let _ = reply.send(r);
    }
}

async fn together(store: &Store, batch: &[Request]) -> Result<Vec<Written>, sqlx::Error> {
    let mut out: Vec<Option<Written>> = (0..batch.len()).map(|_| None).collect();
    let (mut wholes, mut ids, mut others) = (Vec::new(), std::collections::HashSet::new(), Vec::new());
    for (i, (w, _)) in batch.iter().enumerate() {
        match w {
            // A second record of the same job (a duplicate delivery) goes after the others.
            Write::Whole { id, .. } if ids.insert(id.as_str()) => wholes.push(i),
            _ => others.push(i),
        }
    }
    // The common case, short jobs recorded whole: two statements per chunk, all in one
    // transaction handed to the store at once.
    if !wholes.is_empty() {
        let stmts = wholes
            .chunks(WHOLES_PER_STATEMENT)
            .flat_map(|chunk| wholes_statements(&chunk.iter().map(|&i| &batch[i].0).collect::<Vec<_>>()))
            .collect();
        let results = store.write(stmts).await?;
        // Each chunk's UPDATE (the second of its two statements) returns the jobs recorded.
        let done: std::collections::HashSet<String> =
            results.iter().skip(1).step_by(2).flat_map(|rows| rows.iter().map(|r| r.get::<String>(0))).collect();
        for &i in &wholes {
            let Write::Whole { id, .. } = &batch[i].0 else { unreachable!("only whole records") };
            out[i] = Some(Written::Recorded(done.contains(id)));
        }
    }
    if !others.is_empty() {
        let mut tx = store.begin().await?;
        for &i in &others {
            out[i] = Some(one(&mut tx, &batch[i].0).await?);
        }
        tx.commit().await?;
    }
    Ok(out.into_iter().map(|w| w.expect("every write answered")).collect())
}

/// Whole records per statement (9 parameters each, well under SQLite's 32 766).
const WHOLES_PER_STATEMENT: usize = 128;

/// The statements that record `ws` (all `Write::Whole`): one INSERT of the attempts of the
/// jobs that are still as their workers read them, then one UPDATE of those jobs that returns
/// their ids. Both see the same rows (the INSERT changes no job), so they agree on which.
fn wholes_statements(ws: &[&Write]) -> [Stmt; 2] {
    let values: Vec<String> = (0..ws.len())
        .map(|i| {
            let p = 9 * i;
            format!(
                "(CAST(${} AS TEXT), CAST(${} AS BIGINT), CAST(${} AS BIGINT), CAST(${} AS TEXT), \
                 CAST(${} AS TEXT), CAST(${} AS BIGINT), CAST(${} AS TEXT), CAST(${} AS BIGINT), CAST(${} AS TEXT))",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7,
                p + 8,
                p + 9
            )
        })
        .collect();
    // VALUES columns are column1… on both engines: id, attempts read, started, new state,
    // error, finished (if final), worker, now, outcome. `state || ''` keeps SQLite from
    // reading every queued job through `jobs_by_state` (its plan without statistics) instead
    // of looking each id up.
    let values = values.join(", ");
    let insert = format!(
        "INSERT INTO job_attempts (job_id, attempt, worker, started_at, finished_at, outcome, error) \
         SELECT jobs.id, jobs.attempts + 1, v.column7, v.column3, v.column8, v.column9, v.column5 \
         FROM (VALUES {values}) AS v JOIN jobs ON jobs.id = v.column1 AND jobs.attempts = v.column2 \
         AND jobs.state || '' IN ('queued', 'retrying')"
    );
    let update = format!(
        "UPDATE jobs SET attempts = jobs.attempts + 1, started_at = COALESCE(jobs.started_at, v.column3), \
         state = v.column4, last_error = COALESCE(v.column5, jobs.last_error), finished_at = v.column6 \
         FROM (VALUES {values}) AS v WHERE jobs.id = v.column1 AND jobs.attempts = v.column2 \
         AND jobs.state || '' IN ('queued', 'retrying') RETURNING jobs.id"
    );
    let bind = |sql: String| {
        ws.iter().fold(Stmt::new(sql), |q, w| {
            let Write::Whole { id, worker, attempts, started, ending, now } = w else {
                unreachable!("only whole records")
            };
            q.bind(id.as_str())
                .bind(*attempts)
                .bind(*started)
                .bind(ending.state.as_str())
                .bind(ending.error.as_deref())
                .bind(ending.state.is_final().then_some(*now))
                .bind(worker.as_str())
                .bind(*now)
                .bind(ending.outcome)
        })
    };
    [bind(insert), bind(update)]
}

impl Write {
    fn what(&self) -> &'static str {
        match self {
            Write::Claim { .. } => "starting an attempt",
            Write::End { .. } => "ending an attempt",
            Write::Whole { .. } => "recording an attempt",
        }
    }
}

async fn one(tx: &mut WriteTx, w: &Write) -> Result<Written, sqlx::Error> {
    match w {
        Write::Claim { id, worker, now, stale } => {
            let row = sqlx::query(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = COALESCE(started_at, $1), \
                 heartbeat_at = $1 WHERE id = $2 AND (state IN ('queued', 'retrying') OR (state = 'running' AND \
                 (heartbeat_at IS NULL OR heartbeat_at < $3))) RETURNING attempts, attempt_base",
            )
            .bind(now)
            .bind(id)
            .bind(stale)
            .fetch_optional(&mut **tx)
            .await?;
            let Some(row) = row else {
                let state: Option<String> = sqlx::query("SELECT state FROM jobs WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| r.get(0));
                return Ok(Written::Claimed(Err(state.as_deref() == Some("running"))));
            };
            let (attempt, base): (i64, i64) = (row.get(0), row.get(1));
            // An attempt whose worker died never finished: say so in its record.
            sqlx::query(
                "UPDATE job_attempts SET finished_at = $1, outcome = 'abandoned', \
                 error = 'the worker stopped sending heartbeats' WHERE job_id = $2 AND finished_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
            sqlx::query("INSERT INTO job_attempts (job_id, attempt, worker, started_at) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(attempt)
                .bind(worker)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            Ok(Written::Claimed(Ok((attempt, base))))
        }
        Write::End { id, attempt, ending, now } => {
            sqlx::query(
                "UPDATE job_attempts SET finished_at = $1, outcome = $2, error = $3 WHERE job_id = $4 AND attempt = $5",
            )
            .bind(now)
            .bind(ending.outcome)
            .bind(ending.error.as_deref())
            .bind(id)
            .bind(attempt)
            .execute(&mut **tx)
            .await?;
            end_job(tx, id, *attempt, ending, *now).await?;
            Ok(Written::Ended)
        }
        Write::Whole { id, worker, attempts, started, ending, now } => {
            let row = sqlx::query(
                "UPDATE jobs SET attempts = attempts + 1, started_at = COALESCE(started_at, $1) \
                 WHERE id = $2 AND attempts = $3 AND state IN ('queued', 'retrying') RETURNING attempts",
            )
            .bind(started)
            .bind(id)
            .bind(attempts)
            .fetch_optional(&mut **tx)
            .await?;
            let Some(row) = row else { return Ok(Written::Recorded(false)) };
            let attempt: i64 = row.get(0);
            sqlx::query(
                "INSERT INTO job_attempts (job_id, attempt, worker, started_at, finished_at, outcome, error) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(attempt)
            .bind(worker)
            .bind(started)
            .bind(now)
            .bind(ending.outcome)
            .bind(ending.error.as_deref())
            .execute(&mut **tx)
            .await?;
            end_job(tx, id, attempt, ending, *now).await?;
            Ok(Written::Recorded(true))
        }
    }
}

async fn end_job(tx: &mut WriteTx, id: &str, attempt: i64, ending: &Ending, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET state = $1, last_error = COALESCE($2, last_error), \
         finished_at = CASE WHEN $3 = 1 THEN $4 ELSE NULL END WHERE id = $5 AND attempts = $6",
    )
    .bind(ending.state.as_str())
    .bind(ending.error.as_deref())
    .bind(i64::from(ending.state.is_final()))
    .bind(now)
    .bind(id)
    .bind(attempt)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Most jobs per read.
const MAX_READ: usize = 256;

/// Reads the jobs the worker's concurrent deliveries ask for, many per query.
#[derive(Debug, Clone)]
pub(crate) struct Loader {
    store: Store,
    task: Batched<String, Result<Option<(Job, i64)>, JobsError>>,
}

type ReadRequest = (String, oneshot::Sender<Result<Option<(Job, i64)>, JobsError>>);

impl Loader {
    pub(crate) fn new(store: Store) -> Self {
        Self { store, task: Batched::new("the job loader stopped") }
    }

    /// Job `id` and its attempt base; `None` if there is no such job.
    pub(crate) async fn get(&self, id: &str) -> Result<Option<(Job, i64)>, JobsError> {
        let handle = || {
            let store = self.store.clone();
            move |batch| load(store.clone(), batch)
        };
        self.task.ask(id.to_string(), MAX_READ, handle).await?
    }
}

/// Reads the jobs of `batch` in one query and answers each request.
async fn load(store: Store, batch: Vec<ReadRequest>) {
    let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
    match crate::store::get_for_run(&store, &ids).await {
        Ok(jobs) => {
            let by_id: std::collections::HashMap<String, (Job, i64)> =
                jobs.into_iter().map(|j| (j.0.id.clone(), j)).collect();
            for (id, reply) in batch {
                // A duplicate id in the batch gets the row too.
                let _ = reply.send(Ok(by_id.get(&id).cloned()));
            }
        }
        Err(e) => {
            let text = e.to_string();
            for (_, reply) in batch {
                let _ = reply.send(Err(JobsError::Read(text.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Registry;
    use crate::model::JobSpec;
    use crate::store;

    fn whole(id: &str, attempts: i64, state: JobState, error: Option<&str>) -> Write {
        let outcome = if state == JobState::Succeeded { "succeeded" } else { "failed" };
        let ending = Ending { state, outcome, error: error.map(str::to_string) };
        Write::Whole { id: id.into(), worker: "w".into(), attempts, started: 1_000, ending, now: 2_000 }
    }

    /// One batch mixing whole records (recorded, stale, duplicate) with a claim, on `store`.
    async fn a_batch_records_each_write_once(store: Store) {
        let registry = Registry::standard();
        let mut ids = Vec::new();
        for _ in 0..4 {
            let (j, _) =
                store::submit(&store, &registry, &JobSpec::new("demo.noop", serde_json::json!({})), "t").await.unwrap();
            ids.push(j.id);
        }
        let writes = vec![
            whole(&ids[0], 0, JobState::Succeeded, None),
            whole(&ids[1], 0, JobState::Retrying, Some("boom")),
            whole(&ids[2], 5, JobState::Succeeded, None),
            Write::Claim { id: ids[3].clone(), worker: "w".into(), now: 1_500, stale: 0 },
            whole(&ids[0], 0, JobState::Succeeded, None),
        ];
        let batch: Vec<Request> = writes.into_iter().map(|w| (w, oneshot::channel().0)).collect();
        let out = together(&store, &batch).await.unwrap();
        let got: Vec<String> = out.iter().map(|w| format!("{w:?}")).collect();
        assert_eq!(
            got,
            ["Recorded(true)", "Recorded(true)", "Recorded(false)", "Claimed(Ok((1, 0)))", "Recorded(false)"],
        );
        let j = |i: usize| store::get(&store, &ids[i]);
        let (j0, j1, j2, j3) = (j(0).await.unwrap(), j(1).await.unwrap(), j(2).await.unwrap(), j(3).await.unwrap());
        assert_eq!(
            (j0.state, j0.attempts, j0.started_at, j0.finished_at),
            (JobState::Succeeded, 1, Some(1_000), Some(2_000))
        );
        assert_eq!(
            (j1.state, j1.attempts, j1.last_error.as_deref(), j1.finished_at),
            (JobState::Retrying, 1, Some("boom"), None)
        );
        assert_eq!((j2.state, j2.attempts), (JobState::Queued, 0));
        assert_eq!((j3.state, j3.attempts), (JobState::Running, 1));
        let a0 = store::attempts(&store, &ids[0]).await.unwrap();
        assert_eq!(a0.len(), 1, "{a0:?}");
        assert_eq!(
            (a0[0].started_at, a0[0].finished_at, a0[0].outcome.as_deref()),
            (1_000, Some(2_000), Some("succeeded"))
        );
        let a1 = store::attempts(&store, &ids[1]).await.unwrap();
        assert_eq!((a1.len(), a1[0].error.as_deref()), (1, Some("boom")));
        assert!(store::attempts(&store, &ids[2]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_batch_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        a_batch_records_each_write_once(store).await;
    }

    /// On the PostgreSQL of `scripts/services` (`HORIZONS_DATABASE_URL`), in a database of its own.
    #[tokio::test]
    async fn a_batch_on_postgres() {
        a_batch_records_each_write_once(horizons_comments::store::fresh_postgres_for_tests("hz_record").await).await;
    }
}
