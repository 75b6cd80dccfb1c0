//! Native SSH client (russh): connect with a strict host key, run commands
//! with streamed output and exit status, upload and download tar archives.
//!
//! Shaped like Cloud Hypervisor's `test_infra::Guest`: a `Target` says who
//! the guest is (address, user, key, the one host key to accept), a
//! `Session` is one authenticated connection, and the builder and
//! `banger vm cp` read as a recipe of `exec`, `upload` and `download`.
//! Nothing here spawns a process; archives are built and unpacked
//! in-process (`archive`) and streamed through bounded channels, so a
//! multi-GiB file never sits in memory.

pub mod archive;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelWriteHalf, Disconnect, Sig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use crate::rpc::api::OutputStream;

/// Size of the pieces an archive is streamed in.
const CHUNK: usize = 64 * 1024;
/// Pieces in flight between the archive thread and the channel.
pub(crate) const CHUNKS_IN_FLIGHT: usize = 8;
/// How much of a failing command's stderr an error keeps.
const STDERR_KEPT: usize = 16 * 1024;

/// The most stdout [`Session::output`] collects.
pub const MAX_CAPTURED: usize = 16 << 20;
/// Bound on one connection attempt inside `wait_for`, so a guest that
/// accepts TCP but never answers is tried again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between connection attempts inside `wait_for`.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Who to connect to, and how to know it is really them.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub user: String,
    /// Private key file (OpenSSH format, ed25519, no passphrase — made by ssh-keygen).
    pub key: PathBuf,
    /// The one host key to accept: an OpenSSH public key line, "ssh-ed25519 AAAA... [comment]".
    pub host_key: String,
}

