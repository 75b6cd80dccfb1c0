//! Who a VMM runs as. Under a root daemon each VMM gets a uid of its own
//! (`vmm_uid_base` plus the guest's place in the subnet; no name in
//! `/etc/passwd` is needed), its group of the same number, and only the
//! supplementary groups its devices need. A guest that breaks out of its
//! VMM is then an unprivileged user that owns nothing but its own disks:
//! it cannot signal or trace another VM's VMM, read another VM's disks or
//! write anything of the daemon's.
//!
//! What that uid needs, and how it gets it:
//! - its disks, kernel and initrd: inherited descriptors it reopens as
//!   `/proc/self/fd/N` (no path to them is traversable); its writable disks
//!   are chowned to it, mode 0600; images and the bundle stay root's, 0644;
//! - its working directory, the VM's (root's, mode 0711), and a `run/`
//!   directory there of its own for its control socket;
//! - `/dev/kvm` and `/dev/net/tun` where it opens them itself (QEMU gets
//!   its tap as a descriptor): through their group when only the group
//!   may, else the VMM cannot drop root and says why.

use crate::model::VmmKind;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::process::{Gid, Uid};

/// An unprivileged identity for one VMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmUser {
    pub uid: u32,
    pub gid: u32,
    /// Groups of the devices it opens, where only their group may.
    pub groups: Vec<u32>,
}

impl VmmUser {
    /// Uid and gid `id`, with the groups that let it open `devices`; `Err`
    /// says why it could not open one of them without root.
    pub fn for_devices(id: u32, devices: &[&Path]) -> Result<VmmUser, String> {
        let mut groups = Vec::new();
        for device in devices {
            let Ok(meta) = std::fs::metadata(device) else {
                // Missing: the VMM fails on it the same way as root.
                continue;
            };
            let mode = meta.permissions().mode();
            if mode & 0o006 == 0o006 {
                continue;
            }
            if mode & 0o060 == 0o060 && meta.gid() != 0 {
                if !groups.contains(&meta.gid()) {
                    groups.push(meta.gid());
                }
                continue;
            }
            return Err(format!(
                "{} (mode {:o}, group {}) opens only for root; give it a group that may read and write it (udev's `kvm` group for /dev/kvm; /dev/net/tun is usually 0666)",
                device.display(),
                mode & 0o777,
                meta.gid()
            ));
        }
        Ok(VmmUser {
            uid: id,
            gid: id,
            groups,
        })
    }

    /// Makes the calling process this user, for good (real, effective and
    /// saved ids). For a `pre_exec` hook: only raw syscalls, which are
    /// async-signal-safe, on the one thread of the forked child.
    pub fn become_it(&self) -> io::Result<()> {
        let mut groups = [Gid::ROOT; 8];
        let n = self.groups.len().min(groups.len());
        for (slot, gid) in groups.iter_mut().zip(&self.groups) {
            *slot = Gid::from_raw(*gid);
        }
        rustix::thread::set_thread_groups(&groups[..n])?;
        let gid = Gid::from_raw(self.gid);
        rustix::thread::set_thread_res_gid(gid, gid, gid)?;
        let uid = Uid::from_raw(self.uid);
        rustix::thread::set_thread_res_uid(uid, uid, uid)?;
        Ok(())
    }

    /// Gets a VM's directory ready for this user: the directory root's and
    /// searchable (0711) so the VMM can work in it, `run` its own (0700)
    /// for its control socket, and `disks` (its writable ones) its own,
    /// 0600. The VMM can never rename or replace anything in the
    /// directory, so the daemon never follows a link it planted.
    pub fn prepare(&self, dir: &Path, run: &Path, disks: &[&Path]) -> io::Result<()> {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
        make_own_dir(run, Some((self.uid, self.gid)))?;
        for disk in disks {
            chown(disk, self.uid, self.gid)?;
            std::fs::set_permissions(disk, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }
}

/// Makes `run` (the VMM's socket directory) exist, mode 0700, owned by
/// `owner` (or this process). A daemon that is not root calls it with `None`.
pub fn make_own_dir(run: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    match std::fs::symlink_metadata(run) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            std::fs::remove_file(run)?;
            std::fs::create_dir(run)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir(run)?,
        Err(e) => return Err(e),
    }
    if let Some((uid, gid)) = owner {
        chown(run, uid, gid)?;
    }
    std::fs::set_permissions(run, std::fs::Permissions::from_mode(0o700))
}

fn chown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    // lchown: a link planted in place of the file is never followed.
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(Into::into)
}

/// Who the VMM of the guest at `ip` runs as on `vmm`. `Ok(None)` for a
/// daemon that is not root (its VMMs run as it); under root a uid of the
/// VM's own, `vmm_uid_base` plus the guest's place in the subnet, unless a
/// device the VMM opens itself only opens for root (`Err` says which).
pub fn for_guest(
    vmm: VmmKind,
    uid_base: u32,
    subnet: &crate::net::Subnet,
    ip: std::net::Ipv4Addr,
    jailed: bool,
) -> Result<Option<VmmUser>, String> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let offset = u32::from(ip).wrapping_sub(u32::from(subnet.network()));
    let id = uid_base.checked_add(offset).ok_or_else(|| {
        format!("vmm_uid_base {uid_base} leaves no room for the guest uids of the subnet")
    })?;
    let kvm = Path::new("/dev/kvm");
    let devices: Vec<&Path> = match vmm {
        // QEMU gets its tap as a descriptor; it opens /dev/kvm only with KVM.
        VmmKind::Qemu => match super::qemu::accel_for(crate::system::host::kvm_kind()) {
            super::qemu::Accel::Kvm => vec![kvm],
            super::qemu::Accel::Tcg => vec![],
        },
        // The jailer makes the jail's own device nodes, the VM uid's.
        VmmKind::Firecracker if jailed => vec![],
        VmmKind::Firecracker => vec![kvm, Path::new("/dev/net/tun")],
    };
    VmmUser::for_devices(id, &devices).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_decide_the_groups_or_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        let grouped = dir.path().join("grouped");
        let closed = dir.path().join("closed");
        for (path, mode) in [(&open, 0o666), (&grouped, 0o660), (&closed, 0o600)] {
            std::fs::write(path, "").unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let me = rustix::process::getgid().as_raw();
        let user = VmmUser::for_devices(7, &[&open, &dir.path().join("missing")]).unwrap();
        assert_eq!(
            user,
            VmmUser {
                uid: 7,
                gid: 7,
                groups: vec![]
            }
        );
        let grouped_result = VmmUser::for_devices(7, &[&grouped]);
        if me == 0 {
            // A device whose group is root's is as good as closed.
            assert!(grouped_result.is_err());
        } else {
            assert_eq!(grouped_result.unwrap().groups, vec![me]);
        }
        let err = VmmUser::for_devices(7, &[&closed]).unwrap_err();
        assert!(err.contains("opens only for root"), "{err}");
    }
}
