//! What can go wrong with the host network.

use std::path::PathBuf;

use crate::grant::netadmin::NetAdminError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The configuration cannot work on this host (a bad subnet, a route
    /// that clashes with it); the message says what to change.
    #[error("{0}")]
    Config(String),
    /// A published port that cannot be listened on (the user's to change).
    #[error("{0}")]
    Port(String),
    #[error("cannot change the host network ({device})")]
    Host {
        device: String,
        #[source]
        source: Box<NetAdminError>,
    },
    #[error("cannot use {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl NetworkError {
    /// The error for a tap, bridge or table `device` that could not be changed.
    pub(crate) fn host(device: &str) -> impl FnOnce(NetAdminError) -> NetworkError {
        let device = device.to_string();
        move |source| NetworkError::Host {
            device,
            source: Box::new(source),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> NetworkError {
        let path = path.into();
        move |source| NetworkError::Io { path, source }
    }
}
