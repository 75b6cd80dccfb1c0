//! The VMM backends. Firecracker is what banger is built for; QEMU's
//! `microvm` machine boots the same kernel, disks and tap where Firecracker
//! cannot boot a guest (no hardware KVM, e.g. nested under kvm_pvm).
//! Everything above this file is shared.

use std::path::{Path, PathBuf};

use crate::bundle::Bundle;
use crate::config::{Config, VmmChoice};
use crate::system::host::{KvmKind, kvm_kind};
use crate::system::tools;
use crate::vmm::disklock::Disk;
use crate::vmm::jail;
use crate::vmm::qemu::{self, Accel};
use crate::vmm::vmm_io::{VmmIo, VmmIoError, VmmLogs};
use crate::vmm::vmm_user::{self, VmmUser};

use super::{VmError, VmFiles};

/// A VMM banger can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Firecracker,
    Qemu,
}

impl Backend {
    /// The name stored with the VM.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Firecracker => "firecracker",
            Backend::Qemu => "qemu",
        }
    }

    pub fn from_name(name: &str) -> Option<Backend> {
        match name {
            "firecracker" => Some(Backend::Firecracker),
            "qemu" => Some(Backend::Qemu),
            _ => None,
        }
    }

    /// How this backend runs on this host, for `vm show`.
    pub fn detail(self) -> String {
        let kvm = kvm_kind();
        match self {
            Backend::Firecracker => format!("firecracker (KVM: {kvm})"),
            Backend::Qemu => match qemu::accel_for(kvm) {
                Accel::Kvm => format!("qemu microvm with KVM ({kvm})"),
                Accel::Tcg => format!("qemu microvm, software emulation (TCG; host KVM: {kvm})"),
            },
        }
    }
}

/// The firecracker binary banger would use: configured, else the bundle's,
/// else PATH's.
pub fn firecracker_binary(config: &Config, bundle: Option<&Bundle>) -> Option<PathBuf> {
    config
        .firecracker
        .clone()
        .or_else(|| bundle.and_then(|b| b.firecracker.clone()))
        .filter(|p| p.is_file())
        .or_else(|| tools::find_program("firecracker", None))
}

/// Firecracker's jailer, where a root daemon can use it: the `jailer`
/// setting (empty turns it off), else `jailer` next to the firecracker
/// binary, else on PATH; only for a static firecracker binary, the only
/// kind that runs in a jail.
pub fn jailer_binary(config: &Config, firecracker: Option<&Path>) -> Option<PathBuf> {
    if !rustix::process::geteuid().is_root() || !firecracker.is_some_and(jail::is_static_elf) {
        return None;
    }
    match &config.jailer {
        Some(path) if path.as_os_str().is_empty() => None,
        Some(path) => Some(path.clone()).filter(|p| p.is_file()),
        None => firecracker
            .and_then(|fc| fc.parent())
            .map(|dir| dir.join("jailer"))
            .filter(|p| p.is_file())
            .or_else(|| tools::find_program("jailer", None)),
    }
}

/// What `auto` picks on this host, and why: for `doctor` and for create.
pub fn describe_host(config: &Config, bundle: Option<&Bundle>) -> (Backend, String) {
    let kvm = kvm_kind();
    let hardware = matches!(kvm, KvmKind::Intel | KvmKind::Amd);
    match (firecracker_binary(config, bundle), hardware) {
        (Some(fc), true) => (
            Backend::Firecracker,
            format!("{} with hardware KVM ({kvm})", fc.display()),
        ),
        (Some(_), false) => (
            Backend::Qemu,
            format!(
                "QEMU: Firecracker is present but cannot boot a guest without hardware KVM (host KVM: {kvm})"
            ),
        ),
        (None, _) => (
            Backend::Qemu,
            format!("QEMU: no firecracker binary found (host KVM: {kvm})"),
        ),
    }
}

/// Resolves a VMM choice to a backend that can run here.
pub fn choose(choice: VmmChoice, config: &Config, bundle: &Bundle) -> Result<Backend, VmError> {
    match choice {
        VmmChoice::Auto => Ok(describe_host(config, Some(bundle)).0),
        VmmChoice::Firecracker => match firecracker_binary(config, Some(bundle)) {
            Some(_) => Ok(Backend::Firecracker),
            None => Err(VmError::BackendUnavailable(
                "firecracker",
                "no firecracker binary (set `firecracker` in config.toml, put one in the runtime bundle or on PATH)".into(),
            )),
        },
        VmmChoice::Qemu => match tools::find_program("qemu-system-x86_64", None) {
            Some(_) => Ok(Backend::Qemu),
            None => Err(VmError::BackendUnavailable(
                "qemu",
                "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into(),
            )),
        },
    }
}

