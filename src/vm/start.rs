//! `vm start`: bridge and tap up, VMM launched in its own session, then wait
//! until the guest answers SSH with the host key banger gave it.

use std::sync::Arc;
use std::time::Duration;

use crate::model::{RootMode, VmState, VmmKind};
use crate::rpc::api::VmOpResult;
use crate::store::VmProcess;
use crate::system::fs::file_len;
use crate::system::host::kvm_kind;
use crate::system::pid::{self, ExitWatch};
use crate::vmm::disklock::DiskLocks;
use crate::vmm::launch::{self, LaunchPlan};
use crate::vmm::{VmmError, jail, qemu, select, vmm_user};

use super::files::tail;
use super::rollback::{Rollback, Undo};
use super::{Clock, Manager, VmError, agent, fault};

impl Manager {
    /// Boots a stopped VM with the disks, address and keys it had, or
    /// restores a suspended one from its snapshot (unless `cold`: then the
    /// snapshot is discarded and it boots); waits for SSH when `wait_ssh`.
    pub async fn start(
        self: &Arc<Manager>,
        name: &str,
        wait_ssh: bool,
        cold: bool,
    ) -> Result<VmOpResult, VmError> {
        let _held = self.operation(name).await;
        let mut clock = Clock::start();
        if cold && self.get(name)?.state == VmState::Suspended {
            self.discard_snapshot(name)?;
        }
        let booted = self.start_locked(name, &mut clock, wait_ssh).await?;
        let vm = self.get(name)?;
        Ok(booted.result(self.details(&vm), clock))
    }

    /// [`Manager::start`] with the VM's lock held. With `wait_ssh` false it
    /// returns as soon as the VMM runs the guest. A boot that stalls (its
    /// console silent for `boot_stall_secs` while SSH does not answer) is
    /// killed and booted once more from the same disks; a second stall
    /// fails with the console's tail.
    pub(crate) async fn start_locked(
        self: &Arc<Manager>,
        name: &str,
        clock: &mut Clock,
        wait_ssh: bool,
    ) -> Result<Booted, VmError> {
        match self.boot(name, clock, wait_ssh, Attempt::First).await {
            Err(VmError::Stalled { silent_secs, .. }) => {
                let why = format!(
                    "the console was silent for {silent_secs} s and SSH did not answer: killed, booting again from the same disks"
                );
                tracing::warn!(vm = name, "boot stalled: {why}");
                self.event(name, "boot-stalled", &why);
                clock.lap("stalled boot");
                let mut booted = self.boot(name, clock, wait_ssh, Attempt::Again).await?;
                booted.stalled_boots = 1;
                Ok(booted)
            }
            other => other,
        }
    }

