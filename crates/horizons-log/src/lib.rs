//! The embedded durable log engine behind horizons' default backend.
//!
//! - Append-only segment files of checksummed records ([`segment`], [`record`]).
//! - Group commit: one writer thread, one fsync per batch of concurrent publishes; a publish
//!   returns only after the fsync that covers it ([`writer`]).
//! - Recovery truncates a torn tail of the last segment and refuses to serve corrupt records.
//! - Time and size retention (default 30 days), consumer-group positions, work-queue delivery
//!   with acks, leases, retries, delays, priorities, per-key blocking and dead letters
//!   ([`group`]), replay by offset or time ([`Engine::replay`]).
//!
//! *Architecture invariant:* the engine is single-process. A data directory is locked by the
//! process that opened it; a second opener gets [`LogError::Locked`].

pub mod engine;
pub mod error;
pub mod group;
pub mod log;
mod ready;
pub mod record;
pub mod segment;
pub mod state;
mod writer;

pub use engine::{Engine, EngineConfig};
pub use error::LogError;
pub use group::GroupChannel;
