//! Native file helpers for disk images: grow, and clone (reflink, else a
//! sparse-preserving copy).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{RenameFlags, SeekFrom};
use rustix::io::Errno;
use thiserror::Error;

/// How [`clone_file`] produced its copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneMethod {
    /// The filesystem shares the extents (FICLONE); instant, no extra space.
    Reflink,
    /// Only the source's data extents were copied; holes stay holes.
    SparseCopy,
    /// Every byte was copied (the filesystem cannot report holes).
    PlainCopy,
}

impl fmt::Display for CloneMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloneMethod::Reflink => "reflink",
            CloneMethod::SparseCopy => "sparse copy",
            CloneMethod::PlainCopy => "plain copy",
        })
    }
}

/// Why a file helper failed.
#[derive(Debug, Error)]
pub enum FsError {
    /// [`grow_file`] was asked to make a file smaller.
    #[error("Refusing to shrink {path} from {current} to {requested} bytes")]
    Shrink {
        /// The file.
        path: PathBuf,
        /// Its size now.
        current: u64,
        /// The smaller size asked for.
        requested: u64,
    },
    /// [`clone_file`] never overwrites its destination.
    #[error("{path} already exists")]
    Exists {
        /// The destination.
        path: PathBuf,
    },
    /// A file operation failed.
    #[error("Cannot {op} {path}")]
    Io {
        /// What was being done, e.g. "open" or "copy data into".
        op: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FsError {
    let path = path.to_path_buf();
    move |source| FsError::Io { op, path, source }
}

/// Grows `path` to `new_len` bytes (the new tail is a hole). Equal size is
/// a no-op; a smaller size is refused.
pub fn grow_file(path: &Path, new_len: u64) -> Result<(), FsError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    let current = file.metadata().map_err(io_err("stat", path))?.len();
    if new_len < current {
        return Err(FsError::Shrink {
            path: path.to_path_buf(),
            current,
            requested: new_len,
        });
    }
    if new_len > current {
        file.set_len(new_len).map_err(io_err("resize", path))?;
        file.sync_all().map_err(io_err("sync", path))?;
    }
    Ok(())
}

/// Copies `src` to the new file `dst`: a reflink where the filesystem
/// supports it, else a sparse copy. `dst` must not exist; the copy is made
/// in a temporary file next to it and renamed into place, so a failure
/// never leaves a partial `dst`.
pub fn clone_file(src: &Path, dst: &Path) -> Result<CloneMethod, FsError> {
    clone_via_temp(src, dst, true)
}

/// Like [`clone_file`] but never reflinks: copies only the data extents of
/// `src`, keeping its holes.
pub fn sparse_copy(src: &Path, dst: &Path) -> Result<CloneMethod, FsError> {
    clone_via_temp(src, dst, false)
}

/// Removes the temporary file on drop unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn clone_via_temp(src: &Path, dst: &Path, try_reflink: bool) -> Result<CloneMethod, FsError> {
    if dst.symlink_metadata().is_ok() {
        return Err(FsError::Exists {
            path: dst.to_path_buf(),
        });
    }
    let name = dst.file_name().ok_or_else(|| FsError::Io {
        op: "clone to",
        path: dst.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "no file name"),
    })?;
    let tmp_path = dst.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));

    let src_file = File::open(src).map_err(io_err("open", src))?;
    let src_meta = src_file.metadata().map_err(io_err("stat", src))?;
    let tmp_file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(src_meta.permissions().mode() & 0o777)
        .open(&tmp_path)
        .map_err(io_err("create", &tmp_path))?;
    let mut tmp = TempFile {
        path: tmp_path,
        keep: false,
    };

    let reflinked = try_reflink && reflink(&src_file, &tmp_file).map_err(io_err("clone", src))?;
    let method = if reflinked {
        CloneMethod::Reflink
    } else {
        copy_sparse(&src_file, &tmp_file, src_meta.len()).map_err(io_err("copy", src))?
    };
    // No fsync: it would triple the time of a clone (the data is still in
    // the page cache), and a disk cloned just before a host crash belongs to
    // a VM that was not running yet; `cp` makes the same choice.
    rename_noreplace(&tmp.path, dst)?;
    tmp.keep = true;
    Ok(method)
}

