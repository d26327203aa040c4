//! How an [`Envelope`] sits in a Kafka record, byte for byte.
//!
//! - record key = the bus key (absent stays absent), so the default partitioner keeps a key
//!   on one partition and per-key order holds per partition;
//! - record value = the payload, untouched;
//! - header `hz` = the envelope's own fields in 34–42 bytes: version 1, the 16-byte id, the
//!   producer timestamp (i64 BE), the priority, a flag byte and, if flagged, `not_before`;
//! - every user header as a Kafka header of the same name;
//! - on copies the adapter makes (retry topics, redrives), `hz.a` (attempt), `hz.due` (ms),
//!   `hz.e1` / `hz.e2` (first / last handler error) and `hz.src` (where the original sat).
//!
//! The record timestamp is the broker's append time (topics use `LogAppendTime`), which is what
//! replay by time searches; the producer's own timestamp travels in `hz`.

use std::collections::BTreeMap;

use bytes::Bytes;
use horizons_bus::{Envelope, MessageId, Millis, Priority, Topic};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use uuid::Uuid;

/// The envelope header.
pub const H_ENVELOPE: &str = "hz";
/// Delivery attempt of the next delivery of a copy (1-based).
pub const H_ATTEMPT: &str = "hz.a";
/// Not to be delivered before this time (ms since the epoch).
pub const H_DUE: &str = "hz.due";
/// First handler error.
pub const H_FIRST_ERROR: &str = "hz.e1";
/// Last handler error.
pub const H_LAST_ERROR: &str = "hz.e2";
/// Where the original sat: `topic/partition/offset`.
pub const H_SOURCE: &str = "hz.src";

const VERSION: u8 = 1;
/// Length of the `hz` header without `not_before` (with it: 8 bytes more).
pub const HZ_LEN: usize = 27;
const FLAG_NOT_BEFORE: u8 = 1;

/// What the adapter adds to copies of a message it moves between its topics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyMeta {
    /// Attempt number of the copy's next delivery.
    pub attempt: u32,
    /// When it may be delivered.
    pub due: Option<Millis>,
    /// First handler error so far.
    pub first_error: Option<String>,
    /// Last handler error so far.
    pub last_error: Option<String>,
    /// Where the original sat.
    pub source: Option<String>,
}

/// The Kafka headers of `env` (and of `meta`, for copies).
pub fn encode_headers(env: &Envelope, meta: Option<&CopyMeta>) -> OwnedHeaders {
    let mut hz = [0u8; 42];
    hz[0] = VERSION;
    hz[1..17].copy_from_slice(env.id.0.as_bytes());
    hz[17..25].copy_from_slice(&env.timestamp.to_be_bytes());
    hz[25] = env.priority.get();
    let len = match env.not_before {
        Some(nb) => {
            hz[26] = FLAG_NOT_BEFORE;
            hz[HZ_LEN..HZ_LEN + 8].copy_from_slice(&nb.to_be_bytes());
            HZ_LEN + 8
        }
        None => HZ_LEN,
    };
    let extra = meta.map_or(0, |_| 5);
    let mut h = OwnedHeaders::new_with_capacity(1 + env.headers.len() + extra);
    h = h.insert(Header { key: H_ENVELOPE, value: Some(&hz[..len]) });
    for (k, v) in &env.headers {
        h = h.insert(Header { key: k, value: Some(v.as_bytes()) });
    }
    if let Some(m) = meta {
        h = h.insert(Header { key: H_ATTEMPT, value: Some(m.attempt.to_string().as_bytes()) });
        if let Some(due) = m.due {
            h = h.insert(Header { key: H_DUE, value: Some(due.to_string().as_bytes()) });
        }
        for (k, v) in [(H_FIRST_ERROR, &m.first_error), (H_LAST_ERROR, &m.last_error), (H_SOURCE, &m.source)] {
            if let Some(v) = v {
                h = h.insert(Header { key: k, value: Some(v.as_bytes()) });
            }
        }
    }
    h
}

