//! The image registry: root filesystems VMs are made from. Registered
//! images are immutable. Each version of an image lives in a directory of
//! its own, `$XDG_DATA_HOME/banger/images/<name>/<version>/`, holding
//! `rootfs.ext4`, `image.json` and, when known, the package manifest
//! `rootfs.ext4.packages`. A new version is staged in a `.tmp-*` directory,
//! renamed into place and then recorded in one store transaction: the
//! store is the only truth about which version is current, and whatever a
//! crash leaves outside it is swept away when the daemon starts.

pub mod oci;
pub mod packages;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;
use crate::model::VmRole;
use crate::rpc::api::ImageDetails;
use crate::store::{ImageRecord, NewImage, SharedStore, StoreError};
use crate::system::{e2fs, fs};

/// The image every VM gets unless told otherwise: the bundle's rootfs.
pub const DEFAULT_IMAGE: &str = "default";

/// The root filesystem's file name in a version directory.
pub const ROOTFS: &str = "rootfs.ext4";
/// The package manifest next to it: one `name version` per line, sorted.
pub const PACKAGES: &str = "rootfs.ext4.packages";
/// What banger knows about how the image was made.
pub const INFO: &str = "image.json";

/// Errors managing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    BadName(#[from] crate::rpc::NameError),
    #[error("{path} does not exist")]
    NoSource { path: PathBuf },
    #[error(
        "{path} is not a clean ext4 filesystem (e2fsck -n found problems); repair it with `e2fsck -f {path}` first"
    )]
    NotExt4 { path: PathBuf },
    #[error("{path} is not an ext4 filesystem image (it has no ext2/3/4 superblock)")]
    NotExtFs { path: PathBuf },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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

impl ImageError {
    /// Image name `name` is already registered.
    pub fn taken(name: &str) -> ImageError {
        ImageError::Store(StoreError::Conflict {
            what: crate::store::Taken::ImageName,
            value: name.to_string(),
        })
    }
}

/// `image.json`: where an image came from and how it was made.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageInfo {
    pub name: String,
    /// The image it was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The file it was imported from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    /// Packages asked for, over the whole chain of builds that made it.
    #[serde(default)]
    pub packages: Vec<String>,
    /// The normalized build spec (what `image build` was told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
    /// The kernel whose modules were installed (`--modules`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    pub size_bytes: u64,
    /// The digest of the build's inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_key: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// How long the build took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_ms: Option<u64>,
    /// The OCI image it was pulled or imported from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<oci::OciOrigin>,
}

/// A new version of an image being put together; removed on drop unless
/// it was registered.
#[derive(Debug)]
pub struct Staged {
    pub name: String,
    /// Where the files go until they are registered.
    pub dir: PathBuf,
    /// Where they will live.
    final_dir: PathBuf,
    registered: bool,
}

impl Staged {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join(ROOTFS)
    }

    pub fn packages(&self) -> PathBuf {
        self.dir.join(PACKAGES)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.registered
            && let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove a staged image");
        }
    }
}

/// The image store on disk.
#[derive(Clone)]
pub struct Images {
    root: PathBuf,
    /// One lock per image name, held by whatever changes that image (an
    /// import, a build, a delete), so two never interleave.
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// The registry's records.
    store: SharedStore,
}

impl Images {
    /// Images under `data_dir/images`.
    pub fn new(data_dir: &Path, store: SharedStore) -> Images {
        Images {
            root: data_dir.join("images"),
            locks: Default::default(),
            store,
        }
    }

    /// The image named `name`.
    pub fn get(&self, name: &str) -> Result<ImageRecord, StoreError> {
        self.store.lock().get_image(name)
    }

    /// The image built from inputs with digest `key`, if any.
    pub fn by_build_key(&self, key: &str) -> Result<Option<ImageRecord>, StoreError> {
        self.store.lock().image_by_build_key(key)
    }

    /// The directory holding every version of image `name`.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The lock serializing changes to image `name`.
    pub fn lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Forget the locks nobody holds or waits for (only this map has
        // them), so asking about many names does not grow the map forever.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(name.to_string()).or_default().clone()
    }

