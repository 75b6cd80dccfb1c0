//! Real bridge, taps and nftables, each test in a throwaway network
//! namespace of its own (as root; skipped otherwise).
#![allow(clippy::disallowed_methods)]

mod common;

use banger::net::Subnet;
use banger::net::nat::{self, NatPlan};
use banger::system::exec::Cmd;
use banger::system::{net, nft};
use common::netns::test_in_fresh_netns;

async fn ruleset() -> String {
    Cmd::new("nft")
        .args(["list", "ruleset"])
        .run()
        .await
        .unwrap()
        .stdout
}

#[test]
fn bridge_taps_and_nat_table_come_and_go_leaving_others_alone() {
    test_in_fresh_netns(async {
        // Someone else's table, which banger must never touch.
        nft::apply("table inet theirs {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t}\n}\n")
            .await
            .unwrap();
        let theirs = Cmd::new("nft")
            .args(["list", "table", "inet", "theirs"])
            .run()
            .await
            .unwrap()
            .stdout;

        net::ensure_bridge("bgns0", "10.77.0.1/24").await.unwrap();
        net::ensure_bridge("bgns0", "10.77.0.1/24").await.unwrap(); // idempotent
        assert!(net::link_exists("bgns0"));
        assert_eq!(net::addresses("bgns0").await.unwrap(), vec!["10.77.0.1/24"]);
        net::add_tap("bg-0a4d0002", 0, "bgns0").await.unwrap();
        net::add_tap("bg-0a4d0003", 0, "bgns0").await.unwrap();
        let link = Cmd::new("ip")
            .args(["-o", "link", "show", "bg-0a4d0002"])
            .run()
            .await
            .unwrap()
            .stdout;
        assert!(link.contains("master bgns0"), "{link}");

        let plan = NatPlan {
            table: "bangerns".into(),
            bridge: "bgns0".into(),
            nat_sources: vec!["10.77.0.3".parse().unwrap(), "10.77.0.2".parse().unwrap()],
            guests: vec![],
        };
        net::enable_ip_forward().await.unwrap();
        nft::apply(&plan.script()).await.unwrap();
        let first = ruleset().await;
        assert!(first.contains("table ip bangerns"), "{first}");
        assert!(first.contains("masquerade"), "{first}");
        // Re-applying (as ten daemon restarts would) changes nothing at all.
        for _ in 0..10 {
            nft::apply(&plan.script()).await.unwrap();
        }
        assert_eq!(ruleset().await, first, "re-apply is byte-identical");

        // A VM stops: the table follows.
        let one = NatPlan {
            nat_sources: vec!["10.77.0.2".parse().unwrap()],
            ..plan.clone()
        };
        nft::apply(&one.script()).await.unwrap();
        let rules = nft::list_table(nat::FAMILY, "bangerns").await.unwrap();
        assert!(
            rules.contains("10.77.0.2") && !rules.contains("10.77.0.3"),
            "{rules}"
        );

        // The last VM goes: the table goes, theirs stays exactly as it was.
        nft::delete_table(nat::FAMILY, "bangerns").await.unwrap();
        nft::delete_table(nat::FAMILY, "bangerns").await.unwrap(); // absent is fine
        nft::delete_table(nat::GUARD_FAMILY, "bangerns")
            .await
            .unwrap();
        assert!(!nft::table_exists(nat::FAMILY, "bangerns").await.unwrap());
        let after = Cmd::new("nft")
            .args(["list", "table", "inet", "theirs"])
            .run()
            .await
            .unwrap()
            .stdout;
        assert_eq!(after, theirs);

        net::delete_link("bg-0a4d0002").await.unwrap();
        net::delete_link("bg-0a4d0002").await.unwrap(); // already gone is fine
        assert!(!net::link_exists("bg-0a4d0002"));
        assert!(net::link_exists("bg-0a4d0003"));
    });
}

#[test]
fn a_subnet_that_clashes_with_a_host_route_is_found() {
    test_in_fresh_netns(async {
        Cmd::new("ip")
            .args(["link", "add", "clash0", "type", "bridge"])
            .run()
            .await
            .unwrap();
        Cmd::new("ip")
            .args(["addr", "add", "10.50.0.1/16", "dev", "clash0"])
            .run()
            .await
            .unwrap();
        Cmd::new("ip")
            .args(["link", "set", "clash0", "up"])
            .run()
            .await
            .unwrap();
        let routes = net::routes().unwrap();
        let clash: Subnet = "10.50.3.1/24".parse().unwrap();
        let route = nat::clashing_route(&routes, &clash, "banger0").expect("clash found");
        assert_eq!(route.iface, "clash0");
        let free: Subnet = "10.51.0.1/24".parse().unwrap();
        assert_eq!(nat::clashing_route(&routes, &free, "banger0"), None);
    });
}
