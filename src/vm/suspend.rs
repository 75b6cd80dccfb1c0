//! `vm pause`, `vm resume` and `vm suspend`, and what `vm start` needs to
//! restore a suspended VM instead of booting it.
//!
//! A suspend is an intent state: `suspending` is recorded before the VMM
//! is touched, the snapshot becomes whole with one rename, and only then
//! does the VMM end. Reconcile finishes or undoes one cut off halfway (see
//! `reconcile.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{VmState, VmmKind};
use crate::rpc::api::VmDetails;
use crate::store::VmRecord;
use crate::system::host::kvm_kind;
use crate::system::pid::{self, ExitWatch};
use crate::vmm::{control, firecracker, qemu};

use super::snapshot::{SnapshotDir, SnapshotMeta};
use super::{Manager, VmError, agent, fault};

/// How long a suspend may take to write the guest's memory.
const SAVE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a new VMM may take to load a snapshot.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

impl Manager {
    /// Stops running VM `name`'s vCPUs; its VMM keeps its memory.
    pub async fn pause(self: &Arc<Manager>, name: &str) -> Result<VmDetails, VmError> {
        let _held = self.operation(name).await;
        let vm = self.get(name)?;
        VmError::check_state(&vm, vm.state.is_running(), "pause")?;
        self.set_running(&vm, false).await?;
        self.store
            .lock()
            .set_vm_state(name, VmState::Paused, vm.process())?;
        self.event(
            name,
            "paused",
            "its vCPUs stopped; its memory stays in the VMM",
        );
        tracing::info!(vm = name, "paused");
        Ok(self.details(&self.get(name)?))
    }

    /// Runs paused VM `name` again, and sets its clock (it stood still).
    pub async fn resume(self: &Arc<Manager>, name: &str) -> Result<VmDetails, VmError> {
        let _held = self.operation(name).await;
        let vm = self.get(name)?;
        VmError::check_state(&vm, vm.state == VmState::Paused, "resume")?;
        self.set_running(&vm, true).await?;
        self.store
            .lock()
            .set_vm_state(name, VmState::Running, vm.process())?;
        self.event(name, "resumed", "its vCPUs run again");
        self.set_clock_after_pause(name).await;
        tracing::info!(vm = name, "resumed");
        Ok(self.details(&self.get(name)?))
    }

    /// Writes running or paused VM `name`'s memory and devices into a
    /// snapshot in its directory and ends its VMM; `vm start` restores it.
    pub async fn suspend(self: &Arc<Manager>, name: &str) -> Result<VmDetails, VmError> {
        let _held = self.operation(name).await;
        self.suspend_locked(name).await?;
        Ok(self.details(&self.get(name)?))
    }

    /// [`Manager::suspend`] with the VM's lock held; the snapshot's description.
    pub(crate) async fn suspend_locked(&self, name: &str) -> Result<SnapshotMeta, VmError> {
        let vm = self.get(name)?;
        VmError::check_state(
            &vm,
            matches!(vm.state, VmState::Running | VmState::Paused),
            "suspend",
        )?;
        let process = self.vmm_process(&vm, "suspend")?;
        let files = self.files(name);
        let socket = files.control_socket();
        let snapshot = SnapshotDir::new(&files.dir);
        let began = Instant::now();
        let watch =
            ExitWatch::new(process.pid).map_err(VmError::io(format!("/proc/{}", process.pid)))?;
        self.store
            .lock()
            .set_vm_state(name, VmState::Suspending, Some(process))?;
        fault::point("suspend:marked");

        let saved = async {
            let (version, memory) = save_memory(vm.vmm, &socket, &snapshot).await?;
            fault::point("suspend:saved");
            let meta = self
                .snapshot_meta(&vm, version, &memory, false)
                .map_err(|e| e.to_string())?;
            snapshot.commit(&memory, &meta).map_err(|e| e.to_string())?;
            Ok::<SnapshotMeta, String>(meta)
        }
        .await;
        let meta = match saved {
            Ok(meta) => meta,
            Err(message) => {
                // The guest goes on as it was; nothing of the snapshot stays.
                let _ = snapshot.discard_partial();
                if vm.state == VmState::Running {
                    let _ = control::resume(vm.vmm, &socket).await;
                }
                self.store
                    .lock()
                    .set_vm_state(name, vm.state, Some(process))?;
                self.event(name, "suspend-failed", &message);
                return Err(VmError::Control {
                    name: name.into(),
                    action: "suspend",
                    message,
                });
            }
        };
        fault::point("suspend:written");
        // The snapshot is whole: the VMM has nothing left to do (and
        // Firecracker no request that ends it but the guest's own).
        if vm.vmm == VmmKind::Qemu {
            let _ = qemu::qmp(&socket, "quit", None).await;
        }
        if vm.vmm == VmmKind::Firecracker || !watch.exited_within(Duration::from_secs(10)).await {
            let _ = pid::signal(process.pid, rustix::process::Signal::KILL);
            watch.exited_within(Duration::from_secs(10)).await;
        }
        self.release_if_current(name, process.pid, VmState::Suspended)
            .await;
        let how = format!(
            "{} MiB of memory and device state written in {:.1} s",
            meta.memory_bytes >> 20,
            began.elapsed().as_secs_f64()
        );
        self.event(name, "suspended", &how);
        tracing::info!(vm = name, how, "suspended");
        Ok(meta)
    }

