//! banger's guest agent: the protocol both sides compile, and (in
//! `src/bin/banger-agent/`) the small static program that serves it inside
//! every guest booted with banger's initramfs.
//!
//! # Layout
//! - [`proto`]: the framed, versioned, multiplexed protocol. Pure: encoding
//!   into a `Vec<u8>` and incremental, bounded decoding from bytes; no I/O, no
//!   runtime, no dependency. The guest uses it with blocking std I/O, the host
//!   daemon wraps it in tokio.
//! - `src/bin/banger-agent/`: the guest program (channel discovery, the poll
//!   loop, exec sessions, clock, entropy, freeze, shutdown, identity, PID 1
//!   duties).

pub mod proto;
