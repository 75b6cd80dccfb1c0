//! Exclusive locks on a VM's disk files, held by its VMM for the VMM's
//! whole life: the launcher takes an `flock` on each disk and the VMM
//! inherits the descriptor, so the lock goes when the VMM goes, whoever
//! started it. A second boot of the same disks, from this daemon, another
//! daemon or by hand through banger's launchers, fails instead of two guests
//! writing one filesystem.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// Errors taking a disk lock.
#[derive(Debug, thiserror::Error)]
pub enum DiskLockError {
    #[error(
        "disk {path} is in use by another VMM{}; stop that one first",
        holders.iter().map(|p| format!(" (pid {p})")).collect::<String>()
    )]
    Busy { path: PathBuf, holders: Vec<u32> },
    #[error("cannot open disk {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A disk and how a VMM attaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    /// Attached read-only: shared with other VMMs (an image under layered
    /// roots), so its lock is shared too.
    pub read_only: bool,
}

impl Disk {
    /// A disk the VMM writes: no one else may have it.
    pub fn rw(path: impl Into<PathBuf>) -> Disk {
        Disk {
            path: path.into(),
            read_only: false,
        }
    }

    pub fn ro(path: impl Into<PathBuf>) -> Disk {
        Disk {
            path: path.into(),
            read_only: true,
        }
    }
}

/// Locks on a set of disks, while this process holds them.
#[derive(Debug)]
pub struct DiskLocks {
    files: Vec<File>,
}

impl DiskLocks {
    /// Locks every disk in `disks` without waiting: exclusively when it is
    /// written, shared when it is read-only.
    pub fn acquire(disks: &[Disk]) -> Result<DiskLocks, DiskLockError> {
        let mut files = Vec::with_capacity(disks.len());
        for Disk { path, read_only } in disks {
            let how = if *read_only {
                FlockOperation::NonBlockingLockShared
            } else {
                FlockOperation::NonBlockingLockExclusive
            };
            let file =
                OpenOptions::new()
                    .read(true)
                    .open(path)
                    .map_err(|source| DiskLockError::Open {
                        path: path.clone(),
                        source,
                    })?;
            match flock(&file, how) {
                Ok(()) => files.push(file),
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(DiskLockError::Busy {
                        path: path.clone(),
                        holders: holders_of(path),
                    });
                }
                Err(e) => {
                    return Err(DiskLockError::Open {
                        path: path.clone(),
                        source: e.into(),
                    });
                }
            }
        }
        Ok(DiskLocks { files })
    }

    /// Fails as [`DiskLocks::acquire`] would, without keeping the locks:
    /// a check before anything else is changed for a boot.
    pub fn check(disks: &[Disk]) -> Result<(), DiskLockError> {
        DiskLocks::acquire(disks).map(drop)
    }

    /// The descriptors a VMM must inherit; see [`inherit`].
    pub fn fds(&self) -> Vec<RawFd> {
        self.files.iter().map(AsRawFd::as_raw_fd).collect()
    }
}

/// Lets the process about to exec keep `fds` (clears close-on-exec). For
/// a `pre_exec` hook: it only calls fcntl(2), which is async-signal-safe,
/// and allocates nothing.
pub fn inherit(fds: &[RawFd]) -> io::Result<()> {
    for &fd in fds {
        // SAFETY: the descriptor is open in the parent (DiskLocks owns it)
        // and so in this forked child; it is only borrowed for the call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
    }
    Ok(())
}

/// Our processes that have `path` open: whoever holds its lock.
fn holders_of(path: &Path) -> Vec<u32> {
    let Ok(target) = path.canonicalize() else {
        return Vec::new();
    };
    crate::system::proc::pids()
        .filter(|&pid| pid != std::process::id() && crate::system::proc::has_open(pid, &target))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_disk_is_refused_until_released() {
        let (_dir, disk) = crate::testing::temp_file("rootfs.ext4", b"disk");
        let held = DiskLocks::acquire(&[Disk::rw(&disk)]).unwrap();
        let err = DiskLocks::check(&[Disk::rw(&disk)]).unwrap_err();
        assert!(matches!(err, DiskLockError::Busy { .. }), "{err}");
        assert!(err.to_string().contains("in use by another VMM"), "{err}");
        // Not even read-only while someone writes it.
        assert!(DiskLocks::check(&[Disk::ro(&disk)]).is_err());
        drop(held);
        DiskLocks::check(&[Disk::rw(&disk)]).unwrap();
    }

    #[test]
    fn read_only_disks_are_shared_but_never_with_a_writer() {
        let (_dir, image) = crate::testing::temp_file("image.ext4", b"image");
        let first = DiskLocks::acquire(&[Disk::ro(&image)]).unwrap();
        let second = DiskLocks::acquire(&[Disk::ro(&image)]).unwrap();
        assert!(DiskLocks::check(&[Disk::rw(&image)]).is_err());
        drop((first, second));
        DiskLocks::check(&[Disk::rw(&image)]).unwrap();
    }
}
