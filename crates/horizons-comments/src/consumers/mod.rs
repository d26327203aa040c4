//! The workers that turn events into effects. Each is a bus [`Handler`] for one group:
//!
//! | group | topic | effect |
//! |---|---|---|
//! | `audit` | `comments` | a hash-chained, partly encrypted audit record ([`audit`]) |
//! | `notify` | `notifications` | in-app notification row (pushed over SSE), e-mail via [`crate::mail`] |
//! | `search` | `comments` | the tantivy index follows the visible comments ([`search`]) |
//! | `moderation` | `comments` | the content filter's verdict; flagged comments enter the queue |
//!
//! Every handler decodes strictly (an unknown type or version, or a bad body, is a permanent
//! failure: dead-lettered with the reason) and makes its effect exactly once by recording the
//! message id in the `inbox` table in the same transaction ([`claim`]). Database errors are
//! retryable; the bus redelivers after the group's backoff.
//!
//! [`Handler`]: horizons_bus::Handler

pub mod audit;
pub mod moderation;
pub mod notify;
pub mod search;

use horizons_bus::{Envelope, HandlerError};

use crate::events::Event;
use crate::{now_ms, CommentsError};

/// The roles a worker process can run.
pub const ROLES: &[&str] = &["audit", "notify", "search", "moderation"];

/// Decodes `msg` or fails permanently with the reason.
pub(crate) fn decode(msg: &Envelope) -> Result<Event, HandlerError> {
    Event::decode(&msg.payload).map_err(HandlerError::permanent)
}

/// Database and bus trouble is worth retrying; bad input is not.
pub(crate) fn retryable(e: CommentsError) -> HandlerError {
    match e {
        CommentsError::Invalid { .. } | CommentsError::NotFound { .. } => HandlerError::permanent(e),
        other => HandlerError::retryable(other),
    }
}

/// The statement that records that `consumer` processed `msg`; it returns a row only if the
/// message is new. [`claim`] runs it in a transaction; a [`Store::write`] batch whose other
/// statements are idempotent on their own can carry it as is.
///
/// [`Store::write`]: crate::store::Store::write
pub(crate) fn inbox(consumer: &str, msg: &Envelope) -> crate::sql::Stmt {
    inbox_insert(consumer, msg, " ON CONFLICT (consumer, message_id) DO NOTHING RETURNING message_id")
}

/// The inbox entry for a batch that must not run twice: a plain insert, so a redelivery
/// collides with the first entry (a unique violation) and rolls the whole batch back; then
/// [`processed`] tells a redelivery from another collision.
pub(crate) fn inbox_entry(consumer: &str, msg: &Envelope) -> crate::sql::Stmt {
    inbox_insert(consumer, msg, "")
}

fn inbox_insert(consumer: &str, msg: &Envelope, on_conflict: &str) -> crate::sql::Stmt {
    crate::sql::Stmt::new(format!(
        "INSERT INTO inbox (consumer, message_id, processed_at) VALUES ($1, $2, $3){on_conflict}"
    ))
    .bind(consumer)
    .bind(msg.id.to_string())
    .bind(now_ms())
}

/// Whether the inbox holds `msg` for `consumer`.
pub(crate) async fn processed(
    store: &crate::store::Store,
    consumer: &str,
    msg: &Envelope,
) -> Result<bool, CommentsError> {
    let rows = store
        .read(
            crate::sql::Stmt::new("SELECT 1 FROM inbox WHERE consumer = $1 AND message_id = $2")
                .bind(consumer)
                .bind(msg.id.to_string()),
        )
        .await
        .map_err(|e| CommentsError::db("reading the inbox", e))?;
    Ok(!rows.is_empty())
}

/// Records that `consumer` processed `msg` inside `tx`. `false`: it already had, so the caller
/// must do nothing (and may commit or drop `tx`).
pub(crate) async fn claim(
    tx: &mut crate::store::WriteTx,
    consumer: &str,
    msg: &Envelope,
) -> Result<bool, CommentsError> {
    let done = inbox(consumer, msg)
        .run_in(tx)
        .await
        .map_err(|e| CommentsError::db("recording the message in the inbox", e))?;
    Ok(!done.is_empty())
}
