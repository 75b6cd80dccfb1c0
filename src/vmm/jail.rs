//! Firecracker's jailer, where a root daemon has one: Firecracker runs
//! chrooted in a directory of its own inside the VM's (`jail/`), in a
//! mount namespace of its own, as the VM's uid, with its own `/dev/kvm` and
//! `/dev/net/tun` nodes (so the host's device modes do not matter), and
//! under cgroup v2 limits on CPU and memory where the host has them.
//!
//! The jailer closes every descriptor but stdio, so the jail gets what the
//! VMM boots from as hard links (the kernel and initrd copied when they are
//! on another filesystem), its log as a FIFO the relay reads, and the disk
//! locks are held by the relay, which lives exactly as long as the VMM's
//! pipes. The daemon reaches the API socket through `run/vmm.sock`, a link
//! into the jail.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::disklock::Disk;

/// The jail of one VM, laid out before the jailer runs.
#[derive(Debug, Clone)]
pub struct Jail {
    /// `--chroot-base-dir`: `<vm dir>/jail`.
    pub base: PathBuf,
    /// `<base>/<exec file name>/<id>/root`: the VMM's `/`.
    pub root: PathBuf,
    /// Paths as the jailed VMM sees them.
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub drives: Vec<PathBuf>,
    /// The log FIFO, as the host sees it (`/vmm.log.fifo` inside).
    pub log_fifo: PathBuf,
    /// The API socket, as the host sees it (`/vmm.sock` inside).
    pub api_socket: PathBuf,
}

/// The log FIFO and API socket inside the jail.
pub const LOG_FIFO: &str = "/vmm.log.fifo";
pub const API_SOCKET: &str = "/vmm.sock";
/// Where a jailed Firecracker binds the guest agent's vsock socket.
pub const VSOCK_SOCKET: &str = "/agent.sock";
/// A snapshot's device state and memory inside the jail, where a jailed
/// Firecracker writes them and loads them from.
pub const SNAPSHOT_STATE: &str = "/snapshot.vmstate";
pub const SNAPSHOT_MEMORY: &str = "/snapshot.memory";

impl Jail {
    /// Lays the jail out afresh under `vm_dir` for Firecracker binary
    /// `exec` and jail id `id`: hard links to `kernel`, `initrd` and
    /// `drives` (the boot files copied where a link cannot cross
    /// filesystems), and the log FIFO, owned by `uid`/`gid`. A drive on
    /// another filesystem is an error: the caller runs it unjailed.
    pub fn prepare(
        vm_dir: &Path,
        exec: &Path,
        id: &str,
        kernel: &Path,
        initrd: Option<&Path>,
        drives: &[Disk],
        owner: (u32, u32),
    ) -> io::Result<Jail> {
        let base = vm_dir.join("jail");
        let exec_name = exec
            .file_name()
            .ok_or_else(|| io::Error::other("the firecracker binary has no file name"))?;
        let root = base.join(exec_name).join(id).join("root");
        match std::fs::remove_dir_all(&base) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(&root)?;
        let inside = |name: &str| (root.join(name), PathBuf::from("/").join(name));
        let (kernel_host, kernel_jail) = inside("vmlinux");
        link_or_copy(kernel, &kernel_host)?;
        let initrd = match initrd {
            Some(initrd) => {
                let (host, jail) = inside("initrd.img");
                link_or_copy(initrd, &host)?;
                Some(jail)
            }
            None => None,
        };
        let mut jailed = Vec::new();
        for (i, drive) in drives.iter().enumerate() {
            let (host, jail) = inside(&format!("disk{i}.ext4"));
            std::fs::hard_link(&drive.path, &host).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot link {} into the jail: {e}", drive.path.display()),
                )
            })?;
            jailed.push(jail);
        }
        let log_fifo = root.join(LOG_FIFO.trim_start_matches('/'));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &log_fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )?;
        rustix::fs::chown(
            &log_fifo,
            Some(rustix::process::Uid::from_raw(owner.0)),
            Some(rustix::process::Gid::from_raw(owner.1)),
        )?;
        Ok(Jail {
            api_socket: root.join(API_SOCKET.trim_start_matches('/')),
            base,
            root,
            kernel: kernel_jail,
            initrd,
            drives: jailed,
            log_fifo,
        })
    }

    /// Points `link` (the VM's `run/vmm.sock`) at the jail's API socket, in
    /// a `run` directory of root's: the jailed VMM cannot change it.
    pub fn link_socket(&self, run: &Path, link: &Path) -> io::Result<()> {
        super::vmm_user::make_own_dir(run, Some((0, 0)))?;
        std::fs::set_permissions(run, std::fs::Permissions::from_mode(0o755))?;
        match std::fs::remove_file(link) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::os::unix::fs::symlink(&self.api_socket, link)
    }

    /// Points `link` (the VM's `run/agent.sock`) at the jail's vsock socket;
    /// `run` is root's already ([`Jail::link_socket`]).
    pub fn link_vsock(&self, link: &Path) -> io::Result<()> {
        match std::fs::remove_file(link) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::os::unix::fs::symlink(self.root.join(VSOCK_SOCKET.trim_start_matches('/')), link)
    }
}

impl Jail {
    /// Puts a snapshot's `state` and `memory` files in the jail for the VMM
    /// (uid and gid `owner`) to load: linked, or copied where the file is
    /// linked elsewhere too (a warm template's memory, which must stay the
    /// daemon's). Returns the paths as the VMM sees them.
    pub fn stage_snapshot(
        &self,
        state: &Path,
        memory: &Path,
        owner: (u32, u32),
    ) -> io::Result<(PathBuf, PathBuf)> {
        use std::os::unix::fs::MetadataExt;
        for (from, inside) in [(state, SNAPSHOT_STATE), (memory, SNAPSHOT_MEMORY)] {
            let to = self.root.join(inside.trim_start_matches('/'));
            if std::fs::metadata(from)?.nlink() > 1 {
                crate::system::fs::clone_file(from, &to).map_err(io::Error::other)?;
            } else {
                link_or_copy(from, &to)?;
            }
            own(&to, owner)?;
        }
        Ok((SNAPSHOT_STATE.into(), SNAPSHOT_MEMORY.into()))
    }
}

