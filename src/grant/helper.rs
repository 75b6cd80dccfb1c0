//! `banger-helper`: the one privileged program of a non-root banger. An
//! administrator installs it root-owned and grants a user
//! `sudo -n banger-helper` (any arguments) plus a policy file
//! `/etc/banger/users/<user>.toml` naming that user's bridge, subnet and
//! nftables table. Each run does one [`Request`] and only after
//! [`Policy::authorize`] has allowed it: what it may touch is decided by
//! root-owned files, never by the caller's environment or configuration.
//!
//! A root daemon runs the same [`execute`] in-process, with its own
//! configuration as the policy, so the rules hold whoever asks.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::policy::{GrantError, GuestList, Policy, Request};
use crate::net::nat;

use crate::system::exec::ExecError;
use crate::system::net::{self, LinkKind};
use crate::system::nft;
use crate::system::trust::{login_name, root_owned};

/// Where an administrator grants users their network.
pub const POLICY_DIR: &str = "/etc/banger/users";

/// Where the daemon looks for the helper when `helper` is not configured.
pub const DEFAULT_PATHS: &[&str] = &[
    "/usr/local/libexec/banger/banger-helper",
    "/usr/libexec/banger/banger-helper",
];

/// The most JSON `nft-apply` reads from stdin.
const MAX_STDIN: u64 = 1 << 20;

