//! `vm clone SRC NEW`: a stopped VM's disks copied (reflinks where the
//! filesystem can, else sparse copies) under a new VM with its own name,
//! address, MAC, tap, host key and hostname. A layered VM's copy is its
//! upper and work disks: a few MiB, whatever the image's size.

use std::sync::Arc;

use crate::model::{RootMode, VmRole, VmState};
use crate::rpc::api::VmOpResult;
use crate::store::{NewVm, StoreError, Taken};
use crate::system::{fs, ssh};

use super::create::write_known_hosts;
use super::rollback::{Rollback, Undo};
use super::{Clock, Manager, VmError, fault};

impl Manager {
    /// Makes VM `new` from stopped VM `src`; `new` is left created, not started.
    pub async fn clone_vm(
        self: &Arc<Manager>,
        src: &str,
        new: &str,
    ) -> Result<VmOpResult, VmError> {
        crate::rpc::check_vm_name(new)?;
        if src == new {
            return Err(VmError::BadRequest(format!(
                "a clone needs a name of its own, not `{src}`"
            )));
        }
        // Both names locked, always in the same order, so two clones
        // between the same pair cannot wait on each other.
        let (first, second) = if src < new { (src, new) } else { (new, src) };
        let _first = self.operation(first).await;
        let _second = self.operation(second).await;
        let mut clock = Clock::start();
        let mut rollback = Rollback::new(self.store.clone(), self.network.netadmin().clone());
        match self.clone_locked(src, new, &mut clock, &mut rollback).await {
            Ok(()) => rollback.disarm(),
            Err(e) => {
                tracing::warn!(vm = new, error = %e, "clone failed; rolling back");
                rollback.run().await;
                return Err(e);
            }
        }
        self.event(new, "created", &format!("cloned from VM {src}"));
        let vm = self.get(new)?;
        Ok(super::start::Booted::default().result(self.details(&vm), clock))
    }

    async fn clone_locked(
        &self,
        src: &str,
        new: &str,
        clock: &mut Clock,
        rollback: &mut Rollback,
    ) -> Result<(), VmError> {
        let source = self.get(src)?;
        if source.role != VmRole::Vm || !source.state.can_start() {
            return Err(VmError::WrongState {
                name: src.into(),
                state: source.state,
                action: "clone (stop it first)",
            });
        }
        if self.store.lock().get_vm(new).is_ok() {
            return Err(StoreError::Conflict {
                what: Taken::VmName,
                value: new.to_string(),
            }
            .into());
        }
        let ip = self.insert_with_lease(NewVm {
            name: new.to_string(),
            image: source.image.clone(),
            vmm: source.vmm,
            vcpus: source.vcpus,
            memory_mib: source.memory_mib,
            disk_bytes: source.disk_bytes,
            work_disk_bytes: source.work_disk_bytes,
            lease: None,
            nat: source.nat,
            role: VmRole::Vm,
            root_mode: source.root_mode,
            base_path: source.base_path.clone(),
        })?;
        rollback.push(Undo::DeleteVm(new.to_string()));
        fault::point("clone:row");
        clock.lap("lease");

        let (from, to) = (self.files(src), self.files(new));
        rollback.push(Undo::RemoveDir(to.dir.clone()));
        crate::paths::private_dir(&to.dir).map_err(|e| VmError::Io {
            path: to.dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let root = match source.root_mode {
            RootMode::Layered => (from.upper.clone(), to.upper.clone()),
            RootMode::Clone => (from.rootfs.clone(), to.rootfs.clone()),
        };
        let mut copies = vec![root];
        if from.work_disk.exists() {
            copies.push((from.work_disk.clone(), to.work_disk.clone()));
        }
        let copied = tokio::task::spawn_blocking(move || {
            copies
                .iter()
                .try_for_each(|(src, dst)| fs::clone_file(src, dst).map(drop))
        });
        let keys = async {
            let user_key = ssh::ensure_key(&self.ssh_key(), "banger").await?;
            let host_key = ssh::generate_key(&to.host_key, &format!("root@{new}")).await?;
            Ok::<_, VmError>((user_key, host_key))
        };
        let (copied, keys) = tokio::join!(copied, keys);
        copied.map_err(|e| VmError::io(&to.dir)(std::io::Error::other(e)))??;
        let (user_key, host_key) = keys?;
        self.store.lock().set_vm_host_key(new, &host_key)?;
        write_known_hosts(&to, new, ip, &host_key)?;
        fault::point("clone:disks");
        clock.lap("copy disks");

        self.write_identity(&to, new, ip, &user_key, source.root_mode, false)
            .await?;
        self.store
            .lock()
            .set_vm_state(new, VmState::Created, None)?;
        clock.lap("identity");
        tracing::info!(vm = new, from = src, %ip, "cloned");
        Ok(())
    }
}
