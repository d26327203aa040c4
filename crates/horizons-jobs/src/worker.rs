//! The worker: a bus handler for the `jobs` topic.
//!
//! For each execution message: load the job; if it is already final (a duplicate delivery, or
//! cancelled) acknowledge and stop. Otherwise record the attempt (`running`, attempt n), run
//! the kind's handler under the job's timeout with panics caught, and record the outcome:
//! `succeeded`; `retrying` with the bus asked to redeliver after the backoff; or `dead` when the
//! error is permanent or the attempts are spent (the message is then acknowledged: the dead set
//! lives in the database, where `jobs dlq` lists and `jobs redrive` reruns it).
//!
//! A worker killed mid-attempt leaves the message unacknowledged: the bus redelivers it after
//! the group's visibility timeout (the lease), and the next attempt starts. There are no
//! heartbeats yet, so a job's timeout must stay under the lease ([`JobWorker::lease`]).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use horizons_bus::{Context, Envelope, GroupSpec, Handler, HandlerError, RetryPolicy, Topic, TopicSpec};
use horizons_comments::{now_ms, Store};
use serde::Deserialize;
use sqlx::Row;

use crate::kinds::{JobContext, JobError, Registry};
use crate::model::{JobSpec, JobState};
use crate::store;
use crate::{JobsError, GROUP};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    job_id: String,
}

/// Runs jobs.
#[derive(Clone, Debug)]
pub struct JobWorker {
    store: Store,
    registry: Registry,
    /// This worker's name in attempt records.
    pub name: String,
}

impl JobWorker {
    /// The default lease: how long a job may run before the bus hands it to another worker.
    pub const LEASE: Duration = Duration::from_secs(300);

    /// A worker over `store` running `registry`'s kinds.
    pub fn new(store: Store, registry: Registry, name: impl Into<String>) -> Self {
        Self { store, registry, name: name.into() }
    }

    /// The topic and group, with `lease` as the visibility timeout and retries left to the
    /// worker (it decides from the job's own attempts).
    pub fn topology(topic: Topic, lease: Duration) -> TopicSpec {
        TopicSpec::new(topic).group(GroupSpec::new(GROUP).retry(Self::policy()).visibility_timeout(lease))
    }

    /// The route's policy: the bus never dead-letters a job on its own; the worker does.
    pub fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 1_000_000, ..RetryPolicy::default() }
    }

    async fn start(&self, id: &str) -> Result<Option<(i64, i64)>, JobsError> {
        let mut tx = self.store.begin().await.map_err(JobsError::db("starting an attempt"))?;
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = COALESCE(started_at, $1) \
             WHERE id = $2 AND state IN ('queued', 'retrying', 'running') RETURNING attempts, attempt_base",
        )
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(JobsError::db("starting an attempt"))?;
        let Some(row) = row else { return Ok(None) };
        let (attempt, base): (i64, i64) = (row.get(0), row.get(1));
        sqlx::query("INSERT INTO job_attempts (job_id, attempt, worker, started_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(attempt)
            .bind(&self.name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(JobsError::db("recording the attempt"))?;
        tx.commit().await.map_err(JobsError::db("starting an attempt"))?;
        Ok(Some((attempt, base)))
    }

    async fn finish(
        &self,
        id: &str,
        attempt: i64,
        state: JobState,
        outcome: &str,
        error: Option<&str>,
    ) -> Result<(), JobsError> {
        let now = now_ms();
        let mut tx = self.store.begin().await.map_err(JobsError::db("ending an attempt"))?;
        sqlx::query(
            "UPDATE job_attempts SET finished_at = $1, outcome = $2, error = $3 WHERE job_id = $4 AND attempt = $5",
        )
        .bind(now)
        .bind(outcome)
        .bind(error)
        .bind(id)
        .bind(attempt)
        .execute(&mut *tx)
        .await
        .map_err(JobsError::db("ending the attempt"))?;
        sqlx::query(
            "UPDATE jobs SET state = $1, last_error = COALESCE($2, last_error), \
             finished_at = CASE WHEN $3 = 1 THEN $4 ELSE NULL END WHERE id = $5",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(i64::from(state.is_final()))
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(JobsError::db("ending the job"))?;
        tx.commit().await.map_err(JobsError::db("ending the attempt"))?;
        metrics::counter!("horizons_jobs_finished_total", "state" => state.as_str()).increment(1);
        Ok(())
    }

    async fn process(&self, msg: &Envelope) -> Result<(), HandlerError> {
        let m: Message = serde_json::from_slice(&msg.payload)
            .map_err(|e| HandlerError::permanent(format!("malformed job message: {e}")))?;
        let retry = |e: JobsError| HandlerError::retryable(e.to_string());
        let job = match store::get(&self.store, &m.job_id).await {
            Ok(j) => j,
            Err(JobsError::NotFound(id)) => return Err(HandlerError::permanent(format!("job {id} not found"))),
            Err(e) => return Err(retry(e)),
        };
        if job.state.is_final() {
            return Ok(());
        }
        let Some((attempt, base)) = self.start(&job.id).await.map_err(retry)? else { return Ok(()) };
        let waited = now_ms() - job.not_before.unwrap_or(job.created_at);
        metrics::histogram!("horizons_jobs_queue_latency_seconds").record(waited.max(0) as f64 / 1000.0);
        let Some(kind) = self.registry.get(&job.kind).cloned() else {
            let e = format!("unknown kind {:?} on this worker", job.kind);
            self.finish(&job.id, attempt, JobState::Dead, "failed", Some(&e)).await.map_err(retry)?;
            return Ok(());
        };
        let cx = JobContext { job_id: job.id.clone(), attempt: attempt - base, store: self.store.clone() };
        let timeout = Duration::from_millis(job.timeout_ms.max(1) as u64);
        let started = std::time::Instant::now();
        let run = AssertUnwindSafe(kind.run(&cx, &job.args)).catch_unwind();
        let outcome = match tokio::time::timeout(timeout, run).await {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Err(JobError::Retryable(format!("handler panicked: {what}")))
            }
            Err(_) => Err(JobError::Retryable(format!("timed out after {timeout:?}"))),
        };
        metrics::histogram!("horizons_jobs_run_seconds").record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(()) => {
                self.finish(&job.id, attempt, JobState::Succeeded, "succeeded", None).await.map_err(retry)?;
                Ok(())
            }
            Err(e) => {
                let text = e.to_string();
                let spent = attempt - base >= job.max_attempts;
                if matches!(e, JobError::Permanent(_)) || spent {
                    self.finish(&job.id, attempt, JobState::Dead, "failed", Some(&text)).await.map_err(retry)?;
                    tracing::warn!(job = %job.id, kind = %job.kind, attempt, error = %text, "job dead");
                    return Ok(());
                }
                self.finish(&job.id, attempt, JobState::Retrying, "failed", Some(&text)).await.map_err(retry)?;
                let delay = match e {
                    JobError::RetryAfter(d, _) => d,
                    _ => JobSpec::backoff(job.backoff_ms, attempt - base + 1),
                };
                Err(HandlerError::RetryAfter(delay, text))
            }
        }
    }
}

#[async_trait]
impl Handler for JobWorker {
    async fn handle(&self, msg: &Envelope, _cx: &Context) -> Result<(), HandlerError> {
        self.process(msg).await
    }
}

/// A worker shared by several route tasks.
pub fn shared(w: JobWorker) -> Arc<dyn Handler> {
    Arc::new(w)
}
