//! `horizons token`, `horizons audit verify`, `horizons search reindex`, `horizons worker`.

use std::sync::Arc;

use async_trait::async_trait;
use horizons_bus::{Context, Envelope, Handler, HandlerError};
use horizons_comments::events::Event;
use horizons_comments::{Role, Store};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Parts, Roles};
use crate::config::Config;
use crate::error::AppError;

/// `horizons token`: prints a bearer token for local use.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// User name (1-64 of letters, digits, '.', '_', '-').
    #[arg(long)]
    pub user: String,
    /// Role: user, moderator or admin.
    #[arg(long, default_value = "user")]
    pub role: String,
    /// E-mail address for notifications; default `<user>@localhost`.
    #[arg(long)]
    pub email: Option<String>,
}

/// `horizons audit …`
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Checks the whole hash chain (and that every sealed field opens); exits non-zero naming
    /// the first broken record.
    Verify,
}

/// `horizons search …`
#[derive(Debug, clap::Subcommand)]
pub enum SearchCommand {
    /// Rebuilds the index from the database (stop the search worker first: one writer per index).
    Reindex,
}

/// `horizons worker`
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Roles to run, comma-separated: audit, notify, search, moderation, jobs, or all; and the
    /// ngVLA pipeline's stages pipeline:validate, pipeline:flag, pipeline:calibrate,
    /// pipeline:image, pipeline:archive, pipeline:srdp, or pipeline:all (of these only the
    /// archive and srdp use the database, for the catalog rows; they run in a worker of their
    /// own: do not mix them with the portal's roles).
    #[arg(long, default_value = "all")]
    pub role: String,
    /// Jobs run at a time by the jobs role.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Also run the outbox relay.
    #[arg(long)]
    pub relay: bool,
    /// The jobs role runs only these kinds (comma-separated); other workers run the rest.
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// At most N jobs of KIND at once in this worker, as KIND=N (repeatable).
    #[arg(long = "kind-limit", value_parser = parse_limit)]
    pub kind_limits: Vec<(String, usize)>,
}

fn parse_limit(s: &str) -> Result<(String, usize), String> {
    let (k, n) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected KIND=N"))?;
    let n = n.parse().map_err(|e| format!("{s:?}: {e}"))?;
    Ok((k.to_string(), n))
}

/// Prints a token.
pub async fn token(cfg: Config, a: TokenArgs) -> Result<(), AppError> {
    let role: Role = a.role.parse().map_err(AppError::Usage)?;
    let email = a.email.unwrap_or_else(|| format!("{}@localhost", a.user));
    let keys = horizons_api::portal::TokenKeys::new(&super::secrets::jwt_secret(&cfg)?)
        .map_err(|e| AppError::ConfigInvalid(format!("portal.jwt_secret: {e}")))?;
    let t = keys.issue(&a.user, role, &email, cfg.portal.token_ttl).map_err(AppError::Usage)?;
    println!("{t}");
    Ok(())
}

/// Verifies the audit chain.
pub async fn audit(cfg: Config, c: AuditCommand) -> Result<(), AppError> {
    let AuditCommand::Verify = c;
    let parts = Parts::open(&cfg).await?;
    let result = horizons_comments::consumers::audit::verify(&parts.store, Some(&parts.ring)).await;
    parts.store.close().await;
    match result {
        Ok(v) => {
            println!(
                "audit log ok: {} record(s), seq {}..{}, head {}",
                v.count,
                v.first_seq.map_or("-".into(), |s| s.to_string()),
                v.last_seq.map_or("-".into(), |s| s.to_string()),
                v.head_hash
            );
            Ok(())
        }
        Err(e) => Err(AppError::Check(e.to_string())),
    }
}

/// Rebuilds the search index.
pub async fn search(cfg: Config, c: SearchCommand) -> Result<(), AppError> {
    let SearchCommand::Reindex = c;
    let parts = Parts::open(&cfg).await?;
    let index = parts.open_search()?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} comments indexed ({per_sec})").expect("valid template"),
    );
    let b = bar.clone();
    let n = horizons_comments::consumers::search::reindex(&parts.store, index, move |k| b.set_position(k))
        .await
        .map_err(AppError::Portal)?;
    bar.finish();
    println!("reindexed {n} comment(s) into {}", parts.search_dir().display());
    parts.store.close().await;
    Ok(())
}

