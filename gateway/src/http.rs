//! The HTTP side: upgrade admission at `/ws`, health, readiness, metrics and
//! the operators' `/admin/*` endpoints, all on one listener.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};
use std::time::Duration;

use axum::{
    Json, Router,
    extract::{ConnectInfo, Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use dialtone_proto::ErrorCode;
use dialtone_store::bus::Bus;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use regulator::Regulator;
use serde::Deserialize;
use serde_json::{Value, json};
use supervisor::{ChildSpec, DynamicSupervisor, Faults, Restart};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
    },
};

use crate::{
    admission,
    coalesce::Coalesce,
    config::GatewayConfig,
    conn,
    drain::{Drain, Phase},
    keepalive::Keepalive,
    lag::DeliveryLag,
    listener::Peer,
    quiet::Quiet,
    telemetry,
};

/// What the node exposes to operators; the gateway only routes to it.
pub trait Admin: Send + Sync + 'static {
    /// `GET /admin/tree`.
    fn tree(&self) -> Value;
    /// `POST /admin/fault` (only with `admin.fault_injection`): arm a panic point.
    ///
    /// # Errors
    /// The reason the body was refused.
    fn fault(&self, body: Value) -> Result<Value, String>;
    /// Whether required backends are reachable (readiness).
    fn backends_ready(&self) -> bool {
        true
    }
}

/// Shared state of the gateway role.
pub struct Gateway {
    pub cfg: GatewayConfig,
    pub bus: Arc<dyn Bus>,
    pub drain: Arc<Drain>,
    pub keepalive: Keepalive,
    /// The pool every connection task runs in (temporary children).
    pub connections: DynamicSupervisor,
    /// Fan-out backlog signal, sampled by the regulator as `delivery_lag`.
    pub delivery_lag: Arc<DeliveryLag>,
    /// Named panic points for drills; checked only with `fault_injection` on.
    pub faults: Faults,
    /// Admission queues in front of every expensive path; retuned live.
    pub regulator: Regulator,
    admin: Arc<dyn Admin>,
    metrics: PrometheusHandle,
    next_conn: AtomicU64,
}

impl Gateway {
    pub fn new(
        cfg: GatewayConfig,
        bus: Arc<dyn Bus>,
        regulator: Regulator,
        admin: Arc<dyn Admin>,
        faults: Faults,
        connections: DynamicSupervisor,
    ) -> Arc<Self> {
        Arc::new(Gateway {
            connections,
            regulator,
            cfg,
            bus,
            drain: Arc::new(Drain::default()),
            keepalive: Keepalive::default(),
            delivery_lag: Arc::default(),
            faults,
            admin,
            metrics: telemetry::prometheus(),
            next_conn: AtomicU64::new(1),
        })
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub fn metrics(&self) -> &PrometheusHandle {
        &self.metrics
    }
}

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/ws", get(ws))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/regulator", get(admin_regulator))
        .route("/admin/regulator/queues/{name}", put(admin_retune))
        .route("/admin/tree", get(admin_tree))
        .route("/admin/fault", post(admin_fault))
        .with_state(gw)
}

