//! OCI test fixtures: layers written here (tar, gzip), OCI image layouts,
//! and a real registry on loopback (Debian's `docker-registry`) that
//! layouts are pushed to with `skopeo` (a test tool only).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sha2::Digest;

/// One layer being written: a gzip-compressed tar.
pub struct Layer {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Layer {
            tar: tar::Builder::new(Vec::new()),
        }
    }
}

fn header(kind: tar::EntryType, mode: u32, owner: (u64, u64)) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(owner.0);
    h.set_gid(owner.1);
    h.set_mtime(1_700_000_000);
    h.set_size(0);
    h
}

impl Layer {
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = header(tar::EntryType::Directory, mode, (0, 0));
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }

    pub fn file(self, path: &str, contents: &[u8], mode: u32) -> Self {
        self.owned_file(path, contents, mode, (0, 0))
    }

    pub fn owned_file(mut self, path: &str, contents: &[u8], mode: u32, owner: (u64, u64)) -> Self {
        let mut h = header(tar::EntryType::Regular, mode, owner);
        h.set_size(contents.len() as u64);
        self.tar.append_data(&mut h, path, contents).unwrap();
        self
    }

    /// A file with an extended attribute (PAX `SCHILY.xattr.NAME`).
    pub fn file_with_xattr(mut self, path: &str, contents: &[u8], xattr: (&str, &[u8])) -> Self {
        let key = format!("SCHILY.xattr.{}", xattr.0);
        self.tar
            .append_pax_extensions([(key.as_str(), xattr.1)])
            .unwrap();
        self.file(path, contents, 0o755)
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, (0, 0));
        self.tar.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Link, 0o644, (0, 0));
        self.tar.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn char_device(mut self, path: &str, major: u32, minor: u32) -> Self {
        let mut h = header(tar::EntryType::Char, 0o666, (0, 0));
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }

    /// A whiteout: `path` of lower layers is gone.
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, leaf) = path.rsplit_once('/').unwrap_or(("", path));
        let name = match dir {
            "" => format!(".wh.{leaf}"),
            dir => format!("{dir}/.wh.{leaf}"),
        };
        self.file(&name, b"", 0o644)
    }

    /// An opaque marker: what lower layers put in `dir` is hidden.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    /// A member whose name is written as is (the tar crate refuses `..`).
    pub fn raw_member(mut self, name: &str, contents: &[u8]) -> Self {
        let mut h = header(tar::EntryType::Regular, 0o644, (0, 0));
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(contents.len() as u64);
        h.set_cksum();
        self.tar.append(&h, contents).unwrap();
        self
    }

    /// The layer, uncompressed.
    pub fn finish_tar(self) -> Vec<u8> {
        self.tar.into_inner().unwrap()
    }

    /// The layer, gzip-compressed.
    pub fn finish(self) -> Vec<u8> {
        let tar = self.tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    let digest = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// A layer's tar: gzip and zstd undone, a plain tar as it is.
pub fn uncompressed(layer: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut reader: Box<dyn std::io::Read + '_> = if layer.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(layer))
    } else if layer.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(ruzstd::decoding::StreamingDecoder::new(layer).unwrap())
    } else {
        Box::new(layer)
    };
    reader.read_to_end(&mut raw).unwrap();
    raw
}

/// An OCI image layout being written at a directory.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    /// Stores `bytes` as a blob; its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> serde_json::Value {
        let digest = sha256(bytes);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(self.dir.join("blobs/sha256").join(hex), bytes).unwrap();
        serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
    }

    /// An image of `layers` (bottom first); its manifest's descriptor.
    pub fn image(&self, layers: &[Vec<u8>], arch: &str) -> serde_json::Value {
        let descriptors: Vec<_> = layers
            .iter()
            .map(|l| self.blob("application/vnd.oci.image.layer.v1.tar+gzip", l))
            .collect();
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(&uncompressed(l))).collect();
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/root"},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            config.to_string().as_bytes(),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config, "layers": descriptors,
        });
        let mut desc = self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string().as_bytes(),
        );
        desc["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        desc
    }

    /// An image index of `manifests`; its descriptor.
    pub fn index(&self, manifests: &[serde_json::Value]) -> serde_json::Value {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        self.blob(
            "application/vnd.oci.image.index.v1+json",
            index.to_string().as_bytes(),
        )
    }

    /// A layout at `dir` holding one linux/amd64 image of `layers`, tagged
    /// `v1`; and its manifest's descriptor.
    pub fn single(dir: &Path, layers: &[Vec<u8>]) -> (Layout, serde_json::Value) {
        let layout = Layout::new(dir);
        let manifest = layout.image(layers, "amd64");
        layout.tag(&manifest, "v1");
        (layout, manifest)
    }

    /// Names `desc` `tag` in the layout's index.json.
    pub fn tag(&self, desc: &serde_json::Value, tag: &str) {
        let mut desc = desc.clone();
        desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [desc]});
        std::fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }
}

