//! One daemon per user: an exclusive `flock` on `bangerd.lock`, held for the
//! daemon's lifetime. The kernel drops it when the process dies, so a crash
//! never leaves a lock behind.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// Errors taking the daemon lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another daemon of this user holds the lock.
    #[error("bangerd is already running{} (lock {path}); use `banger daemon stop` first", pid.map(|p| format!(" as pid {p}")).unwrap_or_default())]
    AlreadyRunning { pid: Option<u32>, path: PathBuf },
    /// The lock file could not be opened or written.
    #[error("cannot use lock file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

impl DaemonLock {
    /// Takes the lock at `path` without waiting and records our pid in it.
    pub fn acquire(path: &Path) -> Result<DaemonLock, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?;
        if let Err(errno) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            if errno == rustix::io::Errno::WOULDBLOCK {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::AlreadyRunning {
                    pid,
                    path: path.to_path_buf(),
                });
            }
            return Err(io_err(errno.into()));
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(DaemonLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_holders_pid() {
        let (_dir, path) = crate::testing::temp_path("bangerd.lock");
        let held = DaemonLock::acquire(&path).unwrap();
        let err = DaemonLock::acquire(&path).unwrap_err();
        assert!(
            matches!(err, LockError::AlreadyRunning { pid: Some(p), .. } if p == std::process::id()),
            "{err:?}"
        );
        drop(held);
        DaemonLock::acquire(&path).unwrap();
    }
}
