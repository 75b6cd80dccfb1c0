//! A suspended VM's snapshot on disk: the VMM's memory and device stream
//! and a description of what it was taken on, in one directory that a
//! rename makes whole (`snapshot.tmp/` while it is written, then
//! `snapshot/`). Both files are 0600: the memory holds the guest's secrets.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::VmmKind;

/// The memory file's name in a snapshot directory.
const MEMORY: &str = "memory";
/// The description's name in a snapshot directory.
const META: &str = "snapshot.json";
/// The description's format; another is refused, not guessed at.
const FORMAT: u32 = 1;

/// Where a VM's snapshot lives.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    /// The whole snapshot; present only when complete.
    pub dir: PathBuf,
    /// Where one is written before the rename.
    pub partial: PathBuf,
}

impl SnapshotDir {
    pub fn new(vm_dir: &Path) -> SnapshotDir {
        SnapshotDir {
            dir: vm_dir.join("snapshot"),
            partial: vm_dir.join("snapshot.tmp"),
        }
    }

    pub fn exists(&self) -> bool {
        self.dir.join(META).is_file()
    }

    pub fn memory(&self) -> PathBuf {
        self.dir.join(MEMORY)
    }

    /// Starts a new snapshot: a fresh `snapshot.tmp/` (0700) and its memory
    /// file (0600), open for writing.
    pub fn begin(&self) -> std::io::Result<std::fs::File> {
        remove_dir(&self.partial)?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.partial)?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.partial.join(MEMORY))
    }

    /// A Firecracker snapshot's device state, beside its memory (QEMU's
    /// memory file holds both).
    pub fn state(&self) -> PathBuf {
        self.dir.join(crate::vmm::firecracker::snapshot::STATE_FILE)
    }

    /// Where a Firecracker snapshot's device state is written before the rename.
    pub fn partial_state(&self) -> PathBuf {
        self.partial
            .join(crate::vmm::firecracker::snapshot::STATE_FILE)
    }

    /// Where [`SnapshotDir::begin`] puts the memory.
    pub fn partial_memory(&self) -> PathBuf {
        self.partial.join(MEMORY)
    }

    /// Makes the snapshot begun with [`SnapshotDir::begin`] whole: its
    /// memory synced, its description written and synced, then one rename.
    pub fn commit(&self, memory: &std::fs::File, meta: &SnapshotMeta) -> std::io::Result<()> {
        memory.sync_all()?;
        self.commit_meta(meta)
    }

    /// [`SnapshotDir::commit`] for memory already written and synced.
    pub fn commit_meta(&self, meta: &SnapshotMeta) -> std::io::Result<()> {
        write_meta(&self.partial.join(META), meta)?;
        std::fs::File::open(&self.partial)?.sync_all()?;
        remove_dir(&self.dir)?;
        std::fs::rename(&self.partial, &self.dir)?;
        if let Some(parent) = self.dir.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    }

    /// Replaces a whole snapshot's description (write, then rename).
    pub fn rewrite_meta(&self, meta: &SnapshotMeta) -> std::io::Result<()> {
        let staged = self.dir.join(format!("{META}.new"));
        let _ = std::fs::remove_file(&staged);
        write_meta(&staged, meta)?;
        std::fs::rename(&staged, self.dir.join(META))
    }

    /// Removes the snapshot and any partial one.
    pub fn discard(&self) -> std::io::Result<()> {
        remove_dir(&self.partial)?;
        remove_dir(&self.dir)
    }

    /// Removes a partial snapshot (one a failed or cut-off suspend left).
    pub fn discard_partial(&self) -> std::io::Result<()> {
        remove_dir(&self.partial)
    }

    /// The snapshot's description.
    pub fn read_meta(&self) -> Result<SnapshotMeta, String> {
        let bytes = std::fs::read(self.dir.join(META))
            .map_err(|e| format!("cannot read {}: {e}", self.dir.join(META).display()))?;
        let meta: SnapshotMeta = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is damaged: {e}", self.dir.join(META).display()))?;
        if meta.format != FORMAT {
            return Err(format!(
                "it is of format {}; this banger reads format {FORMAT}",
                meta.format
            ));
        }
        Ok(meta)
    }
}

/// Writes `meta` into new file `path` (0600) and syncs it.
fn write_meta(path: &Path, meta: &SnapshotMeta) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?)?;
    file.sync_all()
}

fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What a snapshot was taken on: a restore needs all of it unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub format: u32,
    pub vmm: VmmKind,
    /// The VMM's version, as it reported it.
    pub vmm_version: String,
    /// How the VMM ran the guest (`kvm` or `tcg`): the CPU state of one
    /// does not load into the other.
    pub accel: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// The contents' digests of the kernel and initrd the guest booted.
    pub kernel_digest: String,
    pub initrd_digest: Option<String>,
    /// The memory file's length, so a truncated one is caught before the
    /// VMM reads it.
    pub memory_bytes: u64,
    /// The VM's writable disks as the snapshot left them.
    pub disks: Vec<DiskMark>,
    /// Unix seconds.
    pub taken_at: i64,
    /// The guest in it has another VM's identity (it is a template's, or a
    /// fork's source's): a restore gives it its own first.
    #[serde(default)]
    pub foreign_identity: bool,
}

