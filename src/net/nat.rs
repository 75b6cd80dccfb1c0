//! The nftables tables banger owns, rendered from what runs: one `ip`
//! table (NAT out for VMs that have it; no new connection into a guest from
//! any other interface) and one `bridge` table of the same name that fences
//! each guest in (a tap may send only from its VM's own MAC and IPv4
//! address, IP and ARP alike; nothing else). Nothing outside these two
//! tables is ever touched.

use crate::model::Lease;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The family of banger's table (its name is `network.nat_table`).
pub const FAMILY: &str = "ip";

/// The family of its guard table (same name).
pub const GUARD_FAMILY: &str = "bridge";

/// What the table must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatPlan {
    pub table: String,
    pub bridge: String,
    /// Running VMs that may reach the outside world (not `--no-nat`).
    pub nat_sources: Vec<Ipv4Addr>,
    /// Every running VM's lease: its tap and the only addresses it may send from.
    pub guests: Vec<Lease>,
}

impl NatPlan {
    /// The whole table in nft syntax, replacing whatever banger had before
    /// in one transaction (create-if-missing, delete, define). Deterministic:
    /// applying the same plan twice leaves the same ruleset.
    pub fn script(&self) -> String {
        let mut sources = self.nat_sources.clone();
        sources.sort();
        sources.dedup();
        let sources: Vec<String> = sources.iter().map(Ipv4Addr::to_string).collect();
        let bridge = &self.bridge;
        let head = table_head(FAMILY, &self.table);
        let sources = set("nat_sources", "ipv4_addr", &sources);
        // The forward chain: host-only VMs (and anything else on the
        // bridge) do not get out, and nothing from elsewhere (the LAN,
        // other bridges) gets in.
        let mut s = format!(
            "{head}{sources}\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr @nat_sources oifname != \"{bridge}\" masquerade
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter; policy accept;
\t\tiifname \"{bridge}\" oifname \"{bridge}\" accept
\t\tiifname \"{bridge}\" ip saddr @nat_sources accept
\t\toifname \"{bridge}\" ct state established,related accept
\t\tiifname \"{bridge}\" drop
\t\toifname \"{bridge}\" drop
\t}}
}}
"
        );
        self.guard_script(&mut s);
        s
    }

    /// The bridge-family table: frames from banger's taps pass only with
    /// their VM's own MAC and IPv4 address (IP and ARP); everything else
    /// from them (another address, another MAC, IPv6, other ethertypes) is
    /// dropped as it enters the bridge. Other interfaces are not touched.
    ///
    /// ARP passes only when the frame's Ethernet source and the ARP sender
    /// agree with the guest's own MAC and IP: a frame from a neighbour's
    /// MAC would teach the bridge that MAC on this port.
    fn guard_script(&self, s: &mut String) {
        let mut guests = self.guests.clone();
        guests.sort();
        guests.dedup();
        let taps: Vec<String> = guests.iter().map(|g| format!("\"{}\"", g.tap)).collect();
        let entries: Vec<String> = guests
            .iter()
            .map(|g| format!("\"{}\" . {} . {}", g.tap, g.mac, g.ip))
            .collect();
        let head = table_head(GUARD_FAMILY, &self.table);
        let taps = set("taps", "ifname", &taps);
        let guests = set("guests", "ifname . ether_addr . ipv4_addr", &entries);
        write!(
            s,
            "{head}{taps}{guests}\tchain prerouting {{
\t\ttype filter hook prerouting priority -200; policy accept;
\t\tiifname != @taps accept
\t\tether type ip iifname . ether saddr . ip saddr @guests accept
\t\tether type arp iifname . ether saddr . arp saddr ip @guests iifname . arp saddr ether . arp saddr ip @guests accept
\t\tdrop
\t}}
}}
"
        )
        .unwrap();
    }
}

/// The opening of table `table` of `family`, emptied first: a script
/// defines it whole (created if missing, so the delete cannot fail).
fn table_head(family: &str, table: &str) -> String {
    format!("table {family} {table}\ndelete table {family} {table}\ntable {family} {table} {{\n")
}

