//! The portal's handlers, each documented for the OpenAPI document ([`ApiDoc`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use horizons_comments::model::{Comment, Notification, Post, Preferences, QueueEntry};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::auth::Caller;
use super::extract::{JsonBody, PathParam, QueryParams};
use super::Portal;
use crate::error::ApiError;
use crate::state::ApiState;

pub(crate) fn portal(st: &ApiState) -> Result<&Portal, ApiError> {
    st.portal.as_ref().ok_or_else(|| ApiError::Unavailable("the portal is not served by this process".into()))
}

/// The error body of every 4xx and 5xx.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// A new post.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPost {
    /// 1–300 characters.
    #[schema(min_length = 1, max_length = 300)]
    pub title: String,
    /// 1–10 000 characters.
    #[schema(min_length = 1, max_length = 10000)]
    pub body: String,
}

/// A new comment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewComment {
    /// 1–10 000 characters.
    #[schema(min_length = 1, max_length = 10000)]
    pub body: String,
    /// The comment this replies to (same post).
    #[serde(default)]
    pub parent_id: Option<String>,
}

/// A comment's new body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditComment {
    /// 1–10 000 characters.
    #[schema(min_length = 1, max_length = 10000)]
    pub body: String,
}

/// A report.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReport {
    /// Why, 1–1000 characters.
    #[schema(min_length = 1, max_length = 1000)]
    pub reason: String,
}

/// What a moderator decides.
#[derive(Debug, Deserialize, Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Visible again; leaves the queue.
    Approve,
    /// Hidden from everyone but moderators.
    Hide,
    /// Hidden, and the author is banned from writing.
    Ban,
}

/// A moderation decision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDecision {
    /// The comment.
    pub comment_id: String,
    /// What to do.
    pub action: Action,
    /// Up to 1000 characters.
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub note: String,
}

/// Which notifications to mark read.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    /// Ids to mark; empty or absent marks all.
    #[serde(default)]
    #[schema(max_items = 500)]
    pub ids: Vec<String>,
}

/// The id of what was created.
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    /// Its id.
    pub id: String,
}

/// How many changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Changed {
    /// Count.
    pub changed: u64,
}

/// Paging a post's comments.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommentsQuery {
    /// Only comments after this comment id.
    pub after: Option<String>,
    /// At most this many (1–500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Paging notifications.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationsQuery {
    /// Only notifications older than this id.
    pub before: Option<String>,
    /// Only unread ones.
    pub unread: Option<bool>,
    /// At most this many (1–500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Paging the moderation queue.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// At most this many (1–500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// A search.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Words to find (1–500 characters).
    #[param(min_length = 1, max_length = 500)]
    pub q: String,
    /// 1-based page (default 1).
    #[param(minimum = 1, maximum = 1000)]
    pub page: Option<usize>,
    /// Hits per page (1–100, default 20).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<usize>,
}

/// A page of search hits.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResults {
    /// Matching comments in all.
    pub total: usize,
    /// This page (1-based).
    pub page: usize,
    /// Hits per page.
    pub per_page: usize,
    /// The hits, best first.
    pub hits: Vec<SearchHit>,
}

/// One search hit.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    /// Comment id.
    pub id: String,
    /// Its post.
    pub post_id: String,
    /// Its author.
    pub author: String,
    /// Relevance.
    pub score: f32,
    /// HTML-escaped excerpt with matches in `<mark>`.
    pub snippet: String,
}

/// `POST /api/posts`
#[utoipa::path(post, path = "/api/posts", request_body = NewPost, security(("bearer" = [])),
    responses((status = 201, body = Post), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn create_post(
    State(st): State<ApiState>,
    caller: Caller,
    JsonBody(p): JsonBody<NewPost>,
) -> Result<impl IntoResponse, ApiError> {
    let post = portal(&st)?.service.create_post(&caller.0, &p.title, &p.body).await?;
    Ok((StatusCode::CREATED, Json(post)))
}

/// `GET /api/posts/{id}`
#[utoipa::path(get, path = "/api/posts/{id}", params(("id" = String, Path, description = "Post id")),
    responses((status = 200, body = Post), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_post(State(st): State<ApiState>, PathParam(id): PathParam<String>) -> Result<Json<Post>, ApiError> {
    Ok(Json(portal(&st)?.service.post(&id).await?))
}

/// `POST /api/posts/{id}/comments`
#[utoipa::path(post, path = "/api/posts/{id}/comments", request_body = NewComment, security(("bearer" = [])),
    params(("id" = String, Path, description = "Post id")),
    responses((status = 201, body = Comment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody)))]
