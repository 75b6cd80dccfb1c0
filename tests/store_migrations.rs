//! Opening the state database: migrations from empty, reopening, and refusing
//! files this banger must not write to.

use std::fs;
use std::path::Path;

use banger::store::{SCHEMA_VERSION, Store, StoreError};
use rusqlite::Connection;

fn user_version(path: &Path) -> u32 {
    let conn = Connection::open(path).unwrap();
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap()
}

fn tables(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn migrations_from_empty_reach_the_latest_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("state.db");

    let store = Store::open(&path).unwrap();
    assert_eq!(store.path(), path);
    drop(store);

    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(
        tables(&path),
        ["events", "images", "leases", "ports", "vm_states", "vms"]
    );
    let mode = fs::metadata(path.parent().unwrap()).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
}

#[test]
fn reopening_is_idempotent_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");

    let mut store = Store::open(&path).unwrap();
    store
        .record_event(None, "test", "before reopening")
        .unwrap();
    drop(store);

    for _ in 0..2 {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.events(None, 10).unwrap().len(), 1);
    }
    assert_eq!(user_version(&path), SCHEMA_VERSION);
}

#[test]
fn database_is_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let _store = Store::open(&path).unwrap();

    let conn = Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(Store::open(&path).unwrap());
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let before = fs::read(&path).unwrap();

    let err = Store::open(&path)
        .err()
        .expect("a newer schema must be refused");

    match &err {
        StoreError::NewerSchema {
            path: p,
            found,
            supported,
        } => {
            assert_eq!(p, &path);
            assert_eq!(*found, SCHEMA_VERSION + 1);
            assert_eq!(*supported, SCHEMA_VERSION);
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("newer banger"), "{message}");
    assert!(message.contains("untouched"), "{message}");
    assert!(message.contains("upgrade banger"), "{message}");
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "the database file changed"
    );
}

#[test]
fn garbage_file_is_refused_as_corrupt_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    // 8 KiB from a xorshift generator: deterministic, and not a SQLite header.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let garbage: Vec<u8> = (0..8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(&path, &garbage).unwrap();

    let err = Store::open(&path).err().expect("garbage must be refused");

    assert!(
        matches!(err, StoreError::Corrupt { .. }),
        "expected Corrupt, got {err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("kept where it is"), "{message}");
    assert!(message.contains("move it aside"), "{message}");
    assert_eq!(fs::read(&path).unwrap(), garbage, "the file changed");
}

#[test]
fn damaged_database_is_refused_as_corrupt_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = Store::open(&path).unwrap();
    for i in 0..200 {
        store
            .record_event(
                None,
                "filler",
                &format!("event number {i} {}", "x".repeat(100)),
            )
            .unwrap();
    }
    drop(store);
    // Scribble over the last page, which holds event rows (and their b-tree).
    let mut bytes = fs::read(&path).unwrap();
    let len = bytes.len();
    assert!(len > 3 * 4096, "expected a few pages, got {len} bytes");
    for (i, byte) in bytes[len - 4096..].iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    fs::write(&path, &bytes).unwrap();

    let err = Store::open(&path)
        .err()
        .expect("a damaged database must be refused");

    assert!(
        matches!(err, StoreError::Corrupt { .. }),
        "expected Corrupt, got {err:?}"
    );
    assert_eq!(fs::read(&path).unwrap(), bytes, "the file changed");
}
