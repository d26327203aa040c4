//! Phase 1 of the plan: a comment or a report becomes events that feed an audit log,
//! notifications, a search index and moderation.
//!
//! - [`store`]: the database (SQLite by default, PostgreSQL by URL), migrated at start-up.
//! - [`service`]: the domain operations the API calls. Each writes its change **and** the
//!   events describing it in one transaction (the transactional outbox): no event for a
//!   rolled-back write, no lost event for a committed one.
//! - [`events`]: the versioned event payloads, validated on consume.
//! - [`relay`]: publishes the outbox to the bus and stamps what was sent.
//! - [`catalog`]: the ngVLA archive's catalog of products (one row per archived run), kept in
//!   the same database because the portal serves it.
//! - [`consumers`]: audit, notify, search and moderation workers. Each records the message
//!   id in the `inbox` table in the transaction of its effect, so redeliveries change nothing.
//!
//! *Architecture invariant:* nothing here knows HTTP; `horizons-api` maps these operations
//! and [`CommentsError`] onto routes and status codes.

pub mod catalog;
pub mod consumers;
pub mod events;
pub mod mail;
pub mod model;
pub mod relay;
pub mod service;
pub mod sql;
pub mod store;

pub use events::Event;
pub use model::{Actor, Role};
pub use service::Service;
pub use store::{Engine, Store, WriteTx};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    horizons_bus::now_millis()
}

/// A fresh time-ordered id (UUIDv7).
pub fn new_id() -> String {
    horizons_bus::MessageId::new().0.to_string()
}

/// What can go wrong in the comment pipeline. The first four are the caller's mistakes (the
/// API answers 4xx); the rest are ours or the infrastructure's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommentsError {
    /// The thing asked for does not exist (or is not visible to the caller).
    #[error("{what} {id} not found")]
    NotFound {
        /// What kind of thing.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The caller may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A field of the request is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The request conflicts with the current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A configuration value is wrong.
    #[error("configuration `{key}`: {message}")]
    Config {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The database failed.
    #[error("{context}: {source}")]
    Db {
        /// What we were doing.
        context: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The bus failed.
    #[error("{context}: {source}")]
    Bus {
        /// What we were doing.
        context: String,
        /// The bus's error.
        #[source]
        source: horizons_bus::BusError,
    },
    /// Anything else that failed (an index, a mail transport, a file).
    #[error("{0}")]
    Other(String),
}

impl CommentsError {
    pub(crate) fn db(context: impl Into<String>, source: sqlx::Error) -> Self {
        Self::Db { context: context.into(), source }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { field, message: message.into() }
    }

    pub(crate) fn not_found(what: &'static str, id: &str) -> Self {
        Self::NotFound { what, id: id.to_string() }
    }
}
