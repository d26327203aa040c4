//! The `kafka` backend: the bus contract on Apache Kafka, through `rdkafka` (librdkafka).
//!
//! Same layout as every adapter: [`config`], [`publisher`], [`consumer`], [`topology`] and the
//! conformance suite in `tests/`; plus [`codec`] (an envelope in a Kafka record), [`dlq`],
//! [`replay`] and [`transaction`] (exactly-once consume-transform-produce).
//!
//! How the bus's semantics map onto Kafka:
//! - **Publish**: one idempotent producer (`acks=all`, `enable.idempotence`), records keyed by
//!   the bus key so a key stays on one partition; a publish returns once every delivery report
//!   of its batch came back. librdkafka retries inside `publish_timeout`, so a broker restart
//!   shorter than that only delays publishes.
//! - **Consume**: each `subscribe` is one member of the Kafka group `horizons.<topic>.<group>`.
//!   Offsets are committed by hand, per partition, only up to the first unsettled message.
//!   Unsettled deliveries come back from the member's memory (after a drop or the visibility
//!   timeout); after a crash or a rebalance they come back from the committed offset.
//! - **Retries** (`Requeue`): the copy goes to the group's retry topic for its delay tier and
//!   the original counts as settled, so the partition is never blocked. **`BlockKey`**: the
//!   message waits in the member, its key stays blocked and the partition's commit stays
//!   behind it, so per-key order holds across retries.
//! - **Dead letters**: the group's DLQ topic, written with [`horizons_bus::DeadLetter::encode`].
//! - **Replay**: by offset, or by time through `offsets_for_times` (topics stamp records with
//!   `LogAppendTime`). Priorities and delays are not offered (`Unsupported`).
//!
//! Errors are [`KafkaError`], converted to [`BusError`] at the trait boundary.

pub mod codec;
pub mod config;
pub mod consumer;
pub mod dlq;
pub mod publisher;
pub mod replay;
mod reports;
pub mod topology;
mod tracker;
pub mod transaction;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use horizons_bus::{Backend, BusError, Capabilities, Replay, Topic, TopicSpec};
use parking_lot::{Mutex, RwLock};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::Producer as _;

pub use config::KafkaConfig;

