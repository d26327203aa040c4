//! The job system: "recalibrate observation X", "rebuild the search index", "send the digest".
//!
//! A job is a row in the `jobs` table (kind, JSON arguments validated by the kind, priority
//! 0–9, not-before time, attempts and backoff, timeout, idempotency key, owner, state) plus an
//! execution message on the bus topic `jobs`, written through the outbox in the same
//! transaction as the row, with the job's priority and delay. Workers consume the topic
//! ([`worker::JobWorker`]): they record each attempt, run the kind's handler under the job's
//! timeout, and end the attempt as succeeded, retrying (the bus redelivers after the backoff)
//! or dead (every error kept in `job_attempts`). A worker that dies mid-job leaves the bus
//! message unacknowledged, so the job is picked up again after the group's visibility timeout.
//!
//! States: `queued → running → succeeded | retrying → running … | dead | cancelled`.
//!
//! Running jobs are kept alive by heartbeats, cancelled cooperatively, and taken over when
//! their worker dies ([`worker`]). Recurring jobs ([`schedule`]) are submitted once per cron
//! tick ([`cron`]), however many schedulers run.

pub mod cron;
pub mod kinds;
pub mod model;
pub mod record;
pub mod schedule;
pub mod store;
pub mod worker;

pub use kinds::{JobContext, JobError, JobKind, Registry};
pub use model::{Job, JobSpec, JobState};

/// Topic of job execution messages (before the deployment's namespace).
pub const TOPIC: &str = "jobs";
/// Consumer group of the workers.
pub const GROUP: &str = "workers";

/// What can go wrong with jobs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobsError {
    /// A field of a submission is invalid.
    #[error("{message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong, starting with the field (`args.days: …`).
        message: String,
    },
    /// No such job.
    #[error("job {0} not found")]
    NotFound(String),
    /// The job is in a state that does not allow this.
    #[error("job {id} is {state}: {what} not possible")]
    State {
        /// The job.
        id: String,
        /// Its state.
        state: String,
        /// What was asked.
        what: &'static str,
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
    /// Reading jobs failed (the database's error, shared by the reads batched with this one).
    #[error("reading jobs: {0}")]
    Read(String),
    /// A part of the worker stopped (the process is shutting down).
    #[error("{0}")]
    Closed(&'static str),
    /// The comment store's layer failed (outbox).
    #[error(transparent)]
    Store(#[from] horizons_comments::CommentsError),
}

impl JobsError {
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> JobsError {
        let context = context.into();
        move |source| JobsError::Db { context, source }
    }

    /// `message` may already start with the field (a kind's `args.days: …`); it is not named twice.
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = if message.starts_with(field) { message } else { format!("{field}: {message}") };
        JobsError::Invalid { field, message }
    }
}
