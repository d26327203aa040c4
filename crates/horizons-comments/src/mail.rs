//! E-mail for notifications, through `lettre`: SMTP when configured, otherwise `.eml` files in
//! a folder under the data dir, so a fresh `horizons up` works offline and tests can read mail.
//!
//! Batching: the notify worker only stores rows flagged for e-mail; the mailer wakes every
//! `window`, takes what is pending, and sends **one message per user** (a digest when a burst
//! brought several), then stamps the rows. Delivery is at least once: a crash between the send
//! and the stamp sends that batch again. With the file transport a batch is written to
//! `<first notification id>.eml`, so a resend rewrites the same file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::sql::Stmt;
use crate::store::Store;
use crate::{now_ms, CommentsError};

/// Notification ids stamped per statement (well under SQLite's and PostgreSQL's limits on
/// bound parameters).
const STAMP_CHUNK: usize = 500;

/// One pending notification: id, text, post.
type Pending = (String, String, Option<String>);

/// Where mail goes.
pub enum Transport {
    /// `.eml` files in this folder.
    File(PathBuf),
    /// An SMTP server (`smtp://`, `smtps://`, credentials in the URL).
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The SMTP URL may hold a password: never print it.
            Transport::Smtp(_) => f.write_str("Smtp"),
            Transport::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

impl Transport {
    /// SMTP from `url` when given, else files under `dir`.
    pub fn new(smtp_url: Option<&str>, dir: PathBuf) -> Result<Self, CommentsError> {
        match smtp_url.filter(|u| !u.is_empty()) {
            Some(url) => AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                .map(|b| Transport::Smtp(b.build()))
                .map_err(|e| CommentsError::Config {
                    key: "mail.smtp_url",
                    message: format!("{}: {e}", crate::store::redact_url(url)),
                }),
            None => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| CommentsError::Other(format!("creating the mail folder {}: {e}", dir.display())))?;
                Ok(Transport::File(dir))
            }
        }
    }
}

/// Sends pending notification e-mail in batches.
#[derive(Debug)]
pub struct Mailer {
    store: Store,
    transport: Transport,
    from: Mailbox,
    window: Duration,
}

impl Mailer {
    /// A mailer sending from `from` every `window`.
    pub fn new(store: Store, transport: Transport, from: &str, window: Duration) -> Result<Self, CommentsError> {
        let from =
            from.parse().map_err(|e| CommentsError::Config { key: "mail.from", message: format!("{from:?}: {e}") })?;
        Ok(Self { store, transport, from, window })
    }

