//! The comment pipeline's composition root: opens the store, keys, index and mailer from the
//! configuration, declares the topics, and runs the relay and the workers.
//!
//! - `horizons up`: API + relay + every worker + mailer in one process (the zero-set-up default).
//! - `horizons serve`: API + relay.
//! - `horizons worker --role audit,notify,search,moderation`: workers only, any subset, so roles
//!   can be split across processes (with a broker backend; the embedded bus is one process).
//! - `horizons token`, `horizons audit verify`, `horizons search reindex`: operator tools.

pub mod commands;
pub mod config;
pub mod secrets;

use std::path::PathBuf;
use std::sync::Arc;

use horizons_api::portal::{Portal, TokenKeys};
use horizons_audit::{KeyRing, Retention};
use horizons_bus::{Backend, GroupSpec, RetryPolicy, Router, Topic, TopicSpec, Topology};
use horizons_comments::consumers::{audit, moderation, notify, search};
use horizons_comments::events::{AUDIT, COMMENTS, NOTIFICATIONS};
use horizons_comments::mail::{Mailer, Transport};
use horizons_comments::relay::{self, Relay};
use horizons_comments::{Service, Store};
use horizons_jobs::worker::JobWorker;
use horizons_search::SearchIndex;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::AppError;

/// What every portal process opens.
#[derive(Clone, Debug)]
pub struct Parts {
    /// The database.
    pub store: Store,
    /// Domain operations.
    pub service: Service,
    /// Token keys.
    pub tokens: TokenKeys,
    /// Audit keys.
    pub ring: Arc<KeyRing>,
    /// Topic prefix.
    pub prefix: String,
    /// `[portal]`.
    pub cfg: config::PortalConfig,
    /// The data dir.
    pub data_dir: PathBuf,
    /// The job kinds of this deployment ([`crate::jobs::registry`]).
    pub jobs: horizons_jobs::Registry,
    /// The search index's writer once this process opened it ([`Parts::open_search`]), shared
    /// with the `search.reindex` job kind (one writer per index).
    pub search_writer: SearchSlot,
}

/// Where the search index lives: `portal.search_dir`, or `search` in the data dir.
fn search_dir(portal: &config::PortalConfig, data_dir: &std::path::Path) -> PathBuf {
    portal.search_dir.clone().unwrap_or_else(|| data_dir.join("search"))
}

/// The search index writer of this process, once it opened one (it keeps it).
#[derive(Clone, Debug, Default)]
pub struct SearchSlot(Arc<std::sync::OnceLock<Arc<SearchIndex>>>);

impl SearchSlot {
    /// The writer this process holds, if any.
    pub fn get(&self) -> Option<Arc<SearchIndex>> {
        self.0.get().cloned()
    }
}

