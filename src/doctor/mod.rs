//! `banger doctor`: every host check, the runtime bundle, which VMM this
//! host gets and why, and who VMMs run as. The daemon serves the report
//! (`GET /v1/doctor`); the CLI prints it, and builds it itself when the
//! daemon cannot start.

mod host;

use crate::bundle::Bundle;
use crate::config::Config;
use crate::grant::Policy;
use crate::grant::netadmin::NetAdmin;
use crate::model::{VmmChoice, VmmKind};
use crate::paths::Paths;
use crate::rpc::api::{DoctorCheck, DoctorReport};
use crate::vmm::{jail, select, vmm_user};

/// Every host check, then the runtime bundle and which VMM `auto` picks
/// here and why. The CLI calls this directly when the daemon cannot start.
pub async fn report(config: &Config, paths: &Paths) -> DoctorReport {
    let mut checks: Vec<DoctorCheck> = host::host_checks(None).await;
    checks.push(host::grant_check(&netadmin(config, paths), helper_source().as_deref()).await);
    let bundle = Bundle::locate(config.runtime_dir.as_deref(), &paths.data_dir);
    checks.push(match &bundle {
        Ok(b) => DoctorCheck {
            name: "runtime bundle".into(),
            ok: true,
            required: true,
            detail: format!(
                "{} (kernel {})",
                b.dir.display(),
                b.kernel_version.as_deref().unwrap_or("unknown")
            ),
            fix: None,
            ..Default::default()
        },
        Err(e) => DoctorCheck {
            name: "runtime bundle".into(),
            ok: false,
            required: true,
            detail: e.to_string(),
            fix: Some("`make runtime-debian` builds one from Debian's packages".into()),
            ..Default::default()
        },
    });
    if let Ok(b) = &bundle {
        let (mode, why) = b.root_mode();
        let layered = mode == crate::model::RootMode::Layered;
        checks.push(DoctorCheck {
            name: "VM root disks".into(),
            ok: layered,
            // Clone mode works; it only costs time and space per VM.
            required: false,
            detail: format!("{}: {why}", mode.as_str()),
            fix: (!layered).then(|| {
                "`make runtime-debian` rebuilds the initrd so VMs share their image read-only"
                    .into()
            }),
            ..Default::default()
        });
    }
    let gateway = config
        .network
        .subnet
        .split('/')
        .next()
        .unwrap_or("172.30.0.1");
    let resolved = std::path::Path::new("/run/systemd/resolve").is_dir();
    checks.push(DoctorCheck {
        name: ".vm names on the host".into(),
        ok: resolved,
        required: false,
        detail: if resolved {
            format!("systemd-resolved: banger routes ~vm to {gateway} on {}", config.network.bridge)
        } else {
            "no systemd-resolved: the host does not send .vm queries to banger by itself".into()
        },
        fix: (!resolved).then(|| {
            format!("send the vm domain to {gateway}: dnsmasq `server=/vm/{gateway}`, or query it directly (`dig @{gateway} NAME.vm`); guests resolve .vm already")
        }),
        ..Default::default()
    });
    let (auto, why) = select::describe_host(config, bundle.as_ref().ok());
    let chosen = match config.vmm {
        VmmChoice::Auto => format!("auto -> {auto}: {why}"),
        other => format!("{other} (set in config.toml); auto would pick {auto}: {why}"),
    };
    checks.push(DoctorCheck {
        name: "vmm".into(),
        ok: true,
        required: false,
        detail: chosen,
        fix: None,
        ..Default::default()
    });
    // The VMMs this config starts: the chosen kind, else auto's pick.
    let configured = config.vmm.kind().unwrap_or(auto);
    let (isolated, who) = describe_vmm_user(configured, config);
    checks.push(DoctorCheck {
        name: "vmm user".into(),
        ok: isolated,
        required: false,
        detail: who,
        fix: (!isolated).then(|| {
            "let a group open /dev/kvm (udev: `chgrp kvm /dev/kvm; chmod 0660 /dev/kvm`) and make /dev/net/tun 0666".into()
        }),
        ..Default::default()
    });
    DoctorReport { checks }
}

/// The network administrator for `config` (the daemon's own, or one made
/// for the check when the daemon cannot start).
fn netadmin(config: &Config, paths: &Paths) -> NetAdmin {
    let policy = Policy::new(
        &config.network.bridge,
        &config.network.subnet,
        &config.network.nat_table,
    )
    .unwrap_or_else(|e| {
        tracing::warn!(error = %e, config = %paths.config_file().display(), "bad network settings; doctor checks the defaults");
        let d = crate::config::NetworkConfig::default();
        Policy::new(&d.bridge, &d.subnet, &d.nat_table).expect("the default network is valid")
    });
    NetAdmin::new(policy, config.helper.as_deref())
}

/// The helper built with this binary: what an administrator installs.
fn helper_source() -> Option<std::path::PathBuf> {
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    Some(exe.parent()?.join("banger-helper")).filter(|p| p.is_file())
}

/// Who a VMM of kind `vmm` runs as here, in words (`banger doctor`), and
/// whether that is an unprivileged user of its own (or the daemon's, when
/// the daemon is not root).
fn describe_vmm_user(vmm: VmmKind, config: &Config) -> (bool, String) {
    let subnet: crate::net::Subnet = match config.network.subnet.parse() {
        Ok(subnet) => subnet,
        Err(e) => return (false, e.to_string()),
    };
    let first = std::net::Ipv4Addr::from(u32::from(subnet.network()) + 1);
    let jailer = match vmm {
        VmmKind::Firecracker => {
            jail::jailer_binary(config, select::firecracker_binary(config, None).as_deref())
        }
        VmmKind::Qemu => None,
    };
    match vmm_user::for_guest(vmm, config.vmm_uid_base, &subnet, first, jailer.is_some()) {
        Ok(None) => (
            true,
            format!(
                "{vmm} VMMs run as you (uid {})",
                rustix::process::getuid().as_raw()
            ),
        ),
        Ok(Some(user)) => (
            true,
            format!(
                "each {vmm} VMM runs{} as a uid of its own (from {}){}",
                jailer
                    .map(|j| format!(" in {}'s jail", j.display()))
                    .unwrap_or_default(),
                config.vmm_uid_base,
                if user.groups.is_empty() {
                    String::new()
                } else {
                    format!(", with groups {:?} for its devices", user.groups)
                }
            ),
        ),
        Err(why) => (false, format!("{vmm} VMMs run as root: {why}")),
    }
}
