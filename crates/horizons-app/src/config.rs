//! Layered configuration: built-in defaults → `horizons.toml` → `HORIZONS_*` environment →
//! command-line flags → validation.
//!
//! The file is `--config PATH` (or `HORIZONS_CONFIG`), else `./horizons.toml` if it exists,
//! else none. Every table is a typed struct with `deny_unknown_fields`, so an unknown key or a
//! value of the wrong type fails at start-up with an error that shows the key and its line.
//! Keys missing from the file keep their defaults. The environment overrides a fixed set of
//! keys ([`ENV_VARS`]); flags override the environment. Validation runs last, on the merged
//! result, and names the key at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use horizons_amqp::AmqpConfig;
use horizons_bus::BusError;
use horizons_embedded::EmbeddedConfig;
use horizons_kafka::KafkaConfig;
use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;
use crate::error::AppError;
use crate::portal::config::{PortalConfig, Secret};

/// The file read when no `--config` is given, if it exists.
pub const DEFAULT_FILE: &str = "horizons.toml";
/// Environment variable naming the configuration file.
pub const ENV_CONFIG: &str = "HORIZONS_CONFIG";

/// The environment variables read, and the key each one sets.
pub const ENV_VARS: [(&str, &str); 10] = [
    ("HORIZONS_DATA_DIR", "data_dir"),
    ("HORIZONS_HTTP_ADDR", "http.addr"),
    ("HORIZONS_BUS_BACKEND", "bus.backend"),
    ("HORIZONS_BUS_EMBEDDED_DATA_DIR", "bus.embedded.data_dir"),
    ("HORIZONS_AMQP_URL", "bus.amqp.url"),
    ("HORIZONS_KAFKA_BROKERS", "bus.kafka.brokers"),
    ("HORIZONS_DATABASE_URL", "portal.database_url"),
    ("HORIZONS_NAMESPACE", "portal.namespace"),
    ("HORIZONS_JWT_SECRET", "portal.jwt_secret"),
    ("HORIZONS_SMTP_URL", "portal.smtp_url"),
];

/// The whole configuration of a horizons process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Root directory of everything horizons keeps on disk; each component has a folder in it.
    pub data_dir: PathBuf,
    /// The HTTP server of `horizons up` / `serve`.
    pub http: HttpConfig,
    /// The message bus.
    pub bus: BusConfig,
    /// The comment pipeline (database, secrets, audit, mail, search).
    pub portal: PortalConfig,
    /// The ngVLA pipeline's stage workers.
    pub pipeline: PipelineSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            http: HttpConfig::default(),
            bus: BusConfig::default(),
            portal: PortalConfig::default(),
            pipeline: PipelineSection::default(),
        }
    }
}

/// `[pipeline]`: the ngVLA pipeline's stage workers (`horizons worker --role pipeline:<stage>`,
/// or `horizons up` with `in_up`). Topics are `<portal.namespace>ngvla.*`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// Where the archive stage writes products (`<dir>/<observation>/run-<run>/`); default
    /// `<data_dir>/pipeline/products`.
    pub products_dir: Option<PathBuf>,
    /// Where the stages keep unfinished runs on disk; default `<data_dir>/pipeline/spool`.
    pub spool_dir: Option<PathBuf>,
    /// Whether `horizons up` also runs every pipeline stage.
    pub in_up: bool,
}

/// `[http]`: the HTTP server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address and port to listen on.
    pub addr: SocketAddr,
    /// How long in-flight requests may run on after a shutdown signal before they are cut.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { addr: SocketAddr::from(([127, 0, 0, 1], 8080)), shutdown_timeout: Duration::from_secs(5) }
    }
}

/// `[bus]`: which backend carries messages, and each backend's settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// The backend: `embedded` (default), `amqp`, `kafka` or `nats`.
    pub backend: BackendKind,
    /// Settings of the embedded backend.
    pub embedded: EmbeddedSection,
    /// Settings of the amqp backend (`[bus.amqp]`; the URL also from `HORIZONS_AMQP_URL`).
    pub amqp: AmqpConfig,
    /// Settings of the kafka backend (`[bus.kafka]`; brokers also from `HORIZONS_KAFKA_BROKERS`).
    pub kafka: KafkaConfig,
}

/// `[bus.embedded]`: the embedded log engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedSection {
    /// Where the log lives; `<data_dir>/bus` when not set.
    pub data_dir: Option<PathBuf>,
    /// Segment size in bytes before a new segment file is started (at least 4096).
    pub segment_bytes: u64,
    /// Unsettled messages a consumer group keeps in memory (at least 1).
    pub window: usize,
    /// How often consumer-group positions are saved (positive).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// A ready message waiting longer than this is delivered ahead of higher priorities.
    #[serde(with = "humantime_serde")]
    pub max_priority_wait: Duration,
}

impl Default for EmbeddedSection {
    fn default() -> Self {
        let e = EmbeddedConfig::default();
        Self {
            data_dir: None,
            segment_bytes: e.segment_bytes,
            window: e.window,
            flush_interval: e.flush_interval,
            max_priority_wait: e.max_priority_wait,
        }
    }
}

/// What the command line sets; each `Some` wins over file and environment.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--http`.
    pub http_addr: Option<SocketAddr>,
    /// `--backend`.
    pub backend: Option<BackendKind>,
}

