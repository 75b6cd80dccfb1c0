//! Where one VM's files live: all under its directory in the state
//! directory, the VMM's control socket too (a logout removes the runtime
//! directory, and a VM must stay controllable). The VMM runs in that
//! directory and binds the socket by its short relative name.

use std::path::{Path, PathBuf};

use crate::model::RootMode;
use crate::paths::Paths;
use crate::store::VmRecord;
use crate::vmm::disklock::Disk;

/// The files of one VM.
#[derive(Debug, Clone)]
pub struct VmFiles {
    /// `$XDG_STATE_HOME/banger/vms/<name>`: everything that persists.
    pub dir: PathBuf,
    /// A clone-mode VM's own copy of its image.
    pub rootfs: PathBuf,
    /// A layered VM's upper disk: all it writes to its root.
    pub upper: PathBuf,
    pub work_disk: PathBuf,
    /// The guest's serial console, appended across boots.
    pub console: PathBuf,
    /// The VMM's own log.
    pub vmm_log: PathBuf,
    /// The VM's SSH host key pair, made by banger before first boot.
    pub host_key: PathBuf,
    /// The only known_hosts `vm ssh` trusts for this VM.
    pub known_hosts: PathBuf,
    /// Scratch space for file injection.
    pub scratch: PathBuf,
    /// The VMM's own directory (its user's, 0700): its control socket.
    pub run_dir: PathBuf,
    /// The VMM's control socket (Firecracker's API, QEMU's QMP).
    pub api_socket: PathBuf,
    /// The host end of the guest agent's channel (QEMU's virtio-serial
    /// socket, Firecracker's vsock socket).
    pub agent_socket: PathBuf,
}

impl VmFiles {
    pub fn new(paths: &Paths, name: &str) -> VmFiles {
        let dir = paths.state_dir.join("vms").join(name);
        VmFiles {
            rootfs: dir.join("rootfs.ext4"),
            upper: dir.join("upper.ext4"),
            work_disk: dir.join("work.ext4"),
            console: dir.join("console.log"),
            vmm_log: dir.join("vmm.log"),
            host_key: dir.join("ssh_host_ed25519_key"),
            known_hosts: dir.join("known_hosts"),
            scratch: dir.join("scratch"),
            run_dir: dir.join("run"),
            api_socket: dir.join("run").join("vmm.sock"),
            agent_socket: dir.join("run").join("agent.sock"),
            dir,
        }
    }
}

impl VmFiles {
    /// What the VMM wing needs of them to run a VMM.
    pub fn run_paths(&self) -> crate::vmm::launch::RunPaths {
        crate::vmm::launch::RunPaths {
            dir: self.dir.clone(),
            run_dir: self.run_dir.clone(),
            api_socket: self.api_socket.clone(),
            vmm_log: self.vmm_log.clone(),
            console: self.console.clone(),
            agent_socket: self.agent_socket.clone(),
        }
    }

    /// The control socket of the running VMM: [`VmFiles::api_socket`], or
    /// where a VMM started by an older banger bound it.
    pub fn control_socket(&self) -> PathBuf {
        let legacy = self.dir.join("vmm.sock");
        if !self.api_socket.exists() && legacy.exists() {
            legacy
        } else {
            self.api_socket.clone()
        }
    }

    /// The disks `vm`'s VMM attaches, in order (the first is `/dev/vda`):
    /// - clone: its own root copy, then its work disk (a build VM has none);
    /// - layered: the image read-only, its upper disk (`/dev/vdb`, named by
    ///   `banger.upper=`), then its work disk.
    pub fn disks(&self, vm: &VmRecord) -> Vec<Disk> {
        let mut disks = match (vm.root_mode, &vm.base_path) {
            (RootMode::Layered, Some(base)) => vec![Disk::ro(base), Disk::rw(&self.upper)],
            _ => vec![Disk::rw(&self.rootfs)],
        };
        if self.work_disk.exists() {
            disks.push(Disk::rw(&self.work_disk));
        }
        disks
    }
}

/// The last `n` lines of a log written after byte `from`, indented for an
/// error message.
pub fn tail(path: &Path, from: u64, n: usize) -> String {
    crate::system::text::indent(&crate::system::fs::log_tail(path, from, n))
}
