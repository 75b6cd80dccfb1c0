//! The shell-out layer and native host helpers.
//!
//! - [`exec`]: the one exec point ([`exec::Cmd`]); argv, exit status and stderr, never a shell.
//! - [`tools`]: the host tool table, program lookup (`PATH` plus sbin) and preflight.
//! - [`proc`]: process stats from `/proc/<pid>` (CPU, RSS, start time).
//! - [`fs`]: grow files, clone them (reflink, else sparse copy).
//! - [`follow`]: follow a log as it grows (`vm logs -f`, the TUI's logs pane).
//! - [`e2fs`]: ext4 images through e2fsprogs: mkfs, grow, fsck, geometry.
//! - [`text`]: text from guests and logs: normalized line lists (package manifests), terminal-safe text, indented tails.
//! - [`host`]: host checks for `banger doctor`, KVM kind.
//! - [`pid`]: is a pid still our process, signal it, wait for its exit (pidfd).
//! - [`net`]: the VM bridge and taps through `ip`, routes, IP forwarding.
//! - [`nft`]: nftables scripts on stdin; only banger's table is touched.
//! - [`trust`]: login names from `/etc/passwd`; paths only root can change.
//! - [`debugfs`]: write files into an ext4 image without mounting it.
//! - [`beneath`]: paths resolved beneath a directory, never through a symlink.
//! - [`ssh`]: SSH keys (`ssh-keygen`), readiness probe, the `ssh` argv.
#![allow(clippy::disallowed_methods)]

pub mod beneath;
pub mod debugfs;
pub mod e2fs;
pub mod exec;
pub mod follow;
pub mod fs;
pub mod host;
pub mod net;
pub mod nft;
pub mod pid;
pub mod proc;
pub mod ssh;
pub mod text;
pub mod tools;
pub mod trust;
