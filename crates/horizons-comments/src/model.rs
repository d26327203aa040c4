//! The domain's plain data: who acts, and the rows the API returns.

use serde::{Deserialize, Serialize};

/// A role carried in the caller's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Writes posts and comments, reports comments.
    User,
    /// Also works the moderation queue.
    Moderator,
    /// Everything.
    Admin,
}

impl Role {
    /// The role's name as stored and as written in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Moderator => "moderator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may moderate.
    pub fn moderates(self) -> bool {
        self >= Role::Moderator
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "user" => Ok(Role::User),
            "moderator" => Ok(Role::Moderator),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?} (user, moderator, admin)")),
        }
    }
}

/// Who is doing something: from a verified token, plus where the request came from.
#[derive(Clone, Debug)]
pub struct Actor {
    /// User name (the token's subject).
    pub name: String,
    /// Role from the token.
    pub role: Role,
    /// E-mail address for notifications.
    pub email: String,
    /// The client's address, for the audit log (encrypted there).
    pub ip: Option<String>,
}

/// A post.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Post {
    /// Id (UUIDv7).
    pub id: String,
    /// Author's user name.
    pub author: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
}

/// A comment as listed. Deleted and hidden comments keep their place in the thread with an
/// empty body, so replies still make sense.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Comment {
    /// Id (UUIDv7).
    pub id: String,
    /// The post.
    pub post_id: String,
    /// The comment this replies to.
    pub parent_id: Option<String>,
    /// Author's user name.
    pub author: String,
    /// Body; empty when deleted or hidden.
    pub body: String,
    /// `visible`, `hidden` or `deleted`.
    pub status: String,
    /// Increases with every edit.
    pub version: i64,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last edit, ms since the epoch.
    pub edited_at: Option<i64>,
}

/// An open entry of the moderation queue.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct QueueEntry {
    /// The comment.
    pub comment_id: String,
    /// Its post.
    pub post_id: String,
    /// Its author.
    pub author: String,
    /// Its body.
    pub body: String,
    /// `report` or `filter`.
    pub source: String,
    /// The content filter's score, 0–1 (0 when only reported).
    pub score: f64,
    /// Why it is here: filter rules and report reasons.
    pub reasons: Vec<String>,
    /// How many reports.
    pub reports: i64,
    /// When it entered the queue.
    pub enqueued_at: i64,
}

/// An in-app notification.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Notification {
    /// Id (UUIDv7; later ids are newer).
    pub id: String,
    /// `reply`, `comment_on_post`, `report`, `moderation`.
    pub kind: String,
    /// The post concerned.
    pub post_id: Option<String>,
    /// The comment concerned.
    pub comment_id: Option<String>,
    /// Text for the user.
    pub message: String,
    /// When it was created.
    pub created_at: i64,
    /// When the user marked it read.
    pub read_at: Option<i64>,
}

/// A user's notification settings.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Store and push in-app notifications.
    pub in_app: bool,
    /// Send e-mail.
    pub email: bool,
}
