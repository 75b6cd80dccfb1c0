//! `SetIdentity`: a new hostname, address, MAC, route, resolver, SSH host
//! key and machine-id for the running guest, in the order the protocol
//! documents on [`Message::SetIdentity`](banger_agent::proto::Message):
//! check, stage every file beside its target, change the network (rolled
//! back on failure), then rename the files into place and set the hostname.
//!
//! The network is changed with ioctls on an AF_INET socket, never by
//! running `ip`: an image may have no iproute2.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use banger_agent::proto::{ErrorCode, Identity, Network};

use crate::sys;

/// The largest `/etc/hosts` the agent rewrites.
const MAX_HOSTS: u64 = 1024 * 1024;

/// Why a `SetIdentity` failed, for the `Error` answer.
#[derive(Debug)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

fn failed(message: String) -> Failure {
    Failure {
        code: ErrorCode::Failed,
        message,
    }
}

/// Applies `ident` to this guest (its `/etc`, its one Ethernet interface,
/// its hostname, its sshd).
pub fn apply(ident: &Identity) -> Result<String, Failure> {
    // Decoding validated it already; nothing below runs on a bad value.
    ident.validate().map_err(|e| Failure {
        code: ErrorCode::Malformed,
        message: e.into(),
    })?;
    // 1. Read what the network is now (nothing changes on failure).
    let nic = match &ident.network {
        Some(_) => {
            let name = find_nic(Path::new("/sys/class/net")).map_err(|message| Failure {
                code: ErrorCode::Unsupported,
                message,
            })?;
            let sock = sys::inet_dgram_socket().map_err(|e| failed(format!("socket: {e}")))?;
            let state = NicState::read(sock.as_fd(), &name)?;
            Some((name, sock, state))
        }
        None => None,
    };
    // 2. Every file's new content beside it.
    let staged = stage(ident, Path::new("/etc"))?;
    // 3. The network, rolled back on failure.
    if let (Some(net), Some((name, sock, old))) = (&ident.network, &nic)
        && let Err(e) = apply_network(sock.as_fd(), name, old, net)
    {
        staged.discard();
        return Err(failed(e));
    }
    // 4. The files, then the kernel's hostname, then sshd.
    staged.commit().map_err(|e| {
        failed(match &ident.network {
            Some(_) => format!("{e}; the network is new"),
            None => e,
        })
    })?;
    let mut done = Vec::new();
    if let Some(h) = &ident.hostname {
        sys::sethostname(h).map_err(|e| failed(format!("sethostname: {e} (the files are new)")))?;
        done.push(format!("hostname {}", String::from_utf8_lossy(h)));
    }
    if let (Some(net), Some((name, _, _))) = (&ident.network, &nic) {
        done.push(format!(
            "{name} {}/{} via {}{}",
            dotted(net.address),
            net.prefix,
            dotted(net.gateway),
            net.mac
                .map(|m| format!(" mac {}", mac_text(m)))
                .unwrap_or_default()
        ));
    }
    if ident.host_key.is_some() {
        done.push(format!("host key ({})", reload_sshd()));
    }
    if ident.machine_id.is_some() {
        done.push("machine-id".into());
    }
    if done.is_empty() {
        return Ok("nothing to change".into());
    }
    Ok(done.join(", "))
}

