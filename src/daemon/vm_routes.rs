//! `/v1/vms`: each handler hands the request to the VM manager. Operations
//! that change a VM run in a task of their own, so a client hanging up
//! cannot leave one half done.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::Daemon;
use super::error::{ApiError, detached};
use super::extract::{BodyOrDefault, JsonBody, VmName};
use crate::rpc::api::{
    CloneVm, CreateDefaults, CreateVm, PublishPort, StartVm, StopVm, VmAction, VmDetails,
    VmOpResult, VmStats, VmSummary,
};

pub async fn list(State(daemon): State<Arc<Daemon>>) -> Result<Json<Vec<VmSummary>>, ApiError> {
    let vms = daemon.store().list_vms()?;
    Ok(Json(
        vms.into_iter()
            .map(|vm| VmSummary {
                dns_name: crate::vm::dns_name(&vm.name),
                root_mode: vm.root_mode,
                disks: daemon.vms.disk_usage(&vm),
                published: daemon.vms.published(&vm),
                ip: vm.ip(),
                name: vm.name,
                state: vm.state,
                image: vm.image,
                vmm: vm.vmm,
                vcpus: vm.vcpus,
                memory_mib: vm.memory_mib,
                created_at: vm.created_at,
                role: vm.role,
            })
            .collect(),
    ))
}

pub async fn create(
    State(daemon): State<Arc<Daemon>>,
    JsonBody(req): JsonBody<CreateVm>,
) -> Result<Json<VmOpResult>, ApiError> {
    let vms = daemon.vms.clone();
    detached(async move { vms.create(req).await }).await
}

pub async fn show(
    State(daemon): State<Arc<Daemon>>,
    VmName(name): VmName,
) -> Result<Json<VmDetails>, ApiError> {
    let vm = daemon.vms.get(&name)?;
    if vm.state.is_running() {
        // A daemon that restarted holds no connection yet: make one, so
        // `vm show` says whether the agent answers. Its failure is shown.
        // Its status is asked afresh (is sshd accepting now?).
        let reach = async {
            daemon.vms.agent(&name).await?.status().await?;
            Ok::<(), crate::vm::VmError>(())
        };
        if let Ok(Err(e)) = tokio::time::timeout(std::time::Duration::from_secs(3), reach).await {
            tracing::debug!(vm = %name, error = %e, "the agent does not answer");
        }
    }
    Ok(Json(daemon.vms.details(&vm)))
}

pub async fn start(
    State(daemon): State<Arc<Daemon>>,
    VmName(name): VmName,
    BodyOrDefault(StartVm { no_wait, cold }): BodyOrDefault<StartVm>,
) -> Result<Json<VmOpResult>, ApiError> {
    on_user_vm(&daemon, name, move |vms, name| async move {
        vms.start(&name, !no_wait, cold).await
    })
    .await
}

/// Pause, resume or suspend a VM's guest.
pub async fn act(
    State(daemon): State<Arc<Daemon>>,
    VmName(name): VmName,
    action: VmAction,
) -> Result<Json<VmDetails>, ApiError> {
    on_user_vm(&daemon, name, move |vms, name| async move {
        match action {
            VmAction::Pause => vms.pause(&name).await,
            VmAction::Resume => vms.resume(&name).await,
            VmAction::Suspend => vms.suspend(&name).await,
        }
    })
    .await
}

pub async fn stop(
    State(daemon): State<Arc<Daemon>>,
    VmName(name): VmName,
    BodyOrDefault(StopVm { force }): BodyOrDefault<StopVm>,
) -> Result<Json<VmDetails>, ApiError> {
    on_user_vm(&daemon, name, move |vms, name| async move {
        vms.stop(&name, force).await
    })
    .await
}

pub async fn restart(
    State(daemon): State<Arc<Daemon>>,
    VmName(name): VmName,
) -> Result<Json<VmOpResult>, ApiError> {
    on_user_vm(&daemon, name, move |vms, name| async move {
        vms.restart(&name).await
    })
    .await
}

/// Publishes or unpublishes one of a VM's ports.
pub async fn change_port(
    State(daemon): State<Arc<Daemon>>,
    VmName(name): VmName,
    JsonBody(req): JsonBody<PublishPort>,
    publish: bool,
) -> Result<Json<VmDetails>, ApiError> {
    on_user_vm(&daemon, name, move |vms, name| async move {
        vms.set_published(&name, &req.port, publish).await
    })
    .await
}

