//! Warm images: an image booted once to agent- and SSH-ready, its memory
//! snapshotted with its writable disks as the image's **template** for one
//! shape (VMM, vCPUs, memory). `vm create` of that image and shape copies
//! the template's disks, takes its memory as the new VM's snapshot and
//! restores it instead of booting; the agent then gives the guest its own
//! identity (see [`Manager::assume_identity`]).
//!
//! A template lives beside the image version it was made from
//! (`images/<name>/<version>/templates/<key>/`), so it goes with it, and is
//! made whole by one rename.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{RootMode, VmRole, VmmKind};
use crate::rpc::api::{CreateVm, TemplateInfo};
use crate::store::{ImageRecord, VmRecord};
use crate::system::fs;

use super::snapshot::{SnapshotDir, SnapshotMeta};
use super::{Manager, VmError, VmFiles};

/// What a template was made with, beside its snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TemplateShape {
    vmm: VmmKind,
    vcpus: u32,
    memory_mib: u32,
    root_mode: RootMode,
    /// The root disk's size: the upper disk's, or the clone's.
    disk_bytes: u64,
    work_disk_bytes: Option<u64>,
    /// Unix seconds.
    made_at: i64,
}

const SHAPE: &str = "template.json";

/// One template's directory.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub dir: PathBuf,
    shape: TemplateShape,
}

impl Template {
    fn snapshot(&self) -> SnapshotDir {
        SnapshotDir::new(&self.dir)
    }

    /// The template's copy of the disk a VM of it has at `vm_path`.
    fn disk(&self, vm_path: &Path) -> PathBuf {
        self.dir.join(vm_path.file_name().unwrap_or_default())
    }

    pub fn key(&self) -> String {
        key(self.shape.vmm, self.shape.vcpus, self.shape.memory_mib)
    }

    fn info(&self) -> TemplateInfo {
        TemplateInfo {
            key: key(self.shape.vmm, self.shape.vcpus, self.shape.memory_mib),
            vmm: self.shape.vmm,
            vcpus: self.shape.vcpus,
            memory_mib: self.shape.memory_mib,
            snapshot_bytes: std::fs::metadata(self.snapshot().memory()).map_or(0, |m| m.len()),
            made_at: self.shape.made_at,
        }
    }
}

/// A template's name among its image's: its shape.
fn key(vmm: VmmKind, vcpus: u32, memory_mib: u32) -> String {
    format!("{vmm}-{vcpus}cpu-{memory_mib}mib")
}

/// Where image `image`'s templates live; `None` for an image registered by
/// a path outside the store (its directory is not banger's to write).
fn templates_dir(image: &ImageRecord, images_root: &Path) -> Option<PathBuf> {
    let version = image.rootfs_path.parent()?;
    version
        .starts_with(images_root)
        .then(|| version.join("templates"))
}

