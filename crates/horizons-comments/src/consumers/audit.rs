//! The audit worker: every comment and moderation event becomes one record of the hash-chained
//! audit log (`horizons-audit`), with e-mail addresses, IP addresses and free text sealed with
//! AES-256-GCM under the current key of the ring. The record, the inbox entry and an
//! `AuditRecorded` event (in the outbox) commit together.
//!
//! The chain needs one writer at a time: the route runs with concurrency 1, and `seq` is the
//! table's primary key, so two workers racing on one database collide and one retries.
//! The worker keeps the chain's head (seq and hash) in memory, so an append is one batch of
//! writes: the inbox entry (a plain insert: a redelivery collides with it), the record and its
//! event. A collision rolls the batch back; the worker then asks the inbox whether the message
//! was done (a redelivery: nothing to do) or reloads the head (another worker appended) and
//! tries again.
//! Retention ([`enforce_retention`]) removes records older than the configured age from the
//! head and stores the anchor the chain then starts from, in one transaction.

use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use horizons_audit::{Anchor, Draft, KeyRing, Record, Retention};
use horizons_bus::{Context, Envelope, Handler, HandlerError};
use serde_json::json;
use sqlx::Row;

use crate::consumers::{decode, inbox_entry, processed, retryable};
use crate::events::{self, Event};
use crate::sql::Stmt;
use crate::store::Store;
use crate::{now_ms, CommentsError};

/// The `audit` group's handler.
pub struct Audit {
    store: Store,
    keys: Arc<KeyRing>,
    /// The chain's head as last written or read: `None` until loaded (and after a failed
    /// write), `Some(None)` for an empty log without an anchor.
    head: tokio::sync::Mutex<Option<Option<Anchor>>>,
}

/// Appends tried before a handler error (each collision with another worker costs one).
const APPEND_TRIES: usize = 3;

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("keys", &self.keys).finish()
    }
}

/// What an event puts into the log: (actor, subject, public fields, sensitive fields).
fn describe(e: &Event) -> (String, String, serde_json::Value, Option<serde_json::Value>) {
    match e {
        Event::CommentCreated(c) => (
            c.author.clone(),
            c.comment_id.clone(),
            json!({"post_id": c.post_id, "parent_id": c.parent_id}),
            Some(json!({"body": c.body, "email": c.author_email, "ip": c.client_ip})),
        ),
        Event::CommentEdited(c) => (
            c.editor.clone(),
            c.comment_id.clone(),
            json!({"post_id": c.post_id, "version": c.version}),
            Some(json!({"body": c.body, "ip": c.client_ip})),
        ),
        Event::CommentDeleted(c) => (
            c.deleted_by.clone(),
            c.comment_id.clone(),
            json!({"post_id": c.post_id}),
            Some(json!({"ip": c.client_ip})),
        ),
        Event::CommentReported(c) => (
            c.reporter.clone(),
            c.comment_id.clone(),
            json!({"post_id": c.post_id, "report_id": c.report_id}),
            Some(json!({"reason": c.reason, "ip": c.client_ip})),
        ),
        Event::ModerationDecided(d) => (
            d.moderator.clone(),
            d.comment_id.clone(),
            json!({"action": d.action, "decision_id": d.decision_id}),
            Some(json!({"note": d.note})),
        ),
        Event::NotificationRequested(n) => (
            "system".into(),
            n.user.clone(),
            json!({"kind": n.kind, "notification_id": n.notification_id}),
            Some(json!({"email": n.email, "message": n.message})),
        ),
        Event::AuditRecorded(a) => ("system".into(), a.seq.to_string(), json!({"hash": a.hash}), None),
    }
}

fn at_ms(e: &Event) -> i64 {
    match e {
        Event::CommentCreated(c) => c.at_ms,
        Event::CommentEdited(c) => c.at_ms,
        Event::CommentDeleted(c) => c.at_ms,
        Event::CommentReported(c) => c.at_ms,
        Event::ModerationDecided(d) => d.at_ms,
        Event::NotificationRequested(n) => n.at_ms,
        Event::AuditRecorded(a) => a.at_ms,
    }
}

async fn anchor(tx: &mut crate::store::WriteTx) -> Result<Option<Anchor>, CommentsError> {
    let row = sqlx::query("SELECT anchor FROM audit_anchor WHERE id = 1")
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| CommentsError::db("reading the audit anchor", e))?;
    row.map(|r| parse_anchor(&r.get::<String, _>(0))).transpose()
}

fn parse_anchor(json: &str) -> Result<Anchor, CommentsError> {
    serde_json::from_str(json).map_err(|e| CommentsError::Other(format!("audit anchor: {e}")))
}

