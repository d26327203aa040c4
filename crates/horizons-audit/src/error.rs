//! The crate's one error type. Messages name key ids, record numbers and what is wrong, and
//! never contain key material or decrypted plaintext: they end up in logs.

use crate::verify::Broken;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A key entry without the `<key-id>:<base64 key>` shape. The entry itself is not shown:
    /// it may be nothing but key material.
    #[error("audit key entry #{index} is not `<key-id>:<base64 key>` (entry not shown: it may contain key material)")]
    MalformedKeyEntry {
        /// Position of the entry in the configured list, from 0.
        index: usize,
    },
    /// A key id that is empty, too long or has characters outside `[A-Za-z0-9._-]`. Not shown,
    /// because a swapped entry (`<key>:<id>`) would otherwise print the key.
    #[error("audit key entry #{index}: invalid key id ({why}; id not shown)")]
    InvalidKeyId {
        /// Position of the entry in the configured list, from 0.
        index: usize,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The key part is not standard (padded) base64.
    #[error("audit key {kid:?}: key is not valid base64 (standard alphabet, padded)")]
    KeyNotBase64 {
        /// The key id.
        kid: String,
    },
    /// The key does not decode to 32 bytes.
    #[error("audit key {kid:?}: key is {len} bytes, AES-256 needs 32")]
    KeyWrongLength {
        /// The key id.
        kid: String,
        /// How many bytes it decoded to.
        len: usize,
    },
    /// Two entries with the same id.
    #[error("audit key {kid:?} is configured twice")]
    DuplicateKeyId {
        /// The key id.
        kid: String,
    },
    /// The id named as current is not among the configured keys.
    #[error("current audit key {kid:?} is not among the configured keys")]
    CurrentKeyMissing {
        /// The key id named as current.
        kid: String,
    },
    /// A sealed field names a key the ring does not hold (removed too early, or wrong config).
    #[error("sealed field uses audit key {kid:?}, which is not in the key ring")]
    UnknownKeyId {
        /// The key id on the sealed field.
        kid: String,
    },
    /// A sealed field whose nonce or ciphertext is not decodable.
    #[error("sealed field (key {kid:?}): {what}")]
    MalformedSealed {
        /// The key id on the sealed field.
        kid: String,
        /// What is malformed.
        what: &'static str,
    },
    /// AES-GCM authentication failed: wrong key behind this id, tampered nonce or ciphertext,
    /// or a ciphertext that belongs to another record (associated data differs).
    #[error(
        "sealed field (key {kid:?}) does not open: wrong key, tampered ciphertext, or ciphertext from another record"
    )]
    OpenFailed {
        /// The key id on the sealed field.
        kid: String,
    },
    /// The field opened but is not JSON (it was not written by this crate).
    #[error("sealed field (key {kid:?}) opened but is not JSON")]
    SealedNotJson {
        /// The key id on the sealed field.
        kid: String,
    },
    /// AES-GCM refused to encrypt (only for absurdly large plaintexts).
    #[error("sealing with audit key {kid:?} failed")]
    SealFailed {
        /// The key id used.
        kid: String,
    },
    /// A retention shorter than the minimum of one day.
    #[error("audit retention of {ms} ms is shorter than the minimum of 1 day (86400000 ms)")]
    RetentionTooShort {
        /// The retention asked for, in milliseconds.
        ms: i128,
    },
    /// The previous record's sequence number is `i64::MAX` (or negative), so no next one exists.
    #[error("cannot append after record {seq}: sequence number out of range")]
    SeqOutOfRange {
        /// The previous record's (or anchor's) sequence number.
        seq: i64,
    },
    /// Verification found a broken chain.
    #[error(transparent)]
    Broken(#[from] Broken),
}
