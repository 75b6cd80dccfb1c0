//! Process identity and control by pid: is it still the process we
//! started, signal it, wait for it to exit (pidfd, so it works for
//! processes that are not our children, e.g. VMMs re-adopted after a
//! daemon restart).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::proc::ProcStats;

/// True when `pid` runs and started at `start_ticks`: the process we
/// recorded, not a later one that reuses its pid. Zombies count as gone.
pub fn is_alive(pid: u32, start_ticks: u64) -> bool {
    ProcStats::read(pid).is_ok_and(|stats| {
        stats.start_time_ticks == start_ticks && !matches!(stats.state, 'Z' | 'X')
    })
}

/// True when `pid` is the VMM of the VM whose directory is `dir`: the
/// process recorded (same start time, not a zombie), a VMM by its
/// executable, and running in that VM's directory (banger starts every VMM
/// there). Never a socket file: logout can remove those under a live VMM.
pub fn is_vmm_of(pid: u32, start_ticks: u64, dir: &Path) -> bool {
    is_alive(pid, start_ticks) && runs_vmm_in(pid, dir)
}

/// Every VMM running in VM directory `dir`, recorded or not: how a VMM is
/// found when a daemon died before it could record the pid.
pub fn vmms_in(dir: &Path) -> Vec<u32> {
    let workdir = WorkDir::of(dir);
    super::proc::pids()
        .filter(|&pid| is_vmm(pid) && workdir.holds(pid))
        .collect()
}

/// The executables banger runs as VMMs, by file name.
fn is_vmm_program(exe: &Path) -> bool {
    exe.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("firecracker") || n.starts_with("qemu-system"))
}

/// True when `pid` runs a VMM executable.
fn is_vmm(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| is_vmm_program(&exe))
}

fn runs_vmm_in(pid: u32, dir: &Path) -> bool {
    is_vmm(pid) && works_in(pid, dir)
}

/// True when `pid` works in VM directory `dir`: there, or in the jail of a
/// jailed Firecracker inside it.
pub fn works_in(pid: u32, dir: &Path) -> bool {
    WorkDir::of(dir).holds(pid)
}

/// A VM directory as `/proc/<pid>/cwd` can show it: by its path, or, for a
/// jailed Firecracker, by device and inode. A jailed process lives in a
/// mount namespace of its own, where its working directory reads as `/`.
/// Read once and asked of many processes.
struct WorkDir {
    path: PathBuf,
    /// `(device, inode)` of the directory and of each jail root in it
    /// (`<dir>/jail/<exec file name>/<id>/root`).
    inodes: Vec<(u64, u64)>,
}

impl WorkDir {
    fn of(dir: &Path) -> WorkDir {
        let jail_roots = std::fs::read_dir(dir.join("jail"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|exec| {
                std::fs::read_dir(exec.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|id| id.path().join("root"));
        let inodes = std::iter::once(dir.to_path_buf())
            .chain(jail_roots)
            .filter_map(|path| inode(&path))
            .collect();
        WorkDir {
            path: dir.to_path_buf(),
            inodes,
        }
    }

    fn holds(&self, pid: u32) -> bool {
        let cwd_link = PathBuf::from(format!("/proc/{pid}/cwd"));
        let Ok(cwd) = std::fs::read_link(&cwd_link) else {
            return false;
        };
        // A directory removed under a live process reads as "<path> (deleted)".
        let mut deleted = self.path.as_os_str().to_owned();
        deleted.push(" (deleted)");
        cwd == self.path
            || cwd.as_os_str() == deleted
            || inode(&cwd_link).is_some_and(|id| self.inodes.contains(&id))
    }
}

fn inode(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The start time of `pid`, to record next to it.
pub fn start_ticks(pid: u32) -> Option<u64> {
    ProcStats::read(pid)
        .ok()
        .map(|stats| stats.start_time_ticks)
}

/// Sends `signal` to `pid`; a process already gone is not an error.
pub fn signal(pid: u32, signal: Signal) -> io::Result<()> {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad pid"));
    };
    match rustix::process::kill_process(pid, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A handle that completes when a process exits, whoever its parent is.
pub struct ExitWatch {
    fd: Option<AsyncFd<std::os::fd::OwnedFd>>,
}

impl ExitWatch {
    /// Watches `pid`; a process already gone gives a watch that is done.
    pub fn new(pid: u32) -> io::Result<ExitWatch> {
        let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            return Ok(ExitWatch { fd: None });
        };
        match rustix::process::pidfd_open(raw, PidfdFlags::NONBLOCK) {
            Ok(fd) => {
                // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, which owns
                // it from here on: it stays open and the same descriptor for
                // the AsyncFd's whole life.
                let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                    .map_err(io::Error::from)?;
                Ok(ExitWatch { fd: Some(fd) })
            }
            Err(rustix::io::Errno::SRCH) => Ok(ExitWatch { fd: None }),
            Err(e) => Err(e.into()),
        }
    }

    /// Completes when the process has exited (a pidfd becomes readable then).
    pub async fn exited(&self) {
        if let Some(fd) = &self.fd {
            // Readiness is the whole answer; there is nothing to read.
            let _ = fd.readable().await;
        }
    }

    /// Waits at most `timeout`; true when the process exited in time.
    pub async fn exited_within(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.exited()).await.is_ok()
    }
}
