//! The HTTP side of horizons, on axum.
//!
//! For now: `GET /healthz` (is the bus answering?) and `GET /metrics` (Prometheus text of every
//! metric the process emits). Everything else is a JSON 404. Errors of every handler map to a
//! response in one place, [`ApiError`].
//!
//! *Architecture invariant:* only this crate knows HTTP. It sees the bus through
//! `Arc<dyn Backend>` only, so it never knows which backend runs under it.

pub mod error;
pub mod health;
pub mod metrics;
pub mod portal;
pub mod state;

use std::future::Future;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

pub use error::ApiError;
pub use state::ApiState;

/// The application's routes, with `state` shared by every handler.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(metrics::metrics))
        .merge(portal::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_string())
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed { method: method.to_string(), path: uri.path().to_string() }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await.map_err(ApiError::Serve)
}

#[cfg(test)]
mod tests;
