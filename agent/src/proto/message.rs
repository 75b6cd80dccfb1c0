//! Typed messages: what a frame's kind and payload mean.
//!
//! Payloads are a small hand-written binary encoding (little endian):
//! integers at fixed width; `bytes` and `string` as a u32 length then the
//! bytes (strings UTF-8); lists as a u32 count then the items; options as a
//! u8 (0 absent, 1 present) then the value. Decoding reads only from the
//! payload it was given, so every length is bounded by the frame's, and a
//! count never allocates before its items are read. Bytes after the last
//! field are ignored, so a later version can append fields.

use super::frame::{Frame, TooLarge, encode_frame};
use super::identity::{HostKey, Identity, MAX_HOST_KEY, MAX_NAMESERVERS, Network};

/// Frame kinds. Host to agent below 0x8000, agent to host above.
pub mod kind {
    pub const HELLO: u16 = 0x0001;
    pub const EXEC: u16 = 0x0002;
    pub const STDIN: u16 = 0x0003;
    pub const STDIN_EOF: u16 = 0x0004;
    pub const RESIZE: u16 = 0x0005;
    pub const SIGNAL: u16 = 0x0006;
    pub const OUTPUT_CREDIT: u16 = 0x0007;
    pub const SET_CLOCK: u16 = 0x0010;
    pub const ADD_ENTROPY: u16 = 0x0011;
    pub const FREEZE: u16 = 0x0012;
    pub const THAW: u16 = 0x0013;
    pub const SHUTDOWN: u16 = 0x0014;
    pub const SET_IDENTITY: u16 = 0x0015;
    pub const STATUS: u16 = 0x0016;

    pub const HELLO_REPLY: u16 = 0x8001;
    pub const STARTED: u16 = 0x8010;
    pub const STDOUT: u16 = 0x8011;
    pub const STDERR: u16 = 0x8012;
    pub const STDIN_CREDIT: u16 = 0x8013;
    pub const EXITED: u16 = 0x8014;
    pub const CLOCK_SET: u16 = 0x8020;
    pub const FROZEN: u16 = 0x8021;
    pub const THAWED: u16 = 0x8022;
    pub const DONE: u16 = 0x8030;
    pub const ERROR: u16 = 0x80FF;
}

/// Why a request failed, in an [`Message::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame's kind is not one this agent knows.
    UnknownKind,
    /// The payload does not decode.
    Malformed,
    /// No exec session has this id.
    UnknownSession,
    /// An exec session with this id is running.
    SessionExists,
    /// Too many sessions at once.
    TooManySessions,
    /// The program could not be started (not found, not executable, bad
    /// working directory).
    ExecFailed,
    /// The host sent stdin beyond its window.
    WindowExceeded,
    /// A system call failed.
    Failed,
    /// The request is not possible here (no such filesystem, not supported).
    Unsupported,
    /// A code from a later version.
    Other(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::UnknownKind => 1,
            ErrorCode::Malformed => 2,
            ErrorCode::UnknownSession => 3,
            ErrorCode::SessionExists => 4,
            ErrorCode::TooManySessions => 5,
            ErrorCode::ExecFailed => 6,
            ErrorCode::WindowExceeded => 7,
            ErrorCode::Failed => 8,
            ErrorCode::Unsupported => 9,
            ErrorCode::Other(n) => n,
        }
    }

    pub fn from_u16(n: u16) -> Self {
        match n {
            1 => ErrorCode::UnknownKind,
            2 => ErrorCode::Malformed,
            3 => ErrorCode::UnknownSession,
            4 => ErrorCode::SessionExists,
            5 => ErrorCode::TooManySessions,
            6 => ErrorCode::ExecFailed,
            7 => ErrorCode::WindowExceeded,
            8 => ErrorCode::Failed,
            9 => ErrorCode::Unsupported,
            n => ErrorCode::Other(n),
        }
    }
}

