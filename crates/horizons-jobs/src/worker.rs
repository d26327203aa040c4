//! The worker: a bus handler for the `jobs` topic.
//!
//! For each execution message: load the job; if it is already final (a duplicate delivery, or
//! cancelled) acknowledge and stop. Otherwise record the attempt (`running`, attempt n), run
//! the kind's handler under the job's timeout with panics caught, and record the outcome:
//! `succeeded`; `retrying` with the bus asked to redeliver after the backoff; or `dead` when the
//! error is permanent or the attempts are spent (the message is then acknowledged: the dead set
//! lives in the database, where `jobs dlq` lists and `jobs redrive` reruns it).
//!
//! While an attempt runs, the worker stamps the job's `heartbeat_at` every
//! [`JobWorker::heartbeat`] and reads `cancel_requested`. A worker killed mid-attempt leaves
//! the message unacknowledged: the bus redelivers it after the group's visibility timeout (the
//! lease). The worker that gets it starts a new attempt only if the heartbeat is stale
//! (older than [`JobWorker::stale_after`]); if it is fresh, the job is still running elsewhere
//! (it simply runs longer than the lease), and the message goes back to the bus for later. So a
//! job may run longer than the lease, and is never run twice at once by a live worker.
//!
//! Cancelling a running job sets `cancel_requested`; at its next heartbeat the worker fires the
//! handler's [`JobContext::cancel`] token, waits up to [`CANCEL_GRACE`] for it to return, then
//! drops it, and the job ends `cancelled`. A worker that finds its attempt taken over (its
//! heartbeat lost to a stale-takeover) stops the same way and leaves the job to the new attempt.
//!
//! Per worker: `kinds` limits which kinds it runs (others go back to the bus for another
//! worker), and `limits` caps how many jobs of a kind run at once in this worker.

use std::collections::{BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use horizons_bus::{Context, Envelope, GroupSpec, Handler, HandlerError, RetryPolicy, Topic, TopicSpec};
use horizons_comments::{now_ms, Store};
use serde::Deserialize;
use sqlx::Row;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::kinds::{JobContext, JobError, Registry};
use crate::model::{JobSpec, JobState};
use crate::store;
use crate::{JobsError, GROUP};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    job_id: String,
}

/// How long a cancelled handler has to return before it is dropped.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Runs jobs.
#[derive(Clone, Debug)]
pub struct JobWorker {
    store: Store,
    registry: Registry,
    /// This worker's name in attempt records.
    pub name: String,
    /// How often a running job is stamped (default 2 s).
    pub heartbeat: Duration,
    /// A running job whose stamp is older than this is taken over (default 5 heartbeats).
    pub stale_after: Duration,
    /// Only these kinds run here (all if `None`).
    kinds: Option<Arc<BTreeSet<String>>>,
    /// At most this many jobs of a kind at once in this worker.
    limits: Arc<HashMap<String, Arc<Semaphore>>>,
}

/// What the heartbeat saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Cancelled,
    TakenOver,
}

impl JobWorker {
    /// The default lease: how long a job may run before the bus hands it to another worker.
    pub const LEASE: Duration = Duration::from_secs(300);

    /// A worker over `store` running `registry`'s kinds.
    pub fn new(store: Store, registry: Registry, name: impl Into<String>) -> Self {
        Self {
            store,
            registry,
            name: name.into(),
            heartbeat: Duration::from_secs(2),
            stale_after: Duration::from_secs(10),
            kinds: None,
            limits: Arc::new(HashMap::new()),
        }
    }

    /// Runs only `kinds`; the names must be registered.
    pub fn only(mut self, kinds: impl IntoIterator<Item = String>) -> Result<Self, JobsError> {
        let set: BTreeSet<String> = kinds.into_iter().collect();
        if let Some(k) = set.iter().find(|k| self.registry.get(k).is_none()) {
            return Err(JobsError::invalid(
                "kinds",
                format!("unknown kind {k:?} (known: {})", self.registry.names().join(", ")),
            ));
        }
        self.kinds = Some(Arc::new(set));
        Ok(self)
    }

    /// At most `n` jobs of `kind` at once in this worker.
    pub fn limit(mut self, kind: &str, n: usize) -> Result<Self, JobsError> {
        if self.registry.get(kind).is_none() {
            return Err(JobsError::invalid("kind limit", format!("unknown kind {kind:?}")));
        }
        if n == 0 {
            return Err(JobsError::invalid("kind limit", format!("{kind}: the limit must be at least 1")));
        }
        Arc::make_mut(&mut self.limits).insert(kind.to_string(), Arc::new(Semaphore::new(n)));
        Ok(self)
    }

