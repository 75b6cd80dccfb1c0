//! What a build is asked to do, checked and normalized, and the digest of
//! everything that decides its result: a repeat of the same inputs is the
//! same image, so it needs no boot.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::rpc::api::{BuildImage, CopyInto};
use crate::store::ImageRecord;

/// Bumped whenever the builder changes what it does to an image, so old
/// cache entries are not taken for new ones.
const BUILDER_VERSION: &str = "banger-builder-1";

/// A request that cannot be built as asked.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid package name `{0}`: use a Debian package name, optionally `=VERSION`")]
    BadPackage(String),
    #[error("invalid guest path `{0}`: use an absolute path without `..`")]
    BadGuestPath(String),
    #[error("invalid apt source `{0}`: use one `deb ...` line")]
    BadAptSource(String),
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The normalized inputs of a build, as `image.json` records them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Spec {
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Sorted and de-duplicated: apt installs them as one transaction.
    pub packages: Vec<String>,
    pub install_recommends: bool,
    pub modules: bool,
    /// In order: a later copy may overwrite an earlier one.
    pub copy: Vec<CopyInto>,
    /// In order.
    pub run: Vec<PathBuf>,
    pub apt_sources: Vec<String>,
}

impl Spec {
    /// Checks `req` and normalizes it; `default_base` names the base when
    /// the request does not.
    pub fn from_request(req: &BuildImage, default_base: &str) -> Result<Spec, SpecError> {
        let mut packages = Vec::new();
        for p in &req.packages {
            let p = p.trim();
            if !valid_package(p) {
                return Err(SpecError::BadPackage(p.to_string()));
            }
            packages.push(p.to_string());
        }
        packages.sort();
        packages.dedup();
        for copy in &req.copy {
            if !valid_guest_path(&copy.guest) {
                return Err(SpecError::BadGuestPath(copy.guest.clone()));
            }
            if std::fs::symlink_metadata(&copy.host).is_err() {
                return Err(SpecError::Missing(copy.host.clone()));
            }
        }
        for script in &req.run {
            if !script.is_file() {
                return Err(SpecError::Missing(script.clone()));
            }
        }
        for line in &req.apt_sources {
            let ok = (line.starts_with("deb ") || line.starts_with("deb-src "))
                && !line.contains(['\n', '\r', '\0']);
            if !ok {
                return Err(SpecError::BadAptSource(line.clone()));
            }
        }
        Ok(Spec {
            from: req.from.clone().unwrap_or_else(|| default_base.to_string()),
            size_bytes: req.size_bytes,
            packages,
            install_recommends: req.install_recommends,
            modules: req.modules,
            copy: req.copy.clone(),
            run: req.run.clone(),
            apt_sources: req.apt_sources.clone(),
        })
    }

    /// The digest of everything that decides the result: the base image's
    /// identity, this spec (with the contents of every copied file and
    /// script, not their host paths), and the kernel whose modules go in.
    pub fn build_key(
        &self,
        base_identity: &str,
        kernel_version: Option<&str>,
    ) -> Result<String, SpecError> {
        let mut h = Sha256::new();
        let mut field = |name: &str, value: &[u8]| {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((value.len() as u64).to_le_bytes());
            h.update(value);
        };
        field("builder", BUILDER_VERSION.as_bytes());
        field("base", base_identity.as_bytes());
        field("size", &self.size_bytes.unwrap_or(0).to_le_bytes());
        for p in &self.packages {
            field("package", p.as_bytes());
        }
        field("recommends", &[self.install_recommends as u8]);
        if self.modules {
            field("modules", kernel_version.unwrap_or("none").as_bytes());
        }
        for line in &self.apt_sources {
            field("apt-source", line.as_bytes());
        }
        for copy in &self.copy {
            field("copy", copy.guest.as_bytes());
            field("tree", tree_digest(&copy.host)?.as_bytes());
        }
        for script in &self.run {
            field("run", tree_digest(script)?.as_bytes());
        }
        Ok(hex(&h.finalize()))
    }
}

