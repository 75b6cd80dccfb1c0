//! Image layers laid out as one tree on the host, the way an overlay of
//! them would look, plus what the tree cannot hold (owners, exact modes,
//! device nodes, extended attributes) as [`InodeFix`]es for the ext4 image.
//!
//! Layers are hostile: every member is resolved beneath the tree and never
//! through a symlink ([`Beneath`]), `..` anywhere is refused, hard links
//! only join two members of the image, and nothing on the host gets a
//! setuid bit or another owner (the tree is the daemon's, mode 0700; the
//! image gets the real modes and owners afterwards, through debugfs).

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, FileTimes};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use tar::EntryType;

use crate::system::beneath::Beneath;
use crate::system::debugfs::InodeFix;

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer member `{member}` {why}; the image is refused")]
    Refused { member: String, why: &'static str },
    #[error("cannot read the layer")]
    Read(#[source] io::Error),
    #[error("cannot write {path} on the host")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the layer is compressed with zstd, which banger cannot read yet; use a gzip or uncompressed image"
    )]
    Zstd,
}

/// What one entry of the image must be.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    /// The whole `st_mode`.
    mode: u32,
    uid: u32,
    gid: u32,
    /// A device node or FIFO, made in the image rather than on the host.
    node: Option<(char, u32, u32)>,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// The merged tree of an image's layers, being built.
