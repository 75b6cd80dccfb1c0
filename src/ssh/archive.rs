//! Tar archives for moving files in and out of a guest: `write_archive`
//! packs host paths under their guest names (owned by root, modes and
//! mtimes kept, symlinks kept as links); `unpack` lays a guest's `tar -c`
//! stream out on the host with `cp -r` naming, refusing anything that would
//! land outside the destination. Both are blocking; the session runs them
//! on the blocking pool and streams the bytes.

use std::ffi::OsStr;
use std::fs::{self, File, FileTimes};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use tar::{EntryType, Header, HeaderMode};

use crate::system::beneath::Beneath;

/// One host path and where it lands in the guest (absolute guest path). A
/// directory lands as that directory, with its whole tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub host: PathBuf,
    pub guest: String,
}

/// Writes a tar archive (GNU/ustar via the tar crate) of `entries` to
/// `out`: member names are the guest paths without the leading '/', uid/gid
/// 0 (regular files carry the host's; `tar --no-same-owner` drops them),
/// holes in files stored as GNU sparse entries, file modes and mtimes from the host, symlinks
/// stored as symlinks (not followed), empty directories included,
/// directories before their contents. Validates guest paths (absolute, no
/// `..` components, not `/` itself) with a clear error.
pub fn write_archive(entries: &[Entry], out: impl Write) -> io::Result<()> {
    let names = entries
        .iter()
        .map(|e| member_name(&e.guest))
        .collect::<io::Result<Vec<_>>>()?;
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    for (entry, name) in entries.iter().zip(names) {
        append_tree(&mut builder, &entry.host, &name)?;
    }
    builder.into_inner()?.flush()
}

/// The tar member name for absolute guest path `guest`: the path without
/// its leading '/', `.` and repeated slashes dropped. Refuses relative
/// paths, `..` and `/` itself, which `tar -x -C /` would misplace.
pub fn member_name(guest: &str) -> io::Result<String> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("Guest path `{guest}` {why}"),
        )
    };
    if !guest.starts_with('/') {
        return Err(bad("is not absolute"));
    }
    let mut parts = Vec::new();
    for part in guest.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(bad("may not contain `..`")),
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(bad("is the root directory; name a path under it"));
    }
    Ok(parts.join("/"))
}

/// Appends `host` as `name`, then, for a directory, its contents in name
/// order (so archives of the same tree are the same bytes).
fn append_tree<W: Write>(builder: &mut tar::Builder<W>, host: &Path, name: &str) -> io::Result<()> {
    let meta = fs::symlink_metadata(host).map_err(|e| host_error("Cannot read", host, e))?;
    let mut header = Header::new_gnu();
    header.set_metadata_in_mode(&meta, HeaderMode::Complete);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mode(meta.mode() & 0o7777);
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(host).map_err(|e| host_error("Cannot read link", host, e))?;
        header.set_size(0);
        builder.append_link(&mut header, name, &target)
    } else if kind.is_file() {
        // The builder's own file path stores holes as GNU sparse entries (a
        // 2 GiB disk image holding 300 MiB sends 300 MiB); it takes the
        // owner from the host, which the guest's `tar --no-same-owner`
        // ignores, so files still land owned by root.
        let mut file = File::open(host).map_err(|e| host_error("Cannot read", host, e))?;
        builder
            .append_file(name, &mut file)
            .map_err(|e| host_error("Cannot archive", host, e))
    } else if kind.is_dir() {
        header.set_size(0);
        builder.append_data(&mut header, name, io::empty())?;
        let mut children = fs::read_dir(host)
            .and_then(|dir| {
                dir.map(|e| e.map(|e| e.file_name()))
                    .collect::<io::Result<Vec<_>>>()
            })
            .map_err(|e| host_error("Cannot list", host, e))?;
        children.sort();
        for child in children {
            let Some(child_name) = child.to_str() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "Cannot archive {}: name is not UTF-8",
                        host.join(&child).display()
                    ),
                ));
            };
            append_tree(builder, &host.join(&child), &format!("{name}/{child_name}"))?;
        }
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "Cannot archive {}: not a file, directory or symlink",
                host.display()
            ),
        ))
    }
}

