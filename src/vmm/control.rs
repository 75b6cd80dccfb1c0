//! Driving a running VMM through its control socket, whatever its kind:
//! asking the guest to shut down, pausing and resuming its vCPUs.

use std::path::Path;

use crate::model::VmmKind;

use super::{firecracker, qemu};

/// Asks the guest to shut down: the ACPI power button (QEMU) or
/// Ctrl-Alt-Del (Firecracker).
pub async fn request_shutdown(vmm: VmmKind, control_socket: &Path) -> Result<(), String> {
    match vmm {
        VmmKind::Qemu => qemu::powerdown(control_socket).await.map_err(text),
        VmmKind::Firecracker => firecracker::request_shutdown(control_socket)
            .await
            .map_err(text),
    }
}

/// Stops the guest's vCPUs; its memory and devices stay as they are.
pub async fn pause(vmm: VmmKind, control_socket: &Path) -> Result<(), String> {
    set_running(vmm, control_socket, false).await
}

/// Runs a paused guest's vCPUs again.
pub async fn resume(vmm: VmmKind, control_socket: &Path) -> Result<(), String> {
    set_running(vmm, control_socket, true).await
}

async fn set_running(vmm: VmmKind, control_socket: &Path, run: bool) -> Result<(), String> {
    use firecracker::models::VmRunState;
    match vmm {
        VmmKind::Qemu => qemu::qmp(control_socket, if run { "cont" } else { "stop" }, None)
            .await
            .map(drop)
            .map_err(text),
        VmmKind::Firecracker => firecracker::Client::new(control_socket)
            .set_vm_state(if run {
                VmRunState::Resumed
            } else {
                VmRunState::Paused
            })
            .await
            .map_err(text),
    }
}

/// Whether the VMM holds its guest paused (rather than running it).
pub async fn is_paused(vmm: VmmKind, control_socket: &Path) -> Result<bool, String> {
    match vmm {
        VmmKind::Qemu => {
            let status = qemu::qmp(control_socket, "query-status", None)
                .await
                .map_err(text)?;
            Ok(status["running"] == serde_json::Value::Bool(false))
        }
        VmmKind::Firecracker => firecracker::Client::new(control_socket)
            .describe_instance()
            .await
            .map(|info| info.state == firecracker::models::InstanceState::Paused)
            .map_err(text),
    }
}

/// An error and its causes on one line.
fn text(e: impl std::error::Error) -> String {
    crate::system::host::error_chain(&e)
}
