//! Configuration of the kafka backend (`[bus.kafka]` in `horizons.toml`), and the librdkafka
//! settings derived from it: one place says how producers and consumers are tuned, so the
//! adapter and the bench's bare-rdkafka baseline use the very same settings.

use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::KafkaError;

/// Environment variable with the bootstrap brokers (`host:port[,host:port…]`).
pub const ENV_BROKERS: &str = "HORIZONS_KAFKA_BROKERS";
/// Brokers used when nothing says otherwise: `scripts/services up kafka`.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// Settings of the kafka backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma-separated `host:port` (env `HORIZONS_KAFKA_BROKERS`).
    pub brokers: String,
    /// `client.id` prefix of every connection, shown in broker logs.
    pub client_id: String,
    /// How long the producer waits to fill a batch (`linger.ms`).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Largest producer batch in bytes (`batch.size`).
    pub batch_bytes: usize,
    /// Producer compression (`compression.type`: none, lz4, zstd, gzip, snappy).
    pub compression: String,
    /// How long a publish may wait for the cluster before it fails (`message.timeout.ms`);
    /// librdkafka retries inside this window, so a broker restart shorter than it is invisible
    /// to publishers.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Consumer group session timeout: how soon a dead member's partitions move.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How often consumers commit the offsets of settled messages.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Messages a member holds read but unsettled per partition before it pauses fetching it
    /// (it resumes below half). A pause makes librdkafka drop what it had prefetched for the
    /// partition and fetch it again on resume, so the bound is wide.
    pub max_buffered_per_partition: usize,
    /// Payload bytes a member holds read but unsettled per partition before it pauses fetching
    /// it: the bound for large messages, where the count is not one.
    pub max_buffered_bytes_per_partition: usize,
    /// Retry delay tiers: a retry goes to the topic of the largest tier not above its delay
    /// (the smallest tier if none), where it waits for its own due time.
    #[serde(with = "humantime_serde_vec")]
    pub retry_tiers: Vec<Duration>,
    /// How long connecting, declaring and other admin calls may take; also the bound on how
    /// long opening the backend waits for an unreachable cluster.
    #[serde(with = "humantime_serde")]
    pub admin_timeout: Duration,
    /// Replication factor of the topics the adapter creates (1 on the single-node broker of
    /// `scripts/services`; 3 in production).
    pub replication_factor: i32,
}

/// Serde for a list of humantime durations (`["1s", "10s"]`).
mod humantime_serde_vec {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|d| humantime_serde::re::humantime::format_duration(*d).to_string())
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| humantime_serde::re::humantime::parse_duration(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: DEFAULT_BROKERS.into(),
            client_id: "horizons".into(),
            linger: Duration::from_millis(5),
            batch_bytes: 1 << 20,
            compression: "lz4".into(),
            publish_timeout: Duration::from_secs(120),
            session_timeout: Duration::from_secs(6),
            commit_interval: Duration::from_millis(200),
            max_buffered_per_partition: 100_000,
            max_buffered_bytes_per_partition: 32 << 20,
            retry_tiers: vec![
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(600),
            ],
            admin_timeout: Duration::from_secs(15),
            replication_factor: 1,
        }
    }
}

impl KafkaConfig {
    /// Defaults with the brokers from `HORIZONS_KAFKA_BROKERS` (else 127.0.0.1:9092).
    pub fn from_env() -> Self {
        let brokers = std::env::var(ENV_BROKERS).ok().filter(|b| !b.trim().is_empty());
        Self { brokers: brokers.unwrap_or_else(|| DEFAULT_BROKERS.into()), ..Self::default() }
    }

    /// Checks values, naming the key at fault.
    pub fn validate(&self) -> Result<(), KafkaError> {
        let bad = |m: &str| Err(KafkaError::Config(format!("bus.kafka.{m}")));
        if self.brokers.trim().is_empty() {
            return bad("brokers must name at least one host:port");
        }
        if self.retry_tiers.is_empty() || self.retry_tiers.windows(2).any(|w| w[0] >= w[1]) {
            return bad("retry_tiers must be a non-empty, strictly increasing list");
        }
        if self.retry_tiers.len() > 16 {
            return bad("retry_tiers must have at most 16 tiers");
        }
        if self.replication_factor < 1 {
            return bad("replication_factor must be at least 1");
        }
        if self.max_buffered_per_partition == 0 {
            return bad("max_buffered_per_partition must be at least 1");
        }
        if self.max_buffered_bytes_per_partition == 0 {
            return bad("max_buffered_bytes_per_partition must be at least 1");
        }
        if self.session_timeout < Duration::from_secs(1) {
            return bad("session_timeout must be at least 1s");
        }
        if self.publish_timeout.is_zero() || self.admin_timeout.is_zero() || self.commit_interval.is_zero() {
            return bad("publish_timeout, admin_timeout and commit_interval must be positive");
        }
        if !["none", "lz4", "zstd", "gzip", "snappy"].contains(&self.compression.as_str()) {
            return bad("compression must be one of none, lz4, zstd, gzip, snappy");
        }
        Ok(())
    }

