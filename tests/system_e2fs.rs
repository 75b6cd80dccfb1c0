//! ext4 images with the real e2fsprogs.

mod common;

use banger::system::e2fs::{fsck_clean, geometry, grow_ext4, mkfs_ext4};
use banger::system::tools::find_program;

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn mkfs_grow_and_check() {
    if find_program("mkfs.ext4", None).is_none() {
        common::skip("mkfs.ext4 not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("work.ext4");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();

    mkfs_ext4(&image, Some("work")).await.unwrap();
    assert_eq!(geometry(&image).await.unwrap().bytes(), 64 * MIB);

    grow_ext4(&image, 128 * MIB).await.unwrap();
    assert!(fsck_clean(&image).await.unwrap());
    let g = geometry(&image).await.unwrap();
    assert_eq!(g.block_count * g.block_size, 128 * MIB);

    // Shrinking is refused before any tool runs.
    let err = grow_ext4(&image, 64 * MIB).await.unwrap_err();
    assert!(err.to_string().contains("Refusing to shrink"), "{err}");
}

#[tokio::test]
async fn fsck_reports_a_non_filesystem_as_failure() {
    if find_program("e2fsck", None).is_none() {
        common::skip("e2fsck not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0xabu8; 1 << 16]).unwrap();
    let err = fsck_clean(&junk).await.unwrap_err();
    assert!(err.to_string().contains("e2fsck -fn"), "{err}");
}