/// A registry on 127.0.0.1, storing in a directory of its own.
pub struct Registry {
    pub addr: String,
    pub storage: PathBuf,
    pub log: PathBuf,
    child: Child,
    /// `user:password` when it asks for them (htpasswd).
    pub creds: Option<String>,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts one, or says why it cannot (and returns `None`).
    pub fn start(with_password: bool) -> Option<Registry> {
        if !super::installed("docker-registry", "docker-registry")
            || !super::installed("skopeo", "skopeo")
            || (with_password && !super::installed("htpasswd", "apache2-utils"))
        {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let storage = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        let creds = with_password.then(|| "alice:s3cret".to_string());
        if with_password {
            let htpasswd = dir.path().join("htpasswd");
            let out = super::run(Command::new("htpasswd").args(["-nbB", "alice", "s3cret"]));
            std::fs::write(&htpasswd, out.stdout).unwrap();
            config += &format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config).unwrap();
        let log = dir.path().join("registry.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(Registry {
            addr,
            storage,
            log,
            child,
            creds,
            _dir: dir,
        })
    }

    /// Pushes `tag` of `layout` (with every platform of an index) as
    /// `repo:tag`; returns `ADDR/repo:tag`.
    pub fn push(&self, layout: &Layout, tag: &str, repo: &str) -> String {
        let reference = format!("{}/{repo}:{tag}", self.addr);
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--all", "--dest-tls-verify=false", "--quiet"]);
        if let Some(creds) = &self.creds {
            cmd.args(["--dest-creds", creds]);
        }
        cmd.arg(format!("oci:{}:{tag}", layout.dir.display()))
            .arg(format!("docker://{reference}"));
        super::run(&mut cmd);
        reference
    }

    /// `layers` as image `repo:v1` here (through a layout at `dir`): its
    /// reference and its manifest's descriptor.
    pub fn publish(
        &self,
        dir: &Path,
        repo: &str,
        layers: &[Vec<u8>],
    ) -> (String, serde_json::Value) {
        let (layout, manifest) = Layout::single(dir, layers);
        (self.push(&layout, "v1", repo), manifest)
    }

    /// How many times the registry was asked for blob `digest`'s content.
    pub fn blob_gets(&self, digest: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        // The access log's lines: `... "GET /v2/REPO/blobs/DIGEST HTTP/1.1" 200 ... "oci-client/..."`.
        let asked = format!("/blobs/{digest} HTTP");
        log.lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&asked) && l.contains("oci-client"))
            .count()
    }

    /// The file the registry keeps blob `digest` in.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A layer of busybox-static alone (`bin/busybox`, `bin/sh`): an image
/// with no init, no sshd and no package database. None, saying why,
/// without busybox-static.
pub fn busybox_layer() -> Option<Vec<u8>> {
    let busybox = std::fs::read("/bin/busybox")
        .ok()
        .filter(|b| b.len() > 500_000);
    let Some(busybox) = busybox else {
        super::skip("/bin/busybox is not busybox-static (apt-get install busybox-static)");
        return None;
    };
    Some(
        Layer::default()
            .dir("bin", 0o755)
            .file("bin/busybox", &busybox, 0o755)
            .symlink("bin/sh", "busybox")
            .finish(),
    )
}

/// The runtime bundle's root filesystem as one gzip layer (through a tree
/// dumped under `work`, removed again), and how many bytes it unpacks to.
pub fn bundle_rootfs_layer(work: &Path) -> (Vec<u8>, u64) {
    let tree = work.join("rootfs-tree");
    std::fs::create_dir_all(&tree).unwrap();
    super::run(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump / {}", tree.display()))
            .arg(super::vms::runtime_dir().join("rootfs.ext4")),
    );
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    tar.follow_symlinks(false);
    tar.append_dir_all(".", &tree).unwrap();
    let layer = tar.into_inner().unwrap().finish().unwrap();
    let du = super::run(Command::new("du").arg("-sb").arg(&tree));
    let unpacked = super::stdout(&du)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    std::fs::remove_dir_all(&tree).unwrap();
    (layer, unpacked)
}
