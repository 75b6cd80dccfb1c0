//! `vm export`: a VM's root filesystem as a new image. A layered VM's
//! image with its own changes (its upper disk) flattened on top; a
//! full-clone VM's disk as it is. banger's per-VM identity (host keys,
//! authorized keys, name, addresses) stays behind: every VM gets its own.

use crate::image::oci::{self, OciError};
use crate::model::{RootMode, VmState};
use crate::store::ImageRecord;

use super::{Manager, VmError};

/// What `vm create` writes into a VM's upper disk for that VM alone,
/// relative to `/upper`: not carried into an export.
const IDENTITY: &[&str] = &[
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/fstab",
    "etc/ssh/ssh_host_ed25519_key",
    "etc/ssh/ssh_host_ed25519_key.pub",
    "root/.ssh/authorized_keys",
    "work",
];

impl Manager {
    /// Registers stopped VM `name`'s root filesystem as image `image`.
    pub async fn export_vm(
        &self,
        name: &str,
        image: &str,
        progress: &mut dyn oci::Progress,
    ) -> Result<ImageRecord, VmError> {
        let _held = self.operation(name).await;
        let vm = self.get(name)?;
        // Only a guest that shut down has its disks whole.
        let stopped = matches!(vm.state, VmState::Stopped | VmState::Created);
        VmError::check_state(&vm, stopped, "export")?;
        let files = self.files(name);
        let record = match (vm.root_mode, &vm.base_path) {
            (RootMode::Layered, Some(lower)) => {
                let origin = vm
                    .image
                    .as_deref()
                    .and_then(|i| self.images.get(i).ok())
                    .and_then(|i| self.images.info(&i))
                    .and_then(|info| info.oci);
                let flat = oci::Flatten {
                    name: image,
                    lower,
                    upper: &files.upper,
                    leave_out: IDENTITY,
                    from: name,
                    origin,
                };
                oci::flatten(&self.images, &self.paths.cache_dir, flat, progress)
                    .await
                    .map_err(|e| match e {
                        OciError::Image(image) => VmError::Image(image),
                        other => VmError::Export(Box::new(other)),
                    })?
            }
            _ => self.images.import(image, &files.rootfs).await?,
        };
        self.event(name, "exported", &format!("as image {image}"));
        Ok(record)
    }
}
