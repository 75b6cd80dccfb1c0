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
    // 4: intent states. A VM is `creating` until its disks and files are
    // whole and `deleting` from the moment its removal begins, so a daemon
    // killed halfway leaves a state that says what to finish or undo.
    // SQLite cannot change a CHECK in place: the table is rebuilt (foreign
    // keys are off while migrating, so leases and events stay).
    "
    CREATE TABLE vms_new (
        id              INTEGER PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE,
        image_id        INTEGER REFERENCES images (id) ON DELETE RESTRICT,
        state           TEXT NOT NULL CHECK (state IN
                            ('creating', 'created', 'starting', 'running', 'stopping',
                             'stopped', 'failed', 'deleting')),
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
        host_key        TEXT,
        nat             INTEGER NOT NULL DEFAULT 1 CHECK (nat IN (0, 1)),
        role            TEXT NOT NULL DEFAULT 'vm' CHECK (role IN ('vm', 'build')),
        CHECK ((pid IS NULL) = (pid_start_ticks IS NULL))
    ) STRICT;
    INSERT INTO vms_new (id, name, image_id, state, backend, vcpus, memory_mib, disk_bytes,
                         work_disk_bytes, pid, pid_start_ticks, created_at, started_at,
                         updated_at, host_key, nat, role)
        SELECT id, name, image_id, state, backend, vcpus, memory_mib, disk_bytes,
               work_disk_bytes, pid, pid_start_ticks, created_at, started_at,
               updated_at, host_key, nat, role
        FROM vms;
    DROP TABLE vms;
    ALTER TABLE vms_new RENAME TO vms;
    CREATE INDEX vms_image_id ON vms (image_id);
    ",
    // 5: copy-on-write roots. A VM's root is either its own full copy of the
    // image (`clone`) or the image file itself, read-only and shared, under
    // a per-VM upper disk (`layered`); a layered VM records which image
    // file it runs on, so that file is kept while the VM exists.
    "
    ALTER TABLE vms ADD COLUMN root_mode TEXT NOT NULL DEFAULT 'clone'
        CHECK (root_mode IN ('clone', 'layered'));
    ALTER TABLE vms ADD COLUMN base_path TEXT;
    ",
    // 6: published ports, the one way into a guest from outside the host.
    "
    CREATE TABLE ports (
        vm_id      INTEGER NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
        host_addr  TEXT NOT NULL,
        host_port  INTEGER NOT NULL CHECK (host_port BETWEEN 1 AND 65535),
        guest_port INTEGER NOT NULL CHECK (guest_port BETWEEN 1 AND 65535),
        UNIQUE (host_addr, host_port)
    ) STRICT;
    CREATE INDEX ports_vm_id ON ports (vm_id);
    ",
    // 7: UDP ports too. A TCP and a UDP port of the same number are
    // different ports, so the uniqueness takes the protocol (SQLite cannot
    // change a UNIQUE constraint in place: the table is rebuilt).
    "
    CREATE TABLE ports_new (
        vm_id      INTEGER NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
        host_addr  TEXT NOT NULL,
        host_port  INTEGER NOT NULL CHECK (host_port BETWEEN 1 AND 65535),
        guest_port INTEGER NOT NULL CHECK (guest_port BETWEEN 1 AND 65535),
        proto      TEXT NOT NULL DEFAULT 'tcp' CHECK (proto IN ('tcp', 'udp')),
        UNIQUE (host_addr, host_port, proto)
    ) STRICT;
    INSERT INTO ports_new (vm_id, host_addr, host_port, guest_port)
        SELECT vm_id, host_addr, host_port, guest_port FROM ports;
    DROP TABLE ports;
    ALTER TABLE ports_new RENAME TO ports;
    CREATE INDEX ports_vm_id ON ports (vm_id);
    ",
    // 8: memory snapshots. A VM may be `paused` (its VMM holds it, stopped),
    // `suspended` (its memory in a snapshot file, no VMM), and in the
    // intent states `suspending`, `restoring` and `forking`, which reconcile
    // finishes or undoes. The states move from a CHECK into a table of
    // their own, so the next state is one INSERT, not another rebuild. A
    // VM may also be the `template` VM an image is warmed with.
    "
    CREATE TABLE vm_states (name TEXT PRIMARY KEY) STRICT, WITHOUT ROWID;
    INSERT INTO vm_states (name) VALUES
        ('creating'), ('created'), ('starting'), ('running'), ('stopping'),
        ('stopped'), ('failed'), ('deleting'),
        ('paused'), ('suspending'), ('suspended'), ('restoring'), ('forking');
    CREATE TABLE vms_new (
        id              INTEGER PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE,
        image_id        INTEGER REFERENCES images (id) ON DELETE RESTRICT,
        state           TEXT NOT NULL REFERENCES vm_states (name),
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
        host_key        TEXT,
        nat             INTEGER NOT NULL DEFAULT 1 CHECK (nat IN (0, 1)),
        role            TEXT NOT NULL DEFAULT 'vm' CHECK (role IN ('vm', 'build', 'template')),
        root_mode       TEXT NOT NULL DEFAULT 'clone' CHECK (root_mode IN ('clone', 'layered')),
        base_path       TEXT,
        CHECK ((pid IS NULL) = (pid_start_ticks IS NULL))
    ) STRICT;
    INSERT INTO vms_new SELECT id, name, image_id, state, backend, vcpus, memory_mib,
        disk_bytes, work_disk_bytes, pid, pid_start_ticks, created_at, started_at,
        updated_at, host_key, nat, role, root_mode, base_path FROM vms;
    DROP TABLE vms;
    ALTER TABLE vms_new RENAME TO vms;
    CREATE INDEX vms_image_id ON vms (image_id);
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
///
/// Foreign keys are off meanwhile (a rebuilt table must not cascade into
/// the rows that refer to it) and checked before they are back on.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    if user_version(conn)? >= SCHEMA_VERSION {
        return Ok(());
    }
    conn.pragma_update(None, "foreign_keys", false)?;
    let result = (1..).zip(MIGRATIONS).try_for_each(|(version, sql)| {
        apply(conn, version, sql).map_err(|source| StoreError::Migrate { version, source })
    });
    conn.pragma_update(None, "foreign_keys", true)?;
    result
}

