//! The contract between `banger` and `bangerd`: API types (serde, no I/O)
//! in [`api`], and the [`Client`] that speaks HTTP/1.1 over the unix socket.

pub mod api;
mod client;

pub use client::{Client, ClientError};
