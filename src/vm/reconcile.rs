//! On daemon start: compare what the store believes with what runs. Live
//! VMMs (same pid, same start time, control socket present) are adopted;
//! dead ones are marked stopped and their taps removed.

use std::sync::Arc;

use crate::system::{net, pid};

use super::{Guards, Manager, VmError};

/// What reconcile found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub adopted: Vec<String>,
    pub released: Vec<String>,
}

impl Manager {
    pub async fn reconcile(self: &Arc<Manager>) -> Result<Reconciled, VmError> {
        let mut found = Reconciled::default();
        let vms = self.store.lock().list_vms()?;
        for vm in vms {
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