/// FICLONE `src` into `dst`; `Ok(false)` when the filesystem cannot.
fn reflink(src: &File, dst: &File) -> io::Result<bool> {
    match rustix::fs::ioctl_ficlone(dst, src) {
        Ok(()) => Ok(true),
        Err(Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Renames `from` to `to`, failing with [`FsError::Exists`] rather than
/// replacing a file that appeared meanwhile.
fn rename_noreplace(from: &Path, to: &Path) -> Result<(), FsError> {
    let cwd = rustix::fs::CWD;
    match rustix::fs::renameat_with(cwd, from, cwd, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Err(FsError::Exists {
            path: to.to_path_buf(),
        }),
        // The filesystem cannot do RENAME_NOREPLACE: check, then rename.
        Err(Errno::INVAL | Errno::NOSYS) => {
            if to.symlink_metadata().is_ok() {
                return Err(FsError::Exists {
                    path: to.to_path_buf(),
                });
            }
            std::fs::rename(from, to).map_err(io_err("rename into place", to))
        }
        Err(e) => Err(io_err("rename into place", to)(e.into())),
    }
}

/// Copies the data extents of `src` (found with SEEK_DATA/SEEK_HOLE) into
/// the empty file `dst`, then sets its length to `len`; falls back to
/// copying every byte when the filesystem cannot report holes.
fn copy_sparse(src: &File, dst: &File, len: u64) -> io::Result<CloneMethod> {
    let mut copier = RangeCopier::default();
    let mut pos = 0;
    while pos < len {
        let data = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
            Ok(data) => data,
            // No data after `pos`: the rest is a hole.
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL) if pos == 0 => {
                copier.copy(src, dst, 0, len)?;
                dst.set_len(len)?;
                return Ok(CloneMethod::PlainCopy);
            }
            Err(e) => return Err(e.into()),
        };
        if data >= len {
            break;
        }
        let hole = rustix::fs::seek(src, SeekFrom::Hole(data))?.min(len);
        copier.copy(src, dst, data, hole - data)?;
        pos = hole;
    }
    dst.set_len(len)?;
    Ok(CloneMethod::SparseCopy)
}

/// Copies byte ranges between files at the same offsets, with
/// copy_file_range until the kernel refuses it, then with pread/pwrite.
#[derive(Default)]
struct RangeCopier {
    read_write: bool,
}

impl RangeCopier {
    fn copy(&mut self, src: &File, dst: &File, offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        let mut pos = offset;
        while pos < end && !self.read_write {
            let mut off_in = pos;
            let mut off_out = pos;
            let chunk = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            match rustix::fs::copy_file_range(
                src,
                Some(&mut off_in),
                dst,
                Some(&mut off_out),
                chunk,
            ) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => pos += n as u64,
                Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) => {
                    self.read_write = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if pos == end {
            return Ok(());
        }
        let mut buf = vec![0u8; 1 << 20];
        while pos < end {
            let want = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = src.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            dst.write_all_at(&buf[..n], pos)?;
            pos += n as u64;
        }
        Ok(())
    }
}

/// The last `lines` lines written to the log at `path` after byte `from`
/// (where this run's output began), for error messages and `vm logs`: as
/// [`printable`](super::text::printable) text, since a guest or a VMM
/// wrote it. Reads at most the last 64 KiB; says so when there is nothing
/// or the file cannot be read.
pub fn log_tail(path: &Path, from: u64, lines: usize) -> String {
    const MAX_BYTES: u64 = 64 << 10;
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(io::SeekFrom::Start(from.max(len.saturating_sub(MAX_BYTES))))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(super::text::printable(&bytes))
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text
                .lines()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
                .collect();
            match &all[all.len().saturating_sub(lines)..] {
                [] => "(nothing)".to_string(),
                tail => tail.join("\n"),
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The apparent size of the file at `path` and the space it takes on disk
/// (allocated blocks: holes and shared reflinked extents aside, what `du`
/// shows); zeros when it is absent.
pub fn usage(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or((0, 0), |m| (m.len(), m.blocks() * 512))
}

/// The length of the file at `path`, 0 when it is absent: where the output
/// of a process about to start will begin.
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Gives `path` to this process's user with mode 0644 (never following a
/// link): an image file every VMM reads, whatever uid it runs as.
pub fn make_shared_read_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::process::geteuid()),
        Some(rustix::process::getegid()),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

/// The digest of a regular file's contents: its data regions and where
/// they are, so the holes of a sparse disk image cost nothing. Remembered
/// for as long as the file's identity and times stay the same, so a repeat
/// build does not read a large file again.
pub fn content_digest(path: &Path, meta: &std::fs::Metadata) -> std::io::Result<[u8; 32]> {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Mutex;
    type Identity = (u64, u64, u64, i64, i64, i64, i64);
    static KNOWN: Mutex<Option<HashMap<Identity, [u8; 32]>>> = Mutex::new(None);
    let identity = (
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    );
    let known = |map: &mut Option<HashMap<Identity, [u8; 32]>>| {
        map.get_or_insert_with(HashMap::new).get(&identity).copied()
    };
    if let Some(digest) = known(&mut KNOWN.lock().unwrap_or_else(|p| p.into_inner())) {
        return Ok(digest);
    }
    let mut file = std::fs::File::open(path)?;
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    for (start, end) in data_regions(&file, meta.len())? {
        h.update(start.to_le_bytes());
        h.update(end.to_le_bytes());
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start))?;
        let mut left = end - start;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = std::io::Read::read(&mut file, &mut buf[..want])?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was read",
                ));
            }
            h.update(&buf[..n]);
            left -= n as u64;
        }
    }
    let digest: [u8; 32] = h.finalize().into();
    KNOWN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(identity, digest);
    Ok(digest)
}

/// The `[start, end)` ranges of `file` that hold data (SEEK_DATA and
/// SEEK_HOLE); the whole file where the filesystem cannot say.
fn data_regions(file: &std::fs::File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{SeekFrom, seek};
    let mut regions = Vec::new();
    let mut at = 0;
    while at < len {
        let start = match seek(file, SeekFrom::Data(at)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => {
                return Ok(vec![(0, len)]);
            }
            Err(e) => return Err(e.into()),
        };
        let end = seek(file, SeekFrom::Hole(start))?.min(len);
        if end > start {
            regions.push((start, end));
        }
        at = end.max(start + 1);
    }
    Ok(regions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_cannot_drive_the_terminal() {
        let (_dir, log) = crate::testing::temp_file(
            "console.log",
            b"old line\n\x1b]0;owned\x07boot\r\nok \x1b[31mred\x1b[0m\xff\n\x1b[2J\n",
        );
        assert_eq!(log_tail(&log, 0, 2), "boot\nok red\u{fffd}");
        assert_eq!(log_tail(&log, 9, 10), "boot\nok red\u{fffd}");
    }

    #[test]
    fn range_copier_read_write_path() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"hello, world").unwrap();
        let src = File::open(&a).unwrap();
        let dst = File::create(&b).unwrap();
        let mut copier = RangeCopier { read_write: true };
        copier.copy(&src, &dst, 7, 5).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"\0\0\0\0\0\0\0world");
        // Asking past the end of the source is an error, not a short copy.
        assert!(copier.copy(&src, &dst, 10, 5).is_err());
    }
}