/// Unpacks a tar stream into `target` (see `Session::download`): members
/// must be `root` or under `root/`, and `root` lands at `target`, so the
/// caller picks the `cp -r` name. The stream is a guest's, so hostile:
///
/// - every path is resolved beneath `target`'s parent directory with
///   `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so no member, however
///   the archive is shaped (a symlink as the root or in the middle, `..`,
///   an absolute name), is written anywhere but at or under `target`;
/// - an existing file is replaced (unlinked, then created), never written
///   through, so a link planted earlier cannot redirect it;
/// - hard links only join two members of this copy;
/// - setuid, setgid and sticky bits are dropped; ownership is the caller's;
/// - an mtime out of range is an error, not a panic.
///
/// Modes and mtimes are kept otherwise. Device nodes, FIFOs and sockets
/// are skipped.
pub fn unpack(input: impl Read, root: &str, target: &Path) -> io::Result<()> {
    let base = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file; name one", target.display()),
        )
    })?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // The caller's own choice of directory: its path may hold symlinks.
    let dir = Beneath::open(parent).map_err(|e| host_error("Cannot open", parent, e))?;
    let base = Path::new(base);
    let mut archive = tar::Archive::new(input);
    // Directory modes and mtimes are set last: a read-only directory must
    // still take its contents, and writing them changes its mtime.
    let mut dirs: Vec<(PathBuf, u32, SystemTime)> = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.into_owned();
        let at = under(base, &relative_to_root(&name, root)?);
        let header = entry.header();
        let kind = header.entry_type();
        if !matches!(
            kind,
            EntryType::Directory
                | EntryType::Link
                | EntryType::Symlink
                | EntryType::Regular
                | EntryType::Continuous
                | EntryType::GNUSparse
        ) {
            if !matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
                tracing::warn!(member = %name.display(), ?kind, "skipping special file");
            }
            continue;
        }
        // Links carry no mode or time of their own.
        let (mode, mtime) = if matches!(kind, EntryType::Link | EntryType::Symlink) {
            (0, UNIX_EPOCH)
        } else {
            let mtime = UNIX_EPOCH
                .checked_add(Duration::from_secs(header.mtime()?))
                .ok_or_else(|| refuse(&name, "has an mtime out of range"))?;
            (header.mode()? & 0o777, mtime)
        };
        let (parent, leaf) = dir.parent_of(&at).map_err(|e| escape(&name, e))?;
        match kind {
            EntryType::Directory => {
                match rfs::statat(&parent, leaf, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    Ok(_) => {
                        return Err(refuse(&name, "exists on the host and is not a directory"));
                    }
                    Err(_) => rfs::mkdirat(&parent, leaf, Mode::from_raw_mode(0o700))
                        .map_err(|e| host_error("Cannot create", &at, e.into()))?,
                }
                dirs.push((at, mode, mtime));
            }
            EntryType::Link => {
                let Some(link) = entry.link_name()? else {
                    return Err(refuse(&name, "is a hard link without a target"));
                };
                let source = under(base, &relative_to_root(&link, root)?);
                let (src_parent, src_leaf) =
                    dir.parent_of(&source).map_err(|e| escape(&name, e))?;
                match rfs::statat(&src_parent, src_leaf, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
                    _ => {
                        return Err(refuse(
                            &name,
                            "is a hard link to no regular file of this copy",
                        ));
                    }
                }
                replace(&parent, leaf, &at)?;
                rfs::linkat(&src_parent, src_leaf, &parent, leaf, AtFlags::empty())
                    .map_err(|e| host_error("Cannot link", &at, e.into()))?;
            }
            EntryType::Symlink => {
                let Some(link) = entry.link_name()? else {
                    return Err(refuse(&name, "is a symlink without a target"));
                };
                replace(&parent, leaf, &at)?;
                // Never followed here: later members cannot pass through it.
                rfs::symlinkat(link.as_ref(), &parent, leaf)
                    .map_err(|e| host_error("Cannot create", &at, e.into()))?;
            }
            _ => {
                replace(&parent, leaf, &at)?;
                let fd = rfs::openat(
                    &parent,
                    leaf,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| host_error("Cannot create", &at, e.into()))?;
                let mut file = File::from(fd);
                io::copy(&mut entry, &mut file).map_err(|e| host_error("Cannot write", &at, e))?;
                finish(&file, mode, mtime)
                    .map_err(|e| host_error("Cannot set the mode of", &at, e))?;
            }
        }
    }
    for (at, mode, mtime) in dirs.into_iter().rev() {
        let file = dir
            .open_dir(&at)
            .map_err(|e| host_error("Cannot open", &at, e))?;
        finish(&file, mode, mtime).map_err(|e| host_error("Cannot set the mode of", &at, e))?;
    }
    // Drain GNU tar's record padding so the sender sees a clean end.
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
    Ok(())
}