    fn base(&self, role: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("{}-{role}", self.client_id))
            .set("socket.connection.setup.timeout.ms", ms(self.admin_timeout))
            .set("reconnect.backoff.max.ms", "1000")
            .set("log_level", "3");
        c
    }

    /// The idempotent producer: `acks=all`, `enable.idempotence`, batching per `linger` and
    /// `batch_bytes`. Publish acks come from its delivery reports.
    pub fn producer(&self) -> ClientConfig {
        let mut c = self.base("producer");
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", ms(self.linger))
            .set("batch.size", self.batch_bytes.to_string())
            .set("batch.num.messages", "100000")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("compression.type", &self.compression)
            .set("message.max.bytes", (16 << 20).to_string())
            .set("message.timeout.ms", ms(self.publish_timeout));
        c
    }

    /// A transactional producer for exactly-once stages (idempotent by construction).
    pub fn transactional_producer(&self, transactional_id: &str) -> ClientConfig {
        let mut c = self.producer();
        let timeout = self.publish_timeout.max(Duration::from_secs(60));
        c.set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", ms(timeout))
            .set("message.timeout.ms", ms(timeout));
        c
    }

    /// A group member: manual commits only, `read_committed`, earliest for new groups.
    pub fn consumer(&self, group_id: &str) -> ClientConfig {
        let mut c = self.base("consumer");
        c.set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", ms(self.session_timeout))
            .set("heartbeat.interval.ms", ms(self.session_timeout / 3))
            .set("max.poll.interval.ms", "300000")
            .set("fetch.wait.max.ms", "50")
            .set("queued.min.messages", "100000")
            // librdkafka (≥ 2.4) stops fetching for this long whenever its local queue is above
            // `queued.min.messages`; at the default 1 s a member that drains fast stalls for whole
            // seconds (measured: 90 k vs 500 k msg/s on the same data).
            .set("fetch.queue.backoff.ms", "10")
            .set("partition.assignment.strategy", "range,roundrobin")
            .set("enable.partition.eof", "false");
        c
    }

    /// A consumer outside any live group (reading DLQs and the topology, committing offsets of
    /// an empty group).
    pub fn reader(&self, group_id: &str) -> ClientConfig {
        let mut c = self.consumer(group_id);
        c.set("client.id", format!("{}-reader", self.client_id));
        c
    }

    /// The admin client.
    pub fn admin(&self) -> ClientConfig {
        self.base("admin")
    }
}

fn ms(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        KafkaConfig::default().validate().unwrap();
    }

    fn check(cfg: KafkaConfig, key: &str) {
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains(key), "{err} should name {key}");
    }

    #[test]
    fn bad_values_name_the_key() {
        check(KafkaConfig { brokers: " ".into(), ..Default::default() }, "bus.kafka.brokers");
        check(KafkaConfig { retry_tiers: vec![], ..Default::default() }, "bus.kafka.retry_tiers");
        let down = vec![Duration::from_secs(10), Duration::from_secs(1)];
        check(KafkaConfig { retry_tiers: down, ..Default::default() }, "bus.kafka.retry_tiers");
        check(KafkaConfig { compression: "brotli".into(), ..Default::default() }, "bus.kafka.compression");
    }

    #[test]
    fn parses_from_toml_with_defaults() {
        let c: KafkaConfig = serde_json::from_str(r#"{"brokers":"h:1","retry_tiers":["2s","1m"]}"#).unwrap();
        assert_eq!(c.brokers, "h:1");
        assert_eq!(c.retry_tiers, [Duration::from_secs(2), Duration::from_secs(60)]);
        assert_eq!(c.linger, KafkaConfig::default().linger);
        assert!(serde_json::from_str::<KafkaConfig>(r#"{"bogus":1}"#).is_err());
    }
}