/// The database URL: configured, or SQLite in the data dir.
pub fn database_url(cfg: &Config) -> Result<String, AppError> {
    if !cfg.portal.database_url.is_empty() {
        return Ok(cfg.portal.database_url.expose().to_string());
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(AppError::io(format!("creating the data dir {}", cfg.data_dir.display())))?;
    Ok(format!("sqlite://{}", cfg.data_dir.join("horizons.db").display()))
}

impl Parts {
    /// Opens the store (migrating it) and loads or creates the keys.
    pub async fn open(cfg: &Config) -> Result<Parts, AppError> {
        let store = Store::connect(&database_url(cfg)?).await.map_err(AppError::Portal)?;
        let tokens = TokenKeys::new(&secrets::jwt_secret(cfg)?)
            .map_err(|e| AppError::ConfigInvalid(format!("portal.jwt_secret: {e}")))?;
        let ring = Arc::new(secrets::audit_ring(cfg)?);
        let search_writer = SearchSlot::default();
        Ok(Parts {
            service: Service::new(store.clone()),
            store,
            tokens,
            ring,
            prefix: cfg.portal.namespace.clone(),
            cfg: cfg.portal.clone(),
            data_dir: cfg.data_dir.clone(),
            jobs: crate::jobs::registry(
                &cfg.data_dir,
                &cfg.portal,
                search_dir(&cfg.portal, &cfg.data_dir),
                search_writer.clone(),
            ),
            search_writer,
        })
    }

    /// The topic named `name` in this deployment's namespace.
    pub fn topic(&self, name: &str) -> Topic {
        Topic::new(format!("{}{name}", self.prefix)).expect("validated namespace makes valid topics")
    }

    /// The pipeline's topics and groups.
    pub fn topology(&self) -> Topology {
        let group = |name: &str| GroupSpec::new(name).retry(RetryPolicy::default());
        Topology::new()
            .topic(
                TopicSpec::new(self.topic(COMMENTS))
                    .group(group("audit"))
                    .group(group("search"))
                    .group(group("moderation")),
            )
            .topic(TopicSpec::new(self.topic(NOTIFICATIONS)).group(group("notify")))
            .topic(TopicSpec::new(self.topic(AUDIT)).group(group("audit-head")))
            .topic(JobWorker::topology(self.topic(horizons_jobs::TOPIC), self.cfg.jobs_lease))
    }

    /// Where the search index lives.
    pub fn search_dir(&self) -> PathBuf {
        search_dir(&self.cfg, &self.data_dir)
    }

    /// Opens the search index's writer (one per index: a second process gets a clear error)
    /// and keeps it for the `search.reindex` kind of this process's job workers.
    pub fn open_search(&self) -> Result<Arc<SearchIndex>, AppError> {
        if let Some(index) = self.search_writer.get() {
            return Ok(index);
        }
        let dir = self.search_dir();
        let index = SearchIndex::open(&dir)
            .map(Arc::new)
            .map_err(|e| AppError::Portal(horizons_comments::CommentsError::Other(format!("search index: {e}"))))?;
        Ok(self.search_writer.0.get_or_init(|| index).clone())
    }

    /// Rebuilds `index` from the database if it was found torn at open: the machine went down
    /// while the index held unsynced commits (`horizons_search::durability`). Call it before
    /// the indexer consumes, so that it works on a complete index.
    pub async fn recover_search(&self, index: &Arc<SearchIndex>) -> Result<(), AppError> {
        if !index.rebuild_needed() {
            return Ok(());
        }
        tracing::warn!(dir = %self.search_dir().display(), "rebuilding the search index from the database after a machine restart");
        let n = search::reindex(&self.store, index.clone(), |_| {}).await.map_err(AppError::Portal)?;
        tracing::info!(comments = n, "search index rebuilt");
        Ok(())
    }

    /// The API's view of these parts.
    pub fn portal(&self, search: Option<Arc<SearchIndex>>, live: broadcast::Sender<String>) -> Portal {
        Portal {
            service: self.service.clone(),
            keys: self.tokens.clone(),
            search,
            live,
            jobs: Arc::new(self.jobs.clone()),
        }
    }
}

/// Which workers a process runs.
#[derive(Clone, Debug, Default)]
pub struct Roles {
    /// Audit log writer (+ retention, + the audit head follower).
    pub audit: bool,
    /// Notifications (+ the mailer).
    pub notify: bool,
    /// Search indexer.
    pub search: bool,
    /// Content filter.
    pub moderation: bool,
    /// The outbox relay (exactly one per database is the useful number).
    pub relay: bool,
    /// Job execution: this many jobs at a time (0 = none).
    pub jobs: usize,
    /// Only these job kinds (all if empty).
    pub job_kinds: Vec<String>,
    /// At most this many jobs of a kind at once.
    pub job_limits: Vec<(String, usize)>,
}

impl Roles {
    /// Every role.
    pub fn all() -> Self {
        Self { audit: true, notify: true, search: true, moderation: true, relay: true, jobs: 4, ..Self::default() }
    }

    /// Parses `audit,notify,…` (or `all`).
    pub fn parse(list: &str) -> Result<Self, AppError> {
        let mut r = Roles::default();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "all" => r = Roles { relay: false, ..Roles::all() },
                "jobs" => r.jobs = r.jobs.max(4),
                "audit" => r.audit = true,
                "notify" => r.notify = true,
                "search" => r.search = true,
                "moderation" => r.moderation = true,
                other => {
                    return Err(AppError::Usage(format!(
                        "unknown worker role {other:?} (audit, notify, search, moderation, jobs, all)"
                    )))
                }
            }
        }
        if !(r.audit || r.notify || r.search || r.moderation || r.jobs > 0) {
            return Err(AppError::Usage("no worker role given".into()));
        }
        Ok(r)
    }
}

