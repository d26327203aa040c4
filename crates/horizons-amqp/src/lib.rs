//! The `amqp` backend: the bus contract on RabbitMQ (3.10+) through `lapin`.
//!
//! Same layout as every adapter: [`config`], [`publisher`], [`consumer`], [`topology`] and the
//! conformance suite in `tests/`; [`connection`] keeps the connection alive, [`codec`] maps
//! envelopes to AMQP messages, [`member`] is one subscription's delivery state machine,
//! [`acker`] settles deliveries, [`acks`] batches the acks and [`dlq`] lists and redrives dead
//! letters. Errors are
//! [`AmqpError`], converted to [`BusError`] at the trait boundary.
//!
//! # How the contract maps onto RabbitMQ, and what each choice costs
//!
//! - **Durability.** Quorum queues (Raft, fsync'd), persistent messages, and publisher confirms:
//!   `publish` returns once the broker confirmed every message. Confirms are pipelined: a
//!   batch goes out without waiting, up to `confirm_window` unconfirmed per channel, and
//!   `mandatory` turns an unroutable message into an error instead of a silent drop.
//! - **Consuming.** A channel per queue of the group for each subscription, with `basic.qos` =
//!   the member's prefetch; acks are sent only when the handler settled, in batches ([`acks`]:
//!   a run of settles as one `basic.ack` with `multiple`, within 5 ms). A delivery not settled within the
//!   group's visibility timeout is requeued (`basic.reject`) and the stale settle answers
//!   `LeaseExpired`.
//! - **Priorities.** Quorum queues in 3.10 have none, so a `requeue` group has one queue per
//!   level (0–9) and each member consumes all ten, handing out the highest buffered level
//!   first. It waits up to `priority_grace` when the broker is about to push a higher one (a
//!   higher level just settled with its prefetch full). Cost: ten quorum queues per group and up
//!   to ten times the prefetch held per member; priority holds among what a member has
//!   buffered, like the embedded backend's window. No starvation guard is needed beyond
//!   that: each level has its own prefetch, so a flood of high priorities cannot stop a lower
//!   level's messages from reaching the member, only delay their hand-out.
//! - **Delays and retries** (`not_before`, `retry_after`) use a delay ladder without plugins:
//!   25 quorum queues with TTL 2^k ms that dead-letter from one to the next, bit by bit of the
//!   delay, then out through a headers exchange to one queue (a retry) or the topic (a delayed
//!   publish); see [`publisher`]. Delays are exact to the millisecond (plus about a millisecond
//!   per set bit), capped at 9.3 h; every retry is one more publish with confirm.
//! - **Ordering `block-key`**: `block_key_shards` queues per group with
//!   `x-single-active-consumer`; keys are hashed onto them, so one member at a time consumes a
//!   shard, in order. That member holds back a key while one of its messages is in flight and
//!   retries in place (the message stays unacked), so later messages of the key wait. Cost:
//!   parallelism is per shard, not per key; on 3.10 the single active consumer is the first to
//!   subscribe, so one process takes all shards until it leaves (failover is automatic); a
//!   retried message keeps its queue slot and prefetch; attempt counts and errors of in-place
//!   retries live in the member and are lost if it crashes (the broker's count remains).
//! - **Dead letters**: handler verdicts are published to `hz:T:G:dlq` with the bus's `x-dlq-*`
//!   headers ([`horizons_bus::DeadLetter::encode`]); crash loops are cut by the quorum queue's
//!   `x-delivery-limit`, which dead-letters with reason `delivery_limit`.
//! - **Replay**: not available (RabbitMQ queues forget what was acked); `replay()` is `None`.
//! - **Resilience**: see [`connection`]: reconnect with backoff, redeclare, resend unconfirmed
//!   publishes, resume consumers; subscriptions never end because of an outage.
//! - **Credentials**: the URL's password is never printed ([`config::SecretUrl`]).

pub mod acker;
pub mod acks;
pub mod codec;
pub mod config;
pub mod connection;
pub mod consumer;
pub mod dlq;
pub mod member;
pub mod publisher;
pub mod topology;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use horizons_bus::{Backend, BusError, Capabilities, Replay, Topic, TopicSpec};
use parking_lot::RwLock;

pub use config::{AmqpConfig, SecretUrl};

