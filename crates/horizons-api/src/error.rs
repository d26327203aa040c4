//! The one error type of every handler, and its mapping to an HTTP response.
//!
//! Every error body has the same shape, `{"error": "<message>"}`. Internal details (the
//! source chain of a backend failure) are logged here, never sent to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use horizons_bus::error_chain;

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
    /// No or an invalid bearer token.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The caller's role may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The request is malformed or a field is invalid.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The body is over the limit.
    #[error("payload too large: {0}")]
    TooLarge(String),
    /// The body is not JSON.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// A thing named in the request does not exist.
    #[error("{0}")]
    Missing(String),
    /// The request conflicts with the current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A part of the service is not running here (e.g. search in this process).
    #[error("unavailable: {0}")]
    Unavailable(String),
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
            ApiError::NotFound(_) | ApiError::Missing(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BusUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) | ApiError::Serve(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message a client may see.
    fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) | ApiError::Serve(_) => "internal server error".to_string(),
            _ => self.to_string(),
        }
    }
}

impl From<horizons_comments::CommentsError> for ApiError {
    fn from(e: horizons_comments::CommentsError) -> Self {
        use horizons_comments::CommentsError as C;
        match e {
            C::NotFound { .. } => ApiError::Missing(e.to_string()),
            C::Forbidden(m) => ApiError::Forbidden(m),
            C::Invalid { .. } => ApiError::BadRequest(e.to_string()),
            C::Conflict(m) => ApiError::Conflict(m),
            // The chain goes to the log in `into_response`, never to the client.
            other => ApiError::Internal(error_chain(&other)),
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
