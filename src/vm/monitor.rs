//! Noticing that a VMM exited, whether banger stopped it or not, and
//! releasing what it held.

use std::sync::Arc;

use crate::model::VmState;
use crate::system::pid::ExitWatch;

use super::Manager;

impl Manager {
    /// Watches VMM `pid` of VM `name` in the background; `child` is given
    /// when the VMM is our child (then it is reaped here too).
    pub(crate) fn watch(
        self: &Arc<Manager>,
        name: &str,
        pid: u32,
        child: Option<tokio::process::Child>,
    ) {
        let manager = Arc::clone(self);
        let name = name.to_string();
        tokio::spawn(async move {
            match child {
                Some(mut child) => {
                    let status = child.wait().await;
                    tracing::info!(vm = %name, pid, ?status, "VMM exited");
                }
                None => match ExitWatch::new(pid) {
                    Ok(watch) => watch.exited().await,
                    Err(e) => tracing::error!(vm = %name, pid, error = %e, "cannot watch VMM"),
                },
            }
            let _held = manager.operation(&name).await;
            if manager
                .release_if_current(&name, pid, VmState::Stopped)
                .await
            {
                manager.event(&name, "stopped", "the VMM exited");
            }
        });
    }

    /// If the store still says `pid` runs VM `name`, records it as `then`
    /// (stopped, or suspended) and removes its tap. False when someone else
    /// already did (or the VM is gone).
    pub(crate) async fn release_if_current(&self, name: &str, pid: u32, then: VmState) -> bool {
        let Ok(vm) = self.get(name) else { return false };
        if vm.pid != Some(pid) {
            return false;
        }
        self.network.close_vm_ports(name);
        self.drop_agent(name).await;
        if let Err(e) = self.store.lock().set_vm_state(name, then, None) {
            tracing::error!(vm = name, error = %e, "cannot record that the VM stopped");
        }
        if let Err(e) = self.network.sync_nat().await {
            tracing::error!(vm = name, error = %e, "cannot update the NAT table");
        }
        if let Some(tap) = vm.tap()
            && let Err(e) = self.network.netadmin().tap_del(tap).await
        {
            tracing::error!(vm = name, %tap, error = %e, "cannot remove tap");
        }
        true
    }
}
