//! `vm stop` and `vm restart`: ask the guest to shut down, kill the VMM if it
//! does not in time, keep the disks and the lease.

use std::sync::Arc;
use std::time::Duration;

use rustix::process::Signal;

use crate::model::VmState;
use crate::rpc::api::{VmDetails, VmOpResult};
use crate::store::{VmProcess, VmRecord};
use crate::system::pid::{self, ExitWatch};

use super::{Clock, Manager, VmError, agent, fault};
use crate::vmm::control;

impl Manager {
    /// Stops VM `name`: gracefully unless `force`.
    pub async fn stop(self: &Arc<Manager>, name: &str, force: bool) -> Result<VmDetails, VmError> {
        let _held = self.operation(name).await;
        self.stop_locked(name, force).await?;
        Ok(self.details(&self.get(name)?))
    }

    /// Stops then starts VM `name`.
    pub async fn restart(self: &Arc<Manager>, name: &str) -> Result<VmOpResult, VmError> {
        let _held = self.operation(name).await;
        let mut clock = Clock::start();
        if self.get(name)?.state.can_stop() {
            self.stop_locked(name, false).await?;
            clock.lap("stop");
        }
        let booted = self.start_locked(name, &mut clock, true).await?;
        let vm = self.get(name)?;
        Ok(booted.result(self.details(&vm), clock))
    }

    /// Stops the build VM `name`; true when the guest shut down by itself
    /// (so its filesystem was unmounted cleanly).
    pub(crate) async fn stop_build_vm(&self, name: &str) -> Result<bool, VmError> {
        let _held = self.operation(name).await;
        self.stop_locked(name, false).await
    }

    /// Stops VM `name`; true when the guest shut down by itself, false
    /// when the VMM was killed (or was already gone).
    pub(crate) async fn stop_locked(&self, name: &str, force: bool) -> Result<bool, VmError> {
        let vm = self.get(name)?;
        VmError::check_state(&vm, vm.state.can_stop(), "stop")?;
        let Some(process) = vm.pid.zip(vm.pid_start_ticks) else {
            self.store
                .lock()
                .set_vm_state(name, VmState::Stopped, None)?;
            return Ok(false);
        };
        let (pid, start_ticks) = process;
        self.store.lock().set_vm_state(
            name,
            VmState::Stopping,
            Some(VmProcess { pid, start_ticks }),
        )?;
        fault::point("stop:marked");
        if vm.state == VmState::Paused && !force {
            // A paused guest cannot hear a shutdown request: run it again.
            let socket = self.files(name).control_socket();
            if let Err(e) = control::resume(vm.vmm, &socket).await {
                tracing::warn!(vm = name, error = %e, "cannot resume the paused VM to stop it");
            }
        }
        let clean = self.halt(&vm, force).await?;
        fault::point("stop:halted");
        self.release_if_current(name, pid, VmState::Stopped).await;
        let how = if clean {
            "shut down cleanly"
        } else {
            "VMM killed"
        };
        self.event(name, "stopped", how);
        tracing::info!(vm = name, how, "stopped");
        Ok(clean)
    }

    /// Ends VM `vm`'s VMM: asks the guest to shut down (unless `force`)
    /// and kills the VMM if it does not within the stop timeout. Changes no
    /// state. True when the guest shut down by itself; false when it was
    /// killed or there was no VMM of this VM to stop.
    pub(crate) async fn halt(&self, vm: &VmRecord, force: bool) -> Result<bool, VmError> {
        let files = self.files(&vm.name);
        let Some((pid, _)) = vm
            .pid
            .zip(vm.pid_start_ticks)
            .filter(|&(pid, ticks)| pid::is_vmm_of(pid, ticks, &files.dir))
        else {
            return Ok(false);
        };
        let watch = ExitWatch::new(pid).map_err(VmError::io(format!("/proc/{pid}")))?;
        let timeout = Duration::from_secs(self.config.stop_timeout_secs);
        let mut clean = false;
        if !force {
            // The agent shuts the guest down cleanly whatever its init
            // (sync first); the VMM's own request is the fallback.
            let asked = match self.held_agent(&vm.name) {
                Some(agent) => agent::request_shutdown(&agent, vm.vmm).await,
                None => Err(crate::agent::AgentError::Closed),
            };
            let requested = match asked {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::debug!(vm = %vm.name, error = %e, "no shutdown through the agent");
                    control::request_shutdown(vm.vmm, &files.control_socket()).await
                }
            };
            match requested {
                Ok(()) => {
                    fault::point("stop:requested");
                    clean = watch.exited_within(timeout).await;
                }
                Err(e) => {
                    tracing::warn!(vm = %vm.name, error = %e, "shutdown request failed; killing")
                }
            }
        }
        if !clean {
            if !force {
                tracing::warn!(
                    vm = %vm.name,
                    "guest did not shut down in {} s; killing the VMM",
                    timeout.as_secs()
                );
            }
            pid::signal(pid, Signal::KILL).map_err(VmError::io(format!("/proc/{pid}")))?;
            watch.exited_within(Duration::from_secs(10)).await;
        }
        Ok(clean)
    }
}
