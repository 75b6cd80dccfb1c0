//! On daemon start: make what the store says and what runs agree, and
//! finish or undo whatever the last daemon left half done. A VMM counts as
//! running only by its process: the recorded pid, with the recorded start
//! time, a VMM executable, working in the VM's directory.
//!
//! By the state the last daemon recorded:
//! - `creating`: undone whole (row, files, tap).
//! - `starting`: the VMM, if one was spawned, is killed; the VM is stopped.
//! - `running`: adopted when its VMM lives, else stopped.
//! - `stopping`: the stop is finished (gracefully, in the background).
//! - `deleting`: the delete is finished.
//! - `paused`: adopted when its VMM lives (as paused, or as running if its
//!   VMM runs the guest after all), else stopped.
//! - `suspending`: a whole snapshot makes it `suspended` (its VMM, if it
//!   lives, is killed); without one a live VMM is told to run the guest
//!   again and adopted, a dead one leaves it stopped.
//! - `suspended`: no VMM may run; without its snapshot it is stopped.
//! - `restoring`: its VMM is killed; it is `suspended` while its snapshot
//!   is whole (the restore had not consumed it), else stopped.
//! - `created`, `stopped`, `failed`: no VMM may run on its disks and no tap
//!   is left.
//!
//! A build VM is never adopted: its build died with the daemon that ran it,
//! so it is killed and removed, and the image files it was making are swept.

use std::sync::Arc;
use std::time::Duration;

use crate::model::{VmRole, VmState};
use crate::store::VmRecord;
use crate::system::{net, pid};

use super::snapshot::SnapshotDir;
use super::{Manager, VmError};
use crate::vmm::control;

/// What reconcile found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub adopted: Vec<String>,
    pub released: Vec<String>,
    /// Creates and deletes the last daemon did not finish, now undone or done.
    pub finished: Vec<String>,
    /// Build VMs of builds the last daemon did not finish.
    pub removed_builds: Vec<String>,
}

impl Manager {
    pub async fn reconcile(self: &Arc<Manager>) -> Result<Reconciled, VmError> {
        let mut found = Reconciled::default();
        let vms = self.store.lock().list_vms()?;
        for vm in vms {
            let name = vm.name.clone();
            if vm.role != VmRole::Vm {
                self.remove_vm_everything(&vm).await;
                tracing::warn!(vm = %name, role = %vm.role, "removed the VM of an unfinished build or warm-up");
                found.removed_builds.push(name);
                continue;
            }
            let dir = self.files(&name).dir;
            let live = vm
                .pid
                .zip(vm.pid_start_ticks)
                .filter(|&(pid, ticks)| pid::is_vmm_of(pid, ticks, &dir))
                .map(|(pid, _)| pid);
            match (vm.state, live) {
                (VmState::Creating, _) => {
                    self.remove_vm_everything(&vm).await;
                    tracing::warn!(vm = %name, "undid a create the last daemon did not finish");
                    found.finished.push(name);
                }
                (VmState::Deleting, _) => {
                    match self.finish_delete(&vm, true).await {
                        Ok(()) => {
                            tracing::warn!(vm = %name, "finished a delete the last daemon began")
                        }
                        Err(e) => {
                            tracing::error!(vm = %name, error = %e, "cannot finish deleting the VM")
                        }
                    }
                    found.finished.push(name);
                }
                (VmState::Suspending, live) => {
                    let state = self.finish_suspend(&vm, live).await?;
                    found.finished.push(name.clone());
                    if state == VmState::Running {
                        self.adopt(&name, live.expect("a running VM has a VMM"))
                            .await;
                        found.adopted.push(name);
                    }
                }
                (VmState::Restoring, _) | (VmState::Suspended, _) => {
                    self.kill_strays(&name).await;
                    if let Some(tap) = vm.tap().filter(|t| net::link_exists(t)) {
                        let _ = self.network.netadmin().tap_del(tap).await;
                    }
                    if !super::snapshot::SnapshotDir::new(&dir).exists() {
                        self.store
                            .lock()
                            .set_vm_state(&name, VmState::Stopped, None)?;
                        let why = "its snapshot is gone: it boots from its disks";
                        tracing::warn!(vm = %name, state = %vm.state, "marking the VM stopped: {why}");
                        self.event(&name, "stopped", why);
                        found.released.push(name);
                    } else if vm.state == VmState::Restoring {
                        self.store
                            .lock()
                            .set_vm_state(&name, VmState::Suspended, None)?;
                        tracing::warn!(vm = %name, "a restore was cut off: the VM is suspended again");
                        found.finished.push(name);
                    }
                }
                (VmState::Paused | VmState::Forking, Some(pid)) => {
                    let paused = control::is_paused(vm.vmm, &self.files(&name).control_socket())
                        .await
                        .unwrap_or(true);
                    if vm.state == VmState::Forking || !paused {
                        // A fork cut off halfway is undone: the source runs on.
                        if paused {
                            let _ =
                                control::resume(vm.vmm, &self.files(&name).control_socket()).await;
                        }
                        self.store
                            .lock()
                            .set_vm_state(&name, VmState::Running, vm.process())?;
                    }
                    tracing::info!(vm = %name, pid, paused, "re-adopted VM");
                    self.adopt(&name, pid).await;
                    found.adopted.push(name);
                }
                (VmState::Running, Some(pid)) => {
                    // A pause the last daemon did not get to record.
                    let socket = self.files(&name).control_socket();
                    if control::is_paused(vm.vmm, &socket).await == Ok(true) {
                        self.store
                            .lock()
                            .set_vm_state(&name, VmState::Paused, vm.process())?;
                    }
                    tracing::info!(vm = %name, pid, "re-adopted running VM");
                    self.adopt(&name, pid).await;
                    found.adopted.push(name);
                }
                (VmState::Stopping, Some(pid)) => {
                    tracing::info!(vm = %name, pid, "finishing a stop the last daemon began");
                    self.watch(&name, pid, None);
                    let manager = Arc::clone(self);
                    tokio::spawn(async move {
                        let _held = manager.operation(&name).await;
                        if let Err(e) = manager.stop_locked(&name, false).await {
                            tracing::error!(vm = %name, error = %e, "cannot finish stopping the VM");
                        }
                    });
                    found.adopted.push(vm.name);
                }
                (
                    VmState::Starting
                    | VmState::Running
                    | VmState::Stopping
                    | VmState::Paused
                    | VmState::Forking,
                    _,
                ) => {
                    // A start cut off halfway is not adopted: the VMM may not
                    // have its machine configured. The user starts it again.
                    self.kill_strays(&name).await;
                    self.store
                        .lock()
                        .set_vm_state(&name, VmState::Stopped, None)?;
                    if let Some(tap) = vm.tap() {
                        let _ = self.network.netadmin().tap_del(tap).await;
                    }
                    let why = if vm.state == VmState::Starting {
                        "its start was cut off when the last daemon died"
                    } else {
                        "the VMM was gone when the daemon started"
                    };
                    tracing::warn!(vm = %name, state = %vm.state, "marking the VM stopped: {why}");
                    self.event(&name, "stopped", why);
                    found.released.push(name);
                }
                (VmState::Created | VmState::Stopped | VmState::Failed, _) => {
                    self.kill_strays(&name).await;
                    // A daemon killed mid-start can leave a tap behind.
                    if let Some(tap) = vm.tap().filter(|t| net::link_exists(t)) {
                        let _ = self.network.netadmin().tap_del(tap).await;
                    }
                }
            }
        }
        if let Err(e) = self.images.sweep() {
            tracing::warn!(error = %e, "cannot sweep the image store");
        }
        // Blobs a pull was writing when the daemon died; no pull runs yet.
        crate::image::oci::cache::BlobCache::new(&self.paths.cache_dir).sweep();
        // The NAT table matches what runs now; names resolve again.
        if let Err(e) = self.network.sync_nat().await {
            tracing::warn!(error = %e, "cannot bring the NAT table in line with the running VMs");
        }
        if net::link_exists(&self.config.network.bridge) {
            self.network.ensure_dns().await;
        }
        Ok(found)
    }