/// What to boot.
#[derive(Debug, Clone)]
pub(crate) struct LaunchPlan {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub kernel_args: String,
    pub tap: String,
    pub mac: String,
    /// In order: the first is `/dev/vda`.
    pub drives: Vec<Disk>,
    /// Who the VMM runs as; `None`: as the daemon.
    pub user: Option<VmmUser>,
    /// Firecracker's jailer, to start Firecracker through (with `user`).
    pub jailer: Option<PathBuf>,
}

/// Who the VMM of the guest at `ip` runs as on `backend`. `Ok(None)` for a
/// daemon that is not root (its VMMs run as it); under root a uid of the
/// VM's own, `vmm_uid_base` plus the guest's place in the subnet, unless a
/// device the VMM opens itself only opens for root (`Err` says which).
pub(crate) fn vmm_user(
    backend: Backend,
    uid_base: u32,
    subnet: &crate::net::Subnet,
    ip: std::net::Ipv4Addr,
    jailed: bool,
) -> Result<Option<VmmUser>, String> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let offset = u32::from(ip).wrapping_sub(u32::from(subnet.network()));
    let id = uid_base.checked_add(offset).ok_or_else(|| {
        format!("vmm_uid_base {uid_base} leaves no room for the guest uids of the subnet")
    })?;
    let kvm = Path::new("/dev/kvm");
    let devices: Vec<&Path> = match backend {
        // QEMU gets its tap as a descriptor; it opens /dev/kvm only with KVM.
        Backend::Qemu => match qemu::accel_for(kvm_kind()) {
            Accel::Kvm => vec![kvm],
            Accel::Tcg => vec![],
        },
        // The jailer makes the jail's own device nodes, the VM uid's.
        Backend::Firecracker if jailed => vec![],
        Backend::Firecracker => vec![kvm, Path::new("/dev/net/tun")],
    };
    VmmUser::for_devices(id, &devices).map(Some)
}

/// A started VMM.
pub(crate) struct Launched {
    pub pid: u32,
    /// Our child: whoever watches it must reap it.
    pub child: tokio::process::Child,
}

