//! The portal's HTTP API: posts, threaded comments, reports, moderation, notifications (list,
//! mark read, live over Server-Sent Events), preferences, search, jobs ([`jobs`], admin only) and the ngVLA archive's products
//! ([`products`]), described by an OpenAPI 3 document at `/openapi.json`.
//!
//! Reads of posts, comments, search and products are public; everything else needs a bearer token
//! ([`auth`]). Handlers only translate: the rules live in `horizons_comments::Service`.

pub mod auth;
pub mod extract;
pub mod jobs;
pub mod products;
pub mod routes;
pub mod sse;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, patch, post};
use axum::Router;
use horizons_comments::Service;
use tokio::sync::broadcast;

pub use auth::{Caller, Claims, TokenKeys};

use crate::state::ApiState;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the portal routes need.
#[derive(Clone)]
pub struct Portal {
    /// The domain operations.
    pub service: Service,
    /// Token signing and checking.
    pub keys: TokenKeys,
    /// The search index, when this process serves search.
    pub search: Option<Arc<horizons_search::SearchIndex>>,
    /// User names with new notifications, announced by the notify worker in this process.
    pub live: broadcast::Sender<String>,
    /// The job kinds submissions are checked against.
    pub jobs: Arc<horizons_jobs::Registry>,
}

impl std::fmt::Debug for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portal").field("search", &self.search.is_some()).finish()
    }
}

/// The portal's routes.
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/posts", post(routes::create_post))
        .route("/api/posts/:id", get(routes::get_post))
        .route("/api/posts/:id/comments", post(routes::create_comment).get(routes::list_comments))
        .route("/api/comments/:id", patch(routes::edit_comment).delete(routes::delete_comment))
        .route("/api/comments/:id/reports", post(routes::report_comment))
        .route("/api/moderation/queue", get(routes::moderation_queue))
        .route("/api/moderation/decisions", post(routes::decide))
        .route("/api/notifications", get(routes::notifications))
        .route("/api/notifications/read", post(routes::mark_read))
        .route("/api/notifications/stream", get(sse::stream))
        .route("/api/me/preferences", get(routes::get_preferences).put(routes::set_preferences))
        .route("/api/search", get(routes::search))
        .route("/api/events/schemas", get(routes::event_schemas))
        .route("/api/jobs", post(jobs::submit).get(jobs::list))
        .route("/api/jobs/dlq", get(jobs::dlq))
        .route("/api/jobs/dlq/redrive", post(jobs::redrive))
        .route("/api/jobs/:id", get(jobs::get))
        .route("/api/jobs/:id/cancel", post(jobs::cancel))
        .route("/api/jobs/:id/retry", post(jobs::retry))
        .route("/api/products", get(products::list))
        .route("/api/products/:run", get(products::get))
        .route("/api/products/:run/files/:name", get(products::file))
        .route("/openapi.json", get(routes::openapi))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}
