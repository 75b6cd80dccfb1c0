//! The agent's one channel to the host, and how it is found: a virtio-serial
//! port named `org.banger.agent` (QEMU), else a vsock listener on
//! [`VSOCK_PORT`] (Firecracker). Nothing else is ever listened on.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_agent::proto::{SERIAL_PORT_NAME, VSOCK_PORT};

use crate::sys;

pub enum Channel {
    /// A virtio-serial port. Its host end comes and goes: while no host is
    /// connected, poll reports POLLHUP and reads return 0.
    Serial {
        fd: OwnedFd,
        path: PathBuf,
        /// Whether a host is on the other end, as last seen.
        connected: bool,
    },
    /// A vsock listener and the host's current connection; a new
    /// connection replaces the old one.
    Vsock {
        listener: OwnedFd,
        conn: Option<OwnedFd>,
    },
    /// A stream handed over on a descriptor (tests); the agent ends when it
    /// closes.
    Fd { fd: OwnedFd, open: bool },
}

impl Channel {
    /// The descriptor frames are read from and written to, while a host is
    /// there.
    pub fn io(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Channel::Serial { fd, connected, .. } => connected.then(|| fd.as_fd()),
            Channel::Vsock { conn, .. } => conn.as_ref().map(|c| c.as_fd()),
            Channel::Fd { fd, open } => open.then(|| fd.as_fd()),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Channel::Serial { .. } => "virtio-serial",
            Channel::Vsock { .. } => "vsock",
            Channel::Fd { .. } => "fd",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Channel::Serial { path, .. } => format!("virtio-serial {}", path.display()),
            Channel::Vsock { .. } => format!("vsock port {VSOCK_PORT}"),
            Channel::Fd { .. } => "an inherited descriptor".into(),
        }
    }
}

/// Opens the serial port or the vsock listener. Drivers probe their
/// devices while their module loads, but a virtio-serial device announces
/// its ports a moment later: when such a device exists, wait up to `wait`
/// for the port; otherwise do not wait at all.
pub fn find(wait: Duration) -> io::Result<Channel> {
    let until = Instant::now() + wait;
    loop {
        if let Some(path) = serial_port(Path::new("/sys/class/virtio-ports"), Path::new("/dev")) {
            let fd = sys::open(&path, libc::O_RDWR | libc::O_NONBLOCK | libc::O_NOCTTY)?;
            return Ok(Channel::Serial {
                fd,
                path,
                connected: false,
            });
        }
        if sys::vsock_local_cid().is_some() {
            let listener = sys::vsock_listen(VSOCK_PORT)?;
            return Ok(Channel::Vsock {
                listener,
                conn: None,
            });
        }
        if Instant::now() >= until || !has_virtio_console() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no virtio-serial port named {SERIAL_PORT_NAME} and no vsock transport"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the guest has a virtio-serial device (bound to virtio_console).
fn has_virtio_console() -> bool {
    std::fs::read_dir("/sys/bus/virtio/drivers/virtio_console")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("virtio"))
        })
        .unwrap_or(false)
}

/// The device node of the virtio port named [`SERIAL_PORT_NAME`]:
/// `<class>/vportNpM/name` holds the name, `<dev>/vportNpM` is the node
/// (devtmpfs makes it; there is no udev in the initramfs).
pub fn serial_port(class: &Path, dev: &Path) -> Option<PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(class).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(name) = std::fs::read(e.path().join("name")) else {
            continue;
        };
        if name.strip_suffix(b"\n").unwrap_or(&name) == SERIAL_PORT_NAME.as_bytes() {
            let node = dev.join(e.file_name());
            if node.exists() {
                return Some(node);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_port_by_name() {
        let dir = std::env::temp_dir().join(format!("banger-agent-ports-{}", std::process::id()));
        let class = dir.join("class");
        let dev = dir.join("dev");
        for (port, name) in [
            ("vport0p1", "org.other\n"),
            ("vport0p2", "org.banger.agent\n"),
        ] {
            std::fs::create_dir_all(class.join(port)).unwrap();
            std::fs::write(class.join(port).join("name"), name).unwrap();
        }
        std::fs::create_dir_all(&dev).unwrap();
        assert_eq!(serial_port(&class, &dev), None, "no node yet");
        std::fs::write(dev.join("vport0p2"), "").unwrap();
        assert_eq!(serial_port(&class, &dev), Some(dev.join("vport0p2")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
