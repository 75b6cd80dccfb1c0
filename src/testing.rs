//! Fixtures the unit tests share (compiled for tests only).

use std::path::PathBuf;

/// A fresh temporary directory holding one file `name` with `contents`;
/// the directory goes when the first value is dropped.
pub fn temp_file(name: &str, contents: impl AsRef<[u8]>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

/// A fresh temporary directory and the path `name` in it (nothing made
/// there yet); the directory goes when the first value is dropped.
pub fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

/// Fails, showing `text`, unless each of `wants` is in it.
#[track_caller]
pub fn assert_contains_all(text: &str, wants: &[&str]) {
    for want in wants {
        assert!(text.contains(want), "`{want}` is not in:\n{text}");
    }
}
