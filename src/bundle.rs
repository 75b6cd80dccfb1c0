//! The runtime bundle: the kernel (and initrd, modules), the default rootfs,
//! optionally a firecracker binary, and defaults, described by `bundle.json`.
//! Found in `./runtime` of a source checkout, else `$XDG_DATA_HOME/banger/runtime`.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::size::parse_size;

/// Errors finding or validating the bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("no runtime bundle found (looked in {}); build one with `make runtime-debian` or fetch one with `make runtime-bundle`", tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound { tried: Vec<PathBuf> },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid bundle description {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("bundle file {path} is missing")]
    Missing { path: PathBuf },
    #[error("{path} is not executable")]
    NotExecutable { path: PathBuf },
    #[error(
        "{path} is not an ELF kernel for x86_64 ({why}); Firecracker needs an uncompressed vmlinux"
    )]
    NotElfKernel { path: PathBuf, why: &'static str },
}

/// `bundle.json` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleFile {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    modules: Option<PathBuf>,
    rootfs: PathBuf,
    firecracker: Option<PathBuf>,
    kernel_version: Option<String>,
    /// The initrd can put a root together from the image and an upper disk
    /// (`banger.upper=`); absent means it cannot.
    #[serde(default)]
    layered_root: bool,
    /// The initrd carries banger's guest agent and starts it in every
    /// guest; absent means it does not.
    #[serde(default)]
    agent: bool,
    defaults: DefaultsFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsFile {
    vcpus: u32,
    memory_mib: u32,
    disk_size: String,
    work_disk_size: String,
    kernel_args: String,
}

/// A validated bundle, paths made absolute.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    /// Uncompressed ELF `vmlinux`, booted by both VMMs.
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// `modules/<kver>`, for images that install kernel modules.
    pub modules: Option<PathBuf>,
    /// The base image, registered as image `default` on first use.
    pub rootfs: PathBuf,
    /// A Firecracker binary shipped with the bundle, if any.
    pub firecracker: Option<PathBuf>,
    pub kernel_version: Option<String>,
    /// Whether its initrd layers a VM's root (see [`Bundle::root_mode`]).
    pub layered_root: bool,
    /// Whether its initrd brings the guest agent (see [`Bundle::agent`]).
    pub has_agent: bool,
    pub defaults: Defaults,
}

/// VM settings used when `vm create` is not told otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub work_disk_bytes: u64,
    /// Console and panic behaviour; banger adds root, network and hostname.
    pub kernel_args: String,
}

impl Bundle {
    /// The bundle in `configured` if set, else the first of the usual places.
    pub fn locate(configured: Option<&Path>, data_dir: &Path) -> Result<Bundle, BundleError> {
        let candidates = match configured {
            Some(dir) => vec![dir.to_path_buf()],
            None => default_locations(data_dir),
        };
        match candidates
            .iter()
            .find(|dir| dir.join("bundle.json").is_file())
        {
            Some(dir) => Bundle::load(dir),
            None => Err(BundleError::NotFound { tried: candidates }),
        }
    }

    /// Reads and validates `dir/bundle.json`.
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        let path = dir.join("bundle.json");
        let text = std::fs::read_to_string(&path).map_err(|source| BundleError::Read {
            path: path.clone(),
            source,
        })?;
        let file: BundleFile = serde_json::from_str(&text).map_err(|e| BundleError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let size = |s: &str| {
            parse_size(s).map_err(|message| BundleError::Invalid {
                path: path.clone(),
                message,
            })
        };
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let existing = |rel: &Path| {
            let full = dir.join(rel);
            if full.exists() {
                Ok(full)
            } else {
                Err(BundleError::Missing { path: full })
            }
        };
        let bundle = Bundle {
            kernel: existing(&file.kernel)?,
            initrd: file.initrd.as_deref().map(existing).transpose()?,
            modules: file.modules.as_deref().map(existing).transpose()?,
            rootfs: existing(&file.rootfs)?,
            firecracker: file.firecracker.as_deref().map(existing).transpose()?,
            kernel_version: file.kernel_version,
            layered_root: file.layered_root,
            has_agent: file.agent && file.initrd.is_some(),
            defaults: Defaults {
                vcpus: file.defaults.vcpus,
                memory_mib: file.defaults.memory_mib,
                disk_bytes: size(&file.defaults.disk_size)?,
                work_disk_bytes: size(&file.defaults.work_disk_size)?,
                kernel_args: file.defaults.kernel_args,
            },
            dir,
        };
        check_elf_kernel(&bundle.kernel)?;
        if let Some(fc) = &bundle.firecracker {
            check_executable(fc)?;
        }
        Ok(bundle)
    }
}