    /// One boot of VM `name`: network, VMM, and the wait for SSH.
    async fn boot(
        self: &Arc<Manager>,
        name: &str,
        clock: &mut Clock,
        wait_ssh: bool,
        attempt: Attempt,
    ) -> Result<Booted, VmError> {
        let vm = self.get(name)?;
        VmError::check_state(&vm, vm.state.can_start(), "start")?;
        let bundle = self.bundle()?;
        // A suspended VM is restored, once its snapshot is known to fit.
        let restore = match vm.state {
            VmState::Suspended => Some(self.snapshot_to_restore(&vm, &bundle)?),
            _ => None,
        };
        let intent = match restore {
            Some(_) => VmState::Restoring,
            None => VmState::Starting,
        };
        let vmm = vm.vmm;
        let lease = vm
            .lease
            .clone()
            .ok_or_else(|| VmError::NoLease(name.into()))?;
        let (ip, tap) = (lease.ip, lease.tap.clone());
        let firecracker = select::firecracker_binary(&self.config, Some(&bundle));
        let files = self.files(name);
        // A VMM that still runs on these disks (one this daemon lost track
        // of, or another daemon's) must not get a twin, and its tap must
        // not be touched: find out before changing anything.
        let drives = files.disks(&vm);
        check_disks_free(&drives).await?;
        let logs = self.vmm_logs(&files);
        let jailer = match vmm {
            VmmKind::Firecracker => jail::jailer_binary(&self.config, firecracker.as_deref()),
            VmmKind::Qemu => None,
        };
        let user = match vmm_user::for_guest(
            vmm,
            self.config.vmm_uid_base,
            self.network.subnet(),
            ip,
            jailer.is_some(),
        ) {
            Ok(user) => user,
            Err(why) => {
                tracing::warn!(vm = name, %why, "the VMM runs as root");
                self.event(name, "vmm-runs-as-root", &why);
                None
            }
        };
        // Its tap is made for the user the VMM runs as.
        let tap_owner = user.as_ref().map_or(self.uid, |u| u.uid);
        let mut rollback = Rollback::new(self.store.clone(), self.network.netadmin().clone());

        let mut booted = Booted::default();
        let result = async {
            {
                // Bridge, tap and the state that says they are needed, under
                // one hold of the network lock (see `network_cleanup`).
                let held = self.network.lock().await;
                self.network.ensure_bridge(&held).await?;
                self.store.lock().set_vm_state(name, intent, None)?;
                // Fence first: the guard knows this tap, MAC and IP before
                // the tap exists, so the guest never sends unfenced.
                self.network.sync_nat_held(&held).await?;
                self.network.tap_add(tap.as_str(), tap_owner).await?;
                rollback.push(Undo::DeleteTap(tap.to_string()));
            }
            self.network.ensure_dns().await;
            fault::point("start:tap");
            clock.lap("network");

            let tcg = vmm == VmmKind::Qemu && qemu::accel_for(kvm_kind()) == qemu::Accel::Tcg;
            let mut kernel_args = kernel_args(
                &bundle.defaults.kernel_args,
                &self.network.subnet().kernel_ip_arg(ip, name),
                tcg,
            );
            if vm.root_mode == RootMode::Layered {
                kernel_args.push_str(UPPER_ARG);
            }
            if let Some(stall) = fault::stall_this_boot().filter(|_| restore.is_none()) {
                kernel_args.push_str(stall);
            }
            let plan = LaunchPlan {
                name: name.to_string(),
                vcpus: vm.vcpus,
                memory_mib: vm.memory_mib,
                kernel: bundle.kernel.clone(),
                initrd: bundle.initrd.clone(),
                kernel_args,
                tap: tap.clone(),
                mac: lease.mac,
                drives,
                user,
                jailer,
                firecracker: firecracker.clone(),
                agent: bundle.agent().is_ok(),
                restore: restore.clone(),
            };
            let (log_from, console_from) = (file_len(&files.vmm_log), file_len(&files.console));
            let launched = launch::launch(vmm, &plan, &files.run_paths(), &logs, |pid| {
                rollback.push(Undo::Kill(pid));
                let start_ticks = pid::start_ticks(pid).unwrap_or(0);
                self.store.lock().set_vm_state(
                    name,
                    intent,
                    Some(VmProcess { pid, start_ticks }),
                )?;
                fault::point("start:spawned");
                Ok::<(), VmError>(())
            })
            .await
            .map_err(|e| match e {
                VmError::Vmm(VmmError::Launch { vmm, source }) => VmError::Launch {
                    vmm,
                    source,
                    log_tail: Some(tail(&files.vmm_log, log_from, 15)),
                },
                other => other,
            })?;
            let pid = launched.pid;
            let watch = ExitWatch::new(pid).map_err(VmError::io(format!("/proc/{pid}")))?;
            let mut foreign_identity = false;
            if restore.is_some() {
                tokio::select! {
                    restored = self.finish_restore(&vm) => foreign_identity = restored?,
                    () = watch.exited() => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return Err(VmError::Snapshot {
                            name: name.into(),
                            why: format!(
                                "the {vmm} VMM exited loading it; its log ends with:\n{}",
                                tail(&files.vmm_log, log_from, 15)
                            ),
                        });
                    }
                }
                booted.restored = true;
                clock.lap("restore");
            }
            let start_ticks = pid::start_ticks(pid).unwrap_or(0);
            self.store.lock().set_vm_state(
                name,
                VmState::Running,
                Some(VmProcess { pid, start_ticks }),
            )?;
            self.watch(name, pid, Some(launched.child));
            fault::point("start:running");
            clock.lap("launch");
            if foreign_identity {
                // Fenced until now: the guard drops what it sends as the
                // VM whose memory it woke with.
                self.assume_identity(&vm).await?;
                clock.lap("identity");
            }
            booted.vmm_started_ms = Some(clock.total().as_millis() as u64);
            // The guard and NAT already hold this VM (fenced before its tap).
            self.network.open_vm_ports(name).await?;
            clock.lap("nat");
            fault::point("start:nat");
            if !wait_ssh {
                return Ok(());
            }

            let began = std::time::Instant::now();
            let boot = BootWatch {
                vmm,
                files: &files,
                log_from,
                console_from,
                exit: &watch,
                attempt,
                restored: booted.restored,
                identity_set: foreign_identity,
            };
            let readiness = self.wait_ready(name, &vm, ip, &boot).await?;
            // The wait began this long after the request.
            let offset = clock.total().saturating_sub(began.elapsed());
            let at = |d: Duration| Some((offset + d).as_millis() as u64);
            if let Some(agent) = readiness.agent {
                booted.agent_ready_ms = at(agent);
            }
            match readiness.ssh {
                Some(ssh) => {
                    clock.lap("ssh ready");
                    booted.ssh_ready_ms = at(ssh);
                }
                None => clock.lap("agent ready (no sshd)"),
            }
            Ok(())
        }
        .await;