/// What identifies an image's contents for the cache: a built image's own
/// build key (so a chain of builds stays cached across rebuilds of the
/// same inputs), else what its record and file say about that version.
pub fn image_identity(image: &ImageRecord) -> String {
    if let Some(key) = &image.build_key {
        return key.clone();
    }
    let file = std::fs::metadata(&image.rootfs_path).ok();
    let (len, mtime, ino) = file.map_or((0, 0, 0), |m| {
        use std::os::unix::fs::MetadataExt;
        (m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000, m.ino())
    });
    let text = format!(
        "import:{}:{}:{}:{}:{len}:{mtime}:{ino}",
        image.name,
        image.id,
        image.created_at,
        image.rootfs_path.display()
    );
    hex(&Sha256::digest(text.as_bytes()))
}

/// A digest of a file, or of a directory tree (names, types, modes,
/// contents and link targets, in a stable order).
fn tree_digest(path: &Path) -> Result<String, SpecError> {
    let mut h = Sha256::new();
    walk(path, Path::new(""), &mut h)?;
    Ok(hex(&h.finalize()))
}

fn walk(path: &Path, rel: &Path, h: &mut Sha256) -> Result<(), SpecError> {
    use std::os::unix::fs::PermissionsExt;
    let read_err = |source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::symlink_metadata(path).map_err(read_err)?;
    h.update(rel.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(meta.permissions().mode().to_le_bytes());
    if meta.file_type().is_symlink() {
        h.update(b"l");
        let target = std::fs::read_link(path).map_err(read_err)?;
        h.update(target.as_os_str().as_encoded_bytes());
    } else if meta.is_dir() {
        h.update(b"d");
        let mut names: Vec<_> = std::fs::read_dir(path)
            .map_err(read_err)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(read_err)?;
        names.sort();
        for name in names {
            walk(&path.join(&name), &rel.join(&name), h)?;
        }
    } else {
        h.update(b"f");
        h.update(meta.len().to_le_bytes());
        h.update(crate::system::fs::content_digest(path, &meta).map_err(read_err)?);
    }
    Ok(())
}

/// A Debian package name (`[a-z0-9][a-z0-9+.-]+`), optionally with an
/// architecture (`:amd64`) and a version (`=1.2-3`) or release (`/bookworm`).
pub fn valid_package(p: &str) -> bool {
    let (name, pin) = match p.find(['=', '/']) {
        Some(i) => (&p[..i], Some(&p[i + 1..])),
        None => (p, None),
    };
    let name = name.split_once(':').map_or(name, |(n, arch)| {
        if arch.is_empty() || !arch.bytes().all(|b| b.is_ascii_alphanumeric()) {
            ""
        } else {
            n
        }
    });
    let name_ok = name.len() >= 2
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'.' | b'-')
        });
    let pin_ok = pin.is_none_or(|v| {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'~' | b':' | b'-'))
    });
    name_ok && pin_ok
}

