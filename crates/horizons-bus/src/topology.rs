//! Topology as data: topics, their consumer groups and each group's delivery rules.
//!
//! Backends apply a [`Topology`] idempotently: declaring the same thing twice is a no-op, and a
//! declaration that contradicts what exists is a [`BusError::TopologyConflict`] naming the object
//! and the argument.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::envelope::{validate_name, Topic};
use crate::error::BusError;
use crate::retry::RetryPolicy;

/// Thirty days: the plan's minimum retention for debugging.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How a group treats messages that share a key when one of them is being retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OrderingMode {
    /// A key with a message in flight or waiting for a retry delivers nothing else until that
    /// message is settled: per-key order holds across retries, at the cost of stalling the key.
    BlockKey,
    /// A retried message is rescheduled and later messages of its key go ahead: throughput is
    /// kept, per-key order is not kept across retries.
    #[default]
    Requeue,
}

/// A consumer group on a topic. Every group gets every message of its topic; the members of a
/// group share the work.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Group name (same rule as topic names).
    pub name: String,
    /// Per-key ordering under retries.
    #[serde(default)]
    pub ordering: OrderingMode,
    /// Retry policy applied by routers consuming this group.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// How long a delivery may stay unsettled before it is given to another member.
    #[serde(default = "default_visibility", with = "humantime_serde")]
    pub visibility_timeout: Duration,
}

fn default_visibility() -> Duration {
    Duration::from_secs(30)
}

impl GroupSpec {
    /// A group with default rules.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ordering: OrderingMode::default(),
            retry: RetryPolicy::default(),
            visibility_timeout: default_visibility(),
        }
    }

    /// Sets the ordering mode.
    pub fn ordering(mut self, m: OrderingMode) -> Self {
        self.ordering = m;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, r: RetryPolicy) -> Self {
        self.retry = r;
        self
    }

    /// Sets the visibility timeout.
    pub fn visibility_timeout(mut self, d: Duration) -> Self {
        self.visibility_timeout = d;
        self
    }
}

/// A topic and its groups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// The topic.
    pub name: Topic,
    /// Partitions, for backends that partition (Kafka); others ignore it.
    #[serde(default = "one")]
    pub partitions: u32,
    /// Messages older than this are deleted.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// Above this many bytes the oldest messages are deleted; `None` keeps all (within time).
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    /// Largest accepted message, in bytes (payload + key + headers).
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// The consumer groups.
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
}

fn one() -> u32 {
    1
}
fn default_retention() -> Duration {
    DEFAULT_RETENTION
}
/// Default largest message: 4 MiB, above the pipeline's 1 MiB blocks.
pub const DEFAULT_MAX_MESSAGE: usize = 4 << 20;
fn default_max_message() -> usize {
    DEFAULT_MAX_MESSAGE
}

impl TopicSpec {
    /// A topic with defaults and no groups.
    pub fn new(name: Topic) -> Self {
        Self {
            name,
            partitions: 1,
            retention: DEFAULT_RETENTION,
            retention_bytes: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE,
            groups: Vec::new(),
        }
    }

    /// Adds a group.
    pub fn group(mut self, g: GroupSpec) -> Self {
        self.groups.push(g);
        self
    }

    /// Sets the partition count.
    pub fn partitions(mut self, n: u32) -> Self {
        self.partitions = n;
        self
    }

