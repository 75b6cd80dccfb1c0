//! The system calls the agent makes, each wrapped once with its `SAFETY`
//! argument, returning `io::Result`. Nothing here panics on what a call
//! returns.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `_IOWR('X', 119, int)`
pub const FIFREEZE: libc::Ioctl = 0xC004_5877_u32 as libc::Ioctl;
/// `_IOWR('X', 120, int)`
pub const FITHAW: libc::Ioctl = 0xC004_5878_u32 as libc::Ioctl;
/// `_IOW('R', 0x03, int[2])`
pub const RNDADDENTROPY: libc::Ioctl = 0x4008_5203;
/// `_IO('R', 0x07)`
pub const RNDRESEEDCRNG: libc::Ioctl = 0x5207;
/// `_IO(7, 0xb9)`
pub const IOCTL_VM_SOCKETS_GET_LOCAL_CID: libc::Ioctl = 0x7b9;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

/// Opens `path` with `flags` (O_CLOEXEC always added).
pub fn open(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) })?;
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we borrow; no pointers involved.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Asks for SIGIO on `fd` when its state changes (a virtio port's host
/// connecting or going away).
pub fn set_async(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we borrow; no pointers involved.
    unsafe {
        cvt(libc::fcntl(fd.as_raw_fd(), libc::F_SETOWN, libc::getpid()))?;
        let flags = cvt(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
        cvt(libc::fcntl(
            fd.as_raw_fd(),
            libc::F_SETFL,
            flags | libc::O_ASYNC,
        ))?;
    }
    Ok(())
}

pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// Blocks `signals` for this (single-threaded) process and returns a
/// signalfd that reads them.
pub fn signalfd(signals: &[libc::c_int]) -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for all these calls.
    unsafe {
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        cvt(libc::sigprocmask(
            libc::SIG_BLOCK,
            &set,
            std::ptr::null_mut(),
        ))?;
    }
    // SAFETY: `set` is initialised; -1 asks for a new descriptor.
    let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Empties a signalfd; returns the signals read.
pub fn drain_signalfd(fd: BorrowedFd<'_>) -> Vec<u32> {
    let mut got = Vec::new();
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    loop {
        // SAFETY: `info` is valid for writes of `size` bytes.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n != size as isize {
            return got;
        }
        got.push(info.ssi_signo);
    }
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: i32,
    pub signal: u8,
}

/// Reaps one child that has ended, if any.
pub fn reap_any() -> Option<(i32, ExitStatus)> {
    let mut status = 0;
    // SAFETY: `status` is a valid out pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let st = if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        ExitStatus {
            code: 128 + sig,
            signal: sig as u8,
        }
    } else {
        ExitStatus {
            code: libc::WEXITSTATUS(status),
            signal: 0,
        }
    };
    Some((pid, st))
}

/// Whether the process has children left (running or not yet reaped).
pub fn has_children() -> bool {
    // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid out pointer; WNOWAIT leaves children as they are.
    let r = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // ECHILD: none at all.
    r == 0
}

/// Sends `sig` to process group `pgid`.
pub fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill has no memory effects; pgid > 1 never targets init or everyone.
        unsafe { libc::kill(-pgid, sig) };
    }
}

/// Sends `sig` to `pid` (1 for init, -1 for every process but us).
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill has no memory effects.
    cvt(unsafe { libc::kill(pid, sig) }).map(|_| ())
}

pub fn set_winsize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the valid pointer.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(|_| ())
}

/// A new pty: (master, slave), both close-on-exec.
pub fn openpty() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: posix_openpt takes flags only.
    let m = cvt(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    // SAFETY: a new descriptor owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `master` is a pty master; `name` is valid for 128 bytes.
    unsafe {
        cvt(libc::grantpt(m))?;
        cvt(libc::unlockpt(m))?;
        let r = libc::ptsname_r(m, name.as_mut_ptr(), name.len());
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
    }
    // SAFETY: ptsname_r wrote a NUL-terminated string into `name`.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    let path = Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
    let slave = open(path, libc::O_RDWR | libc::O_NOCTTY)?;
    Ok((master, slave))
}

/// `ioctl(fd, req, 0)` for the requests that take an int argument.
pub fn ioctl_none(fd: BorrowedFd<'_>, req: libc::Ioctl) -> io::Result<()> {
    // SAFETY: these requests take an integer argument, not a pointer.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), req, 0) }).map(|_| ())
}

/// RNDADDENTROPY: adds `data` to the input pool, credited 8 bits a byte.
pub fn add_entropy(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<()> {
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut req = Vec::with_capacity(8 + data.len() + 4);
    req.extend_from_slice(&((data.len() * 8) as i32).to_ne_bytes());
    req.extend_from_slice(&(data.len() as i32).to_ne_bytes());
    req.extend_from_slice(data);
    req.resize(8 + data.len().div_ceil(4) * 4, 0);
    // SAFETY: `req` holds a rand_pool_info whose buf_size matches the bytes
    // that follow the header; the kernel only reads it.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), RNDADDENTROPY, req.as_ptr()) }).map(|_| ())
}

pub fn clock_get() -> io::Result<libc::timespec> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer.
    cvt(unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) })?;
    Ok(ts)
}

