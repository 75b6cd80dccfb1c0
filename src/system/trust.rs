//! Who is who, and what only root can change: the login name of a uid
//! (from `/etc/passwd`, never the environment), and whether a path (and
//! every directory above it) is root's alone. The helper, doctor and a root
//! daemon's start-up checks all ask here, so they always agree.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The login name of `uid` from `/etc/passwd`. `$USER` can be unset (cron,
/// `env -i`) or stale (`su` without `-`), so it is never asked.
pub fn login_name(uid: u32) -> Result<String, String> {
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| format!("cannot read /etc/passwd: {e}"))?;
    login_name_in(&passwd, uid).ok_or_else(|| format!("uid {uid} has no entry in /etc/passwd"))
}

fn login_name_in(passwd: &str, uid: u32) -> Option<String> {
    passwd
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id: u32 = fields.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_string())
        })
        .find(|name| !name.is_empty() && !name.contains('/') && !name.starts_with('.'))
}

/// Checks that only root can change `path`: it and every directory above
/// it are owned by root and not writable by group or others (a sticky
/// directory such as `/tmp` is fine above it). Says what is wrong.
pub fn root_owned(path: &Path) -> Result<(), String> {
    let mut current = Some(path);
    while let Some(p) = current {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let mode = meta.permissions().mode();
        let sticky_dir = meta.is_dir() && mode & 0o1000 != 0 && p != path;
        if meta.uid() != 0 {
            return Err(format!(
                "{} belongs to uid {}, not root",
                p.display(),
                meta.uid()
            ));
        }
        if mode & 0o022 != 0 && !sticky_dir {
            return Err(format!(
                "{} is writable by group or others (mode {:o})",
                p.display(),
                mode & 0o7777
            ));
        }
        current = p.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_owned_locked_paths_are_trusted() {
        assert_eq!(root_owned(Path::new("/etc/passwd")), Ok(()));
        let (_dir, file) = crate::testing::temp_file("policy.toml", "");
        if rustix::process::geteuid().is_root() {
            // The temp dir is root's, 0700, under sticky /tmp.
            assert_eq!(root_owned(&file), Ok(()));
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
            assert!(root_owned(&file).unwrap_err().contains("writable"));
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            rustix::fs::chown(&file, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
            assert!(root_owned(&file).unwrap_err().contains("uid 65534"));
        } else {
            assert!(root_owned(&file).is_err());
        }
    }

    #[test]
    fn login_names_come_from_passwd() {
        assert_eq!(login_name(0).unwrap(), "root");
        assert!(login_name(4_000_000_000).is_err());
        let passwd = "root:x:0:0::/root:/bin/sh\n/bad:x:5:5::/:/bin/sh\nalice:x:1001:1001::/home/alice:/bin/sh\n";
        assert_eq!(login_name_in(passwd, 1001).as_deref(), Some("alice"));
        assert_eq!(login_name_in(passwd, 5), None);
    }
}
