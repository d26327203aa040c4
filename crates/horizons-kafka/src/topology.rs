//! Topology on Kafka: the topics a bus topic needs, created idempotently, and the bus's own
//! declarations kept in a compacted topic so every process sees the same groups.
//!
//! For bus topic `T` with groups `g…` the adapter keeps:
//! - `T`: the messages (partitions from the spec, `LogAppendTime`, retention from the spec,
//!   `cleanup.policy=delete`);
//! - `T.g.retry-<tier>`: one topic per retry delay tier, where `Requeue` groups park retried
//!   copies until they are due (the partition of `T` is not blocked meanwhile);
//! - `T.g.dlq`: the group's dead letters;
//! - `horizons.topology` (compacted, key = topic name): the declared [`TopicSpec`] as JSON, the
//!   source of group rules (ordering, retry policy, visibility timeout) for every process.
//!
//! Kafka group ids are per bus topic and group: `horizons.T.g`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use horizons_bus::{BusError, GroupInfo, Topic, TopicInfo, TopicSpec, Topology};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::reports::Pending;
use crate::{KafkaBus, KafkaError};

/// The compacted topic holding every declared [`TopicSpec`].
pub const TOPOLOGY_TOPIC: &str = "horizons.topology";
/// Longest topic name Kafka accepts.
const MAX_KAFKA_NAME: usize = 249;
/// A Kafka topic to create: name, partitions, topic-level settings.
pub(crate) type NewTopicSpec<'a> = (String, u32, Vec<(&'a str, String)>);

/// Headroom above `max_message_bytes` for the record's own headers and framing.
const RECORD_OVERHEAD: usize = 64 << 10;

/// Names of the Kafka objects behind a bus topic and group.
pub mod names {
    use std::time::Duration;

    use horizons_bus::Topic;

    /// Kafka consumer group of bus group `group` on `topic`.
    pub fn group_id(topic: &Topic, group: &str) -> String {
        super::fit(format!("horizons.{topic}.{group}"))
    }

    /// Retry topic of a delay tier.
    pub fn retry_topic(topic: &Topic, group: &str, tier: Duration) -> String {
        super::fit(format!("{topic}.{group}.retry-{}ms", tier.as_millis()))
    }

    /// Dead-letter topic.
    pub fn dlq_topic(topic: &Topic, group: &str) -> String {
        super::fit(format!("{topic}.{group}.dlq"))
    }

    /// Consumer group that remembers how far a DLQ was redriven.
    pub fn dlq_group(topic: &Topic, group: &str) -> String {
        super::fit(format!("horizons.{topic}.{group}.dlq"))
    }
}

/// Shortens names over Kafka's limit with a hash of the whole, keeping them unique.
fn fit(name: String) -> String {
    if name.len() <= MAX_KAFKA_NAME {
        return name;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}~{h:016x}", &name[..MAX_KAFKA_NAME - 17])
}

impl KafkaBus {
    /// The declared spec of `topic`, re-reading the topology topic once on a miss.
    pub(crate) async fn spec(&self, topic: &Topic) -> Result<Arc<TopicSpec>, BusError> {
        if let Some(s) = self.inner.specs.read().get(topic) {
            return Ok(s.clone());
        }
        self.reload_specs().await?;
        self.inner.specs.read().get(topic).cloned().ok_or_else(|| BusError::UnknownTopic(topic.to_string()))
    }

    /// Reads the whole topology topic into the cache.
    pub(crate) async fn reload_specs(&self) -> Result<(), BusError> {
        let cfg = self.inner.cfg.clone();
        let specs = tokio::task::spawn_blocking(move || read_topology(&cfg))
            .await
            .map_err(|e| BusError::backend("reading the topology", e))??;
        self.inner.specs.write().extend(specs.into_iter().map(|(k, v)| (k, Arc::new(v))));
        Ok(())
    }

