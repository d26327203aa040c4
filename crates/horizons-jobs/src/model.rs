//! Jobs as submitted and as stored.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::JobsError;

/// The states of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker (or for its not-before time).
    Queued,
    /// A worker is on it.
    Running,
    /// The last attempt failed; the next one comes after the backoff.
    Retrying,
    /// Done.
    Succeeded,
    /// Failed for good: attempts exhausted or a permanent error.
    Dead,
    /// Cancelled before it ran.
    Cancelled,
}

impl JobState {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "retrying" => JobState::Retrying,
            "succeeded" => JobState::Succeeded,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    /// No more attempts will happen.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Dead | JobState::Cancelled)
    }
}

/// A job as submitted.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// A registered kind, e.g. `audit.verify`.
    #[schema(min_length = 1, max_length = 100)]
    pub kind: String,
    /// Arguments, validated by the kind; default `{}`.
    #[serde(default = "no_args")]
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
    /// 0 (lowest) – 9 (highest); default 4.
    #[serde(default = "default_priority")]
    #[schema(minimum = 0, maximum = 9)]
    pub priority: i64,
    /// Start no earlier than this many milliseconds from now (at most a year).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 31536000000_i64)]
    pub delay_ms: i64,
    /// Attempts in all, the first included (1–100; default 5).
    #[serde(default = "default_attempts")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: i64,
    /// Delay before the second attempt, doubled each time (0–3 600 000; default 1 s).
    #[serde(default = "default_backoff")]
    #[schema(minimum = 0, maximum = 3600000)]
    pub backoff_ms: i64,
    /// How long one attempt may run (1–86 400 000; default 10 min).
    #[serde(default = "default_timeout")]
    #[schema(minimum = 1, maximum = 86400000)]
    pub timeout_ms: i64,
    /// A second submission with the same key returns the first job (1–200 characters).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub idempotency_key: Option<String>,
}

fn no_args() -> serde_json::Value {
    serde_json::json!({})
}

fn default_priority() -> i64 {
    4
}
fn default_attempts() -> i64 {
    5
}
fn default_backoff() -> i64 {
    1000
}
fn default_timeout() -> i64 {
    600_000
}

impl JobSpec {
    /// A spec of `kind` with `args` and the defaults.
    pub fn new(kind: &str, args: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            args,
            priority: default_priority(),
            delay_ms: 0,
            max_attempts: default_attempts(),
            backoff_ms: default_backoff(),
            timeout_ms: default_timeout(),
            idempotency_key: None,
        }
    }

    /// Checks the numbers; the kind and its arguments are checked by the registry.
    pub fn validate(&self) -> Result<(), JobsError> {
        if !(0..=9).contains(&self.priority) {
            return Err(JobsError::invalid("priority", format!("{} is outside 0-9", self.priority)));
        }
        if self.delay_ms < 0 {
            return Err(JobsError::invalid("delay_ms", format!("{} is negative", self.delay_ms)));
        }
        if self.delay_ms > 365 * 24 * 3600 * 1000 {
            return Err(JobsError::invalid("delay_ms", "more than a year"));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(JobsError::invalid("max_attempts", format!("{} is outside 1-100", self.max_attempts)));
        }
        if !(0..=3_600_000).contains(&self.backoff_ms) {
            return Err(JobsError::invalid("backoff_ms", format!("{} is outside 0-3600000", self.backoff_ms)));
        }
        if !(1..=24 * 3_600_000).contains(&self.timeout_ms) {
            return Err(JobsError::invalid("timeout_ms", format!("{} is outside 1-86400000", self.timeout_ms)));
        }
        if let Some(k) = &self.idempotency_key {
            if k.is_empty() || k.len() > 200 {
                return Err(JobsError::invalid("idempotency_key", "1-200 characters"));
            }
        }
        Ok(())
    }

    /// The backoff before attempt `next` (2 = the first retry): doubling, capped at an hour.
    pub fn backoff(backoff_ms: i64, next: i64) -> Duration {
        let factor = 1i64 << (next - 2).clamp(0, 20);
        Duration::from_millis(backoff_ms.saturating_mul(factor).clamp(0, 3_600_000) as u64)
    }
}

/// A stored job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Job {
    /// Id (UUIDv7).
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Arguments.
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
    /// Priority 0–9.
    pub priority: i64,
    /// Not before, ms since the epoch.
    pub not_before: Option<i64>,
    /// Attempts allowed.
    pub max_attempts: i64,
    /// First backoff, ms.
    pub backoff_ms: i64,
    /// Attempt timeout, ms.
    pub timeout_ms: i64,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Who submitted it.
    pub owner: String,
    /// State.
    pub state: JobState,
    /// Attempts made.
    pub attempts: i64,
    /// The last error.
    pub last_error: Option<String>,
    /// A cancellation was asked for while it ran.
    pub cancel_requested: bool,
    /// Last heartbeat of the attempt running now, ms since the epoch.
    pub heartbeat_at: Option<i64>,
    /// Submitted, ms since the epoch.
    pub created_at: i64,
    /// First started.
    pub started_at: Option<i64>,
    /// Reached a final state.
    pub finished_at: Option<i64>,
}

/// One attempt of a job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Attempt {
    /// 1-based.
    pub attempt: i64,
    /// Which worker.
    pub worker: String,
    /// Started, ms since the epoch.
    pub started_at: i64,
    /// Ended.
    pub finished_at: Option<i64>,
    /// `succeeded`, `failed`, `timed out`, or none while running.
    pub outcome: Option<String>,
    /// The error.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_specs_name_the_field() {
        let check = |f: fn(&mut JobSpec), field: &str| {
            let mut s = JobSpec::new("demo.noop", serde_json::json!({}));
            f(&mut s);
            let e = s.validate().unwrap_err().to_string();
            assert!(e.starts_with(field), "{e}");
        };
        check(|s| s.priority = 10, "priority");
        check(|s| s.priority = -1, "priority");
        check(|s| s.delay_ms = -5, "delay_ms");
        check(|s| s.max_attempts = 0, "max_attempts");
        check(|s| s.timeout_ms = 0, "timeout_ms");
        check(|s| s.idempotency_key = Some(String::new()), "idempotency_key");
        JobSpec::new("demo.noop", serde_json::json!({})).validate().unwrap();
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(JobSpec::backoff(100, 2), Duration::from_millis(100));
        assert_eq!(JobSpec::backoff(100, 3), Duration::from_millis(200));
        assert_eq!(JobSpec::backoff(100, 5), Duration::from_millis(800));
        assert_eq!(JobSpec::backoff(1000, 60), Duration::from_secs(3600));
    }

    #[test]
    fn states_round_trip() {
        for s in [
            JobState::Queued,
            JobState::Running,
            JobState::Retrying,
            JobState::Succeeded,
            JobState::Dead,
            JobState::Cancelled,
        ] {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert!(JobState::Dead.is_final() && !JobState::Retrying.is_final());
    }
}