/// Everything that can go wrong talking to a guest over SSH.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// A command printed more than the caller collects.
    #[error("`{command}` printed more than {limit} bytes")]
    OutputTooLarge { command: String, limit: usize },
    /// The TCP connection failed (the guest is down or still booting).
    #[error("Cannot connect to {addr}")]
    ConnectTcp {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The guest offered another host key than the one banger recorded.
    #[error(
        "Host key mismatch at {addr}: expected {expected}, offered {offered}; \
         the guest is not the machine banger made"
    )]
    VerifyHostKey {
        addr: SocketAddr,
        expected: String,
        offered: String,
    },
    /// The guest refused our key.
    #[error("Authentication failed for user {user} with key {}", key.display())]
    Authenticate { user: String, key: PathBuf },
    /// The private key file is missing, unreadable or not a key.
    #[error("Cannot read private key {}", path.display())]
    ReadKey {
        path: PathBuf,
        #[source]
        source: Box<russh::keys::Error>,
    },
    /// `Target::host_key` is not an OpenSSH public key line.
    #[error("Cannot parse the expected host key `{line}`")]
    ParseHostKey {
        line: String,
        #[source]
        source: Box<russh::keys::ssh_key::Error>,
    },
    /// Connect, handshake and authentication took longer than allowed.
    #[error("Timed out after {} connecting to {addr}", secs(*after))]
    TimeOut { addr: SocketAddr, after: Duration },
    /// `wait_for` gave up; the source is what the last attempt saw.
    #[error("SSH at {addr} not ready after {}", secs(*after))]
    WaitSsh {
        addr: SocketAddr,
        after: Duration,
        #[source]
        last: Box<SshError>,
    },
    /// The SSH protocol failed before authentication.
    #[error("SSH handshake with {addr} failed")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: Box<russh::Error>,
    },
    /// The connection or channel failed while running a command.
    #[error("SSH channel failed running `{command}`")]
    RunCommand {
        command: String,
        #[source]
        source: Box<russh::Error>,
    },
    /// The guest's sshd declined the exec request.
    #[error("The guest refused to run `{command}`")]
    RefuseCommand { command: String },
    /// The channel closed without an exit status (connection lost, or
    /// the server gave up on the command).
    #[error("`{command}` ended without an exit status")]
    ReceiveExitStatus { command: String },
    /// Reading host files for an upload failed.
    #[error("Cannot build the upload archive")]
    BuildArchive {
        #[source]
        source: io::Error,
    },
    /// Writing a download to the host failed, or the archive was refused.
    #[error("Cannot unpack into {}", dest.display())]
    UnpackArchive {
        dest: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The guest's `tar -x` failed.
    #[error("The guest's tar failed to unpack the upload (exit {status}): {stderr}")]
    ExtractUpload { status: u32, stderr: String },
    /// The guest's `tar -c` failed.
    #[error("The guest's tar failed to pack {path} (exit {status}): {stderr}")]
    PackDownload {
        path: String,
        status: u32,
        stderr: String,
    },
    /// A guest path that cannot be downloaded (`/`, `..`, empty).
    #[error("Cannot download guest path `{path}`: {why}")]
    CheckGuestPath { path: String, why: &'static str },
}

impl SshError {
    /// Whether `wait_for` should try again: the guest may still be booting.
    /// A wrong host key, a refused key or a bad key file never fix themselves.
    fn is_transient(&self) -> bool {
        matches!(
            self,
            SshError::ConnectTcp { .. } | SshError::TimeOut { .. } | SshError::Handshake { .. }
        )
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A finished command's exit status and output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The exit status, or 128 + the signal that killed it.
    pub status: u32,
    pub stdout: Vec<u8>,
    /// Kept apart from stdout so an error can quote what went wrong.
    pub stderr: Vec<u8>,
}

/// One authenticated SSH connection to a guest.
pub struct Session {
    handle: Handle<HostKeyCheck>,
    /// For log lines.
    addr: SocketAddr,
}

impl Session {
    /// One TCP+SSH connection, authenticated with `target.key`, refusing any
    /// host key but `target.host_key`. `timeout` bounds connect + handshake
    /// + auth.
    pub async fn connect(target: &Target, timeout: Duration) -> Result<Session, SshError> {
        let key = russh::keys::load_secret_key(&target.key, None).map_err(|source| {
            SshError::ReadKey {
                path: target.key.clone(),
                source: Box::new(source),
            }
        })?;
        let line = target.host_key.trim();
        let expected = PublicKey::from_openssh(line).map_err(|source| SshError::ParseHostKey {
            line: line.to_string(),
            source: Box::new(source),
        })?;
        match tokio::time::timeout(timeout, handshake(target, key, expected)).await {
            Ok(result) => result,
            Err(_) => Err(SshError::TimeOut {
                addr: target.addr,
                after: timeout,
            }),
        }
    }

    /// Runs `command` (interpreted by the remote user's shell), calling
    /// `on_output` with each chunk of stdout/stderr as it arrives; returns
    /// the exit status. A command killed by a signal returns 128 + the
    /// signal number (like a shell). Stdin is closed at once.
    pub async fn exec(
        &mut self,
        command: &str,
        on_output: &mut (dyn FnMut(OutputStream, &[u8]) + Send),
    ) -> Result<u32, SshError> {
        self.run(command, Input::None, Sink::Call(on_output)).await
    }

    /// Like `exec`, feeding `stdin` (all bytes, then EOF) to the command.
    pub async fn exec_with_input(
        &mut self,
        command: &str,
        stdin: &[u8],
        on_output: &mut (dyn FnMut(OutputStream, &[u8]) + Send),
    ) -> Result<u32, SshError> {
        self.run(command, Input::Bytes(stdin), Sink::Call(on_output))
            .await
    }

    /// Runs `command` and collects its output: stdout up to
    /// [`MAX_CAPTURED`] (more is an error: the guest decides how much it
    /// prints), stderr's first bytes.
    pub async fn output(&mut self, command: &str) -> Result<Captured, SshError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut overflow = false;
        let status = self
            .exec(command, &mut |stream, data| match stream {
                OutputStream::Stdout if stdout.len() + data.len() <= MAX_CAPTURED => {
                    stdout.extend_from_slice(data)
                }
                OutputStream::Stdout => overflow = true,
                OutputStream::Stderr => keep_head(&mut stderr, data),
            })
            .await?;
        if overflow {
            return Err(SshError::OutputTooLarge {
                command: command.to_string(),
                limit: MAX_CAPTURED,
            });
        }
        Ok(Captured {
            status,
            stdout,
            stderr,
        })
    }

    /// Uploads host files and directories as one tar archive built
    /// in-process (streamed, never whole in memory) and unpacked in the
    /// guest by `tar -x -p --no-same-owner -f - -C /`: owner root:root, modes, symlinks,
    /// empty directories and mtimes kept. A failing guest tar is an error
    /// carrying its stderr.
    pub async fn upload(&mut self, entries: &[archive::Entry]) -> Result<(), SshError> {
        for entry in entries {
            archive::member_name(&entry.guest)
                .map_err(|source| SshError::BuildArchive { source })?;
        }
        let entries = entries.to_vec();
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let producer = tokio::task::spawn_blocking(move || {
            let mut out = ChunkWriter {
                buf: Vec::with_capacity(CHUNK),
                tx,
            };
            archive::write_archive(&entries, &mut out)
        });
        let mut stderr = Vec::new();
        let mut keep = |stream: OutputStream, data: &[u8]| {
            if stream == OutputStream::Stderr {
                keep_head(&mut stderr, data);
            }
        };
        let command = "tar -x -p --no-same-owner -f - -C /";
        let status = self
            .run(command, Input::Stream(rx, producer), Sink::Call(&mut keep))
            .await?;
        if status != 0 {
            return Err(SshError::ExtractUpload {
                status,
                stderr: text(&stderr),
            });
        }
        Ok(())
    }

    /// Downloads guest path `guest` (file or directory, recursively) to host
    /// path `dest` with `cp -r` semantics: if `dest` is an existing
    /// directory the result is `dest/<basename of guest>`, otherwise `dest`
    /// is the new name. The guest runs `tar -c -f - -C <parent> <basename>`;
    /// the host unpacks in-process, modes kept, refusing any entry that
    /// would land outside the destination.
    pub async fn download(&mut self, guest: &str, dest: &Path) -> Result<(), SshError> {
        let Download {
            parent,
            base,
            member,
            target,
        } = Download::plan(guest, dest)?;
        let command = format!("tar -c -f - -C {} {}", quote(&parent), quote(&member));
        let (tx, rx) = mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
        let unpacker = {
            let target = target.clone();
            tokio::task::spawn_blocking(move || {
                let input = ChunkReader {
                    rx,
                    chunk: Vec::new(),
                    at: 0,
                };
                archive::unpack(input, &base, &target)
            })
        };
        let mut stderr = Vec::new();
        let sink = Sink::Unpack {
            stdout: tx,
            stderr: &mut stderr,
        };
        let ran = self.run(&command, Input::None, sink).await;
        let unpacked = unpacker.await.unwrap_or_else(|e| Err(io::Error::other(e)));
        match (ran, unpacked) {
            (Ok(status), _) if status != 0 => Err(SshError::PackDownload {
                path: guest.to_string(),
                status,
                stderr: text(&stderr),
            }),
            (_, Err(source)) => Err(SshError::UnpackArchive {
                dest: target,
                source,
            }),
            (Err(e), Ok(())) => Err(e),
            (Ok(_), Ok(())) => Ok(()),
        }
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        if let Err(err) = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await
        {
            tracing::debug!(addr = %self.addr, %err, "SSH disconnect failed");
        }
    }

    /// Runs `command` on a new channel, feeding `input` while passing its
    /// output to `sink`, until the channel closes.
    async fn run(
        &mut self,
        command: &str,
        input: Input<'_>,
        mut sink: Sink<'_>,
    ) -> Result<u32, SshError> {
        tracing::debug!(addr = %self.addr, command, "ssh exec");
        let failed = |source| SshError::RunCommand {
            command: command.to_string(),
            source: Box::new(source),
        };
        let channel = self.handle.channel_open_session().await.map_err(failed)?;
        channel.exec(true, command).await.map_err(failed)?;
        let (mut read, write) = channel.split();
        let mut feed = pin!(feed(&write, input, command));
        let mut fed = false;
        let mut status = None;
        let result = loop {
            tokio::select! {
                done = &mut feed, if !fed => {
                    fed = true;
                    if let Err(err) = done {
                        break Err(err);
                    }
                }
                msg = read.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => {
                        if let Err(err) = sink.put(OutputStream::Stdout, &data, command).await {
                            break Err(err);
                        }
                    }
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                        if let Err(err) = sink.put(OutputStream::Stderr, &data, command).await {
                            break Err(err);
                        }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        status = Some(128 + signal_number(&signal_name));
                    }
                    Some(ChannelMsg::Failure) => {
                        break Err(SshError::RefuseCommand { command: command.to_string() });
                    }
                    Some(ChannelMsg::Close) | None => break Ok(()),
                    Some(_) => {}
                },
            }
        };
        if let Err(err) = result {
            // Stop the remote side too: nothing will read what it sends.
            let _ = write.close().await;
            return Err(err);
        }
        status.ok_or_else(|| SshError::ReceiveExitStatus {
            command: command.to_string(),
        })
    }
}

