//! What [`Message::SetIdentity`](super::Message::SetIdentity) carries, and
//! the rules a value must keep. Both sides call [`Identity::validate`]: the
//! host before it sends, the agent when it decodes (so a bad identity never
//! reaches the code that changes the guest).

/// The most nameservers in a [`Network`] (glibc reads three).
pub const MAX_NAMESERVERS: usize = 3;
/// The largest private (and public) host key file accepted, in bytes.
pub const MAX_HOST_KEY: usize = 16 * 1024;

/// A new identity for a running guest; every part is optional and the
/// parts left out are not touched.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// A DNS label: 1 to 63 of `[a-z0-9-]`, neither first nor last `-`.
    /// Set with sethostname(2), written to `/etc/hostname` and as the
    /// `127.0.1.1` line of `/etc/hosts`.
    pub hostname: Option<Vec<u8>>,
    /// The address of the guest's one Ethernet interface.
    pub network: Option<Network>,
    /// `/etc/ssh/ssh_host_ed25519_key` and its `.pub`; a running sshd is
    /// told to reload (SIGHUP).
    pub host_key: Option<HostKey>,
    /// 32 lowercase hex digits, not all zero: `/etc/machine-id`.
    pub machine_id: Option<Vec<u8>>,
}

/// IPv4 configuration of the guest's one Ethernet interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Network {
    /// A unicast address, neither the subnet's first nor its last.
    pub address: [u8; 4],
    /// 1..=30.
    pub prefix: u8,
    /// The default route's next hop: a unicast address in the same subnet,
    /// not `address`.
    pub gateway: [u8; 4],
    /// A new MAC (unicast, not all zero); `None` keeps the current one.
    pub mac: Option<[u8; 6]>,
    /// At most [`MAX_NAMESERVERS`], written to `/etc/resolv.conf` in this
    /// order. Empty: `/etc/resolv.conf` is left as it is.
    pub nameservers: Vec<[u8; 4]>,
}

/// An SSH host key pair, ed25519, as `ssh-keygen -t ed25519 -N ''` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostKey {
    /// The OpenSSH private key file (`-----BEGIN OPENSSH PRIVATE KEY-----`),
    /// unencrypted, at most [`MAX_HOST_KEY`] bytes.
    pub private: Vec<u8>,
    /// The `.pub` line: `ssh-ed25519 <base64> [comment]`, the public half of
    /// `private`.
    pub public: Vec<u8>,
}

impl Identity {
    /// Whether every part keeps its rules; the error names the first that
    /// does not.
    pub fn validate(&self) -> Result<(), &'static str> {
        if let Some(h) = &self.hostname {
            validate_hostname(h)?;
        }
        if let Some(n) = &self.network {
            n.validate()?;
        }
        if let Some(k) = &self.host_key {
            k.validate()?;
        }
        if let Some(m) = &self.machine_id {
            validate_machine_id(m)?;
        }
        Ok(())
    }

    /// Whether nothing at all is to change.
    pub fn is_empty(&self) -> bool {
        self.hostname.is_none()
            && self.network.is_none()
            && self.host_key.is_none()
            && self.machine_id.is_none()
    }
}

/// A DNS label: 1-63 of `[a-z0-9-]`, not beginning or ending with `-`.
pub fn validate_hostname(h: &[u8]) -> Result<(), &'static str> {
    if h.is_empty() || h.len() > 63 {
        return Err("hostname: 1 to 63 characters");
    }
    if !h
        .iter()
        .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        return Err("hostname: only a-z, 0-9 and '-'");
    }
    if h[0] == b'-' || h[h.len() - 1] == b'-' {
        return Err("hostname: no '-' first or last");
    }
    Ok(())
}

/// 32 lowercase hex digits, not all zero.
pub fn validate_machine_id(m: &[u8]) -> Result<(), &'static str> {
    if m.len() != 32
        || !m
            .iter()
            .all(|&c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return Err("machine-id: 32 lowercase hex digits");
    }
    if m.iter().all(|&c| c == b'0') {
        return Err("machine-id: all zero");
    }
    Ok(())
}

/// The netmask of a prefix length (0..=32).
pub fn netmask(prefix: u8) -> [u8; 4] {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    bits.to_be_bytes()
}

