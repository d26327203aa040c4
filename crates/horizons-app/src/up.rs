//! `horizons up` and `horizons serve`: the HTTP API with the comment pipeline.
//!
//! `up` runs everything in one process: API, outbox relay, every worker and the mailer (the
//! zero-set-up default), and with `pipeline.in_up = true` every ngVLA pipeline stage. `serve` runs the API and the relay; workers then run elsewhere with
//! `horizons worker`.
//!
//! Start-up: metrics recorder, store, backend, topology, listener, server, workers. Shutdown on
//! Ctrl-C or SIGTERM: one cancellation token stops the server (in-flight requests get
//! `http.shutdown_timeout` to finish) and the workers (in-flight handlers finish and settle),
//! health turns 503, then the backend is closed (the embedded engine saves consumer positions
//! and finishes queued appends) and the process exits 0.

use std::net::SocketAddr;
use std::sync::Arc;

use horizons_api::ApiState;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::background::Background;
use crate::config::Config;
use crate::error::AppError;
use crate::portal::{self, Parts, Roles};
use crate::{backend, telemetry};

/// `horizons up` / `horizons serve`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Address to serve HTTP on; overrides `http.addr` and HORIZONS_HTTP_ADDR.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
}

/// Runs until a shutdown signal, then shuts down cleanly; `all_workers` for `up`, else `serve`.
pub async fn run(cfg: Config, all_workers: bool) -> Result<(), AppError> {
    let cancel = CancellationToken::new();
    let prometheus = telemetry::install_metrics(cancel.child_token())?;
    let parts = Parts::open(&cfg).await?;
    let backend = backend::open(&cfg)?;
    if let Err(e) = backend.declare(&parts.topology()).await {
        let _ = backend.close().await;
        return Err(AppError::bus("declaring the pipeline's topics")(e));
    }
    let listener = match tokio::net::TcpListener::bind(cfg.http.addr).await {
        Ok(l) => l,
        Err(e) => {
            // Close what is open before failing, so the engine saves its state.
            let _ = backend.close().await;
            return Err(AppError::io(format!("binding HTTP address {}", cfg.http.addr))(e));
        }
    };
    let addr = listener.local_addr().map_err(AppError::io("reading the bound address"))?;
    // Workers (relay, consumers, stages, tantivy's threads) run below the API's CPU priority.
    let bg = Background::start(cfg.portal.worker_nice)?;
    let search = match bg.open_search(&parts) {
        Ok(s) => Some(s),
        Err(e) if all_workers => {
            let _ = backend.close().await;
            return Err(e);
        }
        // A `worker --role search` elsewhere holds the writer: follow its commits read-only.
        Err(_) => match horizons_search::SearchIndex::open_read_only(&parts.search_dir()) {
            Ok(s) => Some(std::sync::Arc::new(s)),
            Err(e) => {
                tracing::warn!(error = %e, "search is not served by this process");
                None
            }
        },
    };
    if let Some(index) = &search {
        if let Err(e) = parts.recover_search(index).await {
            let _ = backend.close().await;
            return Err(e);
        }
    }
    let (live, _) = broadcast::channel(1024);
    let mut state = ApiState::new(backend.clone(), Some(prometheus));
    state.portal = Some(parts.portal(search.clone(), live.clone()));
    let bus_closing = state.bus_closing.clone();
    let workers_cancel = CancellationToken::new();
    let mut workers = JoinSet::new();
    let roles = if all_workers { Roles::all() } else { Roles { relay: true, ..Roles::default() } };
    bg.enter(|| portal::spawn(&parts, backend.clone(), &roles, search, live, &mut workers, &workers_cancel))?;
    if all_workers && cfg.pipeline.in_up {
        let (cfg, backend, c) = (cfg.clone(), backend.clone(), workers_cancel.clone());
        let stages = horizons_pipeline::Stage::ALL;
        let catalog: Arc<dyn horizons_pipeline::Catalog> = Arc::new(crate::pipeline::StoreCatalog(parts.store.clone()));
        bg.enter(|| {
            workers.spawn(async move { crate::pipeline::run_stages(&cfg, backend, &stages, Some(catalog), c).await })
        });
    }
    tracing::info!(%addr, backend = backend.name(), data_dir = %cfg.data_dir.display(), "horizons is up");

    tokio::spawn(crate::shutdown::cancel_on_signal(cancel.clone()));
    let server =
        tokio::spawn(horizons_api::serve(listener, horizons_api::router(state), cancel.clone().cancelled_owned()));
    cancel.cancelled().await;
    tracing::info!("shutting down");
    let served = match tokio::time::timeout(cfg.http.shutdown_timeout, server).await {
        Ok(Ok(r)) => r.map_err(AppError::Http),
        Ok(Err(join)) => Err(AppError::Task(format!("the HTTP server: {join}"))),
        Err(_) => {
            tracing::warn!(timeout = ?cfg.http.shutdown_timeout, "requests still running at the shutdown timeout were cut");
            Ok(())
        }
    };
    workers_cancel.cancel();
    let worked = portal::commands::supervise(&mut workers, &workers_cancel).await;
    bus_closing.cancel();
    parts.store.close().await;
    let closed = backend.close().await.map_err(AppError::bus("closing the bus"));
    // Only now: the backend's own tasks started by the workers (acks on their way to the
    // engine, say) run on the workers' runtime and finish during `close`.
    drop(bg);
    served?;
    worked?;
    closed?;
    tracing::info!("shut down cleanly");
    Ok(())
}
