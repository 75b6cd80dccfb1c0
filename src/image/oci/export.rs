//! Images out, in the shapes other Firecracker platforms take:
//!
//! - `raw`: `vmlinux`, `initrd.img`, `rootfs.ext4` and `banger-image.json`
//!   (a kernel and an ext4 boot disk: what Nomad's Firecracker driver runs);
//! - `oci`: an OCI image layout holding two images, `NAME` (one layer: the
//!   root filesystem) and `NAME-kernel` (`boot/vmlinux`, `boot/initrd.img`),
//!   what Flintlock takes as root and kernel images; `image push` sends them
//!   to a registry.
//!
//! The root filesystem's tree is read out of the ext4 image with debugfs
//! (`rdump`, and `ls -p` for each directory's owners and modes), so a
//! non-root daemon exports owners it could not give files on the host.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::manifest::{self, Descriptor, ImageManifest, RunConfig, sha256};
use super::{OciError, Progress};
use crate::system::debugfs::{self, Listed};

/// What `banger-image.json` says about a raw export.
#[derive(Debug, Serialize)]
pub struct RawDescription {
    pub name: String,
    pub kernel: String,
    pub initrd: Option<String>,
    pub rootfs: String,
    /// A kernel command line that boots the disk with banger's initrd.
    pub boot_args: String,
    pub size_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oci: Option<super::OciOrigin>,
}

/// The pieces of an image to export.
pub struct Parts<'a> {
    pub name: &'a str,
    pub rootfs: &'a Path,
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub origin: Option<super::OciOrigin>,
}

/// A new empty directory at `dir` (an existing empty one will do).
fn fresh_dir(dir: &Path) -> Result<(), OciError> {
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(OciError::ExportTarget {
            dir: dir.to_path_buf(),
        });
    }
    std::fs::create_dir_all(dir).map_err(OciError::cache(dir))
}

/// The raw export into `dir`.
pub async fn raw(
    parts: &Parts<'_>,
    dir: &Path,
    progress: &mut dyn Progress,
) -> Result<(), OciError> {
    fresh_dir(dir)?;
    progress.step("copy kernel and root filesystem");
    copy(parts.kernel, &dir.join("vmlinux"))?;
    if let Some(initrd) = parts.initrd {
        copy(initrd, &dir.join("initrd.img"))?;
    }
    let size = crate::image::copy_rootfs(parts.rootfs, &dir.join("rootfs.ext4")).await?;
    let description = RawDescription {
        name: parts.name.to_string(),
        kernel: "vmlinux".into(),
        initrd: parts.initrd.map(|_| "initrd.img".into()),
        rootfs: "rootfs.ext4".into(),
        boot_args: "console=ttyS0 reboot=k panic=1 root=/dev/vda rw".into(),
        size_bytes: size,
        oci: parts.origin.clone(),
    };
    let json = serde_json::to_vec_pretty(&description).expect("serializes");
    let path = dir.join("banger-image.json");
    std::fs::write(&path, json).map_err(OciError::cache(&path))
}

fn copy(from: &Path, to: &Path) -> Result<(), OciError> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(OciError::read(from))
}

/// The OCI export into `dir`: a layout with the root image tagged `name`
/// and the kernel image tagged `name-kernel`.
pub async fn oci(
    parts: &Parts<'_>,
    dir: &Path,
    progress: &mut dyn Progress,
) -> Result<(), OciError> {
    fresh_dir(dir)?;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(OciError::cache(&blobs))?;
    progress.step("read the root filesystem");
    let layer = layer_of(parts.rootfs, &Source::Root, &dir.join(".export"), &blobs).await?;
    let config = parts
        .origin
        .as_ref()
        .map(|o| o.config.clone())
        .unwrap_or_default();
    let root = write_image(dir, &layer, config)?;
    progress.step("write the kernel image");
    let mut files: Vec<(&str, &Path)> = vec![("boot/vmlinux", parts.kernel)];
    if let Some(initrd) = parts.initrd {
        files.push(("boot/initrd.img", initrd));
    }
    let kernel_layer = files_layer(&files, &blobs)?;
    let kernel = write_image(dir, &kernel_layer, RunConfig::default())?;
    let tag = |desc: Descriptor, tag: String| {
        let mut desc = serde_json::to_value(desc).expect("serializes");
        desc["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": tag });
        desc
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [tag(root, parts.name.to_string()), tag(kernel, format!("{}-kernel", parts.name))],
    });
    write(&dir.join("index.json"), index.to_string().as_bytes())?;
    write(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    std::fs::write(path, bytes).map_err(OciError::cache(path))
}

/// A gzip layer in the layout's blobs, and the digest of its tar.
pub struct LayerBlob {
    pub desc: Descriptor,
    pub diff_id: String,
}

