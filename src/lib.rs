//! banger: a control plane for developer microVMs.
//!
//! # Layout
//!
//! - [`cli`]: the `banger` command line (clap), output formatting, daemon autostart. May spawn.
//! - [`daemon`]: `bangerd`: lock, socket, HTTP routes onto the services, shutdown.
//! - [`rpc`]: the contract between the two: API types (serde, no I/O) and the client.
//! - [`store`]: SQLite schema, migrations and queries; sole owner of on-disk state.
//! - [`system`]: the shell-out layer and native host helpers. May spawn.
//! - [`paths`]: XDG locations and the daemon socket.
//! - [`config`]: `config.toml`, every key defaulted.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod paths;
pub mod rpc;
pub mod store;
pub mod system;