    /// Heartbeat every `every`; take over after `stale_after`.
    pub fn heartbeats(mut self, every: Duration, stale_after: Duration) -> Self {
        self.heartbeat = every;
        self.stale_after = stale_after.max(every * 2);
        self
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

    /// Starts attempt n+1: `Some((attempt, base))`, or `None` if the job is final or running
    /// with a fresh heartbeat elsewhere (the returned flag says which: `true` = running).
    async fn start(&self, id: &str) -> Result<Result<(i64, i64), bool>, JobsError> {
        let mut tx = self.store.begin().await.map_err(JobsError::db("starting an attempt"))?;
        let now = now_ms();
        let stale = now - self.stale_after.as_millis() as i64;
        let row = sqlx::query(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = COALESCE(started_at, $1), \
             heartbeat_at = $1 WHERE id = $2 AND (state IN ('queued', 'retrying') OR (state = 'running' AND \
             (heartbeat_at IS NULL OR heartbeat_at < $3))) RETURNING attempts, attempt_base",
        )
        .bind(now)
        .bind(id)
        .bind(stale)
        .fetch_optional(&mut *tx)
        .await
        .map_err(JobsError::db("starting an attempt"))?;
        let Some(row) = row else {
            drop(tx);
            let running = store::get(&self.store, id).await?.state == JobState::Running;
            return Ok(Err(running));
        };
        let (attempt, base): (i64, i64) = (row.get(0), row.get(1));
        // An attempt whose worker died never finished: say so in its record.
        sqlx::query(
            "UPDATE job_attempts SET finished_at = $1, outcome = 'abandoned', \
             error = 'the worker stopped sending heartbeats' WHERE job_id = $2 AND finished_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(JobsError::db("closing an abandoned attempt"))?;
        sqlx::query("INSERT INTO job_attempts (job_id, attempt, worker, started_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(attempt)
            .bind(&self.name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(JobsError::db("recording the attempt"))?;
        tx.commit().await.map_err(JobsError::db("starting an attempt"))?;
        Ok(Ok((attempt, base)))
    }

    /// Stamps the job every heartbeat while attempt `attempt` runs; returns why it must stop.
    async fn heartbeat_loop(store: Store, id: String, attempt: i64, every: Duration) -> Stop {
        loop {
            tokio::time::sleep(every).await;
            let row = sqlx::query(
                "UPDATE jobs SET heartbeat_at = $1 WHERE id = $2 AND attempts = $3 AND state = 'running' \
                 RETURNING cancel_requested",
            )
            .bind(now_ms())
            .bind(&id)
            .bind(attempt)
            .fetch_optional(store.pool())
            .await;
            match row {
                Ok(Some(r)) if r.get::<i64, _>(0) != 0 => return Stop::Cancelled,
                Ok(Some(_)) => {}
                Ok(None) => return Stop::TakenOver,
                // A database hiccup: try again at the next beat.
                Err(e) => tracing::warn!(job = %id, error = %e, "job heartbeat failed"),
            }
        }
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
             finished_at = CASE WHEN $3 = 1 THEN $4 ELSE NULL END WHERE id = $5 AND attempts = $6",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(i64::from(state.is_final()))
        .bind(now)
        .bind(id)
        .bind(attempt)
        .execute(&mut *tx)
        .await
        .map_err(JobsError::db("ending the job"))?;
        tx.commit().await.map_err(JobsError::db("ending the attempt"))?;
        metrics::counter!("horizons_jobs_attempts_ended_total", "state" => state.as_str()).increment(1);
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
        if self.kinds.as_ref().is_some_and(|k| !k.contains(&job.kind)) {
            // Another worker runs this kind.
            return Err(HandlerError::RetryAfter(
                Duration::from_millis(200),
                format!("kind {} not run here", job.kind),
            ));
        }
        let _slot = match self.limits.get(&job.kind) {
            Some(s) => Some(s.clone().acquire_owned().await.map_err(|_| HandlerError::retryable("worker closing"))?),
            None => None,
        };
        let (attempt, base) = match self.start(&job.id).await.map_err(retry)? {
            Ok(a) => a,
            Err(true) => {
                // Running elsewhere with a fresh heartbeat: look again once it could be stale.
                return Err(HandlerError::RetryAfter(self.stale_after, "running on another worker".into()));
            }
            Err(false) => return Ok(()),
        };
        let waited = now_ms() - job.not_before.unwrap_or(job.created_at);
        metrics::histogram!("horizons_jobs_queue_latency_seconds", "kind" => job.kind.clone())
            .record(waited.max(0) as f64 / 1000.0);
        let Some(kind) = self.registry.get(&job.kind).cloned() else {
            let e = format!("unknown kind {:?} on this worker", job.kind);
            self.finish(&job.id, attempt, JobState::Dead, "failed", Some(&e)).await.map_err(retry)?;
            return Ok(());
        };
        let cancel = CancellationToken::new();
        let cx = JobContext {
            job_id: job.id.clone(),
            attempt: attempt - base,
            store: self.store.clone(),
            cancel: cancel.clone(),
        };
        let timeout = Duration::from_millis(job.timeout_ms.max(1) as u64);
        let started = std::time::Instant::now();
        let beat = Self::heartbeat_loop(self.store.clone(), job.id.clone(), attempt, self.heartbeat);
        let mut beat = std::pin::pin!(beat);
        let run = AssertUnwindSafe(kind.run(&cx, &job.args)).catch_unwind();
        let mut run = std::pin::pin!(tokio::time::timeout(timeout, run));
        let mut stop = None;
        let result = loop {
            tokio::select! {
                r = &mut run => break Some(r),
                s = &mut beat, if stop.is_none() => {
                    stop = Some(s);
                    cancel.cancel();
                }
                _ = tokio::time::sleep(CANCEL_GRACE), if stop.is_some() => break None,
            }
        };
        match stop {
            Some(Stop::TakenOver) => {
                tracing::warn!(job = %job.id, attempt, "another worker took the job over; this attempt stops");
                return Ok(());
            }
            Some(Stop::Cancelled) if !matches!(result, Some(Ok(Ok(Ok(()))))) => {
                self.finish(&job.id, attempt, JobState::Cancelled, "cancelled", Some("cancelled while running"))
                    .await
                    .map_err(retry)?;
                return Ok(());
            }
            _ => {}
        }
        let outcome = match result.expect("only a stop ends the loop without a result") {
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
        metrics::histogram!("horizons_jobs_run_seconds", "kind" => job.kind.clone())
            .record(started.elapsed().as_secs_f64());
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
