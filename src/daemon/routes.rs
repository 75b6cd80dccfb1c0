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
use super::error::ApiError;
use super::socket::Peer;
use crate::rpc::api::{DoctorCheck, DoctorReport, Health, ImageSummary, VmSummary};

/// The daemon's HTTP surface.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/doctor", get(doctor))
        .route("/v1/vms", get(list_vms))
        .route("/v1/images", get(list_images))
        .route("/v1/daemon/shutdown", post(shutdown))
        .fallback(not_found)
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

async fn doctor() -> Json<DoctorReport> {
    Json(doctor_report().await)
}

/// Every host check, as the API reports it. The CLI calls this directly when
/// the daemon cannot start.
pub async fn doctor_report() -> DoctorReport {
    let checks = crate::system::host::doctor_checks(None)
        .await
        .into_iter()
        .map(|c| DoctorCheck {
            name: c.name,
            ok: c.ok,
            required: c.required,
            detail: c.detail,
            fix: c.fix,
        })
        .collect();
    DoctorReport { checks }
}

async fn list_vms(State(daemon): State<Arc<Daemon>>) -> Result<Json<Vec<VmSummary>>, ApiError> {
    let vms = daemon.store().list_vms()?;
    Ok(Json(
        vms.into_iter()
            .map(|vm| VmSummary {
                name: vm.name,
                state: vm.state.as_str().to_string(),
                image: vm.image,
                backend: vm.backend,
                vcpus: vm.vcpus,
                memory_mib: vm.memory_mib,
                ip: vm.ip,
                created_at: vm.created_at,
            })
            .collect(),
    ))
}

async fn list_images(
    State(daemon): State<Arc<Daemon>>,
) -> Result<Json<Vec<ImageSummary>>, ApiError> {
    let images = daemon.store().list_images()?;
    Ok(Json(
        images
            .into_iter()
            .map(|image| ImageSummary {
                name: image.name,
                rootfs: image.rootfs_path,
                size_bytes: image.size_bytes,
                created_at: image.created_at,
            })
            .collect(),
    ))
}

async fn shutdown(State(daemon): State<Arc<Daemon>>) -> Json<serde_json::Value> {
    tracing::info!("shutdown requested over the API");
    daemon.shutdown.notify_one();
    Json(serde_json::json!({ "stopping": true }))
}

async fn not_found(request: Request) -> ApiError {
    ApiError::message(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} {}",
            request.method(),
            request.uri().path()
        ),
    )
    .hint("the client and daemon may be different versions: `banger version`")
}
