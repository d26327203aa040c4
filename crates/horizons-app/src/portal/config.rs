//! `[portal]`: the comment pipeline's database, namespace, secrets, audit keys, mail and search.
//!
//! Everything defaults to something that works offline on one machine: SQLite under the data
//! dir, a JWT secret and an audit key generated once into the data dir (mode 0600), mail
//! written as files. Secrets are [`Secret`]s: they print as `***`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A value that never prints.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether it is unset.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// `[portal]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalConfig {
    /// `sqlite://PATH` or `postgres://…`; empty means `sqlite://<data_dir>/horizons.db`.
    /// Env: HORIZONS_DATABASE_URL.
    pub database_url: Secret,
    /// Prefix of every topic name, so several deployments (or test runs) share a broker.
    /// Env: HORIZONS_NAMESPACE.
    pub namespace: String,
    /// HS256 secret for bearer tokens (≥ 32 bytes); empty means generated into
    /// `<data_dir>/jwt.secret` on first start. Env: HORIZONS_JWT_SECRET.
    pub jwt_secret: Secret,
    /// How long `horizons token` tokens live.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Id of the audit key new records are sealed with; with `audit_keys` empty, a key is
    /// generated into `<data_dir>/audit.keys` on first start.
    pub audit_current_key: String,
    /// Audit keys, `"<id>:<base64 of 32 bytes>"`; keep old ones so old records stay readable.
    pub audit_keys: Vec<Secret>,
    /// Audit records older than this are removed from the head of the chain (≥ 1 day).
    #[serde(with = "humantime_serde")]
    pub audit_retention: Duration,
    /// SMTP server for notification e-mail (`smtp://user:pass@host:587?tls=required`); empty
    /// means `.eml` files in `<data_dir>/mail`. Env: HORIZONS_SMTP_URL.
    pub smtp_url: Secret,
    /// Sender of notification e-mail.
    pub mail_from: String,
    /// Bursts of notifications within this window go out as one e-mail per user.
    #[serde(with = "humantime_serde")]
    pub mail_batch_window: Duration,
    /// Where the search index lives; empty means `<data_dir>/search`.
    pub search_dir: Option<PathBuf>,
    /// The bus lease of a job message: how soon a dead worker's job is looked at again. A job
    /// may run longer: its heartbeats keep other workers off it.
    #[serde(with = "humantime_serde")]
    pub jobs_lease: Duration,
    /// How often a running job's worker stamps it; after five missed beats another worker
    /// takes the job over.
    #[serde(with = "humantime_serde")]
    pub jobs_heartbeat: Duration,
    /// Recurring jobs (`[[portal.schedules]]`), submitted once per tick by the jobs workers.
    pub schedules: Vec<ScheduleConfig>,
    /// How long published outbox rows are kept (pruned hourly by the relay).
    #[serde(with = "humantime_serde")]
    pub outbox_retention: Duration,
    /// How long processed message ids are kept for deduplication (pruned hourly by the relay);
    /// keep it longer than the bus's retention.
    #[serde(with = "humantime_serde")]
    pub inbox_retention: Duration,
    /// Where the API shares a process with the workers (`horizons up`): the workers' threads
    /// run at this `nice` value (0–19; 0 = the API's own priority), so requests get the CPU
    /// first when both want it. See `crate::background`.
    pub worker_nice: i32,
}

/// One recurring job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Unique name.
    pub name: String,
    /// Cron expression in UTC: 5 fields, or 6 with seconds first.
    pub cron: String,
    /// Job kind.
    pub kind: String,
    /// Job arguments.
    #[serde(default = "empty_args")]
    pub args: serde_json::Value,
    /// Priority 0–9 (default: the job system's).
    #[serde(default)]
    pub priority: Option<i64>,
    /// Attempts in all (default: the job system's).
    #[serde(default)]
    pub max_attempts: Option<i64>,
}

fn empty_args() -> serde_json::Value {
    serde_json::json!({})
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            database_url: Secret::default(),
            namespace: String::new(),
            jwt_secret: Secret::default(),
            token_ttl: Duration::from_secs(12 * 3600),
            audit_current_key: String::new(),
            audit_keys: Vec::new(),
            audit_retention: Duration::from_secs(30 * 24 * 3600),
            smtp_url: Secret::default(),
            mail_from: "Cosmic Horizons <noreply@localhost>".into(),
            mail_batch_window: Duration::from_secs(2),
            search_dir: None,
            jobs_lease: Duration::from_secs(300),
            jobs_heartbeat: Duration::from_secs(2),
            schedules: Vec::new(),
            outbox_retention: Duration::from_secs(7 * 24 * 3600),
            inbox_retention: Duration::from_secs(35 * 24 * 3600),
            worker_nice: 5,
        }
    }
}

