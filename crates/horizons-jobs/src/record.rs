//! The worker's attempt records, written many to a transaction.
//!
//! Every job a worker runs costs a few writes: claiming it (`running`, a new attempt row) and
//! ending it, or — for a job that ends before it needed claiming (see
//! [`crate::worker::JobWorker::claim_after`]) — one write that records start and end together.
//! On SQLite a transaction's begin and commit cost more than its statements, and writers take
//! turns on the one write lock, so one task per worker collects the writes that the worker's
//! concurrent jobs ask for and applies whatever has queued up (up to [`MAX_BATCH`]) in one
//! transaction. Each caller's reply comes after the commit, so a caller that acknowledges its
//! bus message afterwards still does so only once its record is durable.
//!
//! If a batch fails, every write in it is tried again in a transaction of its own, so one bad
//! write fails alone.

use horizons_comments::{Store, WriteTx};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use crate::model::JobState;
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

/// A handle on the writer task (cheap to clone). The task starts on first use and ends when the
/// last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    store: Store,
    tx: std::sync::Arc<std::sync::OnceLock<mpsc::UnboundedSender<Request>>>,
}

impl Recorder {
    pub(crate) fn new(store: Store) -> Self {
        Self { store, tx: Default::default() }
    }

    /// Applies `w` (in a transaction with others queued at the same time).
    pub(crate) async fn write(&self, w: Write) -> Result<Written, JobsError> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(self.store.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        tx.send((w, reply)).map_err(|_| JobsError::Closed("the attempt recorder stopped"))?;
        answer.await.map_err(|_| JobsError::Closed("the attempt recorder stopped"))?
    }
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        apply(&store, &mut batch).await;
    }
}

/// Applies and answers every request in `batch` (leaving it empty).
async fn apply(store: &Store, batch: &mut Vec<Request>) {
    if batch.len() > 1 {
        match together(store, batch).await {
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
    let mut tx = store.begin().await?;
    let mut out = Vec::with_capacity(batch.len());
    for (w, _) in batch {
        out.push(one(&mut tx, w).await?);
    }
    tx.commit().await?;
    Ok(out)
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
