//! The contract between `banger` and `bangerd`: API types (serde, no I/O)
//! in [`api`], what may name a VM or an image in [`names`], and the
//! [`Client`] that speaks HTTP/1.1 over the unix socket.

pub mod api;
mod client;
pub mod exec;
pub mod names;

pub use client::{Client, ClientError};
pub use names::{NameError, check_image_name, check_vm_name};
