//! Images from the container world: `image pull` from an OCI registry and
//! `image import --oci` from a layout or a `docker save` tarball. Layers
//! are cached by digest, laid out as one tree (whiteouts, links, no escape)
//! and made into an ext4 image with the owners, modes and extended
//! attributes they name, whether or not the daemon is root.

pub mod auth;
pub mod cache;
pub mod export;
pub mod layout;
pub mod manifest;
pub mod registry;
pub mod unpack;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ImageError, ImageInfo, Images};
pub use crate::rpc::api::{ExportFormat, OciSource};
use crate::store::ImageRecord;
use crate::system::{debugfs, e2fs};
use cache::BlobCache;
use manifest::{Descriptor, ImageConfig, RunConfig};
use unpack::{Tree, UnpackError};

/// Why an OCI image could not be pulled, read or converted.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "`{reference}` is not an image reference ({why}); write it as NAME[:TAG], NAME@sha256:DIGEST or HOST[:PORT]/PATH:TAG"
    )]
    BadReference { reference: String, why: String },
    #[error("`{digest}` is not a sha256 digest")]
    BadDigest { digest: String },
    #[error("blob {digest} is refused: {why}")]
    WrongBlob { digest: String, why: String },
    #[error("the registry refused or failed a request for {reference}")]
    Registry {
        reference: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("the download of blob {digest} broke off")]
    Download {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{reference} has no linux/amd64 image (it offers {offered})")]
    NoPlatform { reference: String, offered: String },
    #[error("{what} is not an OCI image (no image manifest or config found)")]
    NotAnImage { what: String },
    #[error("{what} is not a valid OCI document: {why}")]
    BadDocument { what: String, why: String },
    #[error("the image is for {platform}; banger runs linux/amd64 guests")]
    WrongPlatform { platform: String },
    #[error("cannot read {what}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the blob cache at {path}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot apply layer {digest}")]
    Layer {
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error("cannot make the image's ext4 filesystem")]
    Ext4(#[from] e2fs::E2fsError),
    #[error("cannot give the image's files their owners and modes")]
    Owners(#[from] debugfs::DebugfsError),
    #[error("{dir} is not empty; export into a new directory")]
    ExportTarget { dir: PathBuf },
    #[error("no image name given and none can be made from `{from}`; pass --name")]
    NoName { from: String },
    #[error(transparent)]
    Image(#[from] ImageError),
}

impl OciError {
    pub fn read(what: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> OciError {
        let what = what.as_ref().display().to_string();
        move |source| OciError::Read { what, source }
    }

    pub fn cache(path: &Path) -> impl FnOnce(std::io::Error) -> OciError {
        let path = path.to_path_buf();
        move |source| OciError::Cache { path, source }
    }
}

/// What a pull tells its client as it goes.
pub trait Progress: Send {
    fn step(&mut self, step: &str);
    fn note(&mut self, message: &str);
}

/// Progress of an operation that answers once (export, push), told to the
/// daemon's log under the name it concerns.
pub struct Logged(pub String);

impl Progress for Logged {
    fn step(&mut self, step: &str) {
        tracing::info!(name = %self.0, step, "step");
    }
    fn note(&mut self, message: &str) {
        tracing::info!(name = %self.0, message, "note");
    }
}

/// An image's documents and layers, all in the blob cache and checked.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The reference or file it came from.
    pub source: String,
    /// The image manifest's digest.
    pub digest: String,
    pub config: Vec<u8>,
    /// Each layer, bottom first, with its cached blob.
    pub layers: Vec<(Descriptor, PathBuf)>,
}

/// Where an image from a registry or layout came from, in `image.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OciOrigin {
    /// The reference pulled, or the file imported.
    pub reference: String,
    /// The image manifest's digest.
    pub digest: String,
    /// How a container of the image would run.
    #[serde(default)]
    pub config: RunConfig,
    /// Layer digests, bottom first.
    #[serde(default)]
    pub layers: Vec<String>,
}

/// The outcome of a pull.
pub struct Pulled {
    pub image: ImageRecord,
    /// True when nothing changed: the image already held this digest.
    pub cached: bool,
}

/// Pulls or imports the image `source` names and registers it as `name`
/// (default: made from the reference, `ubuntu:24.04` → `ubuntu-24-04`).
/// A name already holding an image from the same source is brought up to
/// date (a new version when the digest changed); any other image of that
/// name is left alone and the pull refused.
pub async fn pull(
    images: &Images,
    cache_dir: &Path,
    source: &OciSource,
    name: Option<&str>,
    progress: &mut dyn Progress,
) -> Result<Pulled, OciError> {
    let origin_text = match source {
        OciSource::Registry { reference, .. } => reference.clone(),
        OciSource::Layout { path, .. } => path.display().to_string(),
    };
    let name = match name {
        Some(name) => name.to_string(),
        None => default_name(&origin_text).ok_or_else(|| OciError::NoName {
            from: origin_text.clone(),
        })?,
    };
    crate::rpc::check_image_name(&name).map_err(ImageError::from)?;
    let lock = images.lock(&name);
    let _held = lock.lock().await;
    let existing = images.get(&name).ok();
    let existing_origin = existing
        .as_ref()
        .and_then(|image| images.info(image))
        .and_then(|info| info.oci);
    if existing.is_some() && existing_origin.as_ref().map(|o| &o.reference) != Some(&origin_text) {
        return Err(ImageError::taken(&name).into());
    }
    let cache = BlobCache::new(cache_dir);
    let fetched = match source {
        OciSource::Registry {
            reference,
            insecure,
        } => {
            let docker_config = auth::docker_config();
            let source = registry::Source::parse(reference, *insecure, docker_config.as_deref())?;
            registry::fetch(&source, &cache, progress).await?
        }
        OciSource::Layout { path, tag } => {
            let (path, tag, cache) = (path.clone(), tag.clone(), cache.clone());
            let mut notes = Notes::default();
            let result = tokio::task::spawn_blocking(move || {
                let fetched = layout::read(&path, tag.as_deref(), &cache, &mut notes);
                (fetched, notes)
            })
            .await
            .expect("reading a layout does not panic");
            result.1.replay(progress);
            result.0?
        }
    };
    if let (Some(image), Some(origin)) = (&existing, &existing_origin)
        && origin.digest == fetched.digest
    {
        progress.note(&format!("{name} is up to date ({})", fetched.digest));
        return Ok(Pulled {
            image: image.clone(),
            cached: true,
        });
    }
    let image = convert(images, &name, &fetched, existing.is_some(), progress).await?;
    Ok(Pulled {
        image,
        cached: false,
    })
}

/// Makes `fetched` an ext4 image registered as `name`.
async fn convert(
    images: &Images,
    name: &str,
    fetched: &Fetched,
    replace: bool,
    progress: &mut dyn Progress,
) -> Result<ImageRecord, OciError> {
    let config: ImageConfig =
        serde_json::from_slice(&fetched.config).map_err(|e| OciError::BadDocument {
            what: "the image config".into(),
            why: e.to_string(),
        })?;
    let platform = format!("{}/{}", config.os, config.architecture);
    if platform != "linux/amd64" {
        return Err(OciError::WrongPlatform { platform });
    }
    let staged = images.stage(name)?;
    let tree_dir = staged.dir.join("tree");
    let mut tree = Tree::new(&tree_dir).map_err(|source| OciError::Layer {
        digest: "-".into(),
        source,
    })?;
    let count = fetched.layers.len();
    for (i, (layer, path)) in fetched.layers.iter().enumerate() {
        progress.step(&format!(
            "unpack layer {}/{count} {}",
            i + 1,
            registry::short(&layer.digest)
        ));
        let (layer, path) = (layer.clone(), path.clone());
        tree = tokio::task::spawn_blocking(move || apply_checked(tree, &layer, &path))
            .await
            .expect("unpacking does not panic")?;
    }
    progress.step("make ext4");
    tree.add_standard_dirs().map_err(|source| OciError::Layer {
        digest: "-".into(),
        source,
    })?;
    let packages = super::packages::from_tree(|path| tree.read(path));
    let used = unpack::tree_bytes(tree.root());
    // Room for the filesystem's own structures, and a little to spare.
    let bytes = (used + used / 5 + (64 << 20)).div_ceil(1 << 20) << 20;
    let inodes = tree.entries() + tree.entries() / 4 + 4096;
    let rootfs = staged.rootfs();
    e2fs::mkfs_ext4_from(&rootfs, tree.root(), bytes, inodes).await?;
    let owner = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    let fixes = tree.fixes(owner).map_err(|source| OciError::Layer {
        digest: "-".into(),
        source,
    })?;
    progress.note(&format!(
        "{} files, {} given owners or modes by debugfs",
        tree.entries(),
        fixes.len()
    ));
    debugfs::fix_inodes(&rootfs, &fixes, &staged.dir.join("scratch")).await?;
    drop(tree);
    let _ = std::fs::remove_dir_all(&tree_dir);
    let _ = std::fs::remove_dir_all(staged.dir.join("scratch"));
    if let Some(lines) = &packages {
        let path = staged.packages();
        std::fs::write(&path, lines.join("\n") + "\n").map_err(OciError::cache(&path))?;
    }
    progress.step("register");
    let info = ImageInfo {
        name: name.to_string(),
        size_bytes: crate::system::fs::file_len(&rootfs),
        created_at: super::unix_now(),
        oci: Some(OciOrigin {
            reference: fetched.source.clone(),
            digest: fetched.digest.clone(),
            config: config.config.unwrap_or_default(),
            layers: fetched
                .layers
                .iter()
                .map(|(l, _)| l.digest.clone())
                .collect(),
        }),
        ..ImageInfo::default()
    };
    Ok(images.register(staged, &info, replace)?)
}

/// Exports image `name` as `format` into `dir` (see [`export`]).
pub async fn export_image(
    images: &Images,
    bundle: &crate::bundle::Bundle,
    name: &str,
    format: ExportFormat,
    dir: &Path,
    progress: &mut dyn Progress,
) -> Result<(), OciError> {
    let image = images.get(name).map_err(ImageError::from)?;
    let origin = images.info(&image).and_then(|info| info.oci);
    let kernel = image
        .kernel_path
        .clone()
        .unwrap_or_else(|| bundle.kernel.clone());
    let parts = export::Parts {
        name,
        rootfs: &image.rootfs_path,
        kernel: &kernel,
        initrd: bundle.initrd.as_deref(),
        origin,
    };
    match format {
        ExportFormat::Raw => export::raw(&parts, dir, progress).await,
        ExportFormat::Oci => export::oci(&parts, dir, progress).await,
    }
}

/// Pushes image `name` to `reference` as an OCI image (its root filesystem
/// as one layer), and its kernel to the same repository with the tag
/// suffixed `-kernel`. The two references pushed.
pub async fn push_image(
    images: &Images,
    bundle: &crate::bundle::Bundle,
    cache_dir: &Path,
    name: &str,
    reference: &str,
    insecure: bool,
    progress: &mut dyn Progress,
) -> Result<(String, String), OciError> {
    let docker_config = auth::docker_config();
    let root = registry::Source::parse(reference, insecure, docker_config.as_deref())?;
    let tag = root.reference.tag().unwrap_or("latest").to_string();
    let kernel_ref = format!(
        "{}/{}:{tag}-kernel",
        root.reference.registry(),
        root.reference.repository()
    );
    let kernel = registry::Source::parse(&kernel_ref, insecure, docker_config.as_deref())?;
    std::fs::create_dir_all(cache_dir).map_err(OciError::cache(cache_dir))?;
    let layout = cache_dir.join(format!("push-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&layout);
    let result = async {
        export_image(images, bundle, name, ExportFormat::Oci, &layout, progress).await?;
        registry::push(&root, &layout, name, progress).await?;
        registry::push(&kernel, &layout, &format!("{name}-kernel"), progress).await?;
        Ok((root.reference.whole(), kernel.reference.whole()))
    }
    .await;
    let _ = std::fs::remove_dir_all(&layout);
    result
}

/// What [`flatten`] makes an image of.
pub struct Flatten<'a> {
    /// The new image's name.
    pub name: &'a str,
    /// The image file the VM runs on.
    pub lower: &'a Path,
    /// The VM's upper disk (ext4 holding overlayfs's `/upper`).
    pub upper: &'a Path,
    /// Paths under `/upper` not to carry (the VM's own identity).
    pub leave_out: &'a [&'a str],
    /// The VM's name, for `image.json`.
    pub from: &'a str,
    /// The image's own OCI origin, whose run config is kept.
    pub origin: Option<OciOrigin>,
}

/// Registers a layered VM's root as an image: its image's tree with the
/// VM's changes applied on top as a second layer (whiteouts and opaque
/// directories as overlayfs recorded them), made ext4 like a pull.
pub async fn flatten(
    images: &Images,
    cache_dir: &Path,
    flat: Flatten<'_>,
    progress: &mut dyn Progress,
) -> Result<ImageRecord, OciError> {
    crate::rpc::check_image_name(flat.name).map_err(ImageError::from)?;
    let lock = images.lock(flat.name);
    let _held = lock.lock().await;
    if images.get(flat.name).is_ok() {
        return Err(ImageError::taken(flat.name).into());
    }
    let scratch = cache_dir.join(format!("flatten-{}-{}", flat.name, std::process::id()));
    let blobs = scratch.join("blobs");
    let result = async {
        progress.step("read the image");
        let lower = export::layer_of(
            flat.lower,
            &export::Source::Root,
            &scratch.join("lower"),
            &blobs,
        )
        .await?;
        progress.step("read the VM's changes");
        let upper_source = export::Source::OverlayUpper {
            leave_out: flat.leave_out,
        };
        let upper =
            export::layer_of(flat.upper, &upper_source, &scratch.join("upper"), &blobs).await?;
        let run = flat.origin.as_ref().map(|o| o.config.clone());
        let config = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            config: run,
            rootfs: Some(manifest::RootFs {
                kind: "layers".into(),
                diff_ids: vec![lower.diff_id.clone(), upper.diff_id.clone()],
            }),
        };
        let blob_path =
            |d: &Descriptor| blobs.join(manifest::digest_hex(&d.digest).unwrap_or_default());
        let fetched = Fetched {
            source: format!("vm {}", flat.from),
            digest: upper.desc.digest.clone(),
            config: serde_json::to_vec(&config).expect("serializes"),
            layers: vec![
                (lower.desc.clone(), blob_path(&lower.desc)),
                (upper.desc.clone(), blob_path(&upper.desc)),
            ],
        };
        convert(images, flat.name, &fetched, false, progress).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Applies the cached layer at `path`, checking its digest on the way.
fn apply_checked(mut tree: Tree, layer: &Descriptor, path: &Path) -> Result<Tree, OciError> {
    let failed = |source| OciError::Layer {
        digest: layer.digest.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(OciError::cache(path))?;
    let mut reader = DigestReader::new(file);
    tree.apply(&mut reader).map_err(failed)?;
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(OciError::cache(path))?;
    let actual = reader.digest();
    if actual != layer.digest {
        // A cached blob that changed on disk: gone, so the next pull fetches it.
        let _ = std::fs::remove_file(path);
        return Err(OciError::WrongBlob {
            digest: layer.digest.clone(),
            why: format!("the cached copy has digest {actual}; pull again"),
        });
    }
    Ok(tree)
}

/// A reader that hashes what passes through it.
struct DigestReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> DigestReader<R> {
    fn new(inner: R) -> Self {
        use sha2::Digest;
        DigestReader {
            inner,
            hasher: sha2::Sha256::new(),
        }
    }

    fn digest(self) -> String {
        use sha2::Digest;
        format!("sha256:{}", manifest::hex(&self.hasher.finalize()))
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Progress said on a blocking thread, told once it is done.
#[derive(Default)]
struct Notes(Vec<(bool, String)>);

impl Progress for Notes {
    fn step(&mut self, step: &str) {
        self.0.push((true, step.to_string()));
    }
    fn note(&mut self, message: &str) {
        self.0.push((false, message.to_string()));
    }
}

impl Notes {
    fn replay(self, progress: &mut dyn Progress) {
        for (step, text) in self.0 {
            match step {
                true => progress.step(&text),
                false => progress.note(&text),
            }
        }
    }
}

/// An image name made from a reference or file: its last path component
/// and tag, lowercase, with anything but letters and digits as `-`
/// (`ubuntu:24.04` → `ubuntu-24-04`, `reg:5000/team/app` → `app`).
pub fn default_name(source: &str) -> Option<String> {
    let last = source.rsplit('/').next()?;
    let last = last.split('@').next()?;
    let last = last
        .strip_suffix(".tar")
        .or_else(|| last.strip_suffix(".tar.gz"))
        .unwrap_or(last);
    let last = last.strip_suffix(":latest").unwrap_or(last);
    let mut name = String::new();
    for c in last.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_matches('-');
    let name: String = name.chars().take(63).collect();
    let name = name.trim_end_matches('-').to_string();
    crate::rpc::check_image_name(&name).ok().map(|_| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_come_from_the_last_component_and_tag() {
        assert_eq!(
            default_name("ubuntu:24.04").as_deref(),
            Some("ubuntu-24-04")
        );
        assert_eq!(default_name("debian").as_deref(), Some("debian"));
        assert_eq!(
            default_name("127.0.0.1:5000/team/app:latest").as_deref(),
            Some("app")
        );
        assert_eq!(
            default_name("reg.test/app@sha256:abc").as_deref(),
            Some("app")
        );
        assert_eq!(default_name("/tmp/busybox.tar").as_deref(), Some("busybox"));
        assert_eq!(default_name("/"), None);
    }
}