/// A disk's size and modification time: a disk written after the snapshot
/// no longer matches the memory that had it mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskMark {
    pub path: PathBuf,
    pub len: u64,
    pub mtime_ns: i128,
}

impl DiskMark {
    pub fn of(path: &Path) -> std::io::Result<DiskMark> {
        let meta = std::fs::metadata(path)?;
        Ok(DiskMark {
            path: path.to_path_buf(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        })
    }
}

/// The digest of a file's contents, as hex.
pub fn file_digest_hex(path: &Path) -> std::io::Result<String> {
    let digest = crate::system::fs::content_digest(path, &std::fs::metadata(path)?)?;
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

impl SnapshotMeta {
    /// Why `self` (the snapshot) cannot be restored into `now` (the VM and
    /// host as they are), naming the first thing that differs; `None`
    /// when it fits. The VMM version is checked once the VMM runs.
    pub fn mismatch(&self, now: &SnapshotMeta) -> Option<String> {
        let differs = |what: &str, then: &dyn std::fmt::Display, now: &dyn std::fmt::Display| {
            Some(format!(
                "the snapshot was taken with {what} {then}, and it is now {now}"
            ))
        };
        if self.vmm != now.vmm {
            return differs("the VMM", &self.vmm, &now.vmm);
        }
        if self.accel != now.accel {
            return differs("acceleration", &self.accel, &now.accel);
        }
        if self.vcpus != now.vcpus {
            return differs("vCPUs:", &self.vcpus, &now.vcpus);
        }
        if self.memory_mib != now.memory_mib {
            return differs("memory (MiB):", &self.memory_mib, &now.memory_mib);
        }
        if self.kernel_digest != now.kernel_digest {
            return Some(
                "the snapshot was taken with another kernel than the runtime bundle's now".into(),
            );
        }
        if self.initrd_digest != now.initrd_digest {
            return Some(
                "the snapshot was taken with another initrd than the runtime bundle's now".into(),
            );
        }
        if self.memory_bytes != now.memory_bytes {
            return Some(format!(
                "its memory file is {} bytes, not the {} written: it is damaged",
                now.memory_bytes, self.memory_bytes
            ));
        }
        for (then, now) in self.disks.iter().zip(&now.disks) {
            if then != now {
                return Some(format!(
                    "disk {} changed after the snapshot was taken",
                    then.path.display()
                ));
            }
        }
        if self.disks.len() != now.disks.len() {
            return differs("disks:", &self.disks.len(), &now.disks.len());
        }
        None
    }

    /// A description with this banger's format and the time now.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vmm: VmmKind,
        vmm_version: String,
        accel: &str,
        vcpus: u32,
        memory_mib: u32,
        kernel: &Path,
        initrd: Option<&Path>,
        memory_bytes: u64,
        disks: &[&Path],
    ) -> std::io::Result<SnapshotMeta> {
        Ok(SnapshotMeta {
            format: FORMAT,
            vmm,
            vmm_version,
            accel: accel.to_string(),
            vcpus,
            memory_mib,
            kernel_digest: file_digest_hex(kernel)?,
            initrd_digest: initrd.map(file_digest_hex).transpose()?,
            memory_bytes,
            disks: disks
                .iter()
                .map(|d| DiskMark::of(d))
                .collect::<std::io::Result<_>>()?,
            taken_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            foreign_identity: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(dir: &Path) -> SnapshotMeta {
        let kernel = dir.join("vmlinux");
        let disk = dir.join("upper.ext4");
        std::fs::write(&kernel, b"kernel").unwrap();
        std::fs::write(&disk, b"disk").unwrap();
        SnapshotMeta::new(
            VmmKind::Qemu,
            "7.2.22".into(),
            "tcg",
            2,
            1024,
            &kernel,
            None,
            100,
            &[&disk],
        )
        .unwrap()
    }

    #[test]
    fn a_snapshot_is_whole_or_absent_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let snap = SnapshotDir::new(dir.path());
        let mut memory = snap.begin().unwrap();
        memory.write_all(b"memory").unwrap();
        assert!(!snap.exists(), "a partial snapshot is not one");
        let meta = meta(dir.path());
        snap.commit(&memory, &meta).unwrap();
        assert!(snap.exists() && !snap.partial.exists());
        assert_eq!(snap.read_meta().unwrap(), meta);
        let mode = std::fs::metadata(snap.memory()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        snap.discard().unwrap();
        assert!(!snap.dir.exists());
    }

    #[test]
    fn a_mismatch_names_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let then = meta(dir.path());
        assert_eq!(then.mismatch(&then), None);
        let mut now = then.clone();
        now.vcpus = 1;
        let why = then.mismatch(&now).unwrap();
        assert!(why.contains("vCPUs: 2") && why.contains("now 1"), "{why}");
        let mut now = then.clone();
        now.memory_bytes = 10;
        assert!(then.mismatch(&now).unwrap().contains("damaged"));
        let mut now = then.clone();
        now.disks[0].len += 1;
        assert!(then.mismatch(&now).unwrap().contains("upper.ext4 changed"));
        let mut now = then.clone();
        now.kernel_digest = "0".into();
        assert!(then.mismatch(&now).unwrap().contains("another kernel"));
    }
}