pub struct Tree {
    root: PathBuf,
    dir: Beneath,
    /// Every entry of the image by path relative to the root ("" is `/`).
    wanted: BTreeMap<PathBuf, Wanted>,
    /// What the layer being applied wrote (an opaque directory keeps it).
    this_layer: HashSet<PathBuf>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

impl Tree {
    /// An empty tree at `root` (created, mode 0700).
    pub fn new(root: &Path) -> Result<Tree, UnpackError> {
        let write = |source| UnpackError::Write {
            path: root.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(root).map_err(write)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).map_err(write)?;
        let dir = Beneath::open(root).map_err(write)?;
        let mut wanted = BTreeMap::new();
        wanted.insert(PathBuf::new(), dir_wanted(0o755));
        Ok(Tree {
            root: root.to_path_buf(),
            dir,
            wanted,
            this_layer: HashSet::new(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Applies one layer (a tar stream: plain, gzip or zstd).
    pub fn apply(&mut self, layer: impl Read) -> Result<(), UnpackError> {
        let mut layer = io::BufReader::new(layer);
        let magic = io::BufRead::fill_buf(&mut layer).map_err(UnpackError::Read)?;
        let zstd = magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
        let gzip = magic.starts_with(&[0x1f, 0x8b]);
        self.this_layer.clear();
        if zstd {
            let frame = ruzstd::decoding::StreamingDecoder::new(layer)
                .map_err(|e| UnpackError::Read(io::Error::other(e)))?;
            self.apply_tar(frame)
        } else if gzip {
            self.apply_tar(flate2::read::GzDecoder::new(layer))
        } else {
            self.apply_tar(layer)
        }
    }

    fn apply_tar(&mut self, input: impl Read) -> Result<(), UnpackError> {
        let mut archive = tar::Archive::new(input);
        for entry in archive.entries().map_err(UnpackError::Read)? {
            let mut entry = entry.map_err(UnpackError::Read)?;
            let name = entry.path().map_err(UnpackError::Read)?.into_owned();
            let at = inside(&name)?;
            let leaf = at.file_name().and_then(|l| l.to_str()).unwrap_or("");
            if leaf == ".wh..wh..opq" {
                let dir = at.parent().unwrap_or(Path::new("")).to_path_buf();
                self.make_opaque(&dir, &name)?;
                continue;
            }
            if let Some(hidden) = leaf.strip_prefix(".wh.") {
                let gone = at.with_file_name(hidden);
                self.remove(&gone, &name)?;
                continue;
            }
            self.add(&mut entry, &at, &name)?;
        }
        // Whatever follows the archive's end (padding) is read, so a
        // digest over the whole blob sees every byte.
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(UnpackError::Read)?;
        Ok(())
    }

    fn add<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        at: &Path,
        name: &Path,
    ) -> Result<(), UnpackError> {
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().map_err(UnpackError::Read)? & 0o7777;
        let uid = header.uid().map_err(UnpackError::Read)? as u32;
        let gid = header.gid().map_err(UnpackError::Read)? as u32;
        let mtime = header.mtime().unwrap_or(0);
        let xattrs = xattrs(entry)?;
        if at.as_os_str().is_empty() {
            // The root itself: only what it must be.
            if kind == EntryType::Directory {
                self.wanted.insert(
                    PathBuf::new(),
                    Wanted {
                        xattrs,
                        uid,
                        gid,
                        ..dir_wanted(mode)
                    },
                );
            }
            return Ok(());
        }
        self.make_parents(at, name)?;
        let (parent, leaf) = self
            .dir
            .parent_of(at)
            .map_err(|e| escape(name, e, "would be written through a symlink or a file"))?;
        let host_path = self.root.join(at);
        let write = move |source: io::Error| UnpackError::Write {
            path: host_path.clone(),
            source,
        };
        let mut wanted = Wanted {
            mode,
            uid,
            gid,
            node: None,
            xattrs,
        };
        match kind {
            EntryType::Directory => {
                match rfs::statat(&parent, leaf, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    Ok(_) => {
                        self.remove(at, name)?;
                        mkdir(&parent, leaf).map_err(&write)?;
                    }
                    Err(_) => mkdir(&parent, leaf).map_err(&write)?,
                }
                wanted.mode |= S_IFDIR;
                let staged = staged_dir_mode(mode);
                set_mode_at(&self.dir, at, staged).map_err(&write)?;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.remove(at, name)?;
                let fd = rfs::openat(
                    &parent,
                    leaf,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| write(e.into()))?;
                let mut file = File::from(fd);
                io::copy(entry, &mut file).map_err(UnpackError::Read)?;
                let when = UNIX_EPOCH + Duration::from_secs(mtime.min(u32::MAX as u64));
                file.set_times(FileTimes::new().set_modified(when))
                    .map_err(&write)?;
                file.set_permissions(std::fs::Permissions::from_mode(staged_file_mode(mode)))
                    .map_err(&write)?;
                wanted.mode |= S_IFREG;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Read)?
                    .ok_or_else(|| refused(name, "is a symlink without a target"))?;
                self.remove(at, name)?;
                // Never followed while unpacking: an absolute target means
                // the image's own root, once it boots.
                rfs::symlinkat(target.as_ref(), &parent, leaf).map_err(|e| write(e.into()))?;
                wanted.mode = S_IFLNK | 0o777;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Read)?
                    .ok_or_else(|| refused(name, "is a hard link without a target"))?;
                let source = inside(&target)?;
                let (src_parent, src_leaf, found) =
                    self.lookup(&source, name, "is a hard link through a symlink")?;
                if found != Some(FileType::RegularFile) {
                    return Err(refused(name, "is a hard link to no file of the image"));
                }
                self.remove(at, name)?;
                rfs::linkat(&src_parent, src_leaf, &parent, leaf, AtFlags::empty())
                    .map_err(|e| write(e.into()))?;
                wanted = self
                    .wanted
                    .get(&source)
                    .cloned()
                    .ok_or_else(|| refused(name, "is a hard link to no file of the image"))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.remove(at, name)?;
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let (kind, ifmt) = match kind {
                    EntryType::Char => ('c', 0o020000),
                    EntryType::Block => ('b', 0o060000),
                    _ => ('p', 0o010000),
                };
                wanted.mode |= ifmt;
                wanted.node = Some((kind, major, minor));
            }
            EntryType::XGlobalHeader | EntryType::XHeader => return Ok(()),
            _ => {
                tracing::warn!(member = %name.display(), ?kind, "skipping an unknown layer member");
                return Ok(());
            }
        }
        self.this_layer.insert(at.to_path_buf());
        self.wanted.insert(at.to_path_buf(), wanted);
        Ok(())
    }

    /// `at`'s parent directory (reached without following a symlink, or
    /// member `name` is refused as one that `why`), its leaf, and the type
    /// of what is there (`None`: nothing).
    fn lookup<'a>(
        &self,
        at: &'a Path,
        name: &Path,
        why: &'static str,
    ) -> Result<(std::os::fd::OwnedFd, &'a std::ffi::OsStr, Option<FileType>), UnpackError> {
        let (parent, leaf) = self.dir.parent_of(at).map_err(|e| escape(name, e, why))?;
        let found = rfs::statat(&parent, leaf, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .map(|st| FileType::from_raw_mode(st.st_mode));
        Ok((parent, leaf, found))
    }

    /// Creates the missing directories above `at` (root's, 0755), as a
    /// layer that names `a/b/c` without `a/b` expects.
    fn make_parents(&mut self, at: &Path, name: &Path) -> Result<(), UnpackError> {
        let mut dir = PathBuf::new();
        for part in at.parent().into_iter().flat_map(Path::components) {
            dir.push(part);
            if self
                .wanted
                .get(&dir)
                .is_some_and(|w| w.mode & 0o170000 == S_IFDIR)
            {
                continue;
            }
            let why = "would be written through a symlink or a file";
            match self.lookup(&dir, name, why)? {
                (_, _, Some(FileType::Directory)) => {}
                (_, _, Some(_)) => return Err(refused(name, why)),
                (parent, leaf, None) => {
                    mkdir(&parent, leaf).map_err(|source| UnpackError::Write {
                        path: self.root.join(&dir),
                        source,
                    })?
                }
            }
            self.wanted.insert(dir.clone(), dir_wanted(0o755));
        }
        Ok(())
    }

    /// Removes `at` and everything under it, from the host and the image:
    /// a member is created anew in its place, never written through it.
    fn remove(&mut self, at: &Path, name: &Path) -> Result<(), UnpackError> {
        if at.as_os_str().is_empty() {
            return Err(refused(name, "would remove the image's root"));
        }
        let (parent, leaf) = match self.dir.parent_of(at) {
            Ok(found) => found,
            // Its directory is not there (or is a device node): nothing to remove.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget(at);
                return Ok(());
            }
            Err(e) => return Err(escape(name, e, "would remove through a symlink or a file")),
        };
        let host = PathBuf::from(format!("/proc/self/fd/{}", fd_number(&parent))).join(leaf);
        let removed = match rfs::statat(&parent, leaf, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                // remove_dir_all never follows a symlink inside the tree.
                std::fs::remove_dir_all(&host)
            }
            Ok(_) => rfs::unlinkat(&parent, leaf, AtFlags::empty()).map_err(io::Error::from),
            Err(_) => Ok(()),
        };
        removed.map_err(|source| UnpackError::Write {
            path: self.root.join(at),
            source,
        })?;
        self.forget(at);
        Ok(())
    }