fn unavailable(retry_after_secs: u64, why: &'static str) -> Response {
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs.max(1)),
    );
    r
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// The `Sec-WebSocket-Accept` value for a well-formed upgrade request.
fn upgrade_accept(headers: &HeaderMap) -> Option<String> {
    let has = |name, token: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has(header::UPGRADE, "websocket")
        || !has(header::CONNECTION, "upgrade")
        || !has(header::SEC_WEBSOCKET_VERSION, "13")
    {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    Some(derive_accept_key(key.as_bytes()))
}

/// The upgrade is done by hand (not axum's `WebSocketUpgrade`) so that the
/// socket can sit on the coalescing writer (see [`crate::coalesce`]).
async fn ws(
    State(gw): State<Arc<Gateway>>,
    Query(query): Query<TokenQuery>,
    req: Request,
) -> Response {
    let refuse = |why| {
        metrics::counter!(telemetry::UPGRADES_REFUSED, "reason" => why).increment(1);
    };
    // The peer (absent when the router is served without
    // `listener::Accept`): its address keys the connect queue's per-IP
    // rate, and its socket lets a hold keep it quiet.
    let peer = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|info| info.0);
    let quiet = Quiet::new(peer.map(|p| p.fd));
    let Some(accept) = upgrade_accept(req.headers()) else {
        return (StatusCode::BAD_REQUEST, "expected a WebSocket upgrade").into_response();
    };
    if gw.drain.phase() != Phase::Running {
        refuse("draining");
        return unavailable(gw.cfg.drain_retry_after.as_secs(), "node draining");
    }
    if gw.drain.open_connections() >= gw.cfg.max_connections {
        refuse("max_connections");
        return unavailable(1, "connection limit reached");
    }
    let token = bearer(req.headers()).map(str::to_owned).or(query.token);
    let user = match token.as_deref().map(|t| gw.bus.verify_token(t)) {
        None => None,
        Some(Ok(user)) => Some(user),
        Some(Err(f)) => {
            refuse("unauthorized");
            return (StatusCode::UNAUTHORIZED, f.message).into_response();
        }
    };
    let ask = peer.map_or_else(regulator::Request::new, |p| {
        regulator::Request::new().str_key(&p.addr.ip().to_string())
    });
    let permit = match gw.regulator.ask(admission::CONNECT, ask).await {
        Ok(p) => p,
        Err(rejected) => {
            // What every queue's rejection means (`rate_limited` for an
            // address over its own rate), as a status instead of a frame.
            let f = admission::failure(admission::CONNECT, &rejected);
            refuse(f.code.as_str());
            // Retry-After is in whole seconds: round up.
            let secs = f.retry_after_ms.unwrap_or(1).div_ceil(1000);
            let why = match f.code {
                ErrorCode::RateLimited => "too many upgrades from this address",
                _ => "connect queue full",
            };
            return unavailable(secs, why);
        }
    };
    let guard = gw.drain.opened();
    let max = gw.cfg.max_frame_bytes;
    let config = WebSocketConfig::default()
        .read_buffer_size(gw.cfg.read_buffer_bytes)
        // Frames go straight through to the coalescing writer, which batches
        // them until the connection task flushes and then frees its buffer;
        // tungstenite's own buffer would grow and never shrink.
        .write_buffer_size(0)
        .max_write_buffer_size(max.saturating_mul(4).max(256 * 1024))
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let upgrading = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrading.await else {
            return;
        };
        // The connect permit covers the upgrade itself, not the session.
        drop(permit);
        let io = Coalesce::new(TokioIo::new(upgraded));
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let pool = gw.connections.clone();
        // The connection runs as a temporary child of the gateway's
        // `connections` pool (ranch's conns_sup): supervised, never restarted.
        let once = std::sync::Mutex::new(Some((socket, quiet, gw, user, guard)));
        let spec = ChildSpec::worker("conn", Restart::Temporary, move |_ctx| {
            let taken = once
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            Box::pin(async move {
                if let Some((socket, quiet, gw, user, guard)) = taken {
                    conn::serve(socket, quiet, gw, user, guard).await;
                }
                Ok(())
            })
        })
        // A pool that stops (its gateway restarting) drops the connections
        // it still holds; a drain closes them properly first.
        .shutdown_grace(Duration::from_millis(100));
        if let Err(e) = pool.start_child(spec).await {
            // The pool is stopping or saturated: the socket is dropped, the
            // client sees the connection end and reconnects.
            tracing::warn!(error = ?e, "connection not started");
        }
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (
                header::SEC_WEBSOCKET_ACCEPT,
                HeaderValue::from_str(&accept).unwrap_or_else(|_| HeaderValue::from_static("")),
            ),
        ],
    )
        .into_response()
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.drain.phase() != Phase::Running {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else if !gw.admin.backends_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "backend unreachable").into_response()
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics.render(),
    )
        .into_response()
}

/// Why an admin request is refused.
enum Denied {
    /// No `admin.token` configured: the endpoints do not exist (404).
    Hidden,
    /// Missing or wrong bearer token (401).
    Unauthorized,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Hidden => StatusCode::NOT_FOUND.into_response(),
            Denied::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "admin token required"})),
            )
                .into_response(),
        }
    }
}

fn authorize(gw: &Gateway, headers: &HeaderMap) -> Result<(), Denied> {
    let Some(expected) = gw.cfg.admin_token.as_deref() else {
        return Err(Denied::Hidden);
    };
    match bearer(headers) {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(Denied::Unauthorized),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Applies a JSON request body: `200` with the answer, `400` with the reason.
fn apply_json(body: &[u8], apply: impl FnOnce(Value) -> Result<Value, String>) -> Response {
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    match parsed
        .map_err(|e| format!("body is not JSON: {e}"))
        .and_then(apply)
    {
        Ok(answer) => Json(answer).into_response(),
        Err(why) => (StatusCode::BAD_REQUEST, Json(json!({"error": why}))).into_response(),
    }
}

async fn admin_regulator(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    match authorize(&gw, &headers) {
        Ok(()) => Json(gw.regulator.snapshot()).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn admin_retune(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&gw, &headers) {
        return r.into_response();
    }
    apply_json(&body, |v| {
        gw.regulator
            .retune_json(&name, v)
            .map_err(|e| e.to_string())
    })
}

async fn admin_tree(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    match authorize(&gw, &headers) {
        Ok(()) => Json(gw.admin.tree()).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn admin_fault(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&gw, &headers) {
        return r.into_response();
    }
    if !gw.cfg.fault_injection {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "fault injection is off (admin.fault_injection)"})),
        )
            .into_response();
    }
    apply_json(&body, |v| gw.admin.fault(v))
}
