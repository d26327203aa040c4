//! `GET /healthz`: 200 `{"status":"ok","backend":…}` while the bus answers, 503 otherwise.
//!
//! The probe asks the backend for its topic list under a short timeout: a closed or wedged
//! backend does not answer (the embedded one waits for a restart that never comes), so a
//! timeout counts as down.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use crate::error::ApiError;
use crate::state::ApiState;

/// The health body.
#[derive(Debug, Serialize)]
pub struct Health {
    /// Always `"ok"` in a 200 answer.
    pub status: &'static str,
    /// The backend's short name.
    pub backend: &'static str,
}

/// Answers whether the bus is up.
#[tracing::instrument(skip_all)]
pub async fn healthz(State(state): State<ApiState>) -> Result<Json<Health>, ApiError> {
    if state.bus_closing.is_cancelled() {
        return Err(ApiError::BusUnavailable(None));
    }
    match tokio::time::timeout(state.probe_timeout, state.backend.topics()).await {
        Ok(Ok(_)) => Ok(Json(Health { status: "ok", backend: state.backend.name() })),
        Ok(Err(e)) => Err(ApiError::BusUnavailable(Some(e))),
        Err(_) => Err(ApiError::BusUnavailable(Some(horizons_bus::BusError::Timeout(state.probe_timeout)))),
    }
}
