//! The pipeline's events and their wire form.
//!
//! Every event travels as JSON `{"type": "CommentCreated", "version": 1, "data": {…}}`; the
//! bus message also carries `type` and `version` headers so tools can filter without parsing.
//! Decoding is strict: an unknown type, a version this build does not read, or a body with a
//! missing, mistyped or unknown field is a [`DecodeError`], which consumers turn into a
//! permanent failure (straight to the dead-letter queue, reason in its headers).
//!
//! The `data` structs below are the schemas (version 1 of each). A change that old readers
//! cannot read gets a new version number and both are decoded until the old one is drained.

use serde::{Deserialize, Serialize};

/// Topic of comment lifecycle and moderation events.
pub const COMMENTS: &str = "comments";
/// Topic of notification requests.
pub const NOTIFICATIONS: &str = "notifications";
/// Topic where the audit writer announces each record it appended.
pub const AUDIT: &str = "audit";

/// The schema version this build writes and reads.
pub const VERSION: u32 = 1;

/// A comment was written.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentCreated {
    pub comment_id: String,
    pub post_id: String,
    pub parent_id: Option<String>,
    pub author: String,
    /// Sensitive in the audit log (free text).
    pub body: String,
    /// Sensitive (e-mail address).
    pub author_email: String,
    /// Sensitive (IP address).
    pub client_ip: Option<String>,
    pub at_ms: i64,
}

/// A comment's body changed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentEdited {
    pub comment_id: String,
    pub post_id: String,
    pub editor: String,
    pub body: String,
    pub version: i64,
    pub client_ip: Option<String>,
    pub at_ms: i64,
}

/// A comment was soft-deleted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentDeleted {
    pub comment_id: String,
    pub post_id: String,
    pub deleted_by: String,
    pub client_ip: Option<String>,
    pub at_ms: i64,
}

/// A user reported a comment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentReported {
    pub report_id: String,
    pub comment_id: String,
    pub post_id: String,
    pub reporter: String,
    pub reason: String,
    pub client_ip: Option<String>,
    pub at_ms: i64,
}

/// A moderator decided on a comment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModerationDecided {
    pub decision_id: String,
    pub comment_id: String,
    pub moderator: String,
    /// `approve`, `hide` or `ban`.
    pub action: String,
    pub note: String,
    pub at_ms: i64,
}

/// Someone should be told something.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationRequested {
    pub notification_id: String,
    pub user: String,
    pub email: String,
    pub kind: String,
    pub post_id: Option<String>,
    pub comment_id: Option<String>,
    pub message: String,
    pub at_ms: i64,
}

/// The audit writer appended a record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditRecorded {
    pub seq: i64,
    pub hash: String,
    pub action: String,
    pub event_id: String,
    pub at_ms: i64,
}

/// Every event of the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    CommentCreated(CommentCreated),
    CommentEdited(CommentEdited),
    CommentDeleted(CommentDeleted),
    CommentReported(CommentReported),
    ModerationDecided(ModerationDecided),
    NotificationRequested(NotificationRequested),
    AuditRecorded(AuditRecorded),
}

