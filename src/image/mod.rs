//! The image registry: root filesystems VMs are cloned from. Each lives in
//! `$XDG_DATA_HOME/banger/images/<name>/` as `rootfs.ext4`, `image.json`
//! and, when it was built with packages, the manifest `rootfs.ext4.packages`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::bundle::Bundle;
use crate::store::{ImageRecord, NewImage, SharedStore, StoreError};
use crate::system::{e2fs, fs};

/// The image every VM gets unless told otherwise: the bundle's rootfs.
pub const DEFAULT_IMAGE: &str = "default";

/// Errors managing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image name: {0}")]
    BadName(String),
    #[error("{path} does not exist")]
    NoSource { path: PathBuf },
    #[error(
        "{path} is not a clean ext4 filesystem (e2fsck -n found problems); repair it with `e2fsck -f {path}` first"
    )]
    NotExt4 { path: PathBuf },
    #[error("cannot check {path}")]
    Check {
        path: PathBuf,
        #[source]
        source: e2fs::E2fsError,
    },
    #[error("cannot copy {path} into the image store")]
    Copy {
        path: PathBuf,
        #[source]
        source: fs::FsError,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `image.json`: where an image came from, for people reading the directory.
#[derive(Debug, Serialize)]
struct ImageInfo<'a> {
    name: &'a str,
    source: &'a Path,
    size_bytes: u64,
}

/// The image store on disk.
#[derive(Debug, Clone)]
pub struct Images {
    root: PathBuf,
    /// Serializes imports, so two creates asking for `default` at once
    /// register it once.
    import_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Images {
    /// Images under `data_dir/images`.
    pub fn new(data_dir: &Path) -> Images {
        Images {
            import_lock: Default::default(),
            root: data_dir.join("images"),
        }
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The package manifest of image `name`, if it has one.
    pub fn packages(&self, name: &str) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(self.dir(name).join("rootfs.ext4.packages")).ok()?;
        Some(crate::system::lines::normalize_lines(&text))
    }

    /// Registers the ext4 image at `source` as `name`: checked with
    /// `e2fsck -n`, cloned into the store, recorded. Nothing is left behind
    /// when any step fails.
    pub async fn import(
        &self,
        store: &SharedStore,
        name: &str,
        source: &Path,
    ) -> Result<ImageRecord, ImageError> {
        let _held = self.import_lock.lock().await;
        self.import_locked(store, name, source).await
    }

    async fn import_locked(
        &self,
        store: &SharedStore,
        name: &str,
        source: &Path,
    ) -> Result<ImageRecord, ImageError> {
        crate::net::check_dns_label(name).map_err(ImageError::BadName)?;
        if !source.is_file() {
            return Err(ImageError::NoSource {
                path: source.to_path_buf(),
            });
        }
        // Refuse a taken name before copying a gigabyte.
        if store.lock().get_image(name).is_ok() {
            return Err(StoreError::Conflict {
                what: crate::store::Taken::ImageName,
                value: name.to_string(),
            }
            .into());
        }
        let clean = e2fs::fsck_clean(source)
            .await
            .map_err(|source_err| ImageError::Check {
                path: source.to_path_buf(),
                source: source_err,
            })?;
        if !clean {
            return Err(ImageError::NotExt4 {
                path: source.to_path_buf(),
            });
        }
        let dir = self.dir(name);
        let result = self.copy_in(store, name, source, &dir).await;
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    async fn copy_in(
        &self,
        store: &SharedStore,
        name: &str,
        source: &Path,
        dir: &Path,
    ) -> Result<ImageRecord, ImageError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ImageError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(write_err(dir))?;
        let rootfs = dir.join("rootfs.ext4");
        let (src, dst) = (source.to_path_buf(), rootfs.clone());
        tokio::task::spawn_blocking(move || fs::clone_file(&src, &dst))
            .await
            .expect("clone task panicked")
            .map_err(|e| ImageError::Copy {
                path: source.to_path_buf(),
                source: e,
            })?;
        let size = std::fs::metadata(&rootfs)
            .map_err(write_err(&rootfs))?
            .len();
        let info = ImageInfo {
            name,
            source,
            size_bytes: size,
        };
        let info_path = dir.join("image.json");
        let json = serde_json::to_vec_pretty(&info).expect("image info serializes");
        std::fs::write(&info_path, json).map_err(write_err(&info_path))?;
        if let Ok(manifest) = std::fs::read(source.with_extension("ext4.packages")) {
            let path = dir.join("rootfs.ext4.packages");
            std::fs::write(&path, manifest).map_err(write_err(&path))?;
        }
        let record = store.lock().insert_image(&NewImage {
            name: name.to_string(),
            rootfs_path: rootfs,
            kernel_path: None,
            size_bytes: Some(size),
        })?;
        tracing::info!(image = name, source = %source.display(), "imported image");
        Ok(record)
    }

    /// The image `name`; `default` is registered from the bundle the first
    /// time it is asked for.
    pub async fn get_or_default(
        &self,
        store: &SharedStore,
        name: &str,
        bundle: Option<&Bundle>,
    ) -> Result<Option<ImageRecord>, ImageError> {
        let lookup = || match store.lock().get_image(name) {
            Ok(image) => Ok(Some(image)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        };
        if let Some(image) = lookup()? {
            return Ok(Some(image));
        }
        let (DEFAULT_IMAGE, Some(bundle)) = (name, bundle) else {
            return Ok(None);
        };
        let _held = self.import_lock.lock().await;
        // Another create may have registered it while this one waited.
        match lookup()? {
            Some(image) => Ok(Some(image)),
            None => self
                .import_locked(store, DEFAULT_IMAGE, &bundle.rootfs)
                .await
                .map(Some),
        }
    }

    /// Forgets image `name` and removes its files; refused while a VM uses it.
    pub fn delete(&self, store: &SharedStore, name: &str) -> Result<ImageRecord, ImageError> {
        let record = store.lock().delete_image(name)?;
        let dir = self.dir(name);
        // Only remove what the store holds; an image registered elsewhere
        // by path is not ours to delete.
        if record.rootfs_path.starts_with(&dir) {
            std::fs::remove_dir_all(&dir)
                .map_err(|source| ImageError::Write { path: dir, source })?;
        }
        tracing::info!(image = name, "deleted image");
        Ok(record)
    }
}