    /// Forgets `at` and what is under it.
    fn forget(&mut self, at: &Path) {
        let under: Vec<PathBuf> = self
            .wanted
            .range(at.to_path_buf()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(at))
            .cloned()
            .collect();
        for path in under {
            self.wanted.remove(&path);
        }
    }

    /// `.wh..wh..opq`: what lower layers put in `dir` is hidden; what this
    /// layer put there stays.
    fn make_opaque(&mut self, dir: &Path, name: &Path) -> Result<(), UnpackError> {
        let children: Vec<PathBuf> = self
            .wanted
            .range(dir.to_path_buf()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(dir))
            .filter(|p| p.parent() == Some(dir) && p.as_path() != dir)
            .cloned()
            .collect();
        for child in children {
            if !self.this_layer.contains(&child) {
                self.remove(&child, name)?;
            }
        }
        Ok(())
    }

    /// Adds the directories every Linux root needs and an image built
    /// `FROM scratch` may lack (mount points, /tmp, /root), as root's.
    pub fn add_standard_dirs(&mut self) -> Result<(), UnpackError> {
        for (dir, mode) in [
            ("dev", 0o755),
            ("proc", 0o555),
            ("sys", 0o555),
            ("run", 0o755),
            ("tmp", 0o1777),
            ("root", 0o700),
            ("etc", 0o755),
        ] {
            let at = PathBuf::from(dir);
            if self.wanted.contains_key(&at) {
                continue;
            }
            let (parent, leaf) = self
                .dir
                .parent_of(&at)
                .map_err(|source| UnpackError::Write {
                    path: self.root.join(dir),
                    source,
                })?;
            mkdir(&parent, leaf).map_err(|source| UnpackError::Write {
                path: self.root.join(dir),
                source,
            })?;
            set_mode_at(&self.dir, &at, staged_dir_mode(mode)).map_err(|source| {
                UnpackError::Write {
                    path: self.root.join(dir),
                    source,
                }
            })?;
            self.wanted.insert(at, dir_wanted(mode));
        }
        Ok(())
    }

