//! Firecracker's snapshots. A jailed Firecracker writes its device state
//! and memory into its jail (the only place it can write), and the daemon
//! moves them out into the VM's snapshot; a fresh one loads them from its
//! own jail (see [`crate::vmm::jail::Jail::stage_snapshot`]). An unjailed
//! Firecracker of the daemon's own uid writes and reads the VM's snapshot
//! files where they are (it opens its disks by paths relative to the VM's
//! directory, which a restore elsewhere resolves to its own VM's disks).
//!
//! An unjailed Firecracker of another uid (a root daemon's VMM user with no
//! jailer) opens its disks by inherited descriptor (`/proc/self/fd/N`),
//! and a snapshot records those numbers: a new process would get other
//! numbers, so its snapshots are refused, not guessed at.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Client;
use super::models::{InstanceState, SnapshotCreateParams, SnapshotType, VmRunState};
use crate::vmm::jail::{SNAPSHOT_MEMORY, SNAPSHOT_STATE, own};

/// The device state's file name beside the memory in a VM's snapshot.
pub const STATE_FILE: &str = "vmstate";

/// Where the Firecracker behind `api_socket` (the VM's `run/vmm.sock`)
/// can write a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotPlace {
    /// Its jail's root (the socket is a link into the jail).
    Jail(PathBuf),
    /// The VM's own files: it runs unjailed as the daemon's uid.
    Direct,
}

/// Where the Firecracker behind `api_socket` writes a snapshot, or why it
/// cannot be snapshotted.
pub fn place(api_socket: &Path) -> Result<SnapshotPlace, String> {
    if let Ok(target) = std::fs::read_link(api_socket) {
        let root = target.parent().ok_or_else(not_supported)?;
        return Ok(SnapshotPlace::Jail(root.to_path_buf()));
    }
    let socket = std::fs::metadata(api_socket).map_err(|e| e.to_string())?;
    match socket.uid() == rustix::process::geteuid().as_raw() {
        true => Ok(SnapshotPlace::Direct),
        false => Err(not_supported()),
    }
}

/// Why an unjailed Firecracker of another uid cannot be snapshotted, and
/// what to do instead.
pub fn not_supported() -> String {
    "snapshots of a Firecracker that runs unjailed as another user are not built yet \
     (it opens its disks by descriptor numbers a new process would not have): put the \
     jailer beside firecracker, or keep the VM in memory with `banger vm pause`"
        .to_string()
}

/// Pauses the guest behind `api_socket` (if it runs) and writes its device
/// state to `state` and its memory to `memory` (host paths on the VM
/// directory's filesystem, replaced; the daemon's, 0600). The guest stays
/// paused. Returns Firecracker's version.
pub async fn save(
    api_socket: &Path,
    state: &Path,
    memory: &Path,
    timeout: Duration,
) -> Result<String, String> {
    let place = place(api_socket)?;
    let text = |e: super::FirecrackerError| crate::system::host::error_chain(&e);
    let client = Client::new(api_socket);
    // Writing the guest's memory takes its time; other requests do not.
    let writer = client.clone().with_timeout(timeout);
    let info = client.describe_instance().await.map_err(text)?;
    if info.state == InstanceState::Running {
        client
            .set_vm_state(VmRunState::Paused)
            .await
            .map_err(text)?;
    }
    let params = |state: &Path, memory: &Path| SnapshotCreateParams {
        snapshot_path: state.to_path_buf(),
        mem_file_path: memory.to_path_buf(),
        snapshot_type: Some(SnapshotType::Full),
    };
    match place {
        SnapshotPlace::Direct => {
            writer
                .create_snapshot(&params(state, memory))
                .await
                .map_err(text)?;
            for file in [state, memory] {
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| format!("cannot protect {}: {e}", file.display()))?;
            }
        }
        SnapshotPlace::Jail(root) => {
            let inside = params(Path::new(SNAPSHOT_STATE), Path::new(SNAPSHOT_MEMORY));
            write_through_jail(&writer, &inside, &root, api_socket, [state, memory]).await?;
        }
    }
    Ok(info.vmm_version)
}

/// Has the jailed Firecracker behind `client` write the snapshot `params`
/// names (inside its jail at `root`) into files made there for its uid,
/// then moves them to `to` (state, memory) and makes them the daemon's.
async fn write_through_jail(
    client: &Client,
    params: &SnapshotCreateParams,
    root: &Path,
    api_socket: &Path,
    to: [&Path; 2],
) -> Result<(), String> {
    // The VMM's uid owns its API socket; it may write only what it owns.
    let socket = std::fs::metadata(api_socket).map_err(|e| e.to_string())?;
    let owner = (socket.uid(), socket.gid());
    let staged: Vec<PathBuf> = [&params.snapshot_path, &params.mem_file_path]
        .iter()
        .map(|inside| root.join(inside.strip_prefix("/").unwrap_or(inside)))
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
        client
            .create_snapshot(params)
            .await
            .map_err(|e| crate::system::host::error_chain(&e))?;
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        for (from, to) in staged.iter().zip(to) {
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
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_into_a_jail_or_our_own_socket_says_where_to_write() {
        let (dir, socket) = crate::testing::temp_file("vmm.sock", "");
        let jail = dir.path().join("jail/firecracker/vm/root");
        std::fs::create_dir_all(&jail).unwrap();
        std::fs::write(jail.join("vmm.sock"), "").unwrap();
        let link = dir.path().join("run-vmm.sock");
        std::os::unix::fs::symlink(jail.join("vmm.sock"), &link).unwrap();
        assert_eq!(place(&link), Ok(SnapshotPlace::Jail(jail)));
        assert_eq!(place(&socket), Ok(SnapshotPlace::Direct));
        // Another uid's unjailed VMM: refused, naming the way out.
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&socket, Some(65534), None).unwrap();
            let why = place(&socket).unwrap_err();
            assert!(why.contains("jailer") && why.contains("vm pause"), "{why}");
        }
    }
}
