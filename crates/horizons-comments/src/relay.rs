//! The outbox relay: publishes events written by [`crate::service`] and stamps them sent.
//!
//! Order of work per batch: read the oldest unsent rows, publish them (the bus call returns
//! when they are durable), then set `sent_at`. A crash before the publish leaves the rows
//! unsent, so the next relay publishes them; a crash after the publish but before the stamp
//! publishes them again with the same message ids, which the consumers' inboxes absorb. Run
//! one relay per database: two would publish the same rows twice (still absorbed, but wasted).
//!
//! Failpoints for the crash tests: `HORIZONS_FAILPOINT=<name>` aborts the process at that
//! point (`after-domain-commit`, `relay-before-publish`, `relay-after-publish`). Read once.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use horizons_bus::{Envelope, MessageId, Publisher, Topic};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::sql::Stmt;
use crate::store::Store;
use crate::{now_ms, CommentsError};

/// Aborts the process here if `HORIZONS_FAILPOINT` names this point: a crash with no
/// clean-up, for tests that must show nothing is lost.
pub fn failpoint(name: &str) {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("HORIZONS_FAILPOINT").ok().filter(|s| !s.is_empty()));
    if point.as_deref() == Some(name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// Publishes the outbox.
pub struct Relay {
    store: Store,
    bus: Arc<dyn Publisher>,
    signal: Arc<Notify>,
    /// Rows per publish.
    pub batch: i64,
    /// How often to look without a signal (another process may have written).
    pub poll: Duration,
    /// Topic name prefix (the deployment's namespace).
    prefix: String,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("batch", &self.batch).field("poll", &self.poll).finish()
    }
}

impl Relay {
    /// A relay from `store` to `bus`, woken by `signal`; topics are `prefix` + event topic.
    pub fn new(store: Store, bus: Arc<dyn Publisher>, signal: Arc<Notify>, prefix: &str) -> Self {
        Self { store, bus, signal, batch: 256, poll: Duration::from_millis(100), prefix: prefix.to_string() }
    }

    /// Publishes until cancelled; a failing bus or database is retried with backoff.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.pump().await {
                Ok(n) if n as i64 >= self.batch => continue,
                Ok(_) => backoff = Duration::from_millis(50),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "outbox relay failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.signal.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// Publishes one batch of unsent events; returns how many.
    pub async fn pump(&self) -> Result<usize, CommentsError> {
        let rows = self
            .store
            .read(
                Stmt::new(
                    "SELECT id, topic, event_type, msg_key, payload, priority, not_before FROM outbox \
                     WHERE sent_at IS NULL ORDER BY id LIMIT $1",
                )
                .bind(self.batch),
            )
            .await
            .map_err(|e| CommentsError::db("reading the outbox", e))?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut envs = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        for r in rows.iter() {
            let id: String = r.get(0);
            let topic = Topic::new(format!("{}{}", self.prefix, r.get::<String>(1)))
                .map_err(|e| CommentsError::Bus { context: format!("outbox row {id}"), source: e })?;
            let payload: String = r.get(4);
            let mut env = Envelope::new(topic, payload.into_bytes())
                .with_header("type", r.get::<String>(2))
                .with_header("version", crate::events::VERSION.to_string());
            if let Some(k) = r.get::<Option<String>>(3) {
                env = env.with_key(k);
            }
            let priority = u8::try_from(r.get::<i64>(5)).unwrap_or(4);
            env = env.with_priority(
                horizons_bus::Priority::new(priority)
                    .map_err(|e| CommentsError::Bus { context: format!("outbox row {id}"), source: e })?,
            );
            // Publishing the absolute time keeps a relay delay from adding to the job's delay.
            env.not_before = r.get::<Option<i64>>(6);
            env.id = MessageId(
                uuid::Uuid::parse_str(&id).map_err(|e| CommentsError::Other(format!("outbox row {id}: {e}")))?,
            );
            envs.push(env);
            ids.push(id);
        }
        failpoint("relay-before-publish");
        self.bus.publish_batch(envs).await.map_err(|e| CommentsError::Bus {
            context: format!("publishing {} outbox event(s)", ids.len()),
            source: e,
        })?;
        failpoint("relay-after-publish");
        let now = now_ms();
        // One statement per batch: `id IN ($2, $3, …)`.
        let marks: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!("UPDATE outbox SET sent_at = $1 WHERE id IN ({})", marks.join(", "));
        let stamp = ids.iter().fold(Stmt::new(sql).bind(now), |q, id| q.bind(id.as_str()));
        self.store.write(vec![stamp]).await.map_err(|e| CommentsError::db("stamping the outbox", e))?;
        metrics::counter!("horizons_outbox_published_total").increment(ids.len() as u64);
        Ok(ids.len())
    }
}

/// Deletes outbox rows sent more than `keep` ago; unsent rows always stay.
pub async fn prune_outbox(store: &Store, keep: Duration) -> Result<u64, CommentsError> {
    let cutoff = now_ms() - keep.as_millis() as i64;
    Ok(sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
        .bind(cutoff)
        .execute(store.pool())
        .await
        .map_err(|e| CommentsError::db("pruning the outbox", e))?
        .rows_affected())
}

/// Deletes inbox rows (processed message ids) older than `keep`. Keep them longer than the
/// bus keeps messages: a message redelivered after its id left the inbox would take effect
/// twice.
pub async fn prune_inbox(store: &Store, keep: Duration) -> Result<u64, CommentsError> {
    let cutoff = now_ms() - keep.as_millis() as i64;
    Ok(sqlx::query("DELETE FROM inbox WHERE processed_at < $1")
        .bind(cutoff)
        .execute(store.pool())
        .await
        .map_err(|e| CommentsError::db("pruning the inbox", e))?
        .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pruning_keeps_unsent_and_recent_rows() {
        let (_dir, store) = crate::store::sqlite_for_tests().await;
        let (now, old) = (now_ms(), now_ms() - 10 * 24 * 3600 * 1000);
        for (id, sent) in [("old-sent", Some(old)), ("new-sent", Some(now)), ("old-unsent", None)] {
            sqlx::query(
                "INSERT INTO outbox (id, topic, event_type, payload, created_at, sent_at) VALUES ($1, 't', 'e', '{}', $2, $3)",
            )
            .bind(id)
            .bind(old)
            .bind(sent)
            .execute(store.pool())
            .await
            .unwrap();
        }
        for (id, at) in [("old", old), ("new", now)] {
            sqlx::query("INSERT INTO inbox (consumer, message_id, processed_at) VALUES ('c', $1, $2)")
                .bind(id)
                .bind(at)
                .execute(store.pool())
                .await
                .unwrap();
        }
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(prune_outbox(&store, week).await.unwrap(), 1);
        assert_eq!(prune_inbox(&store, week).await.unwrap(), 1);
        let left: Vec<String> =
            sqlx::query_scalar("SELECT id FROM outbox ORDER BY id").fetch_all(store.pool()).await.unwrap();
        assert_eq!(left, ["new-sent", "old-unsent"]);
        let left: Vec<String> = sqlx::query_scalar("SELECT message_id FROM inbox ORDER BY message_id")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(left, ["new"]);
        store.close().await;
    }
}