    /// Reads a regular file of the image (never through a symlink), if it
    /// is there.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        let fd = self.dir.open_path(Path::new(path), OFlags::RDONLY).ok()?;
        let mut file = File::from(fd);
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }

    /// Number of entries in the image.
    pub fn entries(&self) -> u64 {
        self.wanted.len() as u64
    }

    /// What debugfs must set for the image to hold what the layers say,
    /// given the tree's files belong to `uid:gid` on the host.
    pub fn fixes(&self, (uid, gid): (u32, u32)) -> Result<Vec<InodeFix>, UnpackError> {
        let mut fixes = Vec::new();
        for (path, wanted) in &self.wanted {
            let staged = match wanted.mode & 0o170000 {
                S_IFDIR => Some(S_IFDIR | staged_dir_mode(wanted.mode)),
                S_IFREG => Some(S_IFREG | staged_file_mode(wanted.mode)),
                S_IFLNK => Some(wanted.mode),
                _ => None,
            };
            // The root is the tree's own directory (0700): always set.
            let same = !path.as_os_str().is_empty()
                && staged == Some(wanted.mode)
                && (wanted.uid, wanted.gid) == (uid, gid)
                && wanted.node.is_none()
                && wanted.xattrs.is_empty();
            if same {
                continue;
            }
            let text = path.to_str().ok_or_else(|| UnpackError::Refused {
                member: path.display().to_string(),
                why: "has a name that is not UTF-8, which banger cannot give an owner",
            })?;
            fixes.push(InodeFix {
                path: format!("/{text}"),
                mode: wanted.mode,
                uid: wanted.uid,
                gid: wanted.gid,
                node: wanted.node,
                xattrs: wanted.xattrs.clone(),
            });
        }
        Ok(fixes)
    }
}

/// Bytes the tree takes on disk, in 4 KiB blocks (each hard link once).
pub fn tree_bytes(root: &Path) -> u64 {
    fn walk(dir: &Path, seen: &mut HashSet<u64>) -> u64 {
        let mut total = 4096;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                total += walk(&entry.path(), seen);
            } else if meta.nlink() < 2 || seen.insert(meta.ino()) {
                total += meta.len().div_ceil(4096) * 4096 + 256;
            }
        }
        total
    }
    walk(root, &mut HashSet::new())
}

/// A directory's mode on the host: its own, but always the owner's to
/// walk and write (a layer may add to a directory the image made 0555).
fn staged_dir_mode(mode: u32) -> u32 {
    (mode & 0o777) | 0o700
}

/// A file's mode on the host: no setuid, setgid or sticky bit, and always
/// readable by its owner (mkfs reads it).
fn staged_file_mode(mode: u32) -> u32 {
    (mode & 0o777) | 0o400
}

fn dir_wanted(mode: u32) -> Wanted {
    Wanted {
        mode: S_IFDIR | (mode & 0o7777),
        uid: 0,
        gid: 0,
        node: None,
        xattrs: Vec::new(),
    }
}

/// A new directory, mode 0755 whatever the umask (a directory of the
/// image that says otherwise gets its mode when its member comes).
fn mkdir(parent: &std::os::fd::OwnedFd, leaf: &std::ffi::OsStr) -> io::Result<()> {
    rfs::mkdirat(parent, leaf, Mode::from_raw_mode(0o700))?;
    rfs::chmodat(parent, leaf, Mode::from_raw_mode(0o755), AtFlags::empty())?;
    Ok(())
}

fn set_mode_at(dir: &Beneath, at: &Path, mode: u32) -> io::Result<()> {
    let file = dir.open_dir(at)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

fn fd_number(fd: &std::os::fd::OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

/// The member name as a path relative to the image's root: a leading `/`
/// or `./` is dropped; `..` anywhere is refused.
fn inside(name: &Path) -> Result<PathBuf, UnpackError> {
    let mut rel = PathBuf::new();
    for part in name.components() {
        match part {
            Component::Normal(p) => rel.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(refused(name, "names a path outside the image (`..`)"));
            }
        }
    }
    Ok(rel)
}

/// The extended attributes a member carries (PAX `SCHILY.xattr.*`).
fn xattrs<R: Read>(entry: &mut tar::Entry<R>) -> Result<Vec<(String, Vec<u8>)>, UnpackError> {
    let mut found = Vec::new();
    if let Some(extensions) = entry.pax_extensions().map_err(UnpackError::Read)? {
        for ext in extensions {
            let ext = ext.map_err(UnpackError::Read)?;
            if let Ok(key) = ext.key()
                && let Some(name) = key.strip_prefix("SCHILY.xattr.")
            {
                found.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(found)
}

fn refused(member: &Path, why: &'static str) -> UnpackError {
    UnpackError::Refused {
        member: member.display().to_string(),
        why,
    }
}

/// A member whose directory cannot be opened beneath the tree: a symlink
/// or a file stands in its way.
fn escape(member: &Path, source: io::Error, why: &'static str) -> UnpackError {
    match source
        .raw_os_error()
        .map(rustix::io::Errno::from_raw_os_error)
    {
        Some(rustix::io::Errno::LOOP | rustix::io::Errno::XDEV | rustix::io::Errno::NOTDIR) => {
            refused(member, why)
        }
        _ => UnpackError::Write {
            path: member.to_path_buf(),
            source,
        },
    }
}