/// Boots `plan` on `backend` with the disks in `files`: locks the disks,
/// starts the log relay, spawns the VMM and calls `spawned` with its pid
/// before configuring anything (so a daemon killed from here on leaves a
/// pid behind to find it by). The VMM is killed if `spawned` fails.
pub(crate) async fn launch(
    backend: Backend,
    plan: &LaunchPlan,
    files: &VmFiles,
    firecracker: Option<&Path>,
    logs: &VmmLogs,
    spawned: impl FnOnce(u32) -> Result<(), VmError>,
) -> Result<Launched, VmError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| VmError::Launch {
        backend: backend.name(),
        source,
        log_tail: None,
    };
    // A jailed Firecracker gets its files as links in its jail and its log
    // through a FIFO there; the relay reads it and holds the disk locks.
    let jail = match (&plan.jailer, &plan.user, backend) {
        (Some(jailer), Some(user), Backend::Firecracker) => {
            let binary = firecracker.ok_or_else(|| failed("no firecracker binary".into()))?;
            let jail = jail::Jail::prepare(
                &files.dir,
                binary,
                &crate::vmm::firecracker::instance_id(&plan.name),
                &plan.kernel,
                plan.initrd.as_deref(),
                &plan.drives,
                (user.uid, user.gid),
            )
            .map_err(|e| {
                failed(
                    format!("cannot lay out the jail ({e}); set `jailer = \"\"` in config.toml to run Firecracker unjailed")
                        .into(),
                )
            })?;
            Some((jailer.clone(), jail))
        }
        _ => None,
    };
    let mut logs = logs.clone();
    logs.log_fifo = jail.as_ref().map(|(_, j)| j.log_fifo.clone());
    let mut io = VmmIo::prepare(&logs, &plan.drives).map_err(|e| match e {
        VmmIoError::Disk(busy) => VmError::DiskBusy(busy),
        other => failed(other.into()),
    })?;
    // The VMM opens everything it boots from by descriptor: its user needs
    // no path to the daemon's files.
    let drives: Vec<Disk> = io
        .drive_paths()
        .into_iter()
        .zip(&plan.drives)
        .map(|(path, disk)| Disk {
            path,
            read_only: disk.read_only,
        })
        .collect();
    let kernel = io.pass_file(&plan.kernel).map_err(|e| failed(e.into()))?;
    let initrd = match &plan.initrd {
        Some(initrd) => Some(io.pass_file(initrd).map_err(|e| failed(e.into()))?),
        None => None,
    };
    let prepared = match &plan.user {
        Some(user) => {
            let writable: Vec<&Path> = plan
                .drives
                .iter()
                .filter(|d| !d.read_only)
                .map(|d| d.path.as_path())
                .collect();
            user.prepare(&files.dir, &files.run_dir, &writable)
        }
        None => vmm_user::make_own_dir(&files.run_dir, None),
    };
    prepared.map_err(VmError::io(&files.dir))?;
    match (&jail, &plan.user) {
        (Some((_, jail)), _) => {
            jail.link_socket(&files.run_dir, &files.api_socket)
                .map_err(VmError::io(&files.run_dir))?;
            io.clear_groups();
        }
        (None, Some(user)) => io.run_as(user.clone()).map_err(VmError::io(&files.dir))?,
        (None, None) => {}
    }
    match backend {
        Backend::Qemu => {
            let tap = crate::system::net::open_tap(&plan.tap).map_err(|e| failed(e.into()))?;
            let spec = qemu::QemuSpec {
                name: plan.name.clone(),
                accel: qemu::accel_for(kvm_kind()),
                vcpus: plan.vcpus,
                memory_mib: plan.memory_mib,
                kernel,
                initrd,
                kernel_args: plan.kernel_args.clone(),
                drives,
                net: Some(qemu::QemuNet {
                    tap_fd: io.pass_fd(tap),
                    mac: plan.mac.clone(),
                }),
            };
            let qemu_files = qemu::QemuFiles {
                dir: files.dir.clone(),
                qmp_socket: files.api_socket.clone(),
            };
            let mut child = qemu::launch(&spec, &qemu_files, io).map_err(|e| failed(e.into()))?;
            let Some(pid) = child.id() else {
                return Err(failed("qemu exited at once".into()));
            };
            if let Err(e) = spawned(pid) {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(e);
            }
            Ok(Launched { pid, child })
        }
        Backend::Firecracker => {
            use crate::vmm::firecracker::{DriveSpec, Jailer, MachineSpec, NetSpec, RunFiles};
            let binary = firecracker.ok_or_else(|| failed("no firecracker binary".into()))?;
            // Paths as Firecracker sees them: in its jail, or its descriptors.
            let (kernel, initrd, drive_paths, log_path, api_socket) = match &jail {
                Some((_, jail)) => (
                    jail.kernel.clone(),
                    jail.initrd.clone(),
                    jail.drives.clone(),
                    PathBuf::from(jail::LOG_FIFO),
                    jail.api_socket.clone(),
                ),
                None => (
                    kernel,
                    initrd,
                    drives.iter().map(|d| d.path.clone()).collect(),
                    PathBuf::from("/dev/stderr"),
                    files.api_socket.clone(),
                ),
            };
            let spec = MachineSpec {
                vcpus: plan.vcpus,
                memory_mib: plan.memory_mib,
                kernel,
                initrd,
                kernel_args: plan.kernel_args.clone(),
                drives: drives
                    .iter()
                    .zip(drive_paths)
                    .zip(["vda", "vdb", "vdc", "vdd"])
                    .enumerate()
                    .map(|(i, ((disk, path), id))| DriveSpec {
                        id: id.into(),
                        path,
                        root: i == 0,
                        read_only: disk.read_only,
                    })
                    .collect(),
                net: Some(NetSpec {
                    tap: plan.tap.clone(),
                    mac: plan.mac.clone(),
                }),
                log_path,
            };
            let run_files = RunFiles {
                dir: files.dir.clone(),
                api_socket,
                log: files.vmm_log.clone(),
                console: files.console.clone(),
            };
            let jailer = match (&jail, &plan.user) {
                (Some((binary, jail)), Some(user)) => Some(Jailer {
                    binary: binary.clone(),
                    uid: user.uid,
                    gid: user.gid,
                    chroot_base: jail.base.clone(),
                    cgroups: jail::cgroup_limits(plan.vcpus, plan.memory_mib),
                }),
                _ => None,
            };
            let vmm =
                crate::vmm::firecracker::spawn(binary, &plan.name, &run_files, io, jailer.as_ref())
                    .await
                    .map_err(|e| failed(e.into()))?;
            // Dropping `vmm` on failure kills it.
            spawned(vmm.pid())?;
            let launched = vmm
                .boot(&run_files, &spec)
                .await
                .map_err(|e| failed(e.into()))?;
            Ok(Launched {
                pid: launched.pid,
                child: launched.child,
            })
        }
    }
}

/// Asks the guest to shut down: the ACPI power button (QEMU) or
/// Ctrl-Alt-Del (Firecracker).
pub(crate) async fn request_shutdown(backend: Backend, files: &VmFiles) -> Result<(), String> {
    match backend {
        Backend::Qemu => qemu::powerdown(&files.control_socket())
            .await
            .map_err(|e| e.to_string()),
        Backend::Firecracker => crate::vmm::firecracker::request_shutdown(&files.control_socket())
            .await
            .map_err(|e| e.to_string()),
    }
}
