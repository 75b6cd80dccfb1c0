//! Exec sessions: one program in its own session and process group, its
//! pipes (or a pty), and the bounded buffers between it and the channel.
//!
//! Spawning programs is this module's job (the host names the argv; no
//! shell is added).
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banger_agent::proto::{DEFAULT_PATH, Exec, INPUT_WINDOW, OUTPUT_WINDOW, WinSize};

use crate::sys;

/// After the program exits, an output stream found empty this long after
/// the exit counts as finished, even if a background process still holds
/// it open.
pub const LINGER: Duration = Duration::from_millis(200);

/// Stdin bytes passed on are acknowledged in batches of at least this much
/// (or when the buffer empties).
const CREDIT_BATCH: u32 = 32 * 1024;

pub struct Session {
    /// The program's pid, which is also its process group and session id.
    pub pid: i32,
    /// stdout, or the pty master.
    pub out: Option<OwnedFd>,
    pub err: Option<OwnedFd>,
    /// The pipe to the program's stdin, or a second handle on the pty master.
    pub stdin: Option<OwnedFd>,
    pub pty: bool,
    /// Stdin received from the host and not yet written to the program.
    pub stdin_buf: VecDeque<u8>,
    /// Stdin bytes the host sent that the agent has not acknowledged.
    pub stdin_unacked: u32,
    /// Stdin bytes passed on (or dropped) and not yet acknowledged.
    pub stdin_done: u32,
    /// The host asked to close stdin once the buffer drains.
    pub stdin_eof: bool,
    /// Output the host will still take.
    pub credit: u64,
    /// The program's end, and when it was seen.
    pub exited: Option<(sys::ExitStatus, Instant)>,
}

/// Why a session could not start.
#[derive(Debug)]
pub struct SpawnError(pub String);

pub fn spawn(req: &Exec) -> Result<Session, SpawnError> {
    let err = |what: &str, e: io::Error| SpawnError(format!("{what}: {e}"));
    let argv0 = OsStr::from_bytes(&req.argv[0]);
    let mut cmd = Command::new(argv0);
    cmd.args(req.argv[1..].iter().map(|a| OsStr::from_bytes(a)));
    cmd.env_clear();
    let mut has_path = false;
    for kv in &req.env {
        let Some(eq) = kv.iter().position(|&b| b == b'=') else {
            continue;
        };
        if eq == 0 {
            continue;
        }
        has_path |= &kv[..eq] == b"PATH";
        cmd.env(
            OsStr::from_bytes(&kv[..eq]),
            OsStr::from_bytes(&kv[eq + 1..]),
        );
    }
    if !has_path {
        cmd.env("PATH", DEFAULT_PATH);
    }
    cmd.current_dir(OsStr::from_bytes(req.cwd.as_deref().unwrap_or(b"/")));

    let mut master = None;
    if let Some(ws) = req.pty {
        let (m, slave) = sys::openpty().map_err(|e| err("cannot open a pty", e))?;
        sys::set_winsize(m.as_fd(), ws.rows, ws.cols).map_err(|e| err("cannot size the pty", e))?;
        let dup = |f: &OwnedFd| {
            f.try_clone()
                .map_err(|e| err("cannot duplicate the pty", e))
        };
        cmd.stdin(Stdio::from(dup(&slave)?));
        cmd.stdout(Stdio::from(dup(&slave)?));
        cmd.stderr(Stdio::from(slave));
        master = Some(m);
    } else {
        cmd.stdin(if req.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped());
        cmd.stderr(Stdio::piped());
    }
    let pty = master.is_some();
    // SAFETY: the closure runs in the child between fork and exec and makes
    // only async-signal-safe calls (sigprocmask, setsid, ioctl).
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if pty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        SpawnError(format!(
            "cannot run {}: {e}",
            String::from_utf8_lossy(&req.argv[0])
        ))
    })?;
    let pid = child.id() as i32;
    let (out, errp, stdin) = match master {
        Some(m) => {
            let w = m
                .try_clone()
                .map_err(|e| err("cannot duplicate the pty", e))?;
            (Some(m), None, Some(w))
        }
        None => (
            child.stdout.take().map(OwnedFd::from),
            child.stderr.take().map(OwnedFd::from),
            child.stdin.take().map(OwnedFd::from),
        ),
    };
    for fd in [&out, &errp, &stdin].into_iter().flatten() {
        sys::set_nonblocking(fd.as_fd()).map_err(|e| err("cannot set up pipes", e))?;
    }
    // The child is reaped by the agent's SIGCHLD loop, not through `child`.
    drop(child);
    Ok(Session {
        pid,
        out,
        err: errp,
        stdin,
        pty,
        stdin_buf: VecDeque::new(),
        stdin_unacked: 0,
        stdin_done: 0,
        stdin_eof: false,
        credit: u64::from(OUTPUT_WINDOW),
        exited: None,
    })
}

