//! `vm clone SRC NEW`: a stopped VM's disks copied (reflinks where the
//! filesystem can, else sparse copies) under a new VM with its own name,
//! address, MAC, tap, host key and hostname. A layered VM's copy is its
//! upper and work disks: a few MiB, whatever the image's size.
//!
//! `vm fork SRC NEW`: the same of a running VM, with its memory: SRC's
//! filesystems are frozen through its agent, its VMM stops it and writes
//! its memory as NEW's snapshot, its disks are copied at that instant, and
//! SRC runs on; NEW is then restored and given its own identity.

use std::sync::Arc;

use crate::model::{RootMode, VmRole, VmState};
use crate::rpc::api::VmOpResult;
use crate::store::{NewVm, StoreError, Taken};
use crate::system::{fs, ssh};

use super::create::write_known_hosts;
use super::rollback::{Rollback, Undo};
use super::snapshot::SnapshotDir;
use super::suspend::save_memory;
use super::{Clock, Manager, VmError, fault};
use crate::vmm::control;

/// Copies each `(from, to)` disk (reflink, or sparse copy).
fn copy_all(copies: &[(std::path::PathBuf, std::path::PathBuf)]) -> Result<(), fs::FsError> {
    copies
        .iter()
        .try_for_each(|(src, dst)| fs::clone_file(src, dst).map(drop))
}

impl Manager {
    /// Checks the name `new` of a copy (a `what`) of VM `src`, then holds
    /// both names, always locked in the same order, so two copies between
    /// the same pair cannot wait on each other.
    async fn operations_on_pair(
        &self,
        src: &str,
        new: &str,
        what: &str,
    ) -> Result<[super::Operation; 2], VmError> {
        crate::rpc::check_vm_name(new)?;
        if src == new {
            return Err(VmError::BadRequest(format!(
                "a {what} needs a name of its own, not `{src}`"
            )));
        }
        let (first, second) = if src < new { (src, new) } else { (new, src) };
        let first = self.operation(first).await;
        Ok([first, self.operation(second).await])
    }