    /// Watches VM `name`'s live VMM `pid` again and serves its ports.
    async fn adopt(self: &Arc<Manager>, name: &str, pid: u32) {
        self.watch(name, pid, None);
        if let Err(e) = self.network.open_vm_ports(name).await {
            tracing::error!(vm = %name, error = %e, "cannot publish the VM's ports again");
        }
    }

    /// Finishes or undoes a suspend the last daemon did not finish: a whole
    /// snapshot makes it suspended; else the guest runs on (its VMM told to
    /// run it again) or, its VMM gone, the VM is stopped. Returns the state.
    async fn finish_suspend(&self, vm: &VmRecord, live: Option<u32>) -> Result<VmState, VmError> {
        let name = &vm.name;
        let files = self.files(name);
        let snapshot = SnapshotDir::new(&files.dir);
        let _ = snapshot.discard_partial();
        let state = if snapshot.exists() {
            self.kill_strays(name).await;
            VmState::Suspended
        } else if live.is_some() {
            let _ = control::resume(vm.vmm, &files.control_socket()).await;
            VmState::Running
        } else {
            VmState::Stopped
        };
        if state != VmState::Running
            && let Some(tap) = vm.tap().filter(|t| net::link_exists(t))
        {
            let _ = self.network.netadmin().tap_del(tap).await;
        }
        let process = vm.process().filter(|_| state == VmState::Running);
        self.store.lock().set_vm_state(name, state, process)?;
        tracing::warn!(vm = %name, %state, "finished a suspend the last daemon began");
        self.event(name, "suspend-finished", &format!("the VM is {state}"));
        Ok(state)
    }

    /// Kills every VMM working in VM `name`'s directory: ones a dead daemon
    /// spawned but could not record or configure.
    pub(crate) async fn kill_strays(&self, name: &str) {
        for pid in pid::vmms_in(&self.files(name).dir) {
            tracing::warn!(vm = name, pid, "killing a VMM no VM state accounts for");
            let watch = pid::ExitWatch::new(pid).ok();
            let _ = pid::signal(pid, rustix::process::Signal::KILL);
            if let Some(watch) = watch {
                watch.exited_within(Duration::from_secs(10)).await;
            }
        }
    }

    /// Removes a VM nobody will finish: its VMMs, tap, files and row.
    async fn remove_vm_everything(&self, vm: &VmRecord) {
        self.kill_strays(&vm.name).await;
        if let Some(tap) = vm.tap().filter(|t| net::link_exists(t)) {
            let _ = self.network.netadmin().tap_del(tap).await;
        }
        let dir = self.files(&vm.name).dir;
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(vm = %vm.name, dir = %dir.display(), error = %e, "cannot remove the VM's files");
        }
        if let Err(e) = self.store.lock().delete_vm(&vm.name) {
            tracing::error!(vm = %vm.name, error = %e, "cannot forget the VM");
        }
    }
}