pub async fn create_comment(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(post_id): PathParam<String>,
    JsonBody(c): JsonBody<NewComment>,
) -> Result<impl IntoResponse, ApiError> {
    let svc = &portal(&st)?.service;
    let comment = svc.create_comment(&caller.0, &post_id, &c.body, c.parent_id.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(comment)))
}

/// `GET /api/posts/{id}/comments`
#[utoipa::path(get, path = "/api/posts/{id}/comments", params(("id" = String, Path, description = "Post id"), CommentsQuery),
    responses((status = 200, body = [Comment]), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_comments(
    State(st): State<ApiState>,
    PathParam(post_id): PathParam<String>,
    QueryParams(q): QueryParams<CommentsQuery>,
) -> Result<Json<Vec<Comment>>, ApiError> {
    let svc = &portal(&st)?.service;
    Ok(Json(svc.list_comments(&post_id, q.after.as_deref(), q.limit.unwrap_or(100)).await?))
}

/// `PATCH /api/comments/{id}`
#[utoipa::path(patch, path = "/api/comments/{id}", request_body = EditComment, security(("bearer" = [])),
    params(("id" = String, Path, description = "Comment id")),
    responses((status = 200, body = Comment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn edit_comment(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
    JsonBody(e): JsonBody<EditComment>,
) -> Result<Json<Comment>, ApiError> {
    Ok(Json(portal(&st)?.service.edit_comment(&caller.0, &id, &e.body).await?))
}

/// `DELETE /api/comments/{id}` (soft delete)
#[utoipa::path(delete, path = "/api/comments/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "Comment id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_comment(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    portal(&st)?.service.delete_comment(&caller.0, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/comments/{id}/reports`
#[utoipa::path(post, path = "/api/comments/{id}/reports", request_body = NewReport, security(("bearer" = [])),
    params(("id" = String, Path, description = "Comment id")),
    responses((status = 201, body = Created), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody)))]
