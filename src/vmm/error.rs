//! What can go wrong launching or driving a VMM.

use std::path::PathBuf;

use crate::model::VmmKind;

use super::disklock::DiskLockError;

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The VMM asked for cannot run on this host (the user's to change).
    #[error("the {0} VMM cannot run here: {1}")]
    Unavailable(VmmKind, String),
    /// Another process holds one of the VM's disks.
    #[error(transparent)]
    DiskBusy(#[from] DiskLockError),
    #[error("cannot use {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {vmm} VMM did not start")]
    Launch {
        vmm: VmmKind,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl VmmError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> VmmError {
        let path = path.into();
        move |source| VmmError::Io { path, source }
    }

    pub(crate) fn launch(
        vmm: VmmKind,
    ) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> VmmError {
        move |source| VmmError::Launch { vmm, source }
    }
}
