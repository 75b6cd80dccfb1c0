//! The daemon's listening socket: private modes, stale-socket replacement,
//! and the peer's uid on every connection.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

/// Errors binding the socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot replace stale socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds `path` with mode 0600. Only the lock holder calls this, so a socket
/// file already there belongs to a daemon that died: it is replaced.
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(path = %path.display(), "replaced stale socket"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SocketError::RemoveStale {
                path: path.into(),
                source,
            });
        }
    }
    let bind_err = |source| SocketError::Bind {
        path: path.into(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    // The directory is already 0700; this keeps the socket private even if
    // someone loosens the directory.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// The device and inode of the socket file at `path`, to tell ours from
/// one that is gone or was replaced.
pub fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_socket())
        .map(|m| (m.dev(), m.ino()))
}

/// Who is on the other end of a connection (SO_PEERCRED).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// None when the kernel would not say; such a peer is refused.
    pub uid: Option<u32>,
}

impl Peer {
    /// The peer of `stream`, as the kernel reports it.
    pub fn of(stream: &UnixStream) -> Peer {
        Peer {
            uid: stream.peer_cred().ok().map(|cred| cred.uid()),
        }
    }
}
