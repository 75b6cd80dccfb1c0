//! VM lifecycle: one file per verb, each an `impl Manager` block; the VMM
//! processes are the VMM wing's ([`crate::vmm`]); state guards on [`VmState`].
//!
//! Every mutating operation holds its VM's lock for its whole run and runs
//! in a task of its own, so a client that hangs up cannot cut it in half.

mod agent;
mod clone;
mod create;
mod delete;
mod error;
mod events;
mod export;
pub mod fault;
mod files;
mod identity;
mod monitor;
mod publish;
mod reconcile;
mod rollback;
mod snapshot;
mod start;
mod stats;
mod stop;
mod suspend;
mod template;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use error::VmError;
pub use files::{VmFiles, tail as log_tail};

use crate::bundle::Bundle;
use crate::config::Config;
use crate::image::Images;
use crate::model::{DiskRole, RootMode};
use crate::network::Network;
use crate::paths::Paths;
use crate::rpc::api::{DiskUsage, Timing, VmDetails};
use crate::store::{SharedStore, VmRecord};

/// The name the `.vm` DNS server answers for VM `name`.
pub fn dns_name(name: &str) -> String {
    format!("{name}.vm")
}

/// Owns every VM of one user.
pub struct Manager {
    pub(crate) paths: Paths,
    pub config: Config,
    pub(crate) store: SharedStore,
    pub(crate) images: Arc<Images>,
    /// The host network the VMs use: bridge, taps, NAT, DNS, published ports.
    pub(crate) network: Arc<Network>,
    /// The daemon's uid: taps are made for it, so the VMM needs no root.
    pub(crate) uid: u32,
    /// The guest agents of running VMs, one connection each.
    agents: tokio::sync::Mutex<HashMap<String, Arc<crate::agent::Agent>>>,
    /// One lock per VM name, held by the operation working on it.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Read-held by every operation in flight; a stopping daemon takes it
    /// for writing to wait for them and to let no new one begin.
    inflight: Arc<tokio::sync::RwLock<()>>,
}

