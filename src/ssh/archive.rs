//! Tar archives for moving files in and out of a guest: `write_archive`
//! packs host paths under their guest names (owned by root, modes and
//! mtimes kept, symlinks kept as links); `unpack` lays a guest's `tar -c`
//! stream out on the host with `cp -r` naming, refusing anything that would
//! land outside the destination. Both are blocking; the session runs them
//! on the blocking pool and streams the bytes.

use std::fs::{self, File, FileTimes};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use tar::{EntryType, Header, HeaderMode};

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
/// caller picks the `cp -r` name. Modes and mtimes are kept, ownership is
/// the caller's. Refuses absolute names, `..`, members outside `root`,
/// members reached through a symlink, and hard links to anything outside
/// `target`. Device nodes, FIFOs and sockets are skipped.
pub fn unpack(input: impl Read, root: &str, target: &Path) -> io::Result<()> {
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    // Directory modes and mtimes are set last: a read-only directory must
    // still take its contents, and writing them changes its mtime.
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.into_owned();
        let rel = relative_to_root(&name, root)?;
        let dest = under(target, &rel);
        make_parents(target, &rel)?;
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&dest) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        return Err(refuse(&name, "exists on the host and is not a directory"));
                    }
                    Err(_) => {
                        fs::create_dir(&dest).map_err(|e| host_error("Cannot create", &dest, e))?
                    }
                }
                let header = entry.header();
                dirs.push((dest, header.mode()?, header.mtime()?));
            }
            EntryType::Link => {
                let Some(link) = entry.link_name()? else {
                    return Err(refuse(&name, "is a hard link without a target"));
                };
                let link_rel = relative_to_root(&link, root)?;
                check_no_symlinks(target, &link_rel, &name)?;
                let source = under(target, &link_rel);
                if fs::symlink_metadata(&source).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(refuse(&name, "is a hard link to a symlink"));
                }
                if fs::symlink_metadata(&dest).is_ok() {
                    fs::remove_file(&dest).map_err(|e| host_error("Cannot replace", &dest, e))?;
                }
                fs::hard_link(&source, &dest).map_err(|e| host_error("Cannot link", &dest, e))?;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::Symlink => {
                entry.unpack(&dest)?;
            }
            EntryType::XGlobalHeader | EntryType::XHeader => {}
            other => {
                tracing::warn!(member = %name.display(), kind = ?other, "skipping special file");
            }
        }
    }
    for (dir, mode, mtime) in dirs.into_iter().rev() {
        let time = UNIX_EPOCH + Duration::from_secs(mtime);
        File::open(&dir)
            .and_then(|f| f.set_times(FileTimes::new().set_modified(time).set_accessed(time)))
            .map_err(|e| host_error("Cannot set the mtime of", &dir, e))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| host_error("Cannot set the mode of", &dir, e))?;
    }
    // Drain GNU tar's record padding so the sender sees a clean end.
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
    Ok(())
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

/// `target/rel`, or `target` itself for an empty `rel` (`join("")` would
/// add a trailing slash, which a file name must not have).
fn under(target: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        target.to_path_buf()
    } else {
        target.join(rel)
    }
}

/// Creates the missing directories above `target/rel`, refusing to pass
/// through a symlink (an archive made by `tar -c` never needs to).
fn make_parents(target: &Path, rel: &Path) -> io::Result<()> {
    let mut dir = target.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for part in parent.components() {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(refuse(rel, "would be written through a symlink or file")),
            Err(_) => fs::create_dir(&dir).map_err(|e| host_error("Cannot create", &dir, e))?,
        }
    }
    Ok(())
}

/// Refuses `rel` (under `target`) when any directory above it is a symlink.
fn check_no_symlinks(target: &Path, rel: &Path, member: &Path) -> io::Result<()> {
    let mut dir = target.to_path_buf();
    for part in rel.parent().into_iter().flat_map(Path::components) {
        dir.push(part);
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Err(refuse(member, "is a hard link that leaves the destination"));
        }
    }
    Ok(())
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
