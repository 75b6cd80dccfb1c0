//! The shell-out layer and native host helpers.
//!
//! - [`exec`]: the one exec point ([`exec::Cmd`]); argv, exit status and stderr, never a shell.
//! - [`tools`]: the host tool table, program lookup (`PATH` plus sbin) and preflight.
//! - [`proc`]: process stats from `/proc/<pid>` (CPU, RSS, start time).
//! - [`fs`]: grow files, clone them (reflink, else sparse copy).
//! - [`e2fs`]: ext4 images through e2fsprogs: mkfs, grow, fsck, geometry.
//! - [`lines`]: normalized line lists (package manifests).
//! - [`host`]: host checks for `banger doctor`, KVM kind.
#![allow(clippy::disallowed_methods)]

pub mod e2fs;
pub mod exec;
pub mod fs;
pub mod host;
pub mod lines;
pub mod proc;
pub mod tools;
