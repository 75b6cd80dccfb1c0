//! Network planning, pure: the subnet, each VM's IP, MAC and tap name, and
//! the guest's `ip=` boot argument. Applying a plan is `system::net`'s job.

pub mod nat;

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Errors in network settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetError {
    /// The subnet setting is not `A.B.C.D/N`.
    #[error("`{0}` is not a subnet like 172.30.0.1/24 (the bridge's address and prefix length)")]
    BadSubnet(String),
    /// Every address is leased.
    #[error("no free address left in {0}; delete a VM or widen `network.subnet`")]
    Exhausted(Subnet),
}

/// The VM network: the bridge's own address and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The bridge's address: the guests' gateway and DNS server.
    pub gateway: Ipv4Addr,
    pub prefix: u8,
}

impl FromStr for Subnet {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Subnet, NetError> {
        let bad = || NetError::BadSubnet(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let gateway: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        // Room for the gateway and at least one guest.
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let subnet = Subnet { gateway, prefix };
        if gateway == subnet.network() || gateway == subnet.broadcast() {
            return Err(bad());
        }
        Ok(subnet)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.gateway, self.prefix)
    }
}

impl Subnet {
    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.gateway) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.gateway) | !self.mask())
    }

    /// `172.30.0.0/24`: the network in CIDR form, for routes and NAT rules.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network(), self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// The lowest address that is neither the network, the broadcast, the
    /// gateway nor in `used`.
    pub fn allocate(&self, used: &HashSet<Ipv4Addr>) -> Result<Ipv4Addr, NetError> {
        let first = u32::from(self.network()) + 1;
        let last = u32::from(self.broadcast()) - 1;
        (first..=last)
            .map(Ipv4Addr::from)
            .find(|ip| *ip != self.gateway && !used.contains(ip))
            .ok_or(NetError::Exhausted(*self))
    }

    /// The guest's `ip=` boot argument: static address, gateway, netmask,
    /// hostname, device, no autoconfiguration.
    pub fn kernel_ip_arg(&self, ip: Ipv4Addr, hostname: &str) -> String {
        format!(
            "ip={ip}::{}:{}:{hostname}:eth0:off",
            self.gateway,
            self.netmask()
        )
    }
}

/// Checks that `name` can be a DNS label (and so a hostname, a `.vm` name
/// and a directory name): 1-63 of `a-z`, `0-9` and `-`, not starting or
/// ending with `-`. Returns why not, to follow "it": `crate::rpc`'s name
/// checks say what the name was for.
pub fn check_dns_label(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("is empty")
    } else if name.len() > 63 {
        Err("is longer than 63 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Err("may hold only lowercase letters, digits and '-'")
    } else if name.starts_with('-') || name.ends_with('-') {
        Err("may not start or end with '-'")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn subnet_parses_and_describes_itself() {
        let s = subnet("172.30.0.1/24");
        assert_eq!(s.network(), Ipv4Addr::new(172, 30, 0, 0));
        assert_eq!(s.broadcast(), Ipv4Addr::new(172, 30, 0, 255));
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.cidr(), "172.30.0.0/24");
        assert!(s.contains(Ipv4Addr::new(172, 30, 0, 9)));
        assert!(!s.contains(Ipv4Addr::new(172, 30, 1, 9)));
        for bad in [
            "172.30.0.1",
            "172.30.0.1/33",
            "x/24",
            "172.30.0.0/24",
            "172.30.0.255/24",
            "1.2.3.4/31",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn allocation_takes_the_lowest_free_address() {
        let s = subnet("172.30.0.1/24");
        let mut used = HashSet::new();
        assert_eq!(s.allocate(&used).unwrap(), Ipv4Addr::new(172, 30, 0, 2));
        used.insert(Ipv4Addr::new(172, 30, 0, 2));
        used.insert(Ipv4Addr::new(172, 30, 0, 4));
        assert_eq!(s.allocate(&used).unwrap(), Ipv4Addr::new(172, 30, 0, 3));
        // The gateway need not be .1.
        let s = subnet("10.9.0.5/29");
        let got: Vec<_> = (0..5)
            .scan(HashSet::new(), |used, _| {
                let ip = s.allocate(used).ok()?;
                used.insert(ip);
                Some(ip.octets()[3])
            })
            .collect();
        assert_eq!(got, vec![1, 2, 3, 4, 6]);
        let full: HashSet<_> = [1, 2, 3, 4, 6].map(|d| Ipv4Addr::new(10, 9, 0, d)).into();
        assert_eq!(s.allocate(&full), Err(NetError::Exhausted(s)));
    }

    #[test]
    fn names_must_be_dns_labels() {
        for good in ["testbox", "a", "web-1", &"x".repeat(63)] {
            assert!(check_dns_label(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Test",
            "a_b",
            "-a",
            "a-",
            "a.b",
            &"x".repeat(64),
            "box!",
        ] {
            assert!(check_dns_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_boot_argument_derives_from_the_ip() {
        let ip = Ipv4Addr::new(172, 30, 0, 5);
        assert!(
            crate::model::TapName::for_ip(Ipv4Addr::BROADCAST)
                .as_str()
                .len()
                <= 15
        );
        assert_eq!(
            subnet("172.30.0.1/24").kernel_ip_arg(ip, "box"),
            "ip=172.30.0.5::172.30.0.1:255.255.255.0:box:eth0:off"
        );
    }
}