/// What can go wrong in the RabbitMQ backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AmqpError {
    /// The broker could not be reached or refused us (wrong credentials, vhost, TLS).
    #[error("connecting to {url}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The cause.
        #[source]
        source: lapin::Error,
    },
    /// No connection within the configured time.
    #[error("connecting to {url}: no answer within {timeout:?}")]
    ConnectTimeout {
        /// The URL, password redacted.
        url: String,
        /// The limit.
        timeout: Duration,
    },
    /// The TLS settings could not be used.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A broker operation failed.
    #[error("{op}")]
    Lapin {
        /// What we were doing.
        op: String,
        /// The cause.
        #[source]
        source: lapin::Error,
    },
    /// The broker returned a `mandatory` message: no queue is bound for it.
    #[error("message {id} to {exchange} was unroutable (routing key {routing_key}): no queue is bound for it; declare a group on the topic first")]
    Unroutable {
        /// The message id.
        id: String,
        /// The exchange.
        exchange: String,
        /// Its routing key.
        routing_key: String,
    },
    /// The broker refused to store a message (`basic.nack`, e.g. a full queue).
    #[error("message {id} to {exchange} was refused by the broker (nack)")]
    Nacked {
        /// The message id.
        id: String,
        /// The exchange.
        exchange: String,
    },
}

impl AmqpError {
    pub(crate) fn lapin(op: impl Into<String>, source: lapin::Error) -> Self {
        Self::Lapin { op: op.into(), source }
    }

    /// The AMQP reply code of a channel-level (soft) error, e.g. 404 or 406.
    pub(crate) fn soft_code(e: &lapin::Error) -> Option<u16> {
        match e.kind() {
            lapin::ErrorKind::ProtocolError(p) => match p.kind() {
                lapin::protocol::AMQPErrorKind::Soft(_) => Some(p.get_id()),
                lapin::protocol::AMQPErrorKind::Hard(_) => None,
            },
            _ => None,
        }
    }

    /// A failed declaration of `what`: `PRECONDITION_FAILED` becomes a topology conflict.
    pub(crate) fn declare(what: &str, e: lapin::Error) -> BusError {
        if Self::soft_code(&e) == Some(406) {
            if let Some(c) = parse_conflict(&e.to_string()) {
                return c;
            }
        }
        Self::lapin(format!("declaring {what}"), e).into()
    }
}

/// `… inequivalent arg 'x-delivery-limit' for queue 'q' in vhost '/': received … but current is …`
fn parse_conflict(msg: &str) -> Option<BusError> {
    let between = |s: &str, a: &str, b: &str| -> Option<String> {
        let start = s.find(a)? + a.len();
        let len = s[start..].find(b)?;
        Some(s[start..start + len].to_string())
    };
    let mut field = between(msg, "inequivalent arg '", "'")?;
    let object = between(msg, "for queue '", "'").or_else(|| between(msg, "for exchange '", "'"))?;
    match field.as_str() {
        "x-overflow" if object.ends_with(":dlq") => field = "ordering (recorded as x-overflow on the DLQ)".into(),
        "x-delivery-limit" => field = "retry.max_attempts (x-delivery-limit)".into(),
        _ => {}
    }
    let declared = between(msg, "received ", " but current is").unwrap_or_else(|| "?".into());
    let existing = msg.split(" but current is ").nth(1).unwrap_or("?").trim().to_string();
    Some(BusError::TopologyConflict { object, field, existing, declared })
}

impl From<AmqpError> for BusError {
    fn from(e: AmqpError) -> Self {
        let context = e.to_string();
        match e {
            AmqpError::ConnectTimeout { .. } => BusError::Unavailable(context),
            AmqpError::Lapin { source, .. } if AmqpError::soft_code(&source) == Some(404) => {
                BusError::backend(format!("{context}: the broker has no such exchange or queue"), source)
            }
            AmqpError::Connect { source, .. } | AmqpError::Lapin { source, .. } => BusError::backend(context, source),
            other => BusError::backend("amqp", other),
        }
    }
}

/// `e` and its sources, joined by `: `.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.ends_with(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

pub(crate) struct Inner {
    pub cfg: Arc<AmqpConfig>,
    pub conn: connection::Conn,
    /// What this process declared (groups merged), for conflicts, redeclaring and routing.
    pub topics: RwLock<HashMap<Topic, TopicSpec>>,
    pub declaring: tokio::sync::Mutex<()>,
    pub publisher: publisher::Channels,
}

