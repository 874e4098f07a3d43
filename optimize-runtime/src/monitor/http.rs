//! The monitor's HTTP endpoint (axum), on a thread of its own so that it answers whatever
//! the application's runtime is doing.
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | Prometheus text (OpenMetrics when the `Accept` header asks for it) |
//! | `/stats` | JSON: every function's calls, hit ratios, latency quantiles, errors; tiers; pools; system |
//! | `/alerts` | JSON: the rules and every pending, firing or recently resolved alert |
//! | `/health` | JSON: `healthy`, `degraded` or `unhealthy` with reasons; 503 when unhealthy |
//! | `/history` | JSON: recent `/stats` entries, one per evaluation (`?limit=N` for the last N) |
//!
//! With a token configured, every path requires `Authorization: Bearer <token>` and answers
//! 401 without it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::{export, HttpConfig, Monitor, MonitorError};

#[derive(Clone)]
struct AppState {
    monitor: Arc<Monitor>,
    token: Option<Arc<str>>,
}

/// Binds `config.addr` now (so a taken port is reported at start-up) and serves on a thread
/// of its own. Returns the bound address.
pub(crate) fn serve(monitor: Arc<Monitor>, config: HttpConfig) -> Result<SocketAddr, MonitorError> {
    let bind_error = |source| MonitorError::Bind {
        addr: config.addr,
        source,
    };
    let listener = std::net::TcpListener::bind(config.addr).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    let state = AppState {
        monitor,
        token: config.token.map(Into::into),
    };
    super::spawn_on_own_runtime("optimize-http", "the monitor's HTTP endpoint", move || async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "optimize: the monitor's HTTP endpoint cannot start");
                return;
            }
        };
        accept_bounded(listener, router(state)).await;
    })
        .map_err(bind_error)?;
    tracing::info!(%addr, "optimize: monitor HTTP endpoint listening");
    Ok(addr)
}

/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// A request's headers must arrive within this long (slow-header clients are dropped).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection stays open, idle or not.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serves `app` on `listener` with bounded connections, a header timeout and a lifetime cap,
/// so slow or idle clients cannot hold the endpoint (or the process's file descriptors).
async fn accept_bounded(listener: tokio::net::TcpListener, app: Router) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: back off instead of spinning.
                tracing::warn!(error = %e, "optimize: the monitor's HTTP endpoint cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper_util::service::TowerToHyperService::new(app);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .route("/alerts", get(alerts))
        .route("/health", get(health))
        .route("/history", get(history))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorize(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let monitor = state.monitor.clone();
    let snapshot = Arc::new(
        tokio::task::spawn_blocking(move || monitor.snapshot())
            .await
            .unwrap_or_default(),
    );
    if wants_openmetrics {
        (
            [(header::CONTENT_TYPE, export::OPENMETRICS_CONTENT_TYPE)],
            export::openmetrics_text(snapshot),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, export::PROMETHEUS_CONTENT_TYPE)],
            export::prometheus_text(snapshot),
        )
            .into_response()
    }
}

async fn stats(State(state): State<AppState>) -> Response {
    Json(state.monitor.stats()).into_response()
}

async fn alerts(State(state): State<AppState>) -> Response {
    Json(serde_json::json!({
        "rules": state.monitor.rules(),
        "alerts": state.monitor.alerts(),
    }))
    .into_response()
}

async fn health(State(state): State<AppState>) -> Response {
    let health = state.monitor.health();
    let code = match health.status {
        super::HealthStatus::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    (code, Json(health)).into_response()
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(State(state): State<AppState>, Query(q): Query<HistoryQuery>) -> Response {
    let mut entries = state.monitor.history();
    if let Some(limit) = q.limit {
        let skip = entries.len().saturating_sub(limit);
        entries.drain(..skip);
    }
    Json(entries).into_response()
}
