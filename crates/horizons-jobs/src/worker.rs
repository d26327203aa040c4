//! The worker: a bus handler for the `jobs` topic.
//!
//! For each execution message: load the job; if it is already final (a duplicate delivery, or
//! cancelled) acknowledge and stop. Otherwise run the kind's handler under the job's timeout
//! with panics caught, and record the outcome: `succeeded`; `retrying` with the bus asked to
//! redeliver after the backoff; or `dead` when the error is permanent or the attempts are spent
//! (the message is then acknowledged: the dead set lives in the database, where `jobs dlq`
//! lists and `jobs redrive` reruns it).
//!
//! A job is **claimed** (`running`, attempt n recorded) only once it has run for
//! [`JobWorker::claim_after`] (50 ms): most jobs end sooner, and their attempt is recorded once,
//! start and end together, in one write that also checks nobody touched the job meanwhile (a
//! job cancelled or redriven while such an attempt ran keeps its new state, and the attempt's
//! result is dropped). A job already `running` (a takeover) is claimed before it runs. The
//! writes of a worker's concurrent jobs go to the database many per transaction
//! ([`crate::record`]); a message is acknowledged only after its record is committed.
//!
//! While a claimed attempt runs, the worker stamps the job's `heartbeat_at` every
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
use crate::record::{Ending, Loader, Recorder, Write, Written};
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
    /// A queued job that ends within this time is recorded once, start and end together; one
    /// that runs longer is claimed (`running`, heartbeats) at this point. Zero: claim first.
    pub claim_after: Duration,
    /// Writes the attempt records, many per transaction.
    recorder: Recorder,
    /// Reads the jobs to run, many per query.
    loader: Loader,
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
    /// The default [`claim_after`](Self::claim_after).
    pub const CLAIM_AFTER: Duration = Duration::from_millis(50);

    /// A worker over `store` running `registry`'s kinds.
    pub fn new(store: Store, registry: Registry, name: impl Into<String>) -> Self {
        Self {
            registry,
            name: name.into(),
            heartbeat: Duration::from_secs(2),
            stale_after: Duration::from_secs(10),
            kinds: None,
            limits: Arc::new(HashMap::new()),
            claim_after: Self::CLAIM_AFTER,
            recorder: Recorder::new(store.clone()),
            loader: Loader::new(store.clone()),
            store,
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

    /// Claims attempt n+1: `Ok((attempt, base))`, or `Err(running)` if the job is final or
    /// running with a fresh heartbeat elsewhere (`true` = running).
    async fn claim(&self, id: &str) -> Result<Result<(i64, i64), bool>, JobsError> {
        let now = now_ms();
        let stale = now - self.stale_after.as_millis() as i64;
        let w = Write::Claim { id: id.to_string(), worker: self.name.clone(), now, stale };
        match self.recorder.write(w).await? {
            Written::Claimed(r) => Ok(r),
            other => unreachable!("a claim answered {other:?}"),
        }
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

    async fn finish(&self, id: &str, attempt: i64, ending: Ending) -> Result<(), JobsError> {
        let state = ending.state;
        self.recorder.write(Write::End { id: id.to_string(), attempt, ending, now: now_ms() }).await?;
        metrics::counter!("horizons_jobs_attempts_ended_total", "state" => state.as_str()).increment(1);
        Ok(())
    }

    async fn process(&self, msg: &Envelope) -> Result<(), HandlerError> {
        let m: Message = serde_json::from_slice(&msg.payload)
            .map_err(|e| HandlerError::permanent(format!("malformed job message: {e}")))?;
        let retry = |e: JobsError| HandlerError::retryable(e.to_string());
        let (job, read_base) = match self.loader.get(&m.job_id).await {
            Ok(Some(j)) => j,
            Ok(None) => return Err(HandlerError::permanent(format!("job {} not found", m.job_id))),
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
        let kind = self.registry.get(&job.kind).cloned();
        // A queued or retrying job runs before it is claimed, and is claimed only if it is still
        // running after `claim_after`; anything else (a takeover, an unknown kind) is claimed first.
        let lazy =
            !self.claim_after.is_zero() && kind.is_some() && matches!(job.state, JobState::Queued | JobState::Retrying);
        let (mut attempt, mut base) = (job.attempts + 1, read_base);
        let mut claimed = false;
        if !lazy {
            match self.claim(&job.id).await.map_err(retry)? {
                Ok(a) => (attempt, base, claimed) = (a.0, a.1, true),
                Err(true) => {
                    // Running elsewhere with a fresh heartbeat: look again once it could be stale.
                    return Err(HandlerError::RetryAfter(self.stale_after, "running on another worker".into()));
                }
                Err(false) => return Ok(()),
            }
        }
        let started_at = now_ms();
        let waited = started_at - job.not_before.unwrap_or(job.created_at);
        metrics::histogram!("horizons_jobs_queue_latency_seconds", "kind" => job.kind.clone())
            .record(waited.max(0) as f64 / 1000.0);
        let Some(kind) = kind else {
            let e = format!("unknown kind {:?} on this worker", job.kind);
            self.finish(&job.id, attempt, Ending { state: JobState::Dead, outcome: "failed", error: Some(e) })
                .await
                .map_err(retry)?;
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
        // Polled only once the attempt is claimed (its first beat is one period after that).
        let beat = Self::heartbeat_loop(self.store.clone(), job.id.clone(), attempt, self.heartbeat);
        let mut beat = std::pin::pin!(beat);
        let run = AssertUnwindSafe(kind.run(&cx, &job.args)).catch_unwind();
        let mut run = std::pin::pin!(tokio::time::timeout(timeout, run));
        let mut stop = None;
        let result = loop {
            tokio::select! {
                r = &mut run => break Some(r),
                _ = tokio::time::sleep(self.claim_after), if !claimed && stop.is_none() => {
                    match self.claim(&job.id).await {
                        Ok(Ok((a, b))) if a == attempt => (base, claimed) = (b, true),
                        Ok(_) => {
                            stop = Some(Stop::TakenOver);
                            cancel.cancel();
                        }
                        // Not claimed: end as if taken over (the bus redelivers the message).
                        Err(e) => return Err(retry(e)),
                    }
                }
                s = &mut beat, if claimed && stop.is_none() => {
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
                let ending = Ending {
                    state: JobState::Cancelled,
                    outcome: "cancelled",
                    error: Some("cancelled while running".into()),
                };
                self.finish(&job.id, attempt, ending).await.map_err(retry)?;
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
        let (ending, then) = match outcome {
            Ok(()) => (Ending { state: JobState::Succeeded, outcome: "succeeded", error: None }, Ok(())),
            Err(e) => {
                let text = e.to_string();
                if matches!(e, JobError::Permanent(_)) || attempt - base >= job.max_attempts {
                    tracing::warn!(job = %job.id, kind = %job.kind, attempt, error = %text, "job dead");
                    (Ending { state: JobState::Dead, outcome: "failed", error: Some(text) }, Ok(()))
                } else {
                    let delay = match e {
                        JobError::RetryAfter(d, _) => d,
                        _ => JobSpec::backoff(job.backoff_ms, attempt - base + 1),
                    };
                    let ending = Ending { state: JobState::Retrying, outcome: "failed", error: Some(text.clone()) };
                    (ending, Err(HandlerError::RetryAfter(delay, text)))
                }
            }
        };
        if claimed {
            self.finish(&job.id, attempt, ending).await.map_err(retry)?;
            return then;
        }
        let state = ending.state;
        let w = Write::Whole {
            id: job.id.clone(),
            worker: self.name.clone(),
            attempts: job.attempts,
            started: started_at,
            ending,
            now: now_ms(),
        };
        match self.recorder.write(w).await.map_err(retry)? {
            Written::Recorded(true) => {
                metrics::counter!("horizons_jobs_attempts_ended_total", "state" => state.as_str()).increment(1);
                then
            }
            _ => {
                // Cancelled, redriven or started elsewhere while this unclaimed attempt ran.
                tracing::warn!(job = %job.id, attempt, "the job changed while its attempt ran; its result is dropped");
                Ok(())
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
