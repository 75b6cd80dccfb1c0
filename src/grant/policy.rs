//! The narrow grant, pure: what banger may change on the host network for
//! one user (a [`Policy`]: one bridge, its subnet, one nftables table name),
//! the requests that change it ([`Request`]), and the checks that keep
//! every request inside the policy. The privileged helper
//! (`system::helper`) runs these checks before it touches anything, and so
//! does a daemon running as root: the same rules, whoever asks.
//!
//! What a policy allows, and nothing else:
//! - its bridge: create it with its subnet's gateway address, bring it up,
//!   remove it while only banger taps are attached;
//! - taps named `bg-<hex of a guest IP in the subnet>`, created for the
//!   caller and removed only when the caller owns them;
//! - its nftables table in families `ip` and `bridge`, rendered by banger
//!   from validated guests (never a script from the caller);
//! - `net.ipv4.ip_forward=1`, systemd-resolved's `~vm` route on its bridge,
//!   and a UDP socket on its gateway's port 53 handed to the caller.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::model::{Lease, Mac, TapName};
use crate::net::Subnet;
use crate::net::nat::NatPlan;

/// Why a request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    /// The request names an object the policy does not give this user.
    #[error("{0}")]
    Refused(String),
    /// The request is malformed (a usage error).
    #[error("{0}")]
    Usage(String),
}

fn refused(msg: impl Into<String>) -> GrantError {
    GrantError::Refused(msg.into())
}

/// One user's network: everything the helper may touch for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub bridge: String,
    pub subnet: Subnet,
    pub nat_table: String,
}

/// A policy file as an administrator writes it (`/etc/banger/users/NAME.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    bridge: String,
    subnet: String,
    nat_table: String,
}

impl Policy {
    /// A policy from its three settings, each checked.
    pub fn new(bridge: &str, subnet: &str, nat_table: &str) -> Result<Policy, GrantError> {
        check_bridge_name(bridge)?;
        check_table_name(nat_table)?;
        let subnet: Subnet = subnet
            .parse()
            .map_err(|e: crate::net::NetError| GrantError::Usage(e.to_string()))?;
        Ok(Policy {
            bridge: bridge.to_string(),
            subnet,
            nat_table: nat_table.to_string(),
        })
    }

