//! The bus's error type, shared by every backend.

use std::time::Duration;

/// What can go wrong talking to a bus backend.
///
/// `is_transient` tells callers whether trying again can help; adapters retry transient errors
/// themselves where they promise to (reconnect, resend) and surface the rest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// A topic or group name breaks the naming rule.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// "topic" or "group".
        what: &'static str,
        /// The rejected name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Priority outside 0–9.
    #[error("invalid priority {0}: must be 0–9")]
    InvalidPriority(u8),
    /// A message is larger than the configured maximum.
    #[error("message of {size} bytes for topic {topic} exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The topic.
        topic: String,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The topic was never declared.
    #[error("unknown topic {0:?}: declare it in the topology first")]
    UnknownTopic(String),
    /// The group was never declared on this topic.
    #[error("unknown consumer group {group:?} on topic {topic:?}")]
    UnknownGroup {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
    /// A redeclaration disagrees with what exists.
    #[error("topology conflict on {object}: {field} is {existing} but the declaration says {declared}")]
    TopologyConflict {
        /// The topic, group or queue.
        object: String,
        /// The argument that differs.
        field: String,
        /// What the backend has.
        existing: String,
        /// What was asked for.
        declared: String,
    },
    /// The backend does not have this capability.
    #[error("{backend} backend does not support {what}")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// The missing capability.
        what: &'static str,
    },
    /// The backend is closed or restarting; try again.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// A delivery was settled after its lease ran out or after a restart; the backend has
    /// already made it available again.
    #[error("delivery lease expired; the message will be redelivered")]
    LeaseExpired,
    /// An operation took longer than allowed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The backend's storage or connection failed.
    #[error("{context}")]
    Backend {
        /// What we were doing.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Invalid configuration; the message names the key.
    #[error("configuration: {0}")]
    Config(String),
}

impl BusError {
    /// Wraps a backend error with what we were doing.
    pub fn backend(context: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Backend { context: context.into(), source: source.into() }
    }

    /// Whether trying the same operation again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Timeout(_) | Self::Backend { .. })
    }
}

/// `e` and its sources, joined by `: ` (for a log line or a panic message: a wrapping error's
/// own text is often only its context).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
