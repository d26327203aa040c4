//! The notify worker: `NotificationRequested` → an in-app notification (stored, then pushed to
//! SSE listeners in this process) and, when the user wants e-mail, a row the [`Mailer`] sends
//! in batches.
//!
//! [`Mailer`]: crate::mail::Mailer

use async_trait::async_trait;
use horizons_bus::{Context, Envelope, Handler, HandlerError};
use sqlx::Row;
use tokio::sync::broadcast;

use crate::consumers::{claim, decode, retryable};
use crate::events::Event;
use crate::store::Store;
use crate::CommentsError;

/// The `notify` group's handler.
#[derive(Debug)]
pub struct Notify {
    store: Store,
    /// User names with something new; the SSE routes listen.
    live: broadcast::Sender<String>,
}

impl Notify {
    /// A handler writing to `store`, announcing on `live`.
    pub fn new(store: Store, live: broadcast::Sender<String>) -> Self {
        Self { store, live }
    }

    async fn apply(&self, msg: &Envelope) -> Result<Option<String>, HandlerError> {
        let Event::NotificationRequested(n) = decode(msg)? else {
            return Err(HandlerError::permanent(format!(
                "unexpected event type {} for the notify worker",
                msg.headers.get("type").map_or("?", String::as_str)
            )));
        };
        let mut tx = self.store.begin().await.map_err(|e| retryable(CommentsError::db("begin", e)))?;
        if !claim(&mut tx, "notify", msg).await.map_err(retryable)? {
            return Ok(None);
        }
        let prefs = sqlx::query("SELECT notify_in_app, notify_email FROM users WHERE name = $1")
            .bind(&n.user)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| retryable(CommentsError::db("reading preferences", e)))?;
        let (in_app, email) = prefs.map_or((1, 1), |r| (r.get::<i64, _>(0), r.get::<i64, _>(1)));
        let email = i64::from(email != 0 && !n.email.is_empty());
        sqlx::query(
            "INSERT INTO notifications (id, user_name, kind, post_id, comment_id, message, in_app, email, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&n.notification_id)
        .bind(&n.user)
        .bind(&n.kind)
        .bind(&n.post_id)
        .bind(&n.comment_id)
        .bind(&n.message)
        .bind(in_app)
        .bind(email)
        .bind(n.at_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| retryable(CommentsError::db("storing the notification", e)))?;
        tx.commit().await.map_err(|e| retryable(CommentsError::db("committing", e)))?;
        metrics::counter!("horizons_notifications_total", "kind" => kind_label(&n.kind)).increment(1);
        Ok((in_app != 0).then_some(n.user))
    }
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "reply" => "reply",
        "comment_on_post" => "comment_on_post",
        "report" => "report",
        _ => "other",
    }
}

#[async_trait]
impl Handler for Notify {
    async fn handle(&self, msg: &Envelope, _cx: &Context) -> Result<(), HandlerError> {
        if let Some(user) = self.apply(msg).await? {
            // Nobody listening is fine: the SSE stream also polls the table.
            let _ = self.live.send(user);
        }
        Ok(())
    }
}