/// A payload copied out of a record. Small ones share one allocation with their reference
/// count, so the clone a member keeps for redelivery costs no second allocation (a
/// `Bytes::copy_from_slice` allocates again on its first clone).
pub fn payload_bytes(p: &[u8]) -> Bytes {
    match p.len() {
        0 => Bytes::new(),
        1..=64 => Bytes::from_owner(Inline::<64>::new(p)),
        65..=128 => Bytes::from_owner(Inline::<128>::new(p)),
        129..=256 => Bytes::from_owner(Inline::<256>::new(p)),
        257..=512 => Bytes::from_owner(Inline::<512>::new(p)),
        _ => Bytes::copy_from_slice(p),
    }
}

/// Up to `N` bytes stored inline.
struct Inline<const N: usize> {
    len: usize,
    buf: [u8; N],
}

impl<const N: usize> Inline<N> {
    fn new(p: &[u8]) -> Self {
        let mut buf = [0u8; N];
        buf[..p.len()].copy_from_slice(p);
        Inline { len: p.len(), buf }
    }
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Why a record could not be read as an envelope.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The `hz` header is there but not the length its version needs.
    #[error("malformed envelope header: {0} bytes")]
    Malformed(usize),
    /// The `hz` header has a version this build does not know.
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    /// A header value is not UTF-8.
    #[error("header {0:?} is not UTF-8")]
    NotUtf8(String),
}

/// An envelope read back, with the copy metadata if it was a copy.
#[derive(Debug)]
pub struct Decoded {
    /// The message.
    pub envelope: Envelope,
    /// Attempt/due/errors of a copy; default for originals.
    pub meta: CopyMeta,
}

/// Reads a record back as the envelope of `topic`. A record without `hz` (from a foreign
/// producer) gets an id derived from its position, so redeliveries of it dedupe.
pub fn decode(
    topic: &Topic,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    headers: Option<&impl Headers>,
    position: (&str, i32, i64),
    stored_at: Option<Millis>,
) -> Result<Decoded, DecodeError> {
    let mut env = Envelope {
        id: MessageId(Uuid::nil()),
        topic: topic.clone(),
        key: match key {
            Some(k) => Some(String::from_utf8(k.to_vec()).map_err(|_| DecodeError::NotUtf8("<record key>".into()))?),
            None => None,
        },
        headers: BTreeMap::new(),
        payload: payload.map(payload_bytes).unwrap_or_default(),
        timestamp: stored_at.unwrap_or_default(),
        priority: Priority::DEFAULT,
        not_before: None,
    };
    let mut meta = CopyMeta::default();
    let mut seen_hz = false;
    for h in headers.into_iter().flat_map(|h| h.iter()) {
        let v = h.value.unwrap_or_default();
        if h.key == H_ENVELOPE {
            read_hz(v, &mut env)?;
            seen_hz = true;
            continue;
        }
        let s = std::str::from_utf8(v).map_err(|_| DecodeError::NotUtf8(h.key.to_string()))?;
        match h.key {
            H_ATTEMPT => meta.attempt = s.parse().unwrap_or(0),
            H_DUE => meta.due = s.parse().ok(),
            H_FIRST_ERROR => meta.first_error = Some(s.to_string()),
            H_LAST_ERROR => meta.last_error = Some(s.to_string()),
            H_SOURCE => meta.source = Some(s.to_string()),
            k => {
                env.headers.insert(k.to_string(), s.to_string());
            }
        }
    }
    if !seen_hz {
        env.id = MessageId(foreign_id(position));
    }
    Ok(Decoded { envelope: env, meta })
}

fn read_hz(v: &[u8], env: &mut Envelope) -> Result<(), DecodeError> {
    match v.first() {
        Some(&VERSION) => {}
        Some(&other) => return Err(DecodeError::UnknownVersion(other)),
        None => return Err(DecodeError::Malformed(0)),
    }
    if v.len() < HZ_LEN {
        return Err(DecodeError::Malformed(v.len()));
    }
    let id: [u8; 16] = v[1..17].try_into().expect("16 bytes");
    env.id = MessageId(Uuid::from_bytes(id));
    env.timestamp = i64::from_be_bytes(v[17..25].try_into().expect("8 bytes"));
    env.priority = Priority::new(v[25]).map_err(|_| DecodeError::Malformed(v.len()))?;
    if v[26] & FLAG_NOT_BEFORE != 0 {
        let nb = v.get(HZ_LEN..HZ_LEN + 8).ok_or(DecodeError::Malformed(v.len()))?;
        env.not_before = Some(i64::from_be_bytes(nb.try_into().expect("8 bytes")));
    }
    Ok(())
}