/// Retries `Session::connect` until it succeeds or `timeout` passes: the
/// guest is booting, so refused connections, unreachable hosts and silent
/// handshakes are tried again every ~200 ms. A host key mismatch or a
/// refused key fails at once. The error on timeout carries what the last
/// attempt saw.
pub async fn wait_for(target: &Target, timeout: Duration) -> Result<Session, SshError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let err = match Session::connect(target, left.min(ATTEMPT_TIMEOUT)).await {
            Ok(session) => return Ok(session),
            Err(err) if !err.is_transient() => return Err(err),
            Err(err) => err,
        };
        if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
            tracing::debug!(addr = %target.addr, error = %err, "giving up on SSH");
            return Err(SshError::WaitSsh {
                addr: target.addr,
                after: timeout,
                last: Box::new(err),
            });
        }
        tracing::trace!(addr = %target.addr, error = %err, "SSH not ready yet");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// POSIX shell single-quoting of one word, for building remote commands:
/// `quote("a b'c")` is `'a b'\''c'`; words made only of
/// `[A-Za-z0-9_./=:,+-@%]` are returned as they are.
pub fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./=:,+-@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// TCP connect, SSH handshake with the host key check, public key auth.
async fn handshake(
    target: &Target,
    key: russh::keys::PrivateKey,
    expected: PublicKey,
) -> Result<Session, SshError> {
    let addr = target.addr;
    let socket = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| SshError::ConnectTcp { addr, source })?;
    let _ = socket.set_nodelay(true);
    let config = client::Config {
        // Builder commands (apt, say) may run for minutes without output:
        // no inactivity cut-off; keepalives notice a dead guest instead.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    };
    let offered = Arc::new(Mutex::new(None));
    let check = HostKeyCheck {
        expected: expected.clone(),
        offered: offered.clone(),
    };
    let mut handle = match client::connect_stream(Arc::new(config), socket, check).await {
        Ok(handle) => handle,
        Err(source) => {
            let offered = offered.lock().unwrap_or_else(|e| e.into_inner()).take();
            return Err(match (source, offered) {
                (russh::Error::UnknownKey, Some(offered)) => {
                    let expected = expected.fingerprint(HashAlg::Sha256).to_string();
                    tracing::warn!(%addr, %expected, %offered, "host key mismatch");
                    SshError::VerifyHostKey {
                        addr,
                        expected,
                        offered,
                    }
                }
                (source, _) => SshError::Handshake {
                    addr,
                    source: Box::new(source),
                },
            });
        }
    };
    let hash = if key.algorithm().is_rsa() {
        handle
            .best_supported_rsa_hash()
            .await
            .map_err(|source| SshError::Handshake {
                addr,
                source: Box::new(source),
            })?
            .flatten()
    } else {
        None
    };
    let auth = handle
        .authenticate_publickey(
            &target.user,
            PrivateKeyWithHashAlg::new(Arc::new(key), hash),
        )
        .await
        .map_err(|source| SshError::Handshake {
            addr,
            source: Box::new(source),
        })?;
    if !auth.success() {
        tracing::warn!(%addr, user = %target.user, key = %target.key.display(), "key refused");
        return Err(SshError::Authenticate {
            user: target.user.clone(),
            key: target.key.clone(),
        });
    }
    Ok(Session { handle, addr })
}

