//! The message-bus contract of horizons.
//!
//! Everything above the bus (the comment pipeline, jobs, the telescope pipeline) talks to these
//! types and traits only; backends (`horizons-embedded`, `horizons-amqp`, `horizons-kafka`,
//! `horizons-nats`) implement them and prove it by passing [`conformance`].
//!
//! - [`Envelope`]: id (UUIDv7), topic, key, headers (correlation, causation), payload, time,
//!   priority, not-before.
//! - [`Publisher`], [`Subscriber`], [`Admin`], [`DeadLetters`], [`Replay`], joined in
//!   [`Backend`]; their docs state the delivery semantics.
//! - [`Delivery`]: ends in exactly one of ack / retry-after / dead-letter.
//! - [`Topology`]: topics and groups as data, declared idempotently.
//! - [`RetryPolicy`] and [`HandlerError`]: retry semantics in types.
//! - [`Router`]: handlers with middleware (retry decision, timeout, dedupe, metrics, tracing).

pub mod backend;
pub mod delivery;
pub mod envelope;
pub mod error;
pub mod inbox;
pub mod retry;
pub mod router;
pub mod topology;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use backend::{
    Admin, Backend, Capabilities, DeadLetters, GroupInfo, Publisher, Replay, ReplayFrom, SubscribeOptions, Subscriber,
    Subscription, TopicInfo,
};
pub use delivery::{dlq_headers, Acker, DeadLetter, Delivery, FailureRecord, Position, TokenAcker};
pub use envelope::{now_millis, Envelope, MessageId, Millis, Priority, Topic};
pub use error::{error_chain, BusError};
pub use inbox::{Inbox, MemoryInbox};
pub use retry::{HandlerError, RetryPolicy, Settlement};
pub use router::{handler_fn, json_handler, Context, Handler, Layer, Router};
pub use topology::{GroupSpec, OrderingMode, TopicSpec, Topology};
