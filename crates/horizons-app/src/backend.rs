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
        other @ (BackendKind::Amqp | BackendKind::Kafka | BackendKind::Nats) => Err(AppError::BackendNotBuilt(other)),
    }
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
        for k in [BackendKind::Amqp, BackendKind::Kafka, BackendKind::Nats] {
            let mut cfg = Config::default();
            cfg.bus.backend = k;
            let err = open(&cfg).err().expect("not built").to_string();
            assert!(err.contains(&format!("the {k} backend is not built yet")), "{err}");
        }
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
}
