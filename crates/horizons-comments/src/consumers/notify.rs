//! The notify worker: `NotificationRequested` → an in-app notification (stored, then pushed to
//! SSE listeners in this process) and, when the user wants e-mail, a row the [`Mailer`] sends
//! in batches.
//!
//! [`Mailer`]: crate::mail::Mailer

use async_trait::async_trait;
use horizons_bus::{Context, Envelope, Handler, HandlerError};
use tokio::sync::broadcast;

use crate::consumers::{decode, inbox, retryable};
use crate::events::Event;
use crate::sql::Stmt;
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
        // The notification's id comes with the event, so its insert is idempotent on its own
        // and needs no answer from the inbox entry written with it: one batch, one hand-off.
        // The user's preferences (both on for a user the store has not seen) come in the SELECT.
        let notification = Stmt::new(
            "INSERT INTO notifications (id, user_name, kind, post_id, comment_id, message, in_app, email, created_at) \
             SELECT $1, $2, $3, $4, $5, $6, COALESCE(u.notify_in_app, 1), \
             CASE WHEN COALESCE(u.notify_email, 1) <> 0 AND $7 <> '' THEN 1 ELSE 0 END, $8 \
             FROM (SELECT 1 AS one) AS one LEFT JOIN users u ON u.name = $2 \
             ON CONFLICT (id) DO NOTHING RETURNING in_app",
        )
        .bind(n.notification_id.as_str())
        .bind(n.user.as_str())
        .bind(n.kind.as_str())
        .bind(n.post_id.as_deref())
        .bind(n.comment_id.as_deref())
        .bind(n.message.as_str())
        .bind(n.email.as_str())
        .bind(n.at_ms);
        let done = self
            .store
            .write(vec![inbox("notify", msg), notification])
            .await
            .map_err(|e| retryable(CommentsError::db("storing the notification", e)))?;
        // Nothing new: a redelivery.
        let Some(in_app) = done[1].first().map(|r| r.get::<i64>(0)) else { return Ok(None) };
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