/// Runs workers until a shutdown signal.
pub async fn worker(cfg: Config, a: WorkerArgs) -> Result<(), AppError> {
    let (stages, others) = crate::pipeline::split_roles(&a.role)?;
    if !stages.is_empty() {
        if !others.is_empty() || a.relay {
            return Err(AppError::Usage(format!(
                "pipeline stages run in a worker of their own; also asked for {others:?}{}",
                if a.relay { " and the relay" } else { "" }
            )));
        }
        return pipeline_worker(cfg, &stages).await;
    }
    let mut roles = Roles {
        relay: a.relay,
        job_kinds: a.kinds.clone(),
        job_limits: a.kind_limits.clone(),
        ..Roles::parse(&a.role)?
    };
    if roles.jobs > 0 {
        roles.jobs = a.concurrency.max(1);
    }
    let cancel = CancellationToken::new();
    let _prom = crate::telemetry::install_metrics(cancel.child_token())?;
    let parts = Parts::open(&cfg).await?;
    let backend = crate::backend::open(&cfg)?;
    backend.declare(&parts.topology()).await.map_err(AppError::bus("declaring the pipeline's topics"))?;
    let search = if roles.search { Some(parts.open_search()?) } else { None };
    if let Some(index) = &search {
        parts.recover_search(index).await?;
    }
    let (live, _) = broadcast::channel(1024);
    let mut tasks = JoinSet::new();
    super::spawn(&parts, backend.clone(), &roles, search, live, &mut tasks, &cancel)?;
    tracing::info!(role = %a.role, relay = a.relay, backend = backend.name(), "workers running");
    tokio::spawn(crate::shutdown::cancel_on_signal(cancel.clone()));
    let result = supervise(&mut tasks, &cancel).await;
    let closed = backend.close().await.map_err(AppError::bus("closing the bus"));
    parts.store.close().await;
    result.and(closed)
}

/// Runs pipeline stages until a shutdown signal.
async fn pipeline_worker(cfg: Config, stages: &[horizons_pipeline::Stage]) -> Result<(), AppError> {
    let cancel = CancellationToken::new();
    let _prom = crate::telemetry::install_metrics(cancel.child_token())?;
    // Only the archive and delivery write to the database (the catalog rows); the other stages
    // need none.
    let store = if stages.iter().any(|s| s.uses_catalog()) {
        Some(Store::connect(&super::database_url(&cfg)?).await.map_err(AppError::Portal)?)
    } else {
        None
    };
    let catalog =
        store.clone().map(|s| Arc::new(crate::pipeline::StoreCatalog(s)) as Arc<dyn horizons_pipeline::Catalog>);
    let backend = crate::backend::open(&cfg)?;
    tokio::spawn(crate::shutdown::cancel_on_signal(cancel.clone()));
    let result = crate::pipeline::run_stages(&cfg, backend.clone(), stages, catalog, cancel).await;
    let closed = backend.close().await.map_err(AppError::bus("closing the bus"));
    if let Some(s) = store {
        s.close().await;
    }
    result.and(closed)
}

/// Waits for every task; the first failure cancels the rest and is returned.
pub async fn supervise(tasks: &mut JoinSet<Result<(), AppError>>, cancel: &CancellationToken) -> Result<(), AppError> {
    let mut first = Ok(());
    while let Some(r) = tasks.join_next().await {
        let r = r.map_err(|e| AppError::Task(e.to_string())).and_then(|r| r);
        if let Err(e) = r {
            if first.is_ok() {
                tracing::error!(error = %e, "a portal task failed; stopping");
                cancel.cancel();
                first = Err(e);
            }
        }
    }
    first
}

/// Follows `AuditRecorded`: keeps the head of the chain in a metric, so a monitoring system
/// outside the database sees it move (a truncated or rewritten head shows up there).
#[derive(Debug)]
pub struct AuditHead;

#[async_trait]
impl Handler for AuditHead {
    async fn handle(&self, msg: &Envelope, _cx: &Context) -> Result<(), HandlerError> {
        match Event::decode(&msg.payload).map_err(HandlerError::permanent)? {
            Event::AuditRecorded(a) => {
                metrics::gauge!("horizons_audit_head_seq").set(a.seq as f64);
                tracing::debug!(seq = a.seq, hash = %a.hash, "audit head");
                Ok(())
            }
            other => Err(HandlerError::permanent(format!("unexpected {} on the audit topic", other.type_name()))),
        }
    }
}
