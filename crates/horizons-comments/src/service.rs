//! The domain operations: what the API does, each in one database transaction that writes
//! the change and its events into the outbox together.
//!
//! Authorisation lives here, not in the HTTP layer, so every entry point (API, CLI, tests)
//! gets the same rules: authors edit and delete their own comments, moderators and admins any;
//! banned users cannot write; only moderators see the queue and decide.

use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::Row;
use tokio::sync::Notify;

use crate::events::{self, Event};
use crate::model::{Actor, Comment, Notification, Post, Preferences, QueueEntry};
use crate::sql::Stmt;
use crate::store::Store;
use crate::{new_id, now_ms, CommentsError};

/// Longest comment body, in characters.
pub const MAX_BODY_CHARS: usize = 10_000;
/// Longest post title, in characters.
pub const MAX_TITLE_CHARS: usize = 300;
/// Longest report reason or moderation note.
pub const MAX_REASON_CHARS: usize = 1_000;

type Tx = crate::store::WriteTx;

/// The domain operations over a [`Store`].
#[derive(Clone, Debug)]
pub struct Service {
    store: Store,
    /// Woken after every commit that wrote to the outbox, so the relay publishes at once.
    outbox_written: Arc<Notify>,
}

fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> CommentsError {
    move |e| CommentsError::db(context, e)
}

fn text(field: &'static str, value: &str, max: usize) -> Result<String, CommentsError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(CommentsError::invalid(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(CommentsError::invalid(field, format!("longer than {max} characters")));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        return Err(CommentsError::invalid(field, "contains control characters"));
    }
    Ok(v.to_string())
}

/// Writes `event` into the outbox inside `tx`; returns its id (the bus message id).
pub(crate) async fn push(tx: &mut Tx, event: &Event) -> Result<String, CommentsError> {
    push_message(tx, &outgoing(event)).await
}

/// How an event goes into the outbox.
fn outgoing(event: &Event) -> Outgoing<'static> {
    Outgoing {
        topic: event.topic(),
        event_type: event.type_name(),
        key: Some(event.key()),
        payload: event.encode(),
        priority: 4,
        not_before: None,
    }
}

/// The insert of `event` into the outbox as a [`Stmt`], for a [`Store::write`] batch.
pub(crate) fn outbox_insert(event: &Event) -> Stmt {
    outbox_stmt(&new_id(), &outgoing(event), None)
}

/// The insert of `msg` into the outbox under `id`; with a `guard` (a condition on parameter
/// `$9`, and its value), written only where the condition holds.
fn outbox_stmt(id: &str, msg: &Outgoing<'_>, guard: Option<(&str, &str)>) -> Stmt {
    let sql = "INSERT INTO outbox (id, topic, event_type, msg_key, payload, created_at, priority, not_before) \
               SELECT $1, $2, $3, $4, $5, $6, $7, $8";
    let stmt = Stmt::new(match guard {
        Some((condition, _)) => format!("{sql} WHERE {condition}"),
        None => sql.to_string(),
    })
    .bind(id)
    .bind(msg.topic)
    .bind(msg.event_type)
    .bind(msg.key.clone())
    .bind(msg.payload.clone())
    .bind(now_ms())
    .bind(i64::from(msg.priority))
    .bind(msg.not_before);
    match guard {
        Some((_, arg)) => stmt.bind(arg),
        None => stmt,
    }
}

/// Creates or refreshes `actor`'s user row; returns its `banned` flag.
fn upsert_user(actor: &Actor, now: i64) -> Stmt {
    Stmt::new(
        "INSERT INTO users (name, email, role, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET email = excluded.email, role = excluded.role RETURNING banned",
    )
    .bind(actor.name.as_str())
    .bind(actor.email.as_str())
    .bind(actor.role.as_str())
    .bind(now)
}

/// A message for the outbox that is not one of [`Event`] (a job's execution message).
#[derive(Clone, Debug)]
pub struct Outgoing<'a> {
    /// Topic, without the deployment's namespace.
    pub topic: &'a str,
    /// The `type` header.
    pub event_type: &'a str,
    /// Ordering key.
    pub key: Option<String>,
    /// Body.
    pub payload: String,
    /// Bus priority 0–9.
    pub priority: u8,
    /// Not before, ms since the epoch.
    pub not_before: Option<i64>,
}

