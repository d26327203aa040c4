//! `GET /metrics`: the Prometheus text of every metric this process records.
//!
//! Before rendering, the queue gauges are refreshed from the backend's topic list and the
//! per-topic bus counters are registered at zero, so that every declared topic and group shows
//! up in a scrape (publish, settle by result, dead-letter, lease expiry) even before its first
//! event. Label values come from declared names only, so cardinality stays bounded by the
//! topology.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use horizons_bus::TopicInfo;

use crate::error::ApiError;
use crate::state::ApiState;

/// The content type Prometheus expects for the text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders the metrics.
pub async fn metrics(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let Some(handle) = state.prometheus.clone() else {
        return Err(ApiError::Internal("no Prometheus recorder installed".into()));
    };
    if !state.bus_closing.is_cancelled() {
        match tokio::time::timeout(state.probe_timeout, state.backend.topics()).await {
            Ok(Ok(topics)) => record_topology(&topics),
            Ok(Err(e)) => tracing::debug!(error = %e, "listing topics for metrics failed"),
            Err(_) => tracing::debug!("listing topics for metrics timed out"),
        }
    }
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], handle.render()))
}

/// Settlement results the router counts, as label values.
const SETTLE_RESULTS: [&str; 3] = ["ack", "retry", "dead_letter"];

/// Registers the per-topic counters at zero and sets the queue gauges.
pub fn record_topology(topics: &[TopicInfo]) {
    for t in topics {
        let topic = t.name.clone();
        metrics::counter!("horizons_bus_published_total", "topic" => topic.clone()).increment(0);
        metrics::counter!("horizons_bus_dead_lettered_total", "topic" => topic.clone()).increment(0);
        metrics::counter!("horizons_bus_lease_expired_total", "topic" => topic.clone()).increment(0);
        if let Some(n) = t.messages {
            metrics::gauge!("horizons_bus_messages", "topic" => topic.clone()).set(n as f64);
        }
        for g in &t.groups {
            for result in SETTLE_RESULTS {
                metrics::counter!("horizons_bus_settled_total", "topic" => topic.clone(), "group" => g.name.clone(), "result" => result)
                    .increment(0);
            }
            if let Some(n) = g.pending {
                metrics::gauge!("horizons_bus_pending", "topic" => topic.clone(), "group" => g.name.clone())
                    .set(n as f64);
            }
            if let Some(n) = g.dead {
                metrics::gauge!("horizons_bus_dead_letters", "topic" => topic.clone(), "group" => g.name.clone())
                    .set(n as f64);
            }
        }
    }
}
