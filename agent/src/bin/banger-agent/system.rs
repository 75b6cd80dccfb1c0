//! The requests that act on the guest as a whole: what the hello reports,
//! the clock, entropy, freezing filesystems, and ending the guest.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use banger_agent::proto::{HelloReply, ShutdownAction, VERSION};

use crate::sys;

/// SIGRTMIN as the guest's init counts it: glibc's (34). musl's is 35 (it
/// keeps one more for itself), so a musl agent must not use its own
/// `SIGRTMIN()`: its poweroff signal would be systemd's reboot.
const SYSTEMD_SIGRTMIN: libc::c_int = 34;

/// The requests this agent serves, as the hello lists them.
pub const FEATURES: &[&str] = &[
    "exec", "pty", "clock", "entropy", "freeze", "shutdown", "identity", "status",
];

pub fn hello(nonce: u64, pid1: bool, channel: &str) -> HelloReply {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let uptime_ms = read("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or_else(sys::monotonic_ms);
    HelloReply {
        nonce,
        version: VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel_release: read("/proc/sys/kernel/osrelease"),
        boot_id: read("/proc/sys/kernel/random/boot_id"),
        uptime_ms,
        sshd_accepting: sshd_accepting(),
        pid1,
        channel: channel.to_string(),
        features: FEATURES.iter().map(|s| s.to_string()).collect(),
    }
}

/// Whether something accepts TCP connections on port 22 of the loopback.
fn sshd_accepting() -> bool {
    let t = Duration::from_millis(200);
    [
        SocketAddr::from((Ipv4Addr::LOCALHOST, 22)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, 22)),
    ]
    .iter()
    .any(|a| TcpStream::connect_timeout(a, t).is_ok())
}

/// Sets the wall clock; returns what it read before.
pub fn set_clock(secs: i64, nanos: u32) -> io::Result<(i64, u32)> {
    let before = sys::clock_get()?;
    sys::clock_set(secs, nanos)?;
    Ok((before.tv_sec as i64, before.tv_nsec as u32))
}

pub fn add_entropy(data: &[u8], reseed: bool) -> io::Result<()> {
    let fd = sys::open(Path::new("/dev/urandom"), libc::O_WRONLY)?;
    if !data.is_empty() {
        sys::add_entropy(fd.as_fd(), data)?;
    }
    if reseed {
        sys::ioctl_none(fd.as_fd(), sys::RNDRESEEDCRNG)?;
    }
    Ok(())
}

/// A filesystem the agent can freeze, opened.
pub struct Fs {
    /// What the host is told: the mount point, or `upper:<device>` for the
    /// upper disk of a layered root (mounted outside the final root).
    pub name: String,
    pub dir: OwnedFd,
}

/// Filesystems frozen, and when they thaw on their own.
pub struct Frozen {
    pub fs: Vec<Fs>,
    pub deadline: Instant,
}

/// One line of /proc/self/mountinfo, the fields the agent needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Mount {
    pub dev: String,
    pub mount_point: String,
    pub read_write: bool,
    pub fstype: String,
    pub source: String,
}