    /// Sets the message size limit.
    pub fn max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = n;
        self
    }

    /// Sets time retention.
    pub fn retention(mut self, d: Duration) -> Self {
        self.retention = d;
        self
    }

    /// The group called `name`.
    pub fn find_group(&self, name: &str) -> Option<&GroupSpec> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Checks names and ranges.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.partitions == 0 {
            return Err(BusError::Config(format!("topic {}: partitions must be at least 1", self.name)));
        }
        if self.max_message_bytes == 0 {
            return Err(BusError::Config(format!("topic {}: max_message_bytes must be positive", self.name)));
        }
        for (i, g) in self.groups.iter().enumerate() {
            validate_name("group", &g.name)?;
            g.retry.validate().map_err(|e| BusError::Config(format!("topic {} group {}: {e}", self.name, g.name)))?;
            if self.groups[..i].iter().any(|o| o.name == g.name) {
                return Err(BusError::Config(format!("topic {}: group {} declared twice", self.name, g.name)));
            }
        }
        Ok(())
    }

    /// Compares a redeclaration with what exists. Groups may be added; everything else must match.
    pub fn check_compatible(&self, existing: &TopicSpec) -> Result<(), BusError> {
        let topic = self.name.to_string();
        conflict(&topic, "partitions", &existing.partitions, &self.partitions)?;
        conflict(&topic, "retention", &existing.retention, &self.retention)?;
        conflict(&topic, "retention_bytes", &existing.retention_bytes, &self.retention_bytes)?;
        conflict(&topic, "max_message_bytes", &existing.max_message_bytes, &self.max_message_bytes)?;
        for g in &self.groups {
            if let Some(old) = existing.find_group(&g.name) {
                let object = format!("{}/{}", self.name, g.name);
                conflict(&object, "ordering", &old.ordering, &g.ordering)?;
                conflict(&object, "retry", &old.retry, &g.retry)?;
                conflict(&object, "visibility_timeout", &old.visibility_timeout, &g.visibility_timeout)?;
            }
        }
        Ok(())
    }
}

fn conflict<T: PartialEq + std::fmt::Debug>(
    object: &str,
    field: &str,
    existing: &T,
    declared: &T,
) -> Result<(), BusError> {
    if existing == declared {
        Ok(())
    } else {
        Err(BusError::TopologyConflict {
            object: object.to_string(),
            field: field.to_string(),
            existing: format!("{existing:?}"),
            declared: format!("{declared:?}"),
        })
    }
}

/// Everything a service needs declared before it publishes or consumes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The topics.
    #[serde(default)]
    pub topics: Vec<TopicSpec>,
}

impl Topology {
    /// An empty topology.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a topic.
    pub fn topic(mut self, t: TopicSpec) -> Self {
        self.topics.push(t);
        self
    }

    /// Validates every topic.
    pub fn validate(&self) -> Result<(), BusError> {
        for t in &self.topics {
            t.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TopicSpec {
        TopicSpec::new(Topic::new("t").unwrap()).group(GroupSpec::new("g"))
    }

    #[test]
    fn same_declaration_is_compatible() {
        spec().check_compatible(&spec()).unwrap();
    }

    #[test]
    fn new_group_is_compatible() {
        spec().group(GroupSpec::new("h")).check_compatible(&spec()).unwrap();
    }

    #[test]
    fn conflict_names_object_and_field() {
        let mut other = spec();
        other.groups[0].ordering = OrderingMode::BlockKey;
        let err = other.check_compatible(&spec()).unwrap_err().to_string();
        assert!(err.contains("t/g") && err.contains("ordering"), "{err}");
        let err = spec().partitions(3).check_compatible(&spec()).unwrap_err().to_string();
        assert!(err.contains("partitions"), "{err}");
    }

    #[test]
    fn duplicate_group_rejected() {
        let t = spec().group(GroupSpec::new("g"));
        assert!(t.validate().is_err());
    }

    #[test]
    fn serde_defaults() {
        let t: TopicSpec = serde_json::from_str(r#"{"name":"x","groups":[{"name":"g"}]}"#).unwrap();
        assert_eq!(t.retention, DEFAULT_RETENTION);
        assert_eq!(t.groups[0].visibility_timeout, Duration::from_secs(30));
        assert!(serde_json::from_str::<TopicSpec>(r#"{"name":"x","bogus":1}"#).is_err());
        assert!(serde_json::from_str::<TopicSpec>(r#"{"name":"a/b"}"#).is_err());
    }
}
