//! The one exec point: every external program banger runs goes through [`Cmd`].
//!
//! A direct argv, never a shell. Each run is logged with its argv, exit
//! status and duration, and a failure keeps the tail of the program's
//! stderr so the user sees what the tool said. Nothing here raises
//! privilege: a daemon that is not root changes the host network only
//! through banger's helper (`sudo -n banger-helper VERB ...`, see
//! [`super::netadmin`]).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::io::AsyncWriteExt;

use super::tools;

/// Timeout applied when [`Cmd::timeout`] is not called.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Lines of stderr kept in a [`ExecError::Failed`].
const STDERR_TAIL_LINES: usize = 20;

/// The most of a program's stdout and stderr kept; the rest is read and
/// dropped, so no program (nor a guest behind one) can grow the daemon.
const MAX_STDOUT: usize = 16 << 20;
const MAX_STDERR: usize = 1 << 20;

/// The only directories `banger-helper` runs programs from.
pub const TRUSTED_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Set once by `banger-helper` (see [`trust_only_root_programs`]).
static ROOT_PROGRAMS_ONLY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// From now on, programs are found only in [`TRUSTED_PATH`], must be
/// root's alone (the file and every directory above it), and run with no
/// environment but that `PATH`: what `banger-helper`, running as root for
/// a caller, does first, so the caller's `PATH` or a writable tool can
/// never choose what root runs.
pub fn trust_only_root_programs() {
    ROOT_PROGRAMS_ONLY.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn root_programs_only() -> bool {
    ROOT_PROGRAMS_ONLY.load(std::sync::atomic::Ordering::SeqCst)
}

/// A command to run: program, arguments and how to run it.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: String,
    args: Vec<OsString>,
    timeout: Duration,
    stdin: Option<Vec<u8>>,
    env: Vec<(OsString, OsString)>,
    ok_codes: Vec<i32>,
}

/// What a successful run printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Standard output, lossily decoded as UTF-8.
    pub stdout: String,
    /// Standard error, lossily decoded as UTF-8.
    pub stderr: String,
    /// The exit code, one of the accepted codes (see [`Cmd::ok_codes`]).
    pub code: i32,
}

/// Why a command did not succeed.
#[derive(Debug, Error)]
pub enum ExecError {
    /// The program could not be started.
    #[error("{}", spawn_message(.program, .source))]
    Spawn {
        /// The program as given to [`Cmd::new`].
        program: String,
        /// Why the spawn failed; `NotFound` when it is not installed.
        #[source]
        source: io::Error,
    },
    /// The program ran and exited with a status not accepted.
    #[error("`{}` {}: {}", argv_display(.program, .args), status_display(.status), stderr_display(.stderr))]
    Failed {
        /// The program that ran.
        program: String,
        /// Its arguments.
        args: Vec<String>,
        /// How it exited.
        status: ExitStatus,
        /// The last lines of its stderr, trimmed.
        stderr: String,
    },
    /// The program ran longer than its timeout and was killed.
    #[error("`{}` timed out after {after:?}", argv_display(.program, .args))]
    TimedOut {
        /// The program that ran.
        program: String,
        /// Its arguments.
        args: Vec<String>,
        /// The timeout that expired.
        after: Duration,
    },
}

fn spawn_message(program: &str, source: &io::Error) -> String {
    if source.kind() == io::ErrorKind::NotFound {
        format!("`{program}` is not installed or not on PATH")
    } else {
        format!("Cannot start `{program}`")
    }
}

fn argv_display(program: &str, args: &[String]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

fn status_display(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("exited with {status}"),
    }
}

fn stderr_display(stderr: &str) -> &str {
    if stderr.is_empty() {
        "(no stderr)"
    } else {
        stderr
    }
}

/// The last `max` lines of `text`, trimmed.
fn tail_lines(text: &str, max: usize) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(max)..].join("\n")
}

