//! Router tests through `oneshot`, on a real embedded bus in a temporary directory.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use horizons_bus::Backend;
use horizons_embedded::{EmbeddedBus, EmbeddedConfig};
use metrics_exporter_prometheus::PrometheusBuilder;
use tower::ServiceExt;

use crate::{router, ApiState};

async fn get(state: &ApiState, path: &str) -> (StatusCode, String, serde_json::Value) {
    request(state, Request::get(path).body(Body::empty()).unwrap()).await
}

async fn request(state: &ApiState, req: Request<Body>) -> (StatusCode, String, serde_json::Value) {
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, ctype, json)
}

fn state(dir: &tempfile::TempDir) -> (Arc<dyn Backend>, ApiState) {
    let bus: Arc<dyn Backend> = Arc::new(EmbeddedBus::open(EmbeddedConfig::in_dir(dir.path())).unwrap());
    let prometheus = PrometheusBuilder::new().build_recorder().handle();
    let mut st = ApiState::new(bus.clone(), Some(prometheus));
    st.probe_timeout = Duration::from_millis(200);
    (bus, st)
}

#[tokio::test]
async fn healthz_reports_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, st) = state(&dir);
    let (status, _, body) = get(&st, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"status": "ok", "backend": "embedded"}));
    bus.close().await.unwrap();
}

#[tokio::test]
async fn healthz_is_503_once_the_bus_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, st) = state(&dir);
    bus.close().await.unwrap();
    let (status, _, body) = get(&st, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["error"].as_str().unwrap().contains("unavailable"), "{body}");

    st.bus_closing.cancel();
    let (status, _, _) = get(&st, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, st) = state(&dir);
    let (status, ctype, body) = get(&st, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(ctype.starts_with("application/json"), "{ctype}");
    assert_eq!(body, serde_json::json!({"error": "no route for /nope"}));

    let (status, _, body) = request(&st, Request::post("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body, serde_json::json!({"error": "method POST not allowed on /healthz"}));
    bus.close().await.unwrap();
}

#[tokio::test]
async fn metrics_is_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, st) = state(&dir);
    let (status, ctype, _) = get(&st, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");

    let no_recorder = ApiState { prometheus: None, ..st };
    let (status, _, body) = get(&no_recorder, "/metrics").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, serde_json::json!({"error": "internal server error"}));
    bus.close().await.unwrap();
}