fn dotted(a: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

// ---- files ----------------------------------------------------------------

/// New files written beside their targets, not yet renamed into place.
pub struct Staged {
    /// (temporary, target), in the order they are renamed.
    files: Vec<(PathBuf, PathBuf)>,
    /// Directories to sync after the renames.
    dirs: Vec<PathBuf>,
    /// A directory made for the files, removed again if they are discarded.
    made_dir: Option<PathBuf>,
}

/// Writes the new content of every file `ident` changes under `etc`,
/// each to a temporary file in its target's directory, synced.
pub fn stage(ident: &Identity, etc: &Path) -> Result<Staged, Failure> {
    let mut s = Staged {
        files: Vec::new(),
        dirs: vec![etc.to_path_buf()],
        made_dir: None,
    };
    match stage_into(&mut s, ident, etc) {
        Ok(()) => Ok(s),
        Err(e) => {
            s.discard();
            Err(failed(e))
        }
    }
}

fn stage_into(s: &mut Staged, ident: &Identity, etc: &Path) -> Result<(), String> {
    let put = |s: &mut Staged, dir: &Path, name: &str, data: &[u8], mode: u32| {
        let target = dir.join(name);
        let tmp = write_temp(dir, name, data, mode)
            .map_err(|e| format!("writing {}: {e}", target.display()))?;
        s.files.push((tmp, target));
        Ok::<(), String>(())
    };
    if let Some(k) = &ident.host_key {
        let ssh = etc.join("ssh");
        if !ssh.is_dir() {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&ssh)
                .map_err(|e| format!("creating {}: {e}", ssh.display()))?;
            // The mode above is masked by the umask.
            fs::set_permissions(&ssh, fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("{}: {e}", ssh.display()))?;
            s.made_dir = Some(ssh.clone());
        }
        s.dirs.push(ssh.clone());
        put(
            s,
            &ssh,
            "ssh_host_ed25519_key",
            &with_newline(&k.private),
            0o600,
        )?;
        put(
            s,
            &ssh,
            "ssh_host_ed25519_key.pub",
            &with_newline(&k.public),
            0o644,
        )?;
    }
    if let Some(m) = &ident.machine_id {
        put(s, etc, "machine-id", &with_newline(m), 0o444)?;
    }
    if let Some(n) = &ident.network
        && !n.nameservers.is_empty()
    {
        // If /etc/resolv.conf is a symlink (systemd-resolved's stub, a
        // resolvconf run directory), the rename replaces the symlink itself
        // with this file: the host's nameservers are what the guest uses.
        put(s, etc, "resolv.conf", resolv_conf(n).as_bytes(), 0o644)?;
    }
    if let Some(h) = &ident.hostname {
        let path = etc.join("hosts");
        let old = match File::open(&path) {
            Ok(f) => {
                let mut old = Vec::new();
                f.take(MAX_HOSTS + 1)
                    .read_to_end(&mut old)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                if old.len() as u64 > MAX_HOSTS {
                    return Err(format!("{} is over 1 MiB", path.display()));
                }
                old
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        put(s, etc, "hosts", &hosts_with(&old, h), 0o644)?;
        put(s, etc, "hostname", &with_newline(h), 0o644)?;
    }
    Ok(())
}

impl Staged {
    /// Renames every file into place, then syncs the directories.
    pub fn commit(mut self) -> Result<(), String> {
        let files = std::mem::take(&mut self.files);
        let mut done: Vec<String> = Vec::new();
        let mut it = files.into_iter();
        for (tmp, target) in it.by_ref() {
            if let Err(e) = fs::rename(&tmp, &target) {
                let _ = fs::remove_file(&tmp);
                for (t, _) in it {
                    let _ = fs::remove_file(&t);
                }
                return Err(format!(
                    "renaming over {}: {e}; already replaced: [{}]",
                    target.display(),
                    done.join(", ")
                ));
            }
            done.push(target.display().to_string());
        }
        for d in &self.dirs {
            if let Ok(f) = File::open(d) {
                let _ = f.sync_all();
            }
        }
        Ok(())
    }

    /// Deletes the temporary files (and a directory made for them).
    pub fn discard(mut self) {
        for (tmp, _) in self.files.drain(..) {
            let _ = fs::remove_file(&tmp);
        }
        if let Some(d) = self.made_dir.take() {
            let _ = fs::remove_dir(d);
        }
    }
}

/// `dir/.NAME.banger-new`, holding `data` with `mode` (root's, when the
/// agent is root), synced.
fn write_temp(dir: &Path, name: &str, data: &[u8], mode: u32) -> io::Result<PathBuf> {
    let tmp = dir.join(format!(".{name}.banger-new"));
    // Only the agent uses this name: a leftover is from an attempt that died.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(data)?;
        if sys::geteuid() == 0 {
            std::os::unix::fs::fchown(&f, Some(0), Some(0))?;
        }
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()
    };
    match write() {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn with_newline(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    if !v.ends_with(b"\n") {
        v.push(b'\n');
    }
    v
}

fn resolv_conf(n: &Network) -> String {
    let mut s = String::from("# written by banger-agent\n");
    for ns in &n.nameservers {
        s.push_str(&format!("nameserver {}\n", dotted(*ns)));
    }
    s
}

/// `/etc/hosts` with `127.0.1.1 <name>` in place of its `127.0.1.1` line
/// (every such line, as one), or added after the `127.0.0.1` line (first,
/// if none); every other line kept as it was.
pub fn hosts_with(old: &[u8], name: &[u8]) -> Vec<u8> {
    let first_field = |l: &[u8]| -> Vec<u8> {
        l.split(|&c| c == b' ' || c == b'\t')
            .find(|f| !f.is_empty())
            .unwrap_or(b"")
            .to_vec()
    };
    let mut ours = b"127.0.1.1\t".to_vec();
    ours.extend_from_slice(name);
    let body = old.strip_suffix(b"\n").unwrap_or(old);
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut placed = false;
    if !old.is_empty() {
        for l in body.split(|&c| c == b'\n') {
            if first_field(l) == b"127.0.1.1" {
                if !placed {
                    lines.push(ours.clone());
                    placed = true;
                }
            } else {
                lines.push(l.to_vec());
            }
        }
    }
    if !placed {
        let at = lines
            .iter()
            .position(|l| first_field(l) == b"127.0.0.1")
            .map_or(0, |i| i + 1);
        lines.insert(at, ours);
    }
    let mut out = lines.join(&b'\n');
    out.push(b'\n');
    out
}

// ---- network --------------------------------------------------------------

/// The guest's one NIC: the interface in `sys_class_net` of type 1
/// (Ethernet), other than `lo`, backed by a device (`device` link: virtual
/// interfaces such as bridges, veths or docker0 have none). Refused unless
/// there is exactly one.
pub fn find_nic(sys_class_net: &Path) -> Result<String, String> {
    let entries =
        fs::read_dir(sys_class_net).map_err(|e| format!("{}: {e}", sys_class_net.display()))?;
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .filter(|n| {
            let dir = sys_class_net.join(n);
            fs::read_to_string(dir.join("type")).is_ok_and(|t| t.trim() == "1")
                && dir.join("device").exists()
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err("no Ethernet interface".into()),
        _ => Err(format!(
            "{} Ethernet interfaces ({}): the guest must have exactly one",
            found.len(),
            found.join(", ")
        )),
    }
}

/// Default routes of `dev` in `/proc/net/route` text: (gateway, metric).
pub fn default_routes(proc_net_route: &str, dev: &str) -> Vec<([u8; 4], u32)> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    proc_net_route
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 || f[0] != dev {
                return None;
            }
            let (dst, gw, flags, metric, mask) =
                (hex(f[1])?, hex(f[2])?, hex(f[3])?, f[6], hex(f[7])?);
            let gateway_flag = u32::from(libc::RTF_GATEWAY);
            if dst != 0 || mask != 0 || flags & gateway_flag == 0 {
                return None;
            }
            // The kernel prints the network-order address as a host integer.
            Some((gw.to_ne_bytes(), metric.parse().ok()?))
        })
        .collect()
}

/// What the interface is before the change, to put back on failure.
pub struct NicState {
    flags: libc::c_short,
    address: Option<[u8; 4]>,
    netmask: Option<[u8; 4]>,
    broadcast: Option<[u8; 4]>,
    mac: [u8; 6],
    routes: Vec<([u8; 4], u32)>,
}

impl NicState {
    fn read(sock: BorrowedFd<'_>, name: &str) -> Result<Self, Failure> {
        let e = |what: &str, e: io::Error| failed(format!("{name}: {what}: {e}"));
        let routes = fs::read_to_string("/proc/net/route")
            .map(|t| default_routes(&t, name))
            .map_err(|x| e("/proc/net/route", x))?;
        Ok(NicState {
            flags: sys::if_flags(sock, name).map_err(|x| e("SIOCGIFFLAGS", x))?,
            address: sys::if_inet(sock, name, libc::SIOCGIFADDR)
                .map_err(|x| e("SIOCGIFADDR", x))?,
            netmask: sys::if_inet(sock, name, libc::SIOCGIFNETMASK)
                .map_err(|x| e("SIOCGIFNETMASK", x))?,
            broadcast: sys::if_inet(sock, name, libc::SIOCGIFBRDADDR)
                .map_err(|x| e("SIOCGIFBRDADDR", x))?,
            mac: sys::if_hwaddr(sock, name).map_err(|x| e("SIOCGIFHWADDR", x))?,
            routes,
        })
    }
}

const IFF_UP: libc::c_short = libc::IFF_UP as libc::c_short;

/// Link down, MAC, address, netmask, link up, default route; on a failure,
/// the old state back, and an error saying what failed and whether the
/// rollback did all it should.
fn apply_network(
    sock: BorrowedFd<'_>,
    name: &str,
    old: &NicState,
    new: &Network,
) -> Result<(), String> {
    let steps = || -> Result<(), String> {
        let e = |what: &'static str| move |e: io::Error| format!("{name}: {what}: {e}");
        // Taking the link down also drops its routes; the default route is
        // added again once it is up.
        sys::set_if_flags(sock, name, old.flags & !IFF_UP).map_err(e("link down"))?;
        if let Some(mac) = new.mac
            && mac != old.mac
        {
            sys::set_if_hwaddr(sock, name, mac).map_err(e("SIOCSIFHWADDR"))?;
        }
        sys::set_if_inet(sock, name, libc::SIOCSIFADDR, new.address).map_err(e("SIOCSIFADDR"))?;
        sys::set_if_inet(sock, name, libc::SIOCSIFNETMASK, new.netmask())
            .map_err(e("SIOCSIFNETMASK"))?;
        sys::set_if_flags(sock, name, old.flags | IFF_UP).map_err(e("link up"))?;
        sys::add_default_route(sock, name, new.gateway, 0)
            .map_err(e("SIOCADDRT (default route)"))?;
        Ok(())
    };
    let Err(failure) = steps() else {
        return Ok(());
    };
    let problems = rollback(sock, name, old);
    eprintln!("banger-agent: identity: {failure}; rolled back");
    if problems.is_empty() {
        Err(format!("{failure}; the old network is back"))
    } else {
        Err(format!(
            "{failure}; rolling back also failed: {}",
            problems.join("; ")
        ))
    }
}

/// Puts `old` back, step by step, whatever fails; returns what failed.
fn rollback(sock: BorrowedFd<'_>, name: &str, old: &NicState) -> Vec<String> {
    let mut problems = Vec::new();
    let mut note = |what: &str, r: io::Result<()>| {
        if let Err(e) = r {
            problems.push(format!("{what}: {e}"));
        }
    };
    note(
        "link down",
        sys::set_if_flags(sock, name, old.flags & !IFF_UP),
    );
    if sys::if_hwaddr(sock, name).ok() != Some(old.mac) {
        note("MAC", sys::set_if_hwaddr(sock, name, old.mac));
    }
    match old.address {
        Some(a) => {
            note(
                "address",
                sys::set_if_inet(sock, name, libc::SIOCSIFADDR, a),
            );
            if let Some(m) = old.netmask {
                note(
                    "netmask",
                    sys::set_if_inet(sock, name, libc::SIOCSIFNETMASK, m),
                );
            }
            // SIOCSIFADDR made one up; the old one may have been none (0).
            if let Some(b) = old.broadcast {
                note(
                    "broadcast",
                    sys::set_if_inet(sock, name, libc::SIOCSIFBRDADDR, b),
                );
            }
        }
        // It had none: 0.0.0.0 removes the new one.
        None => note(
            "address",
            sys::set_if_inet(sock, name, libc::SIOCSIFADDR, [0; 4]),
        ),
    }
    note("link state", sys::set_if_flags(sock, name, old.flags));
    if old.flags & IFF_UP != 0 {
        for &(gw, metric) in &old.routes {
            note(
                "default route",
                sys::add_default_route(sock, name, gw, metric),
            );
        }
    }
    problems
}

// ---- sshd -----------------------------------------------------------------

/// SIGHUP to the sshd of /run/sshd.pid, if it is one: it reloads and reads
/// the new host key. Returns what it did, for the log.
fn reload_sshd() -> String {
    let Ok(text) = fs::read_to_string("/run/sshd.pid") else {
        return "no sshd running".into();
    };
    let Some(pid) = text.trim().parse::<i32>().ok().filter(|&p| p > 1) else {
        return "no sshd running (bad /run/sshd.pid)".into();
    };
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "sshd" {
        return format!("no sshd running (pid {pid} is not sshd)");
    }
    match sys::kill(pid, libc::SIGHUP) {
        Ok(()) => format!("sshd {pid} reloading"),
        Err(e) => format!("cannot signal sshd {pid}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_agent::proto::HostKey;
    use std::os::unix::fs::MetadataExt;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let d = std::env::temp_dir().join(format!(
                "banger-agent-identity-{tag}-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn identity() -> Identity {
        Identity {
            hostname: Some(b"vm-new".to_vec()),
            network: Some(Network {
                address: [10, 0, 2, 16],
                prefix: 24,
                gateway: [10, 0, 2, 2],
                mac: None,
                nameservers: vec![[10, 0, 2, 3], [1, 1, 1, 1]],
            }),
            host_key: Some(HostKey {
                // stage() does not validate: the content is written as given.
                private: b"PRIVATE".to_vec(),
                public: b"ssh-ed25519 AAAA test".to_vec(),
            }),
            machine_id: Some(b"0123456789abcdef0123456789abcdef".to_vec()),
        }
    }

    #[test]
    fn hosts_line_is_replaced_or_added_and_the_rest_kept() {
        let debian = b"127.0.0.1\tlocalhost\n127.0.1.1\told\n\n# The following lines\n::1 localhost ip6-localhost\n";
        assert_eq!(
            String::from_utf8(hosts_with(debian, b"new")).unwrap(),
            "127.0.0.1\tlocalhost\n127.0.1.1\tnew\n\n# The following lines\n::1 localhost ip6-localhost\n"
        );
        let banger = b"127.0.0.1\tlocalhost\n::1\t\tlocalhost\n";
        assert_eq!(
            String::from_utf8(hosts_with(banger, b"new")).unwrap(),
            "127.0.0.1\tlocalhost\n127.0.1.1\tnew\n::1\t\tlocalhost\n"
        );
        assert_eq!(hosts_with(b"", b"n"), b"127.0.1.1\tn\n");
        assert_eq!(
            hosts_with(b"10.0.0.1 db", b"n"),
            b"127.0.1.1\tn\n10.0.0.1 db\n"
        );
        // Two such lines become one; an indented one counts; a comment not.
        assert_eq!(
            String::from_utf8(hosts_with(
                b"# 127.0.1.1 x\n  127.0.1.1 a\n127.0.1.1 b\n",
                b"n"
            ))
            .unwrap(),
            "# 127.0.1.1 x\n127.0.1.1\tn\n"
        );
    }

    #[test]
    fn proc_net_route_default_routes() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth1\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
eth0\t00000000\t0302000A\t0003\t0\t0\t5\t00000000\t0\t0\t0\n";
        let gw = |a: [u8; 4]| u32::from_le_bytes(a).to_ne_bytes();
        assert_eq!(
            default_routes(text, "eth0"),
            vec![(gw([10, 0, 2, 2]), 0), (gw([10, 0, 2, 3]), 5)]
        );
        assert_eq!(
            default_routes(text, "eth1"),
            vec![(gw([192, 168, 1, 1]), 100)]
        );
        assert!(default_routes("garbage\nx y z\n", "eth0").is_empty());
    }

    #[test]
    fn the_nic_is_the_one_ethernet_device() {
        let t = TempDir::new("nic");
        let add = |name: &str, ty: &str, device: bool| {
            let d = t.0.join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("type"), format!("{ty}\n")).unwrap();
            if device {
                std::os::unix::fs::symlink(&t.0, d.join("device")).unwrap();
            }
        };
        add("lo", "772", false);
        assert!(find_nic(&t.0).is_err());
        add("eth0", "1", true);
        add("docker0", "1", false);
        add("sit0", "776", true);
        assert_eq!(find_nic(&t.0), Ok("eth0".into()));
        add("eth1", "1", true);
        let e = find_nic(&t.0).unwrap_err();
        assert!(e.contains("eth0, eth1"), "{e}");
        assert!(find_nic(&t.0.join("missing")).is_err());
    }

    #[test]
    fn files_are_staged_beside_their_targets_and_renamed_over_them() {
        let t = TempDir::new("commit");
        let etc = t.0.join("etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        fs::write(etc.join("hostname"), "old\n").unwrap();
        fs::write(t.0.join("stub-resolv.conf"), "nameserver 127.0.0.53\n").unwrap();
        std::os::unix::fs::symlink("../stub-resolv.conf", etc.join("resolv.conf")).unwrap();
        let staged = stage(&identity(), &etc).map_err(|f| f.message).unwrap();
        // Nothing is in place before the commit.
        assert_eq!(fs::read_to_string(etc.join("hostname")).unwrap(), "old\n");
        assert!(!etc.join("machine-id").exists());
        staged.commit().unwrap();
        assert_eq!(
            listing(&etc),
            vec!["hostname", "hosts", "machine-id", "resolv.conf", "ssh"]
        );
        assert_eq!(
            listing(&etc.join("ssh")),
            vec!["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
        );
        let mode = |p: &str| fs::metadata(etc.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("ssh"), 0o755);
        assert_eq!(mode("ssh/ssh_host_ed25519_key"), 0o600);
        assert_eq!(mode("ssh/ssh_host_ed25519_key.pub"), 0o644);
        assert_eq!(mode("machine-id"), 0o444);
        assert_eq!(mode("hostname"), 0o644);
        let read = |p: &str| fs::read_to_string(etc.join(p)).unwrap();
        assert_eq!(read("ssh/ssh_host_ed25519_key"), "PRIVATE\n");
        assert_eq!(
            read("ssh/ssh_host_ed25519_key.pub"),
            "ssh-ed25519 AAAA test\n"
        );
        assert_eq!(read("machine-id"), "0123456789abcdef0123456789abcdef\n");
        assert_eq!(read("hostname"), "vm-new\n");
        assert_eq!(read("hosts"), "127.0.0.1 localhost\n127.0.1.1\tvm-new\n");
        // The symlink itself was replaced; what it pointed to is untouched.
        assert!(
            !fs::symlink_metadata(etc.join("resolv.conf"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(
            read("resolv.conf"),
            "# written by banger-agent\nnameserver 10.0.2.3\nnameserver 1.1.1.1\n"
        );
        assert_eq!(
            fs::read_to_string(t.0.join("stub-resolv.conf")).unwrap(),
            "nameserver 127.0.0.53\n"
        );
        if sys::geteuid() == 0 {
            assert_eq!(fs::metadata(etc.join("machine-id")).unwrap().uid(), 0);
        }
        // Again, over the files now there (and a leftover temporary file).
        fs::write(etc.join(".hostname.banger-new"), "stale").unwrap();
        let mut again = identity();
        again.hostname = Some(b"third".to_vec());
        stage(&again, &etc)
            .map_err(|f| f.message)
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(read("hostname"), "third\n");
        assert_eq!(read("hosts"), "127.0.0.1 localhost\n127.0.1.1\tthird\n");
        assert!(!listing(&etc).iter().any(|n| n.contains("banger-new")));
    }

    #[test]
    fn discarded_files_leave_nothing_behind() {
        let t = TempDir::new("discard");
        let etc = t.0.join("etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("hostname"), "old\n").unwrap();
        let staged = stage(&identity(), &etc).map_err(|f| f.message).unwrap();
        assert!(listing(&etc).iter().any(|n| n.contains("banger-new")));
        staged.discard();
        assert_eq!(listing(&etc), vec!["hostname"]);
        assert_eq!(fs::read_to_string(etc.join("hostname")).unwrap(), "old\n");
        // Only what changes is written: no nameservers, no resolv.conf.
        let mut id = Identity {
            network: identity().network,
            ..Default::default()
        };
        id.network.as_mut().unwrap().nameservers.clear();
        stage(&id, &etc)
            .map_err(|f| f.message)
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(listing(&etc), vec!["hostname"]);
    }

    #[test]
    fn a_failure_while_staging_removes_what_was_staged() {
        let t = TempDir::new("fail");
        let etc = t.0.join("etc");
        fs::create_dir_all(&etc).unwrap();
        // /etc/hosts that cannot be read as a file: staging stops there,
        // after the key, machine-id and resolv.conf were written.
        fs::create_dir(etc.join("hosts")).unwrap();
        let e = stage(&identity(), &etc).err().expect("a failure");
        assert!(e.message.contains("hosts"), "{}", e.message);
        assert_eq!(listing(&etc), vec!["hosts"]);
    }
}
