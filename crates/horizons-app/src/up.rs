//! `horizons up` (and `serve`, an alias for now): the bus and the HTTP API in one process.
//!
//! Start-up: metrics recorder, backend, listener, server. Shutdown on Ctrl-C or SIGTERM: one
//! cancellation token stops the server (in-flight requests get `http.shutdown_timeout` to
//! finish), health turns 503, then the backend is closed (the embedded engine saves consumer
//! positions and finishes queued appends) and the process exits 0.

use std::net::SocketAddr;

use horizons_api::ApiState;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::AppError;
use crate::{backend, telemetry};

/// `horizons up` / `horizons serve`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Address to serve HTTP on; overrides `http.addr` and HORIZONS_HTTP_ADDR.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
}

/// Runs until a shutdown signal, then shuts down cleanly.
pub async fn run(cfg: Config) -> Result<(), AppError> {
    let cancel = CancellationToken::new();
    let prometheus = telemetry::install_metrics(cancel.child_token())?;
    let backend = backend::open(&cfg)?;
    let listener = match tokio::net::TcpListener::bind(cfg.http.addr).await {
        Ok(l) => l,
        Err(e) => {
            // Close what is open before failing, so the engine saves its state.
            let _ = backend.close().await;
            return Err(AppError::io(format!("binding HTTP address {}", cfg.http.addr))(e));
        }
    };
    let addr = listener.local_addr().map_err(AppError::io("reading the bound address"))?;
    let state = ApiState::new(backend.clone(), Some(prometheus));
    let bus_closing = state.bus_closing.clone();
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
    bus_closing.cancel();
    let closed = backend.close().await.map_err(AppError::bus("closing the bus"));
    served?;
    closed?;
    tracing::info!("shut down cleanly");
    Ok(())
}
