//! The subset of Firecracker's API models banger uses, mirroring
//! `src/firecracker/swagger/firecracker.yaml` of Firecracker v1.16.1:
//! field names exactly as in the spec, optional fields left out of the JSON
//! when unset (so Firecracker applies its own defaults).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `PUT /machine-config`: vCPUs and memory of the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfiguration {
    /// 1 or an even number, at most 32.
    pub vcpu_count: u32,
    pub mem_size_mib: u32,
    /// Simultaneous multithreading (x86 only); Firecracker's default is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
}

/// `PUT /boot-source`: the kernel Firecracker loads (an uncompressed ELF
/// `vmlinux` on x86_64), its initrd and command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSource {
    pub kernel_image_path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

/// How Firecracker caches a block device's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Flushes are ignored (Firecracker's default): fast, loses data on a
    /// host crash.
    Unsafe,
    /// Guest flushes reach the host's disk.
    Writeback,
}

/// `PUT /drives/{drive_id}`: a virtio-block device backed by a host file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    /// Must equal the `{drive_id}` of the request path.
    pub drive_id: String,
    pub path_on_host: PathBuf,
    /// The guest's `root=` points at this device (at most one per VM).
    pub is_root_device: bool,
    pub is_read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
}

/// `PUT /network-interfaces/{iface_id}`: a virtio-net device on a host tap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    /// Must equal the `{iface_id}` of the request path.
    pub iface_id: String,
    /// The tap device's name on the host.
    pub host_dev_name: String,
    /// `aa:bb:cc:dd:ee:ff`; Firecracker picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
}

/// `PUT /vsock`: a virtio-vsock device; the host reaches guest port P by
/// connecting to `uds_path` and writing `CONNECT P\n`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vsock {
    /// The guest's context id (3 and up; every VM may use 3).
    pub guest_cid: u32,
    /// The unix socket Firecracker listens on, as it sees the path.
    pub uds_path: PathBuf,
}

/// Firecracker's log levels (the spec accepts them case-insensitively).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
    Trace,
    Off,
}

/// `PUT /logger`: where Firecracker writes its own (not the guest's) log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logger {
    /// An existing file (Firecracker opens it, it does not create it) or a
    /// named pipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
}

/// What `PUT /actions` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Boot the configured machine.
    InstanceStart,
    /// Press Ctrl+Alt+Del on the guest's keyboard (x86): a graceful
    /// shutdown request the guest may honour.
    SendCtrlAltDel,
    FlushMetrics,
}

/// `PUT /actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceActionInfo {
    pub action_type: ActionType,
}

/// `PATCH /vm`: pause or resume a running microVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmRunState {
    Paused,
    Resumed,
}

/// The body of `PATCH /vm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStateChange {
    pub state: VmRunState,
}

/// The state in [`InstanceInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
}

/// `GET /`: who this Firecracker is and what state its VM is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The `--id` the process was started with.
    pub id: String,
    pub state: InstanceState,
    pub vmm_version: String,
    pub app_name: String,
}

