//! The monitor's HTTP endpoint (axum), on a thread of its own so that it answers whatever
//! the application's runtime is doing.
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | Prometheus text (OpenMetrics when the `Accept` header asks for it) |
//! | `/stats` | JSON: every function's calls, hit ratios, latency quantiles, errors; tiers; pools; system |
//! | `/alerts` | JSON: the rules and every pending, firing or recently resolved alert |
//! | `/health` | JSON: `healthy`, `degraded` or `unhealthy` with reasons; 503 when unhealthy |
//! | `/history` | JSON: the history over a range (`?from=2h&to=1h&step=1m&fn=app::f`), or the last N evaluations (`?limit=N`) |
//! | `/dashboard` | HTML: the dashboard (functions, charts over the history, alerts, tiers, pools, tasks), refreshed every 2 s |
//! | `/rules` | YAML: the alert rules in force as a Prometheus rule file (group `optimize`) |
//! | `POST /invalidate` | invalidates a function (`{"fn": "app::f"}`), one call's entry (`{"fn": "app::f", "args": {"id": 7}}`) or a tag (`{"tag": "user:7"}`) in every tier of every instance |
//!
//! With a token configured, every path requires `Authorization: Bearer <token>` and answers
//! 401 without it. `/invalidate` is refused (403) when no token is configured: changing the
//! cache needs one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{export, HistoryQuery, HttpConfig, Monitor, MonitorError};

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

/// The largest `/invalidate` body accepted.
pub const INVALIDATE_BODY_LIMIT: usize = 64 * 1024;

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
        .route("/rules", get(rules))
        .route("/dashboard", get(dashboard))
        .route("/invalidate", post(invalidate))
        .layer(axum::extract::DefaultBodyLimit::max(INVALIDATE_BODY_LIMIT))
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

/// The cookie the dashboard's page reads with, set when it is opened with `?token=`.
const TOKEN_COOKIE: &str = "optimize_token";

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// `?token=` of the dashboard's address.
fn query_token(request: &axum::extract::Request) -> Option<String> {
    let Query(mut q) =
        Query::<std::collections::HashMap<String, String>>::try_from_uri(request.uri()).ok()?;
    q.remove("token")
}

/// With a token configured: the `Authorization: Bearer` header on every request; for reads
/// (GET), the dashboard's cookie instead; and `/dashboard?token=` once, answered with the
/// cookie and a redirect that takes the token out of the address. A write (`POST
/// /invalidate`) needs the header, so another site's page cannot make the browser send it.
async fn authorize(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let matches = |given: &str| same(given.as_bytes(), token.as_bytes());
    let headers = request.headers();
    let by_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(matches);
    let read = request.method() == axum::http::Method::GET;
    let by_cookie = read && cookie(headers, TOKEN_COOKIE).is_some_and(matches);
    if by_header || by_cookie {
        return next.run(request).await;
    }
    if read
        && request.uri().path() == "/dashboard"
        && query_token(&request).is_some_and(|t| matches(&t))
    {
        return (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/dashboard".to_owned()),
                (
                    header::SET_COOKIE,
                    format!("{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"),
                ),
            ],
        )
            .into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a bearer token is required (a browser: open /dashboard?token=<token>)\n",
    )
        .into_response()
}

/// The dashboard: one page, its script and styles inline, nothing fetched from elsewhere.
const DASHBOARD: &str = include_str!("dashboard.html");

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                 frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        DASHBOARD,
    )
        .into_response()
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

async fn rules(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
        super::alert::promfile::rule_file("optimize", &state.monitor.rules()),
    )
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
struct HistoryParams {
    limit: Option<usize>,
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
    #[serde(rename = "fn")]
    function: Option<String>,
}

/// A time given as milliseconds since the Unix epoch, or as how long ago (`90s`, `1h`,
/// `-1h`).
fn instant(name: &str, text: &str, now_unix_ms: u64) -> Result<u64, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_duration(text.trim_start_matches('-'))
        .map(|ago| now_unix_ms.saturating_sub(ago.as_millis() as u64))
        .map_err(|_| {
            format!("{name}={text:?}: expected milliseconds since the Unix epoch or how long ago, such as \"1h\"\n")
        })
}

fn history_query(p: &HistoryParams, now_unix_ms: u64) -> Result<HistoryQuery, String> {
    let step = match &p.step {
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                return Err(format!(
                    "step={text:?}: expected a duration such as \"1m\"\n"
                ))
            }
        },
        None => None,
    };
    Ok(HistoryQuery {
        from: p
            .from
            .as_deref()
            .map(|t| instant("from", t, now_unix_ms))
            .transpose()?,
        to: p
            .to
            .as_deref()
            .map(|t| instant("to", t, now_unix_ms))
            .transpose()?,
        step,
        function: p.function.clone(),
    })
}

async fn history(State(state): State<AppState>, Query(p): Query<HistoryParams>) -> Response {
    let monitor = state.monitor.clone();
    let answer = tokio::task::spawn_blocking(move || {
        Ok::<_, String>(match p.limit {
            Some(limit) => monitor.recent_history(limit, p.function.as_deref()),
            None => monitor.history(&history_query(&p, crate::time::unix_ms())?),
        })
    })
    .await;
    match answer {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(bad)) => (StatusCode::BAD_REQUEST, bad).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateRequest {
    #[serde(rename = "fn")]
    function: Option<String>,
    args: Option<serde_json::Value>,
    tag: Option<String>,
}

fn refuse(code: StatusCode, message: String) -> Response {
    (code, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn invalidate(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    if state.token.is_none() {
        return refuse(
            StatusCode::FORBIDDEN,
            "invalidation over HTTP needs a token: set monitor.token (docs/security.md)".into(),
        );
    }
    let request: InvalidateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"fn\": \"path\"}}, {{\"fn\": \"path\", \"args\": ...}} or {{\"tag\": \"name\"}}: {e}"),
            )
        }
    };
    let sources = &state.monitor.sources;
    match request {
        InvalidateRequest {
            tag: Some(tag),
            function: None,
            args: None,
        } => {
            if sources.registry.start_invalidate_tag(&sources.tiers, &tag) {
                sources.tiers.barrier().await;
            }
            Json(serde_json::json!({ "invalidated": "tag", "tag": tag })).into_response()
        }
        InvalidateRequest {
            function: Some(path),
            args,
            tag: None,
        } => {
            let Some(site) = sources.registry.site(&path) else {
                return refuse(
                    StatusCode::NOT_FOUND,
                    format!("no managed function is named `{path}` (GET /stats lists them)"),
                );
            };
            match args {
                None => {
                    site.invalidate_all_async().await;
                    Json(serde_json::json!({ "invalidated": "function", "fn": path }))
                        .into_response()
                }
                Some(args) => match site.key_from_json(&args) {
                    Ok(Some(key)) => {
                        let was_in_l1 = site.invalidate_async(key).await;
                        Json(serde_json::json!({
                            "invalidated": "key",
                            "fn": path,
                            "key": key.to_string(),
                            "was_in_l1": was_in_l1,
                        }))
                        .into_response()
                    }
                    Ok(None) => refuse(
                        StatusCode::BAD_REQUEST,
                        format!("these arguments give `{path}` no cache key"),
                    ),
                    Err(e) => refuse(StatusCode::BAD_REQUEST, format!("`{path}`: {e}")),
                },
            }
        }
        _ => refuse(
            StatusCode::BAD_REQUEST,
            "give either \"fn\" (with \"args\" for one call's entry) or \"tag\"".into(),
        ),
    }
}