/// Clones a stopped VM, or forks a running one.
pub async fn copy(
    State(daemon): State<Arc<Daemon>>,
    VmName(name): VmName,
    JsonBody(req): JsonBody<CloneVm>,
    fork: bool,
) -> Result<Json<VmOpResult>, ApiError> {
    on_user_vm(&daemon, name, move |vms, name| async move {
        match fork {
            true => vms.fork(&name, &req.name).await,
            false => vms.clone_vm(&name, &req.name).await,
        }
    })
    .await
}

/// Registers stopped VM `name`'s root filesystem as a new image.
pub async fn export(
    State(daemon): State<Arc<Daemon>>,
    VmName(name): VmName,
    JsonBody(req): JsonBody<crate::rpc::api::ExportVm>,
) -> Result<Json<crate::rpc::api::ImageDetails>, ApiError> {
    let image = on_user_vm(&daemon, name, move |vms, name| async move {
        let mut log = crate::image::oci::Logged(name.clone());
        vms.export_vm(&name, &req.image, &mut log).await
    })
    .await?;
    Ok(Json(daemon.images.details(image.0)?))
}

pub async fn delete(
    State(daemon): State<Arc<Daemon>>,
    VmName(name): VmName,
    BodyOrDefault(StopVm { force }): BodyOrDefault<StopVm>,
) -> Result<Json<serde_json::Value>, ApiError> {
    on_user_vm(&daemon, name, move |vms, name| async move {
        vms.delete(&name, force).await?;
        Ok(serde_json::json!({ "deleted": name }))
    })
    .await
}

pub async fn stats(
    State(daemon): State<Arc<Daemon>>,
    VmName(name): VmName,
) -> Result<Json<VmStats>, ApiError> {
    Ok(Json(daemon.vms.stats(&name).await?))
}

/// Every running VM's VMM, sampled together.
pub async fn all_stats(State(daemon): State<Arc<Daemon>>) -> Result<Json<Vec<VmStats>>, ApiError> {
    Ok(Json(daemon.vms.stats_all().await?))
}

pub async fn defaults(State(daemon): State<Arc<Daemon>>) -> Result<Json<CreateDefaults>, ApiError> {
    Ok(Json(daemon.vms.create_defaults()?))
}

/// Runs `op` on VM `name` in a task of its own (see [`detached`]), unless
/// `name` is a build VM: that belongs to its build alone.
async fn on_user_vm<T, F, Fut>(daemon: &Daemon, name: String, op: F) -> Result<Json<T>, ApiError>
where
    T: Send + 'static,
    F: FnOnce(Arc<crate::vm::Manager>, String) -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::vm::VmError>> + Send + 'static,
{
    refuse_build_vm(daemon, &name)?;
    detached(op(daemon.vms.clone(), name)).await
}

/// A build VM belongs to its build: only the build stops or removes it.
fn refuse_build_vm(daemon: &Daemon, name: &str) -> Result<(), ApiError> {
    match daemon.vms.get(name) {
        Ok(vm) if vm.role == crate::model::VmRole::Build => Err(ApiError::message(
            axum::http::StatusCode::CONFLICT,
            format!("`{name}` is the build VM of an image build"),
        )
        .hint("it goes away when its build ends; interrupt `banger image build` to cancel it")),
        Ok(vm) if vm.role == crate::model::VmRole::Template => Err(ApiError::message(
            axum::http::StatusCode::CONFLICT,
            format!("`{name}` is the VM an image is being warmed with"),
        )
        .hint("it goes away when `banger image warm` ends")),
        _ => Ok(()),
    }
}

pub async fn clock(
    State(daemon): State<Arc<Daemon>>,
    VmName(name): VmName,
) -> Result<Json<crate::rpc::api::ClockSet>, ApiError> {
    let skew = daemon.vms.sync_clock(&name).await?;
    Ok(Json(crate::rpc::api::ClockSet {
        skew_ms: skew.as_millis() as u64,
    }))
}

pub async fn identity(
    State(daemon): State<Arc<Daemon>>,
    VmName(name): VmName,
    JsonBody(req): JsonBody<crate::rpc::api::SetIdentity>,
) -> Result<Json<VmDetails>, ApiError> {
    let vms = daemon.vms.clone();
    detached(async move { vms.set_identity(&name, &req).await }).await
}
