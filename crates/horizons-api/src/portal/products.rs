//! `/api/products`: the ngVLA archive's science-ready products (SRDP) as the portal serves them —
//! the catalog rows the archive stage writes (`horizons_comments::catalog`), and each run's
//! pre-rendered files (FITS images, the PNG quick-look, the JSON reports) from its products
//! directory. Reads are public, like posts.
//!
//! A file is served only if its name is one of the regular files listed in the run's products
//! directory, compared as a whole name: no path built from the request ever reaches the file
//! system, so `..` or `/` in a name is simply not found.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use horizons_comments::catalog::{self, ProductRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{PathParam, QueryParams};
use super::routes::{portal, ErrorBody};
use crate::error::ApiError;
use crate::state::ApiState;

/// Filters and page of a product listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProductsQuery {
    /// Only runs of this observation.
    #[param(min_length = 1, max_length = 300)]
    pub observation: Option<String>,
    /// At most this many, newest first (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Skip this many (default 0).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

/// One file of a run's products.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductFile {
    /// File name, as used in `/api/products/{run}/files/{name}`.
    pub name: String,
    /// Size, bytes.
    pub bytes: u64,
    /// The content type it is served with.
    pub content_type: String,
}

/// A run's catalog row and its files.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductDetail {
    /// The catalog row.
    pub product: ProductRow,
    /// The files, by name.
    pub files: Vec<ProductFile>,
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("png") => "image/png",
        Some("fits") => "application/fits",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// The regular files of a products directory, by name.
async fn files_of(row: &ProductRow) -> Result<Vec<ProductFile>, ApiError> {
    let dir = std::path::PathBuf::from(&row.products_dir);
    let run = row.run.clone();
    tokio::task::spawn_blocking(move || {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| ApiError::Internal(format!("listing the products of run {run} in {}: {e}", dir.display())))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ApiError::Internal(format!("listing {}: {e}", dir.display())))?;
            let meta = entry.metadata().map_err(|e| ApiError::Internal(format!("reading {:?}: {e}", entry.path())))?;
            // Symbolic links and directories are not products.
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let content_type = content_type(&name).to_string();
                files.push(ProductFile { name, bytes: meta.len(), content_type });
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("listing products: {e}")))?
}

/// The catalog row of `run`. Run ids are UUIDs: anything else (NUL bytes included, which
/// PostgreSQL refuses in text) is not looked up, just not found.
async fn row(st: &ApiState, run: &str) -> Result<ProductRow, ApiError> {
    let plausible = !run.is_empty() && run.len() <= 100 && run.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !plausible {
        return Err(ApiError::Missing(format!("product {run:?} not found")));
    }
    Ok(catalog::get(portal(st)?.service.store(), run).await?)
}

fn limit(l: Option<i64>) -> Result<i64, ApiError> {
    match l {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!("limit: {n} is outside 1-1000"))),
    }
}

/// `GET /api/products`
#[utoipa::path(get, path = "/api/products", operation_id = "list_products", params(ProductsQuery),
    responses((status = 200, body = [ProductRow], description = "Catalog rows, newest first"),
        (status = 400, body = ErrorBody)))]
pub async fn list(
    State(st): State<ApiState>,
    QueryParams(q): QueryParams<ProductsQuery>,
) -> Result<Json<Vec<ProductRow>>, ApiError> {
    let offset = match q.offset {
        None => 0,
        Some(n) if n >= 0 => n,
        Some(n) => return Err(ApiError::BadRequest(format!("offset: {n} is negative"))),
    };
    let observation = q.observation.as_deref().filter(|o| !o.is_empty());
    let store = portal(&st)?.service.store();
    Ok(Json(catalog::list(store, observation, limit(q.limit)?, offset).await?))
}

/// `GET /api/products/{run}`
#[utoipa::path(get, path = "/api/products/{run}", operation_id = "get_product", params(("run" = String, Path, description = "Run id")),
    responses((status = 200, body = ProductDetail), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<ApiState>,
    PathParam(run): PathParam<String>,
) -> Result<Json<ProductDetail>, ApiError> {
    let product = row(&st, &run).await?;
    let files = files_of(&product).await?;
    Ok(Json(ProductDetail { product, files }))
}

/// `GET /api/products/{run}/files/{name}`
#[utoipa::path(get, path = "/api/products/{run}/files/{name}", operation_id = "get_product_file",
    params(("run" = String, Path, description = "Run id"),
        ("name" = String, Path, description = "File name, as listed by `GET /api/products/{run}`")),
    responses((status = 200, description = "The file",
            content(("image/png"), ("application/fits"), ("application/json"), ("application/octet-stream"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn file(
    State(st): State<ApiState>,
    PathParam((run, name)): PathParam<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let product = row(&st, &run).await?;
    let files = files_of(&product).await?;
    let Some(f) = files.into_iter().find(|f| f.name == name) else {
        return Err(ApiError::Missing(format!("run {run} has no product file {name:?}")));
    };
    let path = std::path::Path::new(&product.products_dir).join(&f.name);
    let bytes =
        tokio::fs::read(&path).await.map_err(|e| ApiError::Internal(format!("reading {}: {e}", path.display())))?;
    Ok(([(header::CONTENT_TYPE, f.content_type)], bytes))
}
