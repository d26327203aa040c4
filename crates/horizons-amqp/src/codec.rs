//! Envelope ↔ AMQP message: which property or header carries which field.
//!
//! - id → `message_id`; priority → `priority`; persistent (`delivery_mode` 2); the producer's
//!   timestamp in ms → header `hz-ts` (AMQP's `timestamp` property has only seconds, and is set
//!   too for other tools).
//! - key → `hz-k`, not-before → `hz-nb`; the envelope's own headers travel as one nested table
//!   `hz-h`, so whatever the broker adds (`x-death`, `x-delivery-count`, …) never leaks into
//!   them and they come back byte for byte.
//! - Retry bookkeeping: `hz-a` (deliveries made before this copy), `hz-e1` / `hz-e2` (first and
//!   last handler error). A delivery's attempt is `hz-a` + the quorum queue's
//!   `x-delivery-count` (returns of this copy) + 1.
//! - Routing helpers: `hz-dest` (the one queue a delayed retry goes back to) and `hz-fanout`
//!   (the topic a delayed publish is released into), read by the delay exchanges only.
//! - Dead letters additionally carry the `x-dlq-*` headers of [`horizons_bus::dlq_headers`]
//!   at the top level, for operators looking at the queue with other tools.

use std::collections::BTreeMap;

use bytes::Bytes;
use horizons_bus::{dlq_headers, Envelope, MessageId, Millis, Priority, Topic};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

pub(crate) const H_TS: &str = "hz-ts";
pub(crate) const H_KEY: &str = "hz-k";
pub(crate) const H_NOT_BEFORE: &str = "hz-nb";
pub(crate) const H_HEADERS: &str = "hz-h";
pub(crate) const H_ATTEMPTS: &str = "hz-a";
pub(crate) const H_FIRST_ERROR: &str = "hz-e1";
pub(crate) const H_LAST_ERROR: &str = "hz-e2";
pub(crate) const H_DEST: &str = "hz-dest";
pub(crate) const H_FANOUT: &str = "hz-fanout";
const X_DELIVERY_COUNT: &str = "x-delivery-count";

/// Retry bookkeeping carried by a message copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Trail {
    /// Deliveries made before this copy was published.
    pub attempts: u32,
    /// First handler error.
    pub first_error: Option<String>,
    /// Last handler error.
    pub last_error: Option<String>,
}

/// What a delivery says besides the envelope.
#[derive(Clone, Debug, Default)]
pub(crate) struct Meta {
    /// Retry bookkeeping of this copy.
    pub trail: Trail,
    /// Times the queue returned this copy (crash, drop, expired lease).
    pub returns: u32,
    /// Why the broker dead-lettered it, from `x-first-death-reason`, if it did.
    pub death_reason: Option<String>,
    /// Total deaths recorded in `x-death`.
    pub deaths: u32,
}