    /// The VMM `vm` records as running it, for an `action` that needs one.
    pub(crate) fn vmm_process(
        &self,
        vm: &VmRecord,
        action: &'static str,
    ) -> Result<crate::store::VmProcess, VmError> {
        if vm.vmm == VmmKind::Firecracker {
            let socket = self.files(&vm.name).control_socket();
            firecracker::snapshot::place(&socket).map_err(|why| {
                VmError::Unsupported(format!("cannot {action} `{}`: {why}", vm.name))
            })?;
        }
        vm.process().ok_or_else(|| VmError::WrongState {
            name: vm.name.clone(),
            state: vm.state,
            action,
        })
    }

    /// Forgets suspended VM `name`'s snapshot: it is stopped, its disks as
    /// the snapshot left them (as after a power cut).
    pub(crate) fn discard_snapshot(&self, name: &str) -> Result<(), VmError> {
        let snapshot = SnapshotDir::new(&self.files(name).dir);
        snapshot
            .discard()
            .map_err(VmError::io(snapshot.dir.clone()))?;
        self.store
            .lock()
            .set_vm_state(name, VmState::Stopped, None)?;
        self.event(name, "snapshot-discarded", "booting cold from its disks");
        tracing::info!(vm = name, "discarded its snapshot");
        Ok(())
    }

    /// Pauses (`run` false) or resumes `vm`'s guest through its VMM.
    async fn set_running(&self, vm: &VmRecord, run: bool) -> Result<(), VmError> {
        let socket = self.files(&vm.name).control_socket();
        let (action, done) = match run {
            true => ("resume", control::resume(vm.vmm, &socket).await),
            false => ("pause", control::pause(vm.vmm, &socket).await),
        };
        done.map_err(|message| VmError::Control {
            name: vm.name.clone(),
            action,
            message,
        })
    }

    /// A guest's clock stood still while it was paused: set it, if its
    /// agent answers (a guest without one keeps its own time).
    pub(crate) async fn set_clock_after_pause(&self, name: &str) {
        match self.agent(name).await {
            Ok(agent) => {
                if let Err(e) = agent::sync_clock(&agent).await {
                    tracing::warn!(vm = name, error = %e, "cannot set the guest's clock");
                }
            }
            Err(e) => tracing::debug!(vm = name, error = %e, "no agent to set the clock through"),
        }
    }

    /// What a snapshot of `vm` taken now would record: the bundle's kernel
    /// and initrd, the VM's shape and writable disks as they are.
    /// `foreign_identity`: the guest in it is another VM's (a template's or
    /// a fork's source), so a restore gives it `vm`'s own identity.
    pub(crate) fn snapshot_meta(
        &self,
        vm: &VmRecord,
        vmm_version: String,
        memory: &std::fs::File,
        foreign_identity: bool,
    ) -> std::io::Result<SnapshotMeta> {
        let bundle = self
            .bundle()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let files = self.files(&vm.name);
        let disks = files.disks(vm);
        let writable: Vec<&std::path::Path> = disks
            .iter()
            .filter(|d| !d.read_only)
            .map(|d| d.path.as_path())
            .collect();
        let mut meta = SnapshotMeta::new(
            vm.vmm,
            vmm_version,
            accel_name(vm.vmm),
            vm.vcpus,
            vm.memory_mib,
            &bundle.kernel,
            bundle.initrd.as_deref(),
            memory.metadata()?.len(),
            &writable,
        )?;
        meta.foreign_identity = foreign_identity;
        Ok(meta)
    }

    /// The memory file to restore suspended VM `vm` from, once its
    /// snapshot is known to fit the VM and host as they are now.
    pub(crate) fn snapshot_to_restore(
        &self,
        vm: &VmRecord,
        bundle: &crate::bundle::Bundle,
    ) -> Result<std::path::PathBuf, VmError> {
        let snapshot = SnapshotDir::new(&self.files(&vm.name).dir);
        let unfit = |why: String| VmError::Snapshot {
            name: vm.name.clone(),
            why,
        };
        let meta = snapshot.read_meta().map_err(unfit)?;
        let memory = snapshot.memory();
        let now = SnapshotMeta::new(
            vm.vmm,
            meta.vmm_version.clone(),
            accel_name(vm.vmm),
            vm.vcpus,
            vm.memory_mib,
            &bundle.kernel,
            bundle.initrd.as_deref(),
            std::fs::metadata(&memory)
                .map_err(|e| unfit(format!("cannot read {}: {e}", memory.display())))?
                .len(),
            &meta
                .disks
                .iter()
                .map(|d| d.path.as_path())
                .collect::<Vec<_>>(),
        )
        .map_err(|e| unfit(e.to_string()))?;
        match meta.mismatch(&now) {
            Some(why) => Err(unfit(why)),
            None => Ok(memory),
        }
    }

