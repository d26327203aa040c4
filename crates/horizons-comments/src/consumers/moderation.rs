//! The moderation worker: scores every new or edited comment with the content filter
//! (`horizons-moderation`: rules plus a naive Bayes classifier) and puts flagged ones into the
//! moderation queue with the filter's reasons. Reports enter the queue from the API directly
//! (in the report's own transaction); moderators are alerted by e-mail through the
//! notification requests written with it.

use async_trait::async_trait;
use horizons_bus::{Context, Envelope, Handler, HandlerError};
use horizons_moderation::Moderator;

use crate::consumers::{claim, decode, inbox, retryable};
use crate::events::Event;
use crate::store::Store;
use crate::CommentsError;

/// The `moderation` group's handler.
#[derive(Debug)]
pub struct Moderation {
    store: Store,
    filter: &'static Moderator,
}

impl Moderation {
    /// A handler with the default trained filter.
    pub fn new(store: Store) -> Self {
        Self { store, filter: Moderator::default_trained() }
    }

    async fn apply(&self, msg: &Envelope, comment_id: &str, body: &str) -> Result<(), CommentsError> {
        let verdict = self.filter.score(body);
        if !verdict.flagged {
            // Only the inbox entry to write: one statement, no transaction of our own.
            let done = self.store.write(vec![inbox("moderation", msg)]).await;
            return done.map(drop).map_err(|e| CommentsError::db("recording the message in the inbox", e));
        }
        let mut tx = self.store.begin().await.map_err(|e| CommentsError::db("begin", e))?;
        if !claim(&mut tx, "moderation", msg).await? {
            return Ok(());
        }
        let reasons: Vec<String> = verdict.reasons.iter().map(|r| format!("filter: {r}")).collect();
        crate::service::enqueue(&mut tx, comment_id, "filter", verdict.score, &reasons, 0).await?;
        metrics::counter!("horizons_moderation_flagged_total").increment(1);
        tx.commit().await.map_err(|e| CommentsError::db("committing", e))
    }
}

#[async_trait]
impl Handler for Moderation {
    async fn handle(&self, msg: &Envelope, _cx: &Context) -> Result<(), HandlerError> {
        match decode(msg)? {
            Event::CommentCreated(e) => self.apply(msg, &e.comment_id, &e.body).await.map_err(retryable),
            Event::CommentEdited(e) => self.apply(msg, &e.comment_id, &e.body).await.map_err(retryable),
            _ => Ok(()),
        }
    }
}
