//! The event log: what happened to which VM, for `vm show` and debugging.

use rusqlite::{Row, TransactionBehavior, params};
use serde::Serialize;

use super::vms::vm_id;
use super::{Store, StoreError};

/// One logged event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRecord {
    /// Row id; orders events recorded within the same second.
    pub id: i64,
    /// The VM's name when the event was recorded; kept after the VM is deleted.
    pub vm: Option<String>,
    /// Unix seconds.
    pub at: i64,
    /// A short machine-friendly tag, e.g. `started` or `reconciled`.
    pub kind: String,
    /// What a person reads.
    pub message: String,
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        id: row.get("id")?,
        vm: row.get("vm_name")?,
        at: row.get("at")?,
        kind: row.get("kind")?,
        message: row.get("message")?,
    })
}

impl Store {
    /// Logs an event about the VM named `vm` (which must exist), or about
    /// the host when `None`.
    pub fn record_event(
        &mut self,
        vm: Option<&str>,
        kind: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let inserted = match vm {
            Some(name) => tx.execute(
                "INSERT INTO events (vm_id, vm_name, at, kind, message)
                 SELECT id, name, unixepoch(), ?2, ?3 FROM vms WHERE name = ?1",
                params![name, kind, message],
            )?,
            None => tx.execute(
                "INSERT INTO events (at, kind, message) VALUES (unixepoch(), ?1, ?2)",
                params![kind, message],
            )?,
        };
        if let (0, Some(name)) = (inserted, vm) {
            return Err(StoreError::NotFound {
                kind: "VM",
                name: name.to_string(),
            });
        }
        tx.commit()?;
        Ok(())
    }

    /// The last `limit` events, oldest first: those of the VM named `vm`,
    /// or all of them when `None`.
    pub fn events(&self, vm: Option<&str>, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        let mut events = match vm {
            Some(name) => {
                let id = vm_id(&self.conn, name)?;
                let mut stmt = self.conn.prepare(
                    "SELECT id, vm_name, at, kind, message FROM events
                     WHERE vm_id = ?1 ORDER BY id DESC LIMIT ?2",
                )?;
                stmt.query_map(params![id, limit], event_from_row)?
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => {
                let mut stmt = self.conn.prepare(
                    "SELECT id, vm_name, at, kind, message FROM events
                     ORDER BY id DESC LIMIT ?1",
                )?;
                stmt.query_map([limit], event_from_row)?
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        events.reverse();
        Ok(events)
    }
}
