//! Publishing: one engine append per topic in the batch, acknowledged after its fsync.

use async_trait::async_trait;
use horizons_bus::{BusError, Envelope, Publisher};

use crate::EmbeddedBus;

#[async_trait]
impl Publisher for EmbeddedBus {
    async fn publish_batch(&self, msgs: Vec<Envelope>) -> Result<(), BusError> {
        if msgs.is_empty() {
            return Ok(());
        }
        // Retried across an engine restart with the same envelopes (same ids): at-least-once.
        let msgs: std::sync::Arc<[Envelope]> = msgs.into();
        self.with_engine(|e| {
            let msgs = msgs.clone();
            async move { e.publish_shared(msgs).await }
        })
        .await
    }
}
