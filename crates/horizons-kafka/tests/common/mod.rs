//! Shared by the integration tests: the broker of `scripts/services` on
//! `HORIZONS_KAFKA_BROKERS` (default 127.0.0.1:9092). A broker that cannot be reached fails the
//! test with what to run; it is never a skip.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use horizons_kafka::{KafkaBus, KafkaConfig};

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
