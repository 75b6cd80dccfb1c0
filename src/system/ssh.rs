//! SSH from the host side for people: keys made with `ssh-keygen`, and the
//! argv of the interactive `ssh` client (`vm ssh`) with banger's own key
//! and known_hosts (never `~/.ssh/known_hosts`). Everything banger itself
//! does over SSH goes through the native client in `crate::ssh`.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::exec::{Cmd, ExecError};

/// Errors with keys or reaching a guest.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot make an SSH key at {path}")]
    Keygen {
        path: PathBuf,
        #[source]
        source: ExecError,
    },
    #[error("cannot read SSH key {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Generates an ed25519 key pair at `path` and `path.pub` (no passphrase);
/// returns the public key line.
pub async fn generate_key(path: &Path, comment: &str) -> Result<String, SshError> {
    let keygen = |source| SshError::Keygen {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| SshError::Read {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    Cmd::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .run()
        .await
        .map_err(keygen)?;
    public_key(path)
}

/// The public key line of the pair at `path`.
pub fn public_key(path: &Path) -> Result<String, SshError> {
    let pub_path = path.with_extension("pub");
    std::fs::read_to_string(&pub_path)
        .map(|s| s.trim().to_string())
        .map_err(|source| SshError::Read {
            path: pub_path,
            source,
        })
}

/// The user's key at `path`, made on first use. Concurrent callers (two
/// creates at once) make it once.
pub async fn ensure_key(path: &Path, comment: &str) -> Result<String, SshError> {
    static MAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _held = MAKING.lock().await;
    if path.exists() && path.with_extension("pub").exists() {
        return public_key(path);
    }
    generate_key(path, comment).await
}

/// Options every banger ssh call uses: this key only, this known_hosts
/// only, strict host key checking.
pub fn client_options(key: &Path, known_hosts: &Path) -> Vec<String> {
    [
        "-i".to_string(),
        key.display().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".into(),
        "GlobalKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
    ]
    .into()
}

/// What `vm ssh` adds for an interactive session: none of the user's ssh
/// config (where `ForwardAgent yes` or a `LocalCommand` may lurk), and
/// nothing of the user's forwarded into an untrusted guest (agent, X11,
/// ports) unless `forward_agent` asks for the agent.
pub fn isolation_options(forward_agent: bool) -> Vec<String> {
    let agent = if forward_agent { "yes" } else { "no" };
    [
        "-F",
        "/dev/null",
        "-o",
        &format!("ForwardAgent={agent}"),
        "-o",
        "ForwardX11=no",
        "-o",
        "ForwardX11Trusted=no",
        "-o",
        "ClearAllForwardings=yes",
        "-o",
        "PermitLocalCommand=no",
    ]
    .map(String::from)
    .into()
}
