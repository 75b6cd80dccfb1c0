//! On daemon start: compare what the store believes with what runs. Live
//! VMMs (same pid, same start time, control socket present) are adopted;
//! dead ones are marked stopped and their taps removed. A build VM is
//! never adopted: its build died with the daemon that ran it, so it is
//! killed and removed, and the image files it was making are swept.

use std::sync::Arc;

use crate::system::{net, pid};

use super::{Guards, Manager, VmError};

/// What reconcile found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub adopted: Vec<String>,
    pub released: Vec<String>,
    /// Build VMs of builds the last daemon did not finish.
    pub removed_builds: Vec<String>,
}

impl Manager {
    pub async fn reconcile(self: &Arc<Manager>) -> Result<Reconciled, VmError> {
        let mut found = Reconciled::default();
        let vms = self.store.lock().list_vms()?;
        for vm in vms {
            if vm.role == crate::store::VmRole::Build {
                self.remove_orphan_build(&vm).await;
                found.removed_builds.push(vm.name);
                continue;
            }
            let files = self.files(&vm.name);
            let live = match (vm.pid, vm.pid_start_ticks) {
                (Some(pid), Some(ticks)) => pid::is_alive(pid, ticks) && files.api_socket.exists(),
                _ => false,
            };
            match (vm.state.can_stop(), live, vm.pid) {
                (true, true, Some(pid)) => {
                    tracing::info!(vm = %vm.name, pid, "re-adopted running VM");
                    self.watch(&vm.name, pid, None);
                    found.adopted.push(vm.name);
                }
                (true, _, pid) => {
                    tracing::warn!(vm = %vm.name, ?pid, "VMM is gone; marking the VM stopped");
                    self.store.lock().set_vm_state(
                        &vm.name,
                        crate::store::VmState::Stopped,
                        None,
                    )?;
                    if let Some(tap) = &vm.tap {
                        let _ = net::delete_link(tap).await;
                    }
                    self.event(
                        &vm.name,
                        "stopped",
                        "the VMM was gone when the daemon started",
                    );
                    found.released.push(vm.name);
                }
                (false, _, _) => {
                    // A daemon killed mid-start can leave a tap behind.
                    if let Some(tap) = vm.tap.as_deref().filter(|t| net::link_exists(t)) {
                        let _ = net::delete_link(tap).await;
                    }
                }
            }
        }
        if let Err(e) = self.images.sweep(&self.store) {
            tracing::warn!(error = %e, "cannot sweep the image store");
        }
        // The NAT table matches what runs now; names resolve again.
        if let Err(e) = self.sync_nat().await {
            tracing::warn!(error = %e, "cannot bring the NAT table in line with the running VMs");
        }
        if net::link_exists(&self.config.network.bridge) {
            self.ensure_dns().await;
        }
        Ok(found)
    }
}

impl Manager {
    /// Kills and removes the build VM of a build no daemon runs any more.
    async fn remove_orphan_build(&self, vm: &crate::store::VmRecord) {
        // The recorded pid, and any VMM given this VM's files: a daemon
        // killed right after the spawn had no time to record its pid.
        let files = self.files(&vm.name);
        let mut vmms: Vec<u32> = vm
            .pid
            .zip(vm.pid_start_ticks)
            .filter(|&(pid, ticks)| pid::is_alive(pid, ticks))
            .map(|(pid, _)| pid)
            .into_iter()
            .collect();
        for dir in [&files.dir, &files.run_dir] {
            let mut needle = dir.as_os_str().to_string_lossy().into_owned();
            needle.push('/');
            vmms.extend(crate::system::proc::pids_with_arg_containing(&needle));
        }
        vmms.sort_unstable();
        vmms.dedup();
        for pid in vmms {
            let watch = pid::ExitWatch::new(pid).ok();
            let _ = pid::signal(pid, rustix::process::Signal::KILL);
            if let Some(watch) = watch {
                watch
                    .exited_within(std::time::Duration::from_secs(10))
                    .await;
            }
        }
        if let Some(tap) = vm.tap.as_deref().filter(|t| net::link_exists(t)) {
            let _ = net::delete_link(tap).await;
        }
        for dir in [&files.dir, &files.run_dir] {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Err(e) = self.store.lock().delete_vm(&vm.name) {
            tracing::error!(vm = %vm.name, error = %e, "cannot forget an orphaned build VM");
        }
        tracing::warn!(vm = %vm.name, "removed the build VM of an unfinished build");
    }
}
