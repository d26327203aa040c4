//! The outbox relay: publishes events written by [`crate::service`] and stamps them sent.
//!
//! Order of work per batch: read the oldest unsent rows, publish them (the bus call returns
//! when they are durable), then set `sent_at`. A crash before the publish leaves the rows
//! unsent, so the next relay publishes them; a crash after the publish but before the stamp
//! publishes them again with the same message ids, which the consumers' inboxes absorb. Run
//! one relay per database: two would publish the same rows twice (still absorbed, but wasted).
//!
//! A batch normally goes out once the previous one is acknowledged, with the rows written
//! meanwhile. When an acknowledgement is slow (past [`SLOW_ACK`]: a slow fsync on the bus's
//! disk), the relay reads and publishes the next rows without it, up to [`IN_FLIGHT_ROWS`]
//! rows out at once, so one slow acknowledgement does not hold back every event written
//! after it. While rows are out, reads start above the highest of them; a row committed late
//! with a lower id (ids are taken before the commit) goes out once nothing is out. Rows of batches
//! in flight are left out of the next read. A batch that fails stays unsent and is read
//! again after the batches still out have finished and a backoff; by then later rows may have
//! been published before it. The consumers here do not depend on the order of events
//! (each reads the row's current state, or is an append that records it), and the bus's
//! redeliveries reorder anyway.
//!
//! Failpoints for the crash tests: `HORIZONS_FAILPOINT=<name>` aborts the process at that
//! point (`after-domain-commit`, `relay-before-publish`, `relay-after-publish`). Read once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use horizons_bus::{Envelope, MessageId, Publisher, Topic};
use tokio::sync::Notify;
use tokio::task::JoinSet;
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

/// Rows published and not yet stamped, at most, in batches of one read each. While the bus's
/// acknowledgements are slow, reads find few new rows each, so the cap is on rows, not batches.
pub const IN_FLIGHT_ROWS: usize = 2048;