/// A set of `kind` holding `items`; an empty set has no `elements` line
/// (nft refuses `elements = { }`).
fn set(name: &str, kind: &str, items: &[String]) -> String {
    let elements = match items.is_empty() {
        true => String::new(),
        false => format!("\t\telements = {{ {} }}\n", items.join(", ")),
    };
    format!("\tset {name} {{\n\t\ttype {kind}\n{elements}\t}}\n")
}

/// One IPv4 route of the host, as `/proc/net/route` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub iface: String,
    pub destination: Ipv4Addr,
    pub prefix: u8,
}

/// Parses `/proc/net/route` (addresses in little-endian hex).
pub fn parse_proc_routes(text: &str) -> Vec<Route> {
    let hex = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.swap_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (destination, mask) = (hex(f.get(1)?)?, hex(f.get(7)?)?);
            Some(Route {
                iface: f[0].to_string(),
                destination,
                prefix: u32::from(mask).count_ones() as u8,
            })
        })
        .collect()
}

/// The first route, not on `bridge` and not the default route, whose
/// network overlaps `subnet`.
pub fn clashing_route<'a>(
    routes: &'a [Route],
    subnet: &super::Subnet,
    bridge: &str,
) -> Option<&'a Route> {
    let net = u32::from(subnet.network());
    routes.iter().find(|r| {
        if r.iface == bridge || r.prefix == 0 {
            return false;
        }
        // Two prefixes overlap when they agree on the shorter one.
        let shorter = r.prefix.min(subnet.prefix);
        let mask = u32::MAX.checked_shl(32 - u32::from(shorter)).unwrap_or(0);
        u32::from(r.destination) & mask == net & mask
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_replaces_the_table_and_masquerades_only_nat_vms() {
        let plan = NatPlan {
            table: "banger".into(),
            bridge: "banger0".into(),
            nat_sources: vec![Ipv4Addr::new(172, 30, 0, 3), Ipv4Addr::new(172, 30, 0, 2)],
            guests: vec![Lease::for_ip(Ipv4Addr::new(172, 30, 0, 2))],
        };
        let s = plan.script();
        assert!(
            s.starts_with("table ip banger\ndelete table ip banger\ntable ip banger {\n"),
            "{s}"
        );
        crate::testing::assert_contains_all(
            &s,
            &[
                "oifname \"banger0\" drop",
                "elements = { \"bg-ac1e0002\" . 06:00:ac:1e:00:02 . 172.30.0.2 }",
                "table bridge banger {",
                "ether type arp iifname . ether saddr . arp saddr ip @guests iifname . arp saddr ether . arp saddr ip @guests accept",
                "elements = { 172.30.0.2, 172.30.0.3 }",
                "ip saddr @nat_sources oifname != \"banger0\" masquerade",
            ],
        );
        let empty = NatPlan {
            table: "banger".into(),
            bridge: "banger0".into(),
            nat_sources: vec![],
            guests: vec![],
        }
        .script();
        assert!(!empty.contains("elements"), "{empty}");
    }

    #[test]
    fn routes_parse_and_clashes_are_found() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    docker0\t000010AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let routes = parse_proc_routes(text);
        assert_eq!(routes.len(), 3);
        assert_eq!(
            routes[1],
            Route {
                iface: "eth0".into(),
                destination: Ipv4Addr::new(192, 168, 2, 0),
                prefix: 24
            }
        );
        let ours: super::super::Subnet = "172.30.0.1/24".parse().unwrap();
        assert_eq!(
            clashing_route(&routes, &ours, "banger0"),
            None,
            "default route is no clash"
        );
        let clash: super::super::Subnet = "172.16.5.1/24".parse().unwrap();
        assert_eq!(
            clashing_route(&routes, &clash, "banger0").unwrap().iface,
            "docker0"
        );
        let wide: super::super::Subnet = "192.168.0.1/16".parse().unwrap();
        assert_eq!(
            clashing_route(&routes, &wide, "banger0").unwrap().iface,
            "eth0"
        );
        assert_eq!(
            clashing_route(&routes, &clash, "docker0"),
            None,
            "our own bridge's route"
        );
    }
}
