//! The VMMs banger drives, and the choice among them people make.

use super::named_enum;

named_enum! {
    /// A VMM banger can drive. Firecracker is what banger is built for;
    /// QEMU's `microvm` machine boots the same kernel, disks and tap where
    /// Firecracker cannot boot a guest (no hardware KVM).
    pub enum VmmKind ("VMM") {
        Firecracker = "firecracker",
        Qemu = "qemu",
    }
}

named_enum! {
    /// The VMM choice, in config and on `vm create --vmm`.
    #[derive(Default)]
    pub enum VmmChoice ("VMM choice") {
        /// Firecracker where the host can boot guests with it, else QEMU.
        #[default]
        Auto = "auto",
        Firecracker = "firecracker",
        Qemu = "qemu",
    }
}

impl VmmChoice {
    /// The VMM asked for by name; `None` for `auto`.
    pub fn kind(self) -> Option<VmmKind> {
        match self {
            VmmChoice::Auto => None,
            VmmChoice::Firecracker => Some(VmmKind::Firecracker),
            VmmChoice::Qemu => Some(VmmKind::Qemu),
        }
    }
}