/// Writes a layer straight into the layout: a tar stream, hashed (its diff
/// id), gzip-compressed, hashed again (its digest) and written to a file
/// renamed to that digest at the end. Nothing is held in memory whole.
struct LayerWriter {
    tar: tar::Builder<Hashing<flate2::write::GzEncoder<Hashing<std::fs::File>>>>,
    tmp: PathBuf,
    blobs: PathBuf,
}

impl LayerWriter {
    fn new(blobs: &Path) -> Result<LayerWriter, OciError> {
        let tmp = blobs.join(".layer.part");
        let file = std::fs::File::create(&tmp).map_err(OciError::cache(&tmp))?;
        let gz = flate2::write::GzEncoder::new(Hashing::new(file), flate2::Compression::fast());
        Ok(LayerWriter {
            tar: tar::Builder::new(Hashing::new(gz)),
            tmp,
            blobs: blobs.to_path_buf(),
        })
    }

    fn finish(self) -> Result<LayerBlob, OciError> {
        let fail = OciError::cache(&self.tmp);
        let raw = self.tar.into_inner().map_err(OciError::cache(&self.tmp))?;
        let diff_id = raw.digest();
        let file = raw.inner.finish().map_err(fail)?;
        let (size, digest) = (file.len, file.digest());
        let hex = manifest::digest_hex(&digest).expect("sha256 digest");
        let path = self.blobs.join(hex);
        std::fs::rename(&self.tmp, &path).map_err(OciError::cache(&path))?;
        Ok(LayerBlob {
            desc: Descriptor {
                media_type: manifest::OCI_LAYER_GZIP.into(),
                digest,
                size: size as i64,
                platform: None,
                annotations: None,
            },
            diff_id,
        })
    }
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: sha2::Sha256,
    len: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        use sha2::Digest;
        Hashing {
            inner,
            hasher: sha2::Sha256::new(),
            len: 0,
        }
    }

    fn digest(&self) -> String {
        use sha2::Digest;
        format!("sha256:{}", manifest::hex(&self.hasher.clone().finalize()))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Stores a one-layer image (layer, config, manifest) in the layout at
/// `dir`; the manifest's descriptor.
fn write_image(dir: &Path, layer: &LayerBlob, run: RunConfig) -> Result<Descriptor, OciError> {
    let blob = |media_type: &str, bytes: &[u8]| -> Result<Descriptor, OciError> {
        let digest = sha256(bytes);
        let hex = manifest::digest_hex(&digest).expect("sha256 digest");
        write(&dir.join("blobs/sha256").join(hex), bytes)?;
        Ok(Descriptor {
            media_type: media_type.into(),
            digest,
            size: bytes.len() as i64,
            platform: None,
            annotations: None,
        })
    };
    let layer_desc = layer.desc.clone();
    let config = manifest::ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(run),
        rootfs: Some(manifest::RootFs {
            kind: "layers".into(),
            diff_ids: vec![layer.diff_id.clone()],
        }),
    };
    let config_desc = blob(
        manifest::OCI_CONFIG,
        &serde_json::to_vec(&config).expect("serializes"),
    )?;
    let image = ImageManifest {
        schema_version: 2,
        media_type: manifest::OCI_MANIFEST.into(),
        config: config_desc,
        layers: vec![layer_desc],
    };
    let mut desc = blob(
        manifest::OCI_MANIFEST,
        &serde_json::to_vec(&image).expect("serializes"),
    )?;
    desc.platform = Some(manifest::Platform {
        architecture: "amd64".into(),
        os: "linux".into(),
        variant: None,
    });
    Ok(desc)
}

/// Which part of an ext4 image becomes a layer.
pub enum Source<'a> {
    /// The whole filesystem.
    Root,
    /// A layered VM's upper disk: its `/upper` directory, an overlayfs
    /// upper layer whose whiteouts (character devices 0:0) and opaque
    /// directories (`trusted.overlay.opaque`) become OCI whiteouts; the
    /// paths in `leave_out` (banger's per-VM identity) are not carried.
    OverlayUpper { leave_out: &'a [&'a str] },
}

impl Source<'_> {
    fn dir(&self) -> &'static str {
        match self {
            Source::Root => "/",
            Source::OverlayUpper { .. } => "/upper",
        }
    }
}

