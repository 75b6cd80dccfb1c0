//! End to end on real guests: the real daemon and CLI, the runtime bundle's
//! kernel and rootfs, real bridge, taps and SSH. The VMM is what `auto`
//! picks (Firecracker on hosts with hardware KVM and a firecracker binary;
//! elsewhere QEMU, with software emulation where KVM cannot run the guest),
//! or what BANGER_E2E_VMM says. Needs root and a runtime bundle
//! (`make runtime-debian`); skips, saying why, without them.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::upstream::Upstream;
use common::vms::*;
use common::*;

#[test]
fn lifecycle_on_a_real_guest() {
    let Some(t) = VmSandbox::new("") else { return };
    let _turn = booting();
    let sb = &t.sb;

    let out = ok(sb.banger(&["vm", "create", "--name", "e2e", "--memory", "512"]));
    assert!(
        out.contains("e2e created") && out.contains("SSH ready"),
        "{out}"
    );
    let vm = t.json(&["vm", "show", "e2e"]);
    assert_eq!(vm["state"], "running");
    let ip = vm["ip"].as_str().unwrap().to_string();
    let tap = vm["tap"].as_str().unwrap().to_string();
    let pid = vm["pid"].as_i64().unwrap() as i32;
    assert!(link_exists(&tap));

    // SSH: a command's output and exit code come back; the host key is checked.
    let uname = ok(sb.banger(&["vm", "ssh", "e2e", "--", "uname", "-a"]));
    assert!(uname.starts_with("Linux e2e "), "{uname}");
    let exit = sb.banger(&["vm", "ssh", "e2e", "--", "exit", "7"]);
    assert_eq!(exit.status.code(), Some(7));
    let hostname = ok(sb.banger(&["vm", "ssh", "e2e", "--", "cat", "/etc/hostname"]));
    assert_eq!(hostname.trim(), "e2e");
    ok(sb.banger(&[
        "vm",
        "ssh",
        "e2e",
        "--",
        "echo kept > /work/marker && echo root > /root/marker && sync",
    ]));
    let printed = ok(sb.banger(&["vm", "ssh", "e2e", "--print"]));
    assert!(
        printed.contains("StrictHostKeyChecking=yes") && printed.contains(&format!("root@{ip}")),
        "{printed}"
    );
    for isolation in ["-F /dev/null", "ForwardAgent=no", "ForwardX11=no"] {
        assert!(printed.contains(isolation), "{isolation}: {printed}");
    }
    // The user's agent stays home, whatever their ssh config says.
    let ssh_dir = sb.path("home/.ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    std::fs::write(
        ssh_dir.join("config"),
        "Host *
  ForwardAgent yes
  ForwardX11 yes
",
    )
    .unwrap();
    let agent = std::process::Command::new("ssh-agent")
        .arg("-s")
        .output()
        .unwrap();
    let agent_env = stdout(&agent);
    let sock = agent_env
        .split(';')
        .find_map(|p| p.trim().strip_prefix("SSH_AUTH_SOCK="))
        .unwrap()
        .to_string();
    let agent_pid: i32 = agent_env
        .split(';')
        .find_map(|p| p.trim().strip_prefix("SSH_AGENT_PID="))
        .unwrap()
        .parse()
        .unwrap();
    let ask = |extra: &[&str]| {
        let mut args = vec!["vm", "ssh", "e2e"];
        args.extend_from_slice(extra);
        args.extend(["--", "echo agent=${SSH_AUTH_SOCK:-none}"]);
        let out = sb
            .command("banger")
            .env("SSH_AUTH_SOCK", &sock)
            .args(&args)
            .output()
            .unwrap();
        ok(out)
    };
    assert_eq!(ask(&[]).trim(), "agent=none");
    assert_ne!(
        ask(&["--forward-agent"]).trim(),
        "agent=none",
        "--forward-agent asks for it"
    );
    signal(agent_pid, rustix::process::Signal::TERM);

    let stats = t.json(&["vm", "stats", "e2e"]);
    assert_eq!(stats["pid"], pid);
    assert!(stats["rss_bytes"].as_u64().unwrap() > 10 << 20, "{stats}");

    // Stop keeps the disks and the address; start brings the same machine back.
    ok(sb.banger(&["vm", "stop", "e2e"]));
    let vm = t.json(&["vm", "show", "e2e"]);
    assert_eq!(vm["state"], "stopped");
    assert!(!link_exists(&tap), "tap removed on stop");
    assert!(wait_until(Duration::from_secs(5), || !process_alive(pid)));
    let out = sb.banger(&["vm", "ssh", "e2e", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("vm start e2e"), "{}", stderr(&out));

    ok(sb.banger(&["vm", "start", "e2e"]));
    let vm = t.json(&["vm", "show", "e2e"]);
    assert_eq!(vm["ip"], ip.as_str());
    assert_eq!(
        ok(sb.banger(&["vm", "ssh", "e2e", "--", "cat", "/work/marker"])).trim(),
        "kept"
    );
    assert_eq!(
        ok(sb.banger(&["vm", "ssh", "e2e", "--", "cat", "/root/marker"])).trim(),
        "root"
    );

    // The daemon dies; the VM does not, and the next daemon adopts it.
    let pid = vm["pid"].as_i64().unwrap() as i32;
    let daemon = sb.daemon_pid().unwrap();
    signal(daemon, rustix::process::Signal::KILL);
    assert!(wait_until(Duration::from_secs(5), || !process_alive(
        daemon
    )));
    assert!(process_alive(pid), "the VMM survives its daemon");
    let vm = t.json(&["vm", "show", "e2e"]);
    assert_eq!(vm["state"], "running");
    assert_eq!(vm["pid"], pid);
    ok(sb.banger(&["vm", "ssh", "e2e", "--", "true"]));

    // Daemon and VMM both die: the next daemon marks the VM stopped and
    // removes its tap; a start works again.
    let daemon = sb.daemon_pid().unwrap();
    signal(daemon, rustix::process::Signal::KILL);
    signal(pid, rustix::process::Signal::KILL);
    assert!(wait_until(Duration::from_secs(5), || !process_alive(
        daemon
    ) && !process_alive(
        pid
    )));
    let vm = t.json(&["vm", "show", "e2e"]);
    assert_eq!(vm["state"], "stopped");
    assert!(!link_exists(&tap));

    // Delete leaves nothing: no process, tap, files or lease.
    let dir = PathBuf::from(vm["dir"].as_str().unwrap());
    assert!(dir.exists());
    ok(sb.banger(&["vm", "delete", "e2e"]));
    assert!(!dir.exists());
    assert!(!link_exists(&tap));
    assert_eq!(ok(sb.banger(&["vm", "list", "--json"])).trim(), "[]");
    let out = sb.banger(&["vm", "show", "e2e"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no VM named `e2e`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn failed_boot_rolls_everything_back() {
    // A guest that cannot answer in 1 s (neither its agent nor SSH): the
    // create fails with the console's tail and leaves no VM, disk, tap or
    // process behind.
    let Some(t) = VmSandbox::new("ssh_timeout_secs = 1") else {
        return;
    };
    let sb = &t.sb;
    let out = sb.banger(&["vm", "create", "--name", "doomed", "--memory", "256"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("did not answer SSH in time") || err.contains("did not answer in time"),
        "{err}"
    );
    assert!(err.contains("console ends with"), "{err}");
    assert_eq!(ok(sb.banger(&["vm", "list", "--json"])).trim(), "[]");
    assert!(!sb.state_dir().join("vms/doomed").exists());
    let brif = Path::new("/sys/class/net").join(&t.bridge).join("brif");
    let attached = std::fs::read_dir(&brif).map(|d| d.count()).unwrap_or(0);
    assert_eq!(attached, 0, "no tap left on {}", t.bridge);
    let tables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout).into_owned();
    assert!(
        !tables.contains(&format!("table ip {}\n", sb.nat_table)),
        "no NAT table left: {tables}"
    );
    // The VMM is gone when the create returns; its log relay follows it a
    // moment later, when it has read the last of the VMM's pipes.
    let left = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.unwrap().path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains("doomed"))
            .collect::<Vec<_>>()
    };
    wait_until(Duration::from_secs(5), || left().is_empty());
    assert_eq!(left(), Vec::<String>::new(), "no VMM or relay left running");
}

#[test]
fn bad_requests_leave_nothing_behind() {
    let Some(t) = VmSandbox::new("") else { return };
    let sb = &t.sb;
    let cases: &[(&[&str], &str)] = &[
        (
            &["vm", "create", "--name", "Bad_Name"],
            "may hold only lowercase letters",
        ),
        (
            &["vm", "create", "--name", "x", "--image", "nope"],
            "no image named `nope`",
        ),
        // Too small for the upper disk of a layered root, or smaller than
        // the image a clone copies.
        (
            &["vm", "create", "--name", "x", "--disk", "1M"],
            "--disk 1 MiB is",
        ),
        (
            &["vm", "create", "--name", "x", "--memory", "16"],
            "too small",
        ),
        (
            &["vm", "create", "--name", "x", "--disk", "lots"],
            "is not a size",
        ),
        (&["vm", "start", "ghost"], "no VM named `ghost`"),
    ];
    for (args, expected) in cases {
        let out = sb.banger(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(ok(sb.banger(&["vm", "list", "--json"])).trim(), "[]");
    let vms_dir = sb.state_dir().join("vms");
    let leftovers = std::fs::read_dir(&vms_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "nothing under {}", vms_dir.display());

    // A duplicate name is refused and the first VM is untouched.
    ok(sb.banger(&["vm", "create", "--name", "one", "--no-start"]));
    let out = sb.banger(&["vm", "create", "--name", "one", "--no-start"]);
    assert!(
        stderr(&out).contains("a VM named `one` already exists"),
        "{}",
        stderr(&out)
    );
    assert_eq!(t.json(&["vm", "show", "one"])["state"], "created");
}

#[test]
fn concurrent_creates_get_unique_addresses() {
    let Some(t) = VmSandbox::new("") else { return };
    let sb = &t.sb;
    ok(sb.banger(&["daemon", "start"]));
    let outputs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                s.spawn(move || {
                    sb.banger(&["vm", "create", "--name", &format!("c{i}"), "--no-start"])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in outputs {
        ok(out);
    }
    let vms = t.json(&["vm", "list"]);
    let vms = vms.as_array().unwrap();
    assert_eq!(vms.len(), 4);
    let mut seen = std::collections::HashSet::new();
    for vm in vms {
        let details = t.json(&["vm", "show", vm["name"].as_str().unwrap()]);
        for key in ["ip", "mac", "tap"] {
            assert!(
                seen.insert(details[key].as_str().unwrap().to_string()),
                "duplicate {key}: {details}"
            );
        }
        // Each got its own host key, written into its own disk.
        assert!(
            details["host_key"]
                .as_str()
                .unwrap()
                .starts_with("ssh-ed25519 ")
        );
    }
}

/// Sends COUNT ARP replies on IFACE from Ethernet source ETHER_SRC, with
/// SENDER_MAC and SENDER_IP in the ARP payload (raw AF_PACKET socket).
const ARP_SPOOF: &str = r#"use strict; use Socket;
my ($iface, $ether_src, $sender_mac, $sender_ip, $count) = @ARGV;
my $mac = sub { pack "H12", join "", split /:/, shift };
my $bcast = $mac->("ff:ff:ff:ff:ff:ff");
socket(my $s, 17, 3, 0) or die "socket: $!";
open my $f, "<", "/sys/class/net/$iface/ifindex" or die "ifindex: $!";
my $ifindex = <$f> + 0;
my $frame = $bcast . $mac->($ether_src) . pack("n", 0x0806)
  . pack("nnCCn", 1, 0x0800, 6, 4, 2) . $mac->($sender_mac) . inet_aton($sender_ip)
  . $bcast . inet_aton($sender_ip);
my $to = pack("S n i S C C a8", 17, 0x0806, $ifindex, 1, 0, 6, $bcast);
for (1 .. $count) { send($s, $frame, 0, $to) or die "send: $!"; select(undef, undef, undef, 0.02) }
print "sent $count\n";
"#;

#[test]
fn guests_resolve_each_other_and_reach_out_through_nat() {
    if !rustix::process::geteuid().is_root() || !runtime_dir().join("bundle.json").is_file() {
        skip("needs root and a runtime bundle");
        return;
    }
    let n = std::process::id() % 200 + 20;
    let upstream = Upstream::new(n);
    let Some(t) = VmSandbox::new("") else { return };
    let _turn = booting();
    // Point the daemon's forwarding at the test upstream (never the host's resolvers).
    let config = std::fs::read_to_string(t.sb.config_file()).unwrap()
        + &format!("dns_upstreams = [\"{}:53\"]\n", upstream.ip);
    std::fs::write(t.sb.config_file(), config).unwrap();
    let sb = &t.sb;

    ok(sb.banger(&["daemon", "start"]));
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            sb.banger(&[
                "vm", "create", "--name", "a", "--memory", "384", "--vcpus", "1",
            ])
        });
        let b = s.spawn(|| {
            sb.banger(&[
                "vm", "create", "--name", "b", "--memory", "384", "--vcpus", "1", "--no-nat",
            ])
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    ok(a);
    ok(b);
    let table = sb.nat_table.clone();
    let ruleset = String::from_utf8_lossy(
        &std::process::Command::new("nft")
            .args(["list", "table", "ip", &table])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    let a_ip = t.json(&["vm", "show", "a"])["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let b_ip = t.json(&["vm", "show", "b"])["ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        ruleset.contains(&a_ip) && !ruleset.contains(&b_ip),
        "only NAT VMs masquerade:\n{ruleset}"
    );

    // Each VMM runs as a uid of its own, which owns its VM's writable disks
    // and nothing of the other VM's: it can neither read b's disks nor
    // signal b's VMM.
    let (a, b) = (t.json(&["vm", "show", "a"]), t.json(&["vm", "show", "b"]));
    let uid_of = |vm: &serde_json::Value| vm["vmm_uid"].as_u64().unwrap() as u32;
    let (a_uid, b_uid) = (uid_of(&a), uid_of(&b));
    let subnet_base: u32 = u32::from(
        sb.subnet
            .split('/')
            .next()
            .unwrap()
            .parse::<Ipv4Addr>()
            .unwrap(),
    ) & !0xff;
    assert_eq!(
        a_uid,
        0x7000_0000 + (u32::from(a_ip.parse::<Ipv4Addr>().unwrap()) - subnet_base)
    );
    assert_ne!(a_uid, b_uid);
    let owner = |path: &str| {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).unwrap();
        (meta.uid(), meta.mode() & 0o777)
    };
    let disk = |vm: &serde_json::Value, role: &str| {
        vm["disks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["role"] == role)
            .unwrap()["path"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(owner(&disk(&a, "upper")), (a_uid, 0o600));
    assert_eq!(owner(&disk(&a, "work")), (a_uid, 0o600));
    assert_eq!(
        owner(&disk(&a, "image")),
        (0, 0o644),
        "the shared image stays root's"
    );
    assert_eq!(owner(a["dir"].as_str().unwrap()), (0, 0o711));
    let as_a = |args: &[&str]| {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(args[0])
            .args(&args[1..])
            .uid(a_uid)
            .gid(a_uid)
            .output()
            .unwrap()
    };
    let b_upper = disk(&b, "upper");
    assert!(
        !as_a(&["head", "-c1", &b_upper]).status.success(),
        "a's VMM user read b's disk"
    );
    let b_pid = b["pid"].as_u64().unwrap().to_string();
    assert!(
        !as_a(&["kill", "-0", &b_pid]).status.success(),
        "a's VMM user may signal b's VMM"
    );

    // From the host: the daemon's DNS on the bridge answers VM names.
    let gateway = sb.subnet.split('/').next().unwrap().to_string();
    let ips = resolve_a(gateway.parse().unwrap(), "b.vm");
    assert_eq!(ips, vec![b_ip.parse::<Ipv4Addr>().unwrap()]);

    // Guest to guest by name.
    let got = ok(sb.banger(&["vm", "ssh", "a", "--", "getent", "hosts", "b.vm"]));
    assert!(got.starts_with(&b_ip), "{got}");
    let banner = ok(sb.banger(&[
        "vm",
        "ssh",
        "a",
        "--",
        "timeout 10 bash -c 'exec 3<>/dev/tcp/b.vm/22; head -c 4 <&3'",
    ]));
    assert_eq!(banner, "SSH-");

    // ARP spoofing: a sends ARP replies whose Ethernet source is b's MAC
    // (the ARP payload its own MAC and IP, which the payload check alone
    // let pass). The bridge must never learn b's MAC on a's tap, and the
    // host still reaches b.
    let (a_mac, b_mac) = (
        a["mac"].as_str().unwrap().to_ascii_lowercase(),
        b["mac"].as_str().unwrap().to_ascii_lowercase(),
    );
    let a_tap = a["tap"].as_str().unwrap().to_string();
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), ARP_SPOOF).unwrap();
    ok(sb.banger(&[
        "vm",
        "cp",
        script.path().to_str().unwrap(),
        "a:/root/arp-spoof.pl",
    ]));
    let fdb_of_b = || {
        let out = std::process::Command::new("bridge")
            .args(["fdb", "show", "br", &t.bridge])
            .output()
            .unwrap();
        stdout(&out)
            .lines()
            .filter(|l| l.starts_with(&b_mac))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    for _ in 0..3 {
        let sent = ok(sb.banger(&[
            "vm",
            "ssh",
            "a",
            "--",
            "perl",
            "/root/arp-spoof.pl",
            "eth0",
            &b_mac,
            &a_mac,
            &a_ip,
            "20",
        ]));
        assert_eq!(sent.trim(), "sent 20");
        let fdb = fdb_of_b();
        assert!(
            !fdb.iter().any(|l| l.contains(&format!("dev {a_tap} "))),
            "the bridge learned b's MAC on a's tap: {fdb:?}"
        );
    }
    let mut to_b = std::net::TcpStream::connect_timeout(
        &format!("{b_ip}:22").parse().unwrap(),
        Duration::from_secs(5),
    )
    .expect("the host lost b");
    to_b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut first = [0u8; 4];
    std::io::Read::read_exact(&mut to_b, &mut first).expect("the host lost b");
    assert_eq!(&first, b"SSH-");

    // Out through NAT, by a name the test upstream resolves: it sees the
    // host's address, not the guest's.
    let reply = ok(sb.banger(&[
        "vm",
        "ssh",
        "a",
        "--",
        "timeout 10 bash -c 'exec 3<>/dev/tcp/upstream.test/8080; cat <&3'",
    ]));
    assert_eq!(reply.trim(), format!("peer {}", upstream.host_ip));
    assert_eq!(
        upstream.peers.lock().unwrap().clone(),
        vec![upstream.host_ip.clone()]
    );

    // A host-only VM does not get out.
    let out = sb.banger(&[
        "vm",
        "ssh",
        "b",
        "--",
        &format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{}/8080'", upstream.ip),
    ]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a --no-nat VM reached the outside"
    );

    // From the LAN (the upstream's namespace, routed through the host), a
    // guest cannot be reached: no new connection into the bridge.
    let subnet = sb.subnet.clone();
    let in_ns = |script: &str| {
        std::process::Command::new("ip")
            .args(["netns", "exec", &upstream.ns, "bash", "-c", script])
            .output()
            .unwrap()
    };
    let route = in_ns(&format!(
        "ip route replace {} via {}",
        subnet.replace(".1/", ".0/"),
        upstream.host_ip
    ));
    assert!(route.status.success(), "{}", stderr(&route));
    let lan = in_ns(&format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{a_ip}/22'"));
    assert!(!lan.status.success(), "a LAN host reached a guest's sshd");

    // Published ports are the way in, on the address they were published on.
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (local, lan_port) = (free_port(), free_port());
    ok(sb.banger(&["vm", "publish", "a", &format!("{local}:22")]));
    ok(sb.banger(&[
        "vm",
        "publish",
        "a",
        &format!("{}:{lan_port}:22", upstream.host_ip),
    ]));
    let shown = t.json(&["vm", "show", "a"])["published"].clone();
    assert_eq!(
        shown,
        serde_json::json!([
            format!("{}:{lan_port}:22/tcp", upstream.host_ip),
            format!("127.0.0.1:{local}:22/tcp")
        ])
    );
    let banner = |addr: String| {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut first = [0u8; 4];
        std::io::Read::read_exact(&mut stream, &mut first).unwrap();
        String::from_utf8_lossy(&first).into_owned()
    };
    assert_eq!(banner(format!("127.0.0.1:{local}")), "SSH-");
    let from_lan = |addr: &str, port: u16| {
        in_ns(&format!(
            "timeout 5 bash -c 'exec 3<>/dev/tcp/{addr}/{port}; head -c 4 <&3'"
        ))
    };
    let out = from_lan(&upstream.host_ip, lan_port);
    assert_eq!(stdout(&out), "SSH-", "{}", stderr(&out));
    assert!(
        !from_lan(&upstream.host_ip, local).status.success(),
        "loopback-only port reached from the LAN"
    );
    // A host port in use is a clear error.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let out = sb.banger(&["vm", "publish", "b", &format!("{taken_port}:22")]);
    assert!(stderr(&out).contains("already in use"), "{}", stderr(&out));
    ok(sb.banger(&["vm", "unpublish", "a", &format!("{local}:22")]));
    assert!(std::net::TcpStream::connect(format!("127.0.0.1:{local}")).is_err());

    // UDP too: a guest echo server (perl is in the base image) answers
    // through a published UDP port, each client on its own relay.
    ok(sb.banger(&[
        "vm",
        "ssh",
        "a",
        "--",
        "nohup perl -MSocket -e 'socket(S,PF_INET,SOCK_DGRAM,0) or die; bind(S,sockaddr_in(7007,INADDR_ANY)) or die; while (my $from = recv(S, my $m, 1500, 0)) { send(S, \"echo $m\", 0, $from) }' >/dev/null 2>&1 &",
    ]));
    let udp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    ok(sb.banger(&["vm", "publish", "a", &format!("{udp_port}:7007/udp")]));
    let echo = |word: &str| {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 64];
        // The echo server may still be starting: ask a few times.
        for _ in 0..10 {
            client
                .send_to(word.as_bytes(), ("127.0.0.1", udp_port))
                .unwrap();
            if let Ok(len) = client.recv(&mut buf) {
                return String::from_utf8_lossy(&buf[..len]).into_owned();
            }
        }
        panic!("no UDP echo through the published port");
    };
    assert_eq!(echo("one"), "echo one");
    assert_eq!(echo("two"), "echo two");
    assert!(
        t.json(&["vm", "show", "a"])["published"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(format!("127.0.0.1:{udp_port}:7007/udp")))
    );
    ok(sb.banger(&["vm", "unpublish", "a", &format!("{udp_port}:7007/udp")]));

    // A guest cannot send as a neighbour (its address) or as someone else
    // (another MAC): what the host hears comes from its own addresses only.
    let heard = heard_from(
        sb,
        "b",
        &gateway,
        &format!(
            "
                echo own > {{dest}}
                ip addr add {a_ip}/32 dev eth0
                ip route add {gateway}/32 dev eth0 src {a_ip}
                echo stolen-ip > {{dest}}
                ip route del {gateway}/32 dev eth0 src {a_ip}
                ip addr del {a_ip}/32 dev eth0
                mac=$(cat /sys/class/net/eth0/address)
                ip link set eth0 address 06:66:66:66:66:66
                echo stolen-mac > {{dest}}
                ip link set eth0 address $mac
            "
        ),
    );
    assert_eq!(heard, [format!("own from {b_ip}")], "{heard:?}");
    // And b, its MAC restored, is still itself.
    assert_eq!(
        ok(sb.banger(&["vm", "ssh", "b", "--", "hostname"])).trim(),
        "b"
    );

    // Nor through the DNS forwarder: it answers b only `.vm` names.
    let tunnel = ok(sb.banger(&[
        "vm",
        "ssh",
        "b",
        "--",
        "getent hosts a.vm; getent hosts tunnel.upstream.test || echo refused",
    ]));
    assert!(
        tunnel.starts_with(&a_ip) && tunnel.trim().ends_with("refused"),
        "{tunnel}"
    );

    let names = upstream.dns_names.lock().unwrap().clone();
    assert!(names.iter().any(|n| n == "upstream.test"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("tunnel.")),
        "a --no-nat VM's query went upstream: {names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".vm") || n.ends_with(".vm.")),
        ".vm never goes upstream: {names:?}"
    );

    // The last VM gone: no NAT table, no taps.
    let status = t.json(&["network", "status"]);
    assert_eq!(status["leases"].as_array().unwrap().len(), 2);
    ok(sb.banger(&["vm", "delete", "--force", "a"]));
    ok(sb.banger(&["vm", "delete", "--force", "b"]));
    let tables = String::from_utf8_lossy(
        &std::process::Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!tables.contains(&table), "{tables}");
    let cleanup = ok(sb.banger(&["network", "cleanup"]));
    assert!(
        cleanup.contains(&format!("removed bridge {}", t.bridge)),
        "{cleanup}"
    );
}

#[test]
fn images_import_list_and_refuse_deletion_while_used() {
    let Some(t) = VmSandbox::new("") else { return };
    let sb = &t.sb;
    let rootfs = runtime_dir().join("rootfs.ext4");
    let out = ok(sb.banger(&["image", "import", "mine", rootfs.to_str().unwrap()]));
    assert!(out.starts_with("imported mine"), "{out}");
    let images = t.json(&["image", "list"]);
    assert_eq!(images[0]["name"], "mine");

    // Not an ext4 image: refused, nothing registered.
    let junk = sb.path("junk.img");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    let out = sb.banger(&["image", "import", "junk", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("junk"), "{}", stderr(&out));
    assert!(!sb.path("data/banger/images/junk").exists());

    ok(sb.banger(&[
        "vm",
        "create",
        "--name",
        "user",
        "--image",
        "mine",
        "--no-start",
    ]));
    let shown = t.json(&["image", "show", "mine"]);
    assert_eq!(shown["used_by"][0], "user");
    let out = sb.banger(&["image", "delete", "mine"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "deleting an image in use must fail"
    );
    ok(sb.banger(&["vm", "delete", "user"]));
    ok(sb.banger(&["image", "delete", "mine"]));
    assert!(!sb.path("data/banger/images/mine").exists());
    assert_eq!(ok(sb.banger(&["image", "list", "--json"])).trim(), "[]");
}

/// Descriptors open in `pid` and its resident memory in KiB.
fn fds_and_rss(pid: i32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

/// CPU ticks `pid` has used (user + system).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
}

/// Any local user can connect to a published port on 127.0.0.1. 2,000
/// connections held open against a daemon started with the soft descriptor
/// limit a desktop session gives (1024) must leave it answering the API,
/// `.vm` DNS and a new VM's start, and idle once the clients go.
#[test]
fn published_ports_cannot_starve_the_daemon() {
    let Some(t) = VmSandbox::new("") else { return };
    let _turn = booting();
    t.no_upstream_dns();
    let sb = &t.sb;
    {
        use std::os::unix::process::CommandExt;
        let mut start = sb.command("banger");
        start.args(["daemon", "start"]);
        // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
        unsafe {
            start.pre_exec(|| {
                use rustix::process::{Resource, getrlimit, setrlimit};
                let mut limit = getrlimit(Resource::Nofile);
                limit.current = Some(1024);
                setrlimit(Resource::Nofile, limit).map_err(std::io::Error::from)
            });
        }
        ok(start.output().unwrap());
    }
    let daemon = sb.daemon_pid().unwrap();
    ok(sb.banger(&[
        "vm", "create", "--name", "web", "--memory", "384", "--vcpus", "1",
    ]));
    // A guest that never answers (its VMM frozen): every relayed connect
    // hangs, which is what a hostile guest does for free.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    ok(sb.banger(&["vm", "publish", "web", &format!("{port}:7070")]));
    let vmm = t.json(&["vm", "show", "web"])["pid"].as_i64().unwrap() as i32;
    signal(vmm, rustix::process::Signal::STOP);
    let before = fds_and_rss(daemon);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let held: Vec<tokio::net::TcpStream> = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..2000 {
            tasks.spawn(async move {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::net::TcpStream::connect(("127.0.0.1", port)),
                )
                .await
                .ok()?
                .ok()
            });
        }
        let mut held = Vec::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok(Some(stream)) = done {
                held.push(stream);
            }
        }
        held
    });
    std::thread::sleep(Duration::from_secs(2));
    let during = fds_and_rss(daemon);

    // The daemon answers its API, DNS and starts a VM meanwhile.
    let started = std::time::Instant::now();
    let list = sb.banger(&["vm", "list"]);
    let list_time = started.elapsed();
    assert!(list.status.success(), "vm list: {}", stderr(&list));
    let gateway: Ipv4Addr = sb.subnet.split('/').next().unwrap().parse().unwrap();
    let web_ip: Ipv4Addr = t.json(&["vm", "show", "web"])["ip"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(resolve_a(gateway, "web.vm"), vec![web_ip]);
    ok(sb.banger(&["vm", "create", "--name", "late", "--no-wait"]));
    assert_eq!(t.json(&["vm", "show", "late"])["state"], "running");

    let held_count = held.len();
    drop(held);
    signal(vmm, rustix::process::Signal::CONT);
    std::thread::sleep(Duration::from_secs(2));
    let ticks = cpu_ticks(daemon);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(daemon) - ticks;
    let after = fds_and_rss(daemon);
    println!(
        "2000 connections to a published port: {held_count} connected; daemon (fds, RSS KiB) before {before:?}, during {during:?}, after {after:?}; vm list in {list_time:?}; {used} CPU ticks in 3 s after the clients closed"
    );
    // 300 ticks is 3 s of one core; a spinning accept loop uses them all.
    assert!(
        used <= 30,
        "the daemon used {used} ticks in 3 s after the clients closed"
    );
    assert!(
        during.0 < 1024,
        "the daemon held {} descriptors: the relay is not bounded",
        during.0
    );
    ok(sb.banger(&["vm", "delete", "--force", "late"]));
    ok(sb.banger(&["vm", "delete", "--force", "web"]));
}

/// A boot that stalls (forced: the daemon's first boot runs `cat` as the
/// initramfs's init, which waits on the console forever, silent) is killed
/// and booted again from the same disks; `vm create` and the VM's events
/// say so. Two stalls in a row fail with the console's tail and leave no
/// VM, tap or VMM behind.
#[test]
fn a_stalled_boot_is_booted_again_once() {
    let Some(t) = VmSandbox::new("boot_stall_secs = 20\n") else {
        return;
    };
    let _turn = booting();
    t.no_upstream_dns();
    let sb = &t.sb;
    let start_daemon = |stalls: &str| {
        let _ = sb.banger(&["daemon", "stop"]);
        ok(sb
            .command("banger")
            .env("BANGER_TEST_STALL_BOOTS", stalls)
            .args(["daemon", "start"])
            .output()
            .unwrap());
    };

    start_daemon("1");
    let created = ok(sb.banger(&[
        "vm", "create", "--name", "slow", "--memory", "384", "--vcpus", "1",
    ]));
    assert!(created.contains("the first boot stalled"), "{created}");
    assert_eq!(
        ok(sb.banger(&["vm", "ssh", "slow", "--", "hostname"])).trim(),
        "slow"
    );
    let vm = t.json(&["vm", "show", "slow"]);
    let kinds: Vec<&str> = vm["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.ends_with(&["boot-stalled", "started", "created"]),
        "{kinds:?}"
    );
    let shown = ok(sb.banger(&["vm", "show", "slow"]));
    assert!(
        shown.contains("boot-stalled: the console was silent"),
        "{shown}"
    );
    ok(sb.banger(&["vm", "delete", "--force", "slow"]));

    start_daemon("2");
    let out = sb.banger(&[
        "vm", "create", "--name", "stuck", "--memory", "384", "--vcpus", "1",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("stalled twice"), "{err}");
    assert!(err.contains("console ends with"), "{err}");
    assert_eq!(t.json(&["vm", "list"]), serde_json::json!([]));
    let brif = Path::new("/sys/class/net").join(&t.bridge).join("brif");
    assert_eq!(
        std::fs::read_dir(&brif).map(|d| d.count()).unwrap_or(0),
        0,
        "a tap was left on the bridge"
    );
    assert!(!sb.state_dir().join("vms/stuck").exists());
}

/// One archive member for a hostile guest's `tar`: name, kind, link
/// target or contents, mode, mtime.
type Member<'a> = (&'a str, tar::EntryType, &'a str, u32, u64);

fn hostile_archive(members: &[Member]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for &(name, kind, what, mode, mtime) in members {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_mtime(mtime);
        if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
            header.set_size(0);
            builder.append_link(&mut header, name, what).unwrap();
        } else {
            header.set_size(what.len() as u64);
            builder
                .append_data(&mut header, name, what.as_bytes())
                .unwrap();
        }
    }
    builder.into_inner().unwrap()
}

/// `vm cp NAME:PATH DEST` from a guest whose `tar` answers with archives
/// made to escape: the copy's root a symlink to a host directory, a
/// symlinked directory in the middle, a hard link to a host file, a setuid
/// file, a huge mtime. Nothing lands outside DEST, no setuid bit lands,
/// and nothing panics.
#[test]
fn vm_cp_from_a_hostile_guest_stays_in_its_destination() {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let Some(t) = VmSandbox::new("") else { return };
    let _turn = booting();
    t.no_upstream_dns();
    let sb = &t.sb;
    ok(sb.banger(&[
        "vm", "create", "--name", "evil", "--memory", "384", "--vcpus", "1",
    ]));
    let host = tempfile::tempdir().unwrap();
    let victim = host.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("secret"), "host secret").unwrap();
    let v = victim.to_str().unwrap().to_string();
    let secret = format!("{v}/secret");
    let cases: Vec<Vec<Member>> = vec![
        vec![
            ("d", Symlink, &v, 0o777, 0),
            (
                "d/authorized_keys",
                Regular,
                "ssh-ed25519 AAAA evil",
                0o600,
                0,
            ),
        ],
        vec![
            ("d", Directory, "", 0o755, 0),
            ("d/mid", Symlink, &v, 0o777, 0),
            ("d/mid/planted", Regular, "x", 0o644, 0),
        ],
        vec![
            ("d", Directory, "", 0o755, 0),
            ("d/hard", Link, &secret, 0o644, 0),
        ],
        vec![
            ("d", Directory, "", 0o755, 0),
            ("d/suid", Regular, "#!/bin/sh\n", 0o4755, 0),
        ],
        vec![("d", Directory, "", 0o755, u64::MAX)],
    ];
    // Every archive goes in first: once the fake tar is there, uploads
    // (which run the guest's tar) would meet it too.
    for (i, members) in cases.iter().enumerate() {
        let file = host.path().join(format!("evil-{i}.tar"));
        std::fs::write(&file, hostile_archive(members)).unwrap();
        ok(sb.banger(&["vm", "cp", file.to_str().unwrap(), "evil:/root/"]));
    }
    let fake = host.path().join("tar");
    std::fs::write(
        &fake,
        "#!/bin/sh\nexec cat \"/root/evil-$(cat /root/which).tar\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    ok(sb.banger(&[
        "vm",
        "cp",
        fake.to_str().unwrap(),
        "evil:/usr/local/bin/tar",
    ]));

    let copy = |i: usize| {
        ok(sb.banger(&[
            "vm",
            "ssh",
            "evil",
            "--",
            &format!("echo {i} > /root/which"),
        ]));
        let dest = host.path().join(format!("dest-{i}"));
        std::fs::create_dir(&dest).unwrap();
        let out = sb.banger(&["vm", "cp", "evil:/d", dest.to_str().unwrap()]);
        (out, dest)
    };
    let untouched = || {
        let names: Vec<String> = std::fs::read_dir(&victim)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["secret"], "something landed outside DEST");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(victim.join("secret")).unwrap().nlink(), 1);
    };
    for i in 0..3 {
        let (out, _) = copy(i);
        assert_eq!(out.status.code(), Some(1), "case {i}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("Refusing"),
            "case {i}: {}",
            stderr(&out)
        );
        untouched();
    }
    let (out, dest) = copy(3);
    assert!(out.status.success(), "{}", stderr(&out));
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(dest.join("d/suid")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o755, "a setuid bit landed");
    let (out, _) = copy(4);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("mtime out of range"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    untouched();
    ok(sb.banger(&["vm", "delete", "--force", "evil"]));
}