    /// Creates `topics` (name, partitions, settings); existing ones are left alone.
    pub(crate) async fn create_topics(&self, topics: &[NewTopicSpec<'_>]) -> Result<(), BusError> {
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(name, parts, settings)| {
                let replication = TopicReplication::Fixed(self.inner.cfg.replication_factor);
                settings.iter().fold(NewTopic::new(name, *parts as i32, replication), |t, (k, v)| t.set(k, v))
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(self.inner.cfg.admin_timeout));
        let results = tokio::time::timeout(self.inner.cfg.admin_timeout, self.inner.admin.create_topics(&new, &opts))
            .await
            .map_err(|_| BusError::Timeout(self.inner.cfg.admin_timeout))?
            .map_err(|e| KafkaError::client("creating topics", e))?;
        let mut created = Vec::new();
        for r in results {
            match r {
                Ok(name) => created.push(name),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BusError::backend(format!("creating Kafka topic {name}"), code.to_string()))
                }
            }
        }
        // Creation is asynchronous in KRaft: wait until the metadata shows every partition with a
        // leader, so the caller can use the topics at once.
        let deadline = tokio::time::Instant::now() + self.inner.cfg.admin_timeout;
        for name in created {
            loop {
                let ready = self.leaders_known(&name).await.unwrap_or(false);
                if ready {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(BusError::Timeout(self.inner.cfg.admin_timeout));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Whether every partition of `name` has a leader in the metadata.
    async fn leaders_known(&self, name: &str) -> Result<bool, BusError> {
        let (producer, name, timeout) = (self.inner.producer.clone(), name.to_string(), self.inner.cfg.admin_timeout);
        let md = tokio::task::spawn_blocking(move || producer.client().fetch_metadata(Some(&name), timeout))
            .await
            .map_err(|e| BusError::backend("fetching metadata", e))?
            .map_err(|e| KafkaError::client("fetching metadata", e))?;
        Ok(md.topics().first().is_some_and(|t| {
            t.error().is_none()
                && !t.partitions().is_empty()
                && t.partitions().iter().all(|p| p.error().is_none() && p.leader() >= 0)
        }))
    }

    /// Partition count of an existing Kafka topic, `None` if it does not exist.
    pub(crate) async fn partitions_of(&self, name: &str) -> Result<Option<u32>, BusError> {
        let (producer, name2, timeout) = (self.inner.producer.clone(), name.to_string(), self.inner.cfg.admin_timeout);
        let md = tokio::task::spawn_blocking(move || producer.client().fetch_metadata(Some(&name2), timeout))
            .await
            .map_err(|e| BusError::backend("fetching metadata", e))?
            .map_err(|e| KafkaError::client(format!("fetching metadata of {name}"), e))?;
        Ok(md.topics().first().filter(|t| t.error().is_none()).map(|t| t.partitions().len() as u32))
    }

    pub(crate) async fn declare_topology(&self, topology: &Topology) -> Result<(), BusError> {
        topology.validate()?;
        for spec in &topology.topics {
            self.declare_topic(spec).await?;
        }
        Ok(())
    }

    async fn declare_topic(&self, spec: &TopicSpec) -> Result<(), BusError> {
        let existing = match self.spec(&spec.name).await {
            Ok(s) => Some(s),
            Err(BusError::UnknownTopic(_)) => None,
            Err(e) => return Err(e),
        };
        let merged = match &existing {
            Some(old) => {
                spec.check_compatible(old)?;
                let mut m = (**old).clone();
                m.groups.extend(spec.groups.iter().filter(|g| old.find_group(&g.name).is_none()).cloned());
                m
            }
            None => {
                if let Some(parts) = self.partitions_of(spec.name.as_str()).await? {
                    if parts != spec.partitions {
                        return Err(BusError::TopologyConflict {
                            object: spec.name.to_string(),
                            field: "partitions".into(),
                            existing: parts.to_string(),
                            declared: spec.partitions.to_string(),
                        });
                    }
                }
                spec.clone()
            }
        };
        let settings = |compact: bool| {
            vec![
                ("cleanup.policy", if compact { "compact" } else { "delete" }.to_string()),
                ("retention.ms", merged.retention.as_millis().to_string()),
                ("retention.bytes", merged.retention_bytes.map_or(-1, |b| b as i64).to_string()),
                ("max.message.bytes", (merged.max_message_bytes + RECORD_OVERHEAD).to_string()),
                ("message.timestamp.type", "LogAppendTime".to_string()),
            ]
        };
        let mut topics = vec![(spec.name.to_string(), merged.partitions, settings(false))];
        for g in &merged.groups {
            for tier in &self.inner.cfg.retry_tiers {
                topics.push((names::retry_topic(&spec.name, &g.name, *tier), merged.partitions, settings(false)));
            }
            topics.push((names::dlq_topic(&spec.name, &g.name), 1, settings(false)));
        }
        self.create_topics(&topics).await?;
        if existing.as_deref() != Some(&merged) {
            self.store_spec(&merged).await?;
        }
        self.inner.specs.write().insert(merged.name.clone(), Arc::new(merged));
        Ok(())
    }

    async fn store_spec(&self, spec: &TopicSpec) -> Result<(), BusError> {
        let json = serde_json::to_vec(spec).map_err(|e| BusError::backend("encoding a topic spec", e))?;
        let key = spec.name.as_str();
        self.put_declaration(key, Some(&json))
            .await
            .map_err(|e| KafkaError::client(format!("storing the declaration of {key}"), e))?;
        Ok(())
    }

    /// Writes (or, with no value, deletes) one declaration in the topology topic and waits for
    /// its delivery report.
    async fn put_declaration(&self, key: &str, value: Option<&[u8]>) -> Result<(), rdkafka::error::KafkaError> {
        let pending = Pending::new();
        let mut record = BaseRecord::with_opaque_to(TOPOLOGY_TOPIC, pending.clone()).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        pending.send(&self.inner.producer, record).await?;
        pending.wait().await
    }

    /// Deletes every declared topic whose name starts with `prefix`, with its retry and
    /// dead-letter topics and its declaration. For tests and operators cleaning up; messages
    /// are gone for good. Returns how many bus topics were deleted.
    pub async fn delete_topics_with_prefix(&self, prefix: &str) -> Result<usize, BusError> {
        self.reload_specs().await?;
        let doomed: Vec<Arc<TopicSpec>> =
            self.inner.specs.read().values().filter(|s| s.name.as_str().starts_with(prefix)).cloned().collect();
        for spec in &doomed {
            let mut kafka_topics = vec![spec.name.to_string()];
            for g in &spec.groups {
                kafka_topics
                    .extend(self.inner.cfg.retry_tiers.iter().map(|t| names::retry_topic(&spec.name, &g.name, *t)));
                kafka_topics.push(names::dlq_topic(&spec.name, &g.name));
            }
            let refs: Vec<&str> = kafka_topics.iter().map(String::as_str).collect();
            let opts = AdminOptions::new().operation_timeout(Some(self.inner.cfg.admin_timeout));
            self.inner.admin.delete_topics(&refs, &opts).await.map_err(|e| KafkaError::client("deleting topics", e))?;
            self.put_declaration(spec.name.as_str(), None)
                .await
                .map_err(|e| KafkaError::client("deleting a declaration", e))?;
            self.inner.specs.write().remove(&spec.name);
        }
        Ok(doomed.len())
    }

    pub(crate) async fn list_topics(&self) -> Result<Vec<TopicInfo>, BusError> {
        self.reload_specs().await?;
        let specs: Vec<Arc<TopicSpec>> = self.inner.specs.read().values().cloned().collect();
        let cfg = self.inner.cfg.clone();
        let mut out = tokio::task::spawn_blocking(move || {
            specs.iter().map(|s| topic_info(&cfg, s)).collect::<Result<Vec<_>, KafkaError>>()
        })
        .await
        .map_err(|e| BusError::backend("listing topics", e))??;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// Low and high watermarks of a partition, retrying the transient errors of a partition whose
/// leader is still settling (just created, broker just restarted) until `timeout`.
pub(crate) fn watermarks(
    c: &BaseConsumer,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64), KafkaError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match c.fetch_watermarks(topic, partition, timeout) {
            Ok(w) => return Ok(w),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(topic, partition, error = %e, "watermarks not available yet; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(KafkaError::client(format!("watermarks of {topic}/{partition}"), e)),
        }
    }
}

/// Messages in `topic` (high − low watermarks) and what `group_id` has not committed yet.
pub(crate) fn backlog(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: u32,
    timeout: Duration,
) -> Result<(u64, u64), KafkaError> {
    let (mut stored, mut pending) = (0u64, 0u64);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, timeout).map_err(|e| KafkaError::client("committed offsets", e))?;
    for p in 0..partitions as i32 {
        let (low, high) = watermarks(consumer, topic, p, timeout)?;
        stored += (high - low).max(0) as u64;
        let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.max(low),
            _ => low,
        };
        pending += (high - at).max(0) as u64;
    }
    Ok((stored, pending))
}

fn topic_info(cfg: &crate::KafkaConfig, spec: &TopicSpec) -> Result<TopicInfo, KafkaError> {
    let mut groups = Vec::new();
    let mut messages = None;
    for g in &spec.groups {
        let c: BaseConsumer = cfg.reader(&names::group_id(&spec.name, &g.name)).create()?;
        let (stored, pending) = backlog(&c, spec.name.as_str(), spec.partitions, cfg.admin_timeout)?;
        messages = Some(stored);
        let d: BaseConsumer = cfg.reader(&names::dlq_group(&spec.name, &g.name)).create()?;
        let (_, dead) = backlog(&d, &names::dlq_topic(&spec.name, &g.name), 1, cfg.admin_timeout)?;
        groups.push(GroupInfo { name: g.name.clone(), pending: Some(pending), dead: Some(dead) });
    }
    Ok(TopicInfo { name: spec.name.to_string(), messages, groups })
}

/// Reads every declaration from the topology topic (latest per topic wins).
fn read_topology(cfg: &crate::KafkaConfig) -> Result<HashMap<Topic, TopicSpec>, KafkaError> {
    let c: BaseConsumer = cfg.reader("horizons.topology-reader").create()?;
    let (low, high) = watermarks(&c, TOPOLOGY_TOPIC, 0, cfg.admin_timeout)?;
    let mut specs = HashMap::new();
    if high <= low {
        return Ok(specs);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPOLOGY_TOPIC, 0, Offset::Offset(low))?;
    c.assign(&tpl)?;
    let deadline = std::time::Instant::now() + cfg.admin_timeout;
    let mut next = low;
    while next < high {
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::Timeout("reading the topology topic".into()));
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                next = m.offset() + 1;
                let Some(payload) = m.payload() else {
                    // A tombstone: the topic was deleted.
                    if let Some(t) = m.key().and_then(|k| Topic::new(String::from_utf8_lossy(k)).ok()) {
                        specs.remove(&t);
                    }
                    continue;
                };
                let spec: TopicSpec = serde_json::from_slice(payload).map_err(|source| KafkaError::Topology {
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    source,
                })?;
                specs.insert(spec.name.clone(), spec);
            }
            Some(Err(e)) => return Err(KafkaError::client("reading the topology topic", e)),
            None => {}
        }
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_kafka() {
        let t = Topic::new("t".repeat(200)).unwrap();
        let g = "g".repeat(200);
        let a = names::dlq_topic(&t, &g);
        assert!(a.len() <= MAX_KAFKA_NAME, "{}", a.len());
        assert_ne!(a, names::retry_topic(&t, &g, Duration::from_secs(1)));
        assert_eq!(names::dlq_topic(&Topic::new("orders").unwrap(), "billing"), "orders.billing.dlq");
        assert_eq!(names::retry_topic(&Topic::new("o").unwrap(), "b", Duration::from_secs(10)), "o.b.retry-10000ms");
    }
}