/// A terminal's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// Start a program (frame id: the new session's id, chosen by the host).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exec {
    /// The program and its arguments; the program is looked up in the
    /// `PATH` of `env` when it has no slash.
    pub argv: Vec<Vec<u8>>,
    /// The whole environment, `KEY=VALUE`; the agent adds
    /// [`DEFAULT_PATH`](super::DEFAULT_PATH) when it has no `PATH`.
    pub env: Vec<Vec<u8>>,
    /// Working directory; `/` when absent.
    pub cwd: Option<Vec<u8>>,
    /// Whether the host streams stdin; when false the program reads
    /// `/dev/null`.
    pub stdin: bool,
    /// Run on a new pty of this size (stdout then carries the terminal's
    /// output, and there is no stderr).
    pub pty: Option<WinSize>,
}

/// What the agent says in answer to a hello (frame id 0) or to a
/// [`Message::Status`] (under the status request's id).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HelloReply {
    /// The host's nonce, echoed; 0 when the agent speaks first (on start
    /// and when a host connects).
    pub nonce: u64,
    /// The protocol version the agent speaks.
    pub version: u16,
    pub agent_version: String,
    pub kernel_release: String,
    /// `/proc/sys/kernel/random/boot_id`: changes on every boot.
    pub boot_id: String,
    pub uptime_ms: u64,
    /// Whether a TCP connect to port 22 on 127.0.0.1 or ::1 succeeded.
    pub sshd_accepting: bool,
    /// Whether the agent is the guest's init.
    pub pid1: bool,
    /// "virtio-serial", "vsock" or "fd".
    pub channel: String,
    /// The request kinds this agent serves, by name ("exec", "clock", ...).
    pub features: Vec<String>,
}

/// How to end the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownAction {
    PowerOff,
    Reboot,
}

