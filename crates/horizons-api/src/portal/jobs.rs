//! `/api/jobs`: submit, list with filters, get (with the attempt history), cancel, retry, the
//! dead set and its bulk redrive. Jobs are operations on the deployment, so every route needs
//! an `admin` token. The rules live in `horizons_jobs::store`; these handlers only translate.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use horizons_jobs::model::Attempt;
use horizons_jobs::{store, Job, JobSpec, JobState, JobsError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::extract::{JsonBody, PathParam, QueryParams};
use super::routes::{portal, ErrorBody};
use crate::error::ApiError;
use crate::state::ApiState;

impl From<JobsError> for ApiError {
    fn from(e: JobsError) -> Self {
        match e {
            JobsError::Invalid { .. } => ApiError::BadRequest(e.to_string()),
            JobsError::NotFound(_) => ApiError::Missing(e.to_string()),
            JobsError::State { .. } => ApiError::Conflict(e.to_string()),
            // The chain goes to the log in `into_response`, never to the client.
            other => ApiError::Internal(format!("{other:#}")),
        }
    }
}

/// A submitted job, and whether it is new (`false`: the idempotency key was used before and
/// this is the first job submitted with it).
#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    /// The job.
    pub job: Job,
    /// Whether this submission created it.
    pub created: bool,
}

/// A job with its attempts.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobDetail {
    /// The job.
    pub job: Job,
    /// Its attempts, in order.
    pub attempts: Vec<Attempt>,
}

/// Filters of a job listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this kind.
    #[param(min_length = 1, max_length = 100)]
    pub kind: Option<String>,
    /// At most this many, newest first (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Which dead jobs to run again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redrive {
    /// Only dead jobs of this kind; all if absent.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100)]
    pub kind: Option<String>,
}

/// How many jobs were queued again.
#[derive(Debug, Serialize, ToSchema)]
pub struct Redriven {
    /// Count.
    pub redriven: usize,
}

fn limit(l: Option<i64>) -> Result<i64, ApiError> {
    match l {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!("limit: {n} is outside 1-1000"))),
    }
}

/// `POST /api/jobs`
#[utoipa::path(post, path = "/api/jobs", request_body = JobSpec, security(("bearer" = [])),
    responses((status = 201, body = Submitted, description = "Queued"),
        (status = 200, body = Submitted, description = "The idempotency key was used before: the first job"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn submit(
    State(st): State<ApiState>,
    caller: Caller,
    JsonBody(spec): JsonBody<JobSpec>,
) -> Result<impl IntoResponse, ApiError> {
    let who = caller.admin("manage jobs")?;
    let p = portal(&st)?;
    let (job, created) = store::submit(p.service.store(), &p.jobs, &spec, &who.name).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(Submitted { job, created })))
}

/// `GET /api/jobs`
#[utoipa::path(get, path = "/api/jobs", params(JobsQuery), security(("bearer" = [])),
    responses((status = 200, body = [Job]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list(
    State(st): State<ApiState>,
    caller: Caller,
    QueryParams(q): QueryParams<JobsQuery>,
) -> Result<Json<Vec<Job>>, ApiError> {
    caller.admin("manage jobs")?;
    let p = portal(&st)?;
    Ok(Json(store::list(p.service.store(), q.state, q.kind.as_deref(), limit(q.limit)?).await?))
}

/// `GET /api/jobs/{id}`
#[utoipa::path(get, path = "/api/jobs/{id}", params(("id" = String, Path, description = "Job id")),
    security(("bearer" = [])),
    responses((status = 200, body = JobDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<JobDetail>, ApiError> {
    caller.admin("manage jobs")?;
    let s = portal(&st)?.service.store();
    let job = store::get(s, &id).await?;
    let attempts = store::attempts(s, &id).await?;
    Ok(Json(JobDetail { job, attempts }))
}

/// `POST /api/jobs/{id}/cancel`: a job that has not started (queued, or retrying between
/// attempts); 409 otherwise.
#[utoipa::path(post, path = "/api/jobs/{id}/cancel", params(("id" = String, Path, description = "Job id")),
    security(("bearer" = [])),
    responses((status = 200, body = Job), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<Job>, ApiError> {
    caller.admin("manage jobs")?;
    Ok(Json(store::cancel(portal(&st)?.service.store(), &id).await?))
}

/// `POST /api/jobs/{id}/retry`: a dead or cancelled job runs again with fresh attempts; 409
/// otherwise.
#[utoipa::path(post, path = "/api/jobs/{id}/retry", params(("id" = String, Path, description = "Job id")),
    security(("bearer" = [])),
    responses((status = 200, body = Job), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn retry(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<Job>, ApiError> {
    caller.admin("manage jobs")?;
    Ok(Json(store::retry(portal(&st)?.service.store(), &id).await?))
}

/// Filters of the dead set.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DlqQuery {
    /// Only jobs of this kind.
    #[param(min_length = 1, max_length = 100)]
    pub kind: Option<String>,
    /// At most this many, newest first (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// `GET /api/jobs/dlq`: dead jobs, newest first.
#[utoipa::path(get, path = "/api/jobs/dlq", params(DlqQuery), security(("bearer" = [])),
    responses((status = 200, body = [Job]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn dlq(
    State(st): State<ApiState>,
    caller: Caller,
    QueryParams(q): QueryParams<DlqQuery>,
) -> Result<Json<Vec<Job>>, ApiError> {
    caller.admin("manage jobs")?;
    let s = portal(&st)?.service.store();
    Ok(Json(store::list(s, Some(JobState::Dead), q.kind.as_deref(), limit(q.limit)?).await?))
}

/// `POST /api/jobs/dlq/redrive`: every dead job (of a kind) runs again.
#[utoipa::path(post, path = "/api/jobs/dlq/redrive", request_body = Redrive, security(("bearer" = [])),
    responses((status = 200, body = Redriven), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody)))]
pub async fn redrive(
    State(st): State<ApiState>,
    caller: Caller,
    JsonBody(r): JsonBody<Redrive>,
) -> Result<Json<Redriven>, ApiError> {
    caller.admin("manage jobs")?;
    let n = store::redrive(portal(&st)?.service.store(), r.kind.as_deref()).await?;
    Ok(Json(Redriven { redriven: n }))
}