        match result {
            Ok(()) => {
                rollback.disarm();
                let how = match booted.ssh_ready_ms {
                    Some(ms) if booted.restored => {
                        format!("restored from its snapshot; SSH ready in {ms} ms")
                    }
                    Some(ms) => format!("SSH ready in {ms} ms"),
                    None => format!("VMM started in {} ms", clock.total().as_millis()),
                };
                self.event(name, "started", &how);
                tracing::info!(vm = name, ?booted, "started");
                Ok(booted)
            }
            Err(e) => {
                self.network.close_vm_ports(name);
                rollback.run().await;
                // A restore that failed before it consumed the snapshot
                // leaves the VM suspended, its snapshot as it was.
                let after = match restore {
                    Some(_) if super::snapshot::SnapshotDir::new(&files.dir).exists() => {
                        VmState::Suspended
                    }
                    _ => VmState::Failed,
                };
                let _ = self.store.lock().set_vm_state(name, after, None);
                // The VM may already be in the NAT table: take it out again.
                if let Err(nat) = self.network.sync_nat().await {
                    tracing::error!(vm = name, error = %nat, "cannot update the NAT table");
                }
                // A first stall is booted again; the caller says so.
                if !(matches!(e, VmError::Stalled { .. }) && attempt == Attempt::First) {
                    self.event(name, "start-failed", &e.to_string());
                }
                Err(e)
            }
        }
    }
    /// Waits until the booting guest is ready: its agent answering (where
    /// it has one), then banger's own SSH client getting in (the guest
    /// accepts the user's key and shows the host key banger gave it). The
    /// agent says when sshd accepts, so SSH is tried once it does, not
    /// polled; a guest without sshd is ready with its agent alone. A silent
    /// console is a stall; a VMM that exits, an early exit.
    async fn wait_ready(
        &self,
        name: &str,
        vm: &crate::store::VmRecord,
        ip: std::net::Ipv4Addr,
        boot: &BootWatch<'_>,
    ) -> Result<Readiness, VmError> {
        let target = crate::ssh::Target {
            addr: std::net::SocketAddr::from((ip, 22)),
            user: "root".into(),
            key: self.ssh_key(),
            host_key: vm.host_key.clone().unwrap_or_default(),
        };
        let channel = self.agent_channel(vm).ok();
        let began = std::time::Instant::now();
        let ready = async {
            let mut readiness = Readiness::default();
            if let Some(channel) = &channel {
                let (agent, hello) = self
                    .wait_agent(name, channel, self.ssh_timeout())
                    .await
                    .map_err(NotReady::Agent)?;
                readiness.agent = Some(began.elapsed());
                // A guest given its identity had its clock set with it.
                if !boot.identity_set
                    && let Err(e) = agent::sync_clock(&agent).await
                {
                    tracing::warn!(vm = name, error = %e, "cannot set the guest's clock");
                }
                // An sshd that accepts is there; else ask whether there is one.
                if !hello.sshd_accepting
                    && !agent::has_sshd(&agent).await.map_err(NotReady::Agent)?
                {
                    return Ok(readiness);
                }
                agent::wait_sshd(&agent, self.ssh_timeout())
                    .await
                    .map_err(NotReady::Agent)?;
            }
            crate::ssh::wait_for(&target, self.ssh_timeout())
                .await
                .map_err(NotReady::Ssh)?
                .close()
                .await;
            readiness.ssh = Some(began.elapsed());
            Ok::<Readiness, NotReady>(readiness)
        };
        let files = boot.files;
        let console_tail = || tail(&files.console, boot.console_from, 25);
        // A restored guest writes nothing to its console: it does not boot.
        let stall = match boot.restored {
            true => Duration::ZERO,
            false => Duration::from_secs(self.config.boot_stall_secs),
        };
        tokio::select! {
            result = ready => result.map_err(|e| e.into_error(console_tail())),
            silent = console_silent(&files.console, stall), if !stall.is_zero() => Err(VmError::Stalled {
                times: boot.attempt.times(),
                silent_secs: silent.as_secs(),
                console_tail: console_tail(),
            }),
            () = boot.exit.exited() => {
                // The log relay writes the last words a moment later.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(VmError::ExitedEarly {
                    vmm: boot.vmm,
                    log_tail: tail(&files.vmm_log, boot.log_from, 15),
                    console_tail: console_tail(),
                })
            }
        }
    }
}

