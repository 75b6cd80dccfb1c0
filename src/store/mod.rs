//! The state store: one SQLite database (`state.db`) holding images, VMs,
//! their network leases and an event log. The sole owner of on-disk state.
//!
//! - `error`: [`StoreError`], and reading SQLite's constraint failures.
//! - `migrations`: the schema, as numbered migrations counted by `user_version`.
//! - `images`, `vms`, `events`: typed records and their queries.
//!
//! Every write runs in a `BEGIN IMMEDIATE` transaction; the database is in
//! WAL mode with `synchronous=FULL`, so a committed write survives a crash.

mod error;
mod events;
mod images;
mod migrations;
mod vms;

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use error::{StoreError, Taken};
pub use events::EventRecord;
pub use images::{ImageRecord, NewImage};
pub use migrations::SCHEMA_VERSION;
pub use vms::{NewVm, VmProcess, VmRecord};

use error::is_corruption;
use migrations::{migrate, user_version};

/// The store shared by the daemon's tasks. Hold the lock only for a query
/// or two, never across an await.
#[derive(Clone)]
pub struct SharedStore(std::sync::Arc<std::sync::Mutex<Store>>);

impl SharedStore {
    pub fn new(store: Store) -> SharedStore {
        SharedStore(std::sync::Arc::new(std::sync::Mutex::new(store)))
    }

    /// The store, for one short query. A panic while it was held leaves it
    /// usable: every write is its own transaction.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How long a query waits for another writer before failing with "busy".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An open state database. Callers serialize access (the daemon keeps it in a `Mutex`).
pub struct Store {
    /// The one connection; SQLite serializes writers anyway and queries are short.
    conn: Connection,
    /// Where the database lives, for messages and `doctor`.
    path: PathBuf,
}

impl Store {
    /// Opens the database at `path`, creating it (and its directory, 0700)
    /// if needed, and brings its schema up to [`SCHEMA_VERSION`].
    ///
    /// A database from a newer banger, or one that is not a database or is
    /// damaged, is refused before anything is written to it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        if path.metadata().is_ok_and(|meta| meta.len() > 0) {
            check_before_writing(path)?;
        }
        let mut conn = Connection::open(path).map_err(|err| open_error(path, err))?;
        configure(&conn).map_err(|err| open_error(path, err))?;
        migrate(&mut conn)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// A read-only connection to an existing database, for a reader that
    /// must never wait on the writer (WAL lets it read during a commit).
    pub fn open_reader(path: &Path) -> Result<Store, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|err| open_error(path, err))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|err| open_error(path, err))?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Refuses, through a read-only connection that cannot change the file, a
/// database from a newer banger or one that fails SQLite's quick check.
fn check_before_writing(path: &Path) -> Result<(), StoreError> {
    let failed = |err| open_error(path, err);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(failed)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
    let found = user_version(&conn).map_err(failed)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let problems = quick_check(&conn).map_err(failed)?;
    if problems != ["ok"] {
        let detail = format!("quick_check: {}", problems.join("; "));
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail,
        });
    }
    Ok(())
}

/// The first few lines of `PRAGMA quick_check`: just "ok" when all is well.
fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let lines = stmt.query_map([], |row| row.get(0))?;
    lines.take(3).collect()
}

/// WAL for concurrent readers, FULL sync so commits survive power loss,
/// and foreign keys, which SQLite leaves off by default.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(%mode, "state database is not in WAL mode");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// A failure to open or set up `path`: `Corrupt` when SQLite says it is not
/// a database or is damaged, `Open` otherwise.
fn open_error(path: &Path, err: rusqlite::Error) -> StoreError {
    if is_corruption(&err) {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: err.to_string(),
        }
    } else {
        StoreError::Open {
            path: path.to_path_buf(),
            source: err,
        }
    }
}