/// Parses mountinfo (see proc(5)); lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 3 {
                return None;
            }
            let rw = |opts: &str| opts.split(',').any(|o| o == "rw");
            Some(Mount {
                dev: l[2].to_string(),
                mount_point: unescape(l[4]),
                read_write: rw(l[5]) && rw(r[2]),
                fstype: r[0].to_string(),
                source: unescape(r[1]),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writable, disk-backed filesystems: the ones a freeze is for.
pub fn freezable(mounts: &[Mount]) -> Vec<&Mount> {
    let mut seen = std::collections::HashSet::new();
    mounts
        .iter()
        .filter(|m| m.read_write && m.source.starts_with("/dev/") && m.fstype != "devtmpfs")
        // A filesystem mounted twice (bind mounts) is frozen once.
        .filter(|m| seen.insert(m.dev.clone()))
        .collect()
}

/// Before the agent leaves the initramfs: opens the writable disk-backed
/// filesystems mounted outside `root` (the upper disk of a layered root),
/// which the final root cannot name but a freeze must reach.
pub fn hidden_filesystems(root: &Path) -> Vec<Fs> {
    let Ok(text) = std::fs::read_to_string(root.join("proc/self/mountinfo")) else {
        return Vec::new();
    };
    let root = root.to_string_lossy().into_owned();
    parse_mountinfo(&text)
        .into_iter()
        .filter(|m| m.read_write && m.source.starts_with("/dev/"))
        .filter(|m| m.mount_point != root && !m.mount_point.starts_with(&format!("{root}/")))
        .filter_map(|m| {
            let dir = sys::open(
                Path::new(&m.mount_point),
                libc::O_RDONLY | libc::O_DIRECTORY,
            )
            .ok()?;
            Some(Fs {
                name: format!("upper:{}", m.source),
                dir,
            })
        })
        .collect()
}

const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

/// Freezes `names` (or every writable disk-backed filesystem), all or
/// nothing. An overlay root stands for its upper disk.
pub fn freeze(names: &[Vec<u8>], hidden: &[Fs]) -> Result<Vec<Fs>, String> {
    let mut targets: Vec<Fs> = Vec::new();
    let mut devs = std::collections::HashSet::new();
    let mut add = |fs: Fs, targets: &mut Vec<Fs>| {
        let dev = sys::fstat_dev(fs.dir.as_fd()).unwrap_or(0);
        if devs.insert(dev) {
            targets.push(fs);
        }
    };
    let dup_hidden = |h: &Fs| -> Result<Fs, String> {
        Ok(Fs {
            name: h.name.clone(),
            dir: h.dir.try_clone().map_err(|e| format!("{}: {e}", h.name))?,
        })
    };
    if names.is_empty() {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("mountinfo: {e}"))?;
        for m in freezable(&parse_mountinfo(&text)) {
            if let Ok(dir) = sys::open(
                Path::new(&m.mount_point),
                libc::O_RDONLY | libc::O_DIRECTORY,
            ) {
                add(
                    Fs {
                        name: m.mount_point.clone(),
                        dir,
                    },
                    &mut targets,
                );
            }
        }
        for h in hidden {
            add(dup_hidden(h)?, &mut targets);
        }
    } else {
        for n in names {
            let name = String::from_utf8_lossy(n).into_owned();
            let path = Path::new(std::ffi::OsStr::from_bytes(n));
            let dir = sys::open(path, libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(|e| format!("{name}: {e}"))?;
            if sys::fstatfs_type(dir.as_fd()).ok() == Some(OVERLAYFS_SUPER_MAGIC)
                && !hidden.is_empty()
            {
                for h in hidden {
                    let mut fs = dup_hidden(h)?;
                    fs.name = format!("{name} ({})", h.name);
                    add(fs, &mut targets);
                }
            } else {
                add(Fs { name, dir }, &mut targets);
            }
        }
    }
    let mut frozen = Vec::new();
    for fs in targets {
        if let Err(e) = sys::ioctl_none(fs.dir.as_fd(), sys::FIFREEZE) {
            let msg = format!("cannot freeze {}: {e}", fs.name);
            thaw(frozen);
            return Err(msg);
        }
        frozen.push(fs);
    }
    Ok(frozen)
}

/// Thaws, last frozen first; returns the names thawed.
pub fn thaw(mut fs: Vec<Fs>) -> Vec<String> {
    let mut names = Vec::new();
    while let Some(f) = fs.pop() {
        match sys::ioctl_none(f.dir.as_fd(), sys::FITHAW) {
            Ok(()) => names.push(f.name),
            Err(e) => eprintln!("banger-agent: cannot thaw {}: {e}", f.name),
        }
    }
    names
}

/// How the agent ends the guest.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// Ask init with this signal; reboot(2) ourselves if it has not by then.
    AskInit {
        signal: i32,
        fallback_after: Duration,
    },
    /// sync and reboot(2) now.
    Now,
}

/// What init is, from /proc/1/exe.
pub fn plan_shutdown(action: ShutdownAction, pid1: bool, init_exe: &str) -> Ending {
    if pid1 {
        return Ending::Now;
    }
    let poweroff = action == ShutdownAction::PowerOff;
    let fallback_after = Duration::from_secs(60);
    let name = init_exe.rsplit('/').next().unwrap_or("");
    if name.starts_with("systemd") {
        // systemd: SIGRTMIN+4 starts poweroff.target, SIGRTMIN+5 reboot.target.
        let signal = SYSTEMD_SIGRTMIN + if poweroff { 4 } else { 5 };
        Ending::AskInit {
            signal,
            fallback_after,
        }
    } else if name.starts_with("busybox") {
        // busybox init: SIGUSR2 powers off, SIGTERM reboots.
        let signal = if poweroff {
            libc::SIGUSR2
        } else {
            libc::SIGTERM
        };
        Ending::AskInit {
            signal,
            fallback_after,
        }
    } else {
        Ending::Now
    }
}

/// sync, then reboot(2); as PID 1, first end every other process.
pub fn end_now(action: ShutdownAction, pid1: bool) -> ! {
    if pid1 {
        let _ = sys::kill(-1, libc::SIGTERM);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            while sys::reap_any().is_some() {}
            // Every process of the guest descends from init (kernel threads
            // do not, and kill(-1) would count them): no child, no process.
            if !sys::has_children() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = sys::kill(-1, libc::SIGKILL);
    }
    sys::sync();
    let cmd = match action {
        ShutdownAction::PowerOff => libc::RB_POWER_OFF,
        ShutdownAction::Reboot => libc::RB_AUTOBOOT,
    };
    let e = sys::reboot(cmd);
    eprintln!("banger-agent: reboot failed: {e}");
    // As PID 1 the agent must never return; elsewhere there is nothing to
    // go back to either.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/lower,upperdir=/upperfs/upper
23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=4k,mode=755
24 22 254:16 / /work rw,relatime shared:3 - ext4 /dev/vdc rw
25 22 254:16 / /srv/work\\040dir rw,relatime shared:3 - ext4 /dev/vdc rw
26 22 254:32 / /mnt/ro ro,relatime shared:4 - ext4 /dev/vdd ro
27 22 0:30 / /tmp rw - tmpfs tmpfs rw
28 22 254:48 / /data ro,relatime - ext4 /dev/vde rw
garbage line
";

    #[test]
    fn mountinfo_parses_and_unescapes() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 7);
        assert_eq!(m[3].mount_point, "/srv/work dir");
        assert_eq!(m[2].source, "/dev/vdc");
        assert!(!m[4].read_write);
        assert!(
            !m[6].read_write,
            "a read-only mount of a rw filesystem is not writable"
        );
    }

    #[test]
    fn freezable_are_writable_disk_filesystems_once_each() {
        let m = parse_mountinfo(MOUNTINFO);
        let f: Vec<&str> = freezable(&m)
            .iter()
            .map(|m| m.mount_point.as_str())
            .collect();
        assert_eq!(f, vec!["/work"]);
    }

    #[test]
    fn shutdown_asks_init_the_way_it_understands() {
        use ShutdownAction::*;
        let systemd = plan_shutdown(PowerOff, false, "/usr/lib/systemd/systemd");
        assert!(matches!(systemd, Ending::AskInit { signal, .. } if signal == 38));
        let reboot = plan_shutdown(Reboot, false, "/usr/lib/systemd/systemd");
        assert!(matches!(reboot, Ending::AskInit { signal, .. } if signal == 39));
        let bb = plan_shutdown(PowerOff, false, "/bin/busybox");
        assert!(matches!(bb, Ending::AskInit { signal, .. } if signal == libc::SIGUSR2));
        assert_eq!(plan_shutdown(PowerOff, false, "/sbin/tini"), Ending::Now);
        assert_eq!(
            plan_shutdown(Reboot, true, "/usr/lib/systemd/systemd"),
            Ending::Now
        );
    }
}