/// Why a request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error(transparent)]
    Grant(#[from] GrantError),
    /// An `ip`, `nft` or `sysctl` run failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The host has something else where a banger object should be.
    #[error("{0}")]
    NotBangers(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HelperError {
    let what = what.into();
    move |source| HelperError::Io { what, source }
}

/// Who a request is carried out for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    /// New taps are made for this uid (so its VMM can open them).
    pub uid: u32,
    /// Root may remove any banger tap of the policy; a user only their own.
    pub root: bool,
}

/// What a request gave back.
#[derive(Debug)]
pub enum Reply {
    Done,
    /// `nft-list`: the table, or empty.
    Text(String),
    /// `dns-socket`: the bound socket.
    Socket(OwnedFd),
}

/// Carries out `req` for `actor` within `policy`. `stdin` is the request's
/// input (`nft-apply`'s guest list).
pub async fn execute(
    policy: &Policy,
    actor: Actor,
    req: &Request,
    stdin: &[u8],
) -> Result<Reply, HelperError> {
    policy.authorize(req)?;
    match req {
        Request::BridgeUp { bridge, cidr } => {
            match net::link_kind(bridge) {
                LinkKind::Bridge => {}
                LinkKind::Missing => {
                    let routes = net::routes().map_err(io("cannot read the host's routes"))?;
                    if let Some(route) = nat::clashing_route(&routes, &policy.subnet, bridge) {
                        return Err(HelperError::NotBangers(format!(
                            "{} clashes with the host route {}/{} on {}",
                            policy.subnet, route.destination, route.prefix, route.iface
                        )));
                    }
                }
                _ => return Err(not_a(bridge, "bridge")),
            }
            net::ensure_bridge(bridge, cidr).await?;
        }
        Request::BridgeDown { bridge } => match net::link_kind(bridge) {
            LinkKind::Missing => {}
            LinkKind::Bridge => {
                let ports =
                    net::bridge_ports(bridge).map_err(io(format!("cannot list {bridge}")))?;
                for port in ports {
                    if policy.own_tap(&port).is_err() {
                        return Err(HelperError::NotBangers(format!(
                            "{bridge} still has {port} attached, which is not a banger tap; detach it first"
                        )));
                    }
                    may_remove_tap(&port, actor)?;
                }
                net::delete_link(bridge).await?;
            }
            _ => return Err(not_a(bridge, "bridge")),
        },
        Request::TapAdd { tap } => {
            if net::link_kind(&policy.bridge) != LinkKind::Bridge {
                return Err(HelperError::NotBangers(format!(
                    "bridge {} is not up; bring it up first",
                    policy.bridge
                )));
            }
            may_remove_tap(tap, actor)?;
            net::add_tap(tap, actor.uid, &policy.bridge).await?;
        }
        Request::TapDel { tap } => {
            may_remove_tap(tap, actor)?;
            net::delete_link(tap).await?;
        }
        Request::TapRename { from, to } => {
            if !matches!(net::link_kind(from), LinkKind::Tap(_)) {
                return Err(not_a(from, "tap"));
            }
            may_remove_tap(from, actor)?;
            if net::link_kind(to) != LinkKind::Missing {
                return Err(HelperError::NotBangers(format!(
                    "{to} exists already; a tap is renamed only to a free name"
                )));
            }
            net::rename_link(from, to).await?;
        }
        Request::NftApply { .. } => {
            let guests: GuestList = serde_json::from_slice(stdin).map_err(|e| {
                GrantError::Usage(format!("nft-apply reads the guests as JSON on stdin: {e}"))
            })?;
            nft::apply(&policy.nat_plan(&guests)?.script()).await?;
        }
        Request::NftDelete { table } => {
            for family in [nat::FAMILY, nat::GUARD_FAMILY] {
                nft::delete_table(family, table).await?;
            }
        }
        Request::NftList { table } => {
            let text = if nft::table_exists(nat::FAMILY, table).await? {
                nft::list_table(nat::FAMILY, table).await?
            } else {
                String::new()
            };
            return Ok(Reply::Text(text));
        }
        Request::IpForward => net::enable_ip_forward().await?,
        Request::Resolved { bridge } => {
            net::register_resolved(bridge, policy.subnet.gateway).await?
        }
        Request::DnsSocket { addr } => {
            let socket = std::net::UdpSocket::bind((*addr, 53))
                .map_err(io(format!("cannot listen on {addr}:53")))?;
            return Ok(Reply::Socket(socket.into()));
        }
        Request::Check { .. } => {}
    }
    Ok(Reply::Done)
}

fn not_a(name: &str, what: &str) -> HelperError {
    HelperError::NotBangers(format!(
        "{name} exists and is not a {what}; banger will not touch it"
    ))
}

/// A tap that is there may be removed (or replaced) only when it is a tap
/// and, unless root asks, the caller's own.
fn may_remove_tap(tap: &str, actor: Actor) -> Result<(), HelperError> {
    match net::link_kind(tap) {
        LinkKind::Missing => Ok(()),
        LinkKind::Tap(owner) if actor.root || owner == Some(actor.uid) => Ok(()),
        LinkKind::Tap(owner) => Err(HelperError::NotBangers(format!(
            "tap {tap} belongs to {}, not to uid {}",
            owner.map_or("no user".to_string(), |uid| format!("uid {uid}")),
            actor.uid
        ))),
        _ => Err(not_a(tap, "tap")),
    }
}

/// The helper's policy file for `user`.
pub fn policy_path(user: &str) -> PathBuf {
    Path::new(POLICY_DIR).join(format!("{user}.toml"))
}

/// The `banger-helper` binary: exit 0 when done, 1 when refused or
/// failed, 2 on a usage error. Errors go to stderr, one cause per line.
pub fn main() -> ExitCode {
    // First of all: nothing of the caller's environment survives (sudo
    // keeps the caller's PATH where `secure_path` is not set), and every
    // program the helper runs is root's, from fixed directories.
    let sudo_uid = std::env::var("SUDO_UID").ok();
    scrub_environment();
    crate::system::exec::trust_only_root_programs();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args, sudo_uid.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = format!("banger-helper: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!("\n  caused by: {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            if matches!(e, HelperError::Grant(GrantError::Usage(_))) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Removes every environment variable and sets `PATH` to the trusted one.
fn scrub_environment() {
    let names: Vec<_> = std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| !name.is_empty() && !name.as_encoded_bytes().contains(&b'='))
        .collect();
    for name in names {
        // SAFETY: the helper's first act, before any other thread exists:
        // nothing can read the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
    // SAFETY: as above.
    unsafe { std::env::set_var("PATH", crate::system::exec::TRUSTED_PATH) };
}

fn run(args: &[String], sudo_uid: Option<&str>) -> Result<(), HelperError> {
    let refused = |msg: String| HelperError::Grant(GrantError::Refused(msg));
    if !rustix::process::geteuid().is_root() {
        return Err(refused(
            "banger-helper must run as root, through `sudo -n`; `banger doctor` prints the grant"
                .into(),
        ));
    }
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let _ = std::env::set_current_dir("/");
    let req = Request::parse(args)?;
    let actor = caller(sudo_uid)?;
    let user = login_name(actor.uid).map_err(refused)?;
    let path = policy_path(&user);
    if !path.exists() {
        return Err(refused(format!(
            "no banger network is granted to {user}: an administrator writes {} (`banger doctor` prints it)",
            path.display()
        )));
    }
    root_owned(&path)
        .map_err(|why| refused(format!("{} is not trustworthy: {why}", path.display())))?;
    let text =
        std::fs::read_to_string(&path).map_err(io(format!("cannot read {}", path.display())))?;
    let policy = Policy::parse(&text).map_err(|e| refused(format!("{}: {e}", path.display())))?;
    let mut stdin = Vec::new();
    if matches!(req, Request::NftApply { .. }) {
        std::io::stdin()
            .take(MAX_STDIN)
            .read_to_end(&mut stdin)
            .map_err(io("cannot read stdin"))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("cannot start"))?;
    match runtime.block_on(execute(&policy, actor, &req, &stdin))? {
        Reply::Done => Ok(()),
        Reply::Text(text) => std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(io("cannot write stdout")),
        Reply::Socket(fd) => send_fd(std::io::stdout().as_fd(), fd),
    }
}

/// Who the helper acts for. Through sudo: the real uid of the process that
/// ran sudo, read from `/proc` (which the caller cannot forge), and
/// `SUDO_UID` must agree with it (a sudoers entry with `SETENV` lets a
/// caller set `SUDO_UID` to anything). Through sudo the actor is never
/// root: root's daemon changes the network in-process. Run directly (no
/// sudo above it), the helper acts for its real uid, whatever `SUDO_UID`
/// a shell left behind says: only root gets past the euid check then.
fn caller(sudo_uid: Option<&str>) -> Result<Actor, HelperError> {
    let refused = |msg: String| HelperError::Grant(GrantError::Refused(msg));
    let me = std::process::id();
    let Some(invoker) = sudo_invoker(me) else {
        let uid = rustix::process::getuid();
        return Ok(Actor {
            uid: uid.as_raw(),
            root: uid.is_root(),
        });
    };
    let claimed: Option<u32> = sudo_uid.and_then(|uid| uid.parse().ok());
    if claimed != Some(invoker) {
        return Err(refused(format!(
            "SUDO_UID says {}, but sudo was run by uid {invoker}; refusing",
            sudo_uid.unwrap_or("nothing")
        )));
    }
    if invoker == 0 {
        return Err(refused(
            "root does not need the helper: a root daemon changes the network itself".into(),
        ));
    }
    Ok(Actor {
        uid: invoker,
        root: false,
    })
}

/// The real uid of the process that ran the sudo above `pid`, or `None`
/// when `pid`'s parent is not sudo. sudo may run the command through a
/// monitor process of its own (`use_pty`), so every sudo is passed over.
/// A sudo orphaned by its caller is adopted by init (uid 0), which
/// [`caller`] then refuses.
fn sudo_invoker(pid: u32) -> Option<u32> {
    let mut current = crate::system::proc::parent_of(pid)?;
    if !is_sudo(current) {
        return None;
    }
    for _ in 0..8 {
        let parent = crate::system::proc::parent_of(current)?;
        if !is_sudo(parent) {
            let uid = crate::system::proc::uid_of(parent)?;
            // The sudo we came from must still be that parent's child: a
            // pid reused meanwhile would name someone else.
            return (crate::system::proc::parent_of(current) == Some(parent)).then_some(uid);
        }
        current = parent;
    }
    None
}

/// Whether `pid` runs a sudo: a setuid-root executable named `sudo` or
/// `sudo-rs` (by the executable, which a process cannot fake the way it
/// can its name).
fn is_sudo(pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let exe = format!("/proc/{pid}/exe");
    let named_sudo = std::fs::read_link(&exe).ok().is_some_and(|path| {
        path.file_name()
            .is_some_and(|n| n == "sudo" || n == "sudo-rs")
    });
    named_sudo && std::fs::metadata(&exe).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o4000 != 0)
}

/// Sends `fd` over the unix socket `over` (`SCM_RIGHTS`).
fn send_fd(over: std::os::fd::BorrowedFd<'_>, fd: OwnedFd) -> Result<(), HelperError> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let fds = [fd.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    ancillary.push(SendAncillaryMessage::ScmRights(&fds));
    sendmsg(
        over,
        &[std::io::IoSlice::new(b"s")],
        &mut ancillary,
        SendFlags::empty(),
    )
    .map_err(|e| HelperError::Io {
        what: "cannot hand the socket over stdout (it must be a unix socket)".into(),
        source: e.into(),
    })?;
    Ok(())
}