/// Makes `path` (no link followed) `owner`'s, mode 0600.
pub fn own(path: &Path, owner: (u32, u32)) -> io::Result<()> {
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::process::Uid::from_raw(owner.0)),
        Some(rustix::process::Gid::from_raw(owner.1)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Firecracker's jailer, where a root daemon can use it: the `jailer`
/// setting (empty turns it off), else `jailer` next to the firecracker
/// binary, else on PATH; only for a static firecracker binary, the only
/// kind that runs in a jail.
pub fn jailer_binary(
    config: &crate::config::Config,
    firecracker: Option<&Path>,
) -> Option<PathBuf> {
    if !rustix::process::geteuid().is_root() || !firecracker.is_some_and(is_static_elf) {
        return None;
    }
    match &config.jailer {
        Some(path) if path.as_os_str().is_empty() => None,
        Some(path) => Some(path.clone()).filter(|p| p.is_file()),
        None => firecracker
            .and_then(|fc| fc.parent())
            .map(|dir| dir.join("jailer"))
            .filter(|p| p.is_file())
            .or_else(|| crate::system::tools::find_program("jailer", None)),
    }
}

/// True when `binary` is a 64-bit ELF with no program interpreter: a
/// static build, the only kind that runs in a jail holding nothing else
/// (a glibc build fails there with "No such file or directory").
pub fn is_static_elf(binary: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    const PT_INTERP: u32 = 3;
    let Ok(mut file) = std::fs::File::open(binary) else {
        return false;
    };
    let mut header = [0u8; 64];
    if file.read_exact(&mut header).is_err() || &header[..4] != b"\x7fELF" || header[4] != 2 {
        return false;
    }
    let phoff = u64::from_le_bytes(header[32..40].try_into().unwrap_or_default());
    let phentsize = u64::from(u16::from_le_bytes([header[54], header[55]]));
    let phnum = u16::from_le_bytes([header[56], header[57]]);
    if phentsize < 4 {
        return false;
    }
    (0..u64::from(phnum)).all(|i| {
        let mut kind = [0u8; 4];
        file.seek(SeekFrom::Start(phoff + i * phentsize)).is_ok()
            && file.read_exact(&mut kind).is_ok()
            && u32::from_le_bytes(kind) != PT_INTERP
    })
}

/// A hard link to `from` at `to`, else (across filesystems) a copy.
fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::hard_link(from, to) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
            std::fs::copy(from, to).map(drop)
        }
        other => other,
    }
}

/// The cgroup v2 limits for a VM of `vcpus` and `memory_mib`, as the
/// jailer's `--cgroup` values: its vCPUs and one more for the VMM's own
/// threads, its memory and 128 MiB for the VMM. Empty where the host has no
/// unified cgroup v2 hierarchy with the cpu and memory controllers.
pub fn cgroup_limits(vcpus: u32, memory_mib: u32) -> Vec<String> {
    let controllers =
        std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    if !(has("cpu") && has("memory")) {
        return Vec::new();
    }
    let period: u64 = 100_000;
    vec![
        format!("cpu.max={} {period}", (u64::from(vcpus) + 1) * period),
        format!("memory.max={}", (u64::from(memory_mib) + 128) << 20),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jail_holds_links_a_fifo_and_nothing_else() {
        let (dir, vm) = crate::testing::temp_path("vm");
        std::fs::create_dir(&vm).unwrap();
        for f in ["vmlinux", "initrd.img", "upper.ext4"] {
            std::fs::write(dir.path().join(f), f).unwrap();
        }
        let me = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        let jail = Jail::prepare(
            &vm,
            Path::new("/usr/local/bin/firecracker"),
            "box",
            &dir.path().join("vmlinux"),
            Some(&dir.path().join("initrd.img")),
            &[Disk::rw(dir.path().join("upper.ext4"))],
            me,
        )
        .unwrap();
        assert_eq!(jail.root, vm.join("jail/firecracker/box/root"));
        assert_eq!(jail.kernel, Path::new("/vmlinux"));
        assert_eq!(jail.drives, [PathBuf::from("/disk0.ext4")]);
        assert_eq!(
            std::fs::read_to_string(jail.root.join("disk0.ext4")).unwrap(),
            "upper.ext4"
        );
        use std::os::unix::fs::FileTypeExt;
        assert!(
            std::fs::metadata(&jail.log_fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
        // Laid out afresh each time.
        std::fs::write(jail.root.join("stale"), "").unwrap();
        let again = Jail::prepare(
            &vm,
            Path::new("/usr/local/bin/firecracker"),
            "box",
            &dir.path().join("vmlinux"),
            None,
            &[],
            me,
        )
        .unwrap();
        assert!(!again.root.join("stale").exists());
        assert!(again.initrd.is_none());
    }

    #[test]
    fn dynamic_binaries_are_told_from_static_ones() {
        // This test binary has an interpreter (a glibc build).
        assert!(!is_static_elf(&std::env::current_exe().unwrap()));
        assert!(!is_static_elf(Path::new("/etc/passwd")));
    }

    #[test]
    fn cgroup_limits_follow_the_vm() {
        let limits = cgroup_limits(2, 512);
        if !limits.is_empty() {
            assert_eq!(limits, ["cpu.max=300000 100000", "memory.max=671088640"]);
        }
    }
}