/// Not 0/8, 127/8, multicast or above (224/3, which holds the broadcast).
fn unicast(a: [u8; 4]) -> bool {
    a[0] != 0 && a[0] != 127 && a[0] < 224
}

impl Network {
    pub fn netmask(&self) -> [u8; 4] {
        netmask(self.prefix)
    }

    pub fn validate(&self) -> Result<(), &'static str> {
        if !(1..=30).contains(&self.prefix) {
            return Err("network: prefix out of 1..=30");
        }
        let mask = u32::from_be_bytes(self.netmask());
        let addr = u32::from_be_bytes(self.address);
        let gw = u32::from_be_bytes(self.gateway);
        let host_ok = |a: u32| a & !mask != 0 && a & !mask != !mask;
        if !unicast(self.address) || !host_ok(addr) {
            return Err("network: address is not a host address of its subnet");
        }
        if !unicast(self.gateway) || !host_ok(gw) {
            return Err("network: gateway is not a host address");
        }
        if gw & mask != addr & mask {
            return Err("network: gateway outside the address's subnet");
        }
        if gw == addr {
            return Err("network: gateway is the address itself");
        }
        if let Some(mac) = self.mac
            && (mac[0] & 1 != 0 || mac == [0; 6])
        {
            return Err("network: MAC is multicast or zero");
        }
        if self.nameservers.len() > MAX_NAMESERVERS {
            return Err("network: more than 3 nameservers");
        }
        if self.nameservers.iter().any(|n| n[0] == 0 || n[0] >= 224) {
            return Err("network: a nameserver is not a unicast address");
        }
        Ok(())
    }
}

const PRIVATE_BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const PRIVATE_END: &str = "-----END OPENSSH PRIVATE KEY-----";
const ED25519: &[u8] = b"ssh-ed25519";

impl HostKey {
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.private.len() > MAX_HOST_KEY || self.public.len() > MAX_HOST_KEY {
            return Err("host key: over 16 KiB");
        }
        let from_private = private_key_public_blob(&self.private)?;
        let from_public = public_key_blob(&self.public)?;
        if from_private != from_public {
            return Err("host key: the public key is not the private key's");
        }
        Ok(())
    }
}

/// The public key blob inside an unencrypted OpenSSH ed25519 private key
/// file (PROTOCOL.key: "openssh-key-v1\0", cipher, kdf, kdf options, the
/// number of keys, then each public key).
fn private_key_public_blob(file: &[u8]) -> Result<Vec<u8>, &'static str> {
    const BAD: &str = "host key: not an OpenSSH private key";
    let text = std::str::from_utf8(file).map_err(|_| BAD)?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some(PRIVATE_BEGIN) {
        return Err(BAD);
    }
    let mut b64 = String::new();
    let mut ended = false;
    for l in lines.by_ref() {
        if l == PRIVATE_END {
            ended = true;
            break;
        }
        b64.push_str(l);
    }
    if !ended || lines.next().is_some() {
        return Err(BAD);
    }
    let blob = base64_decode(b64.as_bytes()).ok_or(BAD)?;
    let rest = blob.strip_prefix(b"openssh-key-v1\0").ok_or(BAD)?;
    let mut r = SshReader(rest);
    let cipher = r.string().ok_or(BAD)?;
    let kdf = r.string().ok_or(BAD)?;
    let _kdf_options = r.string().ok_or(BAD)?;
    if cipher != b"none" || kdf != b"none" {
        return Err("host key: the private key is encrypted");
    }
    if r.u32().ok_or(BAD)? != 1 {
        return Err("host key: not exactly one key in the file");
    }
    let public = r.string().ok_or(BAD)?;
    // The encrypted (here: plain) section must follow.
    r.string().ok_or(BAD)?;
    check_ed25519_blob(public)?;
    Ok(public.to_vec())
}

/// The blob of a `.pub` line `ssh-ed25519 <base64> [comment]`.
fn public_key_blob(line: &[u8]) -> Result<Vec<u8>, &'static str> {
    const BAD: &str = "host key: the public key is not one ssh-ed25519 line";
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.iter().any(|&c| c < b' ' && c != b'\t' || c == 0x7f) {
        return Err(BAD);
    }
    let mut fields = line
        .split(|&c| c == b' ' || c == b'\t')
        .filter(|f| !f.is_empty());
    if fields.next() != Some(ED25519) {
        return Err(BAD);
    }
    let blob = base64_decode(fields.next().ok_or(BAD)?).ok_or(BAD)?;
    check_ed25519_blob(&blob)?;
    Ok(blob)
}