    /// Parses a policy file's text.
    pub fn parse(text: &str) -> Result<Policy, GrantError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| GrantError::Usage(e.message().to_string()))?;
        Policy::new(&file.bridge, &file.subnet, &file.nat_table)
    }

    /// The policy file that grants exactly this policy.
    pub fn to_file(&self) -> String {
        format!(
            "bridge = \"{}\"\nsubnet = \"{}\"\nnat_table = \"{}\"\n",
            self.bridge, self.subnet, self.nat_table
        )
    }

    /// The bridge's address with its prefix, e.g. `172.30.0.1/24`.
    pub fn gateway_cidr(&self) -> String {
        self.subnet.to_string()
    }

    /// Checks that `req` stays inside this policy (names only; what exists
    /// on the host is checked by the helper when it acts).
    pub fn authorize(&self, req: &Request) -> Result<(), GrantError> {
        match req {
            Request::BridgeUp { bridge, cidr } => {
                self.own_bridge(bridge)?;
                if *cidr != self.gateway_cidr() {
                    return Err(refused(format!(
                        "bridge {bridge} gets the address {}, not {cidr}",
                        self.gateway_cidr()
                    )));
                }
                Ok(())
            }
            Request::BridgeDown { bridge } | Request::Resolved { bridge } => {
                self.own_bridge(bridge)
            }
            Request::TapAdd { tap } | Request::TapDel { tap } => self.own_tap(tap).map(drop),
            Request::TapRename { from, to } => {
                self.own_tap(from)?;
                self.own_tap(to).map(drop)
            }
            Request::NftApply { table } | Request::NftDelete { table } => self.own_table(table),
            Request::NftList { table } => self.own_table(table),
            Request::DnsSocket { addr } => {
                if *addr != self.subnet.gateway {
                    return Err(refused(format!(
                        "DNS may listen on {} (the bridge address), not {addr}",
                        self.subnet.gateway
                    )));
                }
                Ok(())
            }
            Request::IpForward => Ok(()),
            Request::Check {
                bridge,
                subnet,
                nat_table,
            } => {
                self.own_bridge(bridge)?;
                self.own_table(nat_table)?;
                if *subnet != self.gateway_cidr() {
                    return Err(refused(format!(
                        "the subnet granted is {}, not {subnet}",
                        self.gateway_cidr()
                    )));
                }
                Ok(())
            }
        }
    }

    fn own_bridge(&self, bridge: &str) -> Result<(), GrantError> {
        if bridge == self.bridge {
            Ok(())
        } else {
            Err(refused(format!(
                "`{bridge}` is not this user's banger bridge (that is {})",
                self.bridge
            )))
        }
    }

    fn own_table(&self, table: &str) -> Result<(), GrantError> {
        if table == self.nat_table {
            Ok(())
        } else {
            Err(refused(format!(
                "`{table}` is not this user's banger nftables table (that is {})",
                self.nat_table
            )))
        }
    }

    /// The guest address a tap name stands for, when it is a banger tap of
    /// this subnet: `bg-` and the address in lowercase hex.
    pub fn own_tap(&self, tap: &str) -> Result<Ipv4Addr, GrantError> {
        let not_ours = || {
            refused(format!(
                "`{tap}` is not a banger tap of {} (bg-<guest address in hex>)",
                self.subnet
            ))
        };
        let hex = tap.strip_prefix("bg-").ok_or_else(not_ours)?;
        let ip = Ipv4Addr::from(u32::from_str_radix(hex, 16).map_err(|_| not_ours())?);
        if TapName::for_ip(ip).as_str() != tap || !self.is_guest(ip) {
            return Err(not_ours());
        }
        Ok(ip)
    }

    /// True for an address a guest of this subnet may hold.
    fn is_guest(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(ip)
            && ip != self.subnet.gateway
            && ip != self.subnet.network()
            && ip != self.subnet.broadcast()
    }

    /// The nftables plan for `guests`, each checked to be a guest of this
    /// subnet with the tap and MAC banger derives from its address: a
    /// caller cannot name another interface or let a guest send as
    /// anything but itself.
    pub fn nat_plan(&self, guests: &GuestList) -> Result<NatPlan, GrantError> {
        for ip in &guests.nat_sources {
            if !self.is_guest(*ip) {
                return Err(refused(format!(
                    "{ip} is not a guest address of {}",
                    self.subnet
                )));
            }
        }
        for guest in &guests.guests {
            let ip = self.own_tap(guest.tap.as_str())?;
            if ip != guest.ip || guest.mac != Mac::for_ip(ip) {
                return Err(refused(format!(
                    "tap {} belongs to {ip} with MAC {}, not {} with {}",
                    guest.tap,
                    Mac::for_ip(ip),
                    guest.ip,
                    guest.mac
                )));
            }
        }
        Ok(NatPlan {
            table: self.nat_table.clone(),
            bridge: self.bridge.clone(),
            nat_sources: guests.nat_sources.clone(),
            guests: guests.guests.clone(),
        })
    }
}

/// What the NAT and guard tables must hold: sent to the helper as JSON on
/// stdin; the helper renders the rules itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestList {
    /// Running guests that may reach the outside world.
    pub nat_sources: Vec<Ipv4Addr>,
    /// Every running guest.
    pub guests: Vec<Lease>,
}

/// One file of the grant an administrator installs for a user (`banger
/// doctor` lists them; the non-root test installs exactly these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantFile {
    pub path: std::path::PathBuf,
    /// Its mode; the owner is root.
    pub mode: u32,
    /// Its text, when it is a text file.
    pub content: Option<String>,
    /// The file to copy, when it is a program (the helper).
    pub copy_of: Option<std::path::PathBuf>,
}

