//! Logs a guest can fill: a file that never grows past its cap (at the cap
//! it becomes `<name>.1`, replacing the older one, and a fresh file starts),
//! and the relay process that writes a VMM's console and log through it.
//!
//! The relay sits between the VMM and its log files the way conmon does for
//! Podman: the VMM writes its serial console to a pipe (stdout) and its own
//! log to another (stderr); the relay, in a session of its own like the
//! VMM, reads both and writes capped files. It outlives the daemon and
//! exits when the VMM closes the pipes, so no one has to watch it. If the
//! guest writes faster than the relay keeps up, the pipe fills and the
//! guest's serial port waits: the host's disk never does.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// The smallest cap: below it a rotation would happen every few lines.
pub const MIN_CAP: u64 = 64 << 10;

/// The subcommand of `bangerd` that runs the relay.
pub const RELAY_COMMAND: &str = "log-relay";

/// An append-only log file that rotates at `cap` bytes.
#[derive(Debug)]
pub struct CappedFile {
    path: PathBuf,
    cap: u64,
    file: File,
    len: u64,
}

impl CappedFile {
    /// Opens `path` for appending; an existing file counts toward the cap.
    pub fn open(path: &Path, cap: u64) -> io::Result<CappedFile> {
        let file = open_append(path)?;
        let len = file.metadata()?.len();
        Ok(CappedFile {
            path: path.to_path_buf(),
            cap: cap.max(MIN_CAP),
            file,
            len,
        })
    }

    /// The older file this one rotates into.
    pub fn rotated(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        std::fs::rename(&self.path, CappedFile::rotated(&self.path))?;
        self.file = open_append(&self.path)?;
        self.len = 0;
        Ok(())
    }
}

impl Write for CappedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.len >= self.cap {
            self.rotate()?;
        }
        let room = (self.cap - self.len) as usize;
        let n = self.file.write(&buf[..buf.len().min(room)])?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// A capped file more than one stream may write (a jailed Firecracker's
/// stderr and its log FIFO both go to its log).
type SharedFile = Arc<Mutex<CappedFile>>;

/// Copies `input` to `output` until end of file.
fn pump(mut input: File, output: SharedFile) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&buf[..n])?;
    }
}

/// The relay's own work: copies each `(descriptor, file)` stream into its
/// capped file until every stream ends. With `fifo`, it also copies what
/// arrives in that FIFO (a jailed Firecracker's log, which it cannot reach
/// as `/dev/stderr`) into its file for as long as the streams last: the
/// relay holds the FIFO open for writing too, so it never reads an end
/// there, and stops with the VMM's pipes.
pub fn relay(
    streams: Vec<(RawFd, PathBuf)>,
    fifo: Option<(PathBuf, PathBuf)>,
    cap: u64,
) -> io::Result<()> {
    let mut files: HashMap<PathBuf, SharedFile> = HashMap::new();
    let mut file_for = |path: &Path| -> io::Result<SharedFile> {
        if let Some(file) = files.get(path) {
            return Ok(file.clone());
        }
        let file = Arc::new(Mutex::new(CappedFile::open(path, cap)?));
        files.insert(path.to_path_buf(), file.clone());
        Ok(file)
    };
    let mut pumps = Vec::new();
    for (fd, path) in streams {
        // SAFETY: the descriptors were handed to this process on its
        // command line by the launcher and nothing else in it owns them.
        let input = unsafe { File::from_raw_fd(fd) };
        let output = file_for(&path)?;
        pumps.push(std::thread::spawn(move || pump(input, output)));
    }
    if let Some((fifo, path)) = fifo {
        let input = OpenOptions::new().read(true).write(true).open(&fifo)?;
        let output = file_for(&path)?;
        std::thread::spawn(move || pump(input, output));
    }
    for pump in pumps {
        pump.join()
            .map_err(|_| io::Error::other("a relay thread panicked"))??;
    }
    // The VMM is gone: give the FIFO's last lines a moment to arrive.
    std::thread::sleep(std::time::Duration::from_millis(100));
    Ok(())
}

/// The write ends a VMM is given: its stdout (the console) and its stderr
/// (its own log).
#[derive(Debug)]
pub struct RelayPipes {
    pub console: OwnedFd,
    pub vmm_log: OwnedFd,
}

/// Starts the relay (`program log-relay ...`, in its own session) writing
/// `console` and `vmm_log`, each capped at `cap` bytes (and `log_fifo`, a
/// jailed Firecracker's log, into `vmm_log` too); returns the pipes to give
/// the VMM. The relay ends when the last holder of the write ends closes
/// them: hand them to the VMM, then drop them here. It inherits `hold`
/// (the VMM's disk locks), so they last as long as the VMM, even one that
/// closes every descriptor it inherits (Firecracker's jailer).
pub fn spawn_relay(
    program: &Path,
    console: &Path,
    vmm_log: &Path,
    cap: u64,
    log_fifo: Option<&Path>,
    hold: &[RawFd],
) -> io::Result<RelayPipes> {
    // Both ends close-on-exec: only what is passed on below is inherited.
    let (console_read, console_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let (log_read, log_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // Created before the relay so a failed launch still reads "empty".
    for path in [console, vmm_log] {
        open_append(path)?;
    }
    let log_fd = log_read.as_raw_fd();
    let mut command = Command::new(program);
    command
        .arg(RELAY_COMMAND)
        .arg("--cap")
        .arg(cap.to_string())
        .arg(format!("0={}", console.display()))
        .arg(format!("{log_fd}={}", vmm_log.display()))
        .stdin(Stdio::from(console_read))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(fifo) = log_fifo {
        command
            .arg("--fifo")
            .arg(format!("{}={}", fifo.display(), vmm_log.display()));
    }
    let mut inherited = vec![log_fd];
    inherited.extend_from_slice(hold);
    // SAFETY: setsid and fcntl are async-signal-safe; `inherited` was
    // allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            rustix::process::setsid()?;
            super::disklock::inherit(&inherited)
        });
    }
    let mut child = tokio::process::Command::from(command)
        .kill_on_drop(false)
        .spawn()?;
    drop(log_read);
    // Reaped here while this daemon lives; after that, by init.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(RelayPipes {
        console: console_write,
        vmm_log: log_write,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capped_file_rotates_and_never_passes_its_cap() {
        let (_dir, path) = crate::testing::temp_path("console.log");
        let mut log = CappedFile::open(&path, MIN_CAP).unwrap();
        let line = [b'x'; 1000];
        for _ in 0..300 {
            log.write_all(&line).unwrap();
        }
        let now = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(CappedFile::rotated(&path)).unwrap().len();
        // 300,000 bytes are four full files and 37,856 bytes: the last
        // full one is kept, the older ones are gone.
        assert_eq!((now, old), (300_000 - 4 * MIN_CAP, MIN_CAP));
    }
}
