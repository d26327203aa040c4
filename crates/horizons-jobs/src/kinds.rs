//! Job kinds: plain async handlers registered by name, each validating its own arguments.
//!
//! A handler's error says what should happen next ([`JobError`]): retry after the job's
//! backoff, retry after a delay it names, or stop for good. A panic is caught by the worker and
//! counts as a failed attempt.
//!
//! Shipped kinds: `audit.verify` (checks the audit chain), `pipeline.run` (here a placeholder
//! that fails permanently: this crate does not depend on the ngVLA pipeline; the `horizons`
//! binary registers the real kind, and `search.reindex` and `notify.digest`, in
//! `horizons_app::jobs::registry`), and `demo.noop`, `demo.sleep`, `demo.flaky` for smoke tests,
//! benchmarks and operators trying the system.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use horizons_comments::Store;
use serde::Deserialize;

/// How an attempt failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum JobError {
    /// Try again after the job's backoff.
    #[error("{0}")]
    Retryable(String),
    /// Try again after this delay.
    #[error("{1} (retry after {0:?})")]
    RetryAfter(Duration, String),
    /// Do not try again.
    #[error("{0}")]
    Permanent(String),
}

/// What a handler gets besides its arguments.
#[derive(Clone, Debug)]
pub struct JobContext {
    /// The job.
    pub job_id: String,
    /// 1-based attempt.
    pub attempt: i64,
    /// The database.
    pub store: Store,
    /// Fires when the job is cancelled while it runs (or another worker took it over): stop
    /// soon. A handler that does not look is dropped at its next await after a grace period.
    pub cancel: tokio_util::sync::CancellationToken,
}

/// A kind of job.
#[async_trait]
pub trait JobKind: Send + Sync + 'static {
    /// Its name, e.g. `search.reindex`.
    fn name(&self) -> &'static str;
    /// Checks `args`; the message names the field.
    fn validate(&self, args: &serde_json::Value) -> Result<(), String>;
    /// Does the work.
    async fn run(&self, cx: &JobContext, args: &serde_json::Value) -> Result<(), JobError>;
}

/// The kinds a worker knows.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn JobKind>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    /// The shipped kinds.
    pub fn standard() -> Self {
        let mut r = Registry::default();
        r.register(Arc::new(AuditVerify));
        r.register(Arc::new(PipelineRunStub));
        r.register(Arc::new(Noop));
        r.register(Arc::new(Sleep));
        r.register(Arc::new(Flaky));
        r
    }

    /// Adds (or replaces) a kind.
    pub fn register(&mut self, k: Arc<dyn JobKind>) {
        self.kinds.insert(k.name(), k);
    }

    /// The kind named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn JobKind>> {
        self.kinds.get(name)
    }

    /// Names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }
}

/// A kind's arguments as `T`; the error starts with `args` so it names the field.
pub fn parse<T: for<'de> Deserialize<'de>>(args: &serde_json::Value) -> Result<T, String> {
    serde_json::from_value(args.clone()).map_err(|e| format!("args: {e}"))
}

/// The arguments of a kind that takes none: `{}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `audit.verify`: the whole audit chain, as `horizons audit verify`.
struct AuditVerify;

#[async_trait]
impl JobKind for AuditVerify {
    fn name(&self) -> &'static str {
        "audit.verify"
    }
    fn validate(&self, args: &serde_json::Value) -> Result<(), String> {
        parse::<Empty>(args).map(|_| ())
    }
    async fn run(&self, cx: &JobContext, _args: &serde_json::Value) -> Result<(), JobError> {
        match horizons_comments::consumers::audit::verify(&cx.store, None).await {
            Ok(v) => {
                tracing::info!(records = v.count, head = %v.head_hash, "audit chain verified");
                Ok(())
            }
            Err(horizons_comments::CommentsError::Db { context, source }) => {
                Err(JobError::Retryable(format!("{context}: {source}")))
            }
            Err(e) => Err(JobError::Permanent(e.to_string())),
        }
    }
}

/// `pipeline.run` without the ngVLA pipeline: this crate does not depend on it, so the
/// standard registry's kind fails permanently and says so. The `horizons` binary replaces it
/// with the real kind (`horizons_app::jobs::registry`).
struct PipelineRunStub;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PipelineArgs {
    input: String,
}

#[async_trait]
impl JobKind for PipelineRunStub {
    fn name(&self) -> &'static str {
        "pipeline.run"
    }
    fn validate(&self, args: &serde_json::Value) -> Result<(), String> {
        parse::<PipelineArgs>(args).map(|_| ())
    }
    async fn run(&self, _cx: &JobContext, _args: &serde_json::Value) -> Result<(), JobError> {
        Err(JobError::Permanent(
            "pipeline.run is not in this registry (it needs the ngVLA pipeline): \
             the horizons binary's workers run it"
                .into(),
        ))
    }
}

/// `demo.noop`: does nothing (benchmarks).
struct Noop;

#[async_trait]
impl JobKind for Noop {
    fn name(&self) -> &'static str {
        "demo.noop"
    }
    fn validate(&self, args: &serde_json::Value) -> Result<(), String> {
        parse::<Empty>(args).map(|_| ())
    }
    async fn run(&self, _cx: &JobContext, _args: &serde_json::Value) -> Result<(), JobError> {
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepArgs {
    ms: u64,
}

/// `demo.sleep {"ms": N}`: sleeps (timeouts, crash tests).
struct Sleep;

#[async_trait]
impl JobKind for Sleep {
    fn name(&self) -> &'static str {
        "demo.sleep"
    }
    fn validate(&self, args: &serde_json::Value) -> Result<(), String> {
        let a = parse::<SleepArgs>(args)?;
        if a.ms > 3_600_000 {
            return Err("args.ms: at most 3600000".into());
        }
        Ok(())
    }
    async fn run(&self, cx: &JobContext, args: &serde_json::Value) -> Result<(), JobError> {
        let a = parse::<SleepArgs>(args).map_err(JobError::Permanent)?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(a.ms)) => Ok(()),
            _ = cx.cancel.cancelled() => Err(JobError::Permanent("cancelled".into())),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlakyArgs {
    /// Attempts that fail before one succeeds; `null` fails every time.
    fail_times: Option<i64>,
}

/// `demo.flaky {"fail_times": N}`: fails its first N attempts (retryably), then succeeds;
/// with `null` it always fails.
struct Flaky;

#[async_trait]
impl JobKind for Flaky {
    fn name(&self) -> &'static str {
        "demo.flaky"
    }
    fn validate(&self, args: &serde_json::Value) -> Result<(), String> {
        parse::<FlakyArgs>(args).map(|_| ())
    }
    async fn run(&self, cx: &JobContext, args: &serde_json::Value) -> Result<(), JobError> {
        let a = parse::<FlakyArgs>(args).map_err(JobError::Permanent)?;
        match a.fail_times {
            Some(n) if cx.attempt > n => Ok(()),
            _ => Err(JobError::Retryable(format!("demo failure on attempt {}", cx.attempt))),
        }
    }
}
