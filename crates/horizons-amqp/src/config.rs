//! Configuration of the RabbitMQ backend (`[bus.amqp]` in `horizons.toml`).
//!
//! The URL carries the credentials, so it lives in [`SecretUrl`], whose `Debug`, `Display` and
//! `Serialize` all print the password as `***`: configuration dumps, logs and error messages
//! never show it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use horizons_bus::topology::DEFAULT_MAX_MESSAGE;
use horizons_bus::BusError;
use serde::{Deserialize, Serialize};

/// Environment variable the tests (and `scripts/services env`) use for the broker URL.
pub const ENV_URL: &str = "HORIZONS_AMQP_URL";

/// The broker `scripts/services up rabbitmq` provisions.
pub const DEFAULT_URL: &str = "amqp://horizons:horizons@127.0.0.1:5672/%2f";

/// An `amqp://` or `amqps://` URL whose password is never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password: only for handing to the client library.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }

    /// Whether the URL asks for TLS.
    pub fn is_tls(&self) -> bool {
        self.0.starts_with("amqps://")
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// `scheme://user:password@host…` → `scheme://user:***@host…`; anything else unchanged.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_string() };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..scheme_end], &rest[..colon], &rest[at..]),
        None => url.to_string(),
    }
}

/// Settings of the RabbitMQ backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpConfig {
    /// Broker URL, `amqp://user:password@host:port/vhost` or `amqps://…` for TLS (the vhost
    /// URL-encoded: `%2f` is `/`). Overridden by `HORIZONS_AMQP_URL`.
    pub url: SecretUrl,
    /// PEM file with the CA certificates that sign the broker's certificate, for `amqps://`
    /// with a private CA; the system roots are used when unset.
    pub tls_ca_file: Option<PathBuf>,
    /// Name shown for our connections in the broker's management UI.
    pub connection_name: String,
    /// How long the first connection may take before start-up fails.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// First delay between reconnection attempts; doubles up to `reconnect_backoff_max`.
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff_min: Duration,
    /// Longest delay between reconnection attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff_max: Duration,
    /// How long publish, declare and DLQ calls wait for a lost connection to come back before
    /// failing with `Unavailable` (subscriptions wait forever).
    #[serde(with = "humantime_serde")]
    pub unavailable_wait: Duration,
    /// Publisher confirms outstanding per publishing channel: the pipelining window.
    pub confirm_window: usize,
    /// Channels used for publishing, round robin.
    pub publish_channels: usize,
    /// How long a member waits for a higher-priority message the broker is about to push
    /// before handing out a lower one (see the crate docs on priorities).
    #[serde(with = "humantime_serde")]
    pub priority_grace: Duration,
    /// Queues per block-key group; keys are hashed onto them (1–64). Changing it for an
    /// existing group is a topology conflict.
    pub block_key_shards: u32,
    /// `x-delivery-limit` of work queues: returns (crashes, expired leases, drops) after which
    /// the broker dead-letters a message. Unset: the group's `retry.max_attempts`.
    pub delivery_limit: Option<u32>,
    /// `x-expires` of work and dead-letter queues: unused queues are deleted after this long.
    /// For tests and scratch topics only; unset in production.
    #[serde(with = "humantime_serde")]
    pub queue_expires: Option<Duration>,
    /// Size limit for topics this process did not declare itself (declared topics carry
    /// their own `max_message_bytes`).
    pub max_message_bytes: usize,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: SecretUrl::new(DEFAULT_URL),
            tls_ca_file: None,
            connection_name: "horizons".into(),
            connect_timeout: Duration::from_secs(10),
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(3),
            unavailable_wait: Duration::from_secs(20),
            confirm_window: 1024,
            publish_channels: 2,
            priority_grace: Duration::from_millis(25),
            block_key_shards: 4,
            delivery_limit: None,
            queue_expires: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE,
        }
    }
}

