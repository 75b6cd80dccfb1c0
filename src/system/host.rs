//! Host checks for `banger doctor`: KVM, tun, host tools, sudo.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::Access;
use serde::Serialize;

use super::exec::Cmd;
use super::tools::{self, HOST_TOOLS};

/// One line of `banger doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostCheck {
    /// What was checked, e.g. `/dev/kvm` or `tool mkfs.ext4`.
    pub name: String,
    /// Whether the host passes.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do when it does not pass.
    pub fix: Option<String>,
    /// A failed required check means banger cannot work; a failed optional
    /// one only narrows what it can do (e.g. which VMM backend).
    pub required: bool,
}

/// Which KVM implementation the host runs; the VMM backend is chosen from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvmKind {
    /// Hardware virtualization, `kvm_intel`.
    Intel,
    /// Hardware virtualization, `kvm_amd`.
    Amd,
    /// `kvm_pvm`: software-assisted KVM inside a VM without nested
    /// virtualization. Firecracker cannot boot a guest under it.
    Pvm,
    /// No KVM vendor module loaded.
    None,
}

impl fmt::Display for KvmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KvmKind::Intel => "kvm_intel (hardware)",
            KvmKind::Amd => "kvm_amd (hardware)",
            KvmKind::Pvm => "kvm_pvm (nested, software-assisted)",
            KvmKind::None => "none",
        })
    }
}

/// The host's KVM implementation, from the modules in `/sys/module`.
pub fn kvm_kind() -> KvmKind {
    kvm_kind_in(Path::new("/sys/module"))
}

/// [`kvm_kind`] reading module directories under `sys_module`.
pub fn kvm_kind_in(sys_module: &Path) -> KvmKind {
    // PVM first: it is what decides that Firecracker cannot work.
    [
        ("kvm_pvm", KvmKind::Pvm),
        ("kvm_intel", KvmKind::Intel),
        ("kvm_amd", KvmKind::Amd),
    ]
    .into_iter()
    .find(|(module, _)| sys_module.join(module).is_dir())
    .map_or(KvmKind::None, |(_, kind)| kind)
}

/// Runs every host check `banger doctor` reports; `path_env` overrides
/// `PATH` for the tool lookups.
pub async fn doctor_checks(path_env: Option<&OsStr>) -> Vec<HostCheck> {
    let mut checks = vec![kvm_device_check(), kvm_kind_check(), tun_check()];
    checks.extend(HOST_TOOLS.iter().map(|tool| {
        let found = tools::find_program(tool.name, path_env);
        HostCheck {
            name: format!("tool {}", tool.name),
            ok: found.is_some(),
            detail: match &found {
                Some(path) => path.display().to_string(),
                None => "not found on PATH, /usr/sbin or /sbin".to_string(),
            },
            fix: found.is_none().then(|| tool.install.to_string()),
            required: tool.required,
        }
    }));
    checks.push(sudo_check(path_env).await);
    checks
}

fn kvm_device_check() -> HostCheck {
    let path = "/dev/kvm";
    let (ok, detail, fix) = if !Path::new(path).exists() {
        (
            false,
            "missing; VMs can only use QEMU software emulation (slow)".to_string(),
            "enable virtualization, then `modprobe kvm_intel` or `modprobe kvm_amd`",
        )
    } else if let Err(e) = rustix::fs::access(path, Access::READ_OK | Access::WRITE_OK) {
        (
            false,
            format!("present but not read-write for this user ({e})"),
            "add yourself to the `kvm` group (`usermod -aG kvm $USER`) and log in again",
        )
    } else {
        (true, "present and read-write".to_string(), "")
    };
    HostCheck {
        name: path.to_string(),
        ok,
        detail,
        fix: (!ok).then(|| fix.to_string()),
        required: false,
    }
}

fn kvm_kind_check() -> HostCheck {
    let kind = kvm_kind();
    let (ok, detail, fix) = match kind {
        KvmKind::Intel | KvmKind::Amd => (true, format!("{kind}"), None),
        KvmKind::Pvm => (
            true,
            format!("{kind}: Firecracker cannot boot a guest here; the QEMU backend is used"),
            None,
        ),
        KvmKind::None => (
            false,
            "no KVM module loaded".to_string(),
            Some("`modprobe kvm_intel` or `modprobe kvm_amd`".to_string()),
        ),
    };
    HostCheck {
        name: "kvm kind".to_string(),
        ok,
        detail,
        fix,
        required: false,
    }
}

fn tun_check() -> HostCheck {
    let ok = Path::new("/dev/net/tun").exists();
    HostCheck {
        name: "/dev/net/tun".to_string(),
        ok,
        detail: if ok { "present" } else { "missing" }.to_string(),
        fix: (!ok).then(|| "`modprobe tun`".to_string()),
        required: true,
    }
}

/// As root, nothing to check. Otherwise every privileged tool must be
/// allowed through `sudo -n` (asked with `sudo -n -l PROGRAM`, which runs
/// nothing), since that is exactly how the daemon runs them.
async fn sudo_check(path_env: Option<&OsStr>) -> HostCheck {
    let mut check = HostCheck {
        name: "sudo".to_string(),
        ok: true,
        detail: String::new(),
        fix: None,
        required: true,
    };
    if rustix::process::geteuid().is_root() {
        check.detail = "running as root; no sudo needed".to_string();
        return check;
    }
    let privileged: Vec<PathBuf> = HOST_TOOLS
        .iter()
        .filter(|t| t.privileged)
        .filter_map(|t| tools::find_program(t.name, path_env))
        .collect();
    let mut refused = Vec::new();
    for program in &privileged {
        let allowed = Cmd::new("sudo")
            .args(["-n", "-l"])
            .arg(program)
            .timeout(Duration::from_secs(5))
            .run()
            .await;
        if let Err(e) = allowed {
            tracing::debug!(program = %program.display(), %e, "sudo refused");
            refused.push(program.display().to_string());
        }
    }
    check.ok = refused.is_empty();
    check.detail = if check.ok {
        format!("sudo -n allows {}", join_paths(&privileged))
    } else {
        format!("sudo -n refuses {}", refused.join(", "))
    };
    if !check.ok {
        check.fix = Some(format!(
            "add a sudoers rule with `visudo -f /etc/sudoers.d/banger`: {} ALL=(root) NOPASSWD: {}",
            sudo_user(),
            join_paths(&privileged)
        ));
    }
    check
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The user name for a sudoers line: `$USER`, else `#UID` (sudoers accepts both).
fn sudo_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("#{}", rustix::process::geteuid().as_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_kind_from_modules() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(kvm_kind_in(dir.path()), KvmKind::None);
        std::fs::create_dir(dir.path().join("kvm")).unwrap();
        assert_eq!(kvm_kind_in(dir.path()), KvmKind::None);
        std::fs::create_dir(dir.path().join("kvm_amd")).unwrap();
        assert_eq!(kvm_kind_in(dir.path()), KvmKind::Amd);
        std::fs::create_dir(dir.path().join("kvm_pvm")).unwrap();
        assert_eq!(kvm_kind_in(dir.path()), KvmKind::Pvm);
    }

    #[tokio::test]
    async fn doctor_lists_every_tool() {
        let checks = doctor_checks(None).await;
        for tool in HOST_TOOLS {
            let name = format!("tool {}", tool.name);
            let check = checks.iter().find(|c| c.name == name).unwrap();
            assert_eq!(check.required, tool.required);
            assert_eq!(check.ok, check.fix.is_none(), "{check:?}");
        }
        assert!(checks.iter().any(|c| c.name == "sudo"));
    }
}
