//! Logs and metrics set-up for the process.
//!
//! Logs go to stderr (stdout belongs to command output such as `acked N` and JSON), filtered
//! by `RUST_LOG` when set, else by the command's default level. Metrics go to a Prometheus
//! recorder, installed once by the commands that serve `/metrics`.

use std::io::IsTerminal;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::error::AppError;

/// Installs the stderr log subscriber. `default` is the filter used when `RUST_LOG` is unset.
pub fn init_tracing(default: &str) -> Result<(), AppError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => {
            EnvFilter::try_new(&v).map_err(|e| AppError::Telemetry(format!("invalid RUST_LOG={v:?}: {e}")))?
        }
        _ => EnvFilter::new(default),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| AppError::Telemetry(format!("installing the log subscriber: {e}")))
}

/// Installs the process-wide Prometheus recorder and starts its upkeep (draining histogram
/// buckets) until `cancel` fires.
pub fn install_metrics(cancel: CancellationToken) -> Result<PrometheusHandle, AppError> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| AppError::Telemetry(format!("installing the Prometheus recorder: {e}")))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = every.tick() => upkeep.run_upkeep(),
            }
        }
    });
    describe();
    Ok(handle)
}

/// Help texts of the bus metrics, shown in `/metrics`.
fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!("horizons_bus_published_total", "Messages acknowledged as durable, per topic.");
    describe_counter!(
        "horizons_bus_settled_total",
        "Deliveries settled, per topic, group and result (ack, retry, dead_letter)."
    );
    describe_counter!("horizons_bus_dead_lettered_total", "Messages moved to a dead-letter queue, per topic.");
    describe_counter!(
        "horizons_bus_lease_expired_total",
        "Deliveries redelivered because their lease ran out, per topic."
    );
    describe_counter!("horizons_handler_total", "Handler invocations, per topic, group and outcome.");
    describe_gauge!("horizons_bus_messages", "Messages stored, per topic.");
    describe_gauge!("horizons_bus_pending", "Messages not yet settled, per topic and group.");
    describe_gauge!("horizons_bus_dead_letters", "Messages in the dead-letter queue, per topic and group.");
}
