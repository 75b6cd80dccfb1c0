//! Request and response bodies of the `/v1` API. Plain data: no I/O here.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `GET /v1/health`: who is answering, and since when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    /// The daemon's version, to spot a client and daemon that disagree.
    pub version: String,
    pub pid: u32,
    /// The only uid the daemon serves.
    pub uid: u32,
    pub uptime_secs: u64,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Where to look when something went wrong.
    pub log: PathBuf,
}

/// `GET /v1/doctor`: every host requirement, met or not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DoctorReport {
    pub checks: Vec<DoctorCheck>,
}

impl DoctorReport {
    /// True when every required check passes.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok || !c.required)
    }
}

/// One host requirement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DoctorCheck {
    pub name: String,
    pub ok: bool,
    /// False for what only some features need (an optional VMM, say).
    pub required: bool,
    /// What was found.
    pub detail: String,
    /// What to do when the check fails.
    pub fix: Option<String>,
}

/// One row of `GET /v1/vms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmSummary {
    pub name: String,
    pub state: String,
    pub image: Option<String>,
    pub backend: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub ip: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// One row of `GET /v1/images`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageSummary {
    pub name: String,
    pub rootfs: PathBuf,
    pub size_bytes: Option<u64>,
    /// Unix seconds.
    pub created_at: i64,
}

/// The body of every error response: the cause chain, outermost first, and
/// what the user can do about it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}
