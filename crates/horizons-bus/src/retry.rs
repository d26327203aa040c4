//! Retry semantics as types: what a handler says about a failure, and the one policy that turns
//! it into a settlement.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How a handler failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Worth trying again after the policy's backoff.
    #[error("retryable: {0}")]
    Retryable(String),
    /// Worth trying again, but not before this delay (e.g. a rate limit said so).
    #[error("retry after {0:?}: {1}")]
    RetryAfter(Duration, String),
    /// Will never succeed (malformed input, unknown schema): straight to the dead-letter queue.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl HandlerError {
    /// A retryable failure.
    pub fn retryable(e: impl std::fmt::Display) -> Self {
        Self::Retryable(e.to_string())
    }

    /// A permanent failure.
    pub fn permanent(e: impl std::fmt::Display) -> Self {
        Self::Permanent(e.to_string())
    }

    /// The message without the kind prefix.
    pub fn message(&self) -> &str {
        match self {
            Self::Retryable(m) | Self::RetryAfter(_, m) | Self::Permanent(m) => m,
        }
    }
}

/// Exponential backoff with full jitter and a cap on attempts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total deliveries allowed, the first included; after the last failure the message is
    /// dead-lettered.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Upper bound for any delay.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Growth factor per attempt, in percent (200 = doubling).
    pub multiplier_percent: u32,
    /// Whether to randomise each delay (full jitter over the upper half of the window).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(60),
            multiplier_percent: 200,
            jitter: true,
        }
    }
}

/// What to do with a delivery once its handler has run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Done: remove it.
    Ack,
    /// Deliver again after the delay; `error` is recorded as the last error.
    RetryAfter {
        /// How long to wait.
        delay: Duration,
        /// Why it failed this time.
        error: String,
    },
    /// Give up: move it to the dead-letter queue with this reason.
    DeadLetter {
        /// Why.
        reason: String,
        /// The handler error of this last attempt, kept as the last error.
        error: Option<String>,
    },
}

impl RetryPolicy {
    /// A policy with `max_attempts` and short fixed-ish delays, for tests.
    pub fn fast(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            multiplier_percent: 200,
            jitter: false,
        }
    }

    /// Checks the numbers.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("retry.max_attempts must be at least 1".into());
        }
        if self.multiplier_percent < 100 {
            return Err("retry.multiplier_percent must be at least 100".into());
        }
        if self.initial_backoff > self.max_backoff {
            return Err("retry.initial_backoff must not exceed retry.max_backoff".into());
        }
        Ok(())
    }

    /// The delay after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let factor = (self.multiplier_percent as f64 / 100.0).powi(exp as i32);
        let base = self.initial_backoff.as_secs_f64() * factor;
        let capped = base.min(self.max_backoff.as_secs_f64());
        let d = if self.jitter { rand::thread_rng().gen_range(capped / 2.0..=capped) } else { capped };
        Duration::from_secs_f64(d)
    }

    /// The one place where a handler's outcome becomes a settlement.
    ///
    /// `attempt` is the 1-based number of the delivery that just ran.
    pub fn decide(&self, attempt: u32, outcome: Result<(), &HandlerError>) -> Settlement {
        match outcome {
            Ok(()) => Settlement::Ack,
            Err(HandlerError::Permanent(m)) => {
                Settlement::DeadLetter { reason: format!("permanent error: {m}"), error: Some(m.clone()) }
            }
            Err(e) if attempt >= self.max_attempts => Settlement::DeadLetter {
                reason: format!("gave up after {attempt} attempts: {}", e.message()),
                error: Some(e.message().to_string()),
            },
            Err(HandlerError::RetryAfter(d, m)) => Settlement::RetryAfter { delay: *d, error: m.clone() },
            Err(HandlerError::Retryable(m)) => {
                Settlement::RetryAfter { delay: self.backoff(attempt), error: m.clone() }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(attempt: u32, outcome: Result<(), HandlerError>, expected: &str) {
        let p = RetryPolicy::fast(3);
        let s = p.decide(attempt, outcome.as_ref().map(|_| ()));
        let got = match s {
            Settlement::Ack => "ack".to_string(),
            Settlement::RetryAfter { delay, .. } => format!("retry {}ms", delay.as_millis()),
            Settlement::DeadLetter { reason, .. } => format!("dlq {reason}"),
        };
        assert_eq!(got, expected);
    }

    #[test]
    fn decisions() {
        check(1, Ok(()), "ack");
        check(1, Err(HandlerError::retryable("x")), "retry 20ms");
        check(2, Err(HandlerError::retryable("x")), "retry 40ms");
        check(3, Err(HandlerError::retryable("x")), "dlq gave up after 3 attempts: x");
        check(1, Err(HandlerError::permanent("bad json")), "dlq permanent error: bad json");
        check(1, Err(HandlerError::RetryAfter(Duration::from_millis(7), "busy".into())), "retry 7ms");
    }

    #[test]
    fn backoff_is_capped_and_jittered_within_window() {
        let p = RetryPolicy { jitter: true, ..RetryPolicy::default() };
        for attempt in 1..40 {
            let d = p.backoff(attempt);
            assert!(d <= p.max_backoff, "{attempt}: {d:?}");
            let unjittered = RetryPolicy { jitter: false, ..p.clone() }.backoff(attempt);
            assert!(d >= unjittered / 2 && d <= unjittered, "{attempt}: {d:?} vs {unjittered:?}");
        }
    }

    #[test]
    fn validation() {
        assert!(RetryPolicy::default().validate().is_ok());
        assert!(RetryPolicy { max_attempts: 0, ..Default::default() }.validate().is_err());
    }
}
