//! The one error type of every handler, and its mapping to an HTTP response.
//!
//! Every error body has the same shape, `{"error": "<message>"}`. Internal details (the
//! source chain of a backend failure) are logged here, never sent to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// What a request can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No route matches the path.
    #[error("no route for {0}")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed {
        /// The method asked for.
        method: String,
        /// The path.
        path: String,
    },
    /// The message bus does not answer or is closed.
    #[error("the message bus is unavailable")]
    BusUnavailable(#[source] Option<horizons_bus::BusError>),
    /// Something failed inside; the client sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
    /// The server itself failed (accepting connections).
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

impl ApiError {
    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BusUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) | ApiError::Serve(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message a client may see.
    fn public_message(&self) -> String {
        match self {
            ApiError::NotFound(_) | ApiError::MethodNotAllowed { .. } | ApiError::BusUnavailable(_) => self.to_string(),
            ApiError::Internal(_) | ApiError::Serve(_) => "internal server error".to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            let chain = error_chain(&self);
            tracing::warn!(status = status.as_u16(), error = %chain, "request failed");
        }
        (status, Json(serde_json::json!({ "error": self.public_message() }))).into_response()
    }
}

/// `error: cause: cause…`, for the log line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
