//! The VMM wing: launching and driving the processes that run guests, and
//! what every VMM process needs. May spawn.
//!
//! - [`select`]: which VMM runs a VM (`auto`, or one asked for by name) and where its binary is.
//! - [`launch`]: what every launch needs, then one launch per kind.
//! - [`control`]: a running VMM's guest: shut down, pause, resume.
//! - [`firecracker`]: launch Firecracker (directly or through its jailer) and drive it through its API socket.
//! - [`qemu`]: the QEMU `microvm` VMM process and its QMP socket.
//! - [`jail`]: the layout Firecracker's jailer chroots a VMM into.
//! - [`vmm_io`]: what a VMM inherits: pipes to the log relay, its disk locks, its boot files.
//! - [`vmm_user`]: the unprivileged uid a root daemon's VMM runs as.
//! - [`logcap`]: capped, rotating logs and the relay that writes a VMM's console through one.
//! - [`disklock`]: exclusive locks on a VM's disks, inherited by its VMM.
#![allow(clippy::disallowed_methods)]

pub mod control;
pub mod disklock;
mod error;
pub mod firecracker;
pub mod jail;
pub mod launch;
pub mod logcap;
pub mod qemu;
pub mod select;
pub mod vmm_io;
pub mod vmm_user;

pub use crate::model::VmmKind;
pub use error::VmmError;
