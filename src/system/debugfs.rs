//! Writing files into an ext4 image without mounting it, through
//! `debugfs -w`: per-VM hostname, keys and fstab go in before first boot.

use std::fmt::Write as _;
use std::path::Path;

use super::exec::{Cmd, ExecError};

/// Errors editing an image.
#[derive(Debug, thiserror::Error)]
pub enum DebugfsError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// debugfs ran but a request failed (it exits 0 regardless).
    #[error("debugfs could not edit {image}: {detail}")]
    Request { image: String, detail: String },
    /// A guest path debugfs cannot take safely.
    #[error("guest path `{0}` must be absolute and free of spaces and quotes")]
    BadPath(String),
    #[error("cannot write scratch file {path}")]
    Scratch {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A file to place in the guest.
#[derive(Debug, Clone)]
pub struct GuestFile {
    /// Absolute path inside the image.
    pub path: String,
    pub contents: Vec<u8>,
    /// Permission bits, e.g. `0o600`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl GuestFile {
    /// A root-owned file.
    pub fn root(path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> GuestFile {
        GuestFile {
            path: path.to_string(),
            contents: contents.into(),
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// Creates `dirs` (root-owned, with their modes; parents must exist) and
/// writes `files` into `image`, replacing what was there. `scratch` is a
/// private directory for the files' contents on their way in.
pub async fn write_files(
    image: &Path,
    dirs: &[(&str, u32)],
    files: &[GuestFile],
    scratch: &Path,
) -> Result<(), DebugfsError> {
    check_paths(dirs, files)?;
    // Pass 1 clears the way: `rm` of a file that is not there fails
    // harmlessly, but `mkdir` of a directory that is there must not run at
    // all (debugfs then leaves an orphaned inode behind), so look first.
    let mut clear = String::new();
    for (dir, _) in dirs {
        if !exists(image, dir).await? {
            writeln!(clear, "mkdir {dir}").unwrap();
        }
    }
    for file in files {
        writeln!(clear, "rm {}", file.path).unwrap();
    }
    run_requests(image, &clear, scratch, "clear").await?;

    // Pass 2 must succeed line by line.
    write_pass(image, String::new(), dirs, files, scratch).await
}

/// [`write_files`] for a filesystem just made, where nothing is in the
/// way: one debugfs run makes `dirs` (parents first) and writes `files`.
pub async fn populate(
    image: &Path,
    dirs: &[(&str, u32)],
    files: &[GuestFile],
    scratch: &Path,
) -> Result<(), DebugfsError> {
    check_paths(dirs, files)?;
    std::fs::create_dir_all(scratch).map_err(|source| DebugfsError::Scratch {
        path: scratch.display().to_string(),
        source,
    })?;
    let mut requests = String::new();
    for (dir, _) in dirs {
        writeln!(requests, "mkdir {dir}").unwrap();
    }
    write_pass(image, requests, dirs, files, scratch).await
}

fn check_paths(dirs: &[(&str, u32)], files: &[GuestFile]) -> Result<(), DebugfsError> {
    for path in dirs
        .iter()
        .map(|(p, _)| *p)
        .chain(files.iter().map(|f| f.path.as_str()))
    {
        if !path.starts_with('/') || path.contains(|c: char| c.is_whitespace() || c == '"') {
            return Err(DebugfsError::BadPath(path.to_string()));
        }
    }
    Ok(())
}

/// Appends to `write` the modes and owners of `dirs` and the writing of
/// `files`, runs it and fails on the first request debugfs refused.
async fn write_pass(
    image: &Path,
    mut write: String,
    dirs: &[(&str, u32)],
    files: &[GuestFile],
    scratch: &Path,
) -> Result<(), DebugfsError> {
    for (dir, mode) in dirs {
        set_owner_and_mode(&mut write, dir, 0o040000 | mode, 0, 0);
    }
    for (i, file) in files.iter().enumerate() {
        let local = scratch.join(format!("file-{i}"));
        std::fs::write(&local, &file.contents).map_err(|source| DebugfsError::Scratch {
            path: local.display().to_string(),
            source,
        })?;
        writeln!(write, "write {} {}", local.display(), file.path).unwrap();
        set_owner_and_mode(
            &mut write,
            &file.path,
            0o100000 | file.mode,
            file.uid,
            file.gid,
        );
    }
    let stderr = run_requests(image, &write, scratch, "write").await?;
    refused(image, &stderr, |_| false)
}

/// The contents of `path` inside `image`, or `None` when it is absent.
pub async fn read_file(image: &Path, path: &str) -> Result<Option<Vec<u8>>, DebugfsError> {
    let out = Cmd::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(image)
        .run()
        .await?;
    if out.stderr.lines().any(|l| !is_banner(l)) {
        return Ok(None);
    }
    Ok(Some(out.stdout.into_bytes()))
}

/// True when `path` exists inside `image`.
pub async fn exists(image: &Path, path: &str) -> Result<bool, DebugfsError> {
    let out = Cmd::new("debugfs")
        .arg("-R")
        .arg(format!("stat {path}"))
        .arg(image)
        .run()
        .await?;
    Ok(!out.stderr.contains("not found"))
}

fn set_owner_and_mode(requests: &mut String, path: &str, mode: u32, uid: u32, gid: u32) {
    writeln!(requests, "set_inode_field {path} mode 0{mode:o}").unwrap();
    writeln!(requests, "set_inode_field {path} uid {uid}").unwrap();
    writeln!(requests, "set_inode_field {path} gid {gid}").unwrap();
}

/// The first request debugfs refused, as an error: a line of `stderr` that
/// is neither its banner nor `expected`. (debugfs exits 0 regardless.)
fn refused(
    image: &Path,
    stderr: &str,
    expected: impl Fn(&str) -> bool,
) -> Result<(), DebugfsError> {
    match stderr.lines().find(|l| !is_banner(l) && !expected(l)) {
        Some(problem) => Err(DebugfsError::Request {
            image: image.display().to_string(),
            detail: problem.trim().to_string(),
        }),
        None => Ok(()),
    }
}

/// debugfs prints its version on stderr before anything else.
fn is_banner(line: &str) -> bool {
    line.starts_with("debugfs ") || line.trim().is_empty()
}

async fn run_requests(
    image: &Path,
    requests: &str,
    scratch: &Path,
    name: &str,
) -> Result<String, DebugfsError> {
    let file = scratch.join(format!("debugfs-{name}.cmds"));
    std::fs::write(&file, requests).map_err(|source| DebugfsError::Scratch {
        path: file.display().to_string(),
        source,
    })?;
    let out = Cmd::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&file)
        .arg(image)
        .run()
        .await?;
    Ok(out.stderr)
}

/// What an image's inode must be that a tree on the host could not say:
/// its owner and exact mode (setuid bits, modes the daemon cannot work
/// with), extended attributes, or a device node the daemon cannot make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InodeFix {
    /// Absolute path inside the image.
    pub path: String,
    /// The whole `st_mode` (file type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Made here rather than found: `(kind, major, minor)` with kind `c`,
    /// `b` or `p`.
    pub node: Option<(char, u32, u32)>,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Applies `fixes` to `image` in one debugfs run. Any path is taken (it is
/// quoted), but a newline, which ends a debugfs request, is refused.
pub async fn fix_inodes(
    image: &Path,
    fixes: &[InodeFix],
    scratch: &Path,
) -> Result<(), DebugfsError> {
    std::fs::create_dir_all(scratch).map_err(|source| DebugfsError::Scratch {
        path: scratch.display().to_string(),
        source,
    })?;
    let mut script = String::new();
    for (i, fix) in fixes.iter().enumerate() {
        if !fix.path.starts_with('/') || fix.path.contains('\n') {
            return Err(DebugfsError::BadPath(fix.path.clone()));
        }
        let path = quoted(&fix.path);
        if let Some((kind, major, minor)) = fix.node {
            // mknod links its name into the current directory.
            let (dir, leaf) = fix.path.rsplit_once('/').unwrap_or(("", &fix.path));
            let dir = if dir.is_empty() { "/" } else { dir };
            writeln!(script, "cd {}", quoted(dir)).unwrap();
            match kind {
                'p' => writeln!(script, "mknod {} p", quoted(leaf)).unwrap(),
                _ => writeln!(script, "mknod {} {kind} {major} {minor}", quoted(leaf)).unwrap(),
            }
            writeln!(script, "cd /").unwrap();
        }
        writeln!(script, "sif {path} mode 0{:o}", fix.mode).unwrap();
        writeln!(script, "sif {path} uid {}", fix.uid).unwrap();
        writeln!(script, "sif {path} gid {}", fix.gid).unwrap();
        for (j, (name, value)) in fix.xattrs.iter().enumerate() {
            let file = scratch.join(format!("xattr-{i}-{j}"));
            std::fs::write(&file, value).map_err(|source| DebugfsError::Scratch {
                path: file.display().to_string(),
                source,
            })?;
            writeln!(
                script,
                "ea_set -f {} {path} {}",
                quoted(&file.display().to_string()),
                quoted(name)
            )
            .unwrap();
        }
    }
    let stderr = run_requests(image, &script, scratch, "fix").await?;
    // mknod says which inode it took.
    refused(image, &stderr, |l| l.starts_with("Allocated inode"))
}

/// `text` as one debugfs argument: in double quotes, a quote doubled.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// Copies directory `from` of `image` into the existing directory `dest`
/// (`rdump`): contents, modes and symlinks; owners too when root. `/`
/// lands as `dest` itself, any other directory as `dest/NAME`.
pub async fn dump_tree(image: &Path, from: &str, dest: &Path) -> Result<(), DebugfsError> {
    let out = Cmd::new("debugfs")
        .arg("-R")
        .arg(format!(
            "rdump {} {}",
            quoted(from),
            quoted(&dest.display().to_string())
        ))
        .arg(image)
        .run()
        .await?;
    refused(image, &out.stderr, |_| false)
}

/// For each of `dirs` in `image`, whether overlayfs marked it opaque
/// (`trusted.overlay.opaque` is `y`), in one debugfs run.
pub async fn overlay_opaque(
    image: &Path,
    dirs: &[String],
    scratch: &Path,
) -> Result<Vec<bool>, DebugfsError> {
    let values = run_each(image, dirs, scratch, "opaque", |dir| {
        format!("ea_get {dir} trusted.overlay.opaque")
    })
    .await?;
    Ok(values
        .iter()
        .map(|out| {
            out.lines()
                .any(|line| line.starts_with("trusted.overlay.opaque") && line.ends_with("= \"y\""))
        })
        .collect())
}

/// One directory entry as `ls -p` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub ino: u64,
    /// The whole `st_mode`.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub name: String,
}

/// The entries of each of `dirs` in `image` (`.` and `..` included), in
/// one debugfs run.
pub async fn list_dirs(
    image: &Path,
    dirs: &[String],
    scratch: &Path,
) -> Result<Vec<Vec<Listed>>, DebugfsError> {
    let outputs = run_each(image, dirs, scratch, "list", |dir| format!("ls -p {dir}")).await?;
    Ok(outputs.iter().map(|out| parse_listing(out)).collect())
}

/// One `ls -p` output: entries are `/INO/MODE/UID/GID/NAME/SIZE/`.
fn parse_listing(out: &str) -> Vec<Listed> {
    out.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('/').collect();
            let [_, ino, mode, uid, gid, name, ..] = fields.as_slice() else {
                return None;
            };
            Some(Listed {
                ino: ino.parse().ok()?,
                mode: u32::from_str_radix(mode, 8).ok()?,
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
                name: name.to_string(),
            })
        })
        .collect()
}

/// The extended attributes of each of `paths` in `image` (names and raw
/// values): one debugfs run lists their names, a second writes each value
/// to a file in `scratch`.
pub async fn xattrs(
    image: &Path,
    paths: &[String],
    scratch: &Path,
) -> Result<Vec<Vec<(String, Vec<u8>)>>, DebugfsError> {
    let lists = run_each(image, paths, scratch, "ea_list", |p| format!("ea_list {p}")).await?;
    let names: Vec<Vec<String>> = lists
        .iter()
        .map(|out| {
            out.lines()
                .filter_map(|l| l.strip_prefix("  ")?.split_once(" ("))
                .map(|(name, _)| name.to_string())
                .collect()
        })
        .collect();
    let mut script = String::new();
    let mut wanted = Vec::new();
    for (i, (path, names)) in paths.iter().zip(&names).enumerate() {
        for (j, name) in names.iter().enumerate() {
            let file = scratch.join(format!("ea-{i}-{j}"));
            writeln!(
                script,
                "ea_get -f {} {} {}",
                quoted(&file.display().to_string()),
                quoted(path),
                quoted(name)
            )
            .unwrap();
            wanted.push((i, name.clone(), file));
        }
    }
    let mut found = vec![Vec::new(); paths.len()];
    if wanted.is_empty() {
        return Ok(found);
    }
    run_script(image, &script, scratch, "ea-get").await?;
    for (i, name, file) in wanted {
        if let Ok(value) = std::fs::read(&file) {
            found[i].push((name, value));
            let _ = std::fs::remove_file(&file);
        }
    }
    Ok(found)
}

/// The device numbers (major, minor) of each of `paths` in `image`, where
/// `stat` shows them (character and block devices).
pub async fn device_numbers(
    image: &Path,
    paths: &[String],
    scratch: &Path,
) -> Result<Vec<Option<(u32, u32)>>, DebugfsError> {
    let stats = run_each(image, paths, scratch, "stat", |p| format!("stat {p}")).await?;
    Ok(stats
        .iter()
        .map(|out| {
            let line = out
                .lines()
                .find_map(|l| l.strip_prefix("Device major/minor number: "))?;
            let (major, minor) = line.split_whitespace().next()?.split_once(':')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
        .collect())
}

/// Runs the request `request` makes of each of `paths` (given quoted) in
/// one debugfs run named `name`; the output of each, in order (split at
/// debugfs's echo of each request).
async fn run_each(
    image: &Path,
    paths: &[String],
    scratch: &Path,
    name: &str,
    request: impl Fn(&str) -> String,
) -> Result<Vec<String>, DebugfsError> {
    let mut script = String::new();
    for path in paths {
        if path.contains('\n') {
            return Err(DebugfsError::BadPath(path.clone()));
        }
        writeln!(script, "{}", request(&quoted(path))).unwrap();
    }
    let stdout = run_script(image, &script, scratch, name).await?;
    Ok(split_outputs(&stdout, paths.len()))
}

/// The output of each of `count` requests in `stdout`, split at
/// debugfs's echo of each.
fn split_outputs(stdout: &str, count: usize) -> Vec<String> {
    let mut outputs: Vec<String> = Vec::new();
    for line in stdout.lines() {
        if line.starts_with("debugfs: ") {
            outputs.push(String::new());
        } else if let Some(current) = outputs.last_mut() {
            current.push_str(line);
            current.push('\n');
        }
    }
    outputs.resize(count, String::new());
    outputs
}

/// Runs `script` read-only against `image` (`debugfs -f`); its stdout.
async fn run_script(
    image: &Path,
    script: &str,
    scratch: &Path,
    name: &str,
) -> Result<String, DebugfsError> {
    std::fs::create_dir_all(scratch).map_err(|source| DebugfsError::Scratch {
        path: scratch.display().to_string(),
        source,
    })?;
    let file = scratch.join(format!("debugfs-{}.cmds", name.replace(' ', "-")));
    std::fs::write(&file, script).map_err(|source| DebugfsError::Scratch {
        path: file.display().to_string(),
        source,
    })?;
    let out = Cmd::new("debugfs")
        .arg("-f")
        .arg(&file)
        .arg(image)
        .run()
        .await?;
    Ok(out.stdout)
}

#[cfg(test)]
mod listing_tests {
    use super::*;

    #[test]
    fn listings_split_at_each_request() {
        let out = "debugfs: ls -p \"/\"\n/2/040755/0/0/.//\n/12/040755/0/0/bin//\n\n\
                   debugfs: ls -p \"/bin\"\n/13/100755/1000/50/busy box/1982256/\n/15/120777/0/0/sh/7/\n";
        let got: Vec<_> = split_outputs(out, 2)
            .iter()
            .map(|out| parse_listing(out))
            .collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0][1].name, "bin");
        assert_eq!(
            got[1][0],
            Listed {
                ino: 13,
                mode: 0o100755,
                uid: 1000,
                gid: 50,
                name: "busy box".into()
            }
        );
    }
}
