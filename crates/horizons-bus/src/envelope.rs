//! The message envelope: what every backend carries, byte for byte.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::BusError;

/// Header that carries the id of the request or flow a message belongs to.
pub const HEADER_CORRELATION_ID: &str = "correlation-id";
/// Header that carries the id of the message that caused this one.
pub const HEADER_CAUSATION_ID: &str = "causation-id";

/// Longest topic or group name accepted by every backend (RabbitMQ caps names at 255 bytes and
/// the adapters add suffixes).
pub const MAX_NAME_LEN: usize = 200;

/// A message id: a UUIDv7, so ids sort by creation time and double as dedupe keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub Uuid);

impl MessageId {
    /// A fresh time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A validated topic name: 1–200 characters from `[A-Za-z0-9._-]`, not starting with `.` or `-`.
///
/// The same rule for every backend, so a channel can move between backends unchanged; it keeps
/// names safe as file names (embedded), queue names (AMQP), topic names (Kafka) and subjects (NATS).
///
/// Shared, not copied: every envelope carries its topic, so a clone is a reference count.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Topic(std::sync::Arc<str>);

impl Topic {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, BusError> {
        let name = name.into();
        validate_name("topic", &name)?;
        Ok(Self(name.into()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a topic or group name against the common rule; `what` names the kind in the error.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), BusError> {
    let reason = if name.is_empty() {
        Some("must not be empty".to_string())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("is {} bytes long, the limit is {MAX_NAME_LEN}", name.len()))
    } else if name.starts_with('.') || name.starts_with('-') {
        Some("must not start with '.' or '-'".to_string())
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .map(|c| format!("contains {c:?}; allowed are A-Z a-z 0-9 . _ -"))
    };
    match reason {
        Some(reason) => Err(BusError::InvalidName { what, name: name.to_string(), reason }),
        None => Ok(()),
    }
}

impl TryFrom<String> for Topic {
    type Error = BusError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Topic> for String {
    fn from(t: Topic) -> Self {
        t.0.to_string()
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Message priority, 0 (lowest) to 9 (highest); 4 by default.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Priority(u8);

impl Priority {
    /// The highest priority.
    pub const MAX: Priority = Priority(9);
    /// The lowest priority.
    pub const MIN: Priority = Priority(0);
    /// What a message gets when nobody says otherwise.
    pub const DEFAULT: Priority = Priority(4);

    /// Validates `p` (0–9).
    pub fn new(p: u8) -> Result<Self, BusError> {
        if p <= 9 {
            Ok(Self(p))
        } else {
            Err(BusError::InvalidPriority(p))
        }
    }

    /// The level as a number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u8> for Priority {
    type Error = BusError;
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Priority> for u8 {
    fn from(p: Priority) -> Self {
        p.0
    }
}

/// Milliseconds since the Unix epoch; the bus's one clock format.
pub type Millis = i64;

/// Now, in [`Millis`].
pub fn now_millis() -> Millis {
    to_millis(SystemTime::now())
}

/// A wall-clock time in [`Millis`].
pub fn to_millis(t: SystemTime) -> Millis {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as Millis,
        Err(e) => -(e.duration().as_millis() as Millis),
    }
}

/// A [`Millis`] value as a wall-clock time.
pub fn from_millis(ms: Millis) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// A message as the bus carries it.
///
/// The payload is opaque bytes: schemas live above the bus (`horizons-events`). Headers are
/// ordered so that encodings are deterministic.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Envelope {
    /// Unique id, UUIDv7; consumers dedupe on it.
    pub id: MessageId,
    /// Where the message goes.
    pub topic: Topic,
    /// Partitioning and ordering key: messages with the same key keep their order where the
    /// subscription asks for it.
    pub key: Option<String>,
    /// Free-form headers, including [`HEADER_CORRELATION_ID`] and [`HEADER_CAUSATION_ID`].
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub payload: Bytes,
    /// When the producer made it.
    pub timestamp: Millis,
    /// 0–9, higher first where the backend supports priorities.
    pub priority: Priority,
    /// Not to be delivered before this time.
    pub not_before: Option<Millis>,
}

impl Envelope {
    /// A new message with a fresh id, the current time and default priority.
    pub fn new(topic: Topic, payload: impl Into<Bytes>) -> Self {
        Self {
            id: MessageId::new(),
            topic,
            key: None,
            headers: BTreeMap::new(),
            payload: payload.into(),
            timestamp: now_millis(),
            priority: Priority::DEFAULT,
            not_before: None,
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the priority.
    pub fn with_priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }

    /// Delays delivery by `d` from now.
    pub fn with_delay(mut self, d: Duration) -> Self {
        self.not_before = Some(now_millis() + d.as_millis() as Millis);
        self
    }

    /// Sets a header.
    pub fn with_header(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.headers.insert(k.into(), v.into());
        self
    }

    /// Marks this message as caused by `cause`: same correlation id, causation id = cause's id.
    pub fn caused_by(mut self, cause: &Envelope) -> Self {
        let corr = cause.correlation_id().map(str::to_string).unwrap_or_else(|| cause.id.to_string());
        self.headers.insert(HEADER_CORRELATION_ID.into(), corr);
        self.headers.insert(HEADER_CAUSATION_ID.into(), cause.id.to_string());
        self
    }

    /// The correlation id, if set.
    pub fn correlation_id(&self) -> Option<&str> {
        self.headers.get(HEADER_CORRELATION_ID).map(String::as_str)
    }

    /// The causation id, if set.
    pub fn causation_id(&self) -> Option<&str> {
        self.headers.get(HEADER_CAUSATION_ID).map(String::as_str)
    }

    /// Bytes this message occupies on the wire, roughly: what size limits are checked against.
    pub fn wire_size(&self) -> usize {
        self.payload.len()
            + self.key.as_ref().map_or(0, String::len)
            + self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_name(name: &str, ok: bool) {
        assert_eq!(Topic::new(name).is_ok(), ok, "{name:?}");
    }

    #[test]
    fn topic_names() {
        check_name("comments", true);
        check_name("raw-visibilities.v1", true);
        check_name("a_b", true);
        check_name("", false);
        check_name(".hidden", false);
        check_name("-x", false);
        check_name("a/b", false);
        check_name("a b", false);
        check_name("ü", false);
        check_name(&"x".repeat(MAX_NAME_LEN), true);
        check_name(&"x".repeat(MAX_NAME_LEN + 1), false);
    }

    #[test]
    fn invalid_name_error_names_the_problem() {
        let err = Topic::new("a/b").unwrap_err().to_string();
        assert!(err.contains("a/b") && err.contains("'/'"), "{err}");
    }

    #[test]
    fn priority_range() {
        assert!(Priority::new(9).is_ok());
        assert!(matches!(Priority::new(10), Err(BusError::InvalidPriority(10))));
    }

    #[test]
    fn causation_chain() {
        let t = Topic::new("t").unwrap();
        let a = Envelope::new(t.clone(), "a");
        let b = Envelope::new(t.clone(), "b").caused_by(&a);
        let c = Envelope::new(t, "c").caused_by(&b);
        assert_eq!(b.correlation_id(), Some(a.id.to_string().as_str()));
        assert_eq!(c.correlation_id(), Some(a.id.to_string().as_str()));
        assert_eq!(c.causation_id(), Some(b.id.to_string().as_str()));
    }

    #[test]
    fn ids_sort_by_time() {
        let a = MessageId::new();
        std::thread::sleep(Duration::from_millis(2));
        let b = MessageId::new();
        assert!(a < b);
        assert_eq!(a.0.get_version_num(), 7);
    }
}