/// Spawns the relay and the workers of `roles` into `tasks`; all stop when `cancel` fires.
pub fn spawn(
    parts: &Parts,
    backend: Arc<dyn Backend>,
    roles: &Roles,
    search: Option<Arc<SearchIndex>>,
    live: broadcast::Sender<String>,
    tasks: &mut JoinSet<Result<(), AppError>>,
    cancel: &CancellationToken,
) -> Result<(), AppError> {
    if roles.relay {
        let r = Relay::new(parts.store.clone(), backend.clone(), parts.service.outbox_signal(), &parts.prefix);
        let c = cancel.clone();
        tasks.spawn(async move {
            r.run(c).await;
            Ok(())
        });
        let (store, outbox, inbox) = (parts.store.clone(), parts.cfg.outbox_retention, parts.cfg.inbox_retention);
        hourly(tasks, cancel, move || {
            let store = store.clone();
            async move {
                match (relay::prune_outbox(&store, outbox).await, relay::prune_inbox(&store, inbox).await) {
                    (Ok(o), Ok(i)) if o + i > 0 => tracing::info!(outbox = o, inbox = i, "pruned old rows"),
                    (Ok(_), Ok(_)) => {}
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!(error = %e, "pruning the outbox/inbox failed; will retry")
                    }
                }
            }
        });
    }
    let policy = RetryPolicy::default();
    let mut router = Router::new(backend);
    if roles.audit {
        let h = Arc::new(audit::Audit::new(parts.store.clone(), parts.ring.clone()));
        router = router.route(parts.topic(COMMENTS), "audit", policy.clone(), 1, h);
        router = router.route(parts.topic(AUDIT), "audit-head", policy.clone(), 1, Arc::new(commands::AuditHead));
        let retention = Retention::from_duration(parts.cfg.audit_retention)
            .map_err(|e| AppError::ConfigInvalid(format!("portal.audit_retention: {e}")))?;
        let store = parts.store.clone();
        hourly(tasks, cancel, move || {
            let store = store.clone();
            async move {
                if let Err(e) = audit::enforce_retention(&store, retention).await {
                    tracing::warn!(error = %e, "audit retention failed; will retry");
                }
            }
        });
    }
    if roles.notify {
        let h = Arc::new(notify::Notify::new(parts.store.clone(), live));
        router = router.route(parts.topic(NOTIFICATIONS), "notify", policy.clone(), 4, h);
        let transport =
            Transport::new(Some(parts.cfg.smtp_url.expose()).filter(|s| !s.is_empty()), parts.data_dir.join("mail"))
                .map_err(AppError::Portal)?;
        let mailer = Mailer::new(parts.store.clone(), transport, &parts.cfg.mail_from, parts.cfg.mail_batch_window)
            .map_err(AppError::Portal)?;
        let c = cancel.clone();
        tasks.spawn(async move {
            mailer.run(c).await;
            Ok(())
        });
    }
    if roles.search {
        let index = search.ok_or_else(|| AppError::Usage("the search role needs the search index".into()))?;
        let h = Arc::new(search::Indexer::new(parts.store.clone(), index));
        // A handler holds its slot until the commit that covers its write (up to
        // `COMMIT_EVERY` plus the commit): at 64 slots that capped the worker near 1 000
        // comments/s, so a backlog after any stall drained for seconds.
        router = router.route(parts.topic(COMMENTS), "search", policy.clone(), 256, h);
    }
    if roles.jobs > 0 {
        let name = format!("{}-{}", hostname(), std::process::id());
        let beat = parts.cfg.jobs_heartbeat;
        let mut w = JobWorker::new(parts.store.clone(), parts.jobs.clone(), name).heartbeats(beat, beat * 5);
        let bad = |e: horizons_jobs::JobsError| AppError::Usage(e.to_string());
        if !roles.job_kinds.is_empty() {
            w = w.only(roles.job_kinds.iter().cloned()).map_err(bad)?;
        }
        for (kind, n) in &roles.job_limits {
            w = w.limit(kind, *n).map_err(bad)?;
        }
        let topic = parts.topic(horizons_jobs::TOPIC);
        router = router.route(topic, horizons_jobs::GROUP, JobWorker::policy(), roles.jobs, Arc::new(w));
        let schedules = parts.cfg.job_schedules(&parts.jobs).map_err(AppError::ConfigInvalid)?;
        let (store, c) = (parts.store.clone(), cancel.clone());
        tasks.spawn(async move {
            horizons_jobs::store::export_gauges(store, std::time::Duration::from_secs(5), c).await;
            Ok(())
        });
        let scheduler = horizons_jobs::schedule::Scheduler::new(parts.store.clone(), parts.jobs.clone(), schedules);
        let c = cancel.clone();
        tasks.spawn(async move {
            scheduler.run(c).await;
            Ok(())
        });
    }
    if roles.moderation {
        let h = Arc::new(moderation::Moderation::new(parts.store.clone()));
        router = router.route(parts.topic(COMMENTS), "moderation", policy, 4, h);
    }
    let c = cancel.clone();
    tasks.spawn(async move { router.run(c).await.map_err(AppError::bus("running the workers")) });
    Ok(())
}

/// Runs `work` now and then every hour until `cancel`.
fn hourly<F, Fut>(tasks: &mut JoinSet<Result<(), AppError>>, cancel: &CancellationToken, mut work: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let c = cancel.clone();
    tasks.spawn(async move {
        loop {
            work().await;
            tokio::select! {
                _ = c.cancelled() => return Ok(()),
                _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            }
        }
    });
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "worker".into())
}