fn apply(conn: &mut Connection, version: u32, sql: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Read under the write lock, so a migration is never applied twice.
    if user_version(&tx)? >= version {
        return Ok(());
    }
    tx.execute_batch(sql)?;
    // With foreign keys off, nothing else would notice a migration that
    // left a row pointing nowhere: refuse to commit it.
    let dangling: i64 = tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
        r.get(0)
    })?;
    if dangling > 0 {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
            Some(format!("{dangling} rows would point nowhere")),
        ));
    }
    tx.pragma_update(None, "user_version", version)?;
    tx.commit()?;
    tracing::info!(version, "migrated the state database");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database at schema `version` holding the rows `seed` inserts,
    /// then migrated to the newest schema.
    fn migrated_from(version: usize, seed: &str) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        for (version, sql) in (1..).zip(&MIGRATIONS[..version]) {
            apply(&mut conn, version, sql).unwrap();
        }
        conn.execute_batch(seed).unwrap();
        migrate(&mut conn).unwrap();
        conn
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Rebuilding `vms` (migration 4) keeps leases and events attached.
    #[test]
    fn rebuilding_vms_keeps_the_rows_that_refer_to_it() {
        let conn = migrated_from(
            3,
            "INSERT INTO vms (id, name, state, backend, vcpus, memory_mib, disk_bytes, created_at, updated_at)
                 VALUES (7, 'box', 'running', 'qemu', 1, 256, 1024, 0, 0);
             INSERT INTO leases (vm_id, ip, mac, tap) VALUES (7, '10.0.0.2', '06:00:0a:00:00:02', 'tap2');
             INSERT INTO events (vm_id, vm_name, at, kind, message) VALUES (7, 'box', 0, 'created', '');",
        );
        assert_eq!(
            count(&conn, "SELECT count(*) FROM leases WHERE vm_id = 7"),
            1
        );
        assert_eq!(
            count(&conn, "SELECT count(*) FROM events WHERE vm_id = 7"),
            1
        );
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        conn.execute("UPDATE vms SET state = 'deleting' WHERE id = 7", [])
            .unwrap();
        // Foreign keys are back on: a lease of no VM is refused.
        assert!(
            conn.execute(
                "INSERT INTO leases (vm_id, ip, mac, tap) VALUES (99, '10.0.0.3', 'x', 'y')",
                []
            )
            .is_err()
        );
    }

    /// Migration 7 keeps every published port, as TCP, and lets a UDP port
    /// share a TCP port's number.
    #[test]
    fn ports_become_tcp_and_udp_may_share_the_number() {
        let conn = migrated_from(
            6,
            "INSERT INTO vms (id, name, state, backend, vcpus, memory_mib, disk_bytes, created_at, updated_at)
                 VALUES (7, 'box', 'running', 'qemu', 1, 256, 1024, 0, 0);
             INSERT INTO ports (vm_id, host_addr, host_port, guest_port) VALUES (7, '127.0.0.1', 8080, 80);",
        );
        let proto: String = conn
            .query_row("SELECT proto FROM ports WHERE host_port = 8080", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(proto, "tcp");
        conn.execute(
            "INSERT INTO ports (vm_id, host_addr, host_port, guest_port, proto) VALUES (7, '127.0.0.1', 8080, 53, 'udp')",
            [],
        )
        .unwrap();
        assert!(
            conn.execute(
                "INSERT INTO ports (vm_id, host_addr, host_port, guest_port, proto) VALUES (7, '127.0.0.1', 8080, 81, 'tcp')",
                []
            )
            .is_err()
        );
    }

    /// Migration 8 keeps every VM and what refers to it, takes the snapshot
    /// states, and still refuses a state nobody knows.
    #[test]
    fn snapshot_states_come_with_migration_8() {
        let conn = migrated_from(
            7,
            "INSERT INTO vms (id, name, state, backend, vcpus, memory_mib, disk_bytes, created_at, updated_at, root_mode)
                 VALUES (7, 'box', 'running', 'qemu', 1, 256, 1024, 0, 0, 'layered');
             INSERT INTO leases (vm_id, ip, mac, tap) VALUES (7, '10.0.0.2', '06:00:0a:00:00:02', 'tap2');
             INSERT INTO ports (vm_id, host_addr, host_port, guest_port) VALUES (7, '127.0.0.1', 8080, 80);",
        );
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        assert_eq!(
            count(&conn, "SELECT count(*) FROM leases WHERE vm_id = 7"),
            1
        );
        assert_eq!(
            count(&conn, "SELECT count(*) FROM ports WHERE vm_id = 7"),
            1
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM vms WHERE root_mode = 'layered'"
            ),
            1
        );
        for state in crate::model::VmState::ALL {
            conn.execute("UPDATE vms SET state = ?1 WHERE id = 7", [state.as_str()])
                .unwrap();
        }
        assert!(
            conn.execute("UPDATE vms SET state = 'hibernating' WHERE id = 7", [])
                .is_err()
        );
    }
}
