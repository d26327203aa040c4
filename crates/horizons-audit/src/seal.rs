//! Sealing sensitive fields (emails, IP addresses, free text marked sensitive) with AES-256-GCM.
//!
//! The plaintext is the field's canonical JSON ([`crate::canonical_json`]). Each seal draws a
//! fresh random 96-bit nonce from the OS; with random nonces a single key should seal fewer than
//! 2^32 messages (NIST SP 800-38D), which is far beyond an audit log's volume, and rotation
//! resets the count anyway.
//!
//! The associated data given to AES-GCM is the length-prefixed encoding of
//! `("horizons-audit/sealed/v1", kid, aad)`: the caller's `aad` (for records, the record's
//! identity, see [`crate::Record::aad`]) plus the key id, so a ciphertext only opens in the
//! record it was made for and under the id it claims.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::encoding::Enc;
use crate::record::canonical_json;
use crate::{AuditError, KeyRing};

/// Length of an AES-GCM nonce in bytes.
pub const NONCE_LEN: usize = 12;

/// A sealed value as stored: key id, nonce and ciphertext (with the 16-byte tag), both base64.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// Id of the key it was sealed under.
    pub kid: String,
    /// Base64 (standard, padded) of the 12-byte nonce.
    pub nonce: String,
    /// Base64 (standard, padded) of ciphertext followed by the GCM tag.
    pub ct: String,
}

/// Seals `plaintext` under the ring's current key, bound to `aad`.
pub fn seal(keys: &KeyRing, plaintext: &serde_json::Value, aad: &[u8]) -> Result<Sealed, AuditError> {
    let (kid, key) = keys.current_key();
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let msg = Zeroizing::new(canonical_json(plaintext).into_bytes());
    let gcm_aad = gcm_aad(kid, aad);
    let ct = cipher(key)
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: &msg, aad: &gcm_aad })
        .map_err(|_| AuditError::SealFailed { kid: kid.to_owned() })?;
    Ok(Sealed { kid: kid.to_owned(), nonce: STANDARD.encode(nonce), ct: STANDARD.encode(ct) })
}

/// Opens `sealed` with the ring's key of the same id, checking it was sealed with this `aad`.
pub fn open(keys: &KeyRing, sealed: &Sealed, aad: &[u8]) -> Result<serde_json::Value, AuditError> {
    let kid = sealed.kid.as_str();
    let key = keys.key(kid)?;
    let malformed = |what| AuditError::MalformedSealed { kid: kid.to_owned(), what };
    let nonce = STANDARD.decode(&sealed.nonce).map_err(|_| malformed("nonce is not base64"))?;
    if nonce.len() != NONCE_LEN {
        return Err(malformed("nonce is not 12 bytes"));
    }
    let ct = STANDARD.decode(&sealed.ct).map_err(|_| malformed("ciphertext is not base64"))?;
    let gcm_aad = gcm_aad(kid, aad);
    let msg = Zeroizing::new(
        cipher(key)
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ct, aad: &gcm_aad })
            .map_err(|_| AuditError::OpenFailed { kid: kid.to_owned() })?,
    );
    serde_json::from_slice(&msg).map_err(|_| AuditError::SealedNotJson { kid: kid.to_owned() })
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
}

fn gcm_aad(kid: &str, aad: &[u8]) -> Vec<u8> {
    let mut e = Enc::new();
    e.str("horizons-audit/sealed/v1").str(kid).bytes(aad);
    e.finish()
}