pub async fn report_comment(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
    JsonBody(r): JsonBody<NewReport>,
) -> Result<impl IntoResponse, ApiError> {
    let id = portal(&st)?.service.report_comment(&caller.0, &id, &r.reason).await?;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

/// `GET /api/moderation/queue` (moderators)
#[utoipa::path(get, path = "/api/moderation/queue", security(("bearer" = [])), params(QueueQuery),
    responses((status = 200, body = [QueueEntry]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn moderation_queue(
    State(st): State<ApiState>,
    caller: Caller,
    QueryParams(q): QueryParams<QueueQuery>,
) -> Result<Json<Vec<QueueEntry>>, ApiError> {
    let actor = caller.moderator()?;
    Ok(Json(portal(&st)?.service.moderation_queue(actor, q.limit.unwrap_or(100)).await?))
}

/// `POST /api/moderation/decisions` (moderators)
#[utoipa::path(post, path = "/api/moderation/decisions", request_body = NewDecision, security(("bearer" = [])),
    responses((status = 201, body = Created), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn decide(
    State(st): State<ApiState>,
    caller: Caller,
    JsonBody(d): JsonBody<NewDecision>,
) -> Result<impl IntoResponse, ApiError> {
    let actor = caller.moderator()?;
    let action = match d.action {
        Action::Approve => "approve",
        Action::Hide => "hide",
        Action::Ban => "ban",
    };
    let id = portal(&st)?.service.decide(actor, &d.comment_id, action, &d.note).await?;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

/// `GET /api/notifications`: the caller's in-app notifications, newest first.
#[utoipa::path(get, path = "/api/notifications", security(("bearer" = [])), params(NotificationsQuery),
    responses((status = 200, body = [Notification]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn notifications(
    State(st): State<ApiState>,
    caller: Caller,
    QueryParams(q): QueryParams<NotificationsQuery>,
) -> Result<Json<Vec<Notification>>, ApiError> {
    let svc = &portal(&st)?.service;
    let list = svc
        .notifications(&caller.0.name, q.before.as_deref(), q.unread.unwrap_or(false), q.limit.unwrap_or(50))
        .await?;
    Ok(Json(list))
}

/// `POST /api/notifications/read`
#[utoipa::path(post, path = "/api/notifications/read", request_body = MarkRead, security(("bearer" = [])),
    responses((status = 200, body = Changed), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn mark_read(
    State(st): State<ApiState>,
    caller: Caller,
    JsonBody(m): JsonBody<MarkRead>,
) -> Result<Json<Changed>, ApiError> {
    if m.ids.len() > 500 {
        return Err(ApiError::BadRequest("ids: at most 500".into()));
    }
    Ok(Json(Changed { changed: portal(&st)?.service.mark_read(&caller.0.name, &m.ids).await? }))
}

/// `GET /api/me/preferences`
#[utoipa::path(get, path = "/api/me/preferences", security(("bearer" = [])),
    responses((status = 200, body = Preferences), (status = 401, body = ErrorBody)))]
pub async fn get_preferences(State(st): State<ApiState>, caller: Caller) -> Result<Json<Preferences>, ApiError> {
    Ok(Json(portal(&st)?.service.preferences(&caller.0.name).await?))
}

/// `PUT /api/me/preferences`
#[utoipa::path(put, path = "/api/me/preferences", request_body = Preferences, security(("bearer" = [])),
    responses((status = 200, body = Preferences), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn set_preferences(
    State(st): State<ApiState>,
    caller: Caller,
    JsonBody(p): JsonBody<Preferences>,
) -> Result<Json<Preferences>, ApiError> {
    Ok(Json(portal(&st)?.service.set_preferences(&caller.0, p).await?))
}

/// `GET /api/search?q=`: visible comments matching the words, best first, highlighted.
#[utoipa::path(get, path = "/api/search", params(SearchQuery),
    responses((status = 200, body = SearchResults), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn search(
    State(st): State<ApiState>,
    QueryParams(q): QueryParams<SearchQuery>,
) -> Result<Json<SearchResults>, ApiError> {
    let index = portal(&st)?
        .search
        .clone()
        .ok_or_else(|| ApiError::Unavailable("search is not served by this process".into()))?;
    if q.q.chars().count() > 500 {
        return Err(ApiError::BadRequest("q: at most 500 characters".into()));
    }
    let (page, per_page) = (q.page.unwrap_or(1), q.per_page.unwrap_or(20));
    if !(1..=1000).contains(&page) || !(1..=100).contains(&per_page) {
        return Err(ApiError::BadRequest("page: 1-1000, per_page: 1-100".into()));
    }
    let found = tokio::task::spawn_blocking(move || index.search(&q.q, page, per_page))
        .await
        .map_err(|e| ApiError::Internal(format!("search task: {e}")))?;
    let found = found.map_err(|e| match e {
        horizons_search::SearchError::BadQuery { .. } => ApiError::BadRequest(e.to_string()),
        other => ApiError::Internal(other.to_string()),
    })?;
    Ok(Json(SearchResults {
        total: found.total,
        page: found.page,
        per_page: found.per_page,
        hits: found
            .hits
            .into_iter()
            .map(|h| SearchHit { id: h.id, post_id: h.post_id, author: h.author, score: h.score, snippet: h.snippet })
            .collect(),
    }))
}

/// `GET /api/events/schemas`: the JSON Schema of each event's `data`, with its version.
#[utoipa::path(get, path = "/api/events/schemas",
    responses((status = 200, description = "Event type → {version, data: JSON Schema}", body = Object)))]
pub async fn event_schemas() -> Json<serde_json::Value> {
    Json(horizons_comments::events::schemas())
}

/// The OpenAPI 3 document of these routes.
#[derive(OpenApi)]
#[openapi(
    info(title = "Cosmic Horizons portal API", description = "Posts, comments, moderation, notifications, search, jobs and the ngVLA archive's products."),
    paths(create_post, get_post, create_comment, list_comments, edit_comment, delete_comment, report_comment,
        moderation_queue, decide, notifications, mark_read, super::sse::stream, get_preferences, set_preferences, search, event_schemas,
        super::jobs::submit, super::jobs::list, super::jobs::get, super::jobs::cancel, super::jobs::retry, super::jobs::dlq,
        super::jobs::redrive, super::products::list, super::products::get, super::products::file),
    components(schemas(ErrorBody, NewPost, NewComment, EditComment, NewReport, Action, NewDecision, MarkRead, Created,
        Changed, SearchResults, SearchHit, Post, Comment, QueueEntry, Notification, Preferences,
        horizons_jobs::JobSpec, horizons_jobs::Job, horizons_jobs::JobState, horizons_jobs::model::Attempt,
        super::jobs::Submitted, super::jobs::JobDetail, super::jobs::Redrive, super::jobs::Redriven,
        horizons_comments::catalog::ProductRow, super::products::ProductFile, super::products::ProductDetail)),
    modifiers(&BearerAuth)
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// `GET /openapi.json`
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
