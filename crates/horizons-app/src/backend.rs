//! Choosing the bus backend: the one place that turns a [`BackendKind`] into an
//! `Arc<dyn Backend>`, so each adapter plugs in here when it is built.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use horizons_bus::Backend;
use horizons_embedded::EmbeddedBus;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::AppError;

/// The bus backends horizons knows of (a closed set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The embedded durable log (`horizons-log`), no server needed.
    #[default]
    Embedded,
    /// RabbitMQ through lapin.
    Amqp,
    /// Kafka through rdkafka.
    Kafka,
    /// NATS JetStream through async-nats.
    Nats,
}

impl BackendKind {
    /// Every kind, in the order the CLI lists them.
    pub const ALL: [BackendKind; 4] = [BackendKind::Embedded, BackendKind::Amqp, BackendKind::Kafka, BackendKind::Nats];

    /// The short name (`embedded`, `amqp`, `kafka`, `nats`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Embedded => "embedded",
            BackendKind::Amqp => "amqp",
            BackendKind::Kafka => "kafka",
            BackendKind::Nats => "nats",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown backend {s:?}; expected one of embedded, amqp, kafka, nats"))
    }
}

/// Opens the backend `cfg.bus.backend` names. Must run inside a Tokio runtime.
///
/// Only `embedded` is built so far; the others fail with [`AppError::BackendNotBuilt`] rather
/// than pretend.
pub fn open(cfg: &Config) -> Result<Arc<dyn Backend>, AppError> {
    match cfg.bus.backend {
        BackendKind::Embedded => {
            let ecfg = cfg.embedded();
            let dir = ecfg.data_dir.display().to_string();
            let bus = EmbeddedBus::open(ecfg).map_err(AppError::bus(format!("opening the embedded bus in {dir}")))?;
            Ok(Arc::new(bus))
        }
        BackendKind::Kafka => {
            let kcfg = cfg.bus.kafka.clone();
            let brokers = kcfg.brokers.clone();
            let bus = open_kafka(kcfg).map_err(AppError::bus(format!("connecting to Kafka at {brokers}")))?;
            Ok(Arc::new(bus))
        }
        BackendKind::Amqp => {
            let acfg = cfg.bus.amqp.clone();
            let url = acfg.url.redacted();
            let bus = open_amqp(acfg).map_err(AppError::bus(format!("connecting to RabbitMQ at {url}")))?;
            Ok(Arc::new(bus))
        }
        other @ BackendKind::Nats => Err(AppError::BackendNotBuilt(other)),
    }
}

/// Connects the kafka backend from synchronous code inside a Tokio runtime (multi-thread, as
/// every horizons command runs): bounded by the config's `admin_timeout`.
fn open_kafka(kcfg: horizons_kafka::KafkaConfig) -> Result<horizons_kafka::KafkaBus, horizons_bus::BusError> {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(horizons_kafka::KafkaBus::connect(kcfg)).map_err(Into::into)
    })
}

/// Connects the amqp backend from synchronous code inside a (multi-thread) Tokio runtime, so
/// an unreachable broker or wrong credentials fail at start-up, within `connect_timeout`.
fn open_amqp(acfg: horizons_amqp::AmqpConfig) -> Result<horizons_amqp::AmqpBus, horizons_bus::BusError> {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(horizons_amqp::AmqpBus::connect(acfg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in BackendKind::ALL {
            assert_eq!(k.as_str().parse::<BackendKind>().unwrap(), k);
        }
        assert!("rabbit".parse::<BackendKind>().is_err());
    }

    #[tokio::test]
    async fn unbuilt_backends_fail_clearly() {
        let mut cfg = Config::default();
        cfg.bus.backend = BackendKind::Nats;
        let err = open(&cfg).err().expect("not built").to_string();
        assert!(err.contains("the nats backend is not built yet"), "{err}");
    }

    #[tokio::test]
    async fn embedded_opens_under_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        let bus = open(&cfg).unwrap();
        assert_eq!(bus.name(), "embedded");
        assert!(dir.path().join("bus").is_dir());
        bus.close().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kafka_start_up_failure_names_the_brokers() {
        let mut cfg = Config::default();
        cfg.bus.backend = BackendKind::Kafka;
        cfg.bus.kafka.brokers = "127.0.0.1:1".into();
        cfg.bus.kafka.admin_timeout = std::time::Duration::from_secs(2);
        let err = open(&cfg).err().expect("nothing listens on port 1").to_string();
        assert!(err.contains("connecting to Kafka at 127.0.0.1:1"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn amqp_start_up_failure_names_the_url_without_password() {
        let mut cfg = Config::default();
        cfg.bus.backend = BackendKind::Amqp;
        cfg.bus.amqp.url = horizons_amqp::SecretUrl::new("amqp://horizons:hunter2@127.0.0.1:1/%2f");
        let err = open(&cfg).err().expect("nothing listens on port 1").to_string();
        assert!(err.contains("amqp://horizons:***@127.0.0.1:1/%2f") && !err.contains("hunter2"), "{err}");
    }
}
