//! The `.vm` DNS server over real UDP, in a throwaway network namespace: it
//! listens on a bridge address, answers VM names itself and relays the rest
//! to a test upstream resolver that records every name it is asked.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger::dns::{self, build_query, parse_reply};
use banger::system::net;
use common::netns::test_in_fresh_netns;
use simple_dns::{Packet, RCODE, TYPE};
use tokio::net::UdpSocket;

/// A test upstream: answers every A query with 192.0.2.7 and records the names.
async fn upstream(addr: SocketAddr, seen: Arc<Mutex<Vec<String>>>) {
    let socket = UdpSocket::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let (len, peer) = socket.recv_from(&mut buf).await.unwrap();
            let query = Packet::parse(&buf[..len]).unwrap();
            let name = query.questions[0].qname.to_string();
            seen.lock().unwrap().push(name.clone());
            let mut reply = Packet::new_reply(query.id());
            reply.questions.push(query.questions[0].clone());
            reply.answers.push(simple_dns::ResourceRecord::new(
                query.questions[0].qname.clone(),
                simple_dns::CLASS::IN,
                60,
                simple_dns::rdata::RData::A(simple_dns::rdata::A {
                    address: u32::from(Ipv4Addr::new(192, 0, 2, 7)),
                }),
            ));
            socket
                .send_to(&reply.build_bytes_vec().unwrap(), peer)
                .await
                .unwrap();
        }
    });
}

async fn ask(server: SocketAddr, id: u16, name: &str) -> (RCODE, Vec<Ipv4Addr>) {
    let socket = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    socket
        .send_to(&build_query(id, name, TYPE::A), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 1500];
    let (len, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf))
        .await
        .expect("the DNS server answers")
        .unwrap();
    let (got_id, rcode, ips) = parse_reply(&buf[..len]).unwrap();
    assert_eq!(got_id, id);
    (rcode, ips)
}

#[test]
fn vm_names_are_answered_and_the_rest_forwarded_never_vm() {
    test_in_fresh_netns(async {
        net::ensure_bridge("bgdns0", "10.78.0.1/24").await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        upstream("127.0.0.1:53".parse().unwrap(), seen.clone()).await;

        let vms: Arc<Mutex<HashMap<String, Ipv4Addr>>> = Arc::new(Mutex::new(HashMap::new()));
        vms.lock()
            .unwrap()
            .insert("box".into(), Ipv4Addr::new(10, 78, 0, 2));
        let table = vms.clone();
        let lookup: dns::Lookup =
            Arc::new(move |name: &str| table.lock().unwrap().get(name).copied());
        let listen: SocketAddr = "10.78.0.1:53".parse().unwrap();
        let socket = UdpSocket::bind(listen).await.unwrap();
        tokio::spawn(dns::serve(
            socket,
            lookup,
            dns::open_access(),
            vec!["127.0.0.1:53".parse().unwrap()],
        ));

        assert_eq!(
            ask(listen, 1, "box.vm").await,
            (RCODE::NoError, vec![Ipv4Addr::new(10, 78, 0, 2)])
        );
        assert_eq!(ask(listen, 2, "ghost.vm").await, (RCODE::NameError, vec![]));
        // Deleted: gone at once (answers carry a 1 s TTL and nothing is cached here).
        vms.lock().unwrap().remove("box");
        assert_eq!(ask(listen, 3, "box.vm").await, (RCODE::NameError, vec![]));
        vms.lock()
            .unwrap()
            .insert("new".into(), Ipv4Addr::new(10, 78, 0, 9));
        assert_eq!(
            ask(listen, 4, "new.vm").await.1,
            vec![Ipv4Addr::new(10, 78, 0, 9)]
        );

        // Other names go upstream and come back with the client's id.
        assert_eq!(
            ask(listen, 5, "example.test").await,
            (RCODE::NoError, vec![Ipv4Addr::new(192, 0, 2, 7)])
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec!["example.test".to_string()],
            "only non-.vm names reach the upstream"
        );
    });
}

#[test]
fn an_upstream_that_does_not_answer_gives_servfail() {
    test_in_fresh_netns(async {
        let lookup: dns::Lookup = Arc::new(|_: &str| None);
        let socket = UdpSocket::bind("127.0.0.1:5353").await.unwrap();
        // Nothing listens on 127.0.0.1:9 in this fresh namespace.
        tokio::spawn(dns::serve(
            socket,
            lookup,
            dns::open_access(),
            vec!["127.0.0.1:9".parse().unwrap()],
        ));
        let (rcode, _) = ask("127.0.0.1:5353".parse().unwrap(), 9, "example.test").await;
        assert_eq!(rcode, RCODE::ServerFailure);
    });
}
