//! Writing files into a real ext4 image without mounting it.
#![allow(clippy::disallowed_methods)]

mod common;

use banger::system::debugfs::{self, GuestFile};
use banger::system::{e2fs, tools};

fn stat(image: &std::path::Path, path: &str) -> String {
    let out = std::process::Command::new(tools::find_program("debugfs", None).unwrap())
        .args(["-R", &format!("stat {path}")])
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn files_and_dirs_land_with_their_modes_and_owners() {
    if !common::installed("debugfs", "e2fsprogs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("root.ext4");
    common::sparse_file(&image, 32 << 20);
    e2fs::mkfs_ext4(&image, None).await.unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();

    let files = vec![
        GuestFile::root("/etc/hostname", "box\n", 0o644),
        GuestFile::root(
            "/root/.ssh/authorized_keys",
            "ssh-ed25519 AAAA test\n",
            0o600,
        ),
    ];
    let dirs = [("/etc", 0o755), ("/root", 0o700), ("/root/.ssh", 0o700)];
    debugfs::write_files(&image, &dirs, &files, &scratch)
        .await
        .unwrap();
    // Twice: existing files are replaced, existing directories kept.
    let files = vec![
        GuestFile::root("/etc/hostname", "box2\n", 0o644),
        files[1].clone(),
    ];
    debugfs::write_files(&image, &dirs, &files, &scratch)
        .await
        .unwrap();

    let read = debugfs::read_file(&image, "/etc/hostname").await.unwrap();
    assert_eq!(read.as_deref(), Some(&b"box2\n"[..]));
    assert_eq!(debugfs::read_file(&image, "/nope").await.unwrap(), None);
    let keys = stat(&image, "/root/.ssh/authorized_keys");
    assert!(keys.contains("Mode:  0600"), "{keys}");
    assert!(keys.contains("User:     0"), "{keys}");
    let ssh_dir = stat(&image, "/root/.ssh");
    assert!(
        ssh_dir.contains("Type: directory") && ssh_dir.contains("Mode:  0700"),
        "{ssh_dir}"
    );
    assert!(
        e2fs::fsck_clean(&image).await.unwrap(),
        "the image stays consistent"
    );
}

#[tokio::test]
async fn a_bad_guest_path_is_refused_before_touching_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("none.ext4");
    let files = vec![GuestFile::root("etc/relative", "x", 0o644)];
    let err = debugfs::write_files(&image, &[], &files, dir.path())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must be absolute"), "{err}");
    let files = vec![GuestFile::root("/a b", "x", 0o644)];
    assert!(
        debugfs::write_files(&image, &[], &files, dir.path())
            .await
            .is_err()
    );
}
