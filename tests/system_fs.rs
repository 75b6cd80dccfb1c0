//! Growing and cloning real (sparse) files.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use banger::system::fs::{CloneMethod, FsError, clone_file, grow_file, sparse_copy};

const MIB: u64 = 1 << 20;

/// A 64 MiB file, mostly holes, with data at a few offsets (one past the
/// last hole boundary, one at the very end).
fn sparse_source(path: &Path) {
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)
        .unwrap();
    file.set_len(64 * MIB).unwrap();
    for (offset, byte) in [
        (0, 1u8),
        (5 * MIB + 123, 2),
        (33 * MIB, 3),
        (64 * MIB - 4096, 4),
    ] {
        file.write_all_at(&vec![byte; 4096], offset).unwrap();
    }
    file.sync_all().unwrap();
}

fn assert_same_and_sparse(src: &Path, dst: &Path) {
    assert!(
        std::fs::read(src).unwrap() == std::fs::read(dst).unwrap(),
        "content differs"
    );
    let (s, d) = (src.metadata().unwrap(), dst.metadata().unwrap());
    assert_eq!(s.len(), d.len());
    // 512-byte blocks; allow a little for extent rounding.
    assert!(
        d.blocks() <= s.blocks() + 256,
        "clone uses {} blocks, source {}",
        d.blocks(),
        s.blocks()
    );
    assert!(
        d.blocks() < (64 * MIB / 512) / 4,
        "clone is not sparse: {} blocks",
        d.blocks()
    );
}

fn no_temp_files_left(dir: &Path) {
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
}

#[test]
fn clone_is_identical_and_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    sparse_source(&src);
    let method = clone_file(&src, &dst).unwrap();
    assert!(
        matches!(method, CloneMethod::Reflink | CloneMethod::SparseCopy),
        "{method}"
    );
    assert_same_and_sparse(&src, &dst);
    no_temp_files_left(dir.path());
}

#[test]
fn sparse_copy_is_identical_and_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    sparse_source(&src);
    assert_eq!(sparse_copy(&src, &dst).unwrap(), CloneMethod::SparseCopy);
    assert_same_and_sparse(&src, &dst);
    no_temp_files_left(dir.path());
}

#[test]
fn sparse_copy_of_all_hole_and_empty_files() {
    let dir = tempfile::tempdir().unwrap();
    let holes = dir.path().join("holes");
    std::fs::File::create(&holes)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    let copy = dir.path().join("holes.copy");
    sparse_copy(&holes, &copy).unwrap();
    assert_eq!(copy.metadata().unwrap().len(), 8 * MIB);
    assert_eq!(copy.metadata().unwrap().blocks(), 0);

    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let copy = dir.path().join("empty.copy");
    clone_file(&empty, &copy).unwrap();
    assert_eq!(copy.metadata().unwrap().len(), 0);
}

#[test]
fn clone_refuses_existing_destination() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::write(&src, b"new").unwrap();
    std::fs::write(&dst, b"old").unwrap();
    let err = clone_file(&src, &dst).unwrap_err();
    assert!(matches!(err, FsError::Exists { .. }), "{err:?}");
    assert_eq!(std::fs::read(&dst).unwrap(), b"old");
    no_temp_files_left(dir.path());
}

#[test]
fn failed_clone_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("dst");
    let err = clone_file(&dir.path().join("missing"), &dst).unwrap_err();
    assert!(err.to_string().starts_with("Cannot open "), "{err}");
    assert!(!dst.exists());
    no_temp_files_left(dir.path());
}

#[test]
fn grow_extends_and_refuses_to_shrink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk");
    std::fs::write(&path, b"data").unwrap();
    grow_file(&path, MIB).unwrap();
    assert_eq!(path.metadata().unwrap().len(), MIB);
    grow_file(&path, MIB).unwrap();

    let err = grow_file(&path, 10).unwrap_err();
    assert!(
        matches!(err, FsError::Shrink { current, requested: 10, .. } if current == MIB),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("from 1048576 to 10 bytes"),
        "{err}"
    );
    assert_eq!(path.metadata().unwrap().len(), MIB);
    assert!(std::fs::read(&path).unwrap().starts_with(b"data"));
}