impl GrantFile {
    /// How a person installs it, in words and a command.
    pub fn describe(&self) -> String {
        let path = self.path.display();
        match (&self.content, &self.copy_of) {
            (Some(text), _) => format!(
                "  {path} (root, mode {:o}):\n{}",
                self.mode,
                text.lines()
                    .map(|l| format!("      {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            (None, Some(from)) => format!(
                "  {path}: install -D -o root -g root -m {:o} {} {path}",
                self.mode,
                from.display()
            ),
            (None, None) => format!(
                "  {path} (root, mode {:o}): banger-helper from this build (`make build`)",
                self.mode
            ),
        }
    }
}

/// An interface name the kernel takes (at most 15 bytes, no `/`, no
/// whitespace) that is not a tap's (`bg-`) and not one of the names
/// `ip` treats specially.
fn check_bridge_name(name: &str) -> Result<(), GrantError> {
    let ok = (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !name.starts_with("bg-")
        && !name.starts_with('-')
        && !["lo", "all", "default", ".", ".."].contains(&name);
    if ok {
        Ok(())
    } else {
        Err(GrantError::Usage(format!(
            "`{name}` cannot be banger's bridge: use 1-15 letters, digits, '_', '.' or '-', not starting with `bg-`"
        )))
    }
}

/// An nftables table name: a letter, then letters, digits or `_`.
fn check_table_name(name: &str) -> Result<(), GrantError> {
    let mut bytes = name.bytes();
    let ok = name.len() <= 32
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(GrantError::Usage(format!(
            "`{name}` cannot be banger's nftables table: use a letter, then up to 31 letters, digits or '_'"
        )))
    }
}

/// One thing the helper is asked to do; its argv is the verb and names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Create the bridge (if missing), give it the gateway address, bring it up.
    BridgeUp { bridge: String, cidr: String },
    /// Remove the bridge, when only banger taps hang on it.
    BridgeDown { bridge: String },
    /// Create a tap for the caller and attach it to the bridge.
    TapAdd { tap: String },
    /// Remove a tap the caller owns.
    TapDel { tap: String },
    /// Rename a tap the caller owns to the name of another guest address
    /// (a running VM given a new lease keeps its tap device).
    TapRename { from: String, to: String },
    /// Replace the table (families `ip` and `bridge`) with the rules for the
    /// [`GuestList`] read from stdin.
    NftApply { table: String },
    /// Remove the table in both families.
    NftDelete { table: String },
    /// Print the `ip` table, or nothing when it is not there.
    NftList { table: String },
    /// Turn on IPv4 forwarding.
    IpForward,
    /// Tell systemd-resolved that `.vm` is answered on the bridge.
    Resolved { bridge: String },
    /// Bind UDP port 53 on the gateway address and pass the socket back
    /// over stdout (a unix socket).
    DnsSocket { addr: Ipv4Addr },
    /// Change nothing: succeed when the caller's policy grants exactly
    /// these names (for `banger doctor`).
    Check {
        bridge: String,
        subnet: String,
        nat_table: String,
    },
}

impl Request {
    /// The helper's argv for this request (after the program name).
    pub fn argv(&self) -> Vec<String> {
        let v = |words: &[&str]| words.iter().map(|w| w.to_string()).collect();
        match self {
            Request::BridgeUp { bridge, cidr } => v(&["bridge-up", bridge, cidr]),
            Request::BridgeDown { bridge } => v(&["bridge-down", bridge]),
            Request::TapAdd { tap } => v(&["tap-add", tap]),
            Request::TapDel { tap } => v(&["tap-del", tap]),
            Request::TapRename { from, to } => v(&["tap-rename", from, to]),
            Request::NftApply { table } => v(&["nft-apply", table]),
            Request::NftDelete { table } => v(&["nft-delete", table]),
            Request::NftList { table } => v(&["nft-list", table]),
            Request::IpForward => v(&["ip-forward"]),
            Request::Resolved { bridge } => v(&["resolved", bridge]),
            Request::DnsSocket { addr } => v(&["dns-socket", &addr.to_string()]),
            Request::Check {
                bridge,
                subnet,
                nat_table,
            } => v(&["check", bridge, subnet, nat_table]),
        }
    }

