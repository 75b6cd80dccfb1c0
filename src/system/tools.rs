//! Host tool table, program lookup and preflight checks.
//!
//! Every external program banger runs is listed in [`HOST_TOOLS`] with the
//! package that provides it, so a missing tool becomes an error that says
//! what to install instead of a bare "No such file or directory".

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Directories searched after `PATH`: on Debian a non-root `PATH` lacks the
/// sbin directories where e2fsprogs, `ip` and `nft` live.
pub const SBIN_DIRS: &[&str] = &["/usr/sbin", "/sbin"];

/// How a host tool gets installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Shipped by the distributions under these package names.
    Packages {
        /// Package name on Debian and Ubuntu (`apt-get install`).
        debian: &'static str,
        /// Package name on Fedora (`dnf install`).
        fedora: &'static str,
    },
    /// No distribution package; the text says where to get it.
    Manual(&'static str),
}

/// An external program banger may run on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTool {
    /// Program name as looked up on `PATH`.
    pub name: &'static str,
    /// Where to get it when it is missing.
    pub install: Install,
    /// `banger doctor` fails without it; optional tools only select a backend.
    pub required: bool,
}

const E2FSPROGS: Install = Install::Packages {
    debian: "e2fsprogs",
    fedora: "e2fsprogs",
};

const OPENSSH: Install = Install::Packages {
    debian: "openssh-client",
    fedora: "openssh-clients",
};

const fn required(name: &'static str, install: Install) -> HostTool {
    HostTool {
        name,
        install,
        required: true,
    }
}

const fn optional(name: &'static str, install: Install) -> HostTool {
    HostTool {
        required: false,
        ..required(name, install)
    }
}

/// Every host tool banger knows about.
pub const HOST_TOOLS: &[HostTool] = &[
    required(
        "ip",
        Install::Packages {
            debian: "iproute2",
            fedora: "iproute",
        },
    ),
    required(
        "nft",
        Install::Packages {
            debian: "nftables",
            fedora: "nftables",
        },
    ),
    required("mkfs.ext4", E2FSPROGS),
    required("e2fsck", E2FSPROGS),
    required("resize2fs", E2FSPROGS),
    required("debugfs", E2FSPROGS),
    required("dumpe2fs", E2FSPROGS),
    required("ssh", OPENSSH),
    required("ssh-keygen", OPENSSH),
    // Needed only when not root, to run banger-helper; `banger doctor`
    // checks the grant separately.
    optional(
        "sudo",
        Install::Packages {
            debian: "sudo",
            fedora: "sudo",
        },
    ),
    optional(
        "qemu-system-x86_64",
        Install::Packages {
            debian: "qemu-system-x86",
            fedora: "qemu-system-x86-core",
        },
    ),
    optional(
        "firecracker",
        Install::Manual(
            "download a release from github.com/firecracker-microvm/firecracker or build it; see README",
        ),
    ),
];

impl HostTool {
    /// The table entry for `name`, if banger knows the tool.
    pub fn get(name: &str) -> Option<&'static HostTool> {
        HOST_TOOLS.iter().find(|t| t.name == name)
    }
}

impl fmt::Display for Install {
    /// Formats as "install it: apt-get install X (Debian/Ubuntu), dnf install Y (Fedora)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Install::Packages { debian, fedora } => write!(
                f,
                "install it: apt-get install {debian} (Debian/Ubuntu), dnf install {fedora} (Fedora)"
            ),
            Install::Manual(text) => f.write_str(text),
        }
    }
}

/// The directories a program name is looked up in: `path_env` (or the
/// process's `PATH` when `None`), then [`SBIN_DIRS`].
pub fn search_dirs(path_env: Option<&OsStr>) -> Vec<PathBuf> {
    let env_path = match path_env {
        Some(p) => Some(p.to_os_string()),
        None => std::env::var_os("PATH"),
    };
    let mut dirs: Vec<PathBuf> = env_path
        .as_deref()
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    for sbin in SBIN_DIRS {
        let sbin = PathBuf::from(sbin);
        if !dirs.contains(&sbin) {
            dirs.push(sbin);
        }
    }
    dirs
}

/// Finds an executable `name` on `PATH` plus [`SBIN_DIRS`]; a name with a
/// `/` is checked as a path.
pub fn find_program(name: &str, path_env: Option<&OsStr>) -> Option<PathBuf> {
    find_program_in(name, &search_dirs(path_env))
}

/// Finds an executable `name` in exactly `dirs`; a name with a `/` is checked as a path.
pub fn find_program_in(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        let path = PathBuf::from(name);
        return is_executable(&path).then_some(path);
    }
    dirs.iter()
        // An empty PATH entry means the current directory; never search it.
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Host tools a banger command needs but cannot find.
#[derive(Debug, Error)]
pub enum PreflightError {
    /// One line per missing tool, each with what to install.
    #[error("{}", missing_message(.command, .missing))]
    MissingTools {
        /// The banger command that needs the tools, e.g. `vm create`.
        command: String,
        /// Names of every missing tool, in the order they were asked for.
        missing: Vec<String>,
    },
}

fn missing_message(command: &str, missing: &[String]) -> String {
    missing
        .iter()
        .map(|name| {
            let hint = match HostTool::get(name) {
                Some(tool) => tool.install.to_string(),
                None => "install it or add its directory to PATH".to_string(),
            };
            format!(
                "`banger {command}` needs {name}, which is not installed or not on PATH; {hint}"
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks that every tool in `tools` is on `PATH` plus [`SBIN_DIRS`]; the
/// error lists every missing one. `command` is the banger subcommand
/// (`vm create`; a leading `banger ` is accepted).
pub fn preflight(
    command: &str,
    tools: &[&str],
    path_env: Option<&OsStr>,
) -> Result<(), PreflightError> {
    preflight_in(command, tools, &search_dirs(path_env))
}

/// [`preflight`] searching exactly `dirs`.
pub fn preflight_in(command: &str, tools: &[&str], dirs: &[PathBuf]) -> Result<(), PreflightError> {
    let missing: Vec<String> = tools
        .iter()
        .filter(|name| find_program_in(name, dirs).is_none())
        .map(|name| name.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = command.strip_prefix("banger ").unwrap_or(command);
    Err(PreflightError::MissingTools {
        command: command.to_string(),
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_install_hints() {
        let mkfs = HostTool::get("mkfs.ext4").unwrap();
        assert_eq!(
            mkfs.install.to_string(),
            "install it: apt-get install e2fsprogs (Debian/Ubuntu), dnf install e2fsprogs (Fedora)"
        );
        let fc = HostTool::get("firecracker").unwrap();
        assert!(
            fc.install
                .to_string()
                .contains("github.com/firecracker-microvm")
        );
        assert!(HostTool::get("nope").is_none());
    }

    #[test]
    fn search_dirs_appends_sbin_once() {
        let dirs = search_dirs(Some(OsStr::new("/a:/usr/sbin")));
        let expect: Vec<PathBuf> = ["/a", "/usr/sbin", "/sbin"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(dirs, expect);
    }

    #[test]
    fn message_strips_banger_prefix() {
        let err = preflight_in("banger vm create", &["no-such-tool-xyz"], &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("`banger vm create` needs no-such-tool-xyz"),
            "{msg}"
        );
    }
}
