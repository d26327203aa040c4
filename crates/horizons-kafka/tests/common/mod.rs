//! Shared by the integration tests: the broker of `scripts/services` on
//! `HORIZONS_KAFKA_BROKERS` (default 127.0.0.1:9092). A broker that cannot be reached fails the
//! test with what to run; it is never a skip.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use horizons_kafka::{KafkaBus, KafkaConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

/// The repository's `scripts/services`.
pub fn services() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services")
}

/// Connects to the test broker, panicking with instructions if it is not there.
pub async fn connect() -> KafkaBus {
    let cfg = KafkaConfig::from_env();
    match KafkaBus::connect(cfg.clone()).await {
        Ok(bus) => bus,
        Err(e) => panic!(
            "kafka tests need a broker at {} (run `bash scripts/services up kafka` and \
             `eval \"$(bash scripts/services env)\"`): {e}",
            cfg.brokers
        ),
    }
}

/// Runs `scripts/services <cmd>` and panics if it fails.
pub fn services_cmd(cmd: &str) {
    let status = Command::new("bash").arg(services()).arg(cmd).status().expect("run scripts/services");
    assert!(status.success(), "scripts/services {cmd} failed: {status}");
}

/// A client of the test broker for describing consumer groups.
pub fn group_client() -> BaseConsumer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", KafkaConfig::from_env().brokers)
        .create()
        .expect("a client to describe groups")
}

/// The state (`Stable`, `Empty`, …) and member count of `group_id` as the broker's group
/// coordinator lists them.
pub fn describe_group(c: &BaseConsumer, group_id: &str) -> Result<(String, usize), KafkaError> {
    let list = c.fetch_group_list(Some(group_id), Duration::from_secs(10))?;
    let state = list.groups().first().map_or_else(String::new, |g| g.state().to_string());
    Ok((state, list.groups().iter().map(|g| g.members().len()).sum()))
}
