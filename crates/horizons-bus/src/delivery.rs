//! A delivery: one message handed to one consumer, ending in exactly one settlement.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::envelope::{Envelope, Millis};
use crate::error::BusError;
use crate::retry::Settlement;

/// Headers a dead-lettered message carries, the same on every backend.
pub mod dlq_headers {
    /// Why it was dead-lettered.
    pub const REASON: &str = "x-dlq-reason";
    /// How many deliveries were made.
    pub const ATTEMPTS: &str = "x-dlq-attempts";
    /// The first recorded handler error.
    pub const FIRST_ERROR: &str = "x-dlq-first-error";
    /// The last recorded handler error.
    pub const LAST_ERROR: &str = "x-dlq-last-error";
    /// The topic it came from.
    pub const TOPIC: &str = "x-dlq-topic";
    /// The group that gave up on it.
    pub const GROUP: &str = "x-dlq-group";
    /// When, in ms since the epoch.
    pub const AT: &str = "x-dlq-at";
    /// Where it was in the source (offset, partition/offset…), backend-specific.
    pub const SOURCE_POSITION: &str = "x-dlq-source-position";
    /// All of the above, for stripping on redrive.
    pub const ALL: [&str; 8] = [REASON, ATTEMPTS, FIRST_ERROR, LAST_ERROR, TOPIC, GROUP, AT, SOURCE_POSITION];
}

/// Where a delivery sits in its source: an offset, and a partition where the backend has them.
/// Copy-sized, so handing it out costs nothing on the hot path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Position {
    /// The partition, for partitioned backends.
    pub partition: Option<u32>,
    /// The offset (or delivery tag) within it.
    pub offset: u64,
}

impl Position {
    /// An offset in an unpartitioned source.
    pub fn offset(offset: u64) -> Self {
        Self { partition: None, offset }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.partition {
            Some(p) => write!(f, "{p}/{}", self.offset),
            None => write!(f, "{}", self.offset),
        }
    }
}

/// The backend side of a delivery: how to settle it.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Settles the delivery. Called at most once.
    async fn settle(self: Box<Self>, settlement: Settlement) -> Result<(), BusError>;

    /// Settles at once without waiting, where the backend can (an ack that is a channel send,
    /// say); `None` sends the caller to [`Acker::settle`]. Saves an allocation per message on
    /// hot paths.
    fn settle_now(&mut self, settlement: &Settlement) -> Option<Result<(), BusError>> {
        let _ = settlement;
        None
    }

    /// Called when the delivery is dropped unsettled: the backend makes the message available
    /// again (at once, or when its lease runs out). Must not block.
    fn release(self: Box<Self>);
}

/// The backend side of deliveries settled by token: one sink shared by every delivery of a
/// consumer, so that handing out a delivery allocates nothing (a reference count instead of a
/// boxed [`Acker`] per message). For backends whose settlement is a message to the consumer's
/// own thread.
pub trait TokenAcker: Send + Sync {
    /// Settles the delivery `token` names. Must not block; called at most once per token.
    fn settle(&self, token: u128, settlement: Settlement) -> Result<(), BusError>;

    /// The delivery `token` names was dropped unsettled (see [`Acker::release`]). Must not block.
    fn release(&self, token: u128);
}

/// How a delivery is settled.
enum AckerSlot {
    Boxed(Box<dyn Acker>),
    Token(std::sync::Arc<dyn TokenAcker>, u128),
}

/// One message handed to one consumer.
///
/// A delivery ends in exactly one of [`Delivery::ack`], [`Delivery::retry_after`] or
/// [`Delivery::dead_letter`]; each takes `self`, so a second settlement does not compile. A
/// delivery dropped unsettled is released and the message is delivered again (at-least-once).
pub struct Delivery {
    /// The message.
    pub envelope: Envelope,
    /// 1 for the first delivery, counting redeliveries and retries.
    pub attempt: u32,
    /// Where it sits in its source, for logs and DLQ headers.
    pub position: Position,
    /// When the backend stored it, where known.
    pub stored_at: Option<Millis>,
    acker: Option<AckerSlot>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.envelope.id)
            .field("topic", &self.envelope.topic)
            .field("attempt", &self.attempt)
            .field("position", &self.position)
            .finish()
    }
}

impl Delivery {
    /// Wraps a message with the backend's acker.
    pub fn new(envelope: Envelope, attempt: u32, position: Position, acker: Box<dyn Acker>) -> Self {
        Self { envelope, attempt, position, stored_at: None, acker: Some(AckerSlot::Boxed(acker)) }
    }

    /// Wraps a message settled through `sink` under `token`.
    pub fn with_token(
        envelope: Envelope,
        attempt: u32,
        position: Position,
        sink: std::sync::Arc<dyn TokenAcker>,
        token: u128,
    ) -> Self {
        Self { envelope, attempt, position, stored_at: None, acker: Some(AckerSlot::Token(sink, token)) }
    }

    /// Settles with `s`.
    pub async fn settle(mut self, s: Settlement) -> Result<(), BusError> {
        match self.acker.take() {
            Some(AckerSlot::Boxed(mut a)) => match a.settle_now(&s) {
                Some(done) => done,
                None => a.settle(s).await,
            },
            Some(AckerSlot::Token(sink, token)) => sink.settle(token, s),
            None => Ok(()),
        }
    }

