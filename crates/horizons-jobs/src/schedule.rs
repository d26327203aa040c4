//! Recurring jobs: a cron expression and a job spec, submitted once per tick.
//!
//! Every jobs worker process runs a [`Scheduler`] over the same schedules. Each tick is
//! submitted with the idempotency key `cron:<name>:<tick ms>`, so however many schedulers run,
//! the database's unique key lets exactly one job per tick through. A scheduler starts at the
//! present: ticks that passed while no scheduler ran are not made up, except the latest one
//! when it is less than [`CATCH_UP`] old (a restart across a tick does not lose it).

use std::time::Duration;

use horizons_comments::{now_ms, Store};
use tokio_util::sync::CancellationToken;

use crate::cron::CronExpr;
use crate::kinds::Registry;
use crate::model::JobSpec;
use crate::{store, JobsError};

/// How far back a starting scheduler looks for a missed tick.
pub const CATCH_UP: Duration = Duration::from_secs(60);

/// A recurring job.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Unique name; part of each tick's idempotency key.
    pub name: String,
    /// When.
    pub cron: CronExpr,
    /// What (its idempotency key is set per tick).
    pub spec: JobSpec,
}

impl Schedule {
    /// Checks the schedule against `registry`; the message names the field.
    pub fn new(name: &str, cron: &str, spec: JobSpec, registry: &Registry) -> Result<Schedule, JobsError> {
        if name.is_empty() || name.len() > 100 || name.contains(':') {
            return Err(JobsError::invalid("name", format!("{name:?}: 1-100 characters, no ':'")));
        }
        let cron = CronExpr::parse(cron).map_err(|e| JobsError::invalid("cron", e))?;
        if spec.idempotency_key.is_some() {
            return Err(JobsError::invalid("idempotency_key", "set per tick by the scheduler"));
        }
        spec.validate()?;
        let kind = registry.get(&spec.kind).ok_or_else(|| {
            JobsError::invalid("kind", format!("unknown kind {:?} (known: {})", spec.kind, registry.names().join(", ")))
        })?;
        kind.validate(&spec.args).map_err(|m| JobsError::invalid("args", m))?;
        Ok(Schedule { name: name.into(), cron, spec })
    }

    /// The idempotency key of the tick at `tick_ms`.
    pub fn key(&self, tick_ms: i64) -> String {
        format!("cron:{}:{tick_ms}", self.name)
    }
}

/// Submits the jobs of `schedules` at their ticks until cancelled.
#[derive(Clone, Debug)]
pub struct Scheduler {
    store: Store,
    registry: Registry,
    schedules: Vec<Schedule>,
}

impl Scheduler {
    /// A scheduler over `store`.
    pub fn new(store: Store, registry: Registry, schedules: Vec<Schedule>) -> Self {
        Self { store, registry, schedules }
    }

    /// Runs until `cancel`; database errors are logged and the tick retried.
    pub async fn run(self, cancel: CancellationToken) {
        if self.schedules.is_empty() {
            return;
        }
        let start = now_ms() - CATCH_UP.as_millis() as i64;
        // Per schedule, the next tick to submit.
        let mut next: Vec<Option<i64>> = self
            .schedules
            .iter()
            // The latest tick in the catch-up window, else the first after now.
            .map(|s| next_due(&s.cron, start, now_ms()))
            .collect();
        loop {
            let now = now_ms();
            for (s, due) in self.schedules.iter().zip(next.iter_mut()) {
                let Some(tick) = *due else { continue };
                if tick > now {
                    continue;
                }
                let spec = JobSpec { idempotency_key: Some(s.key(tick)), ..s.spec.clone() };
                match store::submit(&self.store, &self.registry, &spec, &format!("schedule:{}", s.name)).await {
                    Ok((job, created)) => {
                        if created {
                            tracing::info!(schedule = %s.name, job = %job.id, tick, "scheduled job submitted");
                        }
                        // Ticks missed while this one was being written: only the latest.
                        *due = next_due(&s.cron, tick, now_ms());
                    }
                    Err(e) => {
                        tracing::warn!(schedule = %s.name, error = %e, "submitting a scheduled job failed; retried")
                    }
                }
            }
            let wake =
                next.iter().flatten().min().map_or(Duration::from_secs(60), |t| {
                    Duration::from_millis((t - now_ms()).clamp(10, 60_000) as u64)
                });
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wake) => {}
            }
        }
    }
}

/// The tick to submit next after `after`: the latest one at or before `now` if any passed,
/// else the first one after `now`.
fn next_due(cron: &CronExpr, after: i64, now: i64) -> Option<i64> {
    let mut t = cron.next_after(after)?;
    while let Some(n) = cron.next_after(t).filter(|n| *n <= now) {
        t = n;
    }
    Some(t)
}