    /// Makes VM `new` from stopped VM `src`; `new` is left created, not started.
    pub async fn clone_vm(
        self: &Arc<Manager>,
        src: &str,
        new: &str,
    ) -> Result<VmOpResult, VmError> {
        let _held = self.operations_on_pair(src, new, "clone").await?;
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

    /// Makes VM `new` a copy of running VM `src`, memory and all, and
    /// restores it; both run after. Returns how `new` came up, and how long
    /// `src` was held still.
    pub async fn fork(self: &Arc<Manager>, src: &str, new: &str) -> Result<VmOpResult, VmError> {
        let _held = self.operations_on_pair(src, new, "fork").await?;
        let mut clock = Clock::start();
        let mut rollback = Rollback::new(self.store.clone(), self.network.netadmin().clone());
        let paused = match self
            .copy_locked(src, new, &mut clock, &mut rollback, true)
            .await
        {
            Ok(paused) => {
                rollback.disarm();
                paused
            }
            Err(e) => {
                tracing::warn!(vm = new, error = %e, "fork failed; rolling back");
                rollback.run().await;
                return Err(e);
            }
        };
        match self.start_locked(new, &mut clock, true).await {
            Ok(booted) => {
                let how = format!(
                    "forked from running VM {src} (held still {} ms)",
                    paused.as_millis()
                );
                self.event(new, "created", &how);
                let vm = self.get(new)?;
                let mut result = booted.result(self.details(&vm), clock);
                result.source_paused_ms = Some(paused.as_millis() as u64);
                Ok(result)
            }
            Err(e) => {
                tracing::warn!(vm = new, error = %e, "the fork did not come up; deleting it");
                let mut undo = Rollback::new(self.store.clone(), self.network.netadmin().clone());
                undo.push(Undo::DeleteVm(new.to_string()));
                undo.push(Undo::RemoveDir(self.files(new).dir));
                undo.run().await;
                Err(e)
            }
        }
    }

    async fn clone_locked(
        &self,
        src: &str,
        new: &str,
        clock: &mut Clock,
        rollback: &mut Rollback,
    ) -> Result<(), VmError> {
        self.copy_locked(src, new, clock, rollback, false)
            .await
            .map(drop)
    }

    /// The work of a clone (`live` false: `src` is at rest) or of a fork
    /// (`live`: `src` runs, and `new` gets its memory as a snapshot to be
    /// restored). Returns how long a live `src` was held still.
    async fn copy_locked(
        &self,
        src: &str,
        new: &str,
        clock: &mut Clock,
        rollback: &mut Rollback,
        live: bool,
    ) -> Result<std::time::Duration, VmError> {
        let source = self.get(src)?;
        let fits = match live {
            true => source.state.is_running(),
            false => source.state.is_at_rest(),
        };
        if source.role != VmRole::Vm || !fits {
            return Err(VmError::WrongState {
                name: src.into(),
                state: source.state,
                action: if live {
                    "fork (start it first)"
                } else {
                    "clone (stop it first)"
                },
            });
        }
        let process = match live {
            true => Some(self.vmm_process(&source, "fork")?),
            false => None,
        };
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
        let keys = async {
            let user_key = ssh::ensure_key(&self.ssh_key(), "banger").await?;
            let host_key = ssh::generate_key(&to.host_key, &format!("root@{new}")).await?;
            Ok::<_, VmError>((user_key, host_key))
        };
        let (user_key, host_key) = match process {
            // The keys first: the source is held still only for its memory
            // and disks.
            Some(process) => {
                let keys = keys.await?;
                let held = self.snapshot_live(&source, process, new, copies).await?;
                clock.lap("snapshot and copy");
                self.store.lock().set_vm_host_key(new, &keys.1)?;
                write_known_hosts(&to, new, ip, &keys.1)?;
                self.store
                    .lock()
                    .set_vm_state(new, VmState::Suspended, None)?;
                tracing::info!(vm = new, from = src, %ip, held_ms = held.as_millis() as u64, "forked");
                return Ok(held);
            }
            None => {
                let copied = tokio::task::spawn_blocking(move || copy_all(&copies));
                let (copied, keys) = tokio::join!(copied, keys);
                copied.map_err(|e| VmError::io(&to.dir)(std::io::Error::other(e)))??;
                keys?
            }
        };
        self.store.lock().set_vm_host_key(new, &host_key)?;
        write_known_hosts(&to, new, ip, &host_key)?;
        fault::point("clone:disks");
        clock.lap("copy disks");

        self.write_identity(&to, new, Some(ip), &user_key, source.root_mode, false)
            .await?;
        self.store
            .lock()
            .set_vm_state(new, VmState::Created, None)?;
        clock.lap("identity");
        tracing::info!(vm = new, from = src, %ip, "cloned");
        Ok(std::time::Duration::ZERO)
    }

    /// Holds running VM `source` still (its filesystems frozen through its
    /// agent, where it has one, then its vCPUs stopped) while its memory
    /// becomes new VM `new`'s snapshot and `copies` of its disks are made;
    /// then runs it again. Returns how long it was held.
    async fn snapshot_live(
        &self,
        source: &crate::store::VmRecord,
        process: crate::store::VmProcess,
        new: &str,
        copies: Vec<(std::path::PathBuf, std::path::PathBuf)>,
    ) -> Result<std::time::Duration, VmError> {
        let src = &source.name;
        let socket = self.files(src).control_socket();
        let snapshot = SnapshotDir::new(&self.files(new).dir);
        self.store
            .lock()
            .set_vm_state(src, VmState::Forking, Some(process))?;
        fault::point("fork:marked");
        let agent = self.held_agent(src);
        let began = std::time::Instant::now();
        if let Some(agent) = &agent {
            let freeze = banger_agent::proto::Message::Freeze {
                mounts: Vec::new(),
                timeout_ms: 10_000,
            };
            if let Err(e) = agent.request(freeze).await {
                tracing::warn!(vm = %src, error = %e, "cannot freeze the filesystems; the snapshot's disks are as a crash leaves them");
            }
        }
        let made = async {
            let (version, memory) =
                save_memory(source.vmm, &socket, &snapshot)
                    .await
                    .map_err(|message| VmError::Control {
                        name: src.clone(),
                        action: "fork",
                        message,
                    })?;
            fault::point("fork:saved");
            tokio::task::spawn_blocking(move || copy_all(&copies))
                .await
                .map_err(|e| VmError::io(&snapshot.partial)(std::io::Error::other(e)))??;
            Ok::<_, VmError>((version, memory))
        }
        .await;
        // The source runs on, whatever became of the copy.
        let resumed = control::resume(source.vmm, &socket).await;
        let held = began.elapsed();
        if let Some(agent) = &agent {
            let _ = agent.request(banger_agent::proto::Message::Thaw).await;
        }
        self.store
            .lock()
            .set_vm_state(src, VmState::Running, Some(process))?;
        if let Err(message) = resumed {
            tracing::error!(vm = %src, %message, "cannot run the fork's source again");
        }
        let (version, memory) = made?;
        let new_vm = self.get(new)?;
        let meta = self
            .snapshot_meta(&new_vm, version, &memory, true)
            .map_err(VmError::io(&snapshot.partial))?;
        snapshot
            .commit(&memory, &meta)
            .map_err(VmError::io(&snapshot.dir))?;
        fault::point("fork:written");
        self.event(
            src,
            "forked",
            &format!("into {new}; held still {} ms", held.as_millis()),
        );
        Ok(held)
    }
}
