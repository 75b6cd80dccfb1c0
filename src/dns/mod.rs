//! The `.vm` DNS server: answers `<name>.vm` from the VMs that exist
//! (NXDOMAIN for any other `.vm` name, never forwarded) and relays every
//! other query to the upstream resolvers, for guests. UDP, one task per query.
//!
//! Who asks decides what it gets ([`Access`]): the host and VMs with NAT get
//! everything, a `--no-nat` VM only `.vm` names (the forwarder is no tunnel
//! out), anyone else nothing (the server is no reflector). At most
//! [`MAX_FORWARDS`] queries are relayed at once; a truncated UDP answer is
//! asked again over TCP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, Name, Packet, PacketFlag, QTYPE, RCODE, ResourceRecord, TYPE};
use tokio::net::UdpSocket;

/// How long an upstream has to answer before the next one is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The DNS thread's nice value: answers stay quick while creates fill the CPUs.
const DNS_NICE: i32 = -10;
/// Answers change as VMs come and go: caches should not keep them.
const TTL: u32 = 1;

/// How many queries are relayed upstream at once; more get SERVFAIL.
pub const MAX_FORWARDS: usize = 64;

/// Looks a VM name up: `Some(ip)` when a VM of that name exists.
pub type Lookup = Arc<dyn Fn(&str) -> Option<Ipv4Addr> + Send + Sync>;

/// What a client (by source address) may ask.
pub type Access = Arc<dyn Fn(IpAddr) -> Reach + Send + Sync>;

/// What a client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Nothing: its queries are dropped unanswered.
    Nothing,
    /// `.vm` names; other names are REFUSED.
    VmNames,
    /// `.vm` names, and other names relayed upstream.
    Everything,
}

/// Everyone gets everything (tests and benchmarks on loopback).
pub fn open_access() -> Access {
    Arc::new(|_| Reach::Everything)
}

/// What one query needs.
struct Server {
    lookup: Lookup,
    access: Access,
    upstreams: Vec<SocketAddr>,
    forwards: tokio::sync::Semaphore,
}

