//! A VM's network identity: its address, its NIC's MAC and the host tap.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A VM's network identity. Two VMs never share any of these.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Lease {
    /// The guest's static address on the bridge, handed over on the kernel command line.
    pub ip: Ipv4Addr,
    /// The guest NIC's MAC, derived from the IP.
    pub mac: Mac,
    /// The host tap device the guest NIC is attached to.
    pub tap: TapName,
}

impl Lease {
    /// The lease banger gives the guest at `ip`: a locally administered MAC
    /// holding the address, and a tap named after it.
    pub fn for_ip(ip: Ipv4Addr) -> Lease {
        Lease {
            ip,
            mac: Mac::for_ip(ip),
            tap: TapName::for_ip(ip),
        }
    }
}

/// An Ethernet address, shown lowercase as `06:00:ac:1e:00:02`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The guest MAC for `ip`: locally administered (`06:00`), then the address.
    pub fn for_ip(ip: Ipv4Addr) -> Mac {
        let [a, b, c, d] = ip.octets();
        Mac([0x06, 0x00, a, b, c, d])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for Mac {
    type Err = String;

    /// Six hex octets separated by `:`, in either case.
    fn from_str(text: &str) -> Result<Mac, String> {
        let bad = || format!("`{text}` is not a MAC address (like 06:00:ac:1e:00:02)");
        let mut octets = [0u8; 6];
        let mut parts = text.split(':');
        for octet in &mut octets {
            let part = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        match parts.next() {
            Some(_) => Err(bad()),
            None => Ok(Mac(octets)),
        }
    }
}

/// A host network interface name banger may make or use: 1 to 15 bytes
/// (the kernel's limit), letters, digits, `-`, `_` and `.`, never `.`/`..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TapName(String);

impl TapName {
    /// The host tap for `ip`: `bg-` and the address in hex.
    pub fn for_ip(ip: Ipv4Addr) -> TapName {
        TapName(format!("bg-{:08x}", u32::from(ip)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TapName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TapName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for TapName {
    type Err = String;

    fn from_str(text: &str) -> Result<TapName, String> {
        let ok = (1..=15).contains(&text.len())
            && text != "."
            && text != ".."
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(TapName(text.to_string()))
        } else {
            Err(format!(
                "`{text}` is not an interface name (1-15 letters, digits, '-', '_' or '.')"
            ))
        }
    }
}

/// Serde as the text `Display` writes and `FromStr` reads.
macro_rules! serde_as_text {
    ($($ty:ty),+) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )+};
}
serde_as_text!(Mac, TapName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_derived_from_its_address() {
        let lease = Lease::for_ip(Ipv4Addr::new(172, 30, 0, 2));
        assert_eq!(lease.mac.to_string(), "06:00:ac:1e:00:02");
        assert_eq!(lease.tap.as_str(), "bg-ac1e0002");
        assert_eq!(
            serde_json::to_value(&lease).unwrap(),
            serde_json::json!({"ip": "172.30.0.2", "mac": "06:00:ac:1e:00:02", "tap": "bg-ac1e0002"})
        );
    }

    #[test]
    fn macs_and_tap_names_parse_strictly() {
        assert_eq!(
            "06:00:AC:1E:00:02".parse::<Mac>().unwrap().to_string(),
            "06:00:ac:1e:00:02"
        );
        for bad in [
            "",
            "06:00:ac:1e:00",
            "06:00:ac:1e:00:02:03",
            "6:00:ac:1e:00:02",
            "zz:00:ac:1e:00:02",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
        for bad in ["", "..", "a-very-long-name-x", "bg/1", "bg 1"] {
            assert!(bad.parse::<TapName>().is_err(), "{bad}");
        }
        assert!("bg-ac1e0002".parse::<TapName>().is_ok());
    }
}