/// How long a batch may wait for its acknowledgement before the next one goes out without it.
/// Normally an acknowledgement takes a few milliseconds, and the rows written meanwhile make
/// the next batch; past this the relay stops waiting (a slow fsync on the bus's disk).
pub const SLOW_ACK: Duration = Duration::from_millis(10);

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
        let mut flying: JoinSet<Result<(), CommentsError>> = JoinSet::new();
        // The rows of each batch out, and when it went out.
        let mut batches: HashMap<tokio::task::Id, (Vec<String>, Instant)> = HashMap::new();
        let mut in_flight: HashSet<String> = HashSet::new();
        let (mut failed, mut last_full) = (false, false);
        loop {
            while let Some(done) = flying.try_join_next_with_id() {
                failed |= !finished(done, &mut batches, &mut in_flight);
            }
            if failed && flying.is_empty() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                failed = false;
            }
            // Another batch goes out while one is out only if that one is slow to be
            // acknowledged, or there is a backlog: otherwise rows gather for the next batch.
            let oldest = batches.values().map(|(_, at)| *at).min();
            let slow = oldest.is_none_or(|at| at.elapsed() >= SLOW_ACK);
            if !failed && in_flight.len() < IN_FLIGHT_ROWS && (slow || last_full) {
                // Rows above every row out: a read during a stall does not fetch the rows out
                // again. A row committed late with a lower id waits until nothing is out.
                let after = in_flight.iter().max().cloned();
                match self.next_batch(after.as_deref()).await {
                    Ok(Some((ids, envs))) => {
                        last_full = ids.len() as i64 >= self.batch;
                        in_flight.extend(ids.iter().cloned());
                        let (store, bus, rows) = (self.store.clone(), self.bus.clone(), ids.clone());
                        let task =
                            flying.spawn(async move { publish_and_stamp(&store, bus.as_ref(), &rows, envs).await });
                        batches.insert(task.id(), (ids, Instant::now()));
                        backoff = Duration::from_millis(50);
                        continue;
                    }
                    Ok(None) => {
                        (last_full, backoff) = (false, Duration::from_millis(50));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "outbox relay failed; retrying");
                        failed = true;
                        if flying.is_empty() {
                            continue;
                        }
                    }
                }
            }
            let slow_at = oldest.map(|at| tokio::time::Instant::from_std(at + SLOW_ACK));
            tokio::select! {
                _ = cancel.cancelled() => {
                    // Let the batches out finish (bounded): stopping one between its publish
                    // and its stamp would only publish it again at the next start.
                    let _ = tokio::time::timeout(Duration::from_secs(5), async {
                        while flying.join_next().await.is_some() {}
                    })
                    .await;
                    return;
                }
                Some(done) = flying.join_next_with_id(), if !flying.is_empty() => {
                    failed |= !finished(done, &mut batches, &mut in_flight);
                }
                _ = self.signal.notified(), if !failed && slow => {}
                _ = tokio::time::sleep_until(slow_at.unwrap_or_else(tokio::time::Instant::now)), if !failed && !slow => {}
                _ = tokio::time::sleep(self.poll), if !failed => {}
            }
        }
    }

    /// Publishes one batch of unsent events and stamps it; returns how many.
    pub async fn pump(&self) -> Result<usize, CommentsError> {
        let Some((ids, envs)) = self.next_batch(None).await? else {
            return Ok(0);
        };
        publish_and_stamp(&self.store, self.bus.as_ref(), &ids, envs).await?;
        Ok(ids.len())
    }

    /// The oldest unsent rows (above `after`, if given; at most one batch), as envelopes.
    async fn next_batch(&self, after: Option<&str>) -> Result<Option<(Vec<String>, Vec<Envelope>)>, CommentsError> {
        let columns = "SELECT id, topic, event_type, msg_key, payload, priority, not_before FROM outbox";
        let read = match after {
            None => Stmt::new(format!("{columns} WHERE sent_at IS NULL ORDER BY id LIMIT $1")).bind(self.batch),
            // `$1` before `$2` in the text: SQLite numbers `$n` parameters by first appearance.
            Some(id) => Stmt::new(format!("{columns} WHERE sent_at IS NULL AND id > $1 ORDER BY id LIMIT $2"))
                .bind(id)
                .bind(self.batch),
        };
        let rows = self.store.read(read).await.map_err(|e| CommentsError::db("reading the outbox", e))?;
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
        if ids.is_empty() {
            return Ok(None);
        }
        Ok(Some((ids, envs)))
    }
}

/// Takes a finished batch out of flight; false if it failed (its rows stay unsent).
fn finished(
    done: Result<(tokio::task::Id, Result<(), CommentsError>), tokio::task::JoinError>,
    batches: &mut HashMap<tokio::task::Id, (Vec<String>, Instant)>,
    in_flight: &mut HashSet<String>,
) -> bool {
    let (id, result) = match done {
        Ok((id, r)) => (id, r.map_err(|e| e.to_string())),
        Err(e) => (e.id(), Err(format!("publish task: {e}"))),
    };
    for row in batches.remove(&id).map(|(rows, _)| rows).unwrap_or_default() {
        in_flight.remove(&row);
    }
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "outbox relay failed; retrying");
            false
        }
    }
}