/// The russh handler: accepts exactly one host key and remembers the
/// fingerprint of any other so the error can name it.
struct HostKeyCheck {
    expected: PublicKey,
    offered: Arc<Mutex<Option<String>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = server_key.public_key();
        if key.key_data() == self.expected.key_data() {
            return Ok(true);
        }
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        *self.offered.lock().unwrap_or_else(|e| e.into_inner()) = Some(fingerprint);
        Ok(false)
    }
}

/// What a command reads on stdin.
enum Input<'a> {
    None,
    Bytes(&'a [u8]),
    /// Chunks from an archive thread, whose result is checked once the
    /// chunks end (a failed archive must not look like a complete one).
    Stream(mpsc::Receiver<Vec<u8>>, JoinHandle<io::Result<()>>),
}

/// Sends `input` then EOF.
async fn feed(
    write: &ChannelWriteHalf<client::Msg>,
    input: Input<'_>,
    command: &str,
) -> Result<(), SshError> {
    let failed = |source| SshError::RunCommand {
        command: command.to_string(),
        source: Box::new(source),
    };
    match input {
        Input::None => {}
        Input::Bytes(bytes) => write.data(bytes).await.map_err(failed)?,
        Input::Stream(mut rx, producer) => {
            while let Some(chunk) = rx.recv().await {
                write.data_bytes(chunk).await.map_err(failed)?;
            }
            producer
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)))
                .map_err(|source| SshError::BuildArchive { source })?;
        }
    }
    write.eof().await.map_err(failed)
}