/// string "ssh-ed25519", string of 32 bytes, nothing after.
fn check_ed25519_blob(blob: &[u8]) -> Result<(), &'static str> {
    let mut r = SshReader(blob);
    match (r.string(), r.string()) {
        (Some(ED25519), Some(k)) if k.len() == 32 && r.0.is_empty() => Ok(()),
        _ => Err("host key: not an ed25519 key"),
    }
}

/// SSH wire format: u32 big endian, strings as a u32 length then bytes.
struct SshReader<'a>(&'a [u8]);

impl<'a> SshReader<'a> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }
    fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        if self.0.len() < n {
            return None;
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(s)
    }
}

/// Standard base64 with padding; `None` on anything else. (The host
/// reads Docker's registry credentials with it too.)
pub fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let chunks = s.len() / 4;
    for (i, q) in s.chunks_exact(4).enumerate() {
        let pad = if i + 1 == chunks {
            q.iter().rev().take_while(|&&c| c == b'=').count()
        } else {
            0
        };
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = n << 6 | val(c)?;
        }
        n <<= 6 * pad as u32;
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn base64_encode(b: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    fn ssh_string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s);
    }

    /// A key pair in the formats ssh-keygen writes, made of `seed` (not a
    /// real key: the private half is filler, which is all validation reads).
    pub(crate) fn test_host_key(seed: u8, cipher: &str) -> HostKey {
        let mut public = Vec::new();
        ssh_string(&mut public, ED25519);
        ssh_string(&mut public, &[seed; 32]);
        let mut file = b"openssh-key-v1\0".to_vec();
        ssh_string(&mut file, cipher.as_bytes());
        ssh_string(
            &mut file,
            if cipher == "none" { b"none" } else { b"bcrypt" },
        );
        ssh_string(&mut file, b"");
        file.extend_from_slice(&1u32.to_be_bytes());
        ssh_string(&mut file, &public);
        ssh_string(&mut file, &[0x42; 136]);
        let b64 = base64_encode(&file);
        let mut private = format!("{PRIVATE_BEGIN}\n");
        for line in b64.as_bytes().chunks(70) {
            private.push_str(std::str::from_utf8(line).unwrap());
            private.push('\n');
        }
        private.push_str(PRIVATE_END);
        private.push('\n');
        HostKey {
            private: private.into_bytes(),
            public: format!("ssh-ed25519 {} root@test\n", base64_encode(&public)).into_bytes(),
        }
    }

    fn net() -> Network {
        Network {
            address: [10, 0, 2, 16],
            prefix: 24,
            gateway: [10, 0, 2, 2],
            mac: Some([0x06, 0, 0x0a, 0, 2, 0x10]),
            nameservers: vec![[10, 0, 2, 3], [1, 1, 1, 1]],
        }
    }

    #[test]
    fn base64_round_trips_and_refuses_junk() {
        for n in 0..70u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(base64_encode(&data).as_bytes()), Some(data));
        }
        for bad in ["abc", "ab=c", "a===", "ab!d", "=abc", "ab==ab=="] {
            assert_eq!(base64_decode(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn hostnames_are_dns_labels() {
        for ok in ["a", "vm-1", "0", &"x".repeat(63)] {
            assert_eq!(validate_hostname(ok.as_bytes()), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "a_b",
            "a b",
            "é",
            &"x".repeat(64),
        ] {
            assert!(validate_hostname(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn machine_ids_are_32_lowercase_hex() {
        assert!(validate_machine_id(b"0123456789abcdef0123456789abcdef").is_ok());
        for bad in [
            &b"0123456789ABCDEF0123456789abcdef"[..],
            b"0123456789abcdef0123456789abcde",
            b"0123456789abcdef0123456789abcdef0",
            b"0123456789abcdef0123456789abcdeg",
            b"00000000000000000000000000000000",
        ] {
            assert!(validate_machine_id(bad).is_err());
        }
    }

    #[test]
    fn networks_must_make_sense() {
        assert_eq!(net().validate(), Ok(()));
        assert_eq!(netmask(24), [255, 255, 255, 0]);
        assert_eq!(netmask(30), [255, 255, 255, 252]);
        assert_eq!(netmask(1), [128, 0, 0, 0]);
        let bad: Vec<fn(&mut Network)> = vec![
            |n| n.prefix = 0,
            |n| n.prefix = 31,
            |n| n.prefix = 32,
            |n| n.address = [10, 0, 2, 0],
            |n| n.address = [10, 0, 2, 255],
            |n| n.address = [127, 0, 0, 5],
            |n| n.address = [0, 0, 2, 5],
            |n| n.address = [224, 0, 2, 5],
            |n| n.gateway = [10, 0, 3, 2],
            |n| n.gateway = [10, 0, 2, 16],
            |n| n.gateway = [10, 0, 2, 255],
            |n| n.mac = Some([1, 2, 3, 4, 5, 6]),
            |n| n.mac = Some([0; 6]),
            |n| n.nameservers = vec![[1, 1, 1, 1]; 4],
            |n| n.nameservers = vec![[0, 0, 0, 0]],
            |n| n.nameservers = vec![[255, 255, 255, 255]],
        ];
        for (i, f) in bad.iter().enumerate() {
            let mut n = net();
            f(&mut n);
            assert!(n.validate().is_err(), "case {i}: {n:?}");
        }
        let mut n = net();
        n.prefix = 30;
        n.address = [192, 168, 7, 1];
        n.gateway = [192, 168, 7, 2];
        n.mac = None;
        n.nameservers = vec![];
        assert_eq!(n.validate(), Ok(()));
    }

    #[test]
    fn host_keys_must_be_a_matching_unencrypted_ed25519_pair() {
        let k = test_host_key(7, "none");
        assert_eq!(k.validate(), Ok(()));
        // Without the trailing newlines, with CRLF: still the same key.
        let trimmed = HostKey {
            private: k.private.trim_ascii_end().to_vec(),
            public: k.public.trim_ascii_end().to_vec(),
        };
        assert_eq!(trimmed.validate(), Ok(()));
        let crlf = HostKey {
            private: String::from_utf8(k.private.clone())
                .unwrap()
                .replace('\n', "\r\n")
                .into_bytes(),
            ..k.clone()
        };
        assert_eq!(crlf.validate(), Ok(()));
        let other = test_host_key(8, "none");
        let mismatched = HostKey {
            private: k.private.clone(),
            public: other.public.clone(),
        };
        assert!(mismatched.validate().is_err());
        assert!(test_host_key(7, "aes256-ctr").validate().is_err());
        let mut big = k.clone();
        big.private.resize(17 * 1024, b'\n');
        assert!(big.validate().is_err());
        let cases: Vec<fn(&mut HostKey)> = vec![
            |k| k.private.clear(),
            |k| k.public.clear(),
            |k| k.private = b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n".to_vec(),
            |k| k.public[0] = b'x',
            |k| k.public.insert(20, b'\n'),
            |k| {
                let l = k.private.len();
                k.private.truncate(l - 10)
            },
            |k| k.private.extend_from_slice(b"trailing junk\n"),
            |k| k.private[60] = b'!',
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut k = test_host_key(7, "none");
            f(&mut k);
            assert!(k.validate().is_err(), "case {i}");
        }
    }

    #[test]
    fn an_identity_is_valid_only_when_every_part_is() {
        let good = Identity {
            hostname: Some(b"vm1".to_vec()),
            network: Some(net()),
            host_key: Some(test_host_key(1, "none")),
            machine_id: Some(b"0123456789abcdef0123456789abcdef".to_vec()),
        };
        assert_eq!(good.validate(), Ok(()));
        assert!(Identity::default().is_empty());
        assert_eq!(Identity::default().validate(), Ok(()));
        let mut bad = good.clone();
        bad.hostname = Some(b"Bad_Name".to_vec());
        assert!(bad.validate().is_err());
        let mut bad = good;
        bad.machine_id = Some(b"x".to_vec());
        assert!(bad.validate().is_err());
    }
}
