//! `vm delete`: stop it if it runs, then remove its disks, keys, tap and lease.
//!
//! The VM is marked `deleting` before anything is removed, so a daemon that
//! dies halfway leaves a VM the next one finishes deleting, never one that
//! looks whole with half its files gone.

use std::sync::Arc;

use crate::model::VmState;
use crate::store::{VmProcess, VmRecord};

use super::{Manager, VmError, fault};

impl Manager {
    /// Deletes VM `name`; a running VM is stopped first (killed when `force`).
    pub async fn delete(self: &Arc<Manager>, name: &str, force: bool) -> Result<(), VmError> {
        let _held = self.operation(name).await;
        let vm = self.get(name)?;
        let process = vm
            .pid
            .zip(vm.pid_start_ticks)
            .map(|(pid, start_ticks)| VmProcess { pid, start_ticks });
        self.store
            .lock()
            .set_vm_state(name, VmState::Deleting, process)?;
        fault::point("delete:marked");
        self.finish_delete(&vm, force).await?;
        self.event(name, "deleted", "disks, keys and lease removed");
        tracing::info!(vm = name, "deleted");
        Ok(())
    }

    /// The rest of a delete, from a VM marked `deleting`: its VMM ended
    /// (gracefully unless `force`), the NAT table without it, its tap and
    /// files removed, then its row. Each step is safe to repeat, so
    /// reconcile calls this to finish a delete a daemon did not.
    pub(crate) async fn finish_delete(&self, vm: &VmRecord, force: bool) -> Result<(), VmError> {
        self.halt(vm, force).await?;
        self.kill_strays(&vm.name).await;
        self.network.close_vm_ports(&vm.name);
        fault::point("delete:halted");
        self.network.sync_nat().await?;
        if let Some(tap) = vm.tap() {
            self.network.tap_del(tap).await?;
        }
        fault::point("delete:tap");
        let dir = self.files(&vm.name).dir;
        let removed = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
        .await
        .map_err(|e| VmError::io(&dir)(std::io::Error::other(e)))?;
        removed.map_err(VmError::io(&dir))?;
        fault::point("delete:files");
        self.store.lock().delete_vm(&vm.name)?;
        // An image version kept only for this VM goes with it.
        if let Some(base) = &vm.base_path {
            self.images.release(base);
        }
        Ok(())
    }
}
