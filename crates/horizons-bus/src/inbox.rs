//! Deduplication by message id: the consumer-side half of exactly-once effects.
//!
//! The bus delivers at least once. A consumer whose effects must happen once records each
//! processed message id in an inbox. For true exactly-once the record must commit in the same
//! transaction as the effect (the store's inbox table does that); [`MemoryInbox`] is a bounded
//! in-process inbox that absorbs the duplicates of reconnects and redeliveries within one process.

use std::collections::{HashSet, VecDeque};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::envelope::MessageId;

/// Remembers which message ids a consumer has processed.
#[async_trait]
pub trait Inbox: Send + Sync {
    /// Whether `consumer` already processed `id`.
    async fn seen(&self, consumer: &str, id: MessageId) -> bool;
    /// Records that `consumer` processed `id`.
    async fn record(&self, consumer: &str, id: MessageId);
}

type Seen = (String, MessageId);

/// An in-memory inbox that remembers the last `capacity` ids per process.
#[derive(Debug)]
pub struct MemoryInbox {
    inner: Mutex<(HashSet<Seen>, VecDeque<Seen>)>,
    capacity: usize,
}

impl MemoryInbox {
    /// An inbox remembering up to `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new((HashSet::new(), VecDeque::new())), capacity: capacity.max(1) }
    }
}

#[async_trait]
impl Inbox for MemoryInbox {
    async fn seen(&self, consumer: &str, id: MessageId) -> bool {
        self.inner.lock().0.contains(&(consumer.to_string(), id))
    }

    async fn record(&self, consumer: &str, id: MessageId) {
        let mut g = self.inner.lock();
        let key = (consumer.to_string(), id);
        if g.0.insert(key.clone()) {
            g.1.push_back(key);
            while g.1.len() > self.capacity {
                if let Some(old) = g.1.pop_front() {
                    g.0.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remembers_and_forgets_oldest() {
        let inbox = MemoryInbox::new(2);
        let (a, b, c) = (MessageId::new(), MessageId::new(), MessageId::new());
        inbox.record("x", a).await;
        assert!(inbox.seen("x", a).await);
        assert!(!inbox.seen("y", a).await);
        inbox.record("x", b).await;
        inbox.record("x", c).await;
        assert!(!inbox.seen("x", a).await);
        assert!(inbox.seen("x", c).await);
    }
}