/// What can go wrong in the kafka backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// Invalid configuration; the message names the key.
    #[error("configuration: {0}")]
    Config(String),
    /// No broker answered while opening the backend.
    #[error("no Kafka broker reachable at {brokers} within {timeout:?} (is it running? `scripts/services up kafka`)")]
    Unreachable {
        /// The bootstrap list tried.
        brokers: String,
        /// How long we waited.
        timeout: Duration,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A librdkafka call failed.
    #[error("kafka: {context}")]
    Client {
        /// What we were doing.
        context: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A record of the topology topic does not parse.
    #[error("the declaration of topic {key:?} in the topology topic is unreadable")]
    Topology {
        /// Its key.
        key: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// An operation ran out of time.
    #[error("timed out {0}")]
    Timeout(String),
    /// A transaction failed; it was aborted where possible.
    #[error("transaction: {context}")]
    Transaction {
        /// What we were doing.
        context: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

impl KafkaError {
    pub(crate) fn client(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Self::Client { context: context.into(), source }
    }
}

impl From<rdkafka::error::KafkaError> for KafkaError {
    fn from(source: rdkafka::error::KafkaError) -> Self {
        Self::client("librdkafka", source)
    }
}

impl From<KafkaError> for BusError {
    fn from(e: KafkaError) -> Self {
        match e {
            KafkaError::Config(m) => BusError::Config(m),
            KafkaError::Unreachable { .. } => BusError::Unavailable(e.to_string()),
            KafkaError::Timeout(_) => BusError::Unavailable(e.to_string()),
            other => BusError::backend("kafka", other),
        }
    }
}

/// Key of an attempt count kept across members of this process: (group id, Kafka topic,
/// partition, offset).
pub(crate) type AttemptKey = (String, String, i32, i64);

pub(crate) struct Inner {
    pub(crate) cfg: KafkaConfig,
    pub(crate) producer: reports::Producer,
    pub(crate) admin: AdminClient<DefaultClientContext>,
    pub(crate) specs: RwLock<HashMap<Topic, Arc<TopicSpec>>>,
    /// Deliveries made of messages a member let go unsettled (drop, shutdown, revocation), so
    /// the next member of this process continues the count.
    pub(crate) attempts: Mutex<HashMap<AttemptKey, u32>>,
    /// Whether `attempts` may hold anything (spares members a lock per message).
    pub(crate) attempts_hint: AtomicBool,
    /// Live members per (topic, group), for replay.
    pub(crate) members: Mutex<HashMap<(Topic, String), Vec<consumer::MemberHandle>>>,
    pub(crate) closed: AtomicBool,
    /// Turns of the partitions keyless batches go to.
    pub(crate) next_partition: AtomicU32,
}

/// The kafka bus. Cheap to clone; clones share one producer.
#[derive(Clone)]
pub struct KafkaBus {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus").field("brokers", &self.inner.cfg.brokers).finish()
    }
}

impl KafkaBus {
    /// Connects to `cfg.brokers`, failing within `cfg.admin_timeout` if no broker answers, and
    /// makes sure the topology topic exists.
    pub async fn connect(cfg: KafkaConfig) -> Result<KafkaBus, KafkaError> {
        cfg.validate()?;
        let producer: reports::Producer = cfg.producer().create_with_context(reports::Reports)?;
        let admin: AdminClient<DefaultClientContext> = cfg.admin().create()?;
        let (p, timeout) = (producer.clone(), cfg.admin_timeout);
        tokio::task::spawn_blocking(move || p.client().fetch_metadata(None, timeout))
            .await
            .map_err(|e| KafkaError::Timeout(format!("connecting: {e}")))?
            .map_err(|source| KafkaError::Unreachable { brokers: cfg.brokers.clone(), timeout, source })?;
        let bus = KafkaBus {
            inner: Arc::new(Inner {
                cfg,
                producer,
                admin,
                specs: RwLock::new(HashMap::new()),
                attempts: Mutex::new(HashMap::new()),
                attempts_hint: AtomicBool::new(false),
                members: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                next_partition: AtomicU32::new(0),
            }),
        };
        let settings = vec![("cleanup.policy", "compact".to_string())];
        let topology = vec![(topology::TOPOLOGY_TOPIC.to_string(), 1, settings)];
        bus.create_topics(&topology)
            .await
            .map_err(|e| KafkaError::Timeout(format!("creating the topology topic: {e}")))?;
        Ok(bus)
    }

    /// The configuration in use.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.cfg
    }

    pub(crate) fn check_open(&self) -> Result<(), BusError> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(BusError::Unavailable("the kafka backend is closed".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl horizons_bus::Admin for KafkaBus {
    async fn declare(&self, topology: &horizons_bus::Topology) -> Result<(), BusError> {
        self.check_open()?;
        self.declare_topology(topology).await
    }

    async fn topics(&self) -> Result<Vec<horizons_bus::TopicInfo>, BusError> {
        self.list_topics().await
    }
}

#[async_trait]
impl Backend for KafkaBus {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            priorities: false,
            delays: false,
            replay_offset: true,
            replay_time: true,
            block_key_ordering: true,
            duplicates_without_failure: false,
        }
    }

    fn replay(&self) -> Option<&dyn Replay> {
        Some(self)
    }

    /// Stops every member of this process and waits (up to `admin_timeout`) until each has
    /// committed what is settled and left its group, so that the group rebalances at once
    /// instead of after the session timeout; then flushes the producer.
    async fn close(&self) -> Result<(), BusError> {
        self.inner.closed.store(true, Ordering::Release);
        for m in self.inner.members.lock().values().flatten() {
            m.stop.store(true, Ordering::Release);
        }
        let deadline = tokio::time::Instant::now() + self.inner.cfg.admin_timeout;
        // A member's thread takes itself off the list once its consumer is closed.
        while !self.inner.members.lock().is_empty() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("closing the kafka backend: a group member did not leave within admin_timeout");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (p, timeout) = (self.inner.producer.clone(), self.inner.cfg.publish_timeout);
        tokio::task::spawn_blocking(move || p.flush(timeout))
            .await
            .map_err(|e| BusError::backend("flushing the producer", e))?
            .map_err(|e| KafkaError::client("flushing the producer", e))?;
        Ok(())
    }
}