/// Every message, in both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    // ---- host to agent ----
    /// Opens (or reopens) the conversation: the agent forgets every session
    /// of the previous one (killing their process groups) and thaws what is
    /// frozen, then answers with a [`Message::HelloReply`]. Frame id 0.
    Hello {
        nonce: u64,
        version: u16,
    },
    Exec(Exec),
    /// Bytes for the session's stdin; the host may have at most
    /// [`INPUT_WINDOW`](super::INPUT_WINDOW) bytes unacknowledged.
    Stdin(Vec<u8>),
    /// No more stdin (on a pty: an end-of-file character, ^D).
    StdinEof,
    Resize(WinSize),
    /// Send a signal (1..=64) to the session's whole process group; 9 kills it.
    Signal(u8),
    /// The host consumed this many bytes of the session's output.
    OutputCredit(u32),
    /// Set the wall clock (CLOCK_REALTIME).
    SetClock {
        secs: i64,
        nanos: u32,
    },
    /// Add bytes to the kernel's entropy pool (credited as 8 bits per byte),
    /// then, if asked, reseed the CRNG. At most
    /// [`MAX_ENTROPY`](super::MAX_ENTROPY) bytes.
    AddEntropy {
        data: Vec<u8>,
        reseed: bool,
    },
    /// FIFREEZE the named mount points, or every writable disk-backed
    /// filesystem when none is named. They are thawed by [`Message::Thaw`],
    /// after `timeout_ms` (capped at [`MAX_FREEZE_MS`](super::MAX_FREEZE_MS)),
    /// or when the host goes away, whichever comes first.
    Freeze {
        mounts: Vec<Vec<u8>>,
        timeout_ms: u32,
    },
    Thaw,
    Shutdown(ShutdownAction),
    /// Give the running guest a new identity, at once; answered `Done` or
    /// `Error`. A bad value (see [`Identity::validate`]) is refused when the
    /// frame is decoded (`Error`, `Malformed`), before anything changes.
    ///
    /// "Atomic enough" means: either the answer is `Done` and every part
    /// asked for is in place, or the answer is `Error` and the guest keeps
    /// its old identity, with one stated exception. The agent
    /// 1. checks every value and reads the interface's current state
    ///    (nothing changed yet on any failure);
    /// 2. writes every file's new content to a temporary file next to it
    ///    (same directory, so a rename replaces it whole), synced;
    /// 3. changes the network (link down, MAC, address and netmask, link
    ///    up, default route); if any step fails it puts the old MAC,
    ///    address, netmask, link state and default route back, deletes the
    ///    temporary files and answers `Error`;
    /// 4. renames the temporary files over `/etc/ssh/ssh_host_ed25519_key`
    ///    and `.pub`, `/etc/machine-id`, `/etc/resolv.conf`, `/etc/hosts`
    ///    and `/etc/hostname` (each file replaced whole: a reader sees the
    ///    old file or the new, never a torn one), syncs the directories, then
    ///    sets the kernel's hostname and sends SIGHUP to a running sshd.
    ///
    /// The exception: a rename in step 4 failing (the root filesystem
    /// failing or read-only, after it just took the temporary files) leaves
    /// the network and the files renamed before it new, and the answer is
    /// an `Error` that says so. Another program rewriting the same files at
    /// the same moment is not guarded against. Processes keep what they
    /// already read (a resolver's cached `/etc/resolv.conf`, an open
    /// connection on the old address).
    ///
    /// Payload: option hostname (bytes); option network (address [4],
    /// prefix u8, gateway [4], option mac [6], u32 count then that many
    /// nameservers [4]); option host key (private bytes, public bytes);
    /// option machine-id (bytes).
    SetIdentity(Identity),
    /// Ask how the agent is (the [`HelloReply`] fields, sshd's readiness
    /// among them) without starting a new conversation: nothing is reset,
    /// sessions go on. The frame id is the request's (not 0); the answer is
    /// a `HelloReply` with nonce 0 under it.
    Status,

    // ---- agent to host ----
    HelloReply(HelloReply),
    /// The session's program runs with this pid (also its process group).
    Started {
        pid: u32,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The agent passed this many of the session's stdin bytes on.
    StdinCredit(u32),
    /// The session is over: all its output was sent before this. `code` is
    /// the exit status, or 128 + `signal` when a signal ended it.
    Exited {
        code: i32,
        signal: u8,
    },
    /// The clock was set; it read this before.
    ClockSet {
        previous_secs: i64,
        previous_nanos: u32,
    },
    /// These filesystems are frozen.
    Frozen(Vec<String>),
    /// These filesystems were thawed.
    Thawed(Vec<String>),
    /// A request without an answer of its own succeeded.
    Done,
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// Why a payload does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// No message has this kind.
    UnknownKind(u16),
    /// The payload is short or holds a bad value.
    Malformed { kind: u16, what: &'static str },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::UnknownKind(k) => write!(f, "unknown message kind {k:#06x}"),
            DecodeError::Malformed { kind, what } => {
                write!(f, "malformed message of kind {kind:#06x}: {what}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        // A longer field cannot fit a frame; encode_frame refuses it.
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(v);
    }
    fn option<T>(&mut self, v: Option<&T>, f: impl FnOnce(&mut Self, &T)) {
        match v {
            Some(v) => {
                self.u8(1);
                f(self, v);
            }
            None => self.u8(0),
        }
    }
    fn list<T: AsRef<[u8]>>(&mut self, items: &[T]) {
        self.u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
        for i in items {
            self.bytes(i.as_ref());
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
    kind: u16,
}

type Result<T> = std::result::Result<T, DecodeError>;

impl<'a> Reader<'a> {
    fn bad(&self, what: &'static str) -> DecodeError {
        DecodeError::Malformed {
            kind: self.kind,
            what,
        }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if self.data.len() < n {
            return Err(self.bad(what));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64> {
        Ok(self.u64(what)? as i64)
    }
    fn bool(&mut self, what: &'static str) -> Result<bool> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.bad(what)),
        }
    }
    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>> {
        let n = self.u32(what)? as usize;
        Ok(self.take(n, what)?.to_vec())
    }
    /// `bytes` of at most `max` bytes.
    fn bytes_max(&mut self, max: usize, what: &'static str) -> Result<Vec<u8>> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(self.bad(what));
        }
        Ok(self.take(n, what)?.to_vec())
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let b = self.take(N, what)?;
        Ok(b.try_into().expect("N bytes"))
    }
    fn string(&mut self, what: &'static str) -> Result<String> {
        String::from_utf8(self.bytes(what)?).map_err(|_| self.bad(what))
    }
    fn list(&mut self, what: &'static str) -> Result<Vec<Vec<u8>>> {
        let n = self.u32(what)?;
        // No capacity from the count: each item is read (and bounded by the
        // payload) before it is stored.
        let mut items = Vec::new();
        for _ in 0..n {
            items.push(self.bytes(what)?);
        }
        Ok(items)
    }
    fn strings(&mut self, what: &'static str) -> Result<Vec<String>> {
        self.list(what)?
            .into_iter()
            .map(|b| String::from_utf8(b).map_err(|_| self.bad(what)))
            .collect()
    }
    fn option<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<Option<T>> {
        if self.bool(what)? {
            Ok(Some(f(self)?))
        } else {
            Ok(None)
        }
    }
}

impl Message {
    /// This message's frame kind.
    pub fn kind(&self) -> u16 {
        use Message::*;
        match self {
            Hello { .. } => kind::HELLO,
            Exec(_) => kind::EXEC,
            Stdin(_) => kind::STDIN,
            StdinEof => kind::STDIN_EOF,
            Resize(_) => kind::RESIZE,
            Signal(_) => kind::SIGNAL,
            OutputCredit(_) => kind::OUTPUT_CREDIT,
            SetClock { .. } => kind::SET_CLOCK,
            AddEntropy { .. } => kind::ADD_ENTROPY,
            Freeze { .. } => kind::FREEZE,
            Thaw => kind::THAW,
            Shutdown(_) => kind::SHUTDOWN,
            SetIdentity(_) => kind::SET_IDENTITY,
            Status => kind::STATUS,
            HelloReply(_) => kind::HELLO_REPLY,
            Started { .. } => kind::STARTED,
            Stdout(_) => kind::STDOUT,
            Stderr(_) => kind::STDERR,
            StdinCredit(_) => kind::STDIN_CREDIT,
            Exited { .. } => kind::EXITED,
            ClockSet { .. } => kind::CLOCK_SET,
            Frozen(_) => kind::FROZEN,
            Thawed(_) => kind::THAWED,
            Done => kind::DONE,
            Error { .. } => kind::ERROR,
        }
    }

    /// The payload's bytes.
    pub fn payload(&self) -> Vec<u8> {
        use Message::*;
        let mut w = Writer(Vec::new());
        match self {
            Hello { nonce, version } => {
                w.u64(*nonce);
                w.u16(*version);
            }
            Exec(e) => {
                w.list(&e.argv);
                w.list(&e.env);
                match &e.cwd {
                    Some(c) => {
                        w.u8(1);
                        w.bytes(c);
                    }
                    None => w.u8(0),
                }
                w.u8(e.stdin as u8);
                match e.pty {
                    Some(ws) => {
                        w.u8(1);
                        w.u16(ws.rows);
                        w.u16(ws.cols);
                    }
                    None => w.u8(0),
                }
            }
            Stdin(d) | Stdout(d) | Stderr(d) => w.0.extend_from_slice(d),
            StdinEof | Thaw | Done | Status => {}
            Resize(ws) => {
                w.u16(ws.rows);
                w.u16(ws.cols);
            }
            Signal(s) => w.u8(*s),
            OutputCredit(n) | StdinCredit(n) => w.u32(*n),
            SetClock { secs, nanos } => {
                w.i64(*secs);
                w.u32(*nanos);
            }
            AddEntropy { data, reseed } => {
                w.bytes(data);
                w.u8(*reseed as u8);
            }
            Freeze { mounts, timeout_ms } => {
                w.list(mounts);
                w.u32(*timeout_ms);
            }
            Shutdown(a) => w.u8(match a {
                ShutdownAction::PowerOff => 0,
                ShutdownAction::Reboot => 1,
            }),
            SetIdentity(id) => {
                w.option(id.hostname.as_ref(), |w, h| w.bytes(h));
                w.option(id.network.as_ref(), |w, n| {
                    w.0.extend_from_slice(&n.address);
                    w.u8(n.prefix);
                    w.0.extend_from_slice(&n.gateway);
                    w.option(n.mac.as_ref(), |w, m| w.0.extend_from_slice(m));
                    w.u32(u32::try_from(n.nameservers.len()).unwrap_or(u32::MAX));
                    for ns in &n.nameservers {
                        w.0.extend_from_slice(ns);
                    }
                });
                w.option(id.host_key.as_ref(), |w, k| {
                    w.bytes(&k.private);
                    w.bytes(&k.public);
                });
                w.option(id.machine_id.as_ref(), |w, m| w.bytes(m));
            }
            HelloReply(h) => {
                w.u64(h.nonce);
                w.u16(h.version);
                w.bytes(h.agent_version.as_bytes());
                w.bytes(h.kernel_release.as_bytes());
                w.bytes(h.boot_id.as_bytes());
                w.u64(h.uptime_ms);
                w.u8(h.sshd_accepting as u8);
                w.u8(h.pid1 as u8);
                w.bytes(h.channel.as_bytes());
                w.list(&h.features);
            }
            Started { pid } => w.u32(*pid),
            Exited { code, signal } => {
                w.u32(*code as u32);
                w.u8(*signal);
            }
            ClockSet {
                previous_secs,
                previous_nanos,
            } => {
                w.i64(*previous_secs);
                w.u32(*previous_nanos);
            }
            Frozen(m) | Thawed(m) => w.list(m),
            Error { code, message } => {
                w.u16(code.to_u16());
                w.bytes(message.as_bytes());
            }
        }
        w.0
    }

    /// Appends this message as one frame with `id` to `out`.
    pub fn encode(&self, id: u32, out: &mut Vec<u8>) -> std::result::Result<(), TooLarge> {
        encode_frame(self.kind(), id, &self.payload(), out)
    }

    /// The message a frame carries.
    pub fn decode(frame: &Frame) -> Result<Message> {
        Self::decode_payload(frame.kind, &frame.payload)
    }

    /// The message of this kind and payload.
    pub fn decode_payload(k: u16, payload: &[u8]) -> Result<Message> {
        let mut r = Reader {
            data: payload,
            kind: k,
        };
        let m = match k {
            kind::HELLO => Message::Hello {
                nonce: r.u64("nonce")?,
                version: r.u16("version")?,
            },
            kind::EXEC => {
                let argv = r.list("argv")?;
                if argv.is_empty() {
                    return Err(r.bad("empty argv"));
                }
                let env = r.list("env")?;
                let cwd = r.option("cwd", |r| r.bytes("cwd"))?;
                let stdin = r.bool("stdin")?;
                let pty = r.option("pty", |r| {
                    Ok(WinSize {
                        rows: r.u16("rows")?,
                        cols: r.u16("cols")?,
                    })
                })?;
                Message::Exec(Exec {
                    argv,
                    env,
                    cwd,
                    stdin,
                    pty,
                })
            }
            kind::STDIN => Message::Stdin(payload.to_vec()),
            kind::STDOUT => Message::Stdout(payload.to_vec()),
            kind::STDERR => Message::Stderr(payload.to_vec()),
            kind::STDIN_EOF => Message::StdinEof,
            kind::THAW => Message::Thaw,
            kind::DONE => Message::Done,
            kind::RESIZE => Message::Resize(WinSize {
                rows: r.u16("rows")?,
                cols: r.u16("cols")?,
            }),
            kind::SIGNAL => {
                let s = r.u8("signal")?;
                if !(1..=64).contains(&s) {
                    return Err(r.bad("signal out of range"));
                }
                Message::Signal(s)
            }
            kind::OUTPUT_CREDIT => Message::OutputCredit(r.u32("bytes")?),
            kind::STDIN_CREDIT => Message::StdinCredit(r.u32("bytes")?),
            kind::SET_CLOCK => {
                let secs = r.i64("secs")?;
                let nanos = r.u32("nanos")?;
                if nanos >= 1_000_000_000 || secs < 0 {
                    return Err(r.bad("time out of range"));
                }
                Message::SetClock { secs, nanos }
            }
            kind::ADD_ENTROPY => {
                let data = r.bytes("data")?;
                if data.len() > super::MAX_ENTROPY {
                    return Err(r.bad("too much entropy at once"));
                }
                Message::AddEntropy {
                    data,
                    reseed: r.bool("reseed")?,
                }
            }
            kind::FREEZE => Message::Freeze {
                mounts: r.list("mounts")?,
                timeout_ms: r.u32("timeout")?,
            },
            kind::SHUTDOWN => Message::Shutdown(match r.u8("action")? {
                0 => ShutdownAction::PowerOff,
                1 => ShutdownAction::Reboot,
                _ => return Err(r.bad("unknown shutdown action")),
            }),
            kind::SET_IDENTITY => {
                let id = Identity {
                    hostname: r.option("hostname", |r| r.bytes_max(63, "hostname too long"))?,
                    network: r.option("network", |r| {
                        let address = r.array("address")?;
                        let prefix = r.u8("prefix")?;
                        let gateway = r.array("gateway")?;
                        let mac = r.option("mac", |r| r.array("mac"))?;
                        let n = r.u32("nameservers")? as usize;
                        if n > MAX_NAMESERVERS {
                            return Err(r.bad("more than 3 nameservers"));
                        }
                        let mut nameservers = Vec::with_capacity(n);
                        for _ in 0..n {
                            nameservers.push(r.array("nameserver")?);
                        }
                        Ok(Network {
                            address,
                            prefix,
                            gateway,
                            mac,
                            nameservers,
                        })
                    })?,
                    host_key: r.option("host key", |r| {
                        Ok(HostKey {
                            private: r.bytes_max(MAX_HOST_KEY, "private host key too large")?,
                            public: r.bytes_max(MAX_HOST_KEY, "public host key too large")?,
                        })
                    })?,
                    machine_id: r
                        .option("machine-id", |r| r.bytes_max(32, "machine-id too long"))?,
                };
                id.validate().map_err(|what| r.bad(what))?;
                Message::SetIdentity(id)
            }
            kind::STATUS => Message::Status,
            kind::HELLO_REPLY => Message::HelloReply(HelloReply {
                nonce: r.u64("nonce")?,
                version: r.u16("version")?,
                agent_version: r.string("agent version")?,
                kernel_release: r.string("kernel release")?,
                boot_id: r.string("boot id")?,
                uptime_ms: r.u64("uptime")?,
                sshd_accepting: r.bool("sshd")?,
                pid1: r.bool("pid1")?,
                channel: r.string("channel")?,
                features: r.strings("features")?,
            }),
            kind::STARTED => Message::Started { pid: r.u32("pid")? },
            kind::EXITED => Message::Exited {
                code: r.u32("code")? as i32,
                signal: r.u8("signal")?,
            },
            kind::CLOCK_SET => Message::ClockSet {
                previous_secs: r.i64("secs")?,
                previous_nanos: r.u32("nanos")?,
            },
            kind::FROZEN => Message::Frozen(r.strings("mounts")?),
            kind::THAWED => Message::Thawed(r.strings("mounts")?),
            kind::ERROR => Message::Error {
                code: ErrorCode::from_u16(r.u16("code")?),
                message: String::from_utf8_lossy(&r.bytes("message")?).into_owned(),
            },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::Decoder;

    fn every_message() -> Vec<Message> {
        vec![
            Message::Hello {
                nonce: 0xdead_beef_cafe,
                version: 1,
            },
            Message::Exec(Exec {
                argv: vec![b"sh".to_vec(), b"-c".to_vec(), vec![0xff, 0xfe]],
                env: vec![b"A=b".to_vec()],
                cwd: Some(b"/tmp".to_vec()),
                stdin: true,
                pty: Some(WinSize {
                    rows: 40,
                    cols: 132,
                }),
            }),
            Message::Exec(Exec {
                argv: vec![b"true".to_vec()],
                ..Default::default()
            }),
            Message::Stdin(b"input".to_vec()),
            Message::StdinEof,
            Message::Resize(WinSize { rows: 1, cols: 2 }),
            Message::Signal(9),
            Message::OutputCredit(65536),
            Message::SetClock {
                secs: 1_700_000_000,
                nanos: 999_999_999,
            },
            Message::AddEntropy {
                data: vec![1, 2, 3],
                reseed: true,
            },
            Message::Freeze {
                mounts: vec![b"/".to_vec(), b"/work".to_vec()],
                timeout_ms: 30_000,
            },
            Message::Freeze {
                mounts: vec![],
                timeout_ms: 0,
            },
            Message::Thaw,
            Message::Shutdown(ShutdownAction::PowerOff),
            Message::Shutdown(ShutdownAction::Reboot),
            Message::SetIdentity(full_identity()),
            Message::SetIdentity(Identity {
                network: Some(Network {
                    address: [192, 168, 1, 5],
                    prefix: 30,
                    gateway: [192, 168, 1, 6],
                    mac: None,
                    nameservers: vec![],
                }),
                ..Default::default()
            }),
            Message::SetIdentity(Identity::default()),
            Message::Status,
            Message::HelloReply(HelloReply {
                nonce: 5,
                version: 1,
                agent_version: "0.1.0".into(),
                kernel_release: "6.1.0".into(),
                boot_id: "b".into(),
                uptime_ms: 1234,
                sshd_accepting: true,
                pid1: false,
                channel: "vsock".into(),
                features: vec!["exec".into(), "clock".into()],
            }),
            Message::Started { pid: 42 },
            Message::Stdout(vec![0; 100]),
            Message::Stderr(b"err".to_vec()),
            Message::StdinCredit(7),
            Message::Exited {
                code: 137,
                signal: 9,
            },
            Message::Exited {
                code: -1,
                signal: 0,
            },
            Message::ClockSet {
                previous_secs: -5,
                previous_nanos: 1,
            },
            Message::Frozen(vec!["/".into()]),
            Message::Thawed(vec![]),
            Message::Done,
            Message::Error {
                code: ErrorCode::Other(999),
                message: "no".into(),
            },
            Message::Error {
                code: ErrorCode::ExecFailed,
                message: "ENOENT".into(),
            },
        ]
    }

    fn full_identity() -> Identity {
        Identity {
            hostname: Some(b"vm-1".to_vec()),
            network: Some(Network {
                address: [10, 0, 2, 16],
                prefix: 24,
                gateway: [10, 0, 2, 2],
                mac: Some([0x06, 0, 0x0a, 0, 2, 0x10]),
                nameservers: vec![[10, 0, 2, 3], [9, 9, 9, 9], [1, 1, 1, 1]],
            }),
            host_key: Some(crate::proto::identity::tests::test_host_key(3, "none")),
            machine_id: Some(b"0123456789abcdef0123456789abcdef".to_vec()),
        }
    }

    /// The payload of a `SetIdentity` as a hostile host may write it,
    /// without the encoder's help.
    fn raw_identity(
        hostname: Option<&[u8]>,
        prefix: u8,
        nameservers: u32,
        private_len: usize,
    ) -> Vec<u8> {
        let mut p = Vec::new();
        match hostname {
            Some(h) => {
                p.push(1);
                p.extend_from_slice(&(h.len() as u32).to_le_bytes());
                p.extend_from_slice(h);
            }
            None => p.push(0),
        }
        p.push(1);
        p.extend_from_slice(&[10, 0, 2, 16, prefix, 10, 0, 2, 2, 0]);
        p.extend_from_slice(&nameservers.to_le_bytes());
        for _ in 0..nameservers.min(8) {
            p.extend_from_slice(&[1, 1, 1, 1]);
        }
        p.push(1);
        p.extend_from_slice(&(private_len as u32).to_le_bytes());
        p.extend(vec![b'k'; private_len]);
        p.extend_from_slice(&0u32.to_le_bytes());
        p.push(0);
        p
    }

    #[test]
    fn identity_bounds_are_refused_at_decode() {
        // The raw encoding itself is right: with the host key left out and
        // good values, it decodes.
        let mut ok = raw_identity(Some(b"vm"), 24, 1, 0);
        let key_at = ok.len() - 1 - 4 - 4 - 1;
        ok.truncate(key_at);
        ok.extend_from_slice(&[0, 0]);
        let Ok(Message::SetIdentity(id)) = Message::decode_payload(kind::SET_IDENTITY, &ok) else {
            panic!("{ok:?}")
        };
        assert_eq!(id.network.unwrap().nameservers, vec![[1, 1, 1, 1]]);
        let cases = [
            ("17 KiB private key", raw_identity(None, 24, 1, 17 * 1024)),
            ("4 nameservers", raw_identity(None, 24, 4, 0)),
            (
                "a huge nameserver count",
                raw_identity(None, 24, u32::MAX, 0),
            ),
            ("prefix 0", raw_identity(None, 0, 1, 0)),
            ("prefix 31", raw_identity(None, 31, 1, 0)),
            ("prefix 200", raw_identity(None, 200, 1, 0)),
            ("bad hostname", raw_identity(Some(b"Not_A.Label"), 24, 1, 0)),
            ("long hostname", raw_identity(Some(&[b'a'; 64]), 24, 1, 0)),
            ("empty hostname", raw_identity(Some(b""), 24, 1, 0)),
        ];
        for (what, p) in cases {
            let r = Message::decode_payload(kind::SET_IDENTITY, &p);
            assert!(
                matches!(r, Err(DecodeError::Malformed { .. })),
                "{what}: {r:?}"
            );
        }
        // Values the encoder writes but decoding refuses.
        let mut id = full_identity();
        id.network.as_mut().unwrap().nameservers = vec![[1, 1, 1, 1]; 4];
        id.host_key
            .as_mut()
            .unwrap()
            .private
            .resize(17 * 1024, b'\n');
        id.machine_id = Some(b"NOT-HEX".to_vec());
        let m = Message::SetIdentity(id);
        assert!(Message::decode_payload(m.kind(), &m.payload()).is_err());
        let mut id = full_identity();
        id.host_key = Some(crate::proto::identity::tests::test_host_key(
            3,
            "aes256-ctr",
        ));
        let m = Message::SetIdentity(id);
        assert!(Message::decode_payload(m.kind(), &m.payload()).is_err());
    }

    #[test]
    fn every_message_round_trips_through_frames() {
        let mut wire = Vec::new();
        let msgs = every_message();
        for (i, m) in msgs.iter().enumerate() {
            m.encode(i as u32, &mut wire).unwrap();
        }
        let mut dec = Decoder::new();
        assert_eq!(dec.feed(&wire), wire.len());
        for (i, m) in msgs.iter().enumerate() {
            let f = dec.next_frame().expect("a frame");
            assert_eq!(f.id, i as u32);
            assert_eq!(&Message::decode(&f).unwrap(), m);
        }
        assert_eq!(dec.next_frame(), None);
    }

    #[test]
    fn unknown_kinds_are_an_error() {
        assert_eq!(
            Message::decode_payload(0x7777, b""),
            Err(DecodeError::UnknownKind(0x7777))
        );
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        for m in every_message() {
            let p = m.payload();
            for cut in 0..p.len() {
                // Truncations fail or (for raw data) decode to less; none panics.
                let _ = Message::decode_payload(m.kind(), &p[..cut]);
            }
            for i in 0..p.len() {
                for v in [0u8, 1, 0x7f, 0xff] {
                    let mut q = p.clone();
                    q[i] = v;
                    let _ = Message::decode_payload(m.kind(), &q);
                }
            }
            // Appended fields from a later version are ignored.
            let mut longer = p.clone();
            longer.extend_from_slice(b"future");
            if !matches!(
                m,
                Message::Stdin(_) | Message::Stdout(_) | Message::Stderr(_)
            ) {
                assert_eq!(Message::decode_payload(m.kind(), &longer).unwrap(), m);
            }
        }
    }

    #[test]
    fn a_huge_count_does_not_allocate_for_it() {
        // argv claiming 2^32-1 items in an 8-byte payload.
        let mut p = u32::MAX.to_le_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(
            Message::decode_payload(kind::EXEC, &p),
            Err(DecodeError::Malformed { .. })
        ));
        let mut p = 1u32.to_le_bytes().to_vec();
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Message::decode_payload(kind::EXEC, &p).is_err());
    }

    #[test]
    fn values_out_of_range_are_refused() {
        let bad = [
            (kind::SIGNAL, vec![0u8]),
            (kind::SIGNAL, vec![65u8]),
            (kind::SHUTDOWN, vec![2u8]),
            (kind::EXEC, {
                // An empty argv.
                let mut p = 0u32.to_le_bytes().to_vec();
                p.extend_from_slice(&0u32.to_le_bytes());
                p.extend_from_slice(&[0, 0, 0]);
                p
            }),
            (kind::SET_CLOCK, {
                let mut p = 0i64.to_le_bytes().to_vec();
                p.extend_from_slice(&1_000_000_000u32.to_le_bytes());
                p
            }),
            (kind::ADD_ENTROPY, {
                let mut p = ((crate::proto::MAX_ENTROPY + 1) as u32)
                    .to_le_bytes()
                    .to_vec();
                p.extend(vec![0; crate::proto::MAX_ENTROPY + 1]);
                p.push(1);
                p
            }),
        ];
        for (k, p) in bad {
            assert!(Message::decode_payload(k, &p).is_err(), "{k:#x} {p:?}");
        }
    }
}
