//! Where banger keeps things: the XDG base directories, the daemon's socket,
//! lock and log.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Errors finding or preparing banger's directories.
#[derive(Debug, thiserror::Error)]
pub enum PathsError {
    /// Neither the XDG variable nor HOME says where the directory is.
    #[error("cannot tell where {what} lives: set HOME or {var}")]
    NoHome {
        what: &'static str,
        var: &'static str,
    },
    /// A directory could not be created or given its mode.
    #[error("cannot prepare directory {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The runtime directory exists but belongs to someone else.
    #[error(
        "{path} belongs to uid {owner}, not to you (uid {me}); remove it or set XDG_RUNTIME_DIR"
    )]
    ForeignRuntimeDir { path: PathBuf, owner: u32, me: u32 },
}

/// All of banger's per-user locations, resolved once from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `$XDG_CONFIG_HOME/banger`: `config.toml`.
    pub config_dir: PathBuf,
    /// `$XDG_STATE_HOME/banger`: the database, per-VM directories, the daemon log.
    pub state_dir: PathBuf,
    /// `$XDG_DATA_HOME/banger`: images and the installed runtime bundle.
    pub data_dir: PathBuf,
    /// `$XDG_CACHE_HOME/banger`: what can be fetched again (OCI blobs).
    pub cache_dir: PathBuf,
    /// `$XDG_RUNTIME_DIR/banger` (else `/tmp/banger-<uid>`): the daemon's
    /// socket. logind removes it at logout while the daemon and the VMMs
    /// may run on, so nothing that must outlive a session lives here.
    pub runtime_dir: PathBuf,
}

impl Paths {
    /// Resolves the locations from the process environment.
    pub fn from_env() -> Result<Paths, PathsError> {
        Paths::resolve(
            |key| std::env::var_os(key).map(PathBuf::from),
            current_uid(),
        )
    }

    /// Resolves the locations from `var` (an environment lookup) for user `uid`.
    /// Relative XDG values are ignored, as the XDG spec asks.
    pub fn resolve(var: impl Fn(&str) -> Option<PathBuf>, uid: u32) -> Result<Paths, PathsError> {
        let absolute = |key: &str| var(key).filter(|p| p.is_absolute());
        let home = absolute("HOME");
        let base = |xdg: &'static str, what: &'static str, fallback: &str| {
            absolute(xdg)
                .or_else(|| home.as_ref().map(|h| h.join(fallback)))
                .map(|dir| dir.join("banger"))
                .ok_or(PathsError::NoHome { what, var: xdg })
        };
        let runtime_dir = match absolute("XDG_RUNTIME_DIR") {
            Some(dir) => dir.join("banger"),
            None => PathBuf::from(format!("/tmp/banger-{uid}")),
        };
        Ok(Paths {
            config_dir: base("XDG_CONFIG_HOME", "the configuration", ".config")?,
            state_dir: base("XDG_STATE_HOME", "the state", ".local/state")?,
            data_dir: base("XDG_DATA_HOME", "the data", ".local/share")?,
            cache_dir: base("XDG_CACHE_HOME", "the cache", ".cache")?,
            runtime_dir,
        })
    }

    /// The daemon's listening socket.
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir.join("bangerd.sock")
    }

    /// The lock file that keeps one daemon per user: in the state
    /// directory, which a logout cannot remove under a running daemon.
    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("bangerd.lock")
    }

    /// The daemon's log.
    pub fn daemon_log(&self) -> PathBuf {
        self.state_dir.join("bangerd.log")
    }

    /// The SQLite state database.
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("state.db")
    }

    /// The optional configuration file.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    /// Creates the runtime directory with mode 0700, refusing one owned by
    /// another user (under /tmp anyone could have made it first).
    pub fn prepare_runtime_dir(&self) -> Result<(), PathsError> {
        let dir = &self.runtime_dir;
        private_dir(dir)?;
        let prepare = |source| PathsError::Prepare {
            path: dir.clone(),
            source,
        };
        let meta = std::fs::symlink_metadata(dir).map_err(prepare)?;
        let me = current_uid();
        if meta.uid() != me {
            return Err(PathsError::ForeignRuntimeDir {
                path: dir.clone(),
                owner: meta.uid(),
                me,
            });
        }
        if !meta.is_dir() {
            return Err(prepare(io::Error::other("not a directory")));
        }
        if meta.mode() & 0o777 != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(prepare)?;
        }
        Ok(())
    }

    /// Creates the state directory (0700): it holds keys and disks.
    pub fn prepare_state_dir(&self) -> Result<(), PathsError> {
        private_dir(&self.state_dir)
    }
}

/// Creates `dir` and its missing parents; the leaf gets mode 0700.
pub fn private_dir(dir: &Path) -> Result<(), PathsError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PathsError::Prepare {
            path: dir.to_path_buf(),
            source,
        })
}

/// The real uid of this process.
pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&str, &str)]) -> Result<Paths, PathsError> {
        let map: HashMap<String, PathBuf> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
            .collect();
        Paths::resolve(|k| map.get(k).cloned(), 1000)
    }

    #[test]
    fn xdg_variables_win() {
        let p = resolve(&[
            ("HOME", "/home/a"),
            ("XDG_CONFIG_HOME", "/c"),
            ("XDG_STATE_HOME", "/s"),
            ("XDG_DATA_HOME", "/d"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ])
        .unwrap();
        assert_eq!(p.config_file(), PathBuf::from("/c/banger/config.toml"));
        assert_eq!(p.database(), PathBuf::from("/s/banger/state.db"));
        assert_eq!(p.data_dir, PathBuf::from("/d/banger"));
        assert_eq!(
            p.socket(),
            PathBuf::from("/run/user/1000/banger/bangerd.sock")
        );
    }

    #[test]
    fn home_defaults_and_tmp_runtime_fallback() {
        let p = resolve(&[("HOME", "/home/a")]).unwrap();
        assert_eq!(p.config_dir, PathBuf::from("/home/a/.config/banger"));
        assert_eq!(p.state_dir, PathBuf::from("/home/a/.local/state/banger"));
        assert_eq!(p.data_dir, PathBuf::from("/home/a/.local/share/banger"));
        assert_eq!(p.runtime_dir, PathBuf::from("/tmp/banger-1000"));
    }

    #[test]
    fn relative_xdg_values_are_ignored() {
        let p = resolve(&[
            ("HOME", "/h"),
            ("XDG_STATE_HOME", "rel"),
            ("XDG_RUNTIME_DIR", "x"),
        ])
        .unwrap();
        assert_eq!(p.state_dir, PathBuf::from("/h/.local/state/banger"));
        assert_eq!(p.runtime_dir, PathBuf::from("/tmp/banger-1000"));
    }

    #[test]
    fn no_home_is_a_clear_error() {
        let err = resolve(&[]).unwrap_err().to_string();
        assert!(err.contains("set HOME or XDG_CONFIG_HOME"), "{err}");
    }
}
