//! Topology and dead letters: declared in the engine, persisted in `topology.json`.

use async_trait::async_trait;
use horizons_bus::{Admin, BusError, DeadLetter, DeadLetters, Topic, TopicInfo, Topology};

use crate::EmbeddedBus;

/// Prefix reserved for internal topics.
pub const RESERVED_PREFIX: &str = "__";

#[async_trait]
impl Admin for EmbeddedBus {
    async fn declare(&self, topology: &Topology) -> Result<(), BusError> {
        if let Some(t) = topology.topics.iter().find(|t| t.name.as_str().starts_with(RESERVED_PREFIX)) {
            return Err(BusError::InvalidName {
                what: "topic",
                name: t.name.to_string(),
                reason: format!("names starting with {RESERVED_PREFIX:?} are reserved"),
            });
        }
        self.with_engine(|e| async move { e.declare(topology) }).await
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>, BusError> {
        self.with_engine(|e| async move { e.topics().await }).await
    }
}

#[async_trait]
impl DeadLetters for EmbeddedBus {
    async fn dlq_list(&self, topic: &Topic, group: &str, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        self.with_engine(|e| async move { e.dlq_list(topic, group, limit).await }).await
    }

    async fn dlq_redrive(&self, topic: &Topic, group: &str, limit: Option<usize>) -> Result<usize, BusError> {
        self.with_engine(|e| async move { e.dlq_redrive(topic, group, limit).await }).await
    }
}
