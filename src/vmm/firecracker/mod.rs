//! The Firecracker VMM: launch the process, configure and start its VM over
//! the API socket, ask it to shut down.
//!
//! - [`models`]: serde types mirroring Firecracker's OpenAPI spec (the subset banger uses).
//! - [`client`]: a typed API client over the unix socket, one request per connection.
//! - [`launch`]: spawn `firecracker` in its own session, configure it, `InstanceStart`
//!   (or load a snapshot).
//! - [`snapshot`]: a jailed Firecracker's snapshots, written in its jail and moved out.
#![allow(clippy::disallowed_methods)]

pub mod client;
pub mod launch;
pub mod models;
pub mod snapshot;

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

pub use client::{ApiError, Client};
pub(crate) use launch::start;
pub use launch::{
    DriveSpec, Jailer, Launched, MachineSpec, NetSpec, RunFiles, Spawned, instance_id, launch,
    request_shutdown, spawn,
};

/// Errors launching, configuring or controlling a Firecracker VMM.
#[derive(Debug, thiserror::Error)]
pub enum FirecrackerError {
    /// A file the VMM writes (console, log) could not be prepared.
    #[error("cannot prepare {path}")]
    PrepareFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The `firecracker` binary could not be started.
    #[error("cannot start {binary}")]
    SpawnProcess {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The process ended before its API socket answered; `console` is the
    /// end of what it printed.
    #[error("firecracker exited ({status}) before its API answered: {console}")]
    ProcessExited { status: ExitStatus, console: String },
    /// The API socket did not answer in time.
    #[error("firecracker API on {socket} did not answer within {timeout:?}")]
    WaitApiSocket {
        socket: PathBuf,
        timeout: Duration,
        #[source]
        source: Option<ApiError>,
    },
    #[error("cannot configure the firecracker logger")]
    PutLogger(#[source] ApiError),
    #[error("cannot configure the machine")]
    PutMachineConfig(#[source] ApiError),
    #[error("cannot configure the boot source")]
    PutBootSource(#[source] ApiError),
    #[error("cannot attach drive {drive_id}")]
    PutDrive {
        drive_id: String,
        #[source]
        source: ApiError,
    },
    #[error("cannot attach network interface {iface_id}")]
    PutNetworkInterface {
        iface_id: String,
        #[source]
        source: ApiError,
    },
    #[error("cannot attach the vsock device")]
    PutVsock(#[source] ApiError),
    #[error("cannot start the instance")]
    StartInstance(#[source] ApiError),
    #[error("cannot send Ctrl+Alt+Del")]
    SendCtrlAltDel(#[source] ApiError),
    #[error("cannot pause or resume the VM")]
    SetVmState(#[source] ApiError),
    #[error("cannot snapshot the VM")]
    CreateSnapshot(#[source] ApiError),
    #[error("cannot load the snapshot")]
    LoadSnapshot(#[source] ApiError),
    #[error("cannot describe the instance")]
    DescribeInstance(#[source] ApiError),
    /// Stopping the process (SIGKILL and reap) failed.
    #[error("cannot kill firecracker (pid {pid})")]
    KillProcess {
        pid: u32,
        #[source]
        source: io::Error,
    },
}

impl FirecrackerError {
    /// The API error underneath, when the failure was an API request.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            FirecrackerError::PutLogger(e)
            | FirecrackerError::PutMachineConfig(e)
            | FirecrackerError::PutBootSource(e)
            | FirecrackerError::PutDrive { source: e, .. }
            | FirecrackerError::PutNetworkInterface { source: e, .. }
            | FirecrackerError::PutVsock(e)
            | FirecrackerError::StartInstance(e)
            | FirecrackerError::SendCtrlAltDel(e)
            | FirecrackerError::SetVmState(e)
            | FirecrackerError::CreateSnapshot(e)
            | FirecrackerError::LoadSnapshot(e)
            | FirecrackerError::DescribeInstance(e) => Some(e),
            FirecrackerError::WaitApiSocket { source, .. } => source.as_ref(),
            _ => None,
        }
    }

    /// Firecracker's own explanation (`fault_message`), when it refused a request.
    pub fn fault_message(&self) -> Option<&str> {
        self.api().and_then(ApiError::fault_message)
    }
}
