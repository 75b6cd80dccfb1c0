//! The `/v1` routes: each turns a request into a call on the services and
//! the answer into JSON. No VM logic lives here.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::Daemon;
use super::error::{ApiError, detached};
use super::socket::Peer;
use super::{exec_route, extract, image_routes, vm_routes};
use crate::rpc::api::{DoctorReport, Health, NetworkCleanup, NetworkStatus, VmAction};

/// The daemon's HTTP surface.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/doctor", get(doctor))
        .route("/v1/vms", get(vm_routes::list).post(vm_routes::create))
        .route(
            "/v1/vms/{name}",
            get(vm_routes::show).delete(vm_routes::delete),
        )
        .route("/v1/vms/{name}/start", post(vm_routes::start))
        .route("/v1/vms/{name}/stop", post(vm_routes::stop))
        .route("/v1/vms/{name}/restart", post(vm_routes::restart))
        .route(
            "/v1/vms/{name}/pause",
            post(|d, n| vm_routes::act(d, n, VmAction::Pause)),
        )
        .route(
            "/v1/vms/{name}/resume",
            post(|d, n| vm_routes::act(d, n, VmAction::Resume)),
        )
        .route(
            "/v1/vms/{name}/suspend",
            post(|d, n| vm_routes::act(d, n, VmAction::Suspend)),
        )
        .route(
            "/v1/vms/{name}/clone",
            post(|d, n, r| vm_routes::copy(d, n, r, false)),
        )
        .route(
            "/v1/vms/{name}/fork",
            post(|d, n, r| vm_routes::copy(d, n, r, true)),
        )
        .route("/v1/vms/{name}/export", post(vm_routes::export))
        .route(
            "/v1/vms/{name}/publish",
            post(|d, n, r| vm_routes::change_port(d, n, r, true)),
        )
        .route(
            "/v1/vms/{name}/unpublish",
            post(|d, n, r| vm_routes::change_port(d, n, r, false)),
        )
        .route("/v1/vms/{name}/stats", get(vm_routes::stats))
        .route("/v1/vms/{name}/exec", post(exec_route::exec))
        .route("/v1/vms/{name}/clock", post(vm_routes::clock))
        .route("/v1/vms/{name}/identity", post(vm_routes::identity))
        .route("/v1/stats", get(vm_routes::all_stats))
        .route("/v1/defaults", get(vm_routes::defaults))
        .route(
            "/v1/images",
            get(image_routes::list).post(image_routes::import),
        )
        .route(
            "/v1/images/{name}",
            get(image_routes::show).delete(image_routes::delete),
        )
        .route("/v1/images/{name}/warm", post(image_routes::warm))
        .route("/v1/images/{name}/export", post(image_routes::export))
        .route("/v1/images/{name}/push", post(image_routes::push))
        .route("/v1/builds", post(image_routes::build))
        .route("/v1/pulls", post(image_routes::pull))
        .route("/v1/network", get(network_status))
        .route("/v1/network/cleanup", post(network_cleanup))
        .route("/v1/daemon/shutdown", post(shutdown))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(extract::buffer_body))
        // Outermost: another user's request is refused before its body is read.
        .layer(middleware::from_fn_with_state(
            daemon.clone(),
            only_our_user,
        ))
        .with_state(daemon)
}

/// Refuses every connection from a uid other than the daemon's own.
async fn only_our_user(
    State(daemon): State<Arc<Daemon>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if peer.uid == Some(daemon.uid) {
        return Ok(next.run(request).await);
    }
    let who = peer
        .uid
        .map_or_else(|| "an unknown uid".to_string(), |u| format!("uid {u}"));
    tracing::warn!(peer = ?peer.uid, "refused connection from another user");
    Err(ApiError::message(
        StatusCode::FORBIDDEN,
        format!(
            "bangerd refused a connection from {who}: it serves only uid {}",
            daemon.uid
        ),
    )
    .hint("run banger as the user that owns the daemon; each user has their own"))
}

async fn health(State(daemon): State<Arc<Daemon>>) -> Json<Health> {
    Json(Health {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        uid: daemon.uid,
        uptime_secs: daemon.started.elapsed().as_secs(),
        socket: daemon.paths.socket(),
        state_dir: daemon.paths.state_dir.clone(),
        log: daemon.paths.daemon_log(),
    })
}

async fn doctor(State(daemon): State<Arc<Daemon>>) -> Json<DoctorReport> {
    Json(crate::doctor::report(&daemon.vms.config, &daemon.paths).await)
}

async fn network_status(
    State(daemon): State<Arc<Daemon>>,
) -> Result<Json<NetworkStatus>, ApiError> {
    Ok(Json(daemon.network.status().await?))
}

async fn network_cleanup(
    State(daemon): State<Arc<Daemon>>,
) -> Result<Json<NetworkCleanup>, ApiError> {
    let network = daemon.network.clone();
    detached(async move { network.cleanup().await }).await
}

async fn shutdown(State(daemon): State<Arc<Daemon>>) -> Json<serde_json::Value> {
    tracing::info!("shutdown requested over the API");
    daemon.shutdown.notify_one();
    Json(serde_json::json!({ "stopping": true }))
}

async fn not_found(request: Request) -> ApiError {
    no_route(
        StatusCode::NOT_FOUND,
        "no such endpoint: {method} {path}",
        &request,
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    let template = "{method} is not allowed on {path}";
    no_route(StatusCode::METHOD_NOT_ALLOWED, template, &request)
}

/// A request no route takes, told with its method and path (clipped).
fn no_route(status: StatusCode, template: &str, request: &Request) -> ApiError {
    let message = template
        .replace("{method}", &extract::clip(request.method().as_str()))
        .replace("{path}", &extract::clip(request.uri().path()));
    ApiError::message(status, message)
        .hint("the client and daemon may be different versions: `banger version`")
}
