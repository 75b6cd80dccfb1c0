//! Paths resolved beneath a directory and never through a symlink
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`): how hostile
//! archives (a guest's `tar` stream, an image's layers) are laid out on the
//! host without a member landing anywhere else.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};

/// A directory every path is resolved beneath, never through a symlink.
pub struct Beneath(OwnedFd);

impl Beneath {
    /// The directory itself (an `O_PATH` descriptor).
    pub fn fd(&self) -> &OwnedFd {
        &self.0
    }

    const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
        .union(ResolveFlags::NO_SYMLINKS)
        .union(ResolveFlags::NO_MAGICLINKS);

    pub fn open(dir: &Path) -> io::Result<Beneath> {
        let fd = rfs::open(
            dir,
            OFlags::DIRECTORY | OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Beneath(fd))
    }

    /// The directory holding relative path `at`, opened beneath this one,
    /// and `at`'s last component.
    pub fn parent_of<'a>(&self, at: &'a Path) -> io::Result<(OwnedFd, &'a OsStr)> {
        let leaf = at
            .file_name()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let parent = at.parent().filter(|p| !p.as_os_str().is_empty());
        let fd = self.open_path(
            parent.unwrap_or(Path::new(".")),
            OFlags::DIRECTORY | OFlags::PATH,
        )?;
        Ok((fd, leaf))
    }

    /// Directory `at`, opened beneath this one to change its mode and times.
    pub fn open_dir(&self, at: &Path) -> io::Result<File> {
        Ok(File::from(
            self.open_path(at, OFlags::DIRECTORY | OFlags::RDONLY)?,
        ))
    }

    pub fn open_path(&self, at: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        Ok(rfs::openat2(
            &self.0,
            at,
            flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            Self::RESOLVE,
        )?)
    }
}
