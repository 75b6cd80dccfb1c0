//! The schema, as an ordered list of migrations. `PRAGMA user_version` counts
//! how many have been applied. Never edit a released migration: append one.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Migration `n` (1-based) is `MIGRATIONS[n - 1]`.
const MIGRATIONS: &[&str] = &[
    // 1: images, VMs, their network leases and an event log.
    "
    CREATE TABLE images (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        rootfs_path TEXT NOT NULL,
        kernel_path TEXT,
        size_bytes  INTEGER CHECK (size_bytes >= 0),
        created_at  INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE vms (
        id              INTEGER PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE,
        image_id        INTEGER REFERENCES images (id) ON DELETE RESTRICT,
        state           TEXT NOT NULL CHECK (state IN
                            ('created', 'starting', 'running', 'stopping', 'stopped', 'failed')),
        backend         TEXT NOT NULL CHECK (backend IN ('firecracker', 'qemu')),
        vcpus           INTEGER NOT NULL CHECK (vcpus > 0),
        memory_mib      INTEGER NOT NULL CHECK (memory_mib > 0),
        disk_bytes      INTEGER NOT NULL CHECK (disk_bytes > 0),
        work_disk_bytes INTEGER CHECK (work_disk_bytes >= 0),
        pid             INTEGER CHECK (pid > 0),
        pid_start_ticks INTEGER CHECK (pid_start_ticks >= 0),
        created_at      INTEGER NOT NULL,
        started_at      INTEGER,
        updated_at      INTEGER NOT NULL,
        CHECK ((pid IS NULL) = (pid_start_ticks IS NULL))
    ) STRICT;
    CREATE INDEX vms_image_id ON vms (image_id);

    CREATE TABLE leases (
        vm_id INTEGER NOT NULL UNIQUE REFERENCES vms (id) ON DELETE CASCADE,
        ip    TEXT NOT NULL UNIQUE,
        mac   TEXT NOT NULL UNIQUE COLLATE NOCASE,
        tap   TEXT NOT NULL UNIQUE
    ) STRICT;

    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        vm_id   INTEGER REFERENCES vms (id) ON DELETE SET NULL,
        vm_name TEXT,
        at      INTEGER NOT NULL,
        kind    TEXT NOT NULL,
        message TEXT NOT NULL
    ) STRICT;
    CREATE INDEX events_vm_id ON events (vm_id);
    ",
    // 2: the VM's SSH host key (checked strictly by `vm ssh`) and whether it
    // gets NAT out through the host.
    "
    ALTER TABLE vms ADD COLUMN host_key TEXT;
    ALTER TABLE vms ADD COLUMN nat INTEGER NOT NULL DEFAULT 1 CHECK (nat IN (0, 1));
    ",
    // 3: image builds. A VM is either the user's or the temporary VM of an
    // image build (never shown or handled as a user VM, removed by reconcile
    // if a daemon dies mid-build); a built image keeps the digest of its
    // inputs, so a repeat build is found without booting anything.
    "
    ALTER TABLE vms ADD COLUMN role TEXT NOT NULL DEFAULT 'vm' CHECK (role IN ('vm', 'build'));
    ALTER TABLE images ADD COLUMN build_key TEXT;
    CREATE INDEX images_build_key ON images (build_key);
    ",
];

/// The schema version this binary writes: the number of migrations it knows.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The schema version recorded in the database file.
pub(super) fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Applies every migration the database lacks, each in its own
/// `BEGIN IMMEDIATE` transaction together with its `user_version` bump.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    for (version, sql) in (1..).zip(MIGRATIONS) {
        apply(conn, version, sql).map_err(|source| StoreError::Migrate { version, source })?;
    }
    Ok(())
}

fn apply(conn: &mut Connection, version: u32, sql: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Read under the write lock, so a migration is never applied twice.
    if user_version(&tx)? >= version {
        return Ok(());
    }
    tx.execute_batch(sql)?;
    tx.pragma_update(None, "user_version", version)?;
    tx.commit()?;
    tracing::info!(version, "migrated the state database");
    Ok(())
}