/// Where a command's output goes.
enum Sink<'a> {
    Call(&'a mut (dyn FnMut(OutputStream, &[u8]) + Send)),
    /// Stdout to the unpacking thread, stderr kept for the error.
    Unpack {
        stdout: mpsc::Sender<Vec<u8>>,
        stderr: &'a mut Vec<u8>,
    },
}

impl Sink<'_> {
    async fn put(
        &mut self,
        stream: OutputStream,
        data: &[u8],
        command: &str,
    ) -> Result<(), SshError> {
        match self {
            Sink::Call(f) => f(stream, data),
            Sink::Unpack { stderr, .. } if stream == OutputStream::Stderr => {
                keep_head(stderr, data)
            }
            Sink::Unpack { stdout, .. } => {
                // A closed receiver means the unpacker failed; its error is
                // the one reported, this only stops the transfer.
                if stdout.send(data.to_vec()).await.is_err() {
                    return Err(SshError::RunCommand {
                        command: command.to_string(),
                        source: Box::new(russh::Error::SendError),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Adapts the blocking archive writer to the async channel: 64 KiB chunks
/// over a bounded queue, so memory stays small whatever the upload size.
pub(crate) struct ChunkWriter {
    buf: Vec<u8>,
    tx: mpsc::Sender<Vec<u8>>,
}

impl ChunkWriter {
    pub(crate) fn new(tx: mpsc::Sender<Vec<u8>>) -> ChunkWriter {
        ChunkWriter {
            buf: Vec::with_capacity(CHUNK),
            tx,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(chunk).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the channel to the guest closed")
        })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The reverse of `ChunkWriter`: a blocking reader over received chunks;
/// EOF when the sender is dropped.
pub(crate) struct ChunkReader {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ChunkReader {
    pub(crate) fn new(rx: mpsc::Receiver<Vec<u8>>) -> ChunkReader {
        ChunkReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => (self.chunk, self.at) = (chunk, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// What a download of a guest path packs, and where it lands.
pub(crate) struct Download {
    /// The directory the guest's `tar -C` enters.
    pub parent: String,
    /// The name of what is copied.
    pub base: String,
    /// `base` as `tar` is told it (`./` keeps a name starting with '-' from
    /// reading as an option).
    pub member: String,
    /// The host path it lands at, `cp -r` style: in `dest` when that is a
    /// directory, else as `dest`.
    pub target: std::path::PathBuf,
}

impl Download {
    pub(crate) fn plan(guest: &str, dest: &Path) -> Result<Download, SshError> {
        let (parent, base) = split_guest_path(guest)?;
        let target = if dest.is_dir() {
            dest.join(&base)
        } else {
            dest.to_path_buf()
        };
        let member = if base.starts_with('-') {
            format!("./{base}")
        } else {
            base.clone()
        };
        Ok(Download {
            parent,
            base,
            member,
            target,
        })
    }
}

/// Splits a guest path into the directory `tar -C` enters and the name it
/// packs. A relative path is relative to the remote user's home.
fn split_guest_path(guest: &str) -> Result<(String, String), SshError> {
    let bad = |why| SshError::CheckGuestPath {
        path: guest.to_string(),
        why,
    };
    let trimmed = guest.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(bad("name a file or directory, not the root"));
    }
    let (parent, base) = match trimmed.rsplit_once('/') {
        Some(("", base)) => ("/", base),
        Some((parent, base)) => (parent, base),
        None => (".", trimmed),
    };
    if base == "." || base == ".." {
        return Err(bad("must end in a name, not `.` or `..`"));
    }
    Ok((parent.to_string(), base.to_string()))
}

/// The Linux number of a signal the SSH protocol names.
fn signal_number(sig: &Sig) -> u32 {
    match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(name) => match name.as_str() {
            "TRAP" => 5,
            "BUS" => 7,
            "USR2" => 12,
            "STKFLT" => 16,
            "CHLD" => 17,
            "CONT" => 18,
            "STOP" => 19,
            "TSTP" => 20,
            "TTIN" => 21,
            "TTOU" => 22,
            "URG" => 23,
            "XCPU" => 24,
            "XFSZ" => 25,
            "VTALRM" => 26,
            "PROF" => 27,
            "WINCH" => 28,
            "IO" => 29,
            "PWR" => 30,
            "SYS" => 31,
            // Unknown to us: still a death by signal, never a success.
            _ => 127,
        },
    }
}

/// Appends `data` to `buf` up to `STDERR_KEPT` bytes.
fn keep_head(buf: &mut Vec<u8>, data: &[u8]) {
    let room = STDERR_KEPT.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

/// Command output as a one-line-or-more message, trimmed.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(quote("/etc/os-release"), "/etc/os-release");
        assert_eq!(quote("a=b,c:d+e@f%g-h_i.j"), "a=b,c:d+e@f%g-h_i.j");
        assert_eq!(quote("a b'c"), r"'a b'\''c'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$(reboot)"), "'$(reboot)'");
        assert_eq!(quote("*"), "'*'");
        assert_eq!(quote("x\ny"), "'x\ny'");
    }

    #[test]
    fn guest_paths_split_into_parent_and_name() {
        let split = |p| split_guest_path(p).unwrap();
        assert_eq!(
            split("/etc/os-release"),
            ("/etc".into(), "os-release".into())
        );
        assert_eq!(split("/root/dir/"), ("/root".into(), "dir".into()));
        assert_eq!(split("/boot"), ("/".into(), "boot".into()));
        assert_eq!(split("notes.txt"), (".".into(), "notes.txt".into()));
        for bad in ["/", "", "//", "/a/..", "/a/."] {
            assert!(split_guest_path(bad).is_err(), "{bad}");
        }
    }

    /// The daemon runs sessions inside spawned tasks: every future must be Send.
    #[allow(dead_code)]
    fn futures_are_send(ssh: &mut Session, target: &Target) {
        fn send<T: Send>(_: T) {}
        send(wait_for(target, Duration::ZERO));
        send(ssh.exec("true", &mut |_, _| {}));
        send(ssh.exec_with_input("cat", b"x", &mut |_, _| {}));
        send(ssh.output("true"));
        send(ssh.upload(&[]));
        send(ssh.download("/etc", Path::new(".")));
    }

    #[test]
    fn signals_map_like_a_shell() {
        assert_eq!(128 + signal_number(&Sig::KILL), 137);
        assert_eq!(128 + signal_number(&Sig::TERM), 143);
        assert_eq!(signal_number(&Sig::Custom("USR2".into())), 12);
    }

    #[test]
    fn only_boot_time_failures_are_retried() {
        let addr: SocketAddr = "127.0.0.1:22".parse().unwrap();
        let refused = SshError::ConnectTcp {
            addr,
            source: io::ErrorKind::ConnectionRefused.into(),
        };
        assert!(refused.is_transient());
        let mismatch = SshError::VerifyHostKey {
            addr,
            expected: "SHA256:a".into(),
            offered: "SHA256:b".into(),
        };
        assert!(!mismatch.is_transient());
        let refused_key = SshError::Authenticate {
            user: "root".into(),
            key: "/k".into(),
        };
        assert!(!refused_key.is_transient());
    }

    #[test]
    fn chunk_writer_and_reader_carry_bytes_in_order() {
        let (tx, rx) = mpsc::channel(2);
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let expected = data.clone();
        let writer = std::thread::spawn(move || {
            let mut w = ChunkWriter {
                buf: Vec::new(),
                tx,
            };
            w.write_all(&data).unwrap();
            w.flush().unwrap();
        });
        let mut reader = ChunkReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        };
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got, expected);
    }
}
