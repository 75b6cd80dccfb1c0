//! The host's side of `banger doctor`: KVM, `/dev/net/tun`, the host tools,
//! and the network grant of a user who is not root.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use rustix::fs::Access;

use crate::grant::netadmin::NetAdmin;
use crate::grant::{GrantFile, Policy};
use crate::rpc::api::DoctorCheck;
use crate::system::host::{KvmKind, kvm_kind};
use crate::system::tools::{self, HOST_TOOLS};

/// Runs every host check `banger doctor` reports; `path_env` overrides
/// `PATH` for the tool lookups.
pub(super) async fn host_checks(path_env: Option<&OsStr>) -> Vec<DoctorCheck> {
    let mut checks = vec![kvm_device_check(), kvm_kind_check(), tun_check()];
    checks.extend(HOST_TOOLS.iter().map(|tool| {
        let found = tools::find_program(tool.name, path_env);
        DoctorCheck {
            name: format!("tool {}", tool.name),
            ok: found.is_some(),
            detail: match &found {
                Some(path) => path.display().to_string(),
                None => "not found on PATH, /usr/sbin or /sbin".to_string(),
            },
            fix: found.is_none().then(|| tool.install.to_string()),
            required: tool.required,
            grant: Vec::new(),
        }
    }));
    checks
}

fn kvm_device_check() -> DoctorCheck {
    device_check(
        "/dev/kvm",
        (
            "missing; VMs can only use QEMU software emulation (slow)",
            "enable virtualization, then `modprobe kvm_intel` or `modprobe kvm_amd`",
        ),
        "add yourself to the `kvm` group (`usermod -aG kvm $USER`) and log in again",
        false,
    )
}

/// A device node the daemon's user must open read-write: `missing` says
/// what its absence means and what to do, `denied_fix` what to do when it
/// is there but not this user's to open.
fn device_check(
    path: &str,
    missing: (&str, &str),
    denied_fix: &str,
    required: bool,
) -> DoctorCheck {
    let (ok, detail, fix) = if !Path::new(path).exists() {
        (false, missing.0.to_string(), missing.1)
    } else if let Err(e) = rustix::fs::access(path, Access::READ_OK | Access::WRITE_OK) {
        (
            false,
            format!("present but not read-write for this user ({e})"),
            denied_fix,
        )
    } else {
        (true, "present and read-write".to_string(), "")
    };
    DoctorCheck {
        name: path.to_string(),
        ok,
        detail,
        fix: (!ok).then(|| fix.to_string()),
        required,
        grant: Vec::new(),
    }
}

fn kvm_kind_check() -> DoctorCheck {
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
    DoctorCheck {
        name: "kvm kind".to_string(),
        ok,
        detail,
        fix,
        required: false,
        grant: Vec::new(),
    }
}

/// VMMs attach to their tap through `/dev/net/tun`: it must be there, and
/// read-write for a daemon that is not root (0666, as udev sets it on most
/// distributions: opening it grants nothing, a tap is only usable by the
/// uid it was made for).
fn tun_check() -> DoctorCheck {
    device_check(
        "/dev/net/tun",
        ("missing", "`modprobe tun`"),
        "`chmod 0666 /dev/net/tun` as root (its usual mode; a tap stays usable only by the uid it is made for)",
        true,
    )
}