    /// Parses the helper's argv (after the program name).
    pub fn parse(args: &[String]) -> Result<Request, GrantError> {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        let s = |w: &str| w.to_string();
        Ok(match words.as_slice() {
            ["bridge-up", bridge, cidr] => Request::BridgeUp {
                bridge: s(bridge),
                cidr: s(cidr),
            },
            ["bridge-down", bridge] => Request::BridgeDown { bridge: s(bridge) },
            ["tap-add", tap] => Request::TapAdd { tap: s(tap) },
            ["tap-del", tap] => Request::TapDel { tap: s(tap) },
            ["tap-rename", from, to] => Request::TapRename {
                from: s(from),
                to: s(to),
            },
            ["nft-apply", table] => Request::NftApply { table: s(table) },
            ["nft-delete", table] => Request::NftDelete { table: s(table) },
            ["nft-list", table] => Request::NftList { table: s(table) },
            ["ip-forward"] => Request::IpForward,
            ["resolved", bridge] => Request::Resolved { bridge: s(bridge) },
            ["dns-socket", addr] => Request::DnsSocket {
                addr: addr
                    .parse()
                    .map_err(|_| GrantError::Usage(format!("`{addr}` is not an IPv4 address")))?,
            },
            ["check", bridge, subnet, nat_table] => Request::Check {
                bridge: s(bridge),
                subnet: s(subnet),
                nat_table: s(nat_table),
            },
            _ => return Err(GrantError::Usage(USAGE.to_string())),
        })
    }
}

/// What the helper takes, for its usage error.
pub const USAGE: &str = "usage: banger-helper VERB ARGS...
  bridge-up BRIDGE CIDR | bridge-down BRIDGE
  tap-add TAP | tap-del TAP
  nft-apply TABLE (guests as JSON on stdin) | nft-delete TABLE | nft-list TABLE
  ip-forward | resolved BRIDGE | dns-socket GATEWAY
  check BRIDGE SUBNET TABLE
Each acts only on the network /etc/banger/users/<you>.toml grants you.";

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new("banger0", "172.30.0.1/24", "banger").unwrap()
    }

    fn guest(d: u8) -> Lease {
        Lease::for_ip(Ipv4Addr::new(172, 30, 0, d))
    }

    #[test]
    fn argv_round_trips() {
        let requests = [
            Request::BridgeUp {
                bridge: "banger0".into(),
                cidr: "172.30.0.1/24".into(),
            },
            Request::BridgeDown {
                bridge: "banger0".into(),
            },
            Request::TapAdd {
                tap: "bg-ac1e0002".into(),
            },
            Request::TapDel {
                tap: "bg-ac1e0002".into(),
            },
            Request::TapRename {
                from: "bg-ac1e0002".into(),
                to: "bg-ac1e0003".into(),
            },
            Request::NftApply {
                table: "banger".into(),
            },
            Request::NftDelete {
                table: "banger".into(),
            },
            Request::NftList {
                table: "banger".into(),
            },
            Request::IpForward,
            Request::Resolved {
                bridge: "banger0".into(),
            },
            Request::DnsSocket {
                addr: Ipv4Addr::new(172, 30, 0, 1),
            },
            Request::Check {
                bridge: "banger0".into(),
                subnet: "172.30.0.1/24".into(),
                nat_table: "banger".into(),
            },
        ];
        for req in requests {
            assert_eq!(Request::parse(&req.argv()).unwrap(), req);
            assert_eq!(policy().authorize(&req), Ok(()), "{req:?}");
        }
        for bad in [
            &[][..],
            &["tap-add"],
            &["tap-add", "a", "b"],
            &["netns", "exec"],
            &["dns-socket", "nope"],
        ] {
            let args: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(
                matches!(Request::parse(&args), Err(GrantError::Usage(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_the_policys_own_objects_are_allowed() {
        let p = policy();
        let refused = |req: Request| {
            assert!(
                matches!(p.authorize(&req), Err(GrantError::Refused(_))),
                "{req:?} was allowed"
            )
        };
        refused(Request::BridgeUp {
            bridge: "eth0".into(),
            cidr: "172.30.0.1/24".into(),
        });
        refused(Request::BridgeUp {
            bridge: "banger0".into(),
            cidr: "10.0.0.1/8".into(),
        });
        refused(Request::BridgeDown {
            bridge: "docker0".into(),
        });
        for tap in [
            "eth0",
            "lo",
            "bg-0a000002", // another subnet
            "bg-AC1E0002", // not the canonical name
            "bg-ac1e0001", // the gateway
            "bg-ac1e00ff", // the broadcast address
            "bg-ac1e0000", // the network
            "bg-ac1e0002x",
            "bg-",
        ] {
            refused(Request::TapDel { tap: tap.into() });
            refused(Request::TapAdd { tap: tap.into() });
            // A rename neither from nor to another interface.
            refused(Request::TapRename {
                from: tap.into(),
                to: "bg-ac1e0003".into(),
            });
            refused(Request::TapRename {
                from: "bg-ac1e0003".into(),
                to: tap.into(),
            });
        }
        refused(Request::NftDelete {
            table: "filter".into(),
        });
        refused(Request::NftApply {
            table: "nat".into(),
        });
        refused(Request::DnsSocket {
            addr: Ipv4Addr::LOCALHOST,
        });
        refused(Request::Check {
            bridge: "banger0".into(),
            subnet: "172.30.0.1/16".into(),
            nat_table: "banger".into(),
        });
    }

    #[test]
    fn a_nat_plan_holds_only_guests_as_themselves() {
        let p = policy();
        let good = GuestList {
            nat_sources: vec![Ipv4Addr::new(172, 30, 0, 2)],
            guests: vec![guest(2), guest(3)],
        };
        let plan = p.nat_plan(&good).unwrap();
        assert_eq!(plan.table, "banger");
        assert_eq!(plan.bridge, "banger0");
        assert_eq!(plan.guests.len(), 2);

        let mut other_tap = good.clone();
        other_tap.guests[0].tap = "eth0".parse().unwrap();
        assert!(p.nat_plan(&other_tap).is_err());
        let mut stolen_ip = good.clone();
        stolen_ip.guests[0].ip = Ipv4Addr::new(172, 30, 0, 3);
        assert!(p.nat_plan(&stolen_ip).is_err());
        let mut other_mac = good.clone();
        other_mac.guests[0].mac = "02:00:00:00:00:01".parse().unwrap();
        assert!(p.nat_plan(&other_mac).is_err());
        let mut outsider = good.clone();
        outsider.nat_sources.push(Ipv4Addr::new(192, 168, 1, 10));
        assert!(p.nat_plan(&outsider).is_err());
    }

    #[test]
    fn policy_files_parse_and_names_are_checked() {
        let p = Policy::parse(&policy().to_file()).unwrap();
        assert_eq!(p, policy());
        assert!(Policy::parse("bridge = \"banger0\"\nsubnet = \"172.30.0.1/24\"\n").is_err());
        assert!(Policy::parse(&(policy().to_file() + "extra = 1\n")).is_err());
        for bridge in ["", "bg-x", "a b", "toolongbridgename", "lo", "a/b", "-x"] {
            assert!(
                Policy::new(bridge, "172.30.0.1/24", "banger").is_err(),
                "{bridge}"
            );
        }
        for table in ["", "1x", "a-b", "a b", &"t".repeat(33)] {
            assert!(
                Policy::new("banger0", "172.30.0.1/24", table).is_err(),
                "{table}"
            );
        }
        assert!(Policy::new("banger0", "172.30.0.0/24", "banger").is_err());
    }
}