fn lossy(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

impl Cmd {
    /// A command running `program`; a name without `/` is looked up on
    /// `PATH` plus `/usr/sbin` and `/sbin`.
    pub fn new(program: impl Into<String>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            stdin: None,
            env: Vec::new(),
            ok_codes: vec![0],
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Kills the program when it runs longer than `timeout` (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Feeds `bytes` to the program's stdin (otherwise stdin is `/dev/null`).
    pub fn stdin_bytes(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    /// Sets an environment variable for the program.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Exit codes that count as success (default `[0]`); e.g. `e2fsck -p`
    /// exits 1 after correcting errors.
    pub fn ok_codes(mut self, codes: &[i32]) -> Self {
        self.ok_codes = codes.to_vec();
        self
    }

    /// The argv shown in logs and errors: program names as given.
    fn display_argv(&self) -> (String, Vec<String>) {
        (
            self.program.clone(),
            self.args.iter().map(|a| lossy(a)).collect(),
        )
    }

    /// Runs the command to completion; an exit code outside
    /// [`Cmd::ok_codes`] is an error carrying the program's stderr.
    pub async fn run(&self) -> Result<Output, ExecError> {
        self.run_with_stdout(Stdio::piped()).await
    }

    /// Runs the command with its stdout a unix socket and returns the one
    /// descriptor it sends there (`SCM_RIGHTS`) before it exits: how
    /// banger's privileged helper hands the daemon a socket bound to a
    /// port the daemon may not bind itself. The [`Output`] has no stdout.
    pub async fn run_receiving_fd(&self) -> Result<(Output, OwnedFd), ExecError> {
        use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
        let spawn_error = |source: io::Error| ExecError::Spawn {
            program: self.program.clone(),
            source,
        };
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| spawn_error(e.into()))?;
        let output = self.run_with_stdout(Stdio::from(theirs)).await?;
        let fd = receive_fd(&ours).map_err(spawn_error)?;
        Ok((output, fd))
    }

    async fn run_with_stdout(&self, stdout: Stdio) -> Result<Output, ExecError> {
        let (shown_program, shown_args) = self.display_argv();
        let program = resolve(&self.program)?;

        let mut command = tokio::process::Command::new(&program);
        if root_programs_only() {
            command.env_clear().env("PATH", TRUSTED_PATH);
        }
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(stdout)
            .stderr(Stdio::piped())
            .kill_on_drop(true);

        let started = Instant::now();
        let mut child = command.spawn().map_err(|source| ExecError::Spawn {
            program: shown_program.clone(),
            source,
        })?;
        let stdin = child.stdin.take();
        let feed = async {
            if let (Some(mut pipe), Some(bytes)) = (stdin, self.stdin.as_deref()) {
                // The child may exit without reading everything; its exit
                // status is what counts, so a broken pipe is not an error.
                let _ = pipe.write_all(bytes).await;
            }
        };
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let finished = tokio::time::timeout(self.timeout, async {
            let (status, stdout, stderr, ()) = tokio::join!(
                child.wait(),
                read_capped(stdout, MAX_STDOUT),
                read_capped(stderr, MAX_STDERR),
                feed
            );
            Ok::<_, io::Error>(std::process::Output {
                status: status?,
                stdout: stdout?,
                stderr: stderr?,
            })
        })
        .await;
        let elapsed = started.elapsed();
        let argv = argv_display(&shown_program, &shown_args);

        // On timeout the dropped future drops the child, which kills it.
        let Ok(output) = finished else {
            tracing::debug!(%argv, ?elapsed, "command timed out");
            return Err(ExecError::TimedOut {
                program: shown_program,
                args: shown_args,
                after: self.timeout,
            });
        };
        let output = output.map_err(|source| ExecError::Spawn {
            program: shown_program.clone(),
            source,
        })?;
        tracing::debug!(%argv, status = %output.status, ?elapsed, "ran command");

        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        match output.status.code() {
            Some(code) if self.ok_codes.contains(&code) => Ok(Output {
                stdout,
                stderr,
                code,
            }),
            _ => Err(ExecError::Failed {
                program: shown_program,
                args: shown_args,
                status: output.status,
                stderr: tail_lines(&stderr, STDERR_TAIL_LINES),
            }),
        }
    }
}

/// The one descriptor queued on `socket` (`SCM_RIGHTS`), without waiting:
/// the sender has exited by now.
fn receive_fd(socket: &OwnedFd) -> io::Result<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    recvmsg(
        socket,
        &mut [io::IoSliceMut::new(&mut byte)],
        &mut ancillary,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    )?;
    let received = ancillary.drain().find_map(|message| match message {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    received.ok_or_else(|| io::Error::other("the program sent no descriptor"))
}

/// Reads `pipe` to its end, keeping at most `cap` bytes.
async fn read_capped(
    pipe: Option<impl tokio::io::AsyncRead + Unpin>,
    cap: usize,
) -> io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return Ok(kept);
    };
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok(kept);
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

/// Resolves a program name to the path to execute.
fn resolve(program: &str) -> Result<OsString, ExecError> {
    let not_found = || ExecError::Spawn {
        program: program.to_string(),
        source: io::ErrorKind::NotFound.into(),
    };
    if !root_programs_only() {
        return tools::find_program(program, None)
            .map(OsString::from)
            .ok_or_else(not_found);
    }
    let dirs: Vec<_> = std::env::split_paths(TRUSTED_PATH).collect();
    let path = tools::find_program_in(program, &dirs)
        .filter(|path| path.is_absolute())
        .ok_or_else(not_found)?;
    super::trust::root_owned(&path).map_err(|why| ExecError::Spawn {
        program: program.to_string(),
        source: io::Error::new(io::ErrorKind::PermissionDenied, why),
    })?;
    Ok(path.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        let text = (1..=30).map(|i| format!("line {i}\n")).collect::<String>();
        let tail = tail_lines(&text, 20);
        assert!(tail.starts_with("line 11\n"));
        assert!(tail.ends_with("line 30"));
        assert_eq!(tail_lines("  \n", 20), "");
    }

    #[test]
    fn failed_message_shows_argv_status_and_stderr() {
        let err = ExecError::Failed {
            program: "mkfs.ext4".into(),
            args: vec!["-F".into(), "/tmp/x".into()],
            status: ExitStatus::from_raw(1 << 8),
            stderr: "boom".into(),
        };
        assert_eq!(
            err.to_string(),
            "`mkfs.ext4 -F /tmp/x` exited with status 1: boom"
        );
    }
}