/// Writes `msg` into the outbox inside `tx`; returns its id (the bus message id).
pub async fn push_message(tx: &mut Tx, msg: &Outgoing<'_>) -> Result<String, CommentsError> {
    let id = new_id();
    outbox_stmt(&id, msg, None).run_in(tx).await.map_err(db("writing to the outbox"))?;
    Ok(id)
}

fn comment_from(r: &AnyRow) -> Comment {
    let status: String = r.get("status");
    let body = if status == "visible" { r.get("body") } else { String::new() };
    Comment {
        id: r.get("id"),
        post_id: r.get("post_id"),
        parent_id: r.get("parent_id"),
        author: r.get("author"),
        body,
        status,
        version: r.get("version"),
        created_at: r.get("created_at"),
        edited_at: r.get("edited_at"),
    }
}

impl Service {
    /// The operations over `store`.
    pub fn new(store: Store) -> Self {
        Self { store, outbox_written: Arc::new(Notify::new()) }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Notified after each commit that wrote events.
    pub fn outbox_signal(&self) -> Arc<Notify> {
        self.outbox_written.clone()
    }

    async fn begin(&self) -> Result<Tx, CommentsError> {
        self.store.begin().await.map_err(db("starting a transaction"))
    }

    async fn commit(&self, tx: Tx) -> Result<(), CommentsError> {
        tx.commit().await.map_err(db("committing"))?;
        self.committed();
        Ok(())
    }

    /// After a commit that wrote to the outbox: wakes the relay.
    fn committed(&self) {
        self.outbox_written.notify_one();
        crate::relay::failpoint("after-domain-commit");
    }

    /// Creates or refreshes the caller's user row (tokens are the source of users); refuses
    /// banned users.
    async fn writer(&self, tx: &mut Tx, actor: &Actor) -> Result<(), CommentsError> {
        let rows = upsert_user(actor, now_ms()).run_in(tx).await.map_err(db("recording the user"))?;
        let banned = rows.first().map_or(0, |r| r.get::<i64>(0));
        if banned != 0 {
            return Err(CommentsError::Forbidden(format!("user {} is banned", actor.name)));
        }
        Ok(())
    }

    /// Creates a post.
    pub async fn create_post(&self, actor: &Actor, title: &str, body: &str) -> Result<Post, CommentsError> {
        let title = text("title", title, MAX_TITLE_CHARS)?;
        let body = text("body", body, MAX_BODY_CHARS)?;
        let mut tx = self.begin().await?;
        self.writer(&mut tx, actor).await?;
        let post = Post { id: new_id(), author: actor.name.clone(), title, body, created_at: now_ms() };
        sqlx::query("INSERT INTO posts (id, author, title, body, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&post.id)
            .bind(&post.author)
            .bind(&post.title)
            .bind(&post.body)
            .bind(post.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db("writing the post"))?;
        self.commit(tx).await?;
        Ok(post)
    }

    /// A post by id.
    pub async fn post(&self, id: &str) -> Result<Post, CommentsError> {
        let r = sqlx::query("SELECT id, author, title, body, created_at FROM posts WHERE id = $1")
            .bind(id)
            .fetch_optional(self.store.pool())
            .await
            .map_err(db("reading a post"))?
            .ok_or_else(|| CommentsError::not_found("post", id))?;
        Ok(Post {
            id: r.get("id"),
            author: r.get("author"),
            title: r.get("title"),
            body: r.get("body"),
            created_at: r.get("created_at"),
        })
    }

    /// Writes a comment (a reply when `parent_id` is set) and asks to notify the post's author
    /// and the parent's author.
    ///
    /// One read (the post's and the parent's authors, outside the writer's turn) and one batch
    /// of writes in one transaction: the user row, the comment and its events. Every insert of
    /// the batch is guarded by the author not being banned, so a ban that lands between the read
    /// and the write leaves nothing behind.
    pub async fn create_comment(
        &self,
        actor: &Actor,
        post_id: &str,
        body: &str,
        parent_id: Option<&str>,
    ) -> Result<Comment, CommentsError> {
        let body = text("body", body, MAX_BODY_CHARS)?;
        let authors = self
            .store
            .read(
                Stmt::new(
                    "SELECT 'post', p.author, u.email, p.id FROM posts p JOIN users u ON u.name = p.author WHERE p.id = $1 \
                     UNION ALL \
                     SELECT 'parent', c.author, u.email, c.post_id FROM comments c JOIN users u ON u.name = c.author \
                     WHERE c.id = $2",
                )
                .bind(post_id)
                .bind(parent_id.unwrap_or("")),
            )
            .await
            .map_err(db("reading the post"))?;
        let find = |what: &str| authors.iter().find(|r| r.get::<String>(0) == what);
        let post = find("post").ok_or_else(|| CommentsError::not_found("post", post_id))?;
        let (post_author, post_email): (String, String) = (post.get(1), post.get(2));
        let mut parent_author = None;
        if let Some(pid) = parent_id {
            let p = find("parent")
                .ok_or_else(|| CommentsError::invalid("parent_id", format!("comment {pid} does not exist")))?;
            if p.get::<String>(3) != post_id {
                return Err(CommentsError::invalid("parent_id", format!("comment {pid} belongs to another post")));
            }
            parent_author = Some((p.get::<String>(1), p.get::<String>(2)));
        }
        let now = now_ms();
        let c = Comment {
            id: new_id(),
            post_id: post_id.to_string(),
            parent_id: parent_id.map(str::to_string),
            author: actor.name.clone(),
            body: body.clone(),
            status: "visible".into(),
            version: 1,
            created_at: now,
            edited_at: None,
        };
        let mut batch = vec![
            upsert_user(actor, now),
            Stmt::new(
                "INSERT INTO comments (id, post_id, parent_id, author, body, status, version, created_at) \
                 SELECT $1, $2, $3, $4, $5, 'visible', 1, $6 \
                 WHERE NOT EXISTS (SELECT 1 FROM users WHERE name = $4 AND banned <> 0) RETURNING id",
            )
            .bind(c.id.as_str())
            .bind(c.post_id.as_str())
            .bind(c.parent_id.as_deref())
            .bind(c.author.as_str())
            .bind(c.body.as_str())
            .bind(now),
        ];
        let mut events = vec![Event::CommentCreated(events::CommentCreated {
            comment_id: c.id.clone(),
            post_id: c.post_id.clone(),
            parent_id: c.parent_id.clone(),
            author: actor.name.clone(),
            body,
            author_email: actor.email.clone(),
            client_ip: actor.ip.clone(),
            at_ms: now,
        })];
        let mut told = vec![actor.name.clone()];
        let targets = parent_author.into_iter().map(|(u, e)| (u, e, "reply")).chain([(
            post_author,
            post_email,
            "comment_on_post",
        )]);
        for (user, email, kind) in targets {
            if told.contains(&user) {
                continue;
            }
            let message = match kind {
                "reply" => format!("{} replied to your comment", actor.name),
                _ => format!("{} commented on your post", actor.name),
            };
            events.push(Event::NotificationRequested(events::NotificationRequested {
                notification_id: new_id(),
                user: user.clone(),
                email,
                kind: kind.into(),
                post_id: Some(c.post_id.clone()),
                comment_id: Some(c.id.clone()),
                message,
                at_ms: now,
            }));
            told.push(user);
        }
        for e in &events {
            let unbanned = "NOT EXISTS (SELECT 1 FROM users WHERE name = $9 AND banned <> 0)";
            batch.push(outbox_stmt(&new_id(), &outgoing(e), Some((unbanned, &actor.name))));
        }
        let done = self.store.write(batch).await.map_err(db("writing the comment"))?;
        if done[0].first().is_some_and(|r| r.get::<i64>(0) != 0) || done[1].is_empty() {
            return Err(CommentsError::Forbidden(format!("user {} is banned", actor.name)));
        }
        self.committed();
        Ok(c)
    }

    async fn comment_for_change(&self, tx: &mut Tx, actor: &Actor, id: &str) -> Result<Comment, CommentsError> {
        let r = sqlx::query(
            "SELECT id, post_id, parent_id, author, body, status, version, created_at, edited_at FROM comments WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("reading the comment"))?
        .ok_or_else(|| CommentsError::not_found("comment", id))?;
        let c = comment_from(&r);
        if c.author != actor.name && !actor.role.moderates() {
            return Err(CommentsError::Forbidden(format!("comment {id} belongs to {}", c.author)));
        }
        if c.status == "deleted" {
            return Err(CommentsError::Conflict(format!("comment {id} is deleted")));
        }
        Ok(c)
    }

    /// Replaces a comment's body (author, moderator or admin).
    pub async fn edit_comment(&self, actor: &Actor, id: &str, body: &str) -> Result<Comment, CommentsError> {
        let body = text("body", body, MAX_BODY_CHARS)?;
        let mut tx = self.begin().await?;
        self.writer(&mut tx, actor).await?;
        let mut c = self.comment_for_change(&mut tx, actor, id).await?;
        let now = now_ms();
        c.version += 1;
        c.edited_at = Some(now);
        sqlx::query("UPDATE comments SET body = $1, version = $2, edited_at = $3 WHERE id = $4")
            .bind(&body)
            .bind(c.version)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db("updating the comment"))?;
        let e = events::CommentEdited {
            comment_id: id.into(),
            post_id: c.post_id.clone(),
            editor: actor.name.clone(),
            body: body.clone(),
            version: c.version,
            client_ip: actor.ip.clone(),
            at_ms: now,
        };
        push(&mut tx, &Event::CommentEdited(e)).await?;
        self.commit(tx).await?;
        if c.status == "visible" {
            c.body = body;
        }
        Ok(c)
    }

    /// Soft-deletes a comment (author, moderator or admin): it keeps its place in the thread.
    pub async fn delete_comment(&self, actor: &Actor, id: &str) -> Result<(), CommentsError> {
        let mut tx = self.begin().await?;
        self.writer(&mut tx, actor).await?;
        let c = self.comment_for_change(&mut tx, actor, id).await?;
        let now = now_ms();
        sqlx::query("UPDATE comments SET status = 'deleted', deleted_at = $1, version = version + 1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db("deleting the comment"))?;
        let e = events::CommentDeleted {
            comment_id: id.into(),
            post_id: c.post_id,
            deleted_by: actor.name.clone(),
            client_ip: actor.ip.clone(),
            at_ms: now,
        };
        push(&mut tx, &Event::CommentDeleted(e)).await?;
        self.commit(tx).await
    }

    /// A post's comments, oldest first, `limit` at most after `after` (a comment id).
    pub async fn list_comments(
        &self,
        post_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Comment>, CommentsError> {
        self.post(post_id).await?;
        let rows = sqlx::query(
            "SELECT id, post_id, parent_id, author, body, status, version, created_at, edited_at FROM comments \
             WHERE post_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(post_id)
        .bind(after.unwrap_or(""))
        .bind(limit.clamp(1, 500))
        .fetch_all(self.store.pool())
        .await
        .map_err(db("listing comments"))?;
        Ok(rows.iter().map(comment_from).collect())
    }

    /// Reports a comment: it enters (or climbs) the moderation queue and every moderator is
    /// asked to be alerted.
    pub async fn report_comment(&self, actor: &Actor, id: &str, reason: &str) -> Result<String, CommentsError> {
        let reason = text("reason", reason, MAX_REASON_CHARS)?;
        let mut tx = self.begin().await?;
        self.writer(&mut tx, actor).await?;
        let post_id: String = sqlx::query("SELECT post_id FROM comments WHERE id = $1 AND status <> 'deleted'")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("reading the comment"))?
            .ok_or_else(|| CommentsError::not_found("comment", id))?
            .get(0);
        let now = now_ms();
        let report_id = new_id();
        sqlx::query("INSERT INTO reports (id, comment_id, reporter, reason, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&report_id)
            .bind(id)
            .bind(&actor.name)
            .bind(&reason)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db("writing the report"))?;
        enqueue(&mut tx, id, "report", 0.0, &[format!("report: {reason}")], 1).await?;
        let e = events::CommentReported {
            report_id: report_id.clone(),
            comment_id: id.into(),
            post_id: post_id.clone(),
            reporter: actor.name.clone(),
            reason: reason.clone(),
            client_ip: actor.ip.clone(),
            at_ms: now,
        };
        push(&mut tx, &Event::CommentReported(e)).await?;
        let mods = sqlx::query("SELECT name, email FROM users WHERE role IN ('moderator', 'admin') AND banned = 0")
            .fetch_all(&mut *tx)
            .await
            .map_err(db("finding moderators"))?;
        for m in mods {
            let n = events::NotificationRequested {
                notification_id: new_id(),
                user: m.get(0),
                email: m.get(1),
                kind: "report".into(),
                post_id: Some(post_id.clone()),
                comment_id: Some(id.into()),
                message: format!("{} reported a comment: {reason}", actor.name),
                at_ms: now,
            };
            push(&mut tx, &Event::NotificationRequested(n)).await?;
        }
        self.commit(tx).await?;
        Ok(report_id)
    }

    /// The open moderation queue, most reported and highest scored first.
    pub async fn moderation_queue(&self, actor: &Actor, limit: i64) -> Result<Vec<QueueEntry>, CommentsError> {
        if !actor.role.moderates() {
            return Err(CommentsError::Forbidden("the moderation queue is for moderators".into()));
        }
        let rows = sqlx::query(
            "SELECT q.comment_id, c.post_id, c.author, c.body, q.source, q.score, q.reasons, q.reports, q.enqueued_at \
             FROM moderation_queue q JOIN comments c ON c.id = q.comment_id WHERE q.decided_at IS NULL \
             ORDER BY q.reports DESC, q.score DESC, q.enqueued_at LIMIT $1",
        )
        .bind(limit.clamp(1, 500))
        .fetch_all(self.store.pool())
        .await
        .map_err(db("reading the moderation queue"))?;
        Ok(rows
            .iter()
            .map(|r| QueueEntry {
                comment_id: r.get(0),
                post_id: r.get(1),
                author: r.get(2),
                body: r.get(3),
                source: r.get(4),
                score: r.get(5),
                reasons: serde_json::from_str(&r.get::<String, _>(6)).unwrap_or_default(),
                reports: r.get(7),
                enqueued_at: r.get(8),
            })
            .collect())
    }

    /// A moderator's decision: `approve` (visible again, leaves the queue), `hide`, or `ban`
    /// (hide and ban the author).
    pub async fn decide(
        &self,
        actor: &Actor,
        comment_id: &str,
        action: &str,
        note: &str,
    ) -> Result<String, CommentsError> {
        if !actor.role.moderates() {
            return Err(CommentsError::Forbidden("decisions are for moderators".into()));
        }
        let status = match action {
            "approve" => "visible",
            "hide" | "ban" => "hidden",
            other => return Err(CommentsError::invalid("action", format!("{other:?}: expected approve, hide or ban"))),
        };
        if note.chars().count() > MAX_REASON_CHARS {
            return Err(CommentsError::invalid("note", format!("longer than {MAX_REASON_CHARS} characters")));
        }
        let mut tx = self.begin().await?;
        self.writer(&mut tx, actor).await?;
        let r = sqlx::query("SELECT author, status, post_id FROM comments WHERE id = $1")
            .bind(comment_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("reading the comment"))?
            .ok_or_else(|| CommentsError::not_found("comment", comment_id))?;
        let (author, current): (String, String) = (r.get(0), r.get(1));
        if current == "deleted" {
            return Err(CommentsError::Conflict(format!("comment {comment_id} is deleted")));
        }
        let now = now_ms();
        let id = new_id();
        sqlx::query(
            "INSERT INTO moderation_decisions (id, comment_id, moderator, action, note, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(comment_id)
        .bind(&actor.name)
        .bind(action)
        .bind(note)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db("writing the decision"))?;
        sqlx::query("UPDATE comments SET status = $1, version = version + 1 WHERE id = $2")
            .bind(status)
            .bind(comment_id)
            .execute(&mut *tx)
            .await
            .map_err(db("updating the comment"))?;
        sqlx::query("UPDATE moderation_queue SET decided_at = $1 WHERE comment_id = $2")
            .bind(now)
            .bind(comment_id)
            .execute(&mut *tx)
            .await
            .map_err(db("closing the queue entry"))?;
        if action == "ban" {
            sqlx::query("UPDATE users SET banned = 1 WHERE name = $1")
                .bind(&author)
                .execute(&mut *tx)
                .await
                .map_err(db("banning the author"))?;
        }
        let e = events::ModerationDecided {
            decision_id: id.clone(),
            comment_id: comment_id.into(),
            moderator: actor.name.clone(),
            action: action.into(),
            note: note.into(),
            at_ms: now,
        };
        push(&mut tx, &Event::ModerationDecided(e)).await?;
        self.commit(tx).await?;
        Ok(id)
    }

    /// The caller's in-app notifications, newest first, older than `before` (an id) if given.
    pub async fn notifications(
        &self,
        user: &str,
        before: Option<&str>,
        unread_only: bool,
        limit: i64,
    ) -> Result<Vec<Notification>, CommentsError> {
        let rows = sqlx::query(
            "SELECT id, kind, post_id, comment_id, message, created_at, read_at FROM notifications \
             WHERE user_name = $1 AND in_app = 1 AND ($2 = '' OR id < $2) AND ($3 = 0 OR read_at IS NULL) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(user)
        .bind(before.unwrap_or(""))
        .bind(i64::from(unread_only))
        .bind(limit.clamp(1, 500))
        .fetch_all(self.store.pool())
        .await
        .map_err(db("listing notifications"))?;
        Ok(rows.iter().map(notification_from).collect())
    }

    /// The caller's in-app notifications newer than `after` (an id), oldest first: the SSE feed.
    pub async fn notifications_after(&self, user: &str, after: &str) -> Result<Vec<Notification>, CommentsError> {
        let rows = sqlx::query(
            "SELECT id, kind, post_id, comment_id, message, created_at, read_at FROM notifications \
             WHERE user_name = $1 AND in_app = 1 AND id > $2 ORDER BY id LIMIT 200",
        )
        .bind(user)
        .bind(after)
        .fetch_all(self.store.pool())
        .await
        .map_err(db("reading new notifications"))?;
        Ok(rows.iter().map(notification_from).collect())
    }

    /// Marks the caller's notifications read: the given ids, or all when `ids` is empty.
    /// Returns how many changed.
    pub async fn mark_read(&self, user: &str, ids: &[String]) -> Result<u64, CommentsError> {
        let now = now_ms();
        let mut changed = 0;
        let mut tx = self.begin().await?;
        if ids.is_empty() {
            changed = sqlx::query("UPDATE notifications SET read_at = $1 WHERE user_name = $2 AND read_at IS NULL")
                .bind(now)
                .bind(user)
                .execute(&mut *tx)
                .await
                .map_err(db("marking notifications read"))?
                .rows_affected();
        }
        for id in ids {
            changed += sqlx::query(
                "UPDATE notifications SET read_at = $1 WHERE user_name = $2 AND id = $3 AND read_at IS NULL",
            )
            .bind(now)
            .bind(user)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db("marking a notification read"))?
            .rows_affected();
        }
        tx.commit().await.map_err(db("committing"))?;
        Ok(changed)
    }

    /// The caller's notification preferences (defaults for an unknown user).
    pub async fn preferences(&self, user: &str) -> Result<Preferences, CommentsError> {
        let r = sqlx::query("SELECT notify_in_app, notify_email FROM users WHERE name = $1")
            .bind(user)
            .fetch_optional(self.store.pool())
            .await
            .map_err(db("reading preferences"))?;
        Ok(r.map_or(Preferences { in_app: true, email: true }, |r| Preferences {
            in_app: r.get::<i64, _>(0) != 0,
            email: r.get::<i64, _>(1) != 0,
        }))
    }

    /// Sets the caller's notification preferences.
    pub async fn set_preferences(&self, actor: &Actor, p: Preferences) -> Result<Preferences, CommentsError> {
        let mut tx = self.begin().await?;
        self.writer(&mut tx, actor).await?;
        sqlx::query("UPDATE users SET notify_in_app = $1, notify_email = $2 WHERE name = $3")
            .bind(i64::from(p.in_app))
            .bind(i64::from(p.email))
            .bind(&actor.name)
            .execute(&mut *tx)
            .await
            .map_err(db("writing preferences"))?;
        tx.commit().await.map_err(db("committing"))?;
        Ok(p)
    }
}

fn notification_from(r: &AnyRow) -> Notification {
    Notification {
        id: r.get(0),
        kind: r.get(1),
        post_id: r.get(2),
        comment_id: r.get(3),
        message: r.get(4),
        created_at: r.get(5),
        read_at: r.get(6),
    }
}

/// Puts `comment_id` into the open moderation queue, or raises its entry: scores keep the
/// maximum, reasons accumulate, reports add up. Reopens a decided entry.
pub(crate) async fn enqueue(
    tx: &mut Tx,
    comment_id: &str,
    source: &str,
    score: f64,
    reasons: &[String],
    reports: i64,
) -> Result<(), CommentsError> {
    let existing =
        sqlx::query("SELECT score, reasons, reports, decided_at FROM moderation_queue WHERE comment_id = $1")
            .bind(comment_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db("reading the queue"))?;
    let now = now_ms();
    match existing {
        None => {
            sqlx::query(
                "INSERT INTO moderation_queue (comment_id, source, score, reasons, reports, enqueued_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(comment_id)
            .bind(source)
            .bind(score)
            .bind(serde_json::to_string(reasons).expect("strings serialize"))
            .bind(reports)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(db("enqueueing"))?;
        }
        Some(r) => {
            let mut all: Vec<String> = serde_json::from_str(&r.get::<String, _>(1)).unwrap_or_default();
            all.extend(reasons.iter().cloned());
            all.dedup();
            let decided: Option<i64> = r.get(3);
            sqlx::query(
                "UPDATE moderation_queue SET score = $1, reasons = $2, reports = $3, source = $4, decided_at = NULL, \
                 enqueued_at = CASE WHEN $5 = 1 THEN $6 ELSE enqueued_at END WHERE comment_id = $7",
            )
            .bind(score.max(r.get::<f64, _>(0)))
            .bind(serde_json::to_string(&all).expect("strings serialize"))
            .bind(r.get::<i64, _>(2) + reports)
            .bind(if reports > 0 { "report" } else { source })
            .bind(i64::from(decided.is_some()))
            .bind(now)
            .bind(comment_id)
            .execute(&mut **tx)
            .await
            .map_err(db("raising the queue entry"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    fn actor(name: &str, role: Role) -> Actor {
        Actor { name: name.into(), role, email: format!("{name}@example.org"), ip: Some("192.0.2.7".into()) }
    }

    async fn count(store: &Store, sql: &str) -> i64 {
        store.read(Stmt::new(sql)).await.unwrap().first().unwrap().get::<i64>(0)
    }

    /// A comment with its events; a reply notifies the parent's author too; a banned author
    /// writes nothing at all; bad references are refused.
    async fn comments_and_their_events(store: Store) {
        let svc = Service::new(store.clone());
        let (alice, bob, mod_) = (actor("alice", Role::User), actor("bob", Role::User), actor("mo", Role::Moderator));
        let post = svc.create_post(&alice, "M87 at 5 GHz", "first light").await.unwrap();
        let c1 = svc.create_comment(&bob, &post.id, "nice jet", None).await.unwrap();
        let outbox = "SELECT COUNT(*) FROM outbox";
        assert_eq!(count(&store, outbox).await, 2, "CommentCreated + the post author's notification");
        let reply = svc.create_comment(&alice, &post.id, "thanks", Some(&c1.id)).await.unwrap();
        assert_eq!(reply.parent_id.as_deref(), Some(c1.id.as_str()));
        assert_eq!(count(&store, outbox).await, 4, "CommentCreated + bob's reply notification, not alice's own");
        let kinds = store
            .read(Stmt::new("SELECT payload FROM outbox WHERE event_type = 'NotificationRequested' ORDER BY payload"))
            .await
            .unwrap();
        let payloads: Vec<String> = kinds.iter().map(|r| r.get::<String>(0)).collect();
        assert!(payloads.iter().any(|p| p.contains("\"user\":\"bob\"") && p.contains("\"reply\"")), "{payloads:?}");

        let err = svc.create_comment(&bob, "no-such-post", "x", None).await.unwrap_err();
        assert!(matches!(err, CommentsError::NotFound { .. }), "{err:?}");
        let err = svc.create_comment(&bob, &post.id, "x", Some("no-such-comment")).await.unwrap_err();
        assert!(matches!(err, CommentsError::Invalid { .. }), "{err:?}");
        let other = svc.create_post(&bob, "other", "post").await.unwrap();
        let err = svc.create_comment(&bob, &other.id, "x", Some(&c1.id)).await.unwrap_err();
        assert!(matches!(err, CommentsError::Invalid { .. }), "a parent on another post: {err:?}");

        svc.decide(&mod_, &c1.id, "ban", "spam").await.unwrap();
        let before = (count(&store, outbox).await, count(&store, "SELECT COUNT(*) FROM comments").await);
        let err = svc.create_comment(&bob, &post.id, "again", None).await.unwrap_err();
        assert!(matches!(err, CommentsError::Forbidden(_)), "{err:?}");
        let after = (count(&store, outbox).await, count(&store, "SELECT COUNT(*) FROM comments").await);
        assert_eq!(after, before, "a banned author's comment leaves no row and no event");
    }

    #[tokio::test]
    async fn comments_and_their_events_on_sqlite() {
        let (_dir, store) = crate::store::sqlite_for_tests().await;
        comments_and_their_events(store).await;
    }

    #[tokio::test]
    async fn comments_and_their_events_on_postgres() {
        comments_and_their_events(crate::store::fresh_postgres_for_tests("hz_service").await).await;
    }
}
