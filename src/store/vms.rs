//! VM records, their network leases and lifecycle state.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, TransactionBehavior, params};
use serde::Serialize;

use super::error::{Taken, conflict};
use super::images::image_id;
use super::{Store, StoreError};
use crate::net::ports::{PortSpec, Proto};

/// The VMMs the schema accepts in `vms.backend`.
const BACKENDS: [&str; 2] = ["firecracker", "qemu"];

/// Where a VM is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Its row exists; its disks and files are being made.
    Creating,
    Created,
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
    /// Its removal has begun; only finishing it is left.
    Deleting,
}

impl VmState {
    /// Every state, in lifecycle order.
    pub const ALL: [VmState; 8] = [
        VmState::Creating,
        VmState::Created,
        VmState::Starting,
        VmState::Running,
        VmState::Stopping,
        VmState::Stopped,
        VmState::Failed,
        VmState::Deleting,
    ];

    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Created => "created",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Failed => "failed",
            VmState::Deleting => "deleting",
        }
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VmState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<VmState, StoreError> {
        VmState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| StoreError::Invalid {
                kind: "VM state",
                value: s.to_string(),
            })
    }
}

impl ToSql for VmState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for VmState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<VmState> {
        value
            .as_str()?
            .parse()
            .map_err(|err| FromSqlError::Other(Box::new(err)))
    }
}

/// Whose a VM is: the user's, or the temporary VM of an image build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VmRole {
    Vm,
    Build,
}

impl VmRole {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            VmRole::Vm => "vm",
            VmRole::Build => "build",
        }
    }
}

impl ToSql for VmRole {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for VmRole {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<VmRole> {
        match value.as_str()? {
            "vm" => Ok(VmRole::Vm),
            "build" => Ok(VmRole::Build),
            other => Err(FromSqlError::Other(Box::new(StoreError::Invalid {
                kind: "VM role",
                value: other.to_string(),
            }))),
        }
    }
}

/// How a VM's root filesystem is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RootMode {
    /// Its own full copy of the image (reflink where the filesystem can).
    Clone,
    /// The image itself, read-only and shared, under a per-VM upper disk.
    Layered,
}

impl RootMode {
    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            RootMode::Clone => "clone",
            RootMode::Layered => "layered",
        }
    }
}

impl ToSql for RootMode {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for RootMode {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<RootMode> {
        match value.as_str()? {
            "clone" => Ok(RootMode::Clone),
            "layered" => Ok(RootMode::Layered),
            other => Err(FromSqlError::Other(Box::new(StoreError::Invalid {
                kind: "root mode",
                value: other.to_string(),
            }))),
        }
    }
}

/// A VM's network identity. Two VMs never share any of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The guest's static address on the bridge, handed over on the kernel command line.
    pub ip: String,
    /// The guest NIC's MAC, derived from the IP; compared case-insensitively.
    pub mac: String,
    /// The host tap device the guest NIC is attached to.
    pub tap: String,
}

/// The VMM process running a VM, as recorded when it was launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VmProcess {
    /// The VMM's process id.
    pub pid: u32,
    /// Its start time (field 22 of `/proc/<pid>/stat`), so a reused pid is not mistaken for it.
    pub start_ticks: u64,
}

/// What it takes to record a new VM; it starts in [`VmState::Creating`].
#[derive(Debug, Clone)]
pub struct NewVm {
    /// Unique among VMs; also its DNS name under `.vm`.
    pub name: String,
    /// The image it is created from, by name; `None` for a bare rootfs.
    pub image: Option<String>,
    /// The VMM that runs it: `firecracker` or `qemu`.
    pub backend: String,
    /// Guest vCPUs, at least 1.
    pub vcpus: u32,
    /// Guest memory in MiB, at least 1.
    pub memory_mib: u32,
    /// Size of its own rootfs copy.
    pub disk_bytes: u64,
    /// Size of its work disk, if it has one.
    pub work_disk_bytes: Option<u64>,
    /// Its network identity, recorded in the same transaction so a taken IP,
    /// MAC or tap leaves no VM behind.
    pub lease: Option<Lease>,
    /// Whether it reaches the outside world through the host's NAT.
    pub nat: bool,
    /// A user's VM, or an image build's.
    pub role: VmRole,
    /// How its root filesystem is made.
    pub root_mode: RootMode,
    /// The image file a layered VM runs on (kept while the VM exists).
    pub base_path: Option<std::path::PathBuf>,
}