/// The head the next record links to: the newest record, else the retention anchor.
async fn load_head(store: &Store) -> Result<Option<Anchor>, CommentsError> {
    let rows = store
        .read(Stmt::new(
            "SELECT 'record', record FROM (SELECT record FROM audit_log ORDER BY seq DESC LIMIT 1) AS newest \
             UNION ALL SELECT 'anchor', anchor FROM audit_anchor WHERE id = 1",
        ))
        .await
        .map_err(|e| CommentsError::db("reading the audit head", e))?;
    let find = |what: &str| rows.iter().find(|r| r.get::<String>(0) == what).map(|r| r.get::<String>(1));
    if let Some(r) = find("record") {
        let r: Record = serde_json::from_str(&r)
            .map_err(|e| CommentsError::Other(format!("the newest audit record does not parse: {e}")))?;
        return Ok(Some(Anchor { seq: r.seq, hash: r.hash, at_ms: r.at_ms }));
    }
    find("anchor").map(|a| parse_anchor(&a)).transpose()
}

impl Audit {
    /// A handler appending to `store`'s audit log, sealing with `keys`.
    pub fn new(store: Store, keys: Arc<KeyRing>) -> Self {
        Self { store, keys, head: tokio::sync::Mutex::new(None) }
    }

    async fn append(&self, msg: &Envelope, event: Event) -> Result<(), CommentsError> {
        let (actor, subject, public, sensitive) = describe(&event);
        let draft = Draft {
            at_ms: at_ms(&event),
            event_id: msg.id.to_string(),
            action: event.type_name().to_string(),
            actor,
            subject,
            public,
            sensitive,
        };
        let mut head = self.head.lock().await;
        let mut tries = 0;
        loop {
            tries += 1;
            let prev = match head.as_ref() {
                Some(h) => h.clone(),
                None => load_head(&self.store).await?,
            };
            let record = match &prev {
                Some(a) => horizons_audit::chain_after_anchor(a, draft.clone(), &self.keys),
                None => horizons_audit::chain(None, draft.clone(), &self.keys),
            }
            .map_err(|e| CommentsError::Other(format!("sealing the audit record: {e}")))?;
            let announced = events::AuditRecorded {
                seq: record.seq,
                hash: record.hash.clone(),
                action: record.action.clone(),
                event_id: record.event_id.clone(),
                at_ms: now_ms(),
            };
            let batch = vec![
                inbox_entry("audit", msg),
                Stmt::new("INSERT INTO audit_log (seq, at_ms, record) VALUES ($1, $2, $3)")
                    .bind(record.seq)
                    .bind(record.at_ms)
                    .bind(serde_json::to_string(&record).expect("records serialize")),
                crate::service::outbox_insert(&Event::AuditRecorded(announced)),
            ];
            match self.store.write(batch).await {
                Ok(_) => {
                    *head = Some(Some(Anchor { seq: record.seq, hash: record.hash, at_ms: record.at_ms }));
                    metrics::counter!("horizons_audit_records_total").increment(1);
                    return Ok(());
                }
                Err(e) => {
                    *head = None;
                    let collided = matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation());
                    if collided && processed(&self.store, "audit", msg).await? {
                        return Ok(());
                    }
                    if !collided || tries >= APPEND_TRIES {
                        return Err(CommentsError::db("appending to the audit log", e));
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Handler for Audit {
    async fn handle(&self, msg: &Envelope, _cx: &Context) -> Result<(), HandlerError> {
        let event = decode(msg)?;
        self.append(msg, event).await.map_err(retryable)
    }
}

/// Verifies the whole stored chain (from the retention anchor, if any), streaming; with
/// `keys`, also checks that every sealed field opens. The error names the broken record.
pub async fn verify(store: &Store, keys: Option<&KeyRing>) -> Result<horizons_audit::Verified, CommentsError> {
    let anchor: Option<Anchor> = sqlx::query("SELECT anchor FROM audit_anchor WHERE id = 1")
        .fetch_optional(store.pool())
        .await
        .map_err(|e| CommentsError::db("reading the audit anchor", e))?
        .map(|r| serde_json::from_str(&r.get::<String, _>(0)))
        .transpose()
        .map_err(|e| CommentsError::Other(format!("audit anchor does not parse: {e}")))?;
    let mut v = match keys {
        Some(k) => horizons_audit::Verifier::with_keys(anchor.as_ref(), k),
        None => horizons_audit::Verifier::new(anchor.as_ref()),
    };
    let mut rows = sqlx::query("SELECT seq, record FROM audit_log ORDER BY seq").fetch(store.pool());
    while let Some(r) = rows.try_next().await.map_err(|e| CommentsError::db("reading the audit log", e))? {
        let seq: i64 = r.get(0);
        let record: Record = serde_json::from_str(&r.get::<String, _>(1))
            .map_err(|e| CommentsError::Other(format!("audit record {seq}: does not parse ({e}): record edited")))?;
        if record.seq != seq {
            return Err(CommentsError::Other(format!("audit record {seq}: holds seq {} (record edited)", record.seq)));
        }
        v.push(&record).map_err(|b| CommentsError::Other(format!("audit log broken: {b}")))?;
    }
    Ok(v.finish())
}

/// Removes records older than `retention` from the head of the chain, storing the anchor the
/// chain starts from afterwards; returns how many were removed.
pub async fn enforce_retention(store: &Store, retention: Retention) -> Result<u64, CommentsError> {
    let cutoff = now_ms() - retention.as_millis();
    let mut tx = store.begin().await.map_err(|e| CommentsError::db("begin", e))?;
    let old = anchor(&mut tx).await?;
    let rows = sqlx::query("SELECT record FROM audit_log WHERE at_ms < $1 ORDER BY seq LIMIT 10000")
        .bind(cutoff)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| CommentsError::db("reading old audit records", e))?;
    let head: Vec<Record> = rows
        .iter()
        .map(|r| serde_json::from_str(&r.get::<String, _>(0)))
        .collect::<Result<_, _>>()
        .map_err(|e| CommentsError::Other(format!("an old audit record does not parse: {e}")))?;
    let Some(new) = horizons_audit::plan_retention(now_ms(), retention, old.as_ref(), head.iter())
        .map_err(|b| CommentsError::Other(format!("retention refused: audit log broken: {b}")))?
    else {
        return Ok(0);
    };
    let removed = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
        .bind(new.seq)
        .execute(&mut *tx)
        .await
        .map_err(|e| CommentsError::db("removing old audit records", e))?
        .rows_affected();
    let text = serde_json::to_string(&new).expect("anchors serialize");
    sqlx::query(
        "INSERT INTO audit_anchor (id, anchor) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET anchor = excluded.anchor",
    )
    .bind(text)
    .execute(&mut *tx)
    .await
    .map_err(|e| CommentsError::db("storing the audit anchor", e))?;
    tx.commit().await.map_err(|e| CommentsError::db("committing retention", e))?;
    tracing::info!(removed, anchor_seq = new.seq, "audit retention applied");
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use horizons_bus::Topic;

    use super::*;

    fn event(n: u32) -> Envelope {
        let e = Event::CommentCreated(events::CommentCreated {
            comment_id: format!("c{n}"),
            post_id: "p".into(),
            parent_id: None,
            author: "bob".into(),
            body: format!("comment {n}"),
            author_email: "bob@example.org".into(),
            client_ip: Some("192.0.2.7".into()),
            at_ms: 1_700_000_000_000 + i64::from(n),
        });
        Envelope::new(Topic::new("comments").unwrap(), e.encode())
    }

    async fn count(store: &Store, sql: &str) -> i64 {
        store.read(Stmt::new(sql)).await.unwrap().first().unwrap().get::<i64>(0)
    }

    /// A redelivery appends nothing; a worker whose head went stale (another one appended)
    /// collides, reloads and appends after it; the chain verifies throughout.
    async fn appends_once_and_recovers_a_stale_head(store: Store) {
        let entry = KeyRing::generate_entry("k1").unwrap();
        let keys = Arc::new(KeyRing::new("k1", &[entry.as_str()]).unwrap());
        let (a, b) = (Audit::new(store.clone(), keys.clone()), Audit::new(store.clone(), keys.clone()));
        let (m1, m2, m3) = (event(1), event(2), event(3));
        a.append(&m1, decode(&m1).unwrap()).await.unwrap();
        a.append(&m1, decode(&m1).unwrap()).await.unwrap();
        assert_eq!(count(&store, "SELECT COUNT(*) FROM audit_log").await, 1, "a redelivery appends nothing");
        b.append(&m2, decode(&m2).unwrap()).await.unwrap();
        a.append(&m3, decode(&m3).unwrap()).await.unwrap();
        assert_eq!(count(&store, "SELECT COUNT(*) FROM audit_log").await, 3);
        assert_eq!(count(&store, "SELECT MAX(seq) FROM audit_log").await, 3, "a appended after b's record");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM outbox WHERE event_type = 'AuditRecorded'").await, 3);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM inbox WHERE consumer = 'audit'").await, 3);
        let v = verify(&store, Some(&keys)).await.unwrap();
        assert_eq!((v.count, v.last_seq), (3, Some(3)));
    }

    #[tokio::test]
    async fn appends_once_and_recovers_a_stale_head_on_sqlite() {
        let (_dir, store) = crate::store::sqlite_for_tests().await;
        appends_once_and_recovers_a_stale_head(store).await;
    }

    #[tokio::test]
    async fn appends_once_and_recovers_a_stale_head_on_postgres() {
        appends_once_and_recovers_a_stale_head(crate::store::fresh_postgres_for_tests("hz_audit").await).await;
    }
}