/// An absolute guest path with no `..`, not `/` itself, printable.
pub fn valid_guest_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.trim_end_matches('/').is_empty()
        && !p.split('/').any(|c| c == "..")
        && !p.chars().any(char::is_control)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> BuildImage {
        BuildImage {
            name: "img".into(),
            packages: vec!["curl".into(), "git".into(), "curl".into()],
            ..BuildImage::default()
        }
    }

    #[test]
    fn packages_are_checked() {
        for good in [
            "curl",
            "libc6:amd64",
            "g++",
            "python3.11",
            "hello=2.10-3",
            "nginx/bookworm",
        ] {
            assert!(valid_package(good), "{good}");
        }
        for bad in [
            "", "a", "Curl", "-x", "curl;rm", "a b", "x=", "x:", "curl=1 2", "$(id)",
        ] {
            assert!(!valid_package(bad), "{bad}");
        }
    }

    #[test]
    fn guest_paths_are_checked() {
        assert!(valid_guest_path("/etc/motd"));
        assert!(valid_guest_path("/opt/app/"));
        for bad in ["", "/", "//", "etc/motd", "/a/../b", "/a\nb"] {
            assert!(!valid_guest_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_spec_is_normalized() {
        let spec = Spec::from_request(&req(), "default").unwrap();
        assert_eq!(spec.from, "default");
        assert_eq!(spec.packages, ["curl", "git"]);
        let err = Spec::from_request(
            &BuildImage {
                apt_sources: vec!["deb x\ndeb y".into()],
                ..req()
            },
            "default",
        )
        .unwrap_err();
        assert!(matches!(err, SpecError::BadAptSource(_)), "{err}");
    }

    #[test]
    fn the_key_follows_the_inputs_not_their_order_or_place() {
        let (dir, script) = crate::testing::temp_file("setup.sh", "echo one\n");
        let with_script = |r: BuildImage| BuildImage {
            run: vec![script.clone()],
            ..r
        };
        let spec = Spec::from_request(&with_script(req()), "default").unwrap();
        let key = spec.build_key("base-1", None).unwrap();

        // Package order and duplicates do not matter.
        let reordered = BuildImage {
            packages: vec!["git".into(), "curl".into()],
            ..with_script(req())
        };
        let same = Spec::from_request(&reordered, "default").unwrap();
        assert_eq!(same.build_key("base-1", None).unwrap(), key);

        // A moved script with the same contents is the same input.
        let moved = dir.path().join("moved.sh");
        std::fs::copy(&script, &moved).unwrap();
        let spec_moved = Spec {
            run: vec![moved],
            ..spec.clone()
        };
        assert_eq!(spec_moved.build_key("base-1", None).unwrap(), key);

        // Another base, other contents, or modules for another kernel differ.
        assert_ne!(spec.build_key("base-2", None).unwrap(), key);
        std::fs::write(&script, "echo two\n").unwrap();
        let changed = spec.build_key("base-1", None).unwrap();
        assert_ne!(changed, key);
        let modules = Spec {
            modules: true,
            ..spec.clone()
        };
        assert_ne!(
            modules.build_key("base-1", Some("6.1")).unwrap(),
            modules.build_key("base-1", Some("6.2")).unwrap()
        );
    }

    #[test]
    fn a_sparse_file_is_hashed_by_its_data_and_holes() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for (path, at) in [(&a, 1 << 20), (&b, 2 << 20)] {
            let f = std::fs::File::create(path).unwrap();
            f.set_len(64 << 20).unwrap();
            f.write_all_at(b"data", at).unwrap();
        }
        // Same bytes at other offsets are other contents.
        assert_ne!(tree_digest(&a).unwrap(), tree_digest(&b).unwrap());
        assert_eq!(tree_digest(&a).unwrap(), tree_digest(&a).unwrap());
        // A change is seen even within the same second (ctime moves).
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&a)
            .unwrap()
            .write_all_at(b"DATA", 1 << 20)
            .unwrap();
        let changed = tree_digest(&a).unwrap();
        assert_ne!(changed, tree_digest(&b).unwrap());
    }

    #[test]
    fn a_tree_digest_sees_modes_links_and_contents() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("f"), "x").unwrap();
        std::os::unix::fs::symlink("f", root.join("link")).unwrap();
        let first = tree_digest(&root).unwrap();
        assert_eq!(tree_digest(&root).unwrap(), first);
        std::fs::set_permissions(root.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let moded = tree_digest(&root).unwrap();
        assert_ne!(moded, first);
        std::fs::remove_file(root.join("link")).unwrap();
        std::os::unix::fs::symlink("g", root.join("link")).unwrap();
        assert_ne!(tree_digest(&root).unwrap(), moded);
    }
}
