//! Snapshots of a jailed Firecracker: the running VMM writes its device
//! state and memory into its jail (the only place it can write), and the
//! daemon moves them out into the VM's snapshot; a fresh VMM loads them
//! from its own jail (see [`crate::vmm::jail::Jail::stage_snapshot`]).
//!
//! An unjailed Firecracker opens its disks by inherited descriptor
//! (`/proc/self/fd/N`), and a snapshot records those numbers: a new process
//! would get other numbers, so its snapshots are refused, not guessed at.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Client;
use super::models::{InstanceState, SnapshotCreateParams, SnapshotType, VmRunState};
use crate::vmm::jail::{SNAPSHOT_MEMORY, SNAPSHOT_STATE, own};

/// The device state's file name beside the memory in a VM's snapshot.
pub const STATE_FILE: &str = "vmstate";

/// The jail root of the Firecracker behind `api_socket` (the VM's
/// `run/vmm.sock`, a link into its jail), or why it has none.
pub fn jail_root(api_socket: &Path) -> Result<PathBuf, String> {
    let target = std::fs::read_link(api_socket).map_err(|_| unjailed())?;
    target.parent().map(Path::to_path_buf).ok_or_else(unjailed)
}

/// Why an unjailed Firecracker's guest cannot be snapshotted, and what to
/// do instead.
pub fn unjailed() -> String {
    "snapshots of an unjailed Firecracker are not built yet (it opens its disks by \
     descriptor numbers a new process would not have): run it under the jailer \
     (a root daemon with `jailer` beside firecracker), or keep it in memory with `banger vm pause`"
        .to_string()
}

/// Pauses the guest behind `api_socket` (if it runs) and writes its device
/// state to `state` and its memory to `memory` (host paths on the jail's
/// filesystem, replaced; the daemon's, 0600). The guest stays paused.
/// Returns Firecracker's version.
pub async fn save(
    api_socket: &Path,
    state: &Path,
    memory: &Path,
    timeout: Duration,
) -> Result<String, String> {
    let root = jail_root(api_socket)?;
    let text = |e: super::FirecrackerError| crate::system::host::error_chain(&e);
    let client = Client::new(api_socket);
    let info = client.describe_instance().await.map_err(text)?;
    if info.state == InstanceState::Running {
        client
            .set_vm_state(VmRunState::Paused)
            .await
            .map_err(text)?;
    }
    // The VMM's uid owns its API socket; it may write only what it owns.
    let socket = std::fs::metadata(api_socket).map_err(|e| e.to_string())?;
    let owner = (socket.uid(), socket.gid());
    let staged: Vec<PathBuf> = [SNAPSHOT_STATE, SNAPSHOT_MEMORY]
        .iter()
        .map(|inside| root.join(inside.trim_start_matches('/')))
        .collect();
    let written = async {
        for file in &staged {
            let _ = std::fs::remove_file(file);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(file)
                .map_err(|e| format!("cannot make {}: {e}", file.display()))?;
            own(file, owner).map_err(|e| e.to_string())?;
        }
        let params = SnapshotCreateParams {
            snapshot_path: SNAPSHOT_STATE.into(),
            mem_file_path: SNAPSHOT_MEMORY.into(),
            snapshot_type: Some(SnapshotType::Full),
        };
        client
            .create_snapshot(&params, timeout)
            .await
            .map_err(text)?;
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        for (from, to) in staged.iter().zip([state, memory]) {
            std::fs::rename(from, to)
                .map_err(|e| format!("cannot move {}: {e}", from.display()))?;
            own(to, me).map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    }
    .await;
    if written.is_err() {
        for file in &staged {
            let _ = std::fs::remove_file(file);
        }
    }
    written.map(|()| info.vmm_version)
}
