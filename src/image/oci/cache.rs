//! Blobs by digest under `$XDG_CACHE_HOME/banger/oci/blobs/sha256/`: a
//! blob is written under a temporary name while its digest is computed and
//! renamed into place only when the digest and size are what the manifest
//! said, so the cache never holds a wrong blob under a right name.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest;

use super::OciError;
use super::manifest::{Descriptor, digest_hex, hex};

#[derive(Debug, Clone)]
pub struct BlobCache {
    dir: PathBuf,
}

impl BlobCache {
    pub fn new(cache_dir: &Path) -> BlobCache {
        BlobCache {
            dir: cache_dir.join("oci").join("blobs").join("sha256"),
        }
    }

    /// Removes the partial blobs a daemon that died mid-pull left behind.
    pub fn sweep(&self) {
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(".part") {
                tracing::info!(file = %entry.path().display(), "removing a partial blob");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Where blob `digest` lives (whether or not it is there).
    pub fn path(&self, digest: &str) -> Result<PathBuf, OciError> {
        let hex = digest_hex(digest).ok_or_else(|| OciError::BadDigest {
            digest: digest.to_string(),
        })?;
        Ok(self.dir.join(hex))
    }

    /// The cached blob for `blob`, if there is one of the right size.
    pub fn get(&self, blob: &Descriptor) -> Result<Option<PathBuf>, OciError> {
        let path = self.path(&blob.digest)?;
        Ok(match std::fs::metadata(&path) {
            Ok(meta) if meta.len() as i64 == blob.size => Some(path),
            _ => None,
        })
    }

    /// A writer for `blob`: [`BlobWriter::commit`] checks it and puts it
    /// in place.
    pub fn writer(&self, blob: &Descriptor) -> Result<BlobWriter, OciError> {
        let path = self.path(&blob.digest)?;
        std::fs::create_dir_all(&self.dir).map_err(OciError::cache(&self.dir))?;
        set_private(&self.dir);
        let tmp = tempfile_in(&self.dir)?;
        let file = std::fs::File::create(&tmp.0).map_err(OciError::cache(&tmp.0))?;
        Ok(BlobWriter {
            file,
            tmp,
            path,
            expected: blob.clone(),
            hasher: sha2::Sha256::new(),
            written: 0,
        })
    }

    /// Copies `input` into the cache as `blob` (checked).
    pub fn put(&self, blob: &Descriptor, mut input: impl Read) -> Result<PathBuf, OciError> {
        let mut writer = self.writer(blob)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = input.read(&mut buf).map_err(OciError::read("the blob"))?;
            if n == 0 {
                break;
            }
            writer.write(&buf[..n])?;
        }
        writer.commit()
    }
}

/// The cache directory holds only what this user pulled; others need not read it.
fn set_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for d in [
        dir,
        dir.parent().unwrap_or(dir),
        dir.parent().and_then(Path::parent).unwrap_or(dir),
    ] {
        let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
    }
}

/// A blob on its way into the cache; removed unless committed.
pub struct BlobWriter {
    file: std::fs::File,
    tmp: TempName,
    path: PathBuf,
    expected: Descriptor,
    hasher: sha2::Sha256,
    written: u64,
}

impl BlobWriter {
    /// Appends `bytes`; more than the manifest's size is refused at once.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), OciError> {
        self.written += bytes.len() as u64;
        if self.written as i64 > self.expected.size {
            return Err(OciError::WrongBlob {
                digest: self.expected.digest.clone(),
                why: format!(
                    "it is larger than the {} bytes its manifest says",
                    self.expected.size
                ),
            });
        }
        self.hasher.update(bytes);
        self.file
            .write_all(bytes)
            .map_err(OciError::cache(&self.tmp.0))
    }

    /// Checks size and digest and renames the blob into place.
    pub fn commit(mut self) -> Result<PathBuf, OciError> {
        let actual = format!(
            "sha256:{}",
            hex(&std::mem::take(&mut self.hasher).finalize())
        );
        if actual != self.expected.digest {
            return Err(OciError::WrongBlob {
                digest: self.expected.digest.clone(),
                why: format!("its content has digest {actual}"),
            });
        }
        if self.written as i64 != self.expected.size {
            return Err(OciError::WrongBlob {
                digest: self.expected.digest.clone(),
                why: format!(
                    "it is {} bytes, not the {} its manifest says",
                    self.written, self.expected.size
                ),
            });
        }
        self.file.sync_all().map_err(OciError::cache(&self.tmp.0))?;
        std::fs::rename(&self.tmp.0, &self.path).map_err(OciError::cache(&self.path))?;
        Ok(self.path.clone())
    }
}

impl BlobCache {
    /// Copies `input` into the cache under the digest of its content;
    /// returns that digest, the size and the path.
    pub fn put_any(&self, mut input: impl Read) -> Result<(String, u64, PathBuf), OciError> {
        std::fs::create_dir_all(&self.dir).map_err(OciError::cache(&self.dir))?;
        set_private(&self.dir);
        let tmp = tempfile_in(&self.dir)?;
        let mut file = std::fs::File::create(&tmp.0).map_err(OciError::cache(&tmp.0))?;
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = input
                .read(&mut buf)
                .map_err(OciError::read("the image file"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(OciError::cache(&tmp.0))?;
            size += n as u64;
        }
        let digest = format!("sha256:{}", hex(&hasher.finalize()));
        let path = self.path(&digest)?;
        std::fs::rename(&tmp.0, &path).map_err(OciError::cache(&path))?;
        Ok((digest, size, path))
    }
}

/// A temporary file name in `dir`, removed on drop if still there.
struct TempName(PathBuf);

impl Drop for TempName {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tempfile_in(dir: &Path) -> Result<TempName, OciError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(TempName(
        dir.join(format!(".{}.{n}.part", std::process::id())),
    ))
}
