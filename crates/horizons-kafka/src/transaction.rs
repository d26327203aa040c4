//! Exactly-once consume-transform-produce for pipeline stages, on Kafka transactions.
//!
//! An [`ExactlyOnceStage`] reads a bus topic as a member of a declared group, and for each
//! batch: begins a transaction, produces the transform's outputs, adds the input offsets with
//! `send_offsets_to_transaction`, and commits. Outputs and input progress become visible
//! together or not at all; downstream consumers read `read_committed` (every member of this
//! backend does), so an aborted batch is never seen. When the transform fails, the
//! transaction is aborted, the input is rewound to the last committed batch, and `run` returns
//! the error: running the stage again (same transactional id, which fences any zombie)
//! resumes from there.

use std::time::{Duration, Instant};

use horizons_bus::{BusError, Envelope, Topic};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::codec;
use crate::topology::names;
use crate::{KafkaBus, KafkaError};

/// How long one transactional call may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a stage stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// The transform refused a message; its batch was aborted and the input rewound.
    #[error("transform failed on message {id}; batch of {batch} aborted: {reason}")]
    Transform {
        /// The message.
        id: horizons_bus::MessageId,
        /// Messages in the aborted batch.
        batch: usize,
        /// The transform's error.
        reason: String,
    },
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The bus refused (unknown topic or group).
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// What a stage did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageStats {
    /// Transactions committed.
    pub committed: u64,
    /// Input messages consumed in committed transactions.
    pub consumed: u64,
    /// Output messages produced in committed transactions.
    pub produced: u64,
}

/// A consume-transform-produce stage with exactly-once effects on Kafka.
#[derive(Debug, Clone)]
pub struct ExactlyOnceStage {
    bus: KafkaBus,
    input: Topic,
    group: String,
    transactional_id: String,
    batch: usize,
}

impl ExactlyOnceStage {
    /// A stage reading `input` as `group` (both declared), transacting as `transactional_id`
    /// (one per stage instance; a restarted instance reuses its id).
    pub fn new(bus: &KafkaBus, input: Topic, group: &str, transactional_id: &str) -> Self {
        Self { bus: bus.clone(), input, group: group.into(), transactional_id: transactional_id.into(), batch: 500 }
    }

    /// Messages per transaction (at least 1).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Runs until `cancel` fires (returning what was done) or the transform fails.
    pub async fn run<F>(self, cancel: CancellationToken, transform: F) -> Result<StageStats, StageError>
    where
        F: FnMut(&Envelope) -> Result<Vec<Envelope>, String> + Send + 'static,
    {
        let spec = self.bus.spec(&self.input).await?;
        if spec.find_group(&self.group).is_none() {
            return Err(BusError::UnknownGroup { topic: self.input.to_string(), group: self.group.clone() }.into());
        }
        tokio::task::spawn_blocking(move || self.run_blocking(&cancel, transform))
            .await
            .map_err(|e| StageError::Bus(BusError::backend("exactly-once stage", e)))?
    }