/// What a boot's readiness wait watches: the VMM's exit and its logs from
/// where this boot's lines begin.
struct BootWatch<'a> {
    vmm: VmmKind,
    files: &'a super::VmFiles,
    log_from: u64,
    console_from: u64,
    exit: &'a ExitWatch,
    attempt: Attempt,
    /// The guest was restored from a snapshot, not booted.
    restored: bool,
    /// Its agent gave it its own identity (and clock) after the restore.
    identity_set: bool,
}

/// Fails when another VMM holds `drives`. A jailed Firecracker's log relay
/// holds its locks and lets go a moment after the VMM exits: a busy disk
/// gets up to 3 s to come free.
async fn check_disks_free(drives: &[crate::vmm::disklock::Disk]) -> Result<(), VmError> {
    use crate::vmm::disklock::DiskLockError;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match DiskLocks::check(drives) {
            Err(DiskLockError::Busy { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return other.map_err(|e| VmError::Vmm(e.into())),
        }
    }
}

/// Tells banger's initrd to layer the root: the image (`/dev/vda`, mounted
/// read-only) under the upper disk (see [`super::VmFiles::disks`]).
const UPPER_ARG: &str = " banger.upper=/dev/vdb";

/// When a booting guest became ready, from the start of the wait.
#[derive(Debug, Default)]
struct Readiness {
    agent: Option<Duration>,
    ssh: Option<Duration>,
}

/// Why a booting guest never became ready.
enum NotReady {
    Agent(crate::agent::AgentError),
    Ssh(crate::ssh::SshError),
}

impl NotReady {
    fn into_error(self, console_tail: String) -> VmError {
        match self {
            NotReady::Agent(source) => VmError::AgentNotReady {
                console_tail,
                source,
            },
            NotReady::Ssh(source) => VmError::NotReady {
                console_tail,
                source: Box::new(source),
            },
        }
    }
}

/// Which boot of one start this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    First,
    /// After the first stalled.
    Again,
}

impl Attempt {
    fn times(self) -> &'static str {
        match self {
            Attempt::First => "once",
            Attempt::Again => "twice",
        }
    }
}

/// Completes when nothing has been written to the console at `path` for
/// `quiet`; returns how long it was silent. Any change of its length
/// (rotation included) is output.
async fn console_silent(path: &std::path::Path, quiet: Duration) -> Duration {
    let mut last = file_len(path);
    let mut since = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let len = file_len(path);
        if len != last {
            (last, since) = (len, std::time::Instant::now());
        } else if since.elapsed() >= quiet {
            return since.elapsed();
        }
    }
}

/// How far a boot got, and when.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Booted {
    pub vmm_started_ms: Option<u64>,
    pub agent_ready_ms: Option<u64>,
    pub ssh_ready_ms: Option<u64>,
    /// Boots that stalled and were killed before this one.
    pub stalled_boots: u32,
    /// Restored from a snapshot instead of booted.
    pub restored: bool,
}

impl Booted {
    pub fn result(self, vm: crate::rpc::api::VmDetails, clock: Clock) -> VmOpResult {
        VmOpResult {
            vm,
            timings: clock.steps,
            ssh_ready_ms: self.ssh_ready_ms,
            agent_ready_ms: self.agent_ready_ms,
            vmm_started_ms: self.vmm_started_ms,
            stalled_boots: self.stalled_boots,
            restored: self.restored,
            template: None,
            booted_because: None,
            source_paused_ms: None,
        }
    }
}

/// The guest's command line: the bundle's arguments, the root disk unless
/// they name one, the network, and under software emulation the host TSC
/// frequency (else the PIT calibration can hang, and the TSC is marked
/// unstable and time lags).
fn kernel_args(bundle_args: &str, ip_arg: &str, tcg: bool) -> String {
    let mut args = bundle_args.trim().to_string();
    if !args.split_whitespace().any(|a| a.starts_with("root=")) {
        args.push_str(" root=/dev/vda rw");
    }
    args.push(' ');
    args.push_str(ip_arg);
    if tcg && let Some(khz) = qemu::host_tsc_khz() {
        args.push_str(&format!(" tsc_early_khz={khz} tsc=reliable"));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::kernel_args;

    #[test]
    fn root_is_added_only_when_missing() {
        let ip = "ip=10.0.0.2::10.0.0.1:255.255.255.0:b:eth0:off";
        assert_eq!(
            kernel_args("console=ttyS0", ip, false),
            format!("console=ttyS0 root=/dev/vda rw {ip}")
        );
        assert_eq!(
            kernel_args("console=ttyS0 root=/dev/vda rw", ip, false),
            format!("console=ttyS0 root=/dev/vda rw {ip}")
        );
    }
}
