//! HTTP monitoring: nats-server's JSON endpoints, Prometheus metrics, and a live page.
//!
//! Everything here reads state the message path already keeps (atomics, per-connection
//! counters, the subject tries); nothing takes a lock a publisher holds for more than a copy.
//! Endpoints: `/varz`, `/connz`, `/subsz`, `/healthz`, `/routez`, `/leafz`, `/accountz` with
//! nats-server's field names, `/metrics` in the Prometheus text format, and `/` (a page that
//! charts message rates and lists connections, refreshed live).

mod accountz;
mod json;
mod jsz;
mod metrics;
pub mod system;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::jetstream::JetStream;
use crate::state::StateView;

pub(crate) use crate::format::civil;
pub use crate::format::{go_duration, rfc3339, uptime};

/// The live page, self-contained: no scripts or styles from elsewhere.
const PAGE: &str = include_str!("page.html");

/// Serves monitoring on `listener` until the server shuts down.
pub async fn serve(state: StateView, jetstream: Option<Arc<JetStream>>, listener: TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        info!("Starting http monitor on http://{addr}");
    }
    let shutdown = state.clone();
    let sampler = Arc::new(json::CpuSampler::default());
    let app = Router::new()
        .route("/", get(page))
        .route("/varz", get(varz))
        .route("/connz", get(connz))
        .route("/subsz", get(subsz))
        .route("/subscriptionsz", get(subsz))
        .route("/healthz", get(healthz))
        .route("/routez", get(routez))
        .route("/leafz", get(leafz))
        .route("/accountz", get(accountz))
        .route("/jsz", get(jsz))
        .route("/metrics", get(metrics))
        .with_state(Monitor { state, jetstream, sampler });
    let result = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.shutdown().await }).await;
    if let Err(e) = result {
        warn!("http monitor stopped: {e}");
    }
}

/// What the handlers share.
#[derive(Clone)]
struct Monitor {
    state: StateView,
    jetstream: Option<Arc<JetStream>>,
    sampler: Arc<json::CpuSampler>,
}

type Params = Query<HashMap<String, String>>;

/// A JSON body as nats-server sends it: pretty-printed, with the CORS header.
fn json_response<T: serde::Serialize>(body: &T) -> Response {
    match serde_json::to_string_pretty(body) {
        Ok(text) => with_headers(text, "application/json"),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn with_headers(body: String, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn varz(State(m): State<Monitor>) -> Response {
    json_response(&json::varz(&m.state, &m.sampler, m.jetstream.as_deref()))
}

async fn connz(State(m): State<Monitor>, Query(params): Params) -> Response {
    match json::ConnzQuery::parse(&params) {
        Ok(q) => json_response(&json::connz(&m.state, &q)),
        Err(e) => bad_request(e),
    }
}

async fn subsz(State(m): State<Monitor>, Query(params): Params) -> Response {
    match json::SubszQuery::parse(&params) {
        Ok(q) => json_response(&json::subsz(&m.state, &q)),
        Err(e) => bad_request(e),
    }
}

async fn healthz() -> Response {
    with_headers("{\"status\":\"ok\"}".to_string(), "application/json")
}

async fn routez(State(m): State<Monitor>, Query(params): Params) -> Response {
    json_response(&json::routez(&m.state, params.get("subs").map(String::as_str)))
}

async fn leafz(State(m): State<Monitor>, Query(params): Params) -> Response {
    let subs = params.get("subs").is_some_and(|s| s == "1" || s.eq_ignore_ascii_case("true"));
    json_response(&json::leafz(&m.state, subs, params.get("acc").map(String::as_str)))
}

async fn accountz(State(m): State<Monitor>, Query(params): Params) -> Response {
    match accountz::accountz(&m.state, m.jetstream.as_deref(), &params) {
        Ok(body) => json_response(&body),
        Err(e) => bad_request(e),
    }
}

async fn metrics(State(m): State<Monitor>) -> Response {
    with_headers(metrics::render(&m.state, m.jetstream.as_deref()), "text/plain; version=0.0.4")
}

async fn jsz(State(m): State<Monitor>, Query(params): Params) -> Response {
    json_response(&jsz::jsz(&m.state, m.jetstream.as_deref(), &jsz::JszQuery::parse(&params)))
}