/// The narrow grant a daemon that is not root needs: the helper installed
/// root-owned, `sudo -n` allowed to run it, and a policy naming exactly
/// the network in the user's configuration. Asked of the helper itself
/// (`check`, which changes nothing), since that is exactly how the daemon
/// runs it. As root there is nothing to grant.
pub(super) async fn grant_check(admin: &NetAdmin, helper_source: Option<&Path>) -> DoctorCheck {
    let policy = admin.policy();
    let mut check = DoctorCheck {
        name: "network grant".to_string(),
        ok: true,
        detail: String::new(),
        fix: None,
        required: true,
        grant: Vec::new(),
    };
    let scope = format!(
        "bridge {}, its bg-* taps, nftables table {}, subnet {}",
        policy.bridge, policy.nat_table, policy.subnet
    );
    if rustix::process::geteuid().is_root() {
        check.detail = format!("root: changes are made in-process, limited to {scope}");
        return check;
    }
    let (installed, problem) = match admin.helper() {
        None => return check,
        Some(Err(path)) => {
            let problem = format!("no banger-helper at {}", path.display());
            (path, Some(problem))
        }
        Some(Ok(path)) => match crate::system::trust::root_owned(&path) {
            Err(why) => {
                let problem = format!("{} is not trustworthy: {why}", path.display());
                (path, Some(problem))
            }
            Ok(()) => (
                path,
                admin
                    .check()
                    .await
                    .err()
                    .map(|e| crate::system::host::error_chain(&e)),
            ),
        },
    };
    match problem {
        None => {
            check.detail = format!(
                "sudo -n {} may change {scope}, and nothing else",
                installed.display()
            );
        }
        Some(problem) => {
            check.ok = false;
            check.detail = problem;
            // Named as the helper will name it: from the uid, by /etc/passwd.
            let user = match crate::system::trust::login_name(rustix::process::getuid().as_raw()) {
                Ok(user) => user,
                Err(why) => {
                    check.detail = format!(
                        "{}; and the helper grants no one who is not in /etc/passwd: {why}",
                        check.detail
                    );
                    return check;
                }
            };
            check.grant = grant_files(policy, &user, &installed, helper_source);
            check.fix = Some(format!(
                "as root, install these files (`banger doctor --json` lists them as data):\n{}",
                check
                    .grant
                    .iter()
                    .map(GrantFile::describe)
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    check
}

/// What an administrator installs to grant this user `policy`: the helper
/// (root-owned, from `source`, this build's), a sudoers rule that lets the
/// user run it (and nothing else), and the policy file.
fn grant_files(
    policy: &Policy,
    user: &str,
    installed: &Path,
    source: Option<&Path>,
) -> Vec<GrantFile> {
    let mut files = Vec::new();
    if crate::system::trust::root_owned(installed).is_err() {
        files.push(GrantFile {
            path: installed.to_path_buf(),
            mode: 0o755,
            content: None,
            copy_of: source.map(Path::to_path_buf),
        });
    }
    // sudo skips files in sudoers.d whose names hold a '.'.
    let rule_name = user.replace(['.', '~'], "_");
    files.push(GrantFile {
        path: PathBuf::from(format!("/etc/sudoers.d/banger-{rule_name}")),
        mode: 0o440,
        content: Some(format!(
            "{user} ALL=(root) NOPASSWD: {}\n",
            installed.display()
        )),
        copy_of: None,
    });
    files.push(GrantFile {
        path: crate::grant::helper::policy_path(user),
        mode: 0o644,
        content: Some(policy.to_file()),
        copy_of: None,
    });
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn doctor_lists_every_tool() {
        let checks = host_checks(None).await;
        for tool in HOST_TOOLS {
            let name = format!("tool {}", tool.name);
            let check = checks.iter().find(|c| c.name == name).unwrap();
            assert_eq!(check.required, tool.required);
            assert_eq!(check.ok, check.fix.is_none(), "{check:?}");
        }
    }

    #[test]
    fn the_grant_is_the_helper_a_sudoers_rule_and_the_policy() {
        let policy = Policy::new("bgt1", "10.213.1.1/24", "bangertest1").unwrap();
        let files = grant_files(
            &policy,
            "alice",
            Path::new("/nonexistent/banger-helper"),
            Some(Path::new("/build/banger-helper")),
        );
        assert_eq!(files.len(), 3);
        assert_eq!(
            files[0].copy_of.as_deref(),
            Some(Path::new("/build/banger-helper"))
        );
        assert!(files[1].path.starts_with("/etc/sudoers.d"));
        let rule = files[1].content.as_deref().unwrap();
        assert_eq!(
            rule,
            "alice ALL=(root) NOPASSWD: /nonexistent/banger-helper\n"
        );
        assert_eq!(files[2].path, Path::new("/etc/banger/users/alice.toml"));
        assert_eq!(files[1].mode, 0o440);
        assert_eq!(
            Policy::parse(files[2].content.as_deref().unwrap()).unwrap(),
            policy
        );
    }
}
