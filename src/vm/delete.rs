//! `vm delete`: stop it if it runs, then remove its disks, keys, tap and lease.

use std::sync::Arc;

use crate::system::net;

use super::{Guards, Manager, VmError};

impl Manager {
    /// Deletes VM `name`; a running VM is stopped first (killed when `force`).
    pub async fn delete(self: &Arc<Manager>, name: &str, force: bool) -> Result<(), VmError> {
        let lock = self.vm_lock(name);
        let _held = lock.lock().await;
        let vm = self.get(name)?;
        if vm.state.can_stop() {
            self.stop_locked(name, force).await?;
        }
        if let Some(tap) = &vm.tap {
            net::delete_link(tap).await.map_err(VmError::tap(tap))?;
        }
        let files = self.files(name);
        for dir in [&files.dir, &files.run_dir] {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(VmError::Io {
                        path: dir.clone(),
                        source: e,
                    });
                }
                _ => {}
            }
        }
        self.event(name, "deleted", "disks, keys and lease removed");
        self.store.lock().delete_vm(name)?;
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        tracing::info!(vm = name, "deleted");
        Ok(())
    }
}
