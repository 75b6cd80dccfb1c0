//! Which VMM runs a VM: what `auto` picks on this host, whether a VMM asked
//! for by name can run here, and where its binary is.

use std::path::PathBuf;

use crate::bundle::Bundle;
use crate::config::Config;
use crate::model::{VmmChoice, VmmKind};
use crate::system::host::{KvmKind, kvm_kind};
use crate::system::tools;

use super::VmmError;
use super::qemu::{self, Accel};

/// The firecracker binary banger would use: configured, else the bundle's,
/// else PATH's.
pub fn firecracker_binary(config: &Config, bundle: Option<&Bundle>) -> Option<PathBuf> {
    config
        .firecracker
        .clone()
        .or_else(|| bundle.and_then(|b| b.firecracker.clone()))
        .filter(|p| p.is_file())
        .or_else(|| tools::find_program("firecracker", None))
}

/// What `auto` picks on this host, and why: for `doctor` and for create.
pub fn describe_host(config: &Config, bundle: Option<&Bundle>) -> (VmmKind, String) {
    let kvm = kvm_kind();
    let hardware = matches!(kvm, KvmKind::Intel | KvmKind::Amd);
    match (firecracker_binary(config, bundle), hardware) {
        (Some(fc), true) => (
            VmmKind::Firecracker,
            format!("{} with hardware KVM ({kvm})", fc.display()),
        ),
        (Some(_), false) => (
            VmmKind::Qemu,
            format!(
                "QEMU: Firecracker is present but cannot boot a guest without hardware KVM (host KVM: {kvm})"
            ),
        ),
        (None, _) => (
            VmmKind::Qemu,
            format!("QEMU: no firecracker binary found (host KVM: {kvm})"),
        ),
    }
}

/// Resolves a VMM choice to a VMM that can run here.
pub fn choose(choice: VmmChoice, config: &Config, bundle: &Bundle) -> Result<VmmKind, VmmError> {
    match choice.kind() {
        None => Ok(describe_host(config, Some(bundle)).0),
        Some(VmmKind::Firecracker) => match firecracker_binary(config, Some(bundle)) {
            Some(_) => Ok(VmmKind::Firecracker),
            None => Err(VmmError::Unavailable(
                VmmKind::Firecracker,
                "no firecracker binary (set `firecracker` in config.toml, put one in the runtime bundle or on PATH)".into(),
            )),
        },
        Some(VmmKind::Qemu) => match tools::find_program("qemu-system-x86_64", None) {
            Some(_) => Ok(VmmKind::Qemu),
            None => Err(VmmError::Unavailable(
                VmmKind::Qemu,
                "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into(),
            )),
        },
    }
}

/// How `vmm` runs on this host, for `vm show`.
pub fn describe(vmm: VmmKind) -> String {
    let kvm = kvm_kind();
    match vmm {
        VmmKind::Firecracker => format!("firecracker (KVM: {kvm})"),
        VmmKind::Qemu => match qemu::accel_for(kvm) {
            Accel::Kvm => format!("qemu microvm with KVM ({kvm})"),
            Accel::Tcg => format!("qemu microvm, software emulation (TCG; host KVM: {kvm})"),
        },
    }
}
