//! Publishing: every message of a batch is handed to the idempotent producer at once, and the
//! batch is acknowledged when every delivery report is back (`acks=all`), so batching happens
//! in librdkafka (`linger`, `batch_bytes`) and one slow record does not serialise the rest.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use horizons_bus::{BusError, Envelope, Priority, Publisher, TopicSpec};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::codec::{self, CopyMeta};
use crate::{KafkaBus, KafkaError};

impl KafkaBus {
    /// Checks `env` against its topic's declaration and the backend's capabilities.
    fn check_publishable(env: &Envelope, spec: &TopicSpec) -> Result<(), BusError> {
        if env.priority != Priority::DEFAULT {
            return Err(BusError::Unsupported { backend: "kafka", what: "priorities" });
        }
        if env.not_before.is_some() {
            return Err(BusError::Unsupported { backend: "kafka", what: "delayed delivery (not_before)" });
        }
        let size = env.wire_size();
        if size > spec.max_message_bytes {
            return Err(BusError::TooLarge { topic: env.topic.to_string(), size, max: spec.max_message_bytes });
        }
        Ok(())
    }
}

/// Hands one record to librdkafka, waiting while its local queue is full.
pub(crate) async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    env: &Envelope,
    meta: Option<&CopyMeta>,
) -> Result<DeliveryFuture, KafkaError> {
    let headers = codec::encode_headers(env, meta);
    let mut record = FutureRecord::to(topic).payload(&env.payload[..]).headers(headers);
    if let Some(k) = &env.key {
        record = record.key(k.as_str());
    }
    loop {
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((e, _)) => return Err(KafkaError::client(format!("producing to {topic}"), e)),
        }
    }
}

/// Waits for a delivery report.
pub(crate) async fn delivered(f: DeliveryFuture, topic: &str) -> Result<(), KafkaError> {
    match f.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(KafkaError::client(format!("delivering to {topic}"), e)),
        Err(_) => Err(KafkaError::client(format!("delivering to {topic}"), RdError::Canceled)),
    }
}

#[async_trait]
impl Publisher for KafkaBus {
    async fn publish_batch(&self, msgs: Vec<Envelope>) -> Result<(), BusError> {
        self.check_open()?;
        let mut spec: Option<Arc<TopicSpec>> = None;
        for m in &msgs {
            if spec.as_ref().is_none_or(|s| s.name != m.topic) {
                spec = Some(self.spec(&m.topic).await?);
            }
            Self::check_publishable(m, spec.as_ref().expect("set above"))?;
        }
        let mut pending = Vec::with_capacity(msgs.len());
        for m in &msgs {
            pending.push(enqueue(&self.inner.producer, m.topic.as_str(), m, None).await?);
        }
        for (f, m) in pending.into_iter().zip(&msgs) {
            delivered(f, m.topic.as_str()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use horizons_bus::Topic;

    use super::*;

    fn check(env: Envelope, expected: &str) {
        let spec = TopicSpec::new(Topic::new("t").unwrap()).max_message_bytes(100);
        let got = match KafkaBus::check_publishable(&env, &spec) {
            Ok(()) => "ok".to_string(),
            Err(BusError::Unsupported { what, .. }) => format!("unsupported {what}"),
            Err(BusError::TooLarge { size, .. }) => format!("too large {size}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(got, expected);
    }

    #[test]
    fn publishability() {
        let t = Topic::new("t").unwrap();
        check(Envelope::new(t.clone(), vec![0u8; 100]), "ok");
        check(Envelope::new(t.clone(), vec![0u8; 101]), "too large 101");
        check(Envelope::new(t.clone(), "x").with_priority(Priority::new(7).unwrap()), "unsupported priorities");
        check(Envelope::new(t, "x").with_delay(Duration::from_secs(1)), "unsupported delayed delivery (not_before)");
    }
}
