//! Launching a VM's VMM: what every kind needs first (disk locks, the log
//! relay, the files it boots from passed by descriptor, its own uid and, for
//! Firecracker, its jail), then one launch per kind ([`super::qemu::start`],
//! [`super::firecracker::start`]) behind [`launch`].

use std::path::{Path, PathBuf};

use crate::model::{Mac, TapName, VmmKind};

use super::VmmError;
use super::disklock::Disk;
use super::jail::Jail;
use super::vmm_io::{VmmIo, VmmIoError, VmmLogs};
use super::vmm_user::{self, VmmUser};

/// What to boot.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub kernel_args: String,
    pub tap: TapName,
    pub mac: Mac,
    /// In order: the first is `/dev/vda`.
    pub drives: Vec<Disk>,
    /// Who the VMM runs as; `None`: as the daemon.
    pub user: Option<VmmUser>,
    /// Firecracker's jailer, to start Firecracker through (with `user`).
    pub jailer: Option<PathBuf>,
    /// The firecracker binary, for a Firecracker VM.
    pub firecracker: Option<PathBuf>,
    /// Give the guest the agent's channel (its initrd brings the agent).
    pub agent: bool,
    /// Restore the guest from this memory snapshot, held paused, instead
    /// of booting the kernel.
    pub restore: Option<PathBuf>,
}

/// Where a VMM runs and writes: the VM's directory and what is in it.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// The VM's directory; the VMM's working directory.
    pub dir: PathBuf,
    /// The VMM's own directory (its user's, 0700).
    pub run_dir: PathBuf,
    /// The VMM's control socket (Firecracker's API, QEMU's QMP).
    pub api_socket: PathBuf,
    pub vmm_log: PathBuf,
    pub console: PathBuf,
    /// The host end of the guest agent's channel, in `run_dir`.
    pub agent_socket: PathBuf,
}

/// A started VMM.
pub struct Launched {
    pub pid: u32,
    /// Our child: whoever watches it must reap it.
    pub child: tokio::process::Child,
}

/// What a launch of either kind starts from, once the common work is done.
pub(crate) struct Prepared {
    pub io: VmmIo,
    /// The kernel, initrd and disks as the VMM opens them (descriptors).
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub drives: Vec<Disk>,
    /// The jailer and the jail laid out for it, for a jailed Firecracker.
    pub jail: Option<(PathBuf, Jail)>,
}

/// Boots `plan` on `vmm`: locks the disks, starts the log relay, spawns the
/// VMM and calls `spawned` with its pid before configuring anything (so a
/// daemon killed from here on leaves a pid behind to find it by). The VMM
/// is killed if `spawned` fails.
pub async fn launch<E: From<VmmError>>(
    vmm: VmmKind,
    plan: &LaunchPlan,
    paths: &RunPaths,
    logs: &VmmLogs,
    spawned: impl FnOnce(u32) -> Result<(), E>,
) -> Result<Launched, E> {
    let prepared = prepare(vmm, plan, paths, logs)?;
    match vmm {
        VmmKind::Qemu => super::qemu::start(plan, paths, prepared, spawned).await,
        VmmKind::Firecracker => super::firecracker::start(plan, paths, prepared, spawned).await,
    }
}

/// The work every kind of VMM needs before it is spawned.
fn prepare(
    vmm: VmmKind,
    plan: &LaunchPlan,
    paths: &RunPaths,
    logs: &VmmLogs,
) -> Result<Prepared, VmmError> {
    let failed = VmmError::launch(vmm);
    // A jailed Firecracker gets its files as links in its jail and its log
    // through a FIFO there; the relay reads it and holds the disk locks.
    let jail = match (&plan.jailer, &plan.user, vmm) {
        (Some(jailer), Some(user), VmmKind::Firecracker) => {
            let binary = plan
                .firecracker
                .as_deref()
                .ok_or_else(|| failed("no firecracker binary".into()))?;
            let jail = Jail::prepare(
                &paths.dir,
                binary,
                &super::firecracker::instance_id(&plan.name),
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
        VmmIoError::Disk(busy) => VmmError::DiskBusy(busy),
        other => failed(other.into()),
    })?;
    // The VMM opens everything it boots from by descriptor: its user needs
    // no path to the daemon's files. An unjailed Firecracker of the
    // daemon's own uid opens its disks by path instead, relative to the VM's
    // directory (its working directory): its snapshots record the paths,
    // and a restore in another VM's directory (a fork's, a warm VM's) must
    // find that VM's disks there, which no descriptor number promises.
    let by_path = vmm == VmmKind::Firecracker && jail.is_none() && plan.user.is_none();
    let drives: Vec<Disk> = io
        .drive_paths()
        .into_iter()
        .zip(&plan.drives)
        .map(|(fd_path, disk)| Disk {
            path: match by_path {
                true => disk
                    .path
                    .strip_prefix(&paths.dir)
                    .map_or_else(|_| disk.path.clone(), Path::to_path_buf),
                false => fd_path,
            },
            read_only: disk.read_only,
        })
        .collect();
    let kernel = io.pass_file(&plan.kernel).map_err(|e| failed(e.into()))?;
    let initrd = match &plan.initrd {
        Some(initrd) => Some(io.pass_file(initrd).map_err(|e| failed(e.into()))?),
        None => None,
    };
    let made = match &plan.user {
        Some(user) => {
            let writable: Vec<&Path> = plan
                .drives
                .iter()
                .filter(|d| !d.read_only)
                .map(|d| d.path.as_path())
                .collect();
            user.prepare(&paths.dir, &paths.run_dir, &writable)
        }
        None => vmm_user::make_own_dir(&paths.run_dir, None),
    };
    made.map_err(VmmError::io(&paths.dir))?;
    // A socket a previous VMM left would stop the new one binding its own.
    match std::fs::remove_file(&paths.agent_socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(VmmError::io(&paths.agent_socket)(e));
        }
        _ => {}
    }
    match (&jail, &plan.user) {
        (Some((_, jail)), _) => {
            jail.link_socket(&paths.run_dir, &paths.api_socket)
                .map_err(VmmError::io(&paths.run_dir))?;
            io.clear_groups();
        }
        (None, Some(user)) => io.run_as(user.clone()).map_err(VmmError::io(&paths.dir))?,
        (None, None) => {}
    }
    Ok(Prepared {
        io,
        kernel,
        initrd,
        drives,
        jail,
    })
}
