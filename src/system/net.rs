//! Host network devices through `ip`: the VM bridge and one tap per VM.
//! Presence is read natively from `/sys/class/net`; changes go through the
//! exec point and need root: the daemon makes them through
//! [`super::netadmin`], which checks each against the user's grant.

use super::exec::{Cmd, ExecError};

/// True when a network interface named `name` exists in this thread's
/// network namespace (asked of the kernel with SIOCGIFINDEX, so it also
/// holds for a thread that entered another namespace, as tests do).
pub fn link_exists(name: &str) -> bool {
    use rustix::net::{AddressFamily, SocketType, socket};
    match socket(AddressFamily::INET, SocketType::DGRAM, None) {
        Ok(fd) => rustix::net::netdevice::name_to_index(&fd, name).is_ok(),
        Err(_) => false,
    }
}

/// The host's IPv4 routes, from this thread's namespace.
pub fn routes() -> std::io::Result<Vec<crate::net::nat::Route>> {
    let text = std::fs::read_to_string("/proc/thread-self/net/route")?;
    Ok(crate::net::nat::parse_proc_routes(&text))
}

/// Turns on IPv4 forwarding (needed for NAT); left on afterwards, since
/// other software on the host may rely on it too.
pub async fn enable_ip_forward() -> Result<(), ExecError> {
    const KNOB: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(KNOB).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    if std::fs::write(KNOB, "1").is_ok() {
        return Ok(());
    }
    Cmd::new("sysctl")
        .args(["-w", "net.ipv4.ip_forward=1"])
        .run()
        .await
        .map(drop)
}

/// The IPv4 addresses (with prefix) on interface `name`.
pub async fn addresses(name: &str) -> Result<Vec<String>, ExecError> {
    let out = ip(&["-o", "-4", "addr", "show", "dev", name]).await?;
    Ok(out
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .map(String::from)
        })
        .collect())
}

/// Creates bridge `name` with address `gateway_cidr` (e.g. `172.30.0.1/24`)
/// and brings it up; a bridge already there is left as it is, its address
/// added if missing.
pub async fn ensure_bridge(name: &str, gateway_cidr: &str) -> Result<(), ExecError> {
    if !link_exists(name) {
        ip(&["link", "add", "name", name, "type", "bridge"]).await?;
    }
    if !addresses(name).await?.iter().any(|a| a == gateway_cidr) {
        ip(&["addr", "add", gateway_cidr, "dev", name]).await?;
    }
    ip(&["link", "set", name, "up"]).await?;
    Ok(())
}

/// Creates tap `name` owned by `uid` (so an unprivileged VMM can open it),
/// enslaves it to `bridge` and brings it up. A tap left over from a VM that
/// died is replaced.
pub async fn add_tap(name: &str, uid: u32, bridge: &str) -> Result<(), ExecError> {
    if link_exists(name) {
        delete_link(name).await?;
    }
    let uid = uid.to_string();
    ip(&["tuntap", "add", "dev", name, "mode", "tap", "user", &uid]).await?;
    let attached = ip(&["link", "set", name, "master", bridge, "up"]).await;
    if attached.is_err() {
        let _ = delete_link(name).await;
    }
    attached.map(drop)
}

/// What kind of interface `name` is, from `/sys/class/net`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Missing,
    Bridge,
    /// A tun or tap device, with the uid that owns it (`None`: no owner).
    Tap(Option<u32>),
    Other,
}

/// The kind of interface `name` is, as sysfs shows it (the network
/// namespace sysfs was mounted in, which is the process's own).
pub fn link_kind(name: &str) -> LinkKind {
    let dir = std::path::Path::new("/sys/class/net").join(name);
    if name.is_empty() || name.contains('/') || name.starts_with('.') || !dir.exists() {
        LinkKind::Missing
    } else if dir.join("bridge").is_dir() {
        LinkKind::Bridge
    } else if dir.join("tun_flags").is_file() {
        let owner = std::fs::read_to_string(dir.join("owner"))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .and_then(|uid| u32::try_from(uid).ok());
        LinkKind::Tap(owner)
    } else {
        LinkKind::Other
    }
}

/// The interfaces attached to bridge `name`.
pub fn bridge_ports(name: &str) -> std::io::Result<Vec<String>> {
    let dir = std::path::Path::new("/sys/class/net")
        .join(name)
        .join("brif");
    Ok(std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

/// Opens tap `name` (which must exist) for a VMM to inherit: the caller
/// may open it (root, or the uid it was made for); the VMM then needs no
/// access to `/dev/net/tun` and can reach no other tap.
pub fn open_tap(name: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags, open};
    use rustix::ioctl::{Updater, ioctl, opcode};

    /// `struct ifreq` as TUNSETIFF reads it: the name, then the flags at
    /// the start of its 24-byte union.
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: u16,
        _rest: [u8; 22],
    }
    const TUNSETIFF: rustix::ioctl::Opcode = opcode::write::<std::ffi::c_int>(b'T', 202);
    const IFF_TAP: u16 = 0x0002;
    const IFF_NO_PI: u16 = 0x1000;
    const IFF_VNET_HDR: u16 = 0x4000;

    if name.is_empty() || name.len() > 15 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{name}` is not an interface name"),
        ));
    }
    let tun = open(
        "/dev/net/tun",
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _rest: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF takes a pointer to a `struct ifreq`, which `IfReq`
    // matches in size (40 bytes) and layout; the kernel writes back within it.
    unsafe { ioctl(&tun, Updater::<TUNSETIFF, IfReq>::new(&mut req)) }?;
    Ok(tun)
}

/// Renames interface `from` to `to`, which the kernel allows only while it
/// is down: down, rename, up (a tap keeps its bridge and its owner).
pub async fn rename_link(from: &str, to: &str) -> Result<(), ExecError> {
    ip(&["link", "set", "dev", from, "down"]).await?;
    let renamed = ip(&["link", "set", "dev", from, "name", to]).await;
    let up = if renamed.is_ok() { to } else { from };
    ip(&["link", "set", "dev", up, "up"]).await?;
    renamed.map(drop)
}

/// Deletes interface `name`; one that is already gone is fine.
pub async fn delete_link(name: &str) -> Result<(), ExecError> {
    if !link_exists(name) {
        return Ok(());
    }
    match ip(&["link", "del", name]).await {
        Err(_) if !link_exists(name) => Ok(()),
        other => other.map(drop),
    }
}

async fn ip(args: &[&str]) -> Result<String, ExecError> {
    Ok(Cmd::new("ip").args(args).run().await?.stdout)
}

/// Tells systemd-resolved, where it runs, to send `.vm` queries to
/// `dns` on `bridge`, so `getent hosts box.vm` works on the host.
pub async fn register_resolved(bridge: &str, dns: std::net::Ipv4Addr) -> Result<(), ExecError> {
    if !std::path::Path::new("/run/systemd/resolve").is_dir() {
        return Ok(());
    }
    let dns = dns.to_string();
    Cmd::new("resolvectl")
        .args(["dns", bridge, &dns])
        .run()
        .await?;
    Cmd::new("resolvectl")
        .args(["domain", bridge, "~vm"])
        .run()
        .await?;
    Ok(())
}
