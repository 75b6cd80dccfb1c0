//! ext4 images with the real e2fsprogs.

mod common;

use banger::system::e2fs::{fsck_clean, geometry, grow_ext4, mkfs_ext4};

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn mkfs_grow_and_check() {
    if !common::installed("mkfs.ext4", "e2fsprogs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("work.ext4");
    common::sparse_file(&image, 64 * MIB);

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
    if !common::installed("e2fsck", "e2fsprogs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0xabu8; 1 << 16]).unwrap();
    let err = fsck_clean(&junk).await.unwrap_err();
    assert!(err.to_string().contains("e2fsck -fn"), "{err}");
}
