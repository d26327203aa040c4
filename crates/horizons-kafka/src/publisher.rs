//! Publishing: every message of a batch is handed to the idempotent producer at once, and the
//! batch is acknowledged when every delivery report is back (`acks=all`, counted by one
//! [`Pending`] per batch), so batching happens in librdkafka (`linger`, `batch_bytes`) and one
//! slow record does not serialise the rest.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use horizons_bus::{BusError, Envelope, Priority, Publisher, Topic, TopicSpec};
use rdkafka::producer::BaseRecord;

use crate::codec::{self, CopyMeta};
use crate::reports::{Pending, Producer};
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

/// Hands one record to librdkafka (to `partition`, or where its partitioner puts it), counted in
/// `pending`; waits while its local queue is full.
pub(crate) async fn enqueue(
    producer: &Producer,
    pending: &Arc<Pending>,
    topic: &str,
    partition: Option<i32>,
    env: &Envelope,
    meta: Option<&CopyMeta>,
) -> Result<(), KafkaError> {
    let headers = codec::encode_headers(env, meta);
    let mut record = BaseRecord::with_opaque_to(topic, pending.clone()).payload(&env.payload[..]).headers(headers);
    if let Some(k) = &env.key {
        record = record.key(k.as_str());
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    pending.send(producer, record).await.map_err(|e| KafkaError::client(format!("producing to {topic}"), e))
}

/// Waits for the delivery reports of everything `pending` counted.
pub(crate) async fn delivered(pending: Arc<Pending>, topic: &str) -> Result<(), KafkaError> {
    pending.wait().await.map_err(|e| KafkaError::client(format!("delivering to {topic}"), e))
}

#[async_trait]
impl Publisher for KafkaBus {
    async fn publish_batch(&self, msgs: Vec<Envelope>) -> Result<(), BusError> {
        self.check_open()?;
        // Keyless messages of a batch go to one partition of their topic, batches in turn, as
        // Kafka's sticky partitioner does, without librdkafka's partitioner call per record;
        // a keyed one goes where librdkafka's partitioner puts its key. The turn is taken with
        // the topic's spec, which the checks fetch anyway.
        let mut spec: Option<Arc<TopicSpec>> = None;
        let mut turns: Vec<(&Topic, i32)> = Vec::new();
        for m in &msgs {
            let s = match &spec {
                Some(s) if s.name == m.topic => s,
                _ => spec.insert(self.spec(&m.topic).await?),
            };
            Self::check_publishable(m, s)?;
            if m.key.is_none() && !turns.iter().any(|(t, _)| *t == &m.topic) {
                let p = self.inner.next_partition.fetch_add(1, Ordering::Relaxed) % s.partitions.max(1);
                turns.push((&m.topic, p as i32));
            }
        }
        let pending = Pending::new();
        for m in &msgs {
            let partition = match m.key {
                Some(_) => None,
                None => turns.iter().find(|(t, _)| *t == &m.topic).map(|(_, p)| *p),
            };
            enqueue(&self.inner.producer, &pending, m.topic.as_str(), partition, m, None).await?;
        }
        let topic = match msgs.first() {
            Some(f) if msgs.iter().all(|m| m.topic == f.topic) => f.topic.as_str(),
            _ => "several topics",
        };
        Ok(delivered(pending, topic).await?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