/// The body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub fault_message: String,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn to_json<T: Serialize>(value: &T) -> Value {
        serde_json::to_value(value).unwrap()
    }

    #[test]
    fn machine_configuration_uses_spec_names_and_omits_unset_smt() {
        let config = MachineConfiguration {
            vcpu_count: 2,
            mem_size_mib: 1024,
            smt: None,
        };
        assert_eq!(
            to_json(&config),
            json!({"vcpu_count": 2, "mem_size_mib": 1024})
        );
        let config = MachineConfiguration {
            smt: Some(false),
            ..config
        };
        assert_eq!(to_json(&config)["smt"], json!(false));
    }

    #[test]
    fn boot_source_omits_absent_initrd_and_args() {
        let boot = BootSource {
            kernel_image_path: "/k/vmlinux".into(),
            initrd_path: None,
            boot_args: None,
        };
        assert_eq!(to_json(&boot), json!({"kernel_image_path": "/k/vmlinux"}));
        let boot = BootSource {
            initrd_path: Some("/k/initrd.img".into()),
            boot_args: Some("console=ttyS0 reboot=k".into()),
            ..boot
        };
        assert_eq!(
            to_json(&boot),
            json!({
                "kernel_image_path": "/k/vmlinux",
                "initrd_path": "/k/initrd.img",
                "boot_args": "console=ttyS0 reboot=k",
            })
        );
    }

    #[test]
    fn drive_uses_spec_names_and_cache_type_values() {
        let drive = Drive {
            drive_id: "rootfs".into(),
            path_on_host: "/vms/a/rootfs.ext4".into(),
            is_root_device: true,
            is_read_only: false,
            cache_type: None,
        };
        assert_eq!(
            to_json(&drive),
            json!({
                "drive_id": "rootfs",
                "path_on_host": "/vms/a/rootfs.ext4",
                "is_root_device": true,
                "is_read_only": false,
            })
        );
        let drive = Drive {
            cache_type: Some(CacheType::Writeback),
            ..drive
        };
        assert_eq!(to_json(&drive)["cache_type"], json!("Writeback"));
        assert_eq!(to_json(&CacheType::Unsafe), json!("Unsafe"));
    }

    #[test]
    fn network_interface_uses_spec_names() {
        let iface = NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "tap-a".into(),
            guest_mac: Some("02:fc:00:00:00:05".into()),
        };
        assert_eq!(
            to_json(&iface),
            json!({"iface_id": "eth0", "host_dev_name": "tap-a", "guest_mac": "02:fc:00:00:00:05"})
        );
        let iface = NetworkInterface {
            guest_mac: None,
            ..iface
        };
        assert!(to_json(&iface).get("guest_mac").is_none());
    }

    #[test]
    fn logger_uses_spec_names_and_level_values() {
        let logger = Logger {
            log_path: Some("/vms/a/firecracker.log".into()),
            level: Some(LogLevel::Warning),
            show_level: Some(true),
            show_log_origin: Some(false),
        };
        assert_eq!(
            to_json(&logger),
            json!({
                "log_path": "/vms/a/firecracker.log",
                "level": "Warning",
                "show_level": true,
                "show_log_origin": false,
            })
        );
        let empty = Logger {
            log_path: None,
            level: None,
            show_level: None,
            show_log_origin: None,
        };
        assert_eq!(to_json(&empty), json!({}));
    }

    #[test]
    fn actions_use_spec_enum_values() {
        for (action, name) in [
            (ActionType::InstanceStart, "InstanceStart"),
            (ActionType::SendCtrlAltDel, "SendCtrlAltDel"),
            (ActionType::FlushMetrics, "FlushMetrics"),
        ] {
            let info = InstanceActionInfo {
                action_type: action,
            };
            assert_eq!(to_json(&info), json!({"action_type": name}));
        }
    }

    #[test]
    fn instance_info_decodes_every_spec_state() {
        for (name, state) in [
            ("Not started", InstanceState::NotStarted),
            ("Running", InstanceState::Running),
            ("Paused", InstanceState::Paused),
        ] {
            let body = json!({
                "id": "testbox",
                "state": name,
                "vmm_version": "1.16.1",
                "app_name": "Firecracker",
            });
            let info: InstanceInfo = serde_json::from_value(body).unwrap();
            assert_eq!(info.state, state);
            assert_eq!(info.id, "testbox");
            assert_eq!(info.vmm_version, "1.16.1");
            assert_eq!(info.app_name, "Firecracker");
        }
    }

    #[test]
    fn error_body_carries_fault_message() {
        let body: ApiErrorBody =
            serde_json::from_str(r#"{"fault_message": "Invalid kernel path"}"#).unwrap();
        assert_eq!(body.fault_message, "Invalid kernel path");
    }
}

/// `PUT /snapshot/create` (the VM paused): a full snapshot, its device
/// state and its memory in two files Firecracker writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCreateParams {
    pub snapshot_path: PathBuf,
    pub mem_file_path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    Full,
    Diff,
}

/// `PUT /snapshot/load`, on a fresh process (only the logger configured).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotLoadParams {
    pub snapshot_path: PathBuf,
    pub mem_backend: MemoryBackend,
    /// Held paused when false, until `PATCH /vm` resumes it.
    #[serde(default)]
    pub resume_vm: bool,
    /// Each interface's host tap, where it is not the snapshot's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
}

/// Where a restored guest's memory comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBackend {
    pub backend_type: MemoryBackendType,
    pub backend_path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    /// The memory file, mapped privately: restores of one file share its
    /// pages in the host's page cache.
    File,
    Uffd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}