pub fn clock_set(secs: i64, nanos: u32) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: secs as _,
        tv_nsec: nanos as libc::c_long,
    };
    // SAFETY: `ts` is a valid, initialised timespec.
    cvt(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) }).map(|_| ())
}

pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

pub fn chroot(path: &Path) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated string.
    cvt(unsafe { libc::chroot(c.as_ptr()) })?;
    std::env::set_current_dir("/")
}

/// What busybox switch_root does, minus deleting the initramfs: the mount
/// at `root` becomes `/`.
pub fn move_root(root: &Path) -> io::Result<()> {
    std::env::set_current_dir(root)?;
    let dot = c".";
    let slash = c"/";
    // SAFETY: valid NUL-terminated strings; a null fstype and data are allowed for MS_MOVE.
    cvt(unsafe {
        libc::mount(
            dot.as_ptr(),
            slash.as_ptr(),
            std::ptr::null(),
            libc::MS_MOVE,
            std::ptr::null(),
        )
    })?;
    // SAFETY: as above.
    cvt(unsafe { libc::chroot(dot.as_ptr()) })?;
    std::env::set_current_dir("/")
}

pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let s = CString::new(source)?;
    let t = cstr(target)?;
    let f = CString::new(fstype)?;
    let d = CString::new(data)?;
    // SAFETY: valid NUL-terminated strings for the duration of the call.
    cvt(unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) })
        .map(|_| ())
}

pub fn fstatfs_type(fd: BorrowedFd<'_>) -> io::Result<i64> {
    // SAFETY: statfs is plain data.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out pointer.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st.f_type as i64)
}

/// The device a descriptor's filesystem lives on.
pub fn fstat_dev(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out pointer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st.st_dev)
}

pub fn sync() {
    // SAFETY: no arguments.
    unsafe { libc::sync() };
}

/// reboot(2): does not return when it works.
pub fn reboot(cmd: libc::c_int) -> io::Error {
    // SAFETY: reboot takes a command only.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

pub fn fork() -> io::Result<i32> {
    // SAFETY: the agent is single-threaded when it forks (before serving).
    cvt(unsafe { libc::fork() })
}

pub fn setsid() {
    // SAFETY: no arguments; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
}

pub fn getpid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::getpid() }
}

/// Makes `fd` the process's descriptor `target` (dup2).
pub fn dup2(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on descriptors; the caller owns `target`'s slot.
    cvt(unsafe { libc::dup2(fd, target) }).map(|_| ())
}

/// A vsock listener on `port` (any CID), nonblocking.
pub fn vsock_listen(port: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket takes integers only.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_VSOCK,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })?;
    // SAFETY: a new descriptor owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain data.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    // SAFETY: `addr` is a valid sockaddr_vm of the given length.
    cvt(unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    })?;
    // SAFETY: listen on our socket.
    cvt(unsafe { libc::listen(fd, 4) })?;
    Ok(sock)
}

/// Accepts one vsock connection: (descriptor, peer CID).
pub fn vsock_accept(listener: BorrowedFd<'_>) -> io::Result<(OwnedFd, u32)> {
    // SAFETY: sockaddr_vm is plain data.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are valid out pointers of matching size.
    let fd = cvt(unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_vm).cast(),
            &mut len,
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    })?;
    // SAFETY: a new descriptor owned by nobody else.
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, addr.svm_cid))
}

/// This guest's vsock CID, if a vsock transport is up.
pub fn vsock_local_cid() -> Option<u32> {
    let dev = open(Path::new("/dev/vsock"), libc::O_RDONLY).ok()?;
    let mut cid: u32 = 0;
    // SAFETY: the request writes one u32 through the valid pointer.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), IOCTL_VM_SOCKETS_GET_LOCAL_CID, &mut cid) };
    (r == 0 && cid > 2 && cid != libc::VMADDR_CID_ANY).then_some(cid)
}

/// An AF_INET datagram socket: the handle for the interface and route ioctls.
pub fn inet_dgram_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket takes integers only.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A zeroed `ifreq` naming `name`.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    // SAFETY: ifreq is plain data (a name and a union of plain data).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

/// `req` is one of libc's `SIOC*` constants: a `c_ulong`, where `ioctl`
/// takes a `c_int` on musl.
fn ifreq_ioctl(sock: BorrowedFd<'_>, req: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request passed here reads or writes one ifreq through
    // the valid, exclusively borrowed pointer.
    let req = req as libc::Ioctl;
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), req, ifr as *mut libc::ifreq) }).map(|_| ())
}

