//! The one protocol between banger's daemon and its guest agent.
//!
//! One byte stream carries everything: a virtio-serial port under QEMU (which
//! the host may close and reopen at any time) or one vsock connection under
//! Firecracker. On it travel [frames](frame) (magic, kind, id, length, CRCs),
//! each carrying one [`Message`]. The frame's id names the exec session or the
//! request, so several sessions run at once and replies match requests.
//!
//! # A conversation
//! 1. The host connects. On virtio-serial it first writes [`sync_preamble`]
//!    (zeros that complete any frame a previous host left torn), then
//!    [`Message::Hello`] with a nonce and [`VERSION`]. The agent drops every
//!    session of the previous conversation (killing their process groups),
//!    thaws what is frozen, and answers [`Message::HelloReply`] with the
//!    nonce. The agent also speaks first, a `HelloReply` with nonce 0, when it
//!    starts and when it sees a host connect; the host may ignore it.
//! 2. Requests (`SetClock`, `AddEntropy`, `Freeze`, `Thaw`, `Shutdown`,
//!    `SetIdentity`, `Status`) carry an id the host picks; the answer carries
//!    the same id (`ClockSet`, `Done`, `Frozen`, `Thawed`, `HelloReply`, or
//!    `Error`). `Status` is the hello's report without the hello's reset:
//!    the host may poll it (is sshd accepting yet?) while sessions run.
//! 3. `Exec` opens a session under a new id: `Started`, then `Stdout` /
//!    `Stderr` as the program writes, `StdinCredit` as stdin is passed on,
//!    and last `Exited` (or `Error` if it could not start). The host sends
//!    `Stdin`, `StdinEof`, `Resize`, `Signal` and `OutputCredit` under the
//!    same id. A frame of a kind the agent does not know is answered with an
//!    `Error` under its id; nothing on the wire can stop the agent.
//!
//! # Flow control: credits
//! Each session starts with [`OUTPUT_WINDOW`] bytes of output credit; the
//! agent sends stdout and stderr only within it, and stops reading the
//! program's pipes (so the program blocks on write) while it is spent. The
//! host returns credit with `OutputCredit` as it consumes. The same holds the
//! other way: the host may have at most [`INPUT_WINDOW`] stdin bytes not yet
//! acknowledged by `StdinCredit`; more is an error that ends the session. The
//! agent also stops reading the channel while more than
//! [`MAX_OUTPUT_QUEUE`] bytes wait to be written to it, so a host that sends
//! but never reads cannot make it grow.
//!
//! # Limits
//! Payloads are at most [`MAX_PAYLOAD`] bytes; output frames at most
//! [`DATA_CHUNK`]. A `SetIdentity` carries at most [`MAX_NAMESERVERS`]
//! nameservers and host key files of at most [`MAX_HOST_KEY`] bytes; every
//! value is checked ([`Identity::validate`]) when it is decoded.

mod crc;
pub mod frame;
pub mod identity;
pub mod message;

pub use crc::crc32c;
pub use frame::{
    Decoder, Frame, HEADER_LEN, MAGIC, MAX_FRAME, MAX_PAYLOAD, SYNC_LEN, TooLarge, encode_frame,
    sync_preamble,
};
pub use identity::{HostKey, Identity, MAX_HOST_KEY, MAX_NAMESERVERS, Network};
pub use message::{
    DecodeError, ErrorCode, Exec, HelloReply, Message, ShutdownAction, WinSize, kind,
};

/// The protocol version this crate speaks; a host whose hello carries
/// another may still talk, the reply says which the agent speaks.
pub const VERSION: u16 = 1;
/// The name of the virtio-serial port (QEMU `virtserialport,name=`).
pub const SERIAL_PORT_NAME: &str = "org.banger.agent";
/// The vsock port the agent listens on (Firecracker: `CONNECT 1024`).
pub const VSOCK_PORT: u32 = 1024;
/// The most output bytes an agent sends in one frame.
pub const DATA_CHUNK: usize = 32 * 1024;
/// Output credit each session starts with.
pub const OUTPUT_WINDOW: u32 = 1024 * 1024;
/// The most stdin bytes a host may have sent and not had acknowledged.
pub const INPUT_WINDOW: u32 = 256 * 1024;
/// The agent stops reading the channel while this much waits to be written.
pub const MAX_OUTPUT_QUEUE: usize = 1024 * 1024;
/// The most exec sessions at once.
pub const MAX_SESSIONS: usize = 64;
/// The most entropy bytes in one `AddEntropy`.
pub const MAX_ENTROPY: usize = 4096;
/// The longest a freeze lasts without a thaw.
pub const MAX_FREEZE_MS: u32 = 10 * 60 * 1000;
/// The `PATH` an exec gets when its environment names none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