/// A VM as stored, with its image name and lease joined in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmRecord {
    /// Row id, stable while the VM exists; events refer to it.
    pub id: i64,
    /// Unique among VMs; also its DNS name under `.vm`.
    pub name: String,
    /// The image it was created from, if any.
    pub image: Option<String>,
    /// Where it is in its lifecycle, as banger last recorded it.
    pub state: VmState,
    /// The VMM that runs it: `firecracker` or `qemu`.
    pub backend: String,
    /// Guest vCPUs.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Size of its own rootfs copy.
    pub disk_bytes: u64,
    /// Size of its work disk, if it has one.
    pub work_disk_bytes: Option<u64>,
    /// The VMM's pid while one is believed to run; reconcile checks it on daemon start.
    pub pid: Option<u32>,
    /// The VMM's start time, so reconcile can tell a reused pid from ours.
    pub pid_start_ticks: Option<u64>,
    /// The guest's address, from its lease; `None` when it has none.
    pub ip: Option<String>,
    /// The guest NIC's MAC, from its lease.
    pub mac: Option<String>,
    /// The host tap device, from its lease.
    pub tap: Option<String>,
    /// Its SSH host public key (`ssh-ed25519 AAAA...`), generated by banger
    /// before first boot; `vm ssh` accepts no other.
    pub host_key: Option<String>,
    /// Whether it reaches the outside world through the host's NAT.
    pub nat: bool,
    /// A user's VM, or an image build's.
    pub role: VmRole,
    /// How its root filesystem is made.
    pub root_mode: RootMode,
    /// The image file a layered VM runs on.
    pub base_path: Option<std::path::PathBuf>,
    /// Unix seconds.
    pub created_at: i64,
    /// When it last reached `running`, in unix seconds.
    pub started_at: Option<i64>,
    /// When the row last changed, in unix seconds.
    pub updated_at: i64,
}

/// Selects every [`VmRecord`] column; callers append `WHERE`/`ORDER BY`.
const SELECT_VM: &str = "
    SELECT vms.id, vms.name, images.name AS image, vms.state, vms.backend, vms.vcpus,
           vms.memory_mib, vms.disk_bytes, vms.work_disk_bytes, vms.pid, vms.pid_start_ticks,
           leases.ip, leases.mac, leases.tap, vms.host_key, vms.nat, vms.role, vms.root_mode, vms.base_path, vms.created_at, vms.started_at, vms.updated_at
    FROM vms
    LEFT JOIN images ON images.id = vms.image_id
    LEFT JOIN leases ON leases.vm_id = vms.id";

fn vm_from_row(row: &Row<'_>) -> rusqlite::Result<VmRecord> {
    Ok(VmRecord {
        id: row.get("id")?,
        name: row.get("name")?,
        image: row.get("image")?,
        state: row.get("state")?,
        backend: row.get("backend")?,
        vcpus: row.get("vcpus")?,
        memory_mib: row.get("memory_mib")?,
        disk_bytes: row.get("disk_bytes")?,
        work_disk_bytes: row.get("work_disk_bytes")?,
        pid: row.get("pid")?,
        pid_start_ticks: row.get("pid_start_ticks")?,
        ip: row.get("ip")?,
        mac: row.get("mac")?,
        tap: row.get("tap")?,
        host_key: row.get("host_key")?,
        nat: row.get("nat")?,
        role: row.get("role")?,
        root_mode: row.get("root_mode")?,
        base_path: row.get::<_, Option<String>>("base_path")?.map(Into::into),
        created_at: row.get("created_at")?,
        started_at: row.get("started_at")?,
        updated_at: row.get("updated_at")?,
    })
}

