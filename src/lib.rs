//! banger: a control plane for developer microVMs.
//!
//! # Layout
//!
//! - [`cli`]: the `banger` command line (clap), output formatting, daemon autostart. May spawn.
//! - [`tui`]: `banger tui`: the VMs and images in a terminal UI (ratatui); a client like the CLI.
//! - [`daemon`]: `bangerd`: lock, socket, HTTP routes onto the services, shutdown.
//! - [`rpc`]: the contract between the two: API types (serde, no I/O) and the client.
//! - [`store`]: SQLite schema, migrations and queries; sole owner of on-disk state.
//! - [`system`]: the shell-out layer and native host helpers. May spawn.
//! - [`vmm`]: the VMM wing: Firecracker and QEMU processes, the jailer, VMM users, disk locks, log relays. May spawn.
//! - [`vm`]: VM lifecycle, one file per verb: create, start, stop, delete, clone, publish; reconcile; events.
//! - [`grant`]: the privilege path: the user's grant (policy), `banger-helper`, and the daemon's side that asks it.
//! - [`network`]: the host network service: bridge, taps, NAT and guard tables, the DNS listener, published-port relays.
//! - [`doctor`]: `banger doctor`: every host check and its fix; served by the daemon, printed by the CLI.
//! - [`image`]: the image registry and its disk files, one directory per version.
//! - [`builder`]: `image build`: a build VM provisioned over SSH, the build cache.
//! - [`agent`]: the host side of the guest agent protocol: one connection per VM, requests and exec sessions.
//! - [`ssh`]: the native SSH client: exec with streamed output, tar uploads.
//! - [`dns`]: the `.vm` DNS server (answers VM names, forwards the rest).
//! - [`net`]: network planning (subnet, address allocation, nftables rulesets), pure.
//! - [`bundle`]: the runtime bundle (kernel, initrd, base rootfs, defaults).
//! - [`size`]: sizes as people type them; sizes and durations as people read them.
//! - [`paths`]: XDG locations and the daemon socket.
//! - [`config`]: `config.toml`, every key defaulted.
//! - [`model`]: the domain types every layer shares: VM state and its guards, roles, root modes, VMM kinds, ports, leases.
//! - `testing` (tests only): fixtures the unit tests share.

pub mod agent;
pub mod builder;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod doctor;
pub mod grant;
pub mod image;
pub mod model;
pub mod net;
pub mod network;
pub mod paths;
pub mod rpc;
pub mod size;
pub mod ssh;
pub mod store;
pub mod system;
pub mod tui;
pub mod vm;
pub mod vmm;

#[cfg(test)]
mod testing;