    /// The work is done and durable: the message will not be delivered to this group again.
    pub async fn ack(self) -> Result<(), BusError> {
        self.settle(Settlement::Ack).await
    }

    /// Deliver again, to any member, not before `delay`; `error` is kept as the last error.
    pub async fn retry_after(self, delay: Duration, error: impl Into<String>) -> Result<(), BusError> {
        self.settle(Settlement::RetryAfter { delay, error: error.into() }).await
    }

    /// Move to the group's dead-letter queue with `reason`.
    pub async fn dead_letter(self, reason: impl Into<String>) -> Result<(), BusError> {
        self.settle(Settlement::DeadLetter { reason: reason.into(), error: None }).await
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        match self.acker.take() {
            Some(AckerSlot::Boxed(a)) => a.release(),
            Some(AckerSlot::Token(sink, token)) => sink.release(token),
            None => {}
        }
    }
}

/// A message in a dead-letter queue, as `dlq list` shows it.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The message as it was, without the DLQ headers.
    pub envelope: Envelope,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Deliveries made.
    pub attempts: u32,
    /// First handler error, if any was recorded.
    pub first_error: Option<String>,
    /// Last handler error, if any was recorded.
    pub last_error: Option<String>,
    /// When.
    pub dead_at: Millis,
    /// Where it sat in its source.
    pub source_position: Option<String>,
}

/// What the backend knows about a message's failures when it dead-letters it.
#[derive(Clone, Debug, Default)]
pub struct FailureRecord {
    /// Deliveries made.
    pub attempts: u32,
    /// First handler error.
    pub first_error: Option<String>,
    /// Last handler error.
    pub last_error: Option<String>,
}

impl DeadLetter {
    /// Builds the DLQ copy of `env`: same id, payload and key, with DLQ headers added.
    pub fn encode(env: &Envelope, group: &str, reason: &str, failures: &FailureRecord, position: &str) -> Envelope {
        use dlq_headers as h;
        let mut out = env.clone();
        out.not_before = None;
        out.headers.insert(h::REASON.into(), reason.into());
        out.headers.insert(h::ATTEMPTS.into(), failures.attempts.to_string());
        if let Some(e) = &failures.first_error {
            out.headers.insert(h::FIRST_ERROR.into(), e.clone());
        }
        if let Some(e) = &failures.last_error {
            out.headers.insert(h::LAST_ERROR.into(), e.clone());
        }
        out.headers.insert(h::TOPIC.into(), env.topic.to_string());
        out.headers.insert(h::GROUP.into(), group.into());
        out.headers.insert(h::AT.into(), crate::envelope::now_millis().to_string());
        out.headers.insert(h::SOURCE_POSITION.into(), position.into());
        out
    }

    /// Reads a DLQ copy back. `topic` is the original topic (the copy may sit elsewhere).
    pub fn decode(mut env: Envelope) -> Self {
        use dlq_headers as h;
        let take = |env: &mut Envelope, k: &str| env.headers.remove(k);
        let reason = take(&mut env, h::REASON).unwrap_or_default();
        let attempts = take(&mut env, h::ATTEMPTS).and_then(|s| s.parse().ok()).unwrap_or(0);
        let first_error = take(&mut env, h::FIRST_ERROR);
        let last_error = take(&mut env, h::LAST_ERROR);
        let dead_at = take(&mut env, h::AT).and_then(|s| s.parse().ok()).unwrap_or(0);
        let source_position = take(&mut env, h::SOURCE_POSITION);
        if let Some(t) = take(&mut env, h::TOPIC).and_then(|t| crate::Topic::new(t).ok()) {
            env.topic = t;
        }
        take(&mut env, h::GROUP);
        Self { envelope: env, reason, attempts, first_error, last_error, dead_at, source_position }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::Topic;

    /// Records what reaches it.
    #[derive(Default)]
    struct Sink(Mutex<Vec<String>>);

    impl TokenAcker for Sink {
        fn settle(&self, token: u128, s: Settlement) -> Result<(), BusError> {
            self.0.lock().unwrap().push(format!("settle {token} {s:?}"));
            Ok(())
        }

        fn release(&self, token: u128) {
            self.0.lock().unwrap().push(format!("release {token}"));
        }
    }

    fn delivery(sink: &Arc<Sink>, token: u128) -> Delivery {
        let env = Envelope::new(Topic::new("t").unwrap(), "x");
        Delivery::with_token(env, 1, Position::offset(0), sink.clone(), token)
    }

    #[tokio::test]
    async fn token_deliveries_settle_once_and_release_when_dropped_unsettled() {
        let sink = Arc::new(Sink::default());
        delivery(&sink, 7).ack().await.unwrap();
        delivery(&sink, u128::MAX).dead_letter("bad").await.unwrap();
        drop(delivery(&sink, 9));
        let seen = sink.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[0], "settle 7 Ack");
        assert!(seen[1].starts_with(&format!("settle {} DeadLetter", u128::MAX)), "{seen:?}");
        assert_eq!(seen[2], "release 9");
        assert_eq!(Arc::strong_count(&sink), 1, "every delivery let go of the sink");
    }
}
