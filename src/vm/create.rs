//! `vm create`: claim a name and a lease, clone and grow the root disk, make
//! the work disk and the host key, write the guest's files, then boot.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::image::DEFAULT_IMAGE;
use crate::model::{Lease, RootMode, VmRole, VmState, VmmKind};
use crate::rpc::api::{CreateDefaults, CreateVm, VmOpResult};
use crate::store::{NewVm, StoreError, Taken};
use crate::system::debugfs::{self, GuestFile};
use crate::system::{e2fs, fs, ssh, tools};

use super::rollback::{Rollback, Undo};
use super::{Clock, Manager, VmError, VmFiles, fault};
use crate::vmm::select;

/// Smallest sizes that make sense.
const MIN_MEMORY_MIB: u32 = 128;
const MIN_WORK_DISK: u64 = 16 << 20;
const MAX_VCPUS: u32 = 32;

/// Where the work disk is mounted in the guest.
pub const WORK_MOUNT: &str = "/work";

impl Manager {
    /// Creates VM `req.name` and, unless told not to, boots it and waits for SSH.
    pub async fn create(self: &Arc<Manager>, req: CreateVm) -> Result<VmOpResult, VmError> {
        crate::rpc::check_vm_name(&req.name)?;
        if let Some(image) = &req.image {
            crate::rpc::check_image_name(image)?;
        }
        self.create_as(req, VmRole::Vm).await
    }

    /// Creates and boots the temporary VM of an image build: no work disk,
    /// the root disk exactly the base (grown to `disk_bytes` when asked),
    /// recorded as a build so it is never taken for a user's VM.
    pub(crate) async fn create_build_vm(
        self: &Arc<Manager>,
        req: CreateVm,
    ) -> Result<VmOpResult, VmError> {
        self.create_as(req, VmRole::Build).await
    }

    pub(crate) async fn create_as(
        self: &Arc<Manager>,
        mut req: CreateVm,
        role: VmRole,
    ) -> Result<VmOpResult, VmError> {
        let _held = self.operation(&req.name).await;
        let mut clock = Clock::start();
        loop {
            let mut rollback = Rollback::new(self.store.clone(), self.network.netadmin().clone());
            let template = match self
                .create_locked(&req, role, &mut clock, &mut rollback)
                .await
            {
                Ok(template) => {
                    rollback.disarm();
                    template
                }
                Err(e) => {
                    tracing::warn!(vm = %req.name, error = %e, "create failed; rolling back");
                    rollback.run().await;
                    return Err(e);
                }
            };
            let mut booted = super::start::Booted::default();
            if req.start {
                // A VM that cannot boot is not worth keeping half-made: undo
                // the whole create. One whose template no longer restores
                // (another VMM version) is made again and booted.
                match self.start_locked(&req.name, &mut clock, req.wait_ssh).await {
                    Ok(b) => booted = b,
                    Err(e) => {
                        tracing::warn!(vm = %req.name, error = %e, "first boot failed; deleting the VM");
                        let mut undo =
                            Rollback::new(self.store.clone(), self.network.netadmin().clone());
                        let files = self.files(&req.name);
                        undo.push(Undo::DeleteVm(req.name.clone()));
                        undo.push(Undo::RemoveDir(files.dir));
                        undo.run().await;
                        if template.is_ok() && matches!(e, VmError::Snapshot { .. }) {
                            tracing::warn!(vm = %req.name, error = %e, "its warm template did not restore; booting instead");
                            req.cold = true;
                            clock.lap("template failed");
                            continue;
                        }
                        return Err(e);
                    }
                }
            }
            let vm = self.get(&req.name)?;
            let how = match &template {
                Ok(key) => format!("restored from warm template {key}"),
                Err(_) => "booted".into(),
            };
            self.event(
                &req.name,
                "created",
                &format!(
                    "created from image {}, {how}",
                    vm.image.as_deref().unwrap_or("-")
                ),
            );
            let mut result = booted.result(self.details(&vm), clock);
            match template {
                Ok(key) => result.template = Some(key),
                Err(why) => {
                    if self.config.warm && role == VmRole::Vm && !req.cold {
                        self.warm_in_background(&vm, &req);
                    }
                    result.booted_because = Some(why);
                }
            }
            return Ok(result);
        }
    }

