//! What a VMM process is handed when it is spawned: its stdout (the guest's
//! serial console) and stderr (its own log) as pipes to the capped-log
//! relay, and the locks on its disks. Both launchers apply it the same way.

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::disklock::{self, Disk, DiskLockError, DiskLocks};
use super::logcap;

/// Errors preparing a VMM's descriptors.
#[derive(Debug, thiserror::Error)]
pub enum VmmIoError {
    #[error(transparent)]
    Disk(#[from] DiskLockError),
    #[error("cannot start the log relay {program}")]
    Relay {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a VMM's console and log go.
#[derive(Debug, Clone)]
pub struct VmmLogs {
    /// The guest's serial console.
    pub console: PathBuf,
    /// The VMM's own messages.
    pub vmm_log: PathBuf,
    /// Each is rotated at this size.
    pub cap: u64,
    /// The program that runs the relay (`bangerd`).
    pub relay: PathBuf,
}

/// The descriptors a VMM inherits.
#[derive(Debug)]
pub struct VmmIo {
    console: OwnedFd,
    log: OwnedFd,
    locks: DiskLocks,
}

impl VmmIo {
    /// Locks `drives` (first, so a busy disk fails before anything starts)
    /// and starts the relay for `logs`.
    pub fn prepare(logs: &VmmLogs, drives: &[Disk]) -> Result<VmmIo, VmmIoError> {
        let locks = DiskLocks::acquire(drives)?;
        let pipes = logcap::spawn_relay(&logs.relay, &logs.console, &logs.vmm_log, logs.cap)
            .map_err(|source| VmmIoError::Relay {
                program: logs.relay.clone(),
                source,
            })?;
        Ok(VmmIo {
            console: pipes.console,
            log: pipes.vmm_log,
            locks,
        })
    }

    /// Points `command`'s stdout and stderr at the relay and lets it inherit
    /// the disk locks. The returned locks must live until the spawn is done;
    /// after it the VMM holds them and the caller drops its copies.
    pub fn apply(self, command: &mut Command) -> DiskLocks {
        let fds = self.locks.fds();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(self.console))
            .stderr(Stdio::from(self.log));
        // SAFETY: fcntl(2) is async-signal-safe and `fds` was allocated
        // before the fork; the closure allocates nothing.
        unsafe {
            command.pre_exec(move || disklock::inherit(&fds));
        }
        self.locks
    }
}

/// The longest path a unix socket address holds (`sun_path` less its NUL).
const SUN_PATH_MAX: usize = 107;

/// Connects to a VMM's control socket. The VMM binds it by a short name in
/// its working directory; the full path can be longer than a socket address
/// holds (a long home directory and VM name), and then it is reached through
/// a descriptor on its directory (`/proc/self/fd/N/<name>`).
pub async fn connect_control(path: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().len() <= SUN_PATH_MAX {
        return tokio::net::UnixStream::connect(path).await;
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return tokio::net::UnixStream::connect(path).await;
    };
    let dir = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    let stream = tokio::net::UnixStream::connect(&short).await;
    drop(dir);
    stream
}

/// Marks every descriptor above stderr that this process inherited
/// close-on-exec, so no VMM or relay it spawns inherits it: a pipe left open
/// by whatever started the daemon would otherwise live as long as the VMMs.
/// Call first thing, before other threads exist.
pub fn stop_passing_on_inherited_fds() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: the descriptor is only borrowed for the fcntl; one that
        // was the read_dir's own and is closed by now fails harmlessly.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
    }
}
