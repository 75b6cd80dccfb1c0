//! `vm publish` and `vm unpublish`: the ports recorded with a VM, served
//! by the network service while it runs.

use std::sync::Arc;

use crate::model::{PortSpec, VmRole};
use crate::rpc::api::VmDetails;

use super::{Manager, VmError};

impl Manager {
    /// Publishes `spec` for VM `name` (at once if it runs, else from its
    /// next start), or with `publish` false stops publishing it.
    pub async fn set_published(
        self: &Arc<Manager>,
        name: &str,
        spec: &str,
        publish: bool,
    ) -> Result<VmDetails, VmError> {
        let port: PortSpec = spec.parse().map_err(VmError::BadRequest)?;
        let _held = self.operation(name).await;
        match publish {
            true => self.publish_locked(name, port).await?,
            false => self.unpublish_locked(name, port)?,
        }
        Ok(self.details(&self.get(name)?))
    }

    async fn publish_locked(&self, name: &str, port: PortSpec) -> Result<(), VmError> {
        let vm = self.get(name)?;
        if vm.role != VmRole::Vm {
            return Err(VmError::BadRequest(format!(
                "`{name}` is not a VM of yours"
            )));
        }
        if self.store.lock().ports_of(name)?.contains(&port) {
            return Ok(());
        }
        // Taken on the host (by anyone) is an error before anything is recorded.
        self.network.check_ports_free(&[port]).await?;
        self.store.lock().add_port(name, &port)?;
        if vm.state.can_stop() {
            self.network.open_port(name, port).await?;
        }
        tracing::info!(vm = name, %port, "published");
        Ok(())
    }

    fn unpublish_locked(&self, name: &str, port: PortSpec) -> Result<(), VmError> {
        if !self.store.lock().remove_port(name, &port)? {
            return Err(VmError::BadRequest(format!(
                "VM `{name}` does not publish {port}"
            )));
        }
        self.network.close_port(name, &port);
        Ok(())
    }
}