impl Config {
    /// Loads defaults, the file, the process environment and `flags`, then validates.
    pub fn load(flags: &Overrides) -> Result<Config, AppError> {
        Self::load_with_env(flags, |k| std::env::var(k).ok())
    }

    /// As [`Config::load`], reading the environment through `env` (for tests).
    pub fn load_with_env(flags: &Overrides, env: impl Fn(&str) -> Option<String>) -> Result<Config, AppError> {
        let path = flags.config.clone().or_else(|| env(ENV_CONFIG).filter(|v| !v.is_empty()).map(PathBuf::from));
        let mut cfg = match path {
            Some(p) => Self::from_file(&p)?,
            None if Path::new(DEFAULT_FILE).is_file() => Self::from_file(Path::new(DEFAULT_FILE))?,
            None => Config::default(),
        };
        cfg.apply_env(env)?;
        cfg.apply_flags(flags);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses `path` over the defaults (no validation).
    pub fn from_file(path: &Path) -> Result<Config, AppError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| AppError::ConfigRead { path: path.to_path_buf(), source })?;
        Self::from_toml(&text, path)
    }

    /// Parses `text` (the contents of `path`) over the defaults (no validation).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, AppError> {
        toml::from_str(text).map_err(|e| AppError::ConfigParse { path: path.to_path_buf(), source: Box::new(e) })
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), AppError> {
        for (var, _key) in ENV_VARS {
            let Some(value) = env(var).filter(|v| !v.is_empty()) else { continue };
            let bad = |reason: String| AppError::ConfigEnv { var, value: value.clone(), reason };
            match var {
                "HORIZONS_DATA_DIR" => self.data_dir = PathBuf::from(&value),
                "HORIZONS_HTTP_ADDR" => {
                    self.http.addr = value.parse().map_err(|e: std::net::AddrParseError| bad(e.to_string()))?
                }
                "HORIZONS_BUS_BACKEND" => self.bus.backend = value.parse().map_err(bad)?,
                "HORIZONS_BUS_EMBEDDED_DATA_DIR" => self.bus.embedded.data_dir = Some(PathBuf::from(&value)),
                "HORIZONS_AMQP_URL" => self.bus.amqp.url = horizons_amqp::SecretUrl::new(value.clone()),
                "HORIZONS_KAFKA_BROKERS" => self.bus.kafka.brokers = value.clone(),
                "HORIZONS_DATABASE_URL" => self.portal.database_url = Secret::new(value.clone()),
                "HORIZONS_NAMESPACE" => self.portal.namespace = value.clone(),
                "HORIZONS_JWT_SECRET" => self.portal.jwt_secret = Secret::new(value.clone()),
                "HORIZONS_SMTP_URL" => self.portal.smtp_url = Secret::new(value.clone()),
                _ => unreachable!("every entry of ENV_VARS is handled"),
            }
        }
        Ok(())
    }

    fn apply_flags(&mut self, flags: &Overrides) {
        if let Some(d) = &flags.data_dir {
            self.data_dir = d.clone();
        }
        if let Some(a) = flags.http_addr {
            self.http.addr = a;
        }
        if let Some(b) = flags.backend {
            self.bus.backend = b;
        }
    }

    /// Checks the merged configuration; the error names the key.
    pub fn validate(&self) -> Result<(), AppError> {
        let invalid = |m: &str| Err(AppError::ConfigInvalid(m.to_string()));
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir must not be empty");
        }
        if self.http.shutdown_timeout.is_zero() {
            return invalid("http.shutdown_timeout must be positive");
        }
        if self.bus.embedded.data_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return invalid("bus.embedded.data_dir must not be empty when set");
        }
        for (key, dir) in
            [("pipeline.products_dir", &self.pipeline.products_dir), ("pipeline.spool_dir", &self.pipeline.spool_dir)]
        {
            if dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
                return Err(AppError::ConfigInvalid(format!("{key} must not be empty when set")));
            }
        }
        self.portal.validate().map_err(AppError::ConfigInvalid)?;
        self.bus.kafka.validate().map_err(|e| AppError::ConfigInvalid(e.to_string()))?;
        self.bus.amqp.validate().map_err(|e| AppError::ConfigInvalid(e.to_string()))?;
        self.embedded().validate().map_err(|e| match e {
            BusError::Config(m) => AppError::ConfigInvalid(m),
            other => AppError::ConfigInvalid(other.to_string()),
        })
    }

    /// Where the pipeline's archive writes.
    pub fn pipeline_products_dir(&self) -> PathBuf {
        self.pipeline.products_dir.clone().unwrap_or_else(|| self.data_dir.join("pipeline").join("products"))
    }

    /// Where the pipeline's stages spool unfinished runs.
    pub fn pipeline_spool_dir(&self) -> PathBuf {
        self.pipeline.spool_dir.clone().unwrap_or_else(|| self.data_dir.join("pipeline").join("spool"))
    }

    /// Where the embedded log lives.
    pub fn embedded_dir(&self) -> PathBuf {
        self.bus.embedded.data_dir.clone().unwrap_or_else(|| self.data_dir.join("bus"))
    }

    /// The embedded backend's settings.
    pub fn embedded(&self) -> EmbeddedConfig {
        let e = &self.bus.embedded;
        EmbeddedConfig {
            data_dir: self.embedded_dir(),
            segment_bytes: e.segment_bytes,
            window: e.window,
            flush_interval: e.flush_interval,
            max_priority_wait: e.max_priority_wait,
        }
    }
}

#[cfg(test)]
mod tests;
