//! Configuration of the embedded backend.

use std::path::PathBuf;
use std::time::Duration;

use horizons_bus::BusError;
use horizons_log::EngineConfig;
use serde::{Deserialize, Serialize};

/// Settings of the embedded backend (`[bus.embedded]` in `horizons.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// Where the log lives.
    pub data_dir: PathBuf,
    /// Segment size in bytes before rolling.
    pub segment_bytes: u64,
    /// Unsettled messages a consumer group keeps in memory; priorities and per-key blocking
    /// act within this window.
    pub window: usize,
    /// How often consumer-group positions are saved.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// A ready message waiting longer than this is delivered before higher priorities.
    #[serde(with = "humantime_serde")]
    pub max_priority_wait: Duration,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        let e = EngineConfig::default();
        Self {
            data_dir: PathBuf::from("data/bus"),
            segment_bytes: e.segment_bytes,
            window: e.window,
            flush_interval: e.flush_interval,
            max_priority_wait: e.max_priority_wait,
        }
    }
}

impl EmbeddedConfig {
    /// Defaults with the log in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self { data_dir: dir.into(), ..Self::default() }
    }

    /// Checks ranges, naming the key at fault.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.segment_bytes < 4096 {
            return Err(BusError::Config("bus.embedded.segment_bytes must be at least 4096".into()));
        }
        if self.window == 0 {
            return Err(BusError::Config("bus.embedded.window must be at least 1".into()));
        }
        if self.flush_interval.is_zero() {
            return Err(BusError::Config("bus.embedded.flush_interval must be positive".into()));
        }
        Ok(())
    }

    pub(crate) fn engine(&self) -> EngineConfig {
        EngineConfig {
            segment_bytes: self.segment_bytes,
            window: self.window,
            flush_interval: self.flush_interval,
            max_priority_wait: self.max_priority_wait,
            ..EngineConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        EmbeddedConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = EmbeddedConfig { window: 0, ..Default::default() }.validate().unwrap_err().to_string();
        assert!(err.contains("bus.embedded.window"), "{err}");
    }
}
