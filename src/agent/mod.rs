//! The host side of the guest agent protocol ([`banger_agent::proto`]): one
//! connection per VM over its channel (QEMU's virtio-serial socket or
//! Firecracker's vsock socket, both in the VM's `run/`), shared by every
//! request and exec session the daemon makes. The guest is hostile: every
//! frame is bounded by the decoder, every wait has a timeout, a session
//! whose agent sends beyond its output window is killed, and nothing the
//! agent says can make the daemon buffer more than a few frames per session.

mod conn;
mod session;

use std::path::PathBuf;
use std::time::Duration;

pub use banger_agent::proto;
pub use conn::Agent;
pub use session::{Output, Session, SessionSender, Stream};

/// How a VM's agent is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// A QEMU `virtserialport` on a unix socket QEMU listens on.
    Serial(PathBuf),
    /// Firecracker's vsock device: its unix socket, then `CONNECT <port>`.
    Vsock(PathBuf),
}

impl Channel {
    pub fn path(&self) -> &std::path::Path {
        match self {
            Channel::Serial(path) | Channel::Vsock(path) => path,
        }
    }
}

/// How long a request the agent answers at once may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the guest agent at {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the vsock handshake with the guest agent failed: {0}")]
    Handshake(String),
    #[error("the guest agent did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("the guest's sshd did not accept connections within {} s (its agent answers)", .0.as_secs())]
    SshdSilent(Duration),
    #[error("the connection to the guest agent is closed")]
    Closed,
    #[error("the guest agent refused: {0}")]
    Refused(String),
    #[error("the guest agent answered {0} where it should not")]
    Unexpected(&'static str),
    #[error("the guest agent's output exceeded {0} bytes")]
    TooMuchOutput(usize),
}

/// A short name of `message`'s kind, for errors and logs.
pub fn kind_name(message: &proto::Message) -> &'static str {
    use proto::Message as M;
    match message {
        M::Hello { .. } => "hello",
        M::Exec(_) => "exec",
        M::Stdin(_) => "stdin",
        M::StdinEof => "stdin-eof",
        M::Resize(_) => "resize",
        M::Signal(_) => "signal",
        M::OutputCredit(_) => "output-credit",
        M::SetClock { .. } => "set-clock",
        M::AddEntropy { .. } => "add-entropy",
        M::Freeze { .. } => "freeze",
        M::Thaw => "thaw",
        M::Shutdown(_) => "shutdown",
        M::SetIdentity(_) => "set-identity",
        M::Status => "status",
        M::HelloReply(_) => "hello-reply",
        M::Started { .. } => "started",
        M::Stdout(_) => "stdout",
        M::Stderr(_) => "stderr",
        M::StdinCredit(_) => "stdin-credit",
        M::Exited { .. } => "exited",
        M::ClockSet { .. } => "clock-set",
        M::Frozen(_) => "frozen",
        M::Thawed(_) => "thawed",
        M::Done => "done",
        M::Error { .. } => "error",
    }
}
