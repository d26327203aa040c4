//! The audit log's pure logic: what a record is, how it is sealed, chained, verified and
//! trimmed. Storage (SQLite/PostgreSQL) and the `horizons audit` CLI live elsewhere and call in.
//!
//! * [`keys`]: the [`KeyRing`] of AES-256 keys from configuration (`"<key-id>:<base64>"`), one
//!   current for new records, older ones kept so old records stay readable (rotation).
//! * [`seal`](mod@seal): AES-256-GCM sealing of sensitive fields ([`Sealed`]), bound to their record by
//!   associated data.
//! * [`record`]: [`Draft`] → [`Record`] via [`chain`]: sequence numbers, the previous record's
//!   hash, and the canonical encoding the record hash covers (documented there, versioned).
//! * [`verify`](mod@verify): streaming verification of a stored chain ([`verify()`], [`Verifier`]) that names
//!   the first broken record and why.
//! * [`retention`]: [`Retention`] and [`plan_retention`], which says which head records may be
//!   deleted and which [`Anchor`] to store so that the rest of the chain stays verifiable.
//!
//! # What the chain does and does not protect against
//!
//! The record hash is a plain (unkeyed) SHA-256 over a canonical encoding. That makes any
//! *local* edit, deletion, duplication or reordering of stored records detectable by
//! [`verify()`]: the edited record's hash no longer matches, or the next record's `prev_hash`
//! no longer links. It does **not** stop someone who can write the whole store from rewriting
//! every record after the point they changed and recomputing all hashes, nor from deleting the
//! newest records (the tail), nor — if they can rewrite the retention anchor too — from cutting
//! records off the head. Detecting those needs a copy of a recent head (`seq`, `hash`) kept
//! outside the database (published, mailed, written to another system); [`Verifier`] lets the
//! caller compare any record against such a checkpoint while streaming.
//!
//! Sealed fields are encrypted with AES-256-GCM whose associated data binds them to their
//! record's identity, so a ciphertext copied into another record fails to open even if the
//! copier also recomputes hashes; without the key, nobody can produce a ciphertext that opens.

pub mod error;
pub mod keys;
pub mod record;
pub mod retention;
pub mod seal;
pub mod verify;

mod encoding;

pub use error::AuditError;
pub use keys::KeyRing;
pub use record::{canonical_json, chain, chain_after_anchor, Anchor, Draft, Record, GENESIS_HASH};
pub use retention::{plan_retention, Retention};
pub use seal::{open, seal, Sealed};
pub use verify::{verify, verify_with_keys, Broken, BrokenKind, Position, Verified, Verifier};
