//! What can go wrong with a VM operation.

use std::path::PathBuf;

use crate::bundle::BundleError;
use crate::image::ImageError;
use crate::model::{VmState, VmmKind};
use crate::net::NetError;
use crate::store::StoreError;
use crate::system::debugfs::DebugfsError;
use crate::system::e2fs::E2fsError;
use crate::system::fs::FsError;
use crate::system::ssh::SshError;
use crate::system::tools::PreflightError;
use crate::vmm::VmmError;

/// Errors of VM operations. The first group are the user's to fix (bad
/// input, wrong state); the rest are the host's.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    BadName(#[from] crate::rpc::NameError),
    #[error("{0}")]
    BadRequest(String),
    #[error("no image named `{0}`")]
    UnknownImage(String),
    #[error("VM `{name}` is {state}: cannot {action} it")]
    WrongState {
        name: String,
        state: VmState,
        action: &'static str,
    },
    #[error(transparent)]
    Vmm(#[from] crate::vmm::VmmError),
    /// The host's configuration is wrong (config.toml, a clashing route).
    #[error("{0}")]
    BadConfig(String),
    /// A VM that should have a lease has none (a damaged record).
    #[error("VM `{0}` has no network lease")]
    NoLease(String),
    /// Every address was taken while this VM looked for one.
    #[error("could not lease an address; try again")]
    NoFreeAddress,
    /// A suspended VM's snapshot cannot be restored as it is.
    #[error("cannot restore VM `{name}` from its snapshot: {why}")]
    Snapshot { name: String, why: String },
    /// What the VM's VMM cannot do (yet).
    #[error("{0}")]
    Unsupported(String),
    /// The VMM refused or failed a control request (pause, resume, save).
    #[error("cannot {action} VM `{name}`: {message}")]
    Control {
        name: String,
        action: &'static str,
        message: String,
    },
    #[error("VM `{0}` has no guest agent: {1}")]
    NoAgent(String, String),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    #[error("invalid network configuration")]
    Config(#[source] NetError),
    #[error(transparent)]
    Network(#[from] NetError),
    #[error(transparent)]
    Networking(#[from] crate::network::NetworkError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("cannot export the VM")]
    Export(#[source] Box<crate::image::oci::OciError>),
    #[error("cannot prepare the VM's disk")]
    Disk(#[from] FsError),
    #[error("cannot prepare the VM's filesystem")]
    Ext4(#[from] E2fsError),
    #[error("cannot write the VM's files into its disk")]
    Inject(#[from] DebugfsError),
    #[error("SSH setup failed")]
    Ssh(#[source] Box<SshError>),
    #[error("cannot use {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {vmm} VMM did not start{}", log_tail.as_ref().map(|t| format!("; its log ends with:\n{t}")).unwrap_or_default())]
    Launch {
        vmm: VmmKind,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        /// What the VMM wrote to its log during this launch.
        log_tail: Option<String>,
    },
    /// The VMM exited while the guest was booting.
    #[error(
        "the {vmm} VMM exited during boot; its log ends with:\n{log_tail}\nthe console ends with:\n{console_tail}"
    )]
    ExitedEarly {
        vmm: VmmKind,
        log_tail: String,
        console_tail: String,
    },
    /// The guest's console went silent while SSH did not answer.
    #[error(
        "the guest's boot stalled {times}: its console was silent for {silent_secs} s and SSH did not answer; the console ends with:\n{console_tail}"
    )]
    Stalled {
        times: &'static str,
        silent_secs: u64,
        console_tail: String,
    },
    /// The guest's agent never answered.
    #[error(
        "{}; the console ends with:\n{console_tail}",
        if matches!(source, crate::agent::AgentError::Timeout(_) | crate::agent::AgentError::SshdSilent(_)) {
            "the guest did not answer in time"
        } else {
            "the guest's agent failed its readiness check"
        }
    )]
    AgentNotReady {
        console_tail: String,
        #[source]
        source: crate::agent::AgentError,
    },
    /// The guest booted (or not) but SSH never answered.
    #[error("the guest did not answer SSH in time; the console ends with:\n{console_tail}")]
    NotReady {
        console_tail: String,
        #[source]
        source: Box<crate::ssh::SshError>,
    },
}

impl From<SshError> for VmError {
    fn from(err: SshError) -> VmError {
        VmError::Ssh(Box::new(err))
    }
}

impl VmError {
    /// `Ok` when `allowed`; else that `vm`'s state does not let one `action` it.
    pub(crate) fn check_state(
        vm: &crate::store::VmRecord,
        allowed: bool,
        action: &'static str,
    ) -> Result<(), VmError> {
        if allowed {
            return Ok(());
        }
        Err(VmError::WrongState {
            name: vm.name.clone(),
            state: vm.state,
            action,
        })
    }

    /// True when the request, not the host, is at fault.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            VmError::BadName(_)
                | VmError::BadRequest(_)
                | VmError::UnknownImage(_)
                | VmError::WrongState { .. }
                | VmError::NoAgent(..)
                | VmError::Snapshot { .. }
                | VmError::Unsupported(_)
                | VmError::Vmm(VmmError::Unavailable(..) | VmmError::DiskBusy(_))
                | VmError::Networking(crate::network::NetworkError::Port(_))
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> VmError {
        let path = path.into();
        move |source| VmError::Io { path, source }
    }
}