impl Manager {
    /// Image `image`'s templates.
    pub fn templates(&self, image: &ImageRecord) -> Vec<TemplateInfo> {
        let Some(dir) = templates_dir(image, &self.images_root()) else {
            return Vec::new();
        };
        let mut found: Vec<TemplateInfo> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| read_template(&entry.path()))
            .map(|t| t.info())
            .collect();
        found.sort_by(|a, b| a.key.cmp(&b.key));
        found
    }

    fn images_root(&self) -> PathBuf {
        self.paths.data_dir.join("images")
    }

    /// Boots image `image` once in a VM of the given shape (the bundle's
    /// defaults where unset), waits until its agent and sshd are ready,
    /// and keeps its memory and writable disks as the image's template for
    /// that shape (replacing an older one). The VM is removed either way.
    pub async fn warm_image(
        self: &Arc<Manager>,
        image: &str,
        vcpus: Option<u32>,
        memory_mib: Option<u32>,
    ) -> Result<TemplateInfo, VmError> {
        crate::rpc::check_image_name(image)?;
        let name = format!("warm-{}", random_hex(4));
        let req = CreateVm {
            name: name.clone(),
            image: Some(image.to_string()),
            vcpus,
            memory_mib,
            disk_bytes: None,
            work_disk_bytes: None,
            vmm: None,
            start: true,
            nat: false,
            wait_ssh: true,
            publish: Vec::new(),
            cold: true,
        };
        let made = async {
            self.create_as(req, VmRole::Template).await?;
            let _held = self.operation(&name).await;
            self.keep_as_template(&name).await
        }
        .await;
        // Whatever happened, the VM it was made in goes.
        if self.get(&name).is_ok()
            && let Err(e) = self.delete(&name, true).await
        {
            tracing::error!(vm = %name, error = %e, "cannot remove the warm-up VM");
        }
        let template = made?;
        tracing::info!(image, template = %template.key, "warmed");
        Ok(template)
    }

    /// With `warm = true`: makes the template `vm` (just booted, of a
    /// request that left its disks to the defaults) would have been
    /// restored from, in the background. One warm-up at a time per image;
    /// one that finds a template made after it was asked for does nothing.
    pub(crate) fn warm_in_background(self: &Arc<Manager>, vm: &VmRecord, req: &CreateVm) {
        let Some(image) = vm.image.clone() else {
            return;
        };
        if req.disk_bytes.is_some() || req.work_disk_bytes.is_some() {
            return; // templates are made with the default disks
        }
        let manager = Arc::clone(self);
        let (vcpus, memory_mib) = (vm.vcpus, vm.memory_mib);
        let asked = unix_now();
        tokio::spawn(async move {
            let _one = manager.operation(&format!("warm-{image}")).await;
            let made_since = manager.images.get(&image).is_ok_and(|record| {
                manager
                    .templates(&record)
                    .iter()
                    .any(|t| (t.vcpus, t.memory_mib) == (vcpus, memory_mib) && t.made_at >= asked)
            });
            if made_since {
                return;
            }
            match manager
                .warm_image(&image, Some(vcpus), Some(memory_mib))
                .await
            {
                Ok(t) => tracing::info!(image, template = %t.key, "warmed in the background"),
                Err(e) => {
                    tracing::warn!(image, error = %e, "cannot warm the image in the background")
                }
            }
        });
    }

    /// Suspends template VM `name` and moves its snapshot and writable
    /// disks into its image's templates.
    async fn keep_as_template(&self, name: &str) -> Result<TemplateInfo, VmError> {
        let vm = self.get(name)?;
        let image_name = vm.image.clone().unwrap_or_default();
        let image = self
            .images
            .get(&image_name)
            .map_err(crate::image::ImageError::from)?;
        let root = templates_dir(&image, &self.images_root()).ok_or_else(|| {
            VmError::BadRequest(format!(
                "image `{image_name}` is registered by a path outside banger's store; import it to warm it"
            ))
        })?;
        // Templates hold guest memory: the daemon user's alone.
        crate::paths::private_dir(&root)
            .map_err(|e| VmError::io(&root)(std::io::Error::other(e.to_string())))?;
        let key = key(vm.vmm, vm.vcpus, vm.memory_mib);
        let (dir, staging) = (root.join(&key), root.join(format!("{key}.tmp")));
        remove(&staging)?;
        std::fs::create_dir(&staging).map_err(VmError::io(&staging))?;
        let made = async {
            let meta = self.suspend_locked(name).await?;
            let files = self.files(name);
            let mut moved = Vec::new();
            for disk in writable_disks(&files, &vm) {
                let to = staging.join(disk.file_name().unwrap_or_default());
                std::fs::rename(&disk, &to).map_err(VmError::io(&to))?;
                moved.push(to);
            }
            let from = SnapshotDir::new(&files.dir);
            let to = SnapshotDir::new(&staging);
            std::fs::rename(&from.dir, &to.dir).map_err(VmError::io(&to.dir))?;
            // Its disks moved with their times: the marks still hold.
            let meta = SnapshotMeta {
                disks: meta
                    .disks
                    .iter()
                    .zip(&moved)
                    .map(|(mark, path)| super::snapshot::DiskMark {
                        path: path.clone(),
                        ..mark.clone()
                    })
                    .collect(),
                foreign_identity: true,
                ..meta
            };
            to.rewrite_meta(&meta).map_err(VmError::io(&to.dir))?;
            super::fault::point("warm:staged");
            let shape = TemplateShape {
                vmm: vm.vmm,
                vcpus: vm.vcpus,
                memory_mib: vm.memory_mib,
                root_mode: vm.root_mode,
                disk_bytes: vm.disk_bytes,
                work_disk_bytes: vm.work_disk_bytes,
                made_at: meta.taken_at,
            };
            let json = serde_json::to_vec_pretty(&shape).map_err(std::io::Error::other);
            json.and_then(|json| std::fs::write(staging.join(SHAPE), json))
                .map_err(VmError::io(&staging))?;
            remove(&dir)?;
            std::fs::rename(&staging, &dir).map_err(VmError::io(&dir))?;
            Ok::<_, VmError>(Template { dir, shape })
        }
        .await;
        match made {
            Ok(template) => Ok(template.info()),
            Err(e) => {
                let _ = remove(&staging);
                Err(e)
            }
        }
    }

    /// The template new VM `vm` (a row, its disks not made yet) can be
    /// restored from, or why there is none.
    pub(crate) fn fitting_template(
        &self,
        vm: &crate::store::NewVm,
        image: &ImageRecord,
    ) -> Result<Template, String> {
        let root = templates_dir(image, &self.images_root())
            .ok_or("the image is registered by path, outside banger's store")?;
        let key = key(vm.vmm, vm.vcpus, vm.memory_mib);
        let template = read_template(&root.join(&key)).ok_or_else(|| {
            format!(
                "image `{}` has no warm template for {key} (`banger image warm {} --vcpus {} --memory {}` makes one)",
                image.name, image.name, vm.vcpus, vm.memory_mib
            )
        })?;
        let shape = &template.shape;
        if (shape.root_mode, shape.disk_bytes, shape.work_disk_bytes)
            != (vm.root_mode, vm.disk_bytes, vm.work_disk_bytes)
        {
            return Err(format!(
                "its warm template {key} has other disks (root {}, work {}): warm the image again with this shape",
                crate::size::format_size(shape.disk_bytes),
                shape
                    .work_disk_bytes
                    .map_or("none".into(), crate::size::format_size),
            ));
        }
        let meta = template.snapshot().read_meta()?;
        let bundle = self.bundle().map_err(|e| e.to_string())?;
        let digest = |p: &Path| super::snapshot::file_digest_hex(p).map_err(|e| e.to_string());
        if meta.kernel_digest != digest(&bundle.kernel)?
            || meta.initrd_digest != bundle.initrd.as_deref().map(digest).transpose()?
        {
            return Err(format!(
                "its warm template {key} was made with another runtime bundle: `banger image warm {}` makes it again",
                image.name
            ));
        }
        Ok(template)
    }

    /// Gives VM `vm` (its row made, its files directory empty but for its
    /// keys) copies of `template`'s writable disks and its memory as the
    /// VM's own snapshot, to be restored as it is started.
    pub(crate) async fn copy_template(
        &self,
        template: &Template,
        vm: &VmRecord,
        files: &VmFiles,
    ) -> Result<(), VmError> {
        let disks = writable_disks(files, vm);
        let from = template.snapshot();
        let meta = from.read_meta().map_err(|why| VmError::Snapshot {
            name: vm.name.clone(),
            why,
        })?;
        let snapshot = SnapshotDir::new(&files.dir);
        drop(snapshot.begin().map_err(VmError::io(&snapshot.partial))?);
        // The disks become the VM's own (reflinked, or copied sparse); the
        // memory is only ever read, so a link serves where it can.
        let copies: Vec<(PathBuf, PathBuf)> = disks
            .iter()
            .map(|d| (template.disk(d), d.clone()))
            .collect();
        let memory = (from.memory(), snapshot.partial_memory());
        // A Firecracker snapshot's device state is the VM's own too.
        let state = Some((from.state(), snapshot.partial_state())).filter(|(f, _)| f.is_file());
        tokio::task::spawn_blocking(move || {
            for (src, dst) in copies.into_iter().chain(state) {
                fs::clone_file(&src, &dst)?;
            }
            let (src, dst) = memory;
            let _ = std::fs::remove_file(&dst);
            if std::fs::hard_link(&src, &dst).is_err() {
                fs::clone_file(&src, &dst)?;
            }
            Ok::<(), fs::FsError>(())
        })
        .await
        .map_err(|e| VmError::io(&files.dir)(std::io::Error::other(e)))??;
        let marks = disks
            .iter()
            .map(|d| super::snapshot::DiskMark::of(d))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(VmError::io(&files.dir))?;
        let meta = SnapshotMeta {
            disks: marks,
            foreign_identity: true,
            ..meta
        };
        snapshot
            .commit_meta(&meta)
            .map_err(VmError::io(&snapshot.dir))?;
        Ok(())
    }
}

/// A VM's writable disks, in the order its snapshot records them.
fn writable_disks(files: &VmFiles, vm: &VmRecord) -> Vec<PathBuf> {
    let root = match vm.root_mode {
        RootMode::Layered => files.upper.clone(),
        RootMode::Clone => files.rootfs.clone(),
    };
    let mut disks = vec![root];
    if vm.work_disk_bytes.is_some() {
        disks.push(files.work_disk.clone());
    }
    disks
}

fn read_template(dir: &Path) -> Option<Template> {
    let shape = serde_json::from_slice(&std::fs::read(dir.join(SHAPE)).ok()?).ok()?;
    let template = Template {
        dir: dir.to_path_buf(),
        shape,
    };
    template.snapshot().exists().then_some(template)
}

fn remove(dir: &Path) -> Result<(), VmError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(VmError::io(dir)(e)),
        _ => Ok(()),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let _ = rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty());
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
