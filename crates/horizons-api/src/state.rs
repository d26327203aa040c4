//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use horizons_bus::Backend;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    /// The bus this process runs on.
    pub backend: Arc<dyn Backend>,
    /// Renders the process's metrics; `None` when no Prometheus recorder is installed.
    pub prometheus: Option<PrometheusHandle>,
    /// Cancelled once the composition root starts closing the bus: health turns 503 at once.
    pub bus_closing: CancellationToken,
    /// The portal's services; `None` in a process that serves only health and metrics.
    pub portal: Option<crate::portal::Portal>,
    /// How long a health probe waits for the bus.
    pub probe_timeout: Duration,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("backend", &self.backend.name())
            .field("prometheus", &self.prometheus.is_some())
            .field("bus_closing", &self.bus_closing.is_cancelled())
            .finish()
    }
}

impl ApiState {
    /// State over `backend`, with a one-second health probe.
    pub fn new(backend: Arc<dyn Backend>, prometheus: Option<PrometheusHandle>) -> Self {
        Self {
            backend,
            prometheus,
            bus_closing: CancellationToken::new(),
            probe_timeout: Duration::from_secs(1),
            portal: None,
        }
    }
}
