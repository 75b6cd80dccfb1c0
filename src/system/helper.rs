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
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::net::grant::{GrantError, GuestList, Policy, Request};
use crate::net::nat;

use super::exec::ExecError;
use super::net::{self, LinkKind};
use super::nft;

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

/// Checks that only root can change `path`: it and every directory above
/// it are owned by root and not writable by group or others (a sticky
/// directory such as `/tmp` is fine above it). Says what is wrong.
pub fn root_owned(path: &Path) -> Result<(), String> {
    let mut current = Some(path);
    while let Some(p) = current {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let mode = meta.permissions().mode();
        let sticky_dir = meta.is_dir() && mode & 0o1000 != 0 && p != path;
        if meta.uid() != 0 {
            return Err(format!(
                "{} belongs to uid {}, not root",
                p.display(),
                meta.uid()
            ));
        }
        if mode & 0o022 != 0 && !sticky_dir {
            return Err(format!(
                "{} is writable by group or others (mode {:o})",
                p.display(),
                mode & 0o7777
            ));
        }
        current = p.parent();
    }
    Ok(())
}

/// The `banger-helper` binary: exit 0 when done, 1 when refused or
/// failed, 2 on a usage error. Errors go to stderr, one cause per line.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
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

fn run(args: &[String]) -> Result<(), HelperError> {
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
    let actor = caller()?;
    let user = user_name(actor.uid)?;
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

/// Who ran `sudo`: `SUDO_UID`, which sudo sets itself; root running the
/// helper directly acts as root.
fn caller() -> Result<Actor, HelperError> {
    match std::env::var("SUDO_UID") {
        Ok(uid) => {
            let uid: u32 = uid
                .parse()
                .map_err(|_| GrantError::Refused(format!("SUDO_UID `{uid}` is not a uid")))?;
            Ok(Actor {
                uid,
                root: uid == 0,
            })
        }
        Err(_) => Ok(Actor {
            uid: rustix::process::getuid().as_raw(),
            root: rustix::process::getuid().is_root(),
        }),
    }
}

/// The login name of `uid`, from `/etc/passwd` (not from the environment).
fn user_name(uid: u32) -> Result<String, HelperError> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(io("cannot read /etc/passwd"))?;
    passwd
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id: u32 = fields.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_string())
        })
        .find(|name| !name.is_empty() && !name.contains('/') && !name.starts_with('.'))
        .ok_or_else(|| {
            HelperError::Grant(GrantError::Refused(format!(
                "uid {uid} has no entry in /etc/passwd"
            )))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_owned_locked_paths_are_trusted() {
        assert_eq!(root_owned(Path::new("/etc/passwd")), Ok(()));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.toml");
        std::fs::write(&file, "").unwrap();
        if rustix::process::geteuid().is_root() {
            // The temp dir is root's, 0700, under sticky /tmp.
            assert_eq!(root_owned(&file), Ok(()));
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
            assert!(root_owned(&file).unwrap_err().contains("writable"));
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            rustix::fs::chown(&file, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
            assert!(root_owned(&file).unwrap_err().contains("uid 65534"));
        } else {
            assert!(root_owned(&file).is_err());
        }
    }

    #[test]
    fn user_names_come_from_passwd() {
        assert_eq!(user_name(0).unwrap(), "root");
        assert!(user_name(4_000_000_000).is_err());
    }
}