/// `source` of the ext4 image `image` as one layer in `blobs`, through a
/// tree dumped under `scratch` (removed again).
pub async fn layer_of(
    image: &Path,
    source: &Source<'_>,
    scratch: &Path,
    blobs: &Path,
) -> Result<LayerBlob, OciError> {
    std::fs::create_dir_all(blobs).map_err(OciError::cache(blobs))?;
    let tree = scratch.join("tree");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree).map_err(OciError::cache(&tree))?;
    let (mut entries, opaque) = read_tree(image, source.dir(), &tree, scratch).await?;
    if let Source::OverlayUpper { leave_out } = source {
        entries.retain(|path, _| {
            !leave_out
                .iter()
                .any(|l| path == Path::new(l.trim_start_matches('/')))
        });
    }
    let root = match source {
        Source::Root => tree.clone(),
        Source::OverlayUpper { .. } => tree.join("upper"),
    };
    let overlay = matches!(source, Source::OverlayUpper { .. });
    let extras = extras(image, source.dir(), &entries, overlay, scratch).await?;
    let layer = {
        let blobs = blobs.to_path_buf();
        let marks = Marks {
            opaque,
            overlay,
            extras,
        };
        tokio::task::spawn_blocking(move || root_layer(&root, &entries, &marks, &blobs))
            .await
            .expect("writing a layer does not panic")?
    };
    let _ = std::fs::remove_dir_all(scratch);
    Ok(layer)
}

/// What a layer carries beyond the tree `rdump` writes.
struct Marks {
    /// Directories overlayfs marked opaque.
    opaque: Vec<PathBuf>,
    /// The tree is an overlayfs upper layer (0:0 devices are whiteouts).
    overlay: bool,
    extras: HashMap<PathBuf, Extra>,
}

/// An entry's extended attributes and device numbers.
#[derive(Default)]
struct Extra {
    xattrs: Vec<(String, Vec<u8>)>,
    device: Option<(u32, u32)>,
}

/// The extended attributes of every entry (overlayfs's own left out) and
/// the numbers of every device node, read from `image` with debugfs.
async fn extras(
    image: &Path,
    from: &str,
    entries: &HashMap<PathBuf, Listed>,
    overlay: bool,
    scratch: &Path,
) -> Result<HashMap<PathBuf, Extra>, OciError> {
    let base = from.trim_end_matches('/');
    let full = |p: &PathBuf| format!("{base}/{}", p.display());
    let paths: Vec<&PathBuf> = entries
        .keys()
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    let names: Vec<String> = paths.iter().map(|p| full(p)).collect();
    let xattrs = debugfs::xattrs(image, &names, scratch).await?;
    let mut extras: HashMap<PathBuf, Extra> = HashMap::new();
    for (path, found) in paths.iter().zip(xattrs) {
        let kept: Vec<_> = found
            .into_iter()
            .filter(|(name, _)| !name.starts_with("trusted.overlay."))
            .collect();
        if !kept.is_empty() {
            extras.entry((*path).clone()).or_default().xattrs = kept;
        }
    }
    let devices: Vec<&PathBuf> = paths
        .into_iter()
        .filter(|p| matches!(entries[*p].mode & 0o170000, 0o020000 | 0o060000))
        .filter(|p| !(overlay && entries[*p].mode & 0o170000 == 0o020000))
        .collect();
    let names: Vec<String> = devices.iter().map(|p| full(p)).collect();
    for (path, numbers) in devices
        .into_iter()
        .zip(debugfs::device_numbers(image, &names, scratch).await?)
    {
        extras.entry(path.clone()).or_default().device = numbers;
    }
    Ok(extras)
}

/// Dumps directory `from` of `image` into `tree` and lists every entry's
/// owner and mode (by path relative to `from`, "" for `from` itself); and
/// the directories marked opaque for overlayfs.
async fn read_tree(
    image: &Path,
    from: &str,
    tree: &Path,
    scratch: &Path,
) -> Result<(HashMap<PathBuf, Listed>, Vec<PathBuf>), OciError> {
    debugfs::dump_tree(image, from, tree).await?;
    // Owners, modes and inode numbers, one directory at a time.
    let mut listed = HashMap::new();
    let mut opaque = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    let base = from.trim_end_matches('/');
    while !dirs.is_empty() {
        let batch: Vec<PathBuf> = std::mem::take(&mut dirs);
        let names: Vec<String> = batch
            .iter()
            .map(|d| match d.as_os_str().is_empty() {
                true if base.is_empty() => "/".to_string(),
                true => base.to_string(),
                false => format!("{base}/{}", d.display()),
            })
            .collect();
        if !base.is_empty() {
            for (dir, is_opaque) in batch
                .iter()
                .zip(debugfs::overlay_opaque(image, &names, scratch).await?)
            {
                if is_opaque {
                    opaque.push(dir.clone());
                }
            }
        }
        let listings = debugfs::list_dirs(image, &names, scratch).await?;
        for (dir, entries) in batch.iter().zip(listings) {
            for entry in entries {
                let path = dir.join(&entry.name);
                let kind = entry.mode & 0o170000;
                let top = dir.as_os_str().is_empty();
                if entry.name == "." && top {
                    listed.insert(PathBuf::new(), entry.clone());
                }
                if entry.name == "." || entry.name == ".." || (top && entry.name == "lost+found") {
                    continue;
                }
                if kind == 0o040000 {
                    dirs.push(path.clone());
                }
                listed.insert(path, entry);
            }
        }
    }
    Ok((listed, opaque))
}