/// Sets a finished file's or directory's mode and times.
fn finish(file: &File, mode: u32, mtime: SystemTime) -> io::Result<()> {
    file.set_times(FileTimes::new().set_modified(mtime).set_accessed(mtime))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

/// Removes what stands at `leaf` (not a directory) so a new member is
/// created in its place rather than written through it.
fn replace(parent: &OwnedFd, leaf: &OsStr, at: &Path) -> io::Result<()> {
    match rfs::unlinkat(parent, leaf, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => Err(refuse(
            at,
            "would replace a directory on the host with something else",
        )),
        Err(e) => Err(host_error("Cannot replace", at, e.into())),
    }
}

/// A member whose directory cannot be opened beneath the destination: a
/// symlink, a file or nothing stands in its way.
fn escape(member: &Path, source: io::Error) -> io::Error {
    match source
        .raw_os_error()
        .map(rustix::io::Errno::from_raw_os_error)
    {
        Some(rustix::io::Errno::LOOP | rustix::io::Errno::XDEV | rustix::io::Errno::NOTDIR) => {
            refuse(member, "would be written through a symlink or file")
        }
        _ => io::Error::new(
            source.kind(),
            format!(
                "Cannot unpack archive member `{}`: {source}",
                member.display()
            ),
        ),
    }
}

/// `name` with its leading `root` component removed; refuses any other
/// shape (absolute, `..`, a different root).
fn relative_to_root(name: &Path, root: &str) -> io::Result<PathBuf> {
    let mut parts = name.components().filter(|c| *c != Component::CurDir);
    if parts.next() != Some(Component::Normal(root.as_ref())) {
        return Err(refuse(name, "is outside the requested path"));
    }
    let mut rel = PathBuf::new();
    for part in parts {
        match part {
            Component::Normal(p) => rel.push(p),
            Component::CurDir => {}
            _ => return Err(refuse(name, "would land outside the destination")),
        }
    }
    Ok(rel)
}

/// `base/rel`, or `base` itself for an empty `rel` (`join("")` would add a
/// trailing slash).
fn under(base: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    }
}

fn refuse(member: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("Refusing archive member `{}`: it {why}", member.display()),
    )
}

/// An I/O error that names the host path, keeping the OS error as its
/// source (the io::Error wrapper shows this message and walks to that
/// source).
fn host_error(action: &'static str, path: &Path, source: io::Error) -> io::Error {
    io::Error::new(
        source.kind(),
        HostPathError {
            action,
            path: path.to_path_buf(),
            source,
        },
    )
}

