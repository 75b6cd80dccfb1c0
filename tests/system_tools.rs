//! Host tool lookup and preflight against real directories.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use banger::system::tools::{find_program, find_program_in, preflight, preflight_in};

fn fake_tool(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, b"#!/bin/false\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn preflight_names_every_missing_tool_with_packages() {
    let dir = tempfile::tempdir().unwrap();
    fake_tool(dir.path(), "ip", 0o755);
    let dirs = [dir.path().to_path_buf()];

    let err = preflight_in(
        "vm create",
        &["ip", "mkfs.ext4", "qemu-system-x86_64"],
        &dirs,
    )
    .unwrap_err();
    let msg = err.to_string();
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines.len(), 2, "{msg}");
    assert!(
        lines[0].starts_with("`banger vm create` needs mkfs.ext4"),
        "{msg}"
    );
    assert!(
        lines[0].ends_with(
            "install it: apt-get install e2fsprogs (Debian/Ubuntu), dnf install e2fsprogs (Fedora)"
        ),
        "{msg}"
    );
    assert!(lines[1].contains("needs qemu-system-x86_64"), "{msg}");
    assert!(
        lines[1].contains("apt-get install qemu-system-x86 (Debian/Ubuntu)"),
        "{msg}"
    );
    assert!(
        lines[1].contains("dnf install qemu-system-x86-core (Fedora)"),
        "{msg}"
    );
}

#[test]
fn preflight_passes_when_all_present() {
    let dir = tempfile::tempdir().unwrap();
    fake_tool(dir.path(), "ip", 0o755);
    fake_tool(dir.path(), "nft", 0o700);
    preflight_in("vm create", &["ip", "nft"], &[dir.path().to_path_buf()]).unwrap();
    // Through PATH: the sbin directories are always searched too.
    preflight("vm create", &["ip"], Some(dir.path().as_os_str())).unwrap();
}

#[test]
fn lookup_needs_the_executable_bit_and_searches_sbin() {
    let dir = tempfile::tempdir().unwrap();
    fake_tool(dir.path(), "notexec", 0o644);
    let dirs = [dir.path().to_path_buf()];
    assert_eq!(find_program_in("notexec", &dirs), None);
    assert_eq!(find_program_in("missing", &dirs), None);
    let abs = fake_tool(dir.path(), "abs", 0o755);
    assert_eq!(find_program_in(abs.to_str().unwrap(), &[]), Some(abs));

    // An empty PATH still finds sbin tools when installed.
    if Path::new("/usr/sbin/mkfs.ext4").exists() || Path::new("/sbin/mkfs.ext4").exists() {
        assert!(find_program("mkfs.ext4", Some("".as_ref())).is_some());
    }
}