impl PortalConfig {
    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.jwt_secret.is_empty() && self.jwt_secret.expose().len() < 32 {
            return Err("portal.jwt_secret must have at least 32 bytes".into());
        }
        if self.audit_keys.is_empty() != self.audit_current_key.is_empty() {
            return Err("portal.audit_current_key and portal.audit_keys are set together (or neither)".into());
        }
        if self.audit_retention < Duration::from_secs(24 * 3600) {
            return Err("portal.audit_retention must be at least 1 day".into());
        }
        if self.mail_batch_window.is_zero() {
            return Err("portal.mail_batch_window must be positive".into());
        }
        if self.jobs_lease < Duration::from_secs(1) {
            return Err("portal.jobs_lease must be at least 1s".into());
        }
        if self.jobs_heartbeat < Duration::from_millis(100) || self.jobs_heartbeat > Duration::from_secs(60) {
            return Err("portal.jobs_heartbeat must be between 100ms and 60s".into());
        }
        if self.outbox_retention < Duration::from_secs(60) {
            return Err("portal.outbox_retention must be at least 1m".into());
        }
        if self.inbox_retention < Duration::from_secs(3600) {
            return Err("portal.inbox_retention must be at least 1h".into());
        }
        if self.token_ttl.is_zero() {
            return Err("portal.token_ttl must be positive".into());
        }
        if !(0..=19).contains(&self.worker_nice) {
            return Err("portal.worker_nice must be between 0 and 19".into());
        }
        if !self.namespace.is_empty() && horizons_bus::Topic::new(format!("{}comments", self.namespace)).is_err() {
            return Err(format!("portal.namespace {:?}: must make valid topic names", self.namespace));
        }
        self.job_schedules(&crate::jobs::registry(
            std::path::Path::new(""),
            self,
            std::path::PathBuf::new(),
            super::SearchSlot::default(),
        ))?;
        Ok(())
    }

    /// The schedules, checked against `registry`; the message names the key.
    pub fn job_schedules(
        &self,
        registry: &horizons_jobs::Registry,
    ) -> Result<Vec<horizons_jobs::schedule::Schedule>, String> {
        let mut seen = std::collections::BTreeSet::new();
        self.schedules
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if !seen.insert(s.name.as_str()) {
                    return Err(format!("portal.schedules[{i}].name: {:?} is used twice", s.name));
                }
                let mut spec = horizons_jobs::JobSpec::new(&s.kind, s.args.clone());
                spec.priority = s.priority.unwrap_or(spec.priority);
                spec.max_attempts = s.max_attempts.unwrap_or(spec.max_attempts);
                horizons_jobs::schedule::Schedule::new(&s.name, &s.cron, spec, registry)
                    .map_err(|e| format!("portal.schedules[{i}].{e}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_checked_naming_the_key() {
        let ok: PortalConfig =
            toml::from_str("[[schedules]]\nname = \"nightly-verify\"\ncron = \"0 3 * * *\"\nkind = \"audit.verify\"\n")
                .unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.job_schedules(&horizons_jobs::Registry::standard()).unwrap().len(), 1);
        for (toml_text, key) in [
            ("[[schedules]]\nname = \"a\"\ncron = \"61 * * * *\"\nkind = \"demo.noop\"\n", "portal.schedules[0].cron"),
            ("[[schedules]]\nname = \"a\"\ncron = \"* * * * *\"\nkind = \"nope\"\n", "portal.schedules[0].kind"),
            (
                "[[schedules]]\nname = \"a\"\ncron = \"* * * * *\"\nkind = \"demo.noop\"\n\
                 [[schedules]]\nname = \"a\"\ncron = \"* * * * *\"\nkind = \"demo.noop\"\n",
                "portal.schedules[1].name",
            ),
            (
                "[[schedules]]\nname = \"a\"\ncron = \"* * * * *\"\nkind = \"demo.sleep\"\nargs = { ms = \"x\" }\n",
                "portal.schedules[0].args",
            ),
        ] {
            let c: PortalConfig = toml::from_str(toml_text).unwrap();
            let e = c.validate().unwrap_err();
            assert!(e.starts_with(key), "{toml_text}: {e}");
        }
    }

    #[test]
    fn defaults_validate_and_secrets_do_not_print() {
        PortalConfig::default().validate().unwrap();
        let c = PortalConfig { jwt_secret: Secret::new("x".repeat(40)), ..Default::default() };
        assert!(!format!("{c:?}").contains("xxxx"));
        let short = PortalConfig { jwt_secret: Secret::new("short"), ..Default::default() };
        assert!(short.validate().unwrap_err().contains("portal.jwt_secret"));
    }
}
