//! The key ring: AES-256 keys by id, from configuration strings `"<key-id>:<base64 of 32 bytes>"`.
//!
//! Rotation: configure the new key, make it current, keep the old ones. New records are sealed
//! under the current key; every sealed field records the id of its key ([`crate::Sealed::kid`]),
//! so records sealed earlier keep opening as long as their key stays in the ring. Removing a
//! key makes the fields sealed under it unreadable (which is also how to crypto-shred them).
//!
//! Key material never leaves this module in readable form: `Debug` prints ids only, errors name
//! ids and never the key, and keys are zeroed when the ring is dropped.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore as _;
use zeroize::Zeroizing;

use crate::AuditError;

/// Length of an AES-256 key in bytes.
pub const KEY_LEN: usize = 32;

/// Longest key id accepted. Kept below the 43-44 characters of a base64 32-byte key, so a key
/// pasted where the id belongs is rejected rather than accepted (and later printed) as an id.
pub const MAX_KEY_ID_LEN: usize = 32;

/// AES-256 keys by id, one of them current (used for new seals).
pub struct KeyRing {
    current: String,
    keys: BTreeMap<String, Zeroizing<[u8; KEY_LEN]>>,
}

impl KeyRing {
    /// Parses `entries` (each `"<key-id>:<base64 key>"`; surrounding whitespace ignored) and
    /// makes `current` the key for new seals.
    ///
    /// Errors name the entry's position or key id and what is wrong: malformed entry, invalid
    /// id, bad base64, not 32 bytes, duplicate id, `current` not among the entries.
    pub fn new<S: AsRef<str>>(current: &str, entries: &[S]) -> Result<Self, AuditError> {
        let mut ring = Self::empty(current);
        for (index, entry) in entries.iter().enumerate() {
            let entry = entry.as_ref().trim();
            let (kid, b64) = entry.split_once(':').ok_or(AuditError::MalformedKeyEntry { index })?;
            ring.insert(index, kid, b64)?;
        }
        ring.check_current()
    }

    /// Like [`KeyRing::new`] for configuration that already separates ids from keys (a map
    /// `id = "base64"`).
    pub fn from_pairs<I, K, V>(current: &str, pairs: I) -> Result<Self, AuditError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut ring = Self::empty(current);
        for (index, (kid, b64)) in pairs.into_iter().enumerate() {
            ring.insert(index, kid.as_ref(), b64.as_ref())?;
        }
        ring.check_current()
    }

    /// A fresh random key as a configuration entry `"<id>:<base64>"`, for `horizons` to print.
    /// The returned string is zeroed when dropped.
    pub fn generate_entry(id: &str) -> Result<Zeroizing<String>, AuditError> {
        check_id(0, id)?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(&mut key[..]);
        let mut entry = Zeroizing::new(String::with_capacity(id.len() + 1 + 44));
        entry.push_str(id);
        entry.push(':');
        STANDARD.encode_string(&key[..], &mut entry);
        Ok(entry)
    }

    /// The id of the key used for new seals.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// All key ids, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Whether the ring holds a key with this id.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The current key (id and bytes), for sealing.
    pub(crate) fn current_key(&self) -> (&str, &[u8; KEY_LEN]) {
        // `check_current` guaranteed presence at construction; the ring is immutable after.
        let key = self.keys.get(&self.current).expect("current key checked at construction");
        (&self.current, key)
    }

    /// The key with this id, for opening.
    pub(crate) fn key(&self, kid: &str) -> Result<&[u8; KEY_LEN], AuditError> {
        self.keys.get(kid).map(|k| &**k).ok_or_else(|| AuditError::UnknownKeyId { kid: kid.to_owned() })
    }

    fn empty(current: &str) -> Self {
        Self { current: current.to_owned(), keys: BTreeMap::new() }
    }

    fn insert(&mut self, index: usize, kid: &str, b64: &str) -> Result<(), AuditError> {
        let kid = kid.trim();
        check_id(index, kid)?;
        let bytes = Zeroizing::new(STANDARD.decode(b64.trim()).map_err(|_| {
            // The decode error would quote the offending byte: keep even that out.
            AuditError::KeyNotBase64 { kid: kid.to_owned() }
        })?);
        let key: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| AuditError::KeyWrongLength { kid: kid.to_owned(), len: bytes.len() })?;
        let key = Zeroizing::new(key);
        if self.keys.contains_key(kid) {
            return Err(AuditError::DuplicateKeyId { kid: kid.to_owned() });
        }
        self.keys.insert(kid.to_owned(), key);
        Ok(())
    }

    fn check_current(self) -> Result<Self, AuditError> {
        if self.keys.contains_key(&self.current) {
            Ok(self)
        } else {
            Err(AuditError::CurrentKeyMissing { kid: self.current.clone() })
        }
    }
}

/// Ids are short and plain so they can be printed in errors and stored in every sealed field.
fn check_id(index: usize, kid: &str) -> Result<(), AuditError> {
    let why = if kid.is_empty() {
        "empty"
    } else if kid.len() > MAX_KEY_ID_LEN {
        "longer than 32 characters"
    } else if !kid.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        "only A-Z a-z 0-9 . _ - are allowed"
    } else {
        return Ok(());
    };
    Err(AuditError::InvalidKeyId { index, why })
}

impl fmt::Debug for KeyRing {
    // Ids only: a ring ends up in `{:?}` of configuration structs and must not leak keys there.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl fmt::Display for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "audit key ring (current {:?}; ids:", self.current)?;
        for kid in self.keys.keys() {
            write!(f, " {kid}")?;
        }
        write!(f, ")")
    }
}