    /// The package manifest of `image`, if it has one.
    pub fn packages(&self, image: &ImageRecord) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(sidecar(&image.rootfs_path, PACKAGES)).ok()?;
        Some(crate::system::text::normalize_lines(&text))
    }

    /// What `image.json` says about `image`, if it can be read.
    pub fn info(&self, image: &ImageRecord) -> Option<ImageInfo> {
        let text = std::fs::read(sidecar(&image.rootfs_path, INFO)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Everything `image show` says about `image`.
    pub fn details(&self, image: ImageRecord) -> Result<ImageDetails, StoreError> {
        let used_by = self
            .store
            .lock()
            .list_vms()?
            .into_iter()
            .filter(|vm| vm.role == VmRole::Vm && vm.image.as_deref() == Some(&image.name))
            .map(|vm| vm.name)
            .collect();
        let info = self.info(&image).unwrap_or_default();
        Ok(ImageDetails {
            packages: self.packages(&image),
            base: info.base,
            requested_packages: info.packages,
            kernel_version: info.kernel_version,
            build_key: image.build_key,
            name: image.name,
            rootfs: image.rootfs_path,
            size_bytes: image.size_bytes,
            created_at: image.created_at,
            used_by,
            templates: Vec::new(),
            oci_reference: info.oci.as_ref().map(|o| o.reference.clone()),
            oci_digest: info.oci.map(|o| o.digest),
        })
    }

    /// A fresh staging directory for a new version of image `name`.
    pub fn stage(&self, name: &str) -> Result<Staged, ImageError> {
        crate::rpc::check_image_name(name)?;
        let version = new_version();
        let dir = self.dir(name).join(format!(".tmp-{version}"));
        std::fs::create_dir_all(&dir).map_err(write_err(&dir))?;
        Ok(Staged {
            name: name.to_string(),
            final_dir: self.dir(name).join(version),
            dir,
            registered: false,
        })
    }

    /// Makes `staged` the current version of its image: `image.json` is
    /// written, the directory renamed into place and the store updated in
    /// one transaction. With `replace`, an existing image of that name is
    /// pointed at the new version; its old files are removed once no VM
    /// runs on them (a layered VM's root is the image file itself).
    pub fn register(
        &self,
        mut staged: Staged,
        info: &ImageInfo,
        replace: bool,
    ) -> Result<ImageRecord, ImageError> {
        // Every VM of the image reads it, whatever uid its VMM runs as (a
        // build VM's VMM may have owned it): the daemon's, read-only to all.
        let rootfs = staged.dir.join(ROOTFS);
        if rootfs.exists() {
            crate::system::fs::make_shared_read_only(&rootfs).map_err(write_err(&rootfs))?;
        }
        let info_path = staged.dir.join(INFO);
        let json = serde_json::to_vec_pretty(info).expect("image info serializes");
        std::fs::write(&info_path, json).map_err(write_err(&info_path))?;
        std::fs::rename(&staged.dir, &staged.final_dir).map_err(write_err(&staged.final_dir))?;
        // From here on the files are where the store will point; if the
        // transaction fails, move them back so the guard removes them.
        let new = NewImage {
            name: staged.name.clone(),
            rootfs_path: staged.final_dir.join(ROOTFS),
            kernel_path: None,
            size_bytes: Some(info.size_bytes),
            build_key: info.build_key.clone(),
        };
        let exists = self.store.lock().get_image(&staged.name).is_ok();
        let recorded = if exists && replace {
            self.store.lock().replace_image(&new).map(Some)
        } else {
            self.store.lock().insert_image(&new).map(|_| None)
        };
        let old = match recorded {
            Ok(old) => old,
            Err(e) => {
                let _ = std::fs::rename(&staged.final_dir, &staged.dir);
                return Err(e.into());
            }
        };
        staged.registered = true;
        if let Some(old) = old {
            // Layered VMs run on the old file: it stays until the last goes.
            self.release(&old.rootfs_path);
        }
        let record = self.store.lock().get_image(&staged.name)?;
        tracing::info!(image = %record.name, rootfs = %record.rootfs_path.display(), "registered image");
        Ok(record)
    }

    /// Registers the ext4 image at `source` as `name`: checked with
    /// `e2fsck -n`, cloned into the store with its `.packages` manifest when
    /// it has one, recorded. Nothing is left behind when any step fails.
    pub async fn import(&self, name: &str, source: &Path) -> Result<ImageRecord, ImageError> {
        crate::rpc::check_image_name(name)?;
        let lock = self.lock(name);
        let _held = lock.lock().await;
        self.import_locked(name, source).await
    }

    async fn import_locked(&self, name: &str, source: &Path) -> Result<ImageRecord, ImageError> {
        if !source.is_file() {
            return Err(ImageError::NoSource {
                path: source.to_path_buf(),
            });
        }
        // Refuse a taken name before copying a gigabyte.
        if self.store.lock().get_image(name).is_ok() {
            return Err(ImageError::taken(name));
        }
        let path = || source.to_path_buf();
        let read = |e| ImageError::Read {
            path: path(),
            source: e,
        };
        if !e2fs::has_ext_magic(source).map_err(read)? {
            return Err(ImageError::NotExtFs { path: path() });
        }
        let check = |e| ImageError::Check {
            path: path(),
            source: e,
        };
        if !e2fs::fsck_clean(source).await.map_err(check)? {
            return Err(ImageError::NotExt4 { path: path() });
        }
        let staged = self.stage(name)?;
        let size = copy_rootfs(source, &staged.rootfs()).await?;
        if let Ok(manifest) = std::fs::read(sidecar(source, PACKAGES)) {
            let path = staged.packages();
            std::fs::write(&path, manifest).map_err(write_err(&path))?;
        }
        let info = ImageInfo {
            name: name.to_string(),
            source: Some(source.to_path_buf()),
            size_bytes: size,
            created_at: unix_now(),
            ..ImageInfo::default()
        };
        let record = self.register(staged, &info, false)?;
        tracing::info!(image = name, source = %source.display(), "imported image");
        Ok(record)
    }

    /// The image `name`; `default` is registered from the bundle the first
    /// time it is asked for.
    pub async fn get_or_default(
        &self,
        name: &str,
        bundle: Option<&Bundle>,
    ) -> Result<Option<ImageRecord>, ImageError> {
        let lookup = || match self.store.lock().get_image(name) {
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
        let lock = self.lock(DEFAULT_IMAGE);
        let _held = lock.lock().await;
        // Another create may have registered it while this one waited.
        match lookup()? {
            Some(image) => Ok(Some(image)),
            None => self
                .import_locked(DEFAULT_IMAGE, &bundle.rootfs)
                .await
                .map(Some),
        }
    }

    /// Forgets image `name` and removes its files; refused while a VM uses it.
    pub async fn delete(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let lock = self.lock(name);
        let _held = lock.lock().await;
        let record = self.store.lock().delete_image(name)?;
        self.remove_version(&record);
        let _ = std::fs::remove_dir(self.dir(name));
        tracing::info!(image = name, "deleted image");
        Ok(record)
    }

    /// Removes the files of one version of an image, if they are the store's
    /// (an image registered elsewhere by path is not ours to delete).
    fn remove_version(&self, record: &ImageRecord) {
        let Some(dir) = record.rootfs_path.parent() else {
            return;
        };
        if !dir.starts_with(self.dir(&record.name)) {
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an old image version");
        }
    }

    /// Removes the image version holding `rootfs` when neither an image
    /// nor a layered VM uses it any more: after a replace, and after the
    /// last VM on an old version is deleted.
    pub fn release(&self, rootfs: &Path) {
        let in_use = {
            let store = self.store.lock();
            let images = store.list_images().unwrap_or_default();
            let vms = store.list_vms().unwrap_or_default();
            images.iter().any(|i| i.rootfs_path == rootfs)
                || vms.iter().any(|vm| vm.base_path.as_deref() == Some(rootfs))
        };
        let Some(dir) = rootfs.parent() else { return };
        if in_use || !dir.starts_with(&self.root) || dir == self.root {
            return;
        }
        match std::fs::remove_dir_all(dir) {
            Ok(()) => tracing::info!(dir = %dir.display(), "removed an image version nothing uses"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an old image version")
            }
        }
        if let Some(name_dir) = dir.parent().filter(|d| *d != self.root) {
            let _ = std::fs::remove_dir(name_dir);
        }
    }

    /// On daemon start: removes staging directories and versions neither an
    /// image nor a layered VM uses (what a daemon killed mid-import or
    /// mid-build leaves, and old versions whose last VM is gone).
    pub fn sweep(&self) -> Result<Vec<PathBuf>, ImageError> {
        let mut current: HashSet<PathBuf> = self
            .store
            .lock()
            .list_images()?
            .into_iter()
            .filter_map(|image| image.rootfs_path.parent().map(Path::to_path_buf))
            .collect();
        current.extend(
            self.store
                .lock()
                .list_vms()?
                .into_iter()
                .filter_map(|vm| vm.base_path?.parent().map(Path::to_path_buf)),
        );
        let mut removed = Vec::new();
        // Warm templates a daemon was killed making (see `vm::template`).
        for version in &current {
            let staged = std::fs::read_dir(version.join("templates"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "tmp"));
            for path in staged {
                if std::fs::remove_dir_all(&path).is_ok() {
                    removed.push(path);
                }
            }
        }
        let Ok(names) = std::fs::read_dir(&self.root) else {
            return Ok(removed);
        };
        for name_dir in names.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
            if current.contains(&name_dir) {
                continue; // an image from before versioned directories
            }
            for version in std::fs::read_dir(&name_dir).into_iter().flatten().flatten() {
                let path = version.path();
                if path.is_dir() && !current.contains(&path) {
                    match std::fs::remove_dir_all(&path) {
                        Ok(()) => removed.push(path),
                        Err(e) => {
                            tracing::warn!(dir = %path.display(), error = %e, "cannot remove a stray image directory")
                        }
                    }
                }
            }
            let _ = std::fs::remove_dir(&name_dir);
        }
        if !removed.is_empty() {
            tracing::info!(?removed, "removed image files no image points at");
        }
        Ok(removed)
    }
}

/// Clones `source` to `dest` (reflink where the filesystem can) and returns
/// its size.
pub async fn copy_rootfs(source: &Path, dest: &Path) -> Result<u64, ImageError> {
    let (src, dst) = (source.to_path_buf(), dest.to_path_buf());
    tokio::task::spawn_blocking(move || fs::clone_file(&src, &dst))
        .await
        .expect("clone task panicked")
        .map_err(|e| ImageError::Copy {
            path: source.to_path_buf(),
            source: e,
        })?;
    Ok(std::fs::metadata(dest).map_err(write_err(dest))?.len())
}

/// `rootfs.ext4.packages` or `image.json` next to the rootfs at `rootfs`.
fn sidecar(rootfs: &Path, file: &str) -> PathBuf {
    match file {
        // The manifest is named after the rootfs, wherever it is.
        PACKAGES => {
            let mut name = rootfs.as_os_str().to_owned();
            name.push(".packages");
            PathBuf::from(name)
        }
        _ => rootfs.with_file_name(file),
    }
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + use<> {
    let path = path.to_path_buf();
    move |source| ImageError::Write { path, source }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A version directory name: when it was made, and enough randomness that
/// two versions made in the same second differ.
fn new_version() -> String {
    use sha2::Digest;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!(
        "{}:{}:{}",
        now.as_nanos(),
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let digest = sha2::Sha256::digest(seed.as_bytes());
    let hex: String = digest[..3].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", now.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_is_named_after_the_rootfs() {
        let rootfs = Path::new("/images/a/v1/rootfs.ext4");
        assert_eq!(
            sidecar(rootfs, PACKAGES),
            Path::new("/images/a/v1/rootfs.ext4.packages")
        );
        assert_eq!(sidecar(rootfs, INFO), Path::new("/images/a/v1/image.json"));
    }

    #[test]
    fn versions_differ_and_sort_by_time() {
        let (a, b) = (new_version(), new_version());
        assert_ne!(a, b);
        assert!(a.split('-').next().unwrap().parse::<u64>().is_ok(), "{a}");
    }
}