/// One operation on one VM: its VM's lock, and a say in daemon shutdown.
pub(crate) struct Operation {
    _vm: tokio::sync::OwnedMutexGuard<()>,
    _inflight: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl Manager {
    /// The VMs of the store, on `network`, made from `images`.
    pub fn new(
        paths: Paths,
        config: Config,
        store: SharedStore,
        images: Arc<Images>,
        network: Arc<Network>,
    ) -> Arc<Manager> {
        Arc::new(Manager {
            images,
            network,
            paths,
            config,
            store,
            uid: crate::paths::current_uid(),
            locks: Mutex::new(HashMap::new()),
            agents: tokio::sync::Mutex::new(HashMap::new()),
            inflight: Arc::new(tokio::sync::RwLock::new(())),
        })
    }

    /// The runtime bundle, read afresh so a rebuilt one is picked up.
    pub fn bundle(&self) -> Result<Bundle, VmError> {
        Ok(Bundle::locate(
            self.config.runtime_dir.as_deref(),
            &self.paths.data_dir,
        )?)
    }

    /// The lock serializing operations on VM `name`: one per name for as
    /// long as anyone holds or waits for it (each of them owns a clone).
    /// Entries only the map still owns are dropped here, so the map stays
    /// as small as the set of names in use without a delete ever handing a
    /// later caller a second lock for a name someone still waits on.
    pub(crate) fn vm_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|n, lock| n == name || Arc::strong_count(lock) > 1);
        locks.entry(name.to_string()).or_default().clone()
    }

    /// Waits its turn on VM `name`; the guard is held for the whole operation.
    pub(crate) async fn operation(&self, name: &str) -> Operation {
        let inflight = self.inflight.clone().read_owned().await;
        let vm = self.vm_lock(name).lock_owned().await;
        Operation {
            _vm: vm,
            _inflight: inflight,
        }
    }

    /// Daemon shutdown: waits up to `grace` for the operations in flight
    /// and lets no new one begin. One still running after that is cut off
    /// where it stands, in a state that reconcile finishes or undoes.
    pub async fn finish_operations(&self, grace: Duration) {
        match tokio::time::timeout(grace, self.inflight.clone().write_owned()).await {
            // Held until the process exits: nothing starts any more.
            Ok(all_done) => std::mem::forget(all_done),
            Err(_) => tracing::warn!(
                "operations still running after {} s; the next daemon finishes or undoes them",
                grace.as_secs()
            ),
        }
    }

    pub(crate) fn files(&self, name: &str) -> VmFiles {
        VmFiles::new(&self.paths, name)
    }

    /// Where VM `files`' VMM writes its console and log, through the relay.
    pub(crate) fn vmm_logs(&self, files: &VmFiles) -> crate::vmm::vmm_io::VmmLogs {
        crate::vmm::vmm_io::VmmLogs {
            console: files.console.clone(),
            vmm_log: files.vmm_log.clone(),
            cap: self.config.log_cap(),
            // The daemon runs the relay from its own binary, through the
            // link that still works after an upgrade replaced the file.
            relay: PathBuf::from("/proc/self/exe"),
            log_fifo: None,
        }
    }

    /// The user's SSH key, shared by all their VMs.
    pub(crate) fn ssh_key(&self) -> PathBuf {
        self.paths.state_dir.join("ssh").join("id_ed25519")
    }

    pub fn get(&self, name: &str) -> Result<VmRecord, VmError> {
        Ok(self.store.lock().get_vm(name)?)
    }

    /// Everything `vm show` says about a VM.
    pub fn details(&self, vm: &VmRecord) -> VmDetails {
        let files = self.files(&vm.name);
        let live_pid = vm.pid.filter(|_| vm.state.can_stop());
        let uptime_secs = live_pid.and_then(|pid| {
            crate::system::proc::ProcStats::read(pid)
                .ok()
                .map(|s| s.uptime().as_secs())
        });
        let agent = self.agent_info(vm);
        VmDetails {
            name: vm.name.clone(),
            state: vm.state,
            role: vm.role,
            image: vm.image.clone(),
            vmm: vm.vmm,
            vmm_detail: crate::vmm::select::describe(vm.vmm),
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            disk_bytes: vm.disk_bytes,
            work_disk_bytes: vm.work_disk_bytes,
            ip: vm.lease.as_ref().map(|l| l.ip),
            mac: vm.lease.as_ref().map(|l| l.mac),
            tap: vm.lease.as_ref().map(|l| l.tap.clone()),
            dns_name: dns_name(&vm.name),
            nat: vm.nat,
            pid: vm.pid,
            vmm_uid: live_pid.and_then(crate::system::proc::uid_of),
            created_at: vm.created_at,
            started_at: vm.started_at,
            uptime_secs,
            console_log: files.console.clone(),
            vmm_log: files.vmm_log.clone(),
            known_hosts: files.known_hosts.clone(),
            dir: files.dir,
            ssh_key: self.ssh_key(),
            host_key: vm.host_key.clone(),
            root_mode: vm.root_mode,
            root_mode_detail: match vm.root_mode {
                RootMode::Layered => format!(
                    "image {} read-only and shared, under this VM's upper disk",
                    vm.base_path
                        .as_deref()
                        .map_or("-".into(), |p| p.display().to_string())
                ),
                RootMode::Clone if vm.role == crate::model::VmRole::Build => {
                    "a whole clone: an image build boots its own copy read-write".into()
                }
                RootMode::Clone => match self.bundle() {
                    Ok(bundle) => format!("its own clone of the image; {}", bundle.root_mode().1),
                    Err(_) => "its own clone of the image".into(),
                },
            },
            disks: self.disk_usage(vm),
            published: self.published(vm),
            events: self.recent_events(&vm.name),
            agent: agent.as_ref().ok().cloned(),
            agent_detail: agent.err(),
        }
    }

    /// The ports `vm` publishes, as `ADDR:HOSTPORT:GUESTPORT/tcp`.
    pub fn published(&self, vm: &VmRecord) -> Vec<String> {
        self.store
            .lock()
            .ports_of(&vm.name)
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// `vm`'s disks with their apparent size and the space they take.
    pub fn disk_usage(&self, vm: &VmRecord) -> Vec<DiskUsage> {
        let files = self.files(&vm.name);
        files
            .disks(vm)
            .into_iter()
            .map(|disk| {
                let role = if disk.read_only {
                    DiskRole::Image
                } else if disk.path == files.upper {
                    DiskRole::Upper
                } else if disk.path == files.work_disk {
                    DiskRole::Work
                } else {
                    DiskRole::Root
                };
                let (apparent_bytes, used_bytes) = crate::system::fs::usage(&disk.path);
                DiskUsage {
                    role,
                    shared: disk.read_only,
                    path: disk.path,
                    apparent_bytes,
                    used_bytes,
                }
            })
            .collect()
    }

    fn ssh_timeout(&self) -> Duration {
        Duration::from_secs(self.config.ssh_timeout_secs)
    }
}

/// Step timings of one operation.
#[derive(Debug)]
pub(crate) struct Clock {
    start: Instant,
    last: Instant,
    pub steps: Vec<Timing>,
}

impl Clock {
    pub fn start() -> Clock {
        let now = Instant::now();
        Clock {
            start: now,
            last: now,
            steps: Vec::new(),
        }
    }

    /// Records the time since the previous step under `step`.
    pub fn lap(&mut self, step: &str) {
        let now = Instant::now();
        let ms = (now - self.last).as_millis() as u64;
        self.last = now;
        self.steps.push(Timing {
            step: step.to_string(),
            ms,
        });
        tracing::debug!(step, ms, "step done");
    }

    pub fn total(&self) -> Duration {
        self.start.elapsed()
    }
}
