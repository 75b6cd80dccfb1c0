//! The daemon's way to change the host network: the bridge, taps, banger's
//! nftables table, `ip_forward`, the DNS port. As root it carries each
//! request out in-process ([`helper::execute`], with the daemon's own
//! network settings as the policy); otherwise it runs
//! `sudo -n HELPER VERB ARGS...`, and the helper applies the policy an
//! administrator granted this user. Either way each request is first
//! checked here, so a daemon whose settings the grant does not cover fails
//! with a clear message before anything runs.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::policy::{GrantError, GuestList, Policy, Request};

use super::helper::{self, Actor, HelperError, Reply};
use crate::system::exec::{Cmd, ExecError};

/// How long one helper run may take (`nft` and `ip` answer in milliseconds).
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a network change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum NetAdminError {
    #[error(transparent)]
    Refused(#[from] GrantError),
    #[error(transparent)]
    InProcess(#[from] HelperError),
    /// The helper ran and failed (its stderr says why).
    #[error(transparent)]
    Helper(#[from] ExecError),
    /// There is no helper to run.
    #[error("{0}")]
    NoHelper(String),
    #[error("cannot serialize the guest list")]
    Json(#[from] serde_json::Error),
}

/// How requests are carried out.
#[derive(Debug, Clone)]
enum Via {
    /// The daemon is root: in-process.
    InProcess,
    /// `sudo -n` this helper.
    Helper(PathBuf),
    /// Not root and no helper at this path: every request fails saying why.
    Missing(PathBuf),
}

/// The daemon's network administrator.
#[derive(Debug, Clone)]
pub struct NetAdmin {
    policy: Policy,
    root: bool,
    /// The `helper` setting.
    configured: Option<PathBuf>,
}

impl NetAdmin {
    /// For a daemon with `policy` as its network: in-process when root,
    /// else through the helper at `helper` (or the first of
    /// [`helper::DEFAULT_PATHS`] present).
    pub fn new(policy: Policy, helper: Option<&Path>) -> NetAdmin {
        NetAdmin {
            policy,
            root: rustix::process::geteuid().is_root(),
            configured: helper.map(Path::to_path_buf),
        }
    }

    /// How a request runs now: a helper installed while the daemon runs
    /// is used from then on.
    fn via(&self) -> Via {
        if self.root {
            return Via::InProcess;
        }
        match find_helper(self.configured.as_deref()) {
            Some(path) => Via::Helper(path),
            None => Via::Missing(
                self.configured
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(helper::DEFAULT_PATHS[0])),
            ),
        }
    }

    /// The network this administrator manages.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The helper this daemon runs through `sudo -n` (`Ok`), or where it
    /// should be installed (`Err`); `None` as root.
    pub fn helper(&self) -> Option<Result<PathBuf, PathBuf>> {
        match self.via() {
            Via::InProcess => None,
            Via::Helper(path) => Some(Ok(path)),
            Via::Missing(path) => Some(Err(path)),
        }
    }

    async fn request(
        &self,
        req: Request,
        owner: u32,
        stdin: Vec<u8>,
    ) -> Result<Reply, NetAdminError> {
        self.policy.authorize(&req)?;
        match self.via() {
            Via::InProcess => {
                let actor = Actor {
                    uid: owner,
                    root: true,
                };
                Ok(helper::execute(&self.policy, actor, &req, &stdin).await?)
            }
            Via::Helper(path) => {
                let cmd = Cmd::new("sudo")
                    .arg("-n")
                    .arg(&path)
                    .args(req.argv())
                    .stdin_bytes(stdin)
                    .timeout(HELPER_TIMEOUT);
                if matches!(req, Request::DnsSocket { .. }) {
                    let (_, fd) = cmd.run_receiving_fd().await?;
                    Ok(Reply::Socket(fd))
                } else {
                    Ok(Reply::Text(cmd.run().await?.stdout))
                }
            }
            Via::Missing(path) => Err(NetAdminError::NoHelper(format!(
                "banger is not root and its network helper {} is not installed; `banger doctor` says how to grant it",
                path.display()
            ))),
        }
    }

    async fn act(&self, req: Request) -> Result<(), NetAdminError> {
        self.request(req, my_uid(), Vec::new()).await.map(drop)
    }

    /// Creates the bridge with the gateway address (if missing) and brings it up.
    pub async fn bridge_up(&self) -> Result<(), NetAdminError> {
        self.act(Request::BridgeUp {
            bridge: self.policy.bridge.clone(),
            cidr: self.policy.gateway_cidr(),
        })
        .await
    }

    /// Removes the bridge (refused while anything but banger taps hangs on it).
    pub async fn bridge_down(&self) -> Result<(), NetAdminError> {
        self.act(Request::BridgeDown {
            bridge: self.policy.bridge.clone(),
        })
        .await
    }

    /// Creates `tap` on the bridge for `owner`, the uid its VMM runs as (a
    /// daemon that is not root can only make taps for itself).
    pub async fn tap_add(&self, tap: &str, owner: u32) -> Result<(), NetAdminError> {
        if !self.root && owner != my_uid() {
            return Err(GrantError::Refused(format!(
                "a daemon that is not root makes taps only for itself, not for uid {owner}"
            ))
            .into());
        }
        let req = Request::TapAdd {
            tap: tap.to_string(),
        };
        self.request(req, owner, Vec::new()).await.map(drop)
    }

    /// Removes `tap`; one already gone is fine.
    pub async fn tap_del(&self, tap: &str) -> Result<(), NetAdminError> {
        if !crate::system::net::link_exists(tap) {
            return Ok(());
        }
        self.act(Request::TapDel {
            tap: tap.to_string(),
        })
        .await
    }

    /// Renames tap `from` (the caller's) to `to`; its VMM keeps using it.
    pub async fn tap_rename(&self, from: &str, to: &str) -> Result<(), NetAdminError> {
        self.act(Request::TapRename {
            from: from.to_string(),
            to: to.to_string(),
        })
        .await
    }

    /// Replaces banger's tables with the rules for `guests`.
    pub async fn nft_apply(&self, guests: &GuestList) -> Result<(), NetAdminError> {
        let req = Request::NftApply {
            table: self.policy.nat_table.clone(),
        };
        let json = serde_json::to_vec(guests)?;
        self.request(req, my_uid(), json).await.map(drop)
    }

    /// Removes banger's tables (both families); absent is fine.
    pub async fn nft_delete(&self) -> Result<(), NetAdminError> {
        self.act(Request::NftDelete {
            table: self.policy.nat_table.clone(),
        })
        .await
    }

    /// The NAT table as `nft` lists it, `None` when it is not there.
    pub async fn nft_list(&self) -> Result<Option<String>, NetAdminError> {
        let req = Request::NftList {
            table: self.policy.nat_table.clone(),
        };
        match self.request(req, my_uid(), Vec::new()).await? {
            Reply::Text(text) if !text.trim().is_empty() => Ok(Some(text)),
            _ => Ok(None),
        }
    }

    /// Turns IPv4 forwarding on (nothing to do when it is on).
    pub async fn ip_forward(&self) -> Result<(), NetAdminError> {
        if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1") {
            return Ok(());
        }
        self.act(Request::IpForward).await
    }

    /// Routes `~vm` to the bridge in systemd-resolved, where it runs.
    pub async fn resolved(&self) -> Result<(), NetAdminError> {
        if !Path::new("/run/systemd/resolve").is_dir() {
            return Ok(());
        }
        self.act(Request::Resolved {
            bridge: self.policy.bridge.clone(),
        })
        .await
    }

    /// A UDP socket on the gateway's port 53, non-blocking: bound here when
    /// this process may, else by the helper and handed over.
    pub async fn dns_socket(&self) -> Result<UdpSocket, NetAdminError> {
        let addr = self.policy.subnet.gateway;
        let socket = match UdpSocket::bind((addr, 53)) {
            Ok(socket) => socket,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                match self
                    .request(Request::DnsSocket { addr }, my_uid(), Vec::new())
                    .await?
                {
                    Reply::Socket(fd) => UdpSocket::from(fd),
                    _ => {
                        return Err(NetAdminError::NoHelper(
                            "the helper answered dns-socket without a socket".into(),
                        ));
                    }
                }
            }
            Err(source) => {
                return Err(HelperError::Io {
                    what: format!("cannot listen on {addr}:53"),
                    source,
                }
                .into());
            }
        };
        socket
            .set_nonblocking(true)
            .map_err(|source| HelperError::Io {
                what: "cannot make the DNS socket non-blocking".into(),
                source,
            })?;
        Ok(socket)
    }

    /// Asks the helper whether this user's grant covers exactly this
    /// network (`banger doctor`); in-process there is nothing to ask.
    pub async fn check(&self) -> Result<(), NetAdminError> {
        let req = Request::Check {
            bridge: self.policy.bridge.clone(),
            subnet: self.policy.gateway_cidr(),
            nat_table: self.policy.nat_table.clone(),
        };
        self.act(req).await
    }
}

fn my_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The helper to run: the configured one, else the first default present.
pub fn find_helper(configured: Option<&Path>) -> Option<PathBuf> {
    match configured {
        Some(path) => path.is_file().then(|| path.to_path_buf()),
        None => helper::DEFAULT_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reaches_the_error_chain() {
        let err = crate::network::NetworkError::host("bgt1")(NetAdminError::Refused(
            GrantError::Refused("no".into()),
        ));
        let mut chain = vec![err.to_string()];
        let mut source = std::error::Error::source(&err);
        while let Some(e) = source {
            chain.push(e.to_string());
            source = e.source();
        }
        assert_eq!(chain, ["cannot change the host network (bgt1)", "no"]);
    }
}