/// The RabbitMQ bus. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct AmqpBus {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for AmqpBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBus").field("url", &self.inner.cfg.url).finish()
    }
}

impl AmqpBus {
    /// Starts connecting in the background and returns at once; operations wait for the
    /// connection (up to `unavailable_wait`). Must run inside a Tokio runtime.
    pub fn open(cfg: AmqpConfig) -> Result<AmqpBus, BusError> {
        cfg.validate()?;
        Ok(Self::start(cfg, None))
    }

    /// Connects, failing within `connect_timeout` with an error that names the URL (password
    /// redacted) if the broker is unreachable or refuses the credentials.
    pub async fn connect(cfg: AmqpConfig) -> Result<AmqpBus, BusError> {
        cfg.validate()?;
        let conn = connection::connect_once(&cfg).await?;
        Ok(Self::start(cfg, Some(conn)))
    }

    fn start(cfg: AmqpConfig, conn: Option<lapin::Connection>) -> AmqpBus {
        let cfg = Arc::new(cfg);
        let inner = Arc::new(Inner {
            conn: connection::Conn::new(cfg.clone()),
            topics: RwLock::new(HashMap::new()),
            declaring: tokio::sync::Mutex::new(()),
            publisher: publisher::Channels::new(&cfg),
            cfg,
        });
        if let Some(c) = conn {
            inner.conn.install(c);
        }
        tokio::spawn(connection::supervise(Arc::downgrade(&inner)));
        AmqpBus { inner }
    }

    /// The configuration in use.
    pub fn config(&self) -> &AmqpConfig {
        &self.inner.cfg
    }

    /// The topics this bus declared (groups merged).
    pub fn declared(&self) -> Vec<TopicSpec> {
        self.inner.topics.read().values().cloned().collect()
    }

    /// Deletes the exchanges and queues of `topics`, messages included, one at a time (deleting
    /// many quorum queues at once stalls a small broker). For tests and scratch topics.
    pub async fn delete(&self, topics: &[TopicSpec]) -> Result<(), BusError> {
        let live = self.inner.conn.live(Some(self.inner.cfg.unavailable_wait)).await?;
        let ch = live.channel("deleting topics").await?;
        for t in topics {
            self.inner.topics.write().remove(&t.name);
            for g in &t.groups {
                let layout = topology::Layout::new(&self.inner.cfg, &t.name, g);
                for q in layout.queues.iter().chain([&layout.dlq]) {
                    let opts = lapin::options::QueueDeleteOptions::default();
                    ch.queue_delete(q.as_str().into(), opts)
                        .await
                        .map_err(|e| AmqpError::lapin(format!("deleting {q}"), e))?;
                }
            }
            for x in [topology::exchange(&t.name), topology::direct_exchange(&t.name)] {
                let opts = lapin::options::ExchangeDeleteOptions::default();
                ch.exchange_delete(x.as_str().into(), opts)
                    .await
                    .map_err(|e| AmqpError::lapin(format!("deleting {x}"), e))?;
            }
        }
        let _ = ch.close(200, "deleted".into()).await;
        Ok(())
    }
}

#[async_trait]
impl Backend for AmqpBus {
    fn name(&self) -> &'static str {
        "amqp"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            priorities: true,
            delays: true,
            replay_offset: false,
            replay_time: false,
            block_key_ordering: true,
            duplicates_without_failure: false,
        }
    }

    fn replay(&self) -> Option<&dyn Replay> {
        None
    }

    async fn close(&self) -> Result<(), BusError> {
        self.inner.conn.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precondition_failed_becomes_a_conflict() {
        let msg = "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'hz:t:g:p4' in vhost '/': \
                   received the value '5' of type 'signedint' but current is the value '3' of type 'signedint'";
        let Some(BusError::TopologyConflict { object, field, existing, declared }) = parse_conflict(msg) else {
            panic!("not parsed")
        };
        assert_eq!((object.as_str(), field.as_str()), ("hz:t:g:p4", "retry.max_attempts (x-delivery-limit)"));
        assert!(existing.contains('3') && declared.contains('5'), "{existing} / {declared}");
    }
}