    fn run_blocking<F>(self, cancel: &CancellationToken, mut transform: F) -> Result<StageStats, StageError>
    where
        F: FnMut(&Envelope) -> Result<Vec<Envelope>, String>,
    {
        let cfg = &self.bus.inner.cfg;
        let txn = |context: &str| {
            let context = context.to_string();
            move |source| KafkaError::Transaction { context, source }
        };
        let producer: ThreadedProducer<DefaultProducerContext> =
            cfg.transactional_producer(&self.transactional_id).create().map_err(KafkaError::from)?;
        producer.init_transactions(TXN_TIMEOUT).map_err(txn("init_transactions"))?;
        let consumer: BaseConsumer =
            cfg.consumer(&names::group_id(&self.input, &self.group)).create().map_err(KafkaError::from)?;
        consumer.subscribe(&[self.input.as_str()]).map_err(KafkaError::from)?;
        let mut stats = StageStats::default();
        while !cancel.is_cancelled() {
            let batch = self.next_batch(&consumer)?;
            if batch.is_empty() {
                continue;
            }
            producer.begin_transaction().map_err(txn("begin_transaction"))?;
            let mut produced = 0;
            let mut failure = None;
            for (_, _, env) in &batch {
                match transform(env) {
                    Ok(outs) => {
                        for out in outs {
                            send(&producer, &out)?;
                            produced += 1;
                        }
                    }
                    Err(reason) => {
                        failure = Some(StageError::Transform { id: env.id, batch: batch.len(), reason });
                        break;
                    }
                }
            }
            if let Some(err) = failure {
                producer.abort_transaction(TXN_TIMEOUT).map_err(txn("abort_transaction"))?;
                rewind(&consumer, &self.input, &batch);
                return Err(err);
            }
            let mut offsets = TopicPartitionList::new();
            for (p, o, _) in &batch {
                offsets
                    .add_partition_offset(self.input.as_str(), *p, Offset::Offset(o + 1))
                    .map_err(KafkaError::from)?;
            }
            let meta = consumer.group_metadata().ok_or_else(|| KafkaError::Timeout("group metadata".into()))?;
            let committed = producer
                .send_offsets_to_transaction(&offsets, &meta, TXN_TIMEOUT)
                .and_then(|()| producer.commit_transaction(TXN_TIMEOUT));
            if let Err(e) = committed {
                let _ = producer.abort_transaction(TXN_TIMEOUT);
                rewind(&consumer, &self.input, &batch);
                return Err(KafkaError::Transaction { context: "committing a batch".into(), source: e }.into());
            }
            stats.committed += 1;
            stats.consumed += batch.len() as u64;
            stats.produced += produced;
        }
        Ok(stats)
    }

    /// Up to `batch` messages, keeping for each partition only the highest offset needed.
    fn next_batch(&self, consumer: &BaseConsumer) -> Result<Vec<(i32, i64, Envelope)>, KafkaError> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(200);
        while out.len() < self.batch && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    let pos = (m.topic(), m.partition(), m.offset());
                    let env = match codec::decode(&self.input, m.key(), m.payload(), m.headers(), pos, None) {
                        Ok(d) => d.envelope,
                        Err(_) => codec::raw_envelope(&self.input, m.key(), m.payload(), pos),
                    };
                    out.push((m.partition(), m.offset(), env));
                }
                Some(Err(e)) => tracing::warn!(topic = %self.input, error = %e, "stage consumer error; retrying"),
                None => {}
            }
        }
        // Offsets to commit: the highest per partition.
        out.sort_by_key(|(p, o, _)| (*p, *o));
        Ok(out)
    }
}

fn send(producer: &ThreadedProducer<DefaultProducerContext>, env: &Envelope) -> Result<(), KafkaError> {
    let headers = codec::encode_headers(env, None);
    let mut record = BaseRecord::to(env.topic.as_str()).payload(&env.payload[..]).headers(headers);
    if let Some(k) = &env.key {
        record = record.key(k.as_str());
    }
    producer.send(record).map_err(|(e, _)| KafkaError::client(format!("producing to {}", env.topic), e))
}

/// Puts the consumer back at the first message of the aborted batch in each partition.
fn rewind(consumer: &BaseConsumer, topic: &Topic, batch: &[(i32, i64, Envelope)]) {
    let mut first: Vec<(i32, i64)> = Vec::new();
    for (p, o, _) in batch {
        if !first.iter().any(|(q, _)| q == p) {
            first.push((*p, *o));
        }
    }
    for (p, o) in first {
        if let Err(e) = consumer.seek(topic.as_str(), p, Offset::Offset(o), Duration::from_secs(5)) {
            tracing::warn!(%topic, partition = p, error = %e, "rewinding after an abort failed");
        }
    }
}
