//! Facts about the host: which KVM it runs; and the one-line form of an
//! error chain for checks and logs. `banger doctor`'s checks live in
//! `crate::doctor`.

use std::fmt;
use std::path::Path;

use serde::Serialize;

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

/// An error and its causes on one line, for a check's detail or a log.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
}