    /// Sends every `window` until cancelled, then once more.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            let stop = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = tokio::time::sleep(self.window) => false,
            };
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "sending notification e-mail failed; will retry");
            }
            if stop {
                return;
            }
        }
    }

    /// Sends what is pending now; returns how many messages went out.
    pub async fn flush(&self) -> Result<usize, CommentsError> {
        let rows = sqlx::query(
            "SELECT n.id, n.user_name, n.message, n.post_id, u.email FROM notifications n \
             JOIN users u ON u.name = n.user_name WHERE n.email = 1 AND n.emailed_at IS NULL \
             ORDER BY n.user_name, n.id LIMIT 1000",
        )
        .fetch_all(self.store.pool())
        .await
        .map_err(|e| CommentsError::db("reading pending e-mail", e))?;
        let mut by_user: BTreeMap<(String, String), Vec<Pending>> = BTreeMap::new();
        for r in &rows {
            by_user.entry((r.get(1), r.get(4))).or_default().push((r.get(0), r.get(2), r.get(3)));
        }
        let mut sent = 0;
        for ((user, email), items) in by_user {
            let ids: Vec<&String> = items.iter().map(|i| &i.0).collect();
            match self.compose(&user, &email, &items) {
                Ok(msg) => {
                    self.send(ids[0], msg).await?;
                    sent += 1;
                }
                // An address we cannot mail will not get better: record it and move on.
                Err(e) => tracing::warn!(user, error = %e, "notification e-mail skipped"),
            }
            // One batch (one transaction) of a few statements, not a statement per id.
            let now = now_ms();
            let stamps = ids
                .chunks(STAMP_CHUNK)
                .map(|chunk| {
                    let marks = (2..chunk.len() + 2).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
                    let sql = format!("UPDATE notifications SET emailed_at = $1 WHERE id IN ({marks})");
                    chunk.iter().fold(Stmt::new(sql).bind(now), |q, id| q.bind(id.as_str()))
                })
                .collect();
            self.store.write(stamps).await.map_err(|e| CommentsError::db("stamping sent e-mail", e))?;
        }
        if sent > 0 {
            metrics::counter!("horizons_emails_sent_total").increment(sent as u64);
        }
        Ok(sent)
    }

    /// The digest: one e-mail per user who takes e-mail, listing their unread notifications
    /// created since `since_ms` (ms since the epoch), oldest first, at most 50 each. `tag` names
    /// the digest run (a job id), so a file transport writes each user's digest once per run.
    /// Returns how many went out. At least once over SMTP: a run retried after a failure may
    /// send a user's digest again.
    pub async fn digest(&self, since_ms: i64, tag: &str) -> Result<usize, CommentsError> {
        let rows = sqlx::query(
            "SELECT n.id, n.user_name, n.message, n.post_id, u.email FROM notifications n \
             JOIN users u ON u.name = n.user_name WHERE u.notify_email = 1 AND n.read_at IS NULL \
             AND n.created_at >= $1 ORDER BY n.user_name, n.id",
        )
        .bind(since_ms)
        .fetch_all(self.store.pool())
        .await
        .map_err(|e| CommentsError::db("reading unread notifications", e))?;
        let mut by_user: BTreeMap<(String, String), Vec<Pending>> = BTreeMap::new();
        for r in &rows {
            let items = by_user.entry((r.get(1), r.get(4))).or_default();
            if items.len() < 50 {
                items.push((r.get(0), r.get(2), r.get(3)));
            }
        }
        let mut sent = 0;
        for ((user, email), items) in by_user {
            let subject = format!("Your Cosmic Horizons digest: {} unread", items.len());
            match self.compose_titled(&user, &email, &items, subject) {
                Ok(msg) => {
                    self.send(&format!("digest-{tag}-{user}"), msg).await?;
                    sent += 1;
                }
                Err(e) => tracing::warn!(user, error = %e, "digest e-mail skipped"),
            }
        }
        if sent > 0 {
            metrics::counter!("horizons_digests_sent_total").increment(sent as u64);
        }
        Ok(sent)
    }

    fn compose(&self, user: &str, email: &str, items: &[Pending]) -> Result<Message, CommentsError> {
        let subject = match items {
            [one] => one.1.clone(),
            many => format!("{} new notifications on Cosmic Horizons", many.len()),
        };
        self.compose_titled(user, email, items, subject)
    }

    fn compose_titled(
        &self,
        user: &str,
        email: &str,
        items: &[Pending],
        subject: String,
    ) -> Result<Message, CommentsError> {
        let to: Mailbox =
            format!("{user} <{email}>").parse().map_err(|e| CommentsError::Other(format!("address of {user}: {e}")))?;
        let mut body = format!("Hello {user},\n\n");
        for (_, text, post) in items {
            body.push_str(&format!("- {text}{}\n", post.as_ref().map(|p| format!(" (post {p})")).unwrap_or_default()));
        }
        body.push_str("\nChange what you receive at /api/me/preferences.\n");
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| CommentsError::Other(format!("composing mail for {user}: {e}")))
    }

    async fn send(&self, name: &str, msg: Message) -> Result<(), CommentsError> {
        match &self.transport {
            Transport::File(dir) => {
                let path = dir.join(format!("{name}.eml"));
                let tmp = dir.join(format!(".{name}.eml.tmp"));
                tokio::fs::write(&tmp, msg.formatted())
                    .await
                    .map_err(|e| CommentsError::Other(format!("writing {}: {e}", tmp.display())))?;
                tokio::fs::rename(&tmp, &path)
                    .await
                    .map_err(|e| CommentsError::Other(format!("writing {}: {e}", path.display())))
            }
            Transport::Smtp(t) => t.send(msg).await.map(|_| ()).map_err(|e| CommentsError::Other(format!("SMTP: {e}"))),
        }
    }
}
