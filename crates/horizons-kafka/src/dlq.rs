//! Dead letters on Kafka: group `g` of topic `T` dead-letters into `T.g.dlq`, one record per
//! message, written with [`DeadLetter::encode`] so `dlq list` reads the same on every backend.
//!
//! The consumer group `horizons.T.g.dlq` (never a live member, only commits) marks how far the
//! queue was redriven: listing starts there, and a redrive writes each message (DLQ headers
//! stripped, attempts reset to 1, same id) to the group's first retry topic — so only this
//! group sees it again — and then commits past it. At-least-once: a crash between the two
//! leaves a message both redriven and still listed.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use horizons_bus::{BusError, DeadLetter, DeadLetters, Envelope, Topic};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::codec::{self, CopyMeta};
use crate::publisher::{delivered, enqueue};
use crate::reports::Pending;
use crate::topology::names;
use crate::{KafkaBus, KafkaConfig, KafkaError};

impl KafkaBus {
    async fn check_group(&self, topic: &Topic, group: &str) -> Result<(), BusError> {
        let spec = self.spec(topic).await?;
        match spec.find_group(group) {
            Some(_) => Ok(()),
            None => Err(BusError::UnknownGroup { topic: topic.to_string(), group: group.to_string() }),
        }
    }

    async fn read_dlq(&self, topic: &Topic, group: &str, limit: usize) -> Result<(Vec<Envelope>, i64), BusError> {
        let (cfg, topic, group) = (self.inner.cfg.clone(), topic.clone(), group.to_string());
        tokio::task::spawn_blocking(move || read(&cfg, &topic, &group, limit))
            .await
            .map_err(|e| BusError::backend("reading a dead-letter queue", e))?
            .map_err(BusError::from)
    }
}

/// Reads up to `limit` dead letters from the redrive position; returns them and the offset
/// after the last one read.
fn read(cfg: &KafkaConfig, topic: &Topic, group: &str, limit: usize) -> Result<(Vec<Envelope>, i64), KafkaError> {
    let dlq = names::dlq_topic(topic, group);
    let c: BaseConsumer = cfg.reader(&names::dlq_group(topic, group)).create()?;
    let (low, high) = crate::topology::watermarks(&c, &dlq, 0, cfg.admin_timeout)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&dlq, 0);
    let committed =
        c.committed_offsets(tpl, cfg.admin_timeout).map_err(|e| KafkaError::client(format!("position in {dlq}"), e))?;
    let start = match committed.find_partition(&dlq, 0).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => o.max(low),
        _ => low,
    };
    let mut out = Vec::new();
    let mut next = start;
    if start >= high || limit == 0 {
        return Ok((out, next));
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&dlq, 0, Offset::Offset(start))?;
    c.assign(&tpl)?;
    let deadline = Instant::now() + cfg.admin_timeout;
    while next < high && out.len() < limit {
        if Instant::now() > deadline {
            return Err(KafkaError::Timeout(format!("reading {dlq}")));
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                next = m.offset() + 1;
                let pos = (m.topic(), m.partition(), m.offset());
                let env = match codec::decode(topic, m.key(), m.payload(), m.headers(), pos, None) {
                    Ok(d) => d.envelope,
                    Err(_) => codec::raw_envelope(topic, m.key(), m.payload(), pos),
                };
                out.push(env);
            }
            Some(Err(e)) => return Err(KafkaError::client(format!("reading {dlq}"), e)),
            None => {}
        }
    }
    Ok((out, next))
}

#[async_trait]
impl DeadLetters for KafkaBus {
    async fn dlq_list(&self, topic: &Topic, group: &str, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        self.check_group(topic, group).await?;
        let (envs, _) = self.read_dlq(topic, group, limit).await?;
        Ok(envs.into_iter().map(DeadLetter::decode).collect())
    }

    async fn dlq_redrive(&self, topic: &Topic, group: &str, limit: Option<usize>) -> Result<usize, BusError> {
        self.check_open()?;
        self.check_group(topic, group).await?;
        let (envs, next) = self.read_dlq(topic, group, limit.unwrap_or(usize::MAX)).await?;
        if envs.is_empty() {
            return Ok(0);
        }
        let retry = names::retry_topic(topic, group, self.inner.cfg.retry_tiers[0]);
        let meta = CopyMeta { attempt: 1, ..CopyMeta::default() };
        let pending = Pending::new();
        let moved = envs.len();
        for env in envs {
            let dl = DeadLetter::decode(env);
            enqueue(&self.inner.producer, &pending, &retry, None, &dl.envelope, Some(&meta)).await?;
        }
        delivered(pending, &retry).await?;
        let (cfg, dlq_group, dlq) =
            (self.inner.cfg.clone(), names::dlq_group(topic, group), names::dlq_topic(topic, group));
        tokio::task::spawn_blocking(move || -> Result<(), KafkaError> {
            let c: BaseConsumer = cfg.reader(&dlq_group).create()?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&dlq, 0, Offset::Offset(next))?;
            c.commit(&tpl, CommitMode::Sync).map_err(|e| KafkaError::client(format!("committing {dlq_group}"), e))
        })
        .await
        .map_err(|e| BusError::backend("committing a redrive", e))??;
        Ok(moved)
    }
}