#[derive(Debug, thiserror::Error)]
#[error("{action} {}", path.display())]
struct HostPathError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_drop_the_root_and_refuse_escapes() {
        assert_eq!(member_name("/etc/hosts").unwrap(), "etc/hosts");
        assert_eq!(member_name("//opt/./x/").unwrap(), "opt/x");
        for bad in ["etc/hosts", "", "/", "//.", "/a/../b", "/.."] {
            let err = member_name(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn write_archive_refuses_a_bad_guest_path_before_writing() {
        let entries = [Entry {
            host: PathBuf::from("/nonexistent"),
            guest: "relative/path".into(),
        }];
        let mut out = Vec::new();
        let err = write_archive(&entries, &mut out).unwrap_err();
        assert!(err.to_string().contains("is not absolute"), "{err}");
        assert!(out.is_empty());
    }

    #[test]
    fn holes_are_not_sent() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("disk.img");
        let file = File::create(&disk).unwrap();
        file.set_len(256 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, b"data", 100 << 20).unwrap();
        let mut bytes = Vec::new();
        let entries = [Entry {
            host: disk,
            guest: "/disk.img".into(),
        }];
        write_archive(&entries, &mut bytes).unwrap();
        assert!(
            bytes.len() < 1 << 20,
            "{} bytes for 4 bytes of data",
            bytes.len()
        );
        let mut archive = tar::Archive::new(&bytes[..]);
        let out = tmp.path().join("out");
        archive.unpack(&out).unwrap();
        let back = fs::read(out.join("disk.img")).unwrap();
        assert_eq!(back.len(), 256 << 20);
        assert_eq!(&back[100 << 20..(100 << 20) + 4], b"data");
    }

    #[test]
    fn archives_are_root_owned_and_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("empty")).unwrap();
        fs::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("run.sh", src.join("link")).unwrap();
        let mut bytes = Vec::new();
        let entries = [Entry {
            host: src.clone(),
            guest: "/opt/app".into(),
        }];
        write_archive(&entries, &mut bytes).unwrap();