/// The VM named `name`, or `NotFound`.
fn vm_named(conn: &Connection, name: &str) -> Result<VmRecord, StoreError> {
    conn.query_row(
        &format!("{SELECT_VM} WHERE vms.name = ?1"),
        [name],
        vm_from_row,
    )
    .optional()?
    .ok_or_else(|| not_found(name))
}

/// The row id of the VM named `name`, or `NotFound`.
pub(super) fn vm_id(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    conn.query_row("SELECT id FROM vms WHERE name = ?1", [name], |row| {
        row.get(0)
    })
    .optional()?
    .ok_or_else(|| not_found(name))
}

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound {
        kind: "VM",
        name: name.to_string(),
    }
}

impl Store {
    /// Records a new VM in state `creating`, with its lease if it has one.
    /// A taken name, IP, MAC or tap is a [`StoreError::Conflict`] and leaves nothing behind.
    pub fn insert_vm(&mut self, vm: &NewVm) -> Result<VmRecord, StoreError> {
        if !BACKENDS.contains(&vm.backend.as_str()) {
            return Err(StoreError::Invalid {
                kind: "backend",
                value: vm.backend.clone(),
            });
        }
        let value_of = |what| match what {
            Taken::VmName => Some(vm.name.as_str()),
            Taken::Ip => vm.lease.as_ref().map(|l| l.ip.as_str()),
            Taken::Mac => vm.lease.as_ref().map(|l| l.mac.as_str()),
            Taken::Tap => vm.lease.as_ref().map(|l| l.tap.as_str()),
            Taken::ImageName | Taken::Port => None,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let image_id = match &vm.image {
            Some(image) => Some(image_id(&tx, image)?),
            None => None,
        };
        tx.execute(
            "INSERT INTO vms (name, image_id, state, backend, vcpus, memory_mib, disk_bytes,
                              work_disk_bytes, nat, role, root_mode, base_path, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, unixepoch(), unixepoch())",
            params![
                vm.name,
                image_id,
                VmState::Creating,
                vm.backend,
                vm.vcpus,
                vm.memory_mib,
                vm.disk_bytes,
                vm.work_disk_bytes,
                vm.nat,
                vm.role,
                vm.root_mode,
                vm.base_path.as_ref().map(|p| p.to_string_lossy().into_owned()),
            ],
        )
        .map_err(|err| conflict(err, value_of))?;
        if let Some(lease) = &vm.lease {
            tx.execute(
                "INSERT INTO leases (vm_id, ip, mac, tap) VALUES (?1, ?2, ?3, ?4)",
                params![tx.last_insert_rowid(), lease.ip, lease.mac, lease.tap],
            )
            .map_err(|err| conflict(err, value_of))?;
        }
        let record = vm_named(&tx, &vm.name)?;
        tx.commit()?;
        Ok(record)
    }

