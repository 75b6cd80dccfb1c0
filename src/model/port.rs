//! Published ports: `[HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp]`, the one way
//! into a guest from outside the host. Parsing only; the daemon relays them.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The transport of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    pub fn from_name(name: &str) -> Option<Proto> {
        match name {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => None,
        }
    }
}

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortSpec {
    /// Where the host listens: 127.0.0.1 unless given.
    pub host_addr: Ipv4Addr,
    pub host_port: u16,
    pub guest_port: u16,
    pub proto: Proto,
}

impl FromStr for PortSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<PortSpec, String> {
        let usage = || {
            format!(
                "`{text}`: publish as [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|/udp], e.g. 8080:80, 0.0.0.0:2222:22 or 5353:53/udp"
            )
        };
        let (ports, proto) = match text.split_once('/') {
            Some((ports, proto)) => (ports, Proto::from_name(proto).ok_or_else(usage)?),
            None => (text, Proto::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (addr, host, guest) = match parts.as_slice() {
            [host, guest] => (Ipv4Addr::LOCALHOST, *host, *guest),
            [addr, host, guest] => (addr.parse().map_err(|_| usage())?, *host, *guest),
            _ => return Err(usage()),
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(usage);
        Ok(PortSpec {
            host_addr: addr,
            host_port: port(host)?,
            guest_port: port(guest)?,
            proto,
        })
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}/{}",
            self.host_addr,
            self.host_port,
            self.guest_port,
            self.proto.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_loopback_by_default() {
        let p: PortSpec = "8080:80".parse().unwrap();
        assert_eq!(p.to_string(), "127.0.0.1:8080:80/tcp");
        let p: PortSpec = "0.0.0.0:2222:22/tcp".parse().unwrap();
        assert_eq!(
            (p.host_addr, p.host_port, p.guest_port),
            (Ipv4Addr::UNSPECIFIED, 2222, 22)
        );
        assert_eq!(p.to_string().parse::<PortSpec>().unwrap(), p);
    }

    #[test]
    fn bad_specs_say_what_is_expected() {
        for bad in [
            "80", "a:80", "1:2:3:4", "0:80", "65536:80", "host:1:2", "1:2/sctp",
        ] {
            let err = bad.parse::<PortSpec>().unwrap_err();
            assert!(err.contains("HOSTPORT:GUESTPORT"), "{bad}: {err}");
        }
        let udp: PortSpec = "5353:53/udp".parse().unwrap();
        assert_eq!(udp.proto, Proto::Udp);
        assert_eq!(udp.to_string(), "127.0.0.1:5353:53/udp");
        assert_eq!(udp.to_string().parse::<PortSpec>().unwrap(), udp);
    }
}
