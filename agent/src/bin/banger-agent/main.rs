//! banger-agent: the guest side of banger's agent protocol.
//!
//! ```text
//! banger-agent --root /newroot          from the initramfs, right before switch_root:
//!                                       open the channel, chroot into the final root,
//!                                       fork; the parent returns once the child serves
//! banger-agent --init --root /newroot   exec'd as PID 1 when the image has no init:
//!                                       make /newroot the root and be its init
//! banger-agent                          serve from the current root, in the foreground
//! banger-agent --fd N [--system-requests]
//!                                       serve on inherited stream descriptor N (tests);
//!                                       clock, entropy, freeze, shutdown and identity
//!                                       are refused unless asked for
//! ```
//!
//! The initramfs starts it as `@banger-agent`: systemd's final kill at
//! shutdown spares processes whose argv[0] begins with '@'.

mod channel;
mod identity;
mod server;
mod session;
mod sys;
mod system;

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use channel::Channel;
use server::{Options, Server};

/// How long to wait for the channel's device to appear at boot.
const CHANNEL_WAIT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Args {
    root: Option<PathBuf>,
    init: bool,
    fd: Option<i32>,
    system_requests: bool,
    foreground: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--root") => a.root = Some(it.next().ok_or("--root needs a directory")?.into()),
            Some("--init") => a.init = true,
            Some("--fd") => {
                let v = it.next().ok_or("--fd needs a number")?;
                a.fd = Some(
                    v.to_str()
                        .and_then(|s| s.parse().ok())
                        .ok_or("--fd needs a number")?,
                );
            }
            Some("--system-requests") => a.system_requests = true,
            Some("--foreground") => a.foreground = true,
            Some("--version") => {
                println!("banger-agent {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {}", arg.to_string_lossy())),
        }
    }
    if a.init && a.root.is_none() {
        return Err("--init needs --root".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("banger-agent: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("banger-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> std::io::Result<()> {
    if let Some(fd) = args.fd {
        // SAFETY: the caller handed this descriptor over for the agent to own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        sys::set_nonblocking(std::os::fd::AsFd::as_fd(&fd))?;
        let opts = Options {
            pid1: false,
            system_requests: args.system_requests,
        };
        return Server::new(Channel::Fd { fd, open: true }, opts, Vec::new())?.run();
    }

    // Filesystems outside the final root (a layered root's upper disk) are
    // opened now, while they can still be named.
    let hidden = match &args.root {
        Some(root) => system::hidden_filesystems(root),
        None => Vec::new(),
    };

    if args.init {
        let root = args.root.as_deref().unwrap_or(std::path::Path::new("/"));
        sys::move_root(root)?;
        let pts = std::path::Path::new("/dev/pts");
        let _ = std::fs::create_dir_all(pts);
        if let Err(e) = sys::mount(
            "devpts",
            pts,
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "gid=5,mode=620,ptmxmode=666",
        ) {
            eprintln!("banger-agent: warning: cannot mount /dev/pts: {e}");
        }
        quiet_stdin();
        server::serve_as_init(true, hidden);
    }

    if let Some(root) = &args.root {
        // Before switch_root moves this mount to /: afterwards the agent's
        // root is the final root, and nothing of the initramfs stays open.
        sys::chroot(root)?;
    }
    let chan = channel::find(CHANNEL_WAIT)?;
    if args.root.is_some() && !args.foreground {
        // The parent returns to /init, which may now switch_root.
        if sys::fork()? > 0 {
            return Ok(());
        }
        sys::setsid();
    }
    quiet_stdin();
    let opts = Options {
        pid1: sys::getpid() == 1,
        system_requests: true,
    };
    Server::new(chan, opts, hidden)?.run()
}

/// stdin and stdout to /dev/null; stderr stays (the console, for errors).
fn quiet_stdin() {
    if let Ok(null) = sys::open(std::path::Path::new("/dev/null"), libc::O_RDWR) {
        use std::os::fd::AsRawFd;
        let _ = sys::dup2(null.as_raw_fd(), 0);
        let _ = sys::dup2(null.as_raw_fd(), 1);
    }
}