/// An AF_INET sockaddr holding `addr` (port 0).
fn sockaddr_in(addr: [u8; 4]) -> libc::sockaddr {
    // SAFETY: sockaddr is plain data.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::AF_INET as libc::sa_family_t;
    // sockaddr_in: the port in sa_data[0..2], the address in [2..6].
    for (d, s) in sa.sa_data[2..6].iter_mut().zip(addr) {
        *d = s as libc::c_char;
    }
    sa
}

fn sockaddr_in_addr(sa: &libc::sockaddr) -> [u8; 4] {
    let d = &sa.sa_data;
    [d[2] as u8, d[3] as u8, d[4] as u8, d[5] as u8]
}

/// SIOCGIFFLAGS.
pub fn if_flags(sock: BorrowedFd<'_>, name: &str) -> io::Result<libc::c_short> {
    let mut ifr = ifreq(name)?;
    ifreq_ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    Ok(unsafe { ifr.ifr_ifru.ifru_flags })
}

/// SIOCSIFFLAGS (IFF_UP up or down).
pub fn set_if_flags(sock: BorrowedFd<'_>, name: &str, flags: libc::c_short) -> io::Result<()> {
    let mut ifr = ifreq(name)?;
    ifr.ifr_ifru.ifru_flags = flags;
    ifreq_ioctl(sock, libc::SIOCSIFFLAGS, &mut ifr)
}

/// SIOCGIFADDR, SIOCGIFNETMASK or SIOCGIFBRDADDR; `None` when the interface has no IPv4
/// address.
pub fn if_inet(
    sock: BorrowedFd<'_>,
    name: &str,
    req: libc::c_ulong,
) -> io::Result<Option<[u8; 4]>> {
    let mut ifr = ifreq(name)?;
    match ifreq_ioctl(sock, req, &mut ifr) {
        // SAFETY: the request filled the address member.
        Ok(()) => Ok(Some(sockaddr_in_addr(unsafe { &ifr.ifr_ifru.ifru_addr }))),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// SIOCSIFADDR, SIOCSIFNETMASK or SIOCSIFBRDADDR. Address 0.0.0.0 (SIOCSIFADDR) removes the address.
pub fn set_if_inet(
    sock: BorrowedFd<'_>,
    name: &str,
    req: libc::c_ulong,
    addr: [u8; 4],
) -> io::Result<()> {
    let mut ifr = ifreq(name)?;
    ifr.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ifreq_ioctl(sock, req, &mut ifr)
}

/// SIOCGIFHWADDR: an Ethernet interface's MAC.
pub fn if_hwaddr(sock: BorrowedFd<'_>, name: &str) -> io::Result<[u8; 6]> {
    let mut ifr = ifreq(name)?;
    ifreq_ioctl(sock, libc::SIOCGIFHWADDR, &mut ifr)?;
    // SAFETY: SIOCGIFHWADDR filled the hardware address member.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data) {
        *d = s as u8;
    }
    Ok(mac)
}

/// SIOCSIFHWADDR: a new MAC for an Ethernet interface.
pub fn set_if_hwaddr(sock: BorrowedFd<'_>, name: &str, mac: [u8; 6]) -> io::Result<()> {
    let mut ifr = ifreq(name)?;
    // SAFETY: sockaddr is plain data.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in sa.sa_data.iter_mut().zip(mac) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_hwaddr = sa;
    ifreq_ioctl(sock, libc::SIOCSIFHWADDR, &mut ifr)
}

/// `struct rtentry` of <linux/route.h> (the libc crate has it only for musl).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_tos: libc::c_uchar,
    rt_class: libc::c_uchar,
    #[cfg(target_pointer_width = "64")]
    rt_pad4: [libc::c_short; 3],
    #[cfg(not(target_pointer_width = "64"))]
    rt_pad4: [libc::c_short; 1],
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// SIOCADDRT: a default route via `gateway` on `dev`, with this metric (as
/// /proc/net/route shows it). A route that is already there counts as
/// added.
pub fn add_default_route(
    sock: BorrowedFd<'_>,
    dev: &str,
    gateway: [u8; 4],
    metric: u32,
) -> io::Result<()> {
    let dev = CString::new(dev)?;
    // SAFETY: RtEntry is plain data (a null rt_dev is valid).
    let mut rt: RtEntry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_in([0; 4]);
    rt.rt_genmask = sockaddr_in([0; 4]);
    rt.rt_gateway = sockaddr_in(gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // The kernel stores rt_metric - 1 (0 stays 0).
    rt.rt_metric = libc::c_short::try_from(metric.saturating_add(1)).unwrap_or(libc::c_short::MAX);
    rt.rt_dev = dev.as_ptr().cast_mut();
    // SAFETY: SIOCADDRT reads one rtentry, and the name rt_dev points to,
    // which `dev` keeps alive for the call.
    let r = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCADDRT as libc::Ioctl,
            &rt as *const RtEntry,
        )
    };
    match cvt(r) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn sethostname(name: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is valid for reads of `name.len()` bytes.
    cvt(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(|_| ())
}

pub fn geteuid() -> u32 {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() }
}