fn long(s: impl Into<Vec<u8>>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn key(s: &str) -> ShortString {
    ShortString::from(s)
}

/// Properties for `env` with retry bookkeeping `trail`; `extra` adds routing headers.
pub(crate) fn encode(env: &Envelope, trail: &Trail, extra: &[(&str, &str)]) -> BasicProperties {
    let mut h = FieldTable::default();
    h.insert(key(H_TS), AMQPValue::LongLongInt(env.timestamp));
    if let Some(k) = &env.key {
        h.insert(key(H_KEY), long(k.as_bytes()));
    }
    if let Some(nb) = env.not_before {
        h.insert(key(H_NOT_BEFORE), AMQPValue::LongLongInt(nb));
    }
    if !env.headers.is_empty() {
        let mut inner = FieldTable::default();
        for (k, v) in &env.headers {
            // AMQP table keys are short strings; longer header names are cut, not dropped.
            inner.insert(short_key(k), long(v.as_bytes()));
            if k.starts_with("x-dlq-") && dlq_headers::ALL.contains(&k.as_str()) {
                h.insert(short_key(k), long(v.as_bytes()));
            }
        }
        h.insert(key(H_HEADERS), AMQPValue::FieldTable(inner));
    }
    if trail.attempts > 0 {
        h.insert(key(H_ATTEMPTS), AMQPValue::LongLongInt(i64::from(trail.attempts)));
    }
    if let Some(e) = &trail.first_error {
        h.insert(key(H_FIRST_ERROR), long(e.as_bytes()));
    }
    if let Some(e) = &trail.last_error {
        h.insert(key(H_LAST_ERROR), long(e.as_bytes()));
    }
    for (k, v) in extra {
        h.insert(key(k), long(v.as_bytes()));
    }
    BasicProperties::default()
        .with_message_id(ShortString::from(env.id.to_string()))
        .with_delivery_mode(2)
        .with_priority(env.priority.get())
        .with_timestamp((env.timestamp.max(0) / 1000) as u64)
        .with_headers(h)
}

fn short_key(k: &str) -> ShortString {
    let mut end = k.len().min(255);
    while !k.is_char_boundary(end) {
        end -= 1;
    }
    ShortString::from(&k[..end])
}

/// The envelope and bookkeeping of a message received on `topic`.
pub(crate) fn decode(topic: &Topic, props: &BasicProperties, payload: Vec<u8>) -> (Envelope, Meta) {
    let empty = FieldTable::default();
    let h = props.headers().as_ref().unwrap_or(&empty).inner();
    let id = props
        .message_id()
        .as_ref()
        .and_then(|s| s.as_str().parse::<uuid::Uuid>().ok())
        .map(MessageId)
        .unwrap_or_default();
    let timestamp = h
        .get(H_TS)
        .and_then(int)
        .or_else(|| (*props.timestamp()).map(|s| s as Millis * 1000))
        .unwrap_or_else(horizons_bus::now_millis);
    let headers: BTreeMap<String, String> = match h.get(H_HEADERS) {
        Some(AMQPValue::FieldTable(t)) => {
            t.inner().iter().filter_map(|(k, v)| Some((k.to_string(), text(v)?))).collect()
        }
        _ => BTreeMap::new(),
    };
    let env = Envelope {
        id,
        topic: topic.clone(),
        key: h.get(H_KEY).and_then(text),
        headers,
        payload: Bytes::from(payload),
        timestamp,
        priority: (*props.priority()).and_then(|p| Priority::new(p.min(9)).ok()).unwrap_or_default(),
        not_before: h.get(H_NOT_BEFORE).and_then(int),
    };
    let count = |k: &str| h.get(k).and_then(int).map_or(0, |n| n.clamp(0, i64::from(u32::MAX)) as u32);
    let deaths = match h.get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .filter_map(|d| match d {
                AMQPValue::FieldTable(t) => t.inner().get("count").and_then(int),
                _ => None,
            })
            .sum::<i64>() as u32,
        _ => 0,
    };
    let meta = Meta {
        trail: Trail {
            attempts: count(H_ATTEMPTS),
            first_error: h.get(H_FIRST_ERROR).and_then(text),
            last_error: h.get(H_LAST_ERROR).and_then(text),
        },
        returns: count(X_DELIVERY_COUNT),
        death_reason: h.get("x-first-death-reason").and_then(text),
        deaths,
    };
    (env, meta)
}

/// An integer header of any width.
fn int(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

/// A string header of either kind.
fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips() {
        let topic = Topic::new("t.x").unwrap();
        let mut env = Envelope::new(topic.clone(), vec![0u8, 1, 255])
            .with_key("k")
            .with_header("x-conformance", "a=b; c")
            .with_header("correlation-id", "c-1")
            .with_priority(Priority::new(7).unwrap());
        env.timestamp -= 12_345;
        env.not_before = Some(env.timestamp + 5);
        let trail = Trail { attempts: 2, first_error: Some("one".into()), last_error: Some("two".into()) };
        let props = encode(&env, &trail, &[(H_DEST, "q")]);
        let (back, meta) = decode(&topic, &props, env.payload.to_vec());
        assert_eq!(back, env);
        assert_eq!(meta.trail, trail);
        assert_eq!(meta.returns, 0);
    }

    #[test]
    fn bare_messages_decode() {
        let topic = Topic::new("t").unwrap();
        let (env, meta) = decode(&topic, &BasicProperties::default(), b"x".to_vec());
        assert_eq!(env.key, None);
        assert!(env.headers.is_empty());
        assert_eq!(env.priority, Priority::DEFAULT);
        assert_eq!(meta.trail, Trail::default());
    }
}