/// The server on a thread of its own, with its own runtime: `.vm` answers
/// stay fast while the daemon's workers are busy creating VMs.
pub struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Serves DNS on `socket` (non-blocking) until [`ServerThread::stop`].
    pub fn spawn(
        socket: std::net::UdpSocket,
        lookup: Lookup,
        access: Access,
        upstreams: Vec<SocketAddr>,
    ) -> std::io::Result<ServerThread> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("dns".into())
            .spawn(move || {
                // Ahead of the daemon's other work when the host is busy (a
                // thread's nice value is its own on Linux); only root may
                // raise it, anyone else serves at the normal priority.
                if let Err(e) = rustix::process::setpriority_process(None, DNS_NICE) {
                    tracing::debug!(error = %e, "DNS thread keeps the normal priority");
                }
                runtime.block_on(async move {
                    let socket = match UdpSocket::from_std(socket) {
                        Ok(socket) => socket,
                        Err(e) => return tracing::error!(error = %e, "cannot serve DNS"),
                    };
                    tokio::select! {
                        () = serve(socket, lookup, access, upstreams) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(ServerThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the server and waits for its socket to close.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves DNS on `socket` until the task is aborted.
pub async fn serve(socket: UdpSocket, lookup: Lookup, access: Access, upstreams: Vec<SocketAddr>) {
    let socket = Arc::new(socket);
    let server = Arc::new(Server {
        lookup,
        access,
        upstreams,
        forwards: tokio::sync::Semaphore::new(MAX_FORWARDS),
    });
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::warn!(error = %e, "DNS receive failed");
                continue;
            }
        };
        let reach = (server.access)(peer.ip());
        if reach == Reach::Nothing {
            continue;
        }
        let query = buf[..len].to_vec();
        let (socket, server) = (socket.clone(), server.clone());
        tokio::spawn(async move {
            if let Some(reply) = server.answer(&query, reach).await {
                let _ = socket.send_to(&reply, peer).await;
            }
        });
    }
}

impl Server {
    /// The reply to `query`, or None for something that is not a query.
    async fn answer(&self, query: &[u8], reach: Reach) -> Option<Vec<u8>> {
        let packet = Packet::parse(query).ok()?;
        if packet.has_flags(PacketFlag::RESPONSE) {
            return None;
        }
        let Some(question) = packet.questions.first() else {
            return reply(&packet, RCODE::FormatError, None);
        };
        let qname = question.qname.to_string().to_ascii_lowercase();
        let qname = qname.trim_end_matches('.');
        match vm_label(qname) {
            Some(label) => {
                let ip = (self.lookup)(label);
                let wants_a = matches!(question.qtype, QTYPE::TYPE(TYPE::A) | QTYPE::ANY);
                match ip {
                    None => reply(&packet, RCODE::NameError, None),
                    Some(ip) if wants_a => reply(&packet, RCODE::NoError, Some(ip)),
                    // The name exists, without records of that type.
                    Some(_) => reply(&packet, RCODE::NoError, None),
                }
            }
            None if reach != Reach::Everything => reply(&packet, RCODE::Refused, None),
            None => {
                let Ok(_slot) = self.forwards.try_acquire() else {
                    return reply(&packet, RCODE::ServerFailure, None);
                };
                match self.forward(query).await {
                    Some(answer) => Some(answer),
                    None => reply(&packet, RCODE::ServerFailure, None),
                }
            }
        }
    }

    /// Relays `query` to each upstream in turn; the first answer wins.
    async fn forward(&self, query: &[u8]) -> Option<Vec<u8>> {
        for upstream in &self.upstreams {
            let bind: SocketAddr = if upstream.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                "[::]:0".parse().ok()?
            };
            let Ok(socket) = UdpSocket::bind(bind).await else {
                continue;
            };
            if socket.send_to(query, upstream).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 4096];
            match tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv_from(&mut buf)).await {
                Ok(Ok((len, from))) if from == *upstream => {
                    let answer = &buf[..len];
                    if !truncated(answer) {
                        return Some(answer.to_vec());
                    }
                    // Too big for UDP: the whole answer over TCP, else the
                    // truncated one (the client may retry over TCP itself).
                    return Some(
                        forward_tcp(query, *upstream)
                            .await
                            .unwrap_or_else(|| answer.to_vec()),
                    );
                }
                _ => tracing::debug!(%upstream, "upstream did not answer"),
            }
        }
        None
    }
}

/// The TC flag of a DNS message: the answer did not fit.
fn truncated(message: &[u8]) -> bool {
    message.get(2).is_some_and(|flags| flags & 0x02 != 0)
}

/// One query over TCP (two-byte length prefix each way).
async fn forward_tcp(query: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(upstream).await.ok()?;
        let len = u16::try_from(query.len()).ok()?;
        stream.write_all(&len.to_be_bytes()).await.ok()?;
        stream.write_all(query).await.ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut answer).await.ok()?;
        Some(answer)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .ok()?
}

/// `box` for `box.vm`; None for names outside `.vm`. Deeper names under a
/// VM (`a.box.vm`) and `vm` itself give an empty label: they never exist.
fn vm_label(qname: &str) -> Option<&str> {
    if qname == "vm" {
        return Some("");
    }
    let label = qname.strip_suffix(".vm")?;
    Some(if label.contains('.') { "" } else { label })
}

/// A reply to `query` with `rcode` and, if given, one A record for its question.
fn reply(query: &Packet<'_>, rcode: RCODE, ip: Option<Ipv4Addr>) -> Option<Vec<u8>> {
    let mut reply = Packet::new_reply(query.id());
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    if query.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE);
    }
    *reply.rcode_mut() = rcode;
    if let Some(question) = query.questions.first() {
        reply.questions.push(question.clone());
        if let Some(ip) = ip {
            let name: Name<'_> = question.qname.clone();
            let record =
                ResourceRecord::new(name, CLASS::IN, TTL, RData::A(A { address: ip.into() }));
            reply.answers.push(record);
        }
    }
    reply.build_bytes_vec().ok()
}

/// The resolvers in `resolv.conf` text, skipping `skip` (our own address:
/// never forward to ourselves).
pub fn upstreams_from_resolv_conf(text: &str, skip: Ipv4Addr) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<std::net::IpAddr>().ok())
        .filter(|ip| *ip != std::net::IpAddr::V4(skip))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Builds a query packet, for tests and benchmarks.