        let mut names = Vec::new();
        for entry in tar::Archive::new(&bytes[..]).entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            if !h.entry_type().is_file() {
                assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            }
            names.push(entry.path().unwrap().display().to_string());
        }
        assert_eq!(
            names,
            ["opt/app", "opt/app/empty", "opt/app/link", "opt/app/run.sh"]
        );

        // The archive has no `opt` member itself: `out` stands for it.
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        unpack(&bytes[..], "opt", &out).unwrap();
        let app = out.join("app");
        assert!(app.join("empty").is_dir());
        assert_eq!(
            fs::read_link(app.join("link")).unwrap(),
            Path::new("run.sh")
        );
        let mode = fs::metadata(app.join("run.sh")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o750);
    }

    #[test]
    fn unpack_refuses_members_outside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["other/file", "../file"] {
            let bytes = one_file_archive(name);
            let err = unpack(&bytes[..], "root", tmp.path()).unwrap_err();
            assert!(err.to_string().contains("Refusing"), "{name}: {err}");
        }
    }

    #[test]
    fn unpack_refuses_writing_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, "root/escape", &outside)
            .unwrap();
        let mut header = Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "root/escape/owned", &b"x"[..])
            .unwrap();
        let bytes = builder.into_inner().unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let err = unpack(&bytes[..], "root", &dest).unwrap_err();
        assert!(err.to_string().contains("through a symlink"), "{err}");
        assert!(dest.join("escape").is_symlink());
        assert!(!outside.join("owned").exists());
    }

    /// An archive of `members`: (name, kind, link target or data, mode, mtime).
    fn hostile(members: &[(&str, EntryType, &str, u32, u64)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for &(name, kind, what, mode, mtime) in members {
            let mut header = Header::new_gnu();
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_mtime(mtime);
            match kind {
                EntryType::Symlink | EntryType::Link => {
                    header.set_size(0);
                    builder.append_link(&mut header, name, what).unwrap();
                }
                _ => {
                    header.set_size(what.len() as u64);
                    builder
                        .append_data(&mut header, name, what.as_bytes())
                        .unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    /// The attack the security review made: the copy's root is a symlink
    /// to a host directory, and the next member is written through it.
    #[test]
    fn a_root_symlink_cannot_carry_members_out() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("home-ssh");
        fs::create_dir(&outside).unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let bytes = hostile(&[
            ("d", EntryType::Symlink, outside.to_str().unwrap(), 0o777, 0),
            (
                "d/authorized_keys",
                EntryType::Regular,
                "ssh-ed25519 AAAA evil",
                0o600,
                0,
            ),
        ]);
        let err = unpack(&bytes[..], "d", &dest.join("d")).unwrap_err();
        assert!(err.to_string().contains("through a symlink"), "{err}");
        assert!(!outside.join("authorized_keys").exists());
        // A second copy onto the planted link does not follow it either.
        let bytes = hostile(&[
            ("d", EntryType::Directory, "", 0o755, 0),
            ("d/authorized_keys", EntryType::Regular, "evil", 0o600, 0),
        ]);
        let err = unpack(&bytes[..], "d", &dest.join("d")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn links_never_reach_outside_and_special_bits_are_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let host_file = tmp.path().join("host-secret");
        fs::write(&host_file, "secret").unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        // A symlinked directory in the middle.
        let bytes = hostile(&[
            ("r", EntryType::Directory, "", 0o755, 0),
            (
                "r/mid",
                EntryType::Symlink,
                tmp.path().to_str().unwrap(),
                0o777,
                0,
            ),
            ("r/mid/planted", EntryType::Regular, "x", 0o644, 0),
        ]);
        let err = unpack(&bytes[..], "r", &dest.join("r")).unwrap_err();
        assert!(err.to_string().contains("through a symlink"), "{err}");
        assert!(!tmp.path().join("planted").exists());
        // Hard links to a host file, by absolute name and by `..`, and to a
        // symlink of the copy that points at one.
        for link in [
            host_file.to_str().unwrap(),
            "r2/../../host-secret",
            "r2/sym",
        ] {
            let bytes = hostile(&[
                ("r2", EntryType::Directory, "", 0o755, 0),
                (
                    "r2/sym",
                    EntryType::Symlink,
                    host_file.to_str().unwrap(),
                    0o777,
                    0,
                ),
                ("r2/hard", EntryType::Link, link, 0o644, 0),
            ]);
            let err = unpack(&bytes[..], "r2", &dest.join("r2")).unwrap_err();
            assert!(err.to_string().contains("Refusing"), "{link}: {err}");
            assert_eq!(fs::metadata(&host_file).unwrap().nlink(), 1, "{link}");
        }
        // Setuid, setgid and sticky bits do not land; a link inside the copy does.
        let bytes = hostile(&[
            ("r3", EntryType::Directory, "", 0o3777, 0),
            ("r3/suid", EntryType::Regular, "#!/bin/sh\n", 0o6755, 0),
            ("r3/twin", EntryType::Link, "r3/suid", 0o6755, 0),
        ]);
        unpack(&bytes[..], "r3", &dest.join("r3")).unwrap();
        let mode = |p: &str| fs::symlink_metadata(dest.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("r3/suid"), 0o755);
        assert_eq!(mode("r3"), 0o777);
        assert_eq!(fs::metadata(dest.join("r3/twin")).unwrap().nlink(), 2);
    }

    #[test]
    fn a_huge_mtime_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let bytes = hostile(&[("d", EntryType::Directory, "", 0o755, u64::MAX)]);
        let err = unpack(&bytes[..], "d", &tmp.path().join("d")).unwrap_err();
        assert!(err.to_string().contains("mtime out of range"), "{err}");
        let bytes = hostile(&[("f", EntryType::Regular, "x", 0o644, u64::MAX)]);
        let err = unpack(&bytes[..], "f", &tmp.path().join("f")).unwrap_err();
        assert!(err.to_string().contains("mtime out of range"), "{err}");
    }

    /// A tar with one regular file under the raw member `name` (bypassing
    /// the tar crate's own checks, which refuse `..`).
    fn one_file_archive(name: &str) -> Vec<u8> {
        let mut header = Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(1);
        header.set_mode(0o644);
        header.set_entry_type(EntryType::Regular);
        header.set_cksum();
        let mut builder = tar::Builder::new(Vec::new());
        builder.append(&header, &b"x"[..]).unwrap();
        builder.into_inner().unwrap()
    }
}
