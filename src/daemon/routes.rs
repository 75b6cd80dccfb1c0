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
use super::{extract, image_routes, vm_routes};
use crate::bundle::Bundle;
use crate::config::{Config, VmmChoice};
use crate::net::grant::Policy;
use crate::paths::Paths;
use crate::rpc::api::{DoctorCheck, DoctorReport, Health, NetworkCleanup, NetworkStatus};
use crate::system::netadmin::NetAdmin;

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
        .route("/v1/vms/{name}/clone", post(vm_routes::clone))
        .route("/v1/vms/{name}/publish", post(vm_routes::publish))
        .route("/v1/vms/{name}/unpublish", post(vm_routes::unpublish))
        .route("/v1/vms/{name}/stats", get(vm_routes::stats))
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
        .route("/v1/builds", post(image_routes::build))
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
    Json(doctor_report(&daemon.vms.config, &daemon.paths).await)
}

/// Every host check, then the runtime bundle and which VMM `auto` picks
/// here and why. The CLI calls this directly when the daemon cannot start.
pub async fn doctor_report(config: &Config, paths: &Paths) -> DoctorReport {
    let mut checks: Vec<DoctorCheck> = crate::system::host::doctor_checks(None)
        .await
        .into_iter()
        .map(from_host_check)
        .collect();
    checks.push(from_host_check(
        crate::system::host::grant_check(&netadmin(config, paths), helper_source().as_deref())
            .await,
    ));
    let bundle = Bundle::locate(config.runtime_dir.as_deref(), &paths.data_dir);
    checks.push(match &bundle {
        Ok(b) => DoctorCheck {
            name: "runtime bundle".into(),
            ok: true,
            required: true,
            detail: format!(
                "{} (kernel {})",
                b.dir.display(),
                b.kernel_version.as_deref().unwrap_or("unknown")
            ),
            fix: None,
            ..Default::default()
        },
        Err(e) => DoctorCheck {
            name: "runtime bundle".into(),
            ok: false,
            required: true,
            detail: e.to_string(),
            fix: Some("`make runtime-debian` builds one from Debian's packages".into()),
            ..Default::default()
        },
    });
    if let Ok(b) = &bundle {
        let (mode, why) = b.root_mode();
        let layered = mode == crate::store::RootMode::Layered;
        checks.push(DoctorCheck {
            name: "VM root disks".into(),
            ok: layered,
            // Clone mode works; it only costs time and space per VM.
            required: false,
            detail: format!("{}: {why}", mode.as_str()),
            fix: (!layered).then(|| {
                "`make runtime-debian` rebuilds the initrd so VMs share their image read-only"
                    .into()
            }),
            ..Default::default()
        });
    }
    let gateway = config
        .network
        .subnet
        .split('/')
        .next()
        .unwrap_or("172.30.0.1");
    let resolved = std::path::Path::new("/run/systemd/resolve").is_dir();
    checks.push(DoctorCheck {
        name: ".vm names on the host".into(),
        ok: resolved,
        required: false,
        detail: if resolved {
            format!("systemd-resolved: banger routes ~vm to {gateway} on {}", config.network.bridge)
        } else {
            "no systemd-resolved: the host does not send .vm queries to banger by itself".into()
        },
        fix: (!resolved).then(|| {
            format!("send the vm domain to {gateway}: dnsmasq `server=/vm/{gateway}`, or query it directly (`dig @{gateway} NAME.vm`); guests resolve .vm already")
        }),
        ..Default::default()
    });
    let (backend, why) = crate::vm::describe_host(config, bundle.as_ref().ok());
    let chosen = match config.vmm {
        VmmChoice::Auto => format!("auto -> {}: {why}", backend.name()),
        other => format!(
            "{other:?} (set in config.toml); auto would pick {}: {why}",
            backend.name()
        )
        .to_lowercase(),
    };
    checks.push(DoctorCheck {
        name: "vmm".into(),
        ok: true,
        required: false,
        detail: chosen,
        fix: None,
        ..Default::default()
    });
    // The VMMs this config starts: the chosen backend, else auto's pick.
    let configured = match config.vmm {
        VmmChoice::Auto => backend,
        VmmChoice::Firecracker => crate::vm::Backend::Firecracker,
        VmmChoice::Qemu => crate::vm::Backend::Qemu,
    };
    let (isolated, who) = crate::vm::describe_vmm_user(configured, config);
    checks.push(DoctorCheck {
        name: "vmm user".into(),
        ok: isolated,
        required: false,
        detail: who,
        fix: (!isolated).then(|| {
            "let a group open /dev/kvm (udev: `chgrp kvm /dev/kvm; chmod 0660 /dev/kvm`) and make /dev/net/tun 0666".into()
        }),
        ..Default::default()
    });
    DoctorReport { checks }
}

fn from_host_check(c: crate::system::host::HostCheck) -> DoctorCheck {
    DoctorCheck {
        name: c.name,
        ok: c.ok,
        required: c.required,
        detail: c.detail,
        fix: c.fix,
        grant: c.grant,
    }
}

/// The network administrator for `config` (the daemon's own, or one made
/// for the check when the daemon cannot start).
fn netadmin(config: &Config, paths: &Paths) -> NetAdmin {
    let policy = Policy::new(
        &config.network.bridge,
        &config.network.subnet,
        &config.network.nat_table,
    )
    .unwrap_or_else(|e| {
        tracing::warn!(error = %e, config = %paths.config_file().display(), "bad network settings; doctor checks the defaults");
        let d = crate::config::NetworkConfig::default();
        Policy::new(&d.bridge, &d.subnet, &d.nat_table).expect("the default network is valid")
    });
    NetAdmin::new(policy, config.helper.as_deref())
}

/// The helper built with this binary: what an administrator installs.
fn helper_source() -> Option<std::path::PathBuf> {
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    Some(exe.parent()?.join("banger-helper")).filter(|p| p.is_file())
}

async fn network_status(
    State(daemon): State<Arc<Daemon>>,
) -> Result<Json<NetworkStatus>, ApiError> {
    Ok(Json(daemon.vms.network_status().await?))
}

async fn network_cleanup(
    State(daemon): State<Arc<Daemon>>,
) -> Result<Json<NetworkCleanup>, ApiError> {
    let vms = daemon.vms.clone();
    detached(async move { vms.network_cleanup().await }).await
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
            extract::clip(request.method().as_str()),
            extract::clip(request.uri().path())
        ),
    )
    .hint("the client and daemon may be different versions: `banger version`")
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::message(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}",
            extract::clip(request.method().as_str()),
            extract::clip(request.uri().path())
        ),
    )
    .hint("the client and daemon may be different versions: `banger version`")
}