pub fn build_query(id: u16, name: &str, qtype: TYPE) -> Vec<u8> {
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    let name = Name::new_unchecked(name);
    packet.questions.push(simple_dns::Question::new(
        name,
        QTYPE::TYPE(qtype),
        simple_dns::QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet
        .build_bytes_vec()
        .expect("a query with one question builds")
}

/// The rcode and A records of a reply, for tests and benchmarks.
pub fn parse_reply(bytes: &[u8]) -> Option<(u16, RCODE, Vec<Ipv4Addr>)> {
    let packet = Packet::parse(bytes).ok()?;
    let ips = packet
        .answers
        .iter()
        .filter_map(|rr| match &rr.rdata {
            RData::A(a) => Some(Ipv4Addr::from(a.address)),
            _ => None,
        })
        .collect();
    Some((packet.id(), packet.rcode(), ips))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_with_vm_names_only_is_refused_the_rest() {
        // An upstream that would answer is never asked.
        let s = server(vec!["127.0.0.1:9".parse().unwrap()]);
        let refused = s
            .answer(&build_query(3, "example.test", TYPE::A), Reach::VmNames)
            .await
            .unwrap();
        assert_eq!(parse_reply(&refused).unwrap().1, RCODE::Refused);
        let vm = s
            .answer(&build_query(4, "box.vm", TYPE::A), Reach::VmNames)
            .await
            .unwrap();
        assert_eq!(parse_reply(&vm).unwrap().2, [Ipv4Addr::new(172, 30, 0, 2)]);
    }

    #[test]
    fn the_truncation_flag_is_read() {
        let mut answer = build_query(1, "big.test", TYPE::A);
        assert!(!truncated(&answer));
        answer[2] |= 0x02;
        assert!(truncated(&answer));
    }

    fn server(upstreams: Vec<SocketAddr>) -> Server {
        Server {
            lookup: Arc::new(|name| (name == "box").then_some(Ipv4Addr::new(172, 30, 0, 2))),
            access: open_access(),
            upstreams,
            forwards: tokio::sync::Semaphore::new(MAX_FORWARDS),
        }
    }

    #[tokio::test]
    async fn vm_names_answer_from_the_lookup() {
        let s = server(vec![]);
        let got = s
            .answer(&build_query(7, "box.vm", TYPE::A), Reach::Everything)
            .await
            .unwrap();
        assert_eq!(
            parse_reply(&got),
            Some((7, RCODE::NoError, vec![Ipv4Addr::new(172, 30, 0, 2)]))
        );
        let got = s
            .answer(&build_query(8, "BOX.VM.", TYPE::A), Reach::Everything)
            .await
            .unwrap();
        assert_eq!(
            parse_reply(&got).unwrap().2,
            vec![Ipv4Addr::new(172, 30, 0, 2)]
        );
        for missing in ["other.vm", "a.box.vm", "vm"] {
            let got = s
                .answer(&build_query(9, missing, TYPE::A), Reach::Everything)
                .await
                .unwrap();
            assert_eq!(parse_reply(&got).unwrap().1, RCODE::NameError, "{missing}");
        }
        let got = s
            .answer(&build_query(10, "box.vm", TYPE::AAAA), Reach::Everything)
            .await
            .unwrap();
        assert_eq!(parse_reply(&got), Some((10, RCODE::NoError, vec![])));
    }

    #[tokio::test]
    async fn other_names_fail_without_upstreams() {
        let got = server(vec![])
            .answer(&build_query(1, "example.org", TYPE::A), Reach::Everything)
            .await
            .unwrap();
        assert_eq!(parse_reply(&got).unwrap().1, RCODE::ServerFailure);
    }

    #[test]
    fn resolv_conf_upstreams_skip_ourselves() {
        let text = "# c\nnameserver 10.0.0.53\nnameserver 172.30.0.1\nsearch x\nnameserver ::1\n";
        let got = upstreams_from_resolv_conf(text, Ipv4Addr::new(172, 30, 0, 1));
        assert_eq!(
            got,
            vec!["10.0.0.53:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }
}