/// Why a message is not an event this build reads.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not JSON, or not the `{type, version, data}` shape.
    #[error("malformed event: {0}")]
    Malformed(String),
    /// A type this build does not know.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// A known type in a version this build does not read.
    #[error("unsupported version {version} of {event_type} (this build reads {VERSION})")]
    UnsupportedVersion {
        /// The type.
        event_type: String,
        /// The version found.
        version: u32,
    },
    /// The body does not match the type's schema.
    #[error("invalid {event_type} body: {message}")]
    InvalidBody {
        /// The type.
        event_type: String,
        /// serde's complaint.
        message: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<T> {
    #[serde(rename = "type")]
    event_type: String,
    version: u32,
    data: T,
}

/// The JSON Schema of every event's `data`, by type, in the version this build writes: what
/// `GET /api/events/schemas` serves, so producers in other languages can validate.
pub fn schemas() -> serde_json::Value {
    use utoipa::PartialSchema;
    fn one<T: PartialSchema>() -> serde_json::Value {
        serde_json::json!({ "version": VERSION, "data": T::schema() })
    }
    serde_json::json!({
        "CommentCreated": one::<CommentCreated>(),
        "CommentEdited": one::<CommentEdited>(),
        "CommentDeleted": one::<CommentDeleted>(),
        "CommentReported": one::<CommentReported>(),
        "ModerationDecided": one::<ModerationDecided>(),
        "NotificationRequested": one::<NotificationRequested>(),
        "AuditRecorded": one::<AuditRecorded>(),
    })
}

impl Event {
    /// The type's name, as on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::CommentCreated(_) => "CommentCreated",
            Event::CommentEdited(_) => "CommentEdited",
            Event::CommentDeleted(_) => "CommentDeleted",
            Event::CommentReported(_) => "CommentReported",
            Event::ModerationDecided(_) => "ModerationDecided",
            Event::NotificationRequested(_) => "NotificationRequested",
            Event::AuditRecorded(_) => "AuditRecorded",
        }
    }

    /// The topic the event is published on.
    pub fn topic(&self) -> &'static str {
        match self {
            Event::NotificationRequested(_) => NOTIFICATIONS,
            Event::AuditRecorded(_) => AUDIT,
            _ => COMMENTS,
        }
    }

    /// The ordering key: the comment for comment events, the user for notifications.
    pub fn key(&self) -> String {
        match self {
            Event::CommentCreated(e) => e.comment_id.clone(),
            Event::CommentEdited(e) => e.comment_id.clone(),
            Event::CommentDeleted(e) => e.comment_id.clone(),
            Event::CommentReported(e) => e.comment_id.clone(),
            Event::ModerationDecided(e) => e.comment_id.clone(),
            Event::NotificationRequested(e) => e.user.clone(),
            Event::AuditRecorded(e) => e.seq.to_string(),
        }
    }

    /// The wire form.
    pub fn encode(&self) -> String {
        fn wire<T: Serialize>(t: &'static str, data: &T) -> String {
            serde_json::to_string(&Wire { event_type: t.into(), version: VERSION, data })
                .expect("event structs serialize")
        }
        let t = self.type_name();
        match self {
            Event::CommentCreated(e) => wire(t, e),
            Event::CommentEdited(e) => wire(t, e),
            Event::CommentDeleted(e) => wire(t, e),
            Event::CommentReported(e) => wire(t, e),
            Event::ModerationDecided(e) => wire(t, e),
            Event::NotificationRequested(e) => wire(t, e),
            Event::AuditRecorded(e) => wire(t, e),
        }
    }

    /// Reads the wire form strictly.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        let w: Wire<serde_json::Value> =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let known = [
            "CommentCreated",
            "CommentEdited",
            "CommentDeleted",
            "CommentReported",
            "ModerationDecided",
            "NotificationRequested",
            "AuditRecorded",
        ];
        if !known.contains(&w.event_type.as_str()) {
            return Err(DecodeError::UnknownType(w.event_type));
        }
        if w.version != VERSION {
            return Err(DecodeError::UnsupportedVersion { event_type: w.event_type, version: w.version });
        }
        fn body<T: serde::de::DeserializeOwned>(t: &str, v: serde_json::Value) -> Result<T, DecodeError> {
            serde_json::from_value(v)
                .map_err(|e| DecodeError::InvalidBody { event_type: t.to_string(), message: e.to_string() })
        }
        let t = w.event_type.as_str();
        Ok(match t {
            "CommentCreated" => Event::CommentCreated(body(t, w.data)?),
            "CommentEdited" => Event::CommentEdited(body(t, w.data)?),
            "CommentDeleted" => Event::CommentDeleted(body(t, w.data)?),
            "CommentReported" => Event::CommentReported(body(t, w.data)?),
            "ModerationDecided" => Event::ModerationDecided(body(t, w.data)?),
            "NotificationRequested" => Event::NotificationRequested(body(t, w.data)?),
            _ => Event::AuditRecorded(body(t, w.data)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created() -> Event {
        Event::CommentCreated(CommentCreated {
            comment_id: "c1".into(),
            post_id: "p1".into(),
            parent_id: None,
            author: "alice".into(),
            body: "nice image".into(),
            author_email: "alice@example.org".into(),
            client_ip: Some("127.0.0.1".into()),
            at_ms: 1,
        })
    }

    #[test]
    fn every_type_has_a_schema_naming_its_fields() {
        let s = schemas();
        assert_eq!(s.as_object().unwrap().len(), 7);
        let created = s["CommentCreated"]["data"].to_string();
        assert!(created.contains("comment_id") && created.contains("author_email"), "{created}");
        assert_eq!(s["AuditRecorded"]["version"], VERSION);
    }

    #[test]
    fn round_trips() {
        let e = created();
        assert_eq!(Event::decode(e.encode().as_bytes()).unwrap(), e);
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        let check = |input: &str, want: &str| {
            let err = Event::decode(input.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        };
        check("not json", "malformed");
        check(r#"{"type":"Nope","version":1,"data":{}}"#, "unknown event type \"Nope\"");
        let v2 = created().encode().replace("\"version\":1", "\"version\":2");
        check(&v2, "unsupported version 2 of CommentCreated");
        check(r#"{"type":"CommentDeleted","version":1,"data":{"comment_id":"c"}}"#, "invalid CommentDeleted body");
        let extra = created().encode().replace("\"at_ms\":1", "\"at_ms\":1,\"surprise\":true");
        check(&extra, "unknown field `surprise`");
    }
}
