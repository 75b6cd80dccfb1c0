//! Process identity and control by pid: is it still the process we
//! started, signal it, wait for it to exit (pidfd, so it works for
//! processes that are not our children, e.g. VMMs re-adopted after a
//! daemon restart).

use std::io;
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