    /// What `create` gives a VM whose request leaves a field unset.
    pub fn create_defaults(&self) -> Result<CreateDefaults, VmError> {
        let defaults = self.bundle()?.defaults;
        Ok(CreateDefaults {
            image: DEFAULT_IMAGE.into(),
            vcpus: defaults.vcpus,
            memory_mib: defaults.memory_mib,
            disk_bytes: defaults.disk_bytes,
            work_disk_bytes: defaults.work_disk_bytes,
        })
    }

    /// Makes VM `req.name` from a warm template of its image where one
    /// fits (its key), else from the image (why no template served).
    async fn create_locked(
        &self,
        req: &CreateVm,
        role: VmRole,
        clock: &mut Clock,
        rollback: &mut Rollback,
    ) -> Result<Result<String, String>, VmError> {
        let bundle = self.bundle()?;
        let defaults = &bundle.defaults;
        let image_name = req.image.as_deref().unwrap_or(DEFAULT_IMAGE);
        let vcpus = req.vcpus.unwrap_or(defaults.vcpus);
        let memory_mib = req.memory_mib.unwrap_or(defaults.memory_mib);
        let work_disk_bytes = req.work_disk_bytes.unwrap_or(defaults.work_disk_bytes);
        if !(1..=MAX_VCPUS).contains(&vcpus) {
            return Err(VmError::BadRequest(format!(
                "--vcpus {vcpus}: use 1 to {MAX_VCPUS}"
            )));
        }
        if memory_mib < MIN_MEMORY_MIB {
            return Err(VmError::BadRequest(format!(
                "--memory {memory_mib} MiB is too small: a guest needs at least {MIN_MEMORY_MIB} MiB"
            )));
        }
        if work_disk_bytes < MIN_WORK_DISK {
            return Err(VmError::BadRequest(format!(
                "--work-disk {} is too small: use at least 16M",
                crate::size::format_size(work_disk_bytes)
            )));
        }
        let vmm = select::choose(req.vmm.unwrap_or(self.config.vmm), &self.config, &bundle)?;
        tools::preflight("banger vm create", &required_tools(vmm), None)?;
        if self.store.lock().get_vm(&req.name).is_ok() {
            return Err(StoreError::Conflict {
                what: Taken::VmName,
                value: req.name.clone(),
            }
            .into());
        }
        let image = self
            .images
            .get_or_default(image_name, Some(&bundle))
            .await?
            .ok_or_else(|| VmError::UnknownImage(image_name.to_string()))?;
        let image_bytes = std::fs::metadata(&image.rootfs_path)
            .map_err(VmError::io(&image.rootfs_path))?
            .len();
        // A build always works on a whole clone it boots read-write.
        let root_mode = match role {
            VmRole::Build => RootMode::Clone,
            VmRole::Vm | VmRole::Template => bundle.root_mode().0,
        };
        let asked = req.disk_bytes.unwrap_or(defaults.disk_bytes);
        let disk_bytes = match root_mode {
            // The upper disk holds only what the VM writes.
            RootMode::Layered => {
                if asked < MIN_UPPER_DISK {
                    return Err(VmError::BadRequest(format!(
                        "--disk {} is too small: use at least 64M",
                        crate::size::format_size(asked)
                    )));
                }
                asked
            }
            RootMode::Clone => {
                if let Some(asked) = req.disk_bytes.filter(|d| *d < image_bytes) {
                    return Err(VmError::BadRequest(format!(
                        "--disk {} is smaller than image `{image_name}` ({}); use at least that",
                        crate::size::format_size(asked),
                        crate::size::format_size(image_bytes)
                    )));
                }
                asked.max(image_bytes)
            }
        };
        let ports = req
            .publish
            .iter()
            .map(|p| p.parse::<crate::model::PortSpec>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(VmError::BadRequest)?;
        self.network.check_ports_free(&ports).await?;
        clock.lap("validate");

        let new_vm = NewVm {
            name: req.name.clone(),
            image: Some(image.name.clone()),
            vmm,
            vcpus,
            memory_mib,
            disk_bytes,
            work_disk_bytes: (role != VmRole::Build).then_some(work_disk_bytes),
            lease: None,
            nat: req.nat,
            role,
            root_mode,
            base_path: (root_mode == RootMode::Layered).then(|| image.rootfs_path.clone()),
        };
        let template = match (role, req.cold) {
            (VmRole::Vm, false) => self.fitting_template(&new_vm, &image),
            (VmRole::Vm, true) => Err("a cold boot was asked for".into()),
            _ => Err(format!("a {role} VM always boots")),
        };
        // The row says `creating` until everything below is done: a daemon
        // killed meanwhile leaves a VM that reconcile removes whole.
        let ip = self.insert_with_lease(new_vm)?;
        rollback.push(Undo::DeleteVm(req.name.clone()));
        for port in &ports {
            self.store.lock().add_port(&req.name, port)?;
        }
        fault::point("create:row");
        clock.lap("lease");

        let files = self.files(&req.name);
        rollback.push(Undo::RemoveDir(files.dir.clone()));
        crate::paths::private_dir(&files.dir).map_err(|e| VmError::Io {
            path: files.dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        std::fs::create_dir_all(&files.scratch).map_err(VmError::io(&files.scratch))?;

        // The root disk, the work disk and the keys do not depend on each
        // other: make them at once.
        let (src, dst) = (image.rootfs_path.clone(), files.rootfs.clone());
        let root_disk = async {
            if template.is_ok() {
                return Ok(()); // copied from the template below
            }
            match root_mode {
                RootMode::Layered => make_disk(&files.upper, disk_bytes, "upper").await,
                RootMode::Clone => {
                    tokio::task::spawn_blocking(move || fs::clone_file(&src, &dst))
                        .await
                        .map_err(|e| VmError::io(&files.rootfs)(std::io::Error::other(e)))??;
                    if disk_bytes > image_bytes {
                        e2fs::grow_ext4(&files.rootfs, disk_bytes).await?;
                    }
                    Ok(())
                }
            }
        };
        let keys = async {
            let user_key = ssh::ensure_key(&self.ssh_key(), "banger").await?;
            let host_key =
                ssh::generate_key(&files.host_key, &format!("root@{}", req.name)).await?;
            Ok::<_, VmError>((user_key, host_key))
        };
        let work_disk = async {
            if template.is_ok() {
                return Ok(());
            }
            match role {
                VmRole::Vm | VmRole::Template => {
                    make_disk(&files.work_disk, work_disk_bytes, "work").await
                }
                VmRole::Build => Ok(()),
            }
        };
        let (root, work, keys) = tokio::join!(root_disk, work_disk, keys);
        root?;
        work?;
        let (user_key, host_key) = keys?;
        self.store.lock().set_vm_host_key(&req.name, &host_key)?;
        write_known_hosts(&files, &req.name, ip, &host_key)?;
        fault::point("create:disks");
        clock.lap("disks and keys");

        // A VM of a template wakes with the template's files and gets its
        // own identity from its agent; one booted finds it on its disk.
        let state = match &template {
            Ok(found) => {
                let vm = self.get(&req.name)?;
                self.copy_template(found, &vm, &files).await?;
                VmState::Suspended
            }
            Err(_) => {
                // A template's guest will be many VMs: its hosts file names
                // no address of one (each gets `127.0.1.1 NAME` from its agent).
                let hosts_ip = (role != VmRole::Template).then_some(ip);
                self.write_identity(&files, &req.name, hosts_ip, &user_key, root_mode, true)
                    .await?;
                VmState::Created
            }
        };
        let _ = std::fs::remove_dir_all(&files.scratch);
        fault::point("create:files");
        self.store.lock().set_vm_state(&req.name, state, None)?;
        fault::point("create:created");
        clock.lap("inject files");
        tracing::info!(vm = %req.name, %ip, %vmm, "created");
        Ok(template.map(|t| t.key()))
    }

    /// Writes what makes a VM itself (hostname, hosts, resolver, fstab, the
    /// user's key, its host key) into its root: a layered VM's upper disk
    /// (`fresh` when just made), or a clone's own root disk. The image is
    /// never written. `/etc/hosts` names `hosts_ip`, if given.
    pub(crate) async fn write_identity(
        &self,
        files: &VmFiles,
        name: &str,
        hosts_ip: Option<Ipv4Addr>,
        user_key: &str,
        root_mode: RootMode,
        fresh: bool,
    ) -> Result<(), VmError> {
        let guest = guest_files(
            name,
            hosts_ip,
            self.network.subnet().gateway,
            user_key,
            files,
            root_mode,
        )?;
        std::fs::create_dir_all(&files.scratch).map_err(VmError::io(&files.scratch))?;
        match root_mode {
            RootMode::Layered => {
                let guest: Vec<GuestFile> = guest
                    .into_iter()
                    .map(|f| GuestFile {
                        path: format!("{UPPER_DIR}{}", f.path),
                        ..f
                    })
                    .collect();
                if fresh {
                    debugfs::populate(&files.upper, UPPER_DIRS, &guest, &files.scratch).await?;
                } else {
                    debugfs::write_files(&files.upper, UPPER_DIRS, &guest, &files.scratch).await?;
                }
            }
            RootMode::Clone => {
                debugfs::write_files(
                    &files.rootfs,
                    // An image from a registry may have no /etc/ssh.
                    &[
                        ("/root/.ssh", 0o700),
                        ("/etc/ssh", 0o755),
                        (WORK_MOUNT, 0o755),
                    ],
                    &guest,
                    &files.scratch,
                )
                .await?
            }
        }
        let _ = std::fs::remove_dir_all(&files.scratch);
        Ok(())
    }

    /// The lease of the lowest address no VM of `store` holds.
    pub(crate) fn free_lease(&self, store: &crate::store::Store) -> Result<Lease, VmError> {
        let used: HashSet<Ipv4Addr> = store.list_vms()?.iter().filter_map(|v| v.ip()).collect();
        Ok(Lease::for_ip(self.network.subnet().allocate(&used)?))
    }

    /// Records the VM with the lowest free IP (and the MAC and tap derived
    /// from it). Two creates racing for one address: the loser takes the next.
    pub(crate) fn insert_with_lease(&self, mut vm: NewVm) -> Result<Ipv4Addr, VmError> {
        for _ in 0..16 {
            let mut store = self.store.lock();
            let lease = self.free_lease(&store)?;
            let ip = lease.ip;
            vm.lease = Some(lease);
            match store.insert_vm(&vm) {
                Ok(_) => return Ok(ip),
                Err(StoreError::Conflict {
                    what: Taken::Ip | Taken::Mac | Taken::Tap,
                    ..
                }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VmError::NoFreeAddress)
    }
}

/// The host tools a create needs on `vmm`.
fn required_tools(vmm: VmmKind) -> Vec<&'static str> {
    let mut tools = vec![
        "ip",
        "mkfs.ext4",
        "e2fsck",
        "resize2fs",
        "debugfs",
        "ssh",
        "ssh-keygen",
    ];
    if vmm == VmmKind::Qemu {
        tools.push("qemu-system-x86_64");
    }
    tools
}

/// The smallest upper disk that makes sense.
const MIN_UPPER_DISK: u64 = 64 << 20;

/// Where the overlay's upper directory is on the upper disk (its work
/// directory, which overlayfs needs on the same filesystem, is `/ovlwork`).
const UPPER_DIR: &str = "/upper";

/// The upper disk's directories, made before the VM's files go in. Those
/// the image has too must carry the image's modes: in the merged root a
/// directory of the upper layer shows its own.
const UPPER_DIRS: &[(&str, u32)] = &[
    ("/upper", 0o755),
    ("/ovlwork", 0o700),
    ("/upper/etc", 0o755),
    ("/upper/etc/ssh", 0o755),
    ("/upper/root", 0o700),
    ("/upper/root/.ssh", 0o700),
    ("/upper/work", 0o755),
];

/// A sparse file of `bytes` at `path`, formatted ext4 with `label`: a
/// layered VM's upper disk (`upper`) or a work disk (`work`).
async fn make_disk(path: &std::path::Path, bytes: u64, label: &str) -> Result<(), VmError> {
    let file = std::fs::File::create(path).map_err(VmError::io(path))?;
    file.set_len(bytes).map_err(VmError::io(path))?;
    drop(file);
    e2fs::mkfs_ext4(path, Some(label)).await?;
    Ok(())
}

/// The VM's entry in its own known_hosts: by address and by `.vm` name.
pub(crate) fn write_known_hosts(
    files: &VmFiles,
    name: &str,
    ip: Ipv4Addr,
    host_key: &str,
) -> Result<(), VmError> {
    // Only the key type and body: the comment is not part of the key.
    let key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    let line = format!("{ip},{name}.vm {}\n", key.join(" "));
    std::fs::write(&files.known_hosts, line).map_err(VmError::io(&files.known_hosts))
}

/// How the work disk is mounted: made lazily (see `e2fs::mkfs_ext4`), it
/// is kept sparse by not zeroing its inode tables in the background.
const WORK_OPTIONS: &str = "defaults,nofail,noinit_itable";

/// The guest's fstab. A layered root is mounted by the initrd and has no
/// line (its disks are the image and the upper disk); the work disk comes
/// after the root's disks.
fn fstab(root_mode: RootMode) -> String {
    match root_mode {
        RootMode::Clone => format!(
            "/dev/vda\t/\text4\tdefaults\t0 1\n/dev/vdb\t{WORK_MOUNT}\text4\t{WORK_OPTIONS}\t0 2\n"
        ),
        RootMode::Layered => {
            format!("/dev/vdc\t{WORK_MOUNT}\text4\t{WORK_OPTIONS}\t0 2\n")
        }
    }
}

/// What banger writes into a new VM's root disk before its first boot.
fn guest_files(
    name: &str,
    ip: Option<Ipv4Addr>,
    gateway: Ipv4Addr,
    user_key: &str,
    files: &VmFiles,
    root_mode: RootMode,
) -> Result<Vec<GuestFile>, VmError> {
    let read = |path: &std::path::Path| std::fs::read(path).map_err(VmError::io(path));
    Ok(vec![
        GuestFile::root("/etc/hostname", format!("{name}\n"), 0o644),
        GuestFile::root(
            "/etc/hosts",
            format!(
                "127.0.0.1\tlocalhost\n{}::1\tlocalhost ip6-localhost ip6-loopback\n",
                ip.map(|ip| format!("{ip}\t{name}.vm {name}\n"))
                    .unwrap_or_default()
            ),
            0o644,
        ),
        // The daemon answers DNS on the bridge address.
        GuestFile::root(
            "/etc/resolv.conf",
            format!("nameserver {gateway}\nsearch vm\n"),
            0o644,
        ),
        GuestFile::root("/etc/fstab", fstab(root_mode), 0o644),
        GuestFile::root("/root/.ssh/authorized_keys", format!("{user_key}\n"), 0o600),
        GuestFile::root(
            "/etc/ssh/ssh_host_ed25519_key",
            read(&files.host_key)?,
            0o600,
        ),
        GuestFile::root(
            "/etc/ssh/ssh_host_ed25519_key.pub",
            read(&files.host_key.with_extension("pub"))?,
            0o644,
        ),
    ])
}