impl Bundle {
    /// How VMs booted from this bundle get their root, and why: layered
    /// (the image shared read-only under a per-VM upper disk) when its
    /// initrd can assemble that, else a full clone of the image per VM.
    pub fn root_mode(&self) -> (crate::model::RootMode, &'static str) {
        use crate::model::RootMode;
        match (&self.initrd, self.layered_root) {
            (Some(_), true) => (
                RootMode::Layered,
                "the bundle's initrd layers the shared image under a per-VM upper disk",
            ),
            (None, _) => (
                RootMode::Clone,
                "the bundle has no initrd to layer a root: each VM gets a full clone of its image",
            ),
            (Some(_), false) => (
                RootMode::Clone,
                "the bundle's initrd cannot layer a root (bundle.json lacks layered_root; rebuild with make runtime-debian): each VM gets a full clone of its image",
            ),
        }
    }
}

impl Bundle {
    /// Whether guests booted from this bundle run banger's agent, and why not.
    pub fn agent(&self) -> Result<(), &'static str> {
        match (&self.initrd, self.has_agent) {
            (Some(_), true) => Ok(()),
            (None, _) => Err("the bundle has no initrd to bring the agent"),
            (Some(_), false) => Err(
                "the bundle's initrd has no agent (bundle.json lacks agent; rebuild with make runtime-debian)",
            ),
        }
    }
}

/// `./runtime` next to the binaries of a source checkout (`./banger` or
/// `target/<profile>/banger`), then the per-user data directory.
fn default_locations(data_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("runtime"));
        if let Some(checkout) = exe_dir.parent().and_then(Path::parent) {
            dirs.push(checkout.join("runtime"));
        }
    }
    dirs.push(data_dir.join("runtime"));
    dirs
}

/// Refuses anything but a 64-bit little-endian x86_64 ELF.
pub fn check_elf_kernel(path: &Path) -> Result<(), BundleError> {
    let mut header = Vec::with_capacity(20);
    std::fs::File::open(path)
        .and_then(|f| f.take(20).read_to_end(&mut header))
        .map_err(|source| BundleError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let why = if header.len() < 20 {
        Some("too short")
    } else if &header[..4] != b"\x7fELF" {
        Some("no ELF magic: a compressed bzImage?")
    } else if header[4] != 2 || header[5] != 1 {
        Some("not 64-bit little-endian")
    } else if u16::from_le_bytes([header[18], header[19]]) != 0x3e {
        Some("wrong architecture")
    } else {
        None
    };
    match why {
        Some(why) => Err(BundleError::NotElfKernel {
            path: path.to_path_buf(),
            why,
        }),
        None => Ok(()),
    }
}

fn check_executable(path: &Path) -> Result<(), BundleError> {
    let meta = std::fs::metadata(path).map_err(|source| BundleError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
        Ok(())
    } else {
        Err(BundleError::NotExecutable {
            path: path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16) -> Vec<u8> {
        let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        h.resize(18, 0);
        h.extend(machine.to_le_bytes());
        h.resize(64, 0);
        h
    }

    fn write_bundle(dir: &Path, json: &str) {
        std::fs::write(dir.join("vmlinux"), elf(0x3e)).unwrap();
        std::fs::write(dir.join("rootfs.ext4"), b"").unwrap();
        std::fs::write(dir.join("bundle.json"), json).unwrap();
    }

    const GOOD: &str = r#"{"kernel":"vmlinux","rootfs":"rootfs.ext4","defaults":{"vcpus":2,"memory_mib":1024,"disk_size":"2G","work_disk_size":"1G","kernel_args":"console=ttyS0"}}"#;

    #[test]
    fn a_good_bundle_loads() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), GOOD);
        let b = Bundle::locate(Some(dir.path()), Path::new("/nonexistent")).unwrap();
        assert_eq!(b.kernel, dir.path().join("vmlinux"));
        assert_eq!(b.defaults.disk_bytes, 2 << 30);
        assert!(b.initrd.is_none());
    }

    #[test]
    fn bad_bundles_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), &GOOD.replace("vmlinux", "bzImage"));
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bzImage is missing"), "{err}");

        write_bundle(dir.path(), GOOD);
        std::fs::write(dir.path().join("vmlinux"), b"\x1f\x8b compressed").unwrap();
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not an ELF kernel"), "{err}");

        std::fs::write(dir.path().join("vmlinux"), elf(0xb7)).unwrap();
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("wrong architecture"), "{err}");

        write_bundle(
            dir.path(),
            &GOOD.replace(r#""rootfs""#, r#""firecracker":"rootfs.ext4","rootfs""#),
        );
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not executable"), "{err}");

        let err = Bundle::locate(None, &dir.path().join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("make runtime-debian"), "{err}");
    }
}