/// The tree as one gzip layer, with the owners, modes and extended
/// attributes the image has, and its device nodes and FIFOs (which `rdump`
/// does not write); a second name of an inode is a hard link.
fn root_layer(
    tree: &Path,
    listed: &HashMap<PathBuf, Listed>,
    marks: &Marks,
    blobs: &Path,
) -> Result<LayerBlob, OciError> {
    let (opaque, overlay) = (&marks.opaque, marks.overlay);
    let mut paths: Vec<&PathBuf> = listed
        .keys()
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    paths.sort();
    let mut writer = LayerWriter::new(blobs)?;
    let tar = &mut writer.tar;
    let mut first_name: HashMap<u64, &PathBuf> = HashMap::new();
    for path in paths {
        let entry = &listed[path];
        let mut header = tar::Header::new_ustar();
        header.set_mode(entry.mode & 0o7777);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mtime(0);
        let on_host = tree.join(path);
        let fail = |e| OciError::read(&on_host)(e);
        let extra = marks.extras.get(path);
        if let Some(extra) = extra.filter(|e| !e.xattrs.is_empty()) {
            let keys: Vec<String> = extra
                .xattrs
                .iter()
                .map(|(n, _)| format!("SCHILY.xattr.{n}"))
                .collect();
            let pax = keys
                .iter()
                .map(String::as_str)
                .zip(extra.xattrs.iter().map(|(_, v)| v.as_slice()));
            tar.append_pax_extensions(pax).map_err(fail)?;
        }
        match entry.mode & 0o170000 {
            0o040000 => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, path, std::io::empty())
                    .map_err(fail)?;
                if opaque.contains(path) {
                    let mut marker = root_header(0o644);
                    marker.set_size(0);
                    tar.append_data(&mut marker, path.join(".wh..wh..opq"), std::io::empty())
                        .map_err(fail)?;
                }
            }
            // overlayfs marks what the VM removed with a 0:0 device.
            0o020000 if overlay => {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let mut marker = root_header(0o644);
                marker.set_size(0);
                tar.append_data(
                    &mut marker,
                    path.with_file_name(format!(".wh.{name}")),
                    std::io::empty(),
                )
                .map_err(fail)?;
            }
            0o120000 => {
                let target = std::fs::read_link(&on_host).map_err(fail)?;
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, path, target).map_err(fail)?;
            }
            0o100000 => {
                if let Some(first) = first_name.get(&entry.ino) {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    tar.append_link(&mut header, path, first).map_err(fail)?;
                    continue;
                }
                first_name.insert(entry.ino, path);
                // rdump gave the file its image mode; the daemon must read it.
                let file = open_readable(&on_host).map_err(fail)?;
                let len = file.metadata().map_err(fail)?.len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(len);
                tar.append_data(&mut header, path, file).map_err(fail)?;
            }
            kind @ (0o020000 | 0o060000 | 0o010000) => {
                let (major, minor) = extra.and_then(|e| e.device).unwrap_or((0, 0));
                header.set_entry_type(match kind {
                    0o020000 => tar::EntryType::Char,
                    0o060000 => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                });
                header.set_device_major(major).map_err(fail)?;
                header.set_device_minor(minor).map_err(fail)?;
                header.set_size(0);
                tar.append_data(&mut header, path, std::io::empty())
                    .map_err(fail)?;
            }
            _ => {}
        }
    }
    writer.finish()
}

fn open_readable(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            std::fs::File::open(path)
        }
        other => other,
    }
}

/// A header owned by root with `mode`, dated the epoch (reproducible).
fn root_header(mode: u32) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// Host files as one gzip layer, root's, under the given names.
fn files_layer(files: &[(&str, &Path)], blobs: &Path) -> Result<LayerBlob, OciError> {
    let mut writer = LayerWriter::new(blobs)?;
    let tar = &mut writer.tar;
    let mut dirs_done = std::collections::HashSet::new();
    for (name, host) in files {
        if let Some(dir) = Path::new(name)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            && dirs_done.insert(dir.to_path_buf())
        {
            let mut header = root_header(0o755);
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            tar.append_data(&mut header, dir, std::io::empty())
                .map_err(OciError::read("the layer"))?;
        }
        let bytes = std::fs::read(host).map_err(OciError::read(host))?;
        let mut header = root_header(0o644);
        header.set_size(bytes.len() as u64);
        tar.append_data(&mut header, name, &bytes[..])
            .map_err(OciError::read("the layer"))?;
    }
    writer.finish()
}