    /// Every VM, by name.
    pub fn list_vms(&self) -> Result<Vec<VmRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("{SELECT_VM} ORDER BY vms.name"))?;
        let vms = stmt.query_map([], vm_from_row)?.collect::<Result<_, _>>()?;
        Ok(vms)
    }

    /// The VM named `name`.
    pub fn get_vm(&self, name: &str) -> Result<VmRecord, StoreError> {
        vm_named(&self.conn, name)
    }

    /// Publishes `port` for VM `name`. A host address and port another VM
    /// publishes already is a [`StoreError::Conflict`].
    pub fn add_port(&mut self, name: &str, port: &PortSpec) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id = vm_id(&tx, name)?;
        tx.execute(
            "INSERT INTO ports (vm_id, host_addr, host_port, guest_port, proto)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                port.host_addr.to_string(),
                port.host_port,
                port.guest_port,
                port.proto.as_str()
            ],
        )
        .map_err(|err| {
            let shown = format!(
                "{}:{}/{}",
                port.host_addr,
                port.host_port,
                port.proto.as_str()
            );
            match conflict(err, |what| (what == Taken::Port).then_some("")) {
                StoreError::Conflict { what, .. } => StoreError::Conflict { what, value: shown },
                other => other,
            }
        })?;
        tx.commit()?;
        Ok(())
    }

    /// Stops publishing `port` for VM `name`; false when it was not.
    pub fn remove_port(&mut self, name: &str, port: &PortSpec) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id = vm_id(&tx, name)?;
        let removed = tx.execute(
            "DELETE FROM ports WHERE vm_id = ?1 AND host_addr = ?2 AND host_port = ?3
             AND guest_port = ?4 AND proto = ?5",
            params![
                id,
                port.host_addr.to_string(),
                port.host_port,
                port.guest_port,
                port.proto.as_str()
            ],
        )?;
        tx.commit()?;
        Ok(removed > 0)
    }

    /// The ports VM `name` publishes, in order.
    pub fn ports_of(&self, name: &str) -> Result<Vec<PortSpec>, StoreError> {
        let id = vm_id(&self.conn, name)?;
        let mut stmt = self.conn.prepare(
            "SELECT host_addr, host_port, guest_port, proto FROM ports WHERE vm_id = ?1
             ORDER BY host_addr, host_port, proto",
        )?;
        let rows = stmt.query_map([id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, u16>(1)?,
                row.get::<_, u16>(2)?,
                row.get::<_, String>(3)?,
            ))
        })?;
        let mut ports = Vec::new();
        for row in rows {
            let (addr, host_port, guest_port, proto) = row?;
            ports.push(PortSpec {
                host_addr: addr.parse().map_err(|_| StoreError::Invalid {
                    kind: "host address",
                    value: addr.clone(),
                })?,
                host_port,
                guest_port,
                proto: Proto::from_name(&proto).ok_or(StoreError::Invalid {
                    kind: "port protocol",
                    value: proto.clone(),
                })?,
            });
        }
        Ok(ports)
    }

    /// The VM leasing `ip`.
    pub fn vm_by_ip(&self, ip: &str) -> Result<VmRecord, StoreError> {
        self.conn
            .query_row(
                &format!("{SELECT_VM} WHERE leases.ip = ?1"),
                [ip],
                vm_from_row,
            )
            .optional()?
            .ok_or_else(|| not_found(ip))
    }

    /// Moves a VM to `state` and records the VMM process now running it
    /// (`None` clears it). Reaching `running` sets `started_at`.
    pub fn set_vm_state(
        &mut self,
        name: &str,
        state: VmState,
        process: Option<VmProcess>,
    ) -> Result<VmRecord, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE vms SET
                 started_at = CASE WHEN ?2 = 'running' AND state <> 'running'
                                   THEN unixepoch() ELSE started_at END,
                 state = ?2, pid = ?3, pid_start_ticks = ?4, updated_at = unixepoch()
             WHERE name = ?1",
            params![
                name,
                state,
                process.map(|p| p.pid),
                process.map(|p| p.start_ticks)
            ],
        )?;
        if changed == 0 {
            return Err(not_found(name));
        }
        let record = vm_named(&tx, name)?;
        tx.commit()?;
        Ok(record)
    }

    /// Records the SSH host public key generated for a VM.
    pub fn set_vm_host_key(&mut self, name: &str, key: &str) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE vms SET host_key = ?2, updated_at = unixepoch() WHERE name = ?1",
            params![name, key],
        )?;
        if changed == 0 {
            return Err(not_found(name));
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes a VM and its lease; its events stay, detached. Returns what was
    /// deleted, so the caller can release its tap and files.
    pub fn delete_vm(&mut self, name: &str) -> Result<VmRecord, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = vm_named(&tx, name)?;
        tx.execute("DELETE FROM vms WHERE id = ?1", [record.id])?;
        tx.commit()?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for state in VmState::ALL {
            assert_eq!(state.as_str().parse::<VmState>().ok(), Some(state));
            assert_eq!(state.to_string(), state.as_str());
        }
    }

    #[test]
    fn unknown_state_names_are_refused() {
        for name in ["", "Running", "paused", " running"] {
            let err = name.parse::<VmState>().unwrap_err();
            assert_eq!(err.to_string(), format!("invalid VM state `{name}`"));
        }
    }

    #[test]
    fn states_serialize_as_their_names() {
        let json = serde_json::to_string(&VmState::Stopping).unwrap();
        assert_eq!(json, "\"stopping\"");
    }
}
