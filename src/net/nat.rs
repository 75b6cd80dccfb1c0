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
        let (bridge, table) = (&self.bridge, &self.table);
        let mut s = String::new();
        writeln!(s, "table {FAMILY} {table}").unwrap();
        writeln!(s, "delete table {FAMILY} {table}").unwrap();
        writeln!(s, "table {FAMILY} {table} {{").unwrap();
        writeln!(s, "\tset nat_sources {{").unwrap();
        writeln!(s, "\t\ttype ipv4_addr").unwrap();
        if !sources.is_empty() {
            let list: Vec<String> = sources.iter().map(Ipv4Addr::to_string).collect();
            writeln!(s, "\t\telements = {{ {} }}", list.join(", ")).unwrap();
        }
        writeln!(s, "\t}}").unwrap();
        writeln!(s, "\tchain postrouting {{").unwrap();
        writeln!(
            s,
            "\t\ttype nat hook postrouting priority srcnat; policy accept;"
        )
        .unwrap();
        writeln!(
            s,
            "\t\tip saddr @nat_sources oifname != \"{bridge}\" masquerade"
        )
        .unwrap();
        writeln!(s, "\t}}").unwrap();
        writeln!(s, "\tchain forward {{").unwrap();
        writeln!(
            s,
            "\t\ttype filter hook forward priority filter; policy accept;"
        )
        .unwrap();
        writeln!(s, "\t\tiifname \"{bridge}\" oifname \"{bridge}\" accept").unwrap();
        writeln!(s, "\t\tiifname \"{bridge}\" ip saddr @nat_sources accept").unwrap();
        writeln!(
            s,
            "\t\toifname \"{bridge}\" ct state established,related accept"
        )
        .unwrap();
        // Host-only VMs (and anything else on the bridge) do not get out,
        // and nothing from elsewhere (the LAN, other bridges) gets in.
        writeln!(s, "\t\tiifname \"{bridge}\" drop").unwrap();
        writeln!(s, "\t\toifname \"{bridge}\" drop").unwrap();
        writeln!(s, "\t}}").unwrap();
        writeln!(s, "}}").unwrap();
        self.guard_script(&mut s);
        s
    }

    /// The bridge-family table: frames from banger's taps pass only with
    /// their VM's own MAC and IPv4 address (IP and ARP); everything else
    /// from them (another address, another MAC, IPv6, other ethertypes) is
    /// dropped as it enters the bridge. Other interfaces are not touched.
    fn guard_script(&self, s: &mut String) {
        let mut guests = self.guests.clone();
        guests.sort();
        guests.dedup();
        let table = &self.table;
        writeln!(s, "table {GUARD_FAMILY} {table}").unwrap();
        writeln!(s, "delete table {GUARD_FAMILY} {table}").unwrap();
        writeln!(s, "table {GUARD_FAMILY} {table} {{").unwrap();
        writeln!(s, "\tset taps {{").unwrap();
        writeln!(s, "\t\ttype ifname").unwrap();
        if !guests.is_empty() {
            let taps: Vec<String> = guests.iter().map(|g| format!("\"{}\"", g.tap)).collect();
            writeln!(s, "\t\telements = {{ {} }}", taps.join(", ")).unwrap();
        }
        writeln!(s, "\t}}").unwrap();
        writeln!(s, "\tset guests {{").unwrap();
        writeln!(s, "\t\ttype ifname . ether_addr . ipv4_addr").unwrap();
        if !guests.is_empty() {
            let entries: Vec<String> = guests
                .iter()
                .map(|g| format!("\"{}\" . {} . {}", g.tap, g.mac, g.ip))
                .collect();
            writeln!(s, "\t\telements = {{ {} }}", entries.join(", ")).unwrap();
        }
        writeln!(s, "\t}}").unwrap();
        writeln!(s, "\tchain prerouting {{").unwrap();
        writeln!(
            s,
            "\t\ttype filter hook prerouting priority -200; policy accept;"
        )
        .unwrap();
        writeln!(s, "\t\tiifname != @taps accept").unwrap();
        writeln!(
            s,
            "\t\tether type ip iifname . ether saddr . ip saddr @guests accept"
        )
        .unwrap();
        // ARP passes only when the frame's Ethernet source and the ARP
        // sender agree with the guest's own MAC and IP: a frame from a
        // neighbour's MAC would teach the bridge that MAC on this port.
        writeln!(
            s,
            "\t\tether type arp iifname . ether saddr . arp saddr ip @guests iifname . arp saddr ether . arp saddr ip @guests accept"
        )
        .unwrap();
        writeln!(s, "\t\tdrop").unwrap();
        writeln!(s, "\t}}").unwrap();
        writeln!(s, "}}").unwrap();
    }
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
        assert!(s.contains("oifname \"banger0\" drop"), "{s}");
        assert!(
            s.contains("elements = { \"bg-ac1e0002\" . 06:00:ac:1e:00:02 . 172.30.0.2 }"),
            "{s}"
        );
        assert!(s.contains("table bridge banger {"), "{s}");
        assert!(
            s.contains("ether type arp iifname . ether saddr . arp saddr ip @guests iifname . arp saddr ether . arp saddr ip @guests accept"),
            "{s}"
        );
        assert!(
            s.starts_with("table ip banger\ndelete table ip banger\ntable ip banger {\n"),
            "{s}"
        );
        assert!(s.contains("elements = { 172.30.0.2, 172.30.0.3 }"), "{s}");
        assert!(
            s.contains("ip saddr @nat_sources oifname != \"banger0\" masquerade"),
            "{s}"
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