/// The host sent more stdin than its window allows.
#[derive(Debug)]
pub struct WindowExceeded;

impl Session {
    /// Queues stdin from the host.
    pub fn push_stdin(&mut self, data: &[u8]) -> Result<(), WindowExceeded> {
        let unacked = self.stdin_unacked as usize + data.len();
        if unacked > INPUT_WINDOW as usize {
            return Err(WindowExceeded);
        }
        self.stdin_unacked = unacked as u32;
        if self.stdin.is_some() && !self.stdin_eof {
            self.stdin_buf.extend(data);
        } else {
            // Nobody reads it (no stdin, or closed): acknowledge and drop.
            self.stdin_done += data.len() as u32;
        }
        Ok(())
    }

    /// Writes what it can of the stdin buffer; closes stdin after EOF.
    pub fn flush_stdin(&mut self) {
        while let Some(fd) = &self.stdin {
            let (a, _) = self.stdin_buf.as_slices();
            if a.is_empty() {
                break;
            }
            match sys::write(fd.as_fd(), a) {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                    self.stdin_done += n as u32;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The program closed its stdin (EPIPE) or the pty is
                    // gone: drop what is left, and all that comes later.
                    self.stdin_done += self.stdin_buf.len() as u32;
                    self.stdin_buf.clear();
                    self.stdin = None;
                }
            }
        }
        if self.stdin_eof && self.stdin_buf.is_empty() && self.stdin.is_some() {
            if self.pty {
                // A pty has no half-close: send the EOF character instead.
                if let Some(fd) = &self.stdin {
                    let _ = sys::write(fd.as_fd(), &[0x04]);
                }
            }
            self.stdin = None;
        }
    }

    /// Stdin bytes to acknowledge now, if a batch is ready.
    pub fn take_stdin_credit(&mut self) -> Option<u32> {
        if self.stdin_done == 0 {
            return None;
        }
        if self.stdin_done >= CREDIT_BATCH || self.stdin_buf.is_empty() {
            let n = self.stdin_done;
            self.stdin_done = 0;
            self.stdin_unacked = self.stdin_unacked.saturating_sub(n);
            return Some(n);
        }
        None
    }

    pub fn resize(&self, ws: WinSize) {
        if let (true, Some(m)) = (self.pty, &self.out) {
            let _ = sys::set_winsize(m.as_fd(), ws.rows, ws.cols);
        }
    }

    pub fn signal(&self, sig: i32) {
        sys::kill_group(self.pid, sig);
    }

    /// Whether the session is over: the program exited and both streams
    /// are closed.
    pub fn finished(&self) -> bool {
        self.exited.is_some() && self.out.is_none() && self.err.is_none()
    }

    /// Whether an output stream found empty now may be closed.
    pub fn may_close_empty_stream(&self, now: Instant) -> bool {
        self.exited.is_some_and(|(_, at)| now >= at + LINGER)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A session dropped before its program ended (host gone, hello,
        // error) takes the whole process group with it.
        if self.exited.is_none() {
            sys::kill_group(self.pid, libc::SIGKILL);
        }
    }
}
