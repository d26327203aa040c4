//! The on-disk record: a checksummed, length-prefixed encoding of one envelope.
//!
//! ```text
//! u32 body_len | u32 crc32c(body) | body
//! body = u64 offset | i64 append_ms | [16] id | i64 timestamp | u8 priority | u8 flags
//!        | [i64 not_before]            (flags & 1)
//!        | [u32 key_len, key]          (flags & 2)
//!        | u16 n_headers, n × (u16 len, name, u32 len, value)
//!        | u32 payload_len, payload
//! ```
//! Little-endian throughout. A record is served only if its length fits, its checksum matches
//! and its body decodes completely.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes};
use horizons_bus::{Envelope, MessageId, Millis, Priority, Topic};
use uuid::Uuid;

/// Bytes before the body.
pub const RECORD_HEADER: usize = 8;
/// Largest body the reader will believe; anything larger is corruption.
pub const MAX_BODY: usize = 64 << 20;

/// A decoded record.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Position in the topic.
    pub offset: u64,
    /// When the engine stored it.
    pub append_ms: Millis,
    /// The message.
    pub envelope: Envelope,
}

/// Appends the encoding of `env` at `offset` to `out`.
pub fn encode(out: &mut Vec<u8>, offset: u64, append_ms: Millis, env: &Envelope) {
    let start = out.len();
    out.put_u32_le(0);
    out.put_u32_le(0);
    out.put_u64_le(offset);
    out.put_i64_le(append_ms);
    out.put_slice(env.id.0.as_bytes());
    out.put_i64_le(env.timestamp);
    out.put_u8(env.priority.get());
    let flags = u8::from(env.not_before.is_some()) | (u8::from(env.key.is_some()) << 1);
    out.put_u8(flags);
    if let Some(nb) = env.not_before {
        out.put_i64_le(nb);
    }
    if let Some(k) = &env.key {
        out.put_u32_le(k.len() as u32);
        out.put_slice(k.as_bytes());
    }
    out.put_u16_le(env.headers.len() as u16);
    for (k, v) in &env.headers {
        out.put_u16_le(k.len() as u16);
        out.put_slice(k.as_bytes());
        out.put_u32_le(v.len() as u32);
        out.put_slice(v.as_bytes());
    }
    out.put_u32_le(env.payload.len() as u32);
    out.put_slice(&env.payload);
    let body_len = out.len() - start - RECORD_HEADER;
    let crc = crc32c::crc32c(&out[start + RECORD_HEADER..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What the reader found at a position.
#[derive(Debug)]
pub enum Decoded {
    /// A valid record and its total encoded length.
    Record(Record, usize),
    /// Not enough bytes for a whole record (a torn tail, or a read that stopped short).
    Incomplete,
    /// The bytes are not a valid record.
    Corrupt(String),
}

/// Decodes the record at the start of `buf`. `buf` is a cheap slice of a read buffer; the
/// payload shares it.
pub fn decode(buf: &Bytes, topic: &Topic) -> Decoded {
    if buf.len() < RECORD_HEADER {
        return Decoded::Incomplete;
    }
    let body_len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if body_len > MAX_BODY {
        return Decoded::Corrupt(format!("record length {body_len} exceeds {MAX_BODY}"));
    }
    if buf.len() < RECORD_HEADER + body_len {
        return Decoded::Incomplete;
    }
    let body = buf.slice(RECORD_HEADER..RECORD_HEADER + body_len);
    let actual = crc32c::crc32c(&body);
    if actual != crc {
        return Decoded::Corrupt(format!("checksum mismatch (stored {crc:08x}, computed {actual:08x})"));
    }
    match decode_body(body, topic) {
        Ok(r) => Decoded::Record(r, RECORD_HEADER + body_len),
        Err(why) => Decoded::Corrupt(why),
    }
}

fn decode_body(mut b: Bytes, topic: &Topic) -> Result<Record, String> {
    fn need(b: &Bytes, n: usize, what: &str) -> Result<(), String> {
        if b.remaining() < n {
            Err(format!("body ends inside {what}"))
        } else {
            Ok(())
        }
    }
    fn string(b: &mut Bytes, n: usize, what: &str) -> Result<String, String> {
        need(b, n, what)?;
        let s = b.split_to(n);
        String::from_utf8(s.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }
    need(&b, 8 + 8 + 16 + 8 + 1 + 1, "fixed fields")?;
    let offset = b.get_u64_le();
    let append_ms = b.get_i64_le();
    let mut id = [0u8; 16];
    b.copy_to_slice(&mut id);
    let timestamp = b.get_i64_le();
    let priority = Priority::new(b.get_u8()).map_err(|e| e.to_string())?;
    let flags = b.get_u8();
    if flags & !3 != 0 {
        return Err(format!("unknown flags {flags:#x}"));
    }
    let not_before = if flags & 1 != 0 {
        need(&b, 8, "not_before")?;
        Some(b.get_i64_le())
    } else {
        None
    };
    let key = if flags & 2 != 0 {
        need(&b, 4, "key length")?;
        let n = b.get_u32_le() as usize;
        Some(string(&mut b, n, "key")?)
    } else {
        None
    };
    need(&b, 2, "header count")?;
    let n_headers = b.get_u16_le();
    let mut headers = BTreeMap::new();
    for _ in 0..n_headers {
        need(&b, 2, "header name length")?;
        let kn = b.get_u16_le() as usize;
        let k = string(&mut b, kn, "header name")?;
        need(&b, 4, "header value length")?;
        let vn = b.get_u32_le() as usize;
        let v = string(&mut b, vn, "header value")?;
        // The encoder writes names in ascending order from a map; anything else was not
        // written by us, and would not survive a re-encode.
        if headers.last_key_value().is_some_and(|(last, _): (&String, _)| *last >= k) {
            return Err(format!("header {k:?} out of order or repeated"));
        }
        headers.insert(k, v);
    }
    need(&b, 4, "payload length")?;
    let pn = b.get_u32_le() as usize;
    need(&b, pn, "payload")?;
    let payload = b.split_to(pn);
    if b.has_remaining() {
        return Err(format!("{} trailing bytes after payload", b.remaining()));
    }
    Ok(Record {
        offset,
        append_ms,
        envelope: Envelope {
            id: MessageId(Uuid::from_bytes(id)),
            topic: topic.clone(),
            key,
            headers,
            payload,
            timestamp,
            priority,
            not_before,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope::new(Topic::new("t").unwrap(), Bytes::from_static(b"hello"))
            .with_key("k1")
            .with_header("correlation-id", "c")
            .with_priority(Priority::new(7).unwrap())
            .with_delay(std::time::Duration::from_secs(1))
    }

    #[test]
    fn round_trip() {
        let env = sample();
        let mut buf = Vec::new();
        encode(&mut buf, 42, 1000, &env);
        let b = Bytes::from(buf);
        match decode(&b, &env.topic) {
            Decoded::Record(r, n) => {
                assert_eq!(n, b.len());
                assert_eq!(r.offset, 42);
                assert_eq!(r.append_ms, 1000);
                assert_eq!(r.envelope, env);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_bit_flip_is_caught() {
        let env = sample();
        let mut buf = Vec::new();
        encode(&mut buf, 1, 2, &env);
        for cut in 0..buf.len() {
            let b = Bytes::copy_from_slice(&buf[..cut]);
            assert!(matches!(decode(&b, &env.topic), Decoded::Incomplete | Decoded::Corrupt(_)), "cut {cut}");
        }
        for i in RECORD_HEADER..buf.len() {
            for bit in 0..8 {
                let mut c = buf.clone();
                c[i] ^= 1 << bit;
                assert!(matches!(decode(&Bytes::from(c), &env.topic), Decoded::Corrupt(_)), "byte {i} bit {bit}");
            }
        }
    }
}
