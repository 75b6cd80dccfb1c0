//! A test host outside the VM network, for NAT, DNS forwarding and LAN
//! reachability tests.
#![allow(dead_code, clippy::disallowed_methods)]

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

/// A test host outside the VM network: its own namespace joined to the host
/// by a veth pair, serving TCP (replying with the peer's address) and DNS
/// (answering `upstream.test`), recording what reaches it.
pub struct Upstream {
    pub ns: String,
    pub veth: String,
    pub host_ip: String,
    pub ip: String,
    pub dns_names: Arc<Mutex<Vec<String>>>,
    pub peers: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    pub fn new(n: u32) -> Upstream {
        let (ns, veth) = (format!("bgup{n}"), format!("bgup{n}h"));
        let (host_ip, ip) = (format!("10.214.{n}.1"), format!("10.214.{n}.2"));
        let ip_cmd = |args: &[&str]| {
            super::run(std::process::Command::new("ip").args(args));
        };
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .output();
        ip_cmd(&["netns", "add", &ns]);
        ip_cmd(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip_cmd(&["addr", "add", &format!("{host_ip}/30"), "dev", &veth]);
        ip_cmd(&["link", "set", &veth, "up"]);
        ip_cmd(&["-n", &ns, "addr", "add", &format!("{ip}/30"), "dev", "eth0"]);
        ip_cmd(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip_cmd(&["-n", &ns, "link", "set", "lo", "up"]);
        let up = Upstream {
            ns,
            veth,
            host_ip,
            ip,
            dns_names: Arc::new(Mutex::new(Vec::new())),
            peers: Arc::new(Mutex::new(Vec::new())),
        };
        up.serve();
        up
    }

    fn serve(&self) {
        let (ns, ip) = (self.ns.clone(), self.ip.clone());
        let (peers, names) = (self.peers.clone(), self.dns_names.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            super::netns::enter_named_netns(&ns);
            let tcp = std::net::TcpListener::bind((ip.as_str(), 8080)).unwrap();
            let udp = std::net::UdpSocket::bind((ip.as_str(), 53)).unwrap();
            ready_tx.send(()).unwrap();
            let answer: Ipv4Addr = ip.parse().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while let Ok((len, peer)) = udp.recv_from(&mut buf) {
                    let Ok(query) = simple_dns::Packet::parse(&buf[..len]) else {
                        continue;
                    };
                    let name = query.questions[0].qname.to_string();
                    names.lock().unwrap().push(name.clone());
                    let mut reply = simple_dns::Packet::new_reply(query.id());
                    reply.questions.push(query.questions[0].clone());
                    if name == "upstream.test"
                        && query.questions[0].qtype == simple_dns::QTYPE::TYPE(simple_dns::TYPE::A)
                    {
                        reply.answers.push(simple_dns::ResourceRecord::new(
                            query.questions[0].qname.clone(),
                            simple_dns::CLASS::IN,
                            5,
                            simple_dns::rdata::RData::A(simple_dns::rdata::A {
                                address: answer.into(),
                            }),
                        ));
                    }
                    let _ = udp.send_to(&reply.build_bytes_vec().unwrap(), peer);
                }
            });
            for stream in tcp.incoming().flatten() {
                let peer = stream.peer_addr().unwrap().ip().to_string();
                peers.lock().unwrap().push(peer.clone());
                let _ =
                    std::io::Write::write_all(&mut &stream, format!("peer {peer}\n").as_bytes());
            }
        });
        ready_rx.recv().unwrap();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .output();
    }
}
