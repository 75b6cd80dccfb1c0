//! What a VMM process is handed when it is spawned: its stdout (the guest's
//! serial console) and stderr (its own log) as pipes to the capped-log
//! relay, the locks on its disks, the files it boots from as descriptors
//! (it opens them as `/proc/self/fd/N`, so it needs no path to them), and,
//! under a root daemon, the unprivileged user it runs as. Both launchers
//! apply it the same way.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::disklock::{self, Disk, DiskLockError, DiskLocks};
use super::logcap;
use super::vmm_user::VmmUser;

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
    #[error("cannot open {path} for the VMM")]
    Pass {
        path: PathBuf,
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
    /// A jailed Firecracker's log FIFO, which the relay copies into
    /// `vmm_log`. The jailer closes every inherited descriptor, so the
    /// relay then holds the disk locks for the VMM's life too.
    pub log_fifo: Option<PathBuf>,
}

/// The descriptors a VMM inherits, and who it runs as.
#[derive(Debug)]
pub struct VmmIo {
    console: OwnedFd,
    log: OwnedFd,
    locks: DiskLocks,
    /// Files and devices the VMM opens by descriptor (kernel, initrd, tap).
    passed: Vec<OwnedFd>,
    user: Option<VmmUser>,
    /// Drop supplementary groups (the jailer drops uid and gid itself).
    clear_groups: bool,
}

/// What the parent keeps until the VMM is spawned; after that the VMM holds
/// its own copies and these are dropped.
#[derive(Debug)]
pub struct Handed {
    _locks: DiskLocks,
    _passed: Vec<OwnedFd>,
}

/// The path by which a process opens its inherited descriptor `fd`.
fn fd_path(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

impl VmmIo {
    /// Locks `drives` (first, so a busy disk fails before anything starts)
    /// and starts the relay for `logs`.
    pub fn prepare(logs: &VmmLogs, drives: &[Disk]) -> Result<VmmIo, VmmIoError> {
        let locks = DiskLocks::acquire(drives)?;
        let hold = match logs.log_fifo {
            Some(_) => locks.fds(),
            None => Vec::new(),
        };
        let pipes = logcap::spawn_relay(
            &logs.relay,
            &logs.console,
            &logs.vmm_log,
            logs.cap,
            logs.log_fifo.as_deref(),
            &hold,
        )
        .map_err(|source| VmmIoError::Relay {
            program: logs.relay.clone(),
            source,
        })?;
        Ok(VmmIo {
            console: pipes.console,
            log: pipes.vmm_log,
            locks,
            passed: Vec::new(),
            user: None,
            clear_groups: false,
        })
    }

    /// The paths by which the VMM opens its drives, in order: the locked
    /// descriptors it inherits. It reopens each with the access it needs,
    /// which the file's own mode must allow its user.
    pub fn drive_paths(&self) -> Vec<PathBuf> {
        self.locks.fds().into_iter().map(fd_path).collect()
    }

    /// Opens `path` read-only for the VMM; returns the path it opens it by.
    pub fn pass_file(&mut self, path: &Path) -> Result<PathBuf, VmmIoError> {
        let file = std::fs::File::open(path).map_err(|source| VmmIoError::Pass {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(fd_path(self.pass_fd(file.into())))
    }

    /// Hands `fd` to the VMM; returns its number there.
    pub fn pass_fd(&mut self, fd: OwnedFd) -> RawFd {
        let raw = fd.as_raw_fd();
        self.passed.push(fd);
        raw
    }

    /// Runs the VMM as `user` instead of this process's user. Its console
    /// and log pipes become the user's: Firecracker reopens its log as
    /// `/dev/stderr`, which checks the pipe's owner.
    pub fn run_as(&mut self, user: VmmUser) -> std::io::Result<()> {
        for pipe in [&self.console, &self.log] {
            rustix::fs::fchown(
                pipe,
                Some(rustix::process::Uid::from_raw(user.uid)),
                Some(rustix::process::Gid::from_raw(user.gid)),
            )?;
        }
        self.user = Some(user);
        Ok(())
    }

    /// For a VMM started by Firecracker's jailer: it runs as root until the
    /// jailer drops to the VM's uid, but with no supplementary group.
    pub fn clear_groups(&mut self) {
        self.clear_groups = true;
    }

    /// Points `command`'s stdout and stderr at the relay, lets it inherit
    /// the disk locks and passed descriptors, and drops it to its user. The
    /// returned [`Handed`] must live until the spawn is done.
    pub fn apply(self, command: &mut Command) -> Handed {
        let mut fds = self.locks.fds();
        fds.extend(self.passed.iter().map(AsRawFd::as_raw_fd));
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(self.console))
            .stderr(Stdio::from(self.log));
        let (user, clear_groups) = (self.user, self.clear_groups);
        // SAFETY: fcntl(2), setgroups(2), setresgid(2) and setresuid(2) are
        // async-signal-safe; `fds` and `user` were allocated before the
        // fork, and the closure allocates nothing.
        unsafe {
            command.pre_exec(move || {
                disklock::inherit(&fds)?;
                if clear_groups {
                    rustix::thread::set_thread_groups(&[])?;
                }
                match &user {
                    Some(user) => user.become_it(),
                    None => Ok(()),
                }
            });
        }
        Handed {
            _locks: self.locks,
            _passed: self.passed,
        }
    }
}

/// The longest path a unix socket address holds (`sun_path` less its NUL).
const SUN_PATH_MAX: usize = 107;

/// Connects to a VMM's control socket. The VMM binds it by a short name in
/// its working directory; the full path can be longer than a socket address
/// holds (a long home directory and VM name), and then it is reached through
/// a descriptor on its directory (`/proc/self/fd/N/<name>`).
///
/// The socket's directory may belong to the VMM's user, who could swap the
/// socket for a link to someone else's: whoever answers must be working in
/// the VM's directory (or its `run`), as only its VMM does.
pub async fn connect_control(path: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
    let stream = connect_by_path(path).await?;
    let peer = stream
        .peer_cred()?
        .pid()
        .and_then(|pid| u32::try_from(pid).ok());
    // The VM's directory is the socket's parent or grandparent (`run/`);
    // a jailed Firecracker's socket is in its jail root.
    let ours = peer.is_some_and(|pid| {
        path.ancestors()
            .skip(1)
            .take(2)
            .any(|dir| crate::system::pid::works_in(pid, dir))
    });
    if !ours {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is answered by a process (pid {}) that is not this VM's VMM",
                path.display(),
                peer.map_or("unknown".into(), |p| p.to_string())
            ),
        ));
    }
    Ok(stream)
}

async fn connect_by_path(path: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
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