/// An envelope for a record that cannot be decoded, to dead-letter it as it came: the payload
/// and the key (lossily) kept, an id derived from its position.
pub fn raw_envelope(topic: &Topic, key: Option<&[u8]>, payload: Option<&[u8]>, position: (&str, i32, i64)) -> Envelope {
    let mut env = Envelope::new(topic.clone(), payload.map(Bytes::copy_from_slice).unwrap_or_default());
    env.id = MessageId(foreign_id(position));
    env.key = key.map(|k| String::from_utf8_lossy(k).into_owned());
    env
}

/// A stable id for a record that carries none: version-8 UUID from its position.
fn foreign_id((topic, partition, offset): (&str, i32, i64)) -> Uuid {
    let mut b = [0u8; 16];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in topic.bytes() {
        h = (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
    }
    b[..8].copy_from_slice(&h.to_be_bytes());
    b[8..12].copy_from_slice(&partition.to_be_bytes());
    b[12..].copy_from_slice(&(offset as u32).to_be_bytes());
    uuid::Builder::from_custom_bytes(b).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> Topic {
        Topic::new("t").unwrap()
    }

    fn round_trip(env: &Envelope, meta: Option<&CopyMeta>) -> Decoded {
        let h = encode_headers(env, meta);
        let key = env.key.as_deref().map(str::as_bytes);
        decode(&topic(), key, Some(&env.payload), Some(&h), ("t", 0, 5), Some(1)).unwrap()
    }

    #[test]
    fn envelope_fields_survive() {
        let mut env = Envelope::new(topic(), &b"\x00\xffpayload"[..])
            .with_key("k")
            .with_header("x", "y")
            .with_priority(Priority::new(9).unwrap());
        env.not_before = Some(123);
        let d = round_trip(&env, None);
        assert_eq!(d.envelope, env);
        assert_eq!(d.meta, CopyMeta::default());
        let bare = Envelope::new(topic(), Bytes::new());
        assert_eq!(round_trip(&bare, None).envelope, bare);
    }

    #[test]
    fn payloads_of_every_size_class_are_copied_whole() {
        let data: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 63, 64, 65, 128, 129, 256, 257, 511, 512, 513, 700] {
            let b = payload_bytes(&data[..len]);
            let kept = b.clone();
            drop(b);
            assert_eq!(&kept[..], &data[..len], "length {len}");
        }
    }

    #[test]
    fn copy_meta_survives() {
        let env = Envelope::new(topic(), "p");
        let meta = CopyMeta {
            attempt: 3,
            due: Some(99),
            first_error: Some("a".into()),
            last_error: Some("b".into()),
            source: Some("t/0/7".into()),
        };
        let d = round_trip(&env, Some(&meta));
        assert_eq!(d.meta, meta);
        assert_eq!(d.envelope, env, "copy metadata must not leak into user headers");
    }

    fn check_bad(hz: &[u8], expected: DecodeError) {
        let h = OwnedHeaders::new().insert(Header { key: H_ENVELOPE, value: Some(hz) });
        let err = decode(&topic(), None, None, Some(&h), ("t", 0, 0), None).unwrap_err();
        assert_eq!(err, expected);
    }

    #[test]
    fn bad_headers_are_named() {
        check_bad(&[], DecodeError::Malformed(0));
        check_bad(&[1, 2, 3], DecodeError::Malformed(3));
        check_bad(&[7; 40], DecodeError::UnknownVersion(7));
    }

    #[test]
    fn foreign_records_get_stable_ids() {
        let none: Option<&OwnedHeaders> = None;
        let a = decode(&topic(), None, Some(b"x"), none, ("t", 1, 2), Some(5)).unwrap();
        let b = decode(&topic(), None, Some(b"x"), none, ("t", 1, 2), Some(5)).unwrap();
        let c = decode(&topic(), None, Some(b"x"), none, ("t", 1, 3), Some(5)).unwrap();
        assert_eq!(a.envelope.id, b.envelope.id);
        assert_ne!(a.envelope.id, c.envelope.id);
        assert_eq!(a.envelope.timestamp, 5);
    }
}