/// Publishes `envs` (the rows `ids`) and stamps them sent.
async fn publish_and_stamp(
    store: &Store,
    bus: &dyn Publisher,
    ids: &[String],
    envs: Vec<Envelope>,
) -> Result<(), CommentsError> {
    failpoint("relay-before-publish");
    bus.publish_batch(envs)
        .await
        .map_err(|e| CommentsError::Bus { context: format!("publishing {} outbox event(s)", ids.len()), source: e })?;
    failpoint("relay-after-publish");
    let now = now_ms();
    // One statement per batch: `id IN ($2, $3, …)`.
    let marks: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!("UPDATE outbox SET sent_at = $1 WHERE id IN ({})", marks.join(", "));
    let stamp = ids.iter().fold(Stmt::new(sql).bind(now), |q, id| q.bind(id.as_str()));
    store.write(vec![stamp]).await.map_err(|e| CommentsError::db("stamping the outbox", e))?;
    metrics::counter!("horizons_outbox_published_total").increment(ids.len() as u64);
    Ok(())
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

    /// A bus whose first publish waits until released, and which can fail the next publish.
    #[derive(Default)]
    struct GatedBus {
        calls: parking_lot::Mutex<Vec<Vec<String>>>,
        release_first: Notify,
        fail_next: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl Publisher for GatedBus {
        async fn publish_batch(&self, msgs: Vec<Envelope>) -> Result<(), horizons_bus::BusError> {
            let first = {
                let mut calls = self.calls.lock();
                calls.push(msgs.iter().map(|m| m.id.0.to_string()).collect());
                calls.len() == 1
            };
            if first {
                self.release_first.notified().await;
            }
            if self.fail_next.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(horizons_bus::BusError::Unavailable("the test bus fails this publish".into()));
            }
            Ok(())
        }
    }

    async fn add_row(store: &Store, id: &str) {
        sqlx::query("INSERT INTO outbox (id, topic, event_type, payload, created_at) VALUES ($1, 't', 'e', '{}', $2)")
            .bind(id)
            .bind(now_ms())
            .execute(store.pool())
            .await
            .unwrap();
    }

    async fn unsent(store: &Store) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetch_one(store.pool()).await.unwrap()
    }

    /// Waits (up to 10 s) until `ok` holds.
    async fn until<F: std::future::Future<Output = bool>>(what: &str, mut ok: impl FnMut() -> F) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ok().await {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_slow_acknowledgement_does_not_hold_back_later_rows_and_a_failed_batch_is_sent_again() {
        let (_dir, store) = crate::store::sqlite_for_tests().await;
        let bus = Arc::new(GatedBus::default());
        let signal = Arc::new(Notify::new());
        let mut relay = Relay::new(store.clone(), bus.clone(), signal.clone(), "");
        relay.poll = Duration::from_millis(20);
        let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        add_row(&store, &ids[0]).await;
        let cancel = CancellationToken::new();
        let running = tokio::spawn(relay.run(cancel.clone()));
        let calls = |n: usize| {
            let bus = bus.clone();
            move || std::future::ready(bus.calls.lock().len() >= n)
        };
        until("the first publish", calls(1)).await;
        // The first batch is still waiting for its acknowledgement; the next row goes out anyway.
        add_row(&store, &ids[1]).await;
        signal.notify_one();
        until("the second publish", calls(2)).await;
        assert_eq!(bus.calls.lock()[1], vec![ids[1].clone()], "in-flight rows are not read again");
        until("the second row stamped", || async { unsent(&store).await == 1 }).await;
        assert_eq!(bus.calls.lock().len(), 2, "the first batch is still out");
        // The third row's publish fails: it stays unsent and goes out again after a backoff.
        bus.fail_next.store(true, std::sync::atomic::Ordering::SeqCst);
        add_row(&store, &ids[2]).await;
        signal.notify_one();
        until("the failed publish", calls(3)).await;
        // A row committed late with an id below the rows out is read once nothing is out.
        let late = "00000000-0000-7000-8000-000000000000".to_string();
        add_row(&store, &late).await;
        signal.notify_one();
        bus.release_first.notify_one();
        until("every row stamped", || async { unsent(&store).await == 0 }).await;
        cancel.cancel();
        running.await.unwrap();
        let calls = bus.calls.lock().clone();
        assert_eq!(calls[..3], [vec![ids[0].clone()], vec![ids[1].clone()], vec![ids[2].clone()]]);
        assert_eq!(calls[3..], [vec![late, ids[2].clone()]], "the failed row again, with the late one: {calls:?}");
        store.close().await;
    }
}