impl AmqpConfig {
    /// Defaults with the URL from `HORIZONS_AMQP_URL`, or [`DEFAULT_URL`].
    pub fn from_env() -> Self {
        let url = std::env::var(ENV_URL).ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_URL.into());
        Self { url: SecretUrl::new(url), ..Self::default() }
    }

    /// Checks values, naming the key at fault (and never printing the password).
    pub fn validate(&self) -> Result<(), BusError> {
        let bad = |m: String| Err(BusError::Config(m));
        let url = self.url.expose();
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return bad(format!("bus.amqp.url must start with amqp:// or amqps://, got {}", self.url));
        }
        if let Err(e) = url.parse::<lapin::uri::AMQPUri>() {
            return bad(format!("bus.amqp.url {} does not parse: {}", self.url, redact(&e.to_string())));
        }
        if self.confirm_window == 0 {
            return bad("bus.amqp.confirm_window must be at least 1".into());
        }
        if self.publish_channels == 0 {
            return bad("bus.amqp.publish_channels must be at least 1".into());
        }
        if !(1..=crate::topology::BUCKETS).contains(&self.block_key_shards) {
            return bad(format!("bus.amqp.block_key_shards must be 1–{}", crate::topology::BUCKETS));
        }
        if self.delivery_limit == Some(0) {
            return bad("bus.amqp.delivery_limit must be at least 1 when set".into());
        }
        if self.queue_expires.is_some_and(|d| d < Duration::from_secs(1)) {
            return bad("bus.amqp.queue_expires must be at least 1s when set".into());
        }
        if self.connect_timeout.is_zero() || self.unavailable_wait.is_zero() {
            return bad("bus.amqp.connect_timeout and bus.amqp.unavailable_wait must be positive".into());
        }
        if self.reconnect_backoff_min.is_zero() || self.reconnect_backoff_min > self.reconnect_backoff_max {
            return bad("bus.amqp.reconnect_backoff_min must be positive and at most reconnect_backoff_max".into());
        }
        if self.tls_ca_file.is_some() && !self.url.is_tls() {
            return bad("bus.amqp.tls_ca_file is set but bus.amqp.url is not amqps://".into());
        }
        Ok(())
    }

    /// The PEM chain from `tls_ca_file`, if set.
    pub(crate) fn tls_ca_pem(&self) -> Result<Option<String>, BusError> {
        match &self.tls_ca_file {
            None => Ok(None),
            Some(p) => std::fs::read_to_string(p)
                .map(Some)
                .map_err(|e| BusError::Config(format!("bus.amqp.tls_ca_file {}: {e}", p.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_redact(url: &str, expected: &str) {
        assert_eq!(redact(url), expected, "{url}");
    }

    #[test]
    fn passwords_are_redacted() {
        check_redact("amqp://u:secret@h:5672/%2f", "amqp://u:***@h:5672/%2f");
        check_redact("amqps://u:p%40ss@h/vh", "amqps://u:***@h/vh");
        check_redact("amqp://u@h/", "amqp://u@h/");
        check_redact("amqp://h:5672/%2f", "amqp://h:5672/%2f");
        check_redact("not a url", "not a url");
        let url = SecretUrl::new("amqp://u:secret@h/%2f");
        assert!(!format!("{url} {url:?}").contains("secret"));
        let cfg = AmqpConfig { url, ..AmqpConfig::default() };
        assert!(!format!("{cfg:?}").contains("secret"));
        assert!(!serde_json::to_string(&cfg).unwrap().contains("secret"));
    }

    #[test]
    fn defaults_validate() {
        AmqpConfig::default().validate().unwrap();
    }

    fn check_invalid(cfg: AmqpConfig, key: &str) {
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let d = AmqpConfig::default;
        check_invalid(AmqpConfig { url: SecretUrl::new("http://u:hunter2@h"), ..d() }, "bus.amqp.url");
        check_invalid(AmqpConfig { confirm_window: 0, ..d() }, "bus.amqp.confirm_window");
        check_invalid(AmqpConfig { block_key_shards: 0, ..d() }, "bus.amqp.block_key_shards");
        check_invalid(AmqpConfig { delivery_limit: Some(0), ..d() }, "bus.amqp.delivery_limit");
        check_invalid(AmqpConfig { tls_ca_file: Some("ca.pem".into()), ..d() }, "bus.amqp.tls_ca_file");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(serde_json::from_str::<AmqpConfig>(r#"{"urll": "amqp://h"}"#).is_err());
        let cfg: AmqpConfig = serde_json::from_str(r#"{"url": "amqps://h/%2f", "confirm_window": 64}"#).unwrap();
        assert!(cfg.url.is_tls() && cfg.confirm_window == 64);
    }
}
