//! ext4 images through e2fsprogs: create, grow, check, read geometry.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::exec::{Cmd, ExecError};
use super::fs::{FsError, grow_file};

/// Why an ext4 operation failed.
#[derive(Debug, Error)]
pub enum E2fsError {
    /// Running an e2fsprogs tool failed; the message shows its argv and stderr.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Growing the image file failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// `dumpe2fs -h` printed something unexpected.
    #[error("Unexpected dumpe2fs output for {path}: {reason}")]
    Parse {
        /// The image.
        path: PathBuf,
        /// What was missing or malformed.
        reason: String,
    },
}

/// Size of an ext4 filesystem, from its superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Number of blocks (`Block count:`).
    pub block_count: u64,
    /// Bytes per block (`Block size:`).
    pub block_size: u64,
}

impl Geometry {
    /// Filesystem size in bytes.
    pub fn bytes(&self) -> u64 {
        self.block_count.saturating_mul(self.block_size)
    }
}

/// Creates an ext4 filesystem filling the file or device at `path`.
pub async fn mkfs_ext4(path: &Path, label: Option<&str>) -> Result<(), E2fsError> {
    // Lazy inode tables and journal: the file stays sparse (about 1 MiB
    // used of a 2 GiB disk instead of the 64 MiB journal written out); the
    // guest mounts it with `noinit_itable`, so it stays so.
    let mut cmd =
        Cmd::new("mkfs.ext4").args(["-F", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1"]);
    if let Some(label) = label {
        cmd = cmd.arg("-L").arg(label);
    }
    cmd.arg(path).run().await?;
    Ok(())
}

/// Creates a sparse ext4 image of `bytes` at `path` holding the tree at
/// `tree` (`mkfs.ext4 -d`: contents, modes, hard links and symlinks as
/// they are on the host), with room for `inodes` files.
pub async fn mkfs_ext4_from(
    path: &Path,
    tree: &Path,
    bytes: u64,
    inodes: u64,
) -> Result<(), E2fsError> {
    let io = |op| {
        move |source| FsError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let file = std::fs::File::create(path).map_err(io("create"))?;
    file.set_len(bytes).map_err(io("size"))?;
    Cmd::new("mkfs.ext4")
        .args(["-F", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg("-N")
        .arg(inodes.to_string())
        .arg("-d")
        .arg(tree)
        .arg(path)
        .run()
        .await?;
    Ok(())
}

/// Grows the ext4 image file at `path` to `new_len` bytes: extends the
/// file, checks the filesystem (`e2fsck -fp`, required by resize2fs) and
/// grows it to fill the file. Refuses to shrink.
pub async fn grow_ext4(path: &Path, new_len: u64) -> Result<(), E2fsError> {
    grow_file(path, new_len)?;
    // e2fsck exits 1 when it corrected errors, which is still a usable filesystem.
    Cmd::new("e2fsck")
        .arg("-fp")
        .arg(path)
        .ok_codes(&[0, 1])
        .run()
        .await?;
    Cmd::new("resize2fs").arg(path).run().await?;
    Ok(())
}

/// Whether the filesystem at `path` is clean, checked read-only (`e2fsck -fn`).
pub async fn fsck_clean(path: &Path) -> Result<bool, E2fsError> {
    // 4 means errors were found and left uncorrected; 8 and up, that the
    // check itself failed.
    let out = Cmd::new("e2fsck")
        .arg("-fn")
        .arg(path)
        .ok_codes(&[0, 4])
        .run()
        .await?;
    Ok(out.code == 0)
}

/// Whether the file at `path` holds an ext2/3/4 superblock: its magic
/// number, 0xEF53 at byte 1080. Read natively, so that a file that is
/// something else entirely is told apart from a damaged filesystem before
/// e2fsck is asked about it.
pub fn has_ext_magic(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(EXT_MAGIC_OFFSET))?;
    let mut magic = [0u8; 2];
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(magic == EXT_MAGIC.to_le_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Where the superblock's magic number is: 1024 bytes in, then 56.
const EXT_MAGIC_OFFSET: u64 = 1024 + 56;
const EXT_MAGIC: u16 = 0xEF53;

/// Reads block count and block size from the superblock (`dumpe2fs -h`).
pub async fn geometry(path: &Path) -> Result<Geometry, E2fsError> {
    let out = Cmd::new("dumpe2fs").arg("-h").arg(path).run().await?;
    parse_dumpe2fs_header(&out.stdout).map_err(|reason| E2fsError::Parse {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses the `Block count:` and `Block size:` lines of `dumpe2fs -h`.
pub fn parse_dumpe2fs_header(text: &str) -> Result<Geometry, String> {
    let value = |key: &str| -> Result<u64, String> {
        let raw = text
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .ok_or_else(|| format!("no {key:?} line"))?
            .trim();
        raw.parse()
            .map_err(|_| format!("{key:?} is not a number: {raw:?}"))
    };
    Ok(Geometry {
        block_count: value("Block count")?,
        block_size: value("Block size")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_magic_is_read_from_the_superblock() {
        let (dir, path) = crate::testing::temp_file("img", vec![0u8; 4096]);
        assert!(!has_ext_magic(&path).unwrap());
        let mut ext = vec![0u8; 4096];
        ext[1080..1082].copy_from_slice(&[0x53, 0xef]);
        std::fs::write(&path, ext).unwrap();
        assert!(has_ext_magic(&path).unwrap());
        std::fs::write(&path, b"short").unwrap();
        assert!(!has_ext_magic(&path).unwrap());
        assert!(has_ext_magic(&dir.path().join("absent")).is_err());
    }

    const HEADER: &str = "dumpe2fs 1.47.0 (5-Feb-2023)
Filesystem volume name:   work
Inode count:              16384
Block count:              65536
Reserved block count:     3276
Free blocks:              58489
First block:              0
Block size:               1024
Fragment size:            1024
";

    #[test]
    fn parses_geometry() {
        let g = parse_dumpe2fs_header(HEADER).unwrap();
        assert_eq!(
            g,
            Geometry {
                block_count: 65536,
                block_size: 1024
            }
        );
        assert_eq!(g.bytes(), 64 << 20);
    }

    #[test]
    fn missing_or_bad_fields_are_errors() {
        assert!(parse_dumpe2fs_header("").is_err());
        let no_size = HEADER.replace("Block size:", "Blocksize:");
        assert!(
            parse_dumpe2fs_header(&no_size)
                .unwrap_err()
                .contains("Block size")
        );
        let bad = HEADER.replace("65536", "lots");
        assert!(parse_dumpe2fs_header(&bad).is_err());
    }
}