    /// After a restoring VMM has loaded VM `vm`'s snapshot (and is held
    /// paused): the snapshot is consumed, then the guest runs. A VMM of
    /// another version than the snapshot's is refused first. True when the
    /// guest still has another VM's identity (see [`Manager::assume_identity`]).
    pub(crate) async fn finish_restore(&self, vm: &VmRecord) -> Result<bool, VmError> {
        let files = self.files(&vm.name);
        let socket = files.control_socket();
        let snapshot = SnapshotDir::new(&files.dir);
        let unfit = |why: String| VmError::Snapshot {
            name: vm.name.clone(),
            why,
        };
        let meta = snapshot.read_meta().map_err(unfit)?;
        if vm.vmm == VmmKind::Firecracker {
            // The launch loaded the snapshot already (a version it cannot
            // read fails there, in Firecracker's words).
            let client = firecracker::Client::new(&socket);
            let info = client
                .describe_instance()
                .await
                .map_err(|e| unfit(crate::system::host::error_chain(&e)))?;
            if info.vmm_version != meta.vmm_version {
                return Err(unfit(format!(
                    "the snapshot was taken by Firecracker {}, and Firecracker is now {}",
                    meta.vmm_version, info.vmm_version
                )));
            }
            self.consume_snapshot(&snapshot)?;
            return client
                .set_vm_state(firecracker::models::VmRunState::Resumed)
                .await
                .map(|()| meta.foreign_identity)
                .map_err(|e| VmError::Control {
                    name: vm.name.clone(),
                    action: "resume",
                    message: crate::system::host::error_chain(&e),
                });
        }
        let qemu_failed = |e: qemu::QemuError| unfit(crate::system::host::error_chain(&e));
        let mut qmp = qemu::connect_new(&socket, LOAD_TIMEOUT)
            .await
            .map_err(qemu_failed)?;
        let version = qemu::version(&mut qmp).await.map_err(qemu_failed)?;
        if version != meta.vmm_version {
            return Err(unfit(format!(
                "the snapshot was taken by QEMU {}, and QEMU is now {version}",
                meta.vmm_version
            )));
        }
        qemu::wait_restored(&mut qmp, LOAD_TIMEOUT)
            .await
            .map_err(qemu_failed)?;
        self.consume_snapshot(&snapshot)?;
        // On this connection: QEMU's monitor serves one client at a time.
        qmp.execute("cont", None)
            .await
            .map(|_| meta.foreign_identity)
            .map_err(|e| VmError::Control {
                name: vm.name.clone(),
                action: "resume",
                message: crate::system::host::error_chain(&e),
            })
    }

    /// From here a restored guest's disks move on: the snapshot no longer
    /// fits them, so it goes before the guest runs.
    fn consume_snapshot(&self, snapshot: &SnapshotDir) -> Result<(), VmError> {
        snapshot
            .discard()
            .map_err(VmError::io(snapshot.dir.clone()))?;
        fault::point("restore:consumed");
        Ok(())
    }
}

/// Writes the guest behind control socket `socket` into a new snapshot
/// begun in `snapshot` (the VMM holds the guest paused after); the VMM's
/// version and the memory file.
pub(crate) async fn save_memory(
    vmm: VmmKind,
    socket: &std::path::Path,
    snapshot: &SnapshotDir,
) -> Result<(String, std::fs::File), String> {
    match vmm {
        VmmKind::Qemu => save_qemu(socket, snapshot).await,
        VmmKind::Firecracker => {
            drop(snapshot.begin().map_err(|e| e.to_string())?);
            let (state, memory) = (snapshot.partial_state(), snapshot.partial_memory());
            let version =
                firecracker::snapshot::save(socket, &state, &memory, SAVE_TIMEOUT).await?;
            let memory = std::fs::File::open(&memory).map_err(|e| e.to_string())?;
            Ok((version, memory))
        }
    }
}

/// QEMU's half of [`save_memory`]: its memory and device stream, into a
/// descriptor handed over its monitor socket.
async fn save_qemu(
    socket: &std::path::Path,
    snapshot: &SnapshotDir,
) -> Result<(String, std::fs::File), String> {
    let chain = |e: qemu::QemuError| crate::system::host::error_chain(&e);
    // A VMM just launched may not have bound its socket yet.
    let mut qmp = qemu::connect_new(socket, Duration::from_secs(10))
        .await
        .map_err(chain)?;
    let version = qemu::version(&mut qmp).await.map_err(chain)?;
    drop(qmp);
    let memory = snapshot.begin().map_err(|e| e.to_string())?;
    qemu::save(socket, &memory, SAVE_TIMEOUT)
        .await
        .map_err(chain)?;
    Ok((version, memory))
}

/// How a VMM of `vmm` runs guests on this host.
fn accel_name(vmm: VmmKind) -> &'static str {
    match vmm {
        VmmKind::Qemu => match qemu::accel_for(kvm_kind()) {
            qemu::Accel::Kvm => "kvm",
            qemu::Accel::Tcg => "tcg",
        },
        VmmKind::Firecracker => "kvm",
    }
}
