//! `StoreError`, and reading SQLite's constraint failures into it.

use std::io;
use std::path::PathBuf;

use rusqlite::ErrorCode;

/// The one row `sql` selects for `name` (its `?1`), or `NotFound` naming
/// it as a `kind`.
pub(super) fn one_named<T>(
    conn: &rusqlite::Connection,
    kind: &'static str,
    sql: &str,
    name: &str,
    from_row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    use rusqlite::OptionalExtension;
    conn.query_row(sql, [name], from_row)
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            kind,
            name: name.to_string(),
        })
}

/// Everything the store can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("cannot create state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// SQLite could not open or configure the database file.
    #[error("cannot open state database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The schema is newer than this binary knows; writing to it could lose data.
    #[error(
        "state database {path} was written by a newer banger (schema version {found}, \
         this banger knows up to {supported}); it was left untouched: upgrade banger"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// The file is not a SQLite database, or fails its integrity check.
    #[error(
        "state database {path} is damaged ({detail}); it was kept where it is: \
         move it aside to start fresh (its VM records are then lost)"
    )]
    Corrupt { path: PathBuf, detail: String },

    /// A schema migration failed and was rolled back.
    #[error("cannot migrate the state database to schema version {version}")]
    Migrate {
        version: u32,
        #[source]
        source: rusqlite::Error,
    },

    /// A name, IP, MAC or tap is already taken by another record.
    #[error("{}", .what.message(.value))]
    Conflict { what: Taken, value: String },

    /// No record with that name.
    #[error("no {kind} named `{name}`")]
    NotFound { kind: &'static str, name: String },

    /// Deleting the image would leave VMs without their kernel and base.
    #[error("image `{name}` is still used by a VM; delete the VM first")]
    ImageInUse { name: String },

    /// SQLite stores paths as text, so they must be UTF-8.
    #[error("path {} is not valid UTF-8", .path.display())]
    NonUtf8Path { path: PathBuf },

    /// A value that should be one of a fixed set is not.
    #[error("invalid {kind} `{value}`")]
    Invalid { kind: &'static str, value: String },

    /// Any other SQLite failure.
    #[error("state database query failed")]
    Sqlite(#[from] rusqlite::Error),
}

/// Which uniqueness rule a write broke: two VMs never share a name, IP, MAC
/// or tap, and two images never share a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    VmName,
    ImageName,
    Ip,
    Mac,
    Tap,
    /// A published host address and port.
    Port,
}

impl Taken {
    /// The user-facing sentence for `value` being taken.
    fn message(self, value: &str) -> String {
        match self {
            Taken::VmName => format!("a VM named `{value}` already exists"),
            Taken::ImageName => format!("an image named `{value}` already exists"),
            Taken::Ip => format!("IP {value} is already leased"),
            Taken::Mac => format!("MAC {value} is already leased"),
            Taken::Tap => format!("tap {value} is already leased"),
            Taken::Port => format!(
                "host port {value} is already published by another VM; pick another host port"
            ),
        }
    }

    /// Reads SQLite's `UNIQUE constraint failed: <table>.<column>` message.
    fn from_unique_message(message: &str) -> Option<Taken> {
        let column = message.strip_prefix("UNIQUE constraint failed: ")?;
        match column.trim() {
            "vms.name" => Some(Taken::VmName),
            "images.name" => Some(Taken::ImageName),
            "leases.ip" => Some(Taken::Ip),
            "leases.mac" => Some(Taken::Mac),
            "leases.tap" => Some(Taken::Tap),
            "ports.host_addr, ports.host_port, ports.proto" => Some(Taken::Port),
            _ => None,
        }
    }
}

/// Which uniqueness rule `err` broke, if it is a UNIQUE violation we know.
fn unique_violation(err: &rusqlite::Error) -> Option<Taken> {
    match err {
        rusqlite::Error::SqliteFailure(e, Some(message))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            Taken::from_unique_message(message)
        }
        _ => None,
    }
}

/// `err` as a [`StoreError::Conflict`] when it broke a uniqueness rule and
/// `value_of` knows the value that was taken; otherwise as is.
pub(super) fn conflict(
    err: rusqlite::Error,
    value_of: impl FnOnce(Taken) -> Option<String>,
) -> StoreError {
    match unique_violation(&err).and_then(|what| Some((what, value_of(what)?))) {
        Some((what, value)) => StoreError::Conflict { what, value },
        None => StoreError::Sqlite(err),
    }
}

/// True when `err` says the file is not a database or is damaged.
pub(super) fn is_corruption(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_messages_name_the_column() {
        let cases = [
            ("UNIQUE constraint failed: vms.name", Taken::VmName),
            ("UNIQUE constraint failed: images.name", Taken::ImageName),
            ("UNIQUE constraint failed: leases.ip", Taken::Ip),
            ("UNIQUE constraint failed: leases.mac", Taken::Mac),
            ("UNIQUE constraint failed: leases.tap", Taken::Tap),
        ];
        for (message, taken) in cases {
            assert_eq!(
                Taken::from_unique_message(message),
                Some(taken),
                "{message}"
            );
        }
    }

    #[test]
    fn other_constraint_messages_are_not_conflicts() {
        for message in [
            "UNIQUE constraint failed: leases.vm_id",
            "UNIQUE constraint failed: vms.name, vms.id",
            "NOT NULL constraint failed: vms.name",
            "FOREIGN KEY constraint failed",
            "",
        ] {
            assert_eq!(Taken::from_unique_message(message), None, "{message}");
        }
    }

    #[test]
    fn conflict_messages_read_well() {
        let err = StoreError::Conflict {
            what: Taken::VmName,
            value: "x".into(),
        };
        assert_eq!(err.to_string(), "a VM named `x` already exists");
        let err = StoreError::Conflict {
            what: Taken::Ip,
            value: "172.30.0.5".into(),
        };
        assert_eq!(err.to_string(), "IP 172.30.0.5 is already leased");
    }
}
