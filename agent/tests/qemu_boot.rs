//! A real guest: boots `./runtime` (built by `make runtime-debian`, whose
//! initrd carries the agent) under QEMU microvm with a virtio-serial port,
//! and drives the agent as the daemon will: hello, exec, clock, entropy,
//! freeze and thaw, a host reconnecting mid-frame, status, a new identity
//! (and one that fails and is rolled back), shutdown.
//!
//! The guest has one NIC, QEMU user networking (10.0.2.0/24, gateway
//! 10.0.2.2), configured by the initramfs from `ip=` as 10.0.2.15; host
//! ports forward to port 22 of 10.0.2.15 and of 10.0.2.16, so the test can
//! see which address sshd answers on, and with which host key.
//!
//! `cargo test -p banger-agent --test qemu_boot -- --ignored --nocapture`
//! (as root, for mkfs.ext4 on the upper disk; a few minutes under TCG).
// The test starts QEMU and mkfs: spawning is its job.
#![allow(clippy::disallowed_methods)]

mod common;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use banger_agent::proto::{
    ErrorCode, HostKey, Identity, Message, Network, SERIAL_PORT_NAME, ShutdownAction, encode_frame,
    sync_preamble,
};
use common::{Client, exec};

struct Guest {
    qemu: Child,
    dir: PathBuf,
    /// Host ports forwarded to port 22 of the guest's first address, and
    /// of the address the identity test gives it.
    ssh_old: u16,
    ssh_new: u16,
}

impl Guest {
    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        if std::thread::panicking() {
            let console = self.console();
            let tail: Vec<&str> = console.lines().rev().take(60).collect();
            eprintln!("--- console tail ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn runtime() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime")
}

fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0).round() as u64)
}

/// Boots the bundle with a layered root (the image read-only, a fresh
/// upper disk) and the agent's port on `dir/agent.sock`.
fn boot() -> Guest {
    boot_with("")
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const GUEST_MAC: &str = "06:00:0a:00:02:0f";

fn boot_with(extra_args: &str) -> Guest {
    let rt = runtime();
    let dir = std::env::temp_dir().join(format!(
        "banger-agent-boot-{}-{}",
        std::process::id(),
        extra_args.len()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let upper = dir.join("upper.ext4");
    std::fs::File::create(&upper)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "upper"])
        .arg(&upper)
        .status()
        .unwrap();
    assert!(st.success());
    let mut append = "console=ttyS0 reboot=k panic=1 root=/dev/vda rw banger.upper=/dev/vdb \
         ip=10.0.2.15::10.0.2.2:255.255.255.0:banger-test:eth0:off"
        .to_string();
    if let Some(khz) = host_tsc_khz() {
        append.push_str(&format!(" tsc_early_khz={khz} tsc=reliable"));
    }
    append.push_str(extra_args);
    let sock = dir.join("agent.sock");
    let (ssh_old, ssh_new) = (free_port(), free_port());
    let qemu = Command::new("qemu-system-x86_64")
        .current_dir(&dir)
        .args([
            "-M",
            "microvm,acpi=on,rtc=on,pit=on,pic=on",
            "-accel",
            "tcg",
            "-cpu",
            "max",
        ])
        .args(["-m", "1024", "-smp", "2", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-no-reboot"])
        .args([
            "-chardev",
            "file,id=console,path=console.log",
            "-serial",
            "chardev:console",
        ])
        .arg("-kernel")
        .arg(rt.join("vmlinux"))
        .arg("-initrd")
        .arg(rt.join("initrd.img"))
        .args(["-append", &append])
        .arg("-drive")
        .arg(format!(
            "id=disk0,file={},format=raw,if=none,readonly=on",
            rt.join("rootfs.ext4").display()
        ))
        .args(["-device", "virtio-blk-device,drive=disk0"])
        .arg("-drive")
        .arg(format!(
            "id=disk1,file={},format=raw,if=none",
            upper.display()
        ))
        .args(["-device", "virtio-blk-device,drive=disk1"])
        .arg("-netdev")
        .arg(format!(
            "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_old}-10.0.2.15:22,\
             hostfwd=tcp:127.0.0.1:{ssh_new}-10.0.2.16:22"
        ))
        .args([
            "-device",
            &format!("virtio-net-device,netdev=n0,mac={GUEST_MAC}"),
        ])
        .args(["-device", "virtio-serial-device"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=agent,path={},server=on,wait=off",
            sock.display()
        ))
        .arg("-device")
        .arg(format!(
            "virtserialport,chardev=agent,name={SERIAL_PORT_NAME}"
        ))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Guest {
        qemu,
        dir,
        ssh_old,
        ssh_new,
    }
}

/// Connects to the agent's socket (QEMU makes it at once) and resyncs.
fn connect(g: &Guest) -> Client {
    let sock = g.dir.join("agent.sock");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(&sock) {
            Ok(s) => {
                let c = Client::new(Box::new(s));
                c.send_raw(&sync_preamble());
                return c;
            }
            Err(e) if Instant::now() < until => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("no agent socket: {e}"),
        }
    }
}

fn sh(c: &mut Client, id: u32, script: &str) -> String {
    let out = c
        .run(id, exec(&["sh", "-c", script]), None, |_, _| {})
        .unwrap();
    assert_eq!(out.code, 0, "{script}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// The ed25519 host key (base64) sshd offers through a forwarded port.
fn scan_host_key(port: u16) -> Option<String> {
    let out = Command::new("ssh-keyscan")
        .args([
            "-T",
            "5",
            "-t",
            "ed25519",
            "-p",
            &port.to_string(),
            "127.0.0.1",
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 3 && f[1] == "ssh-ed25519").then(|| f[2].to_string())
    })
}

/// Waits until sshd through `port` offers `key` (it reloads on SIGHUP).
fn wait_for_host_key(port: u16, key: Option<&str>, within: Duration) -> Option<String> {
    let until = Instant::now() + within;
    loop {
        let got = scan_host_key(port);
        let done = match key {
            Some(k) => got.as_deref() == Some(k),
            None => got.is_some(),
        };
        if done || Instant::now() > until {
            return got;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A fresh key pair from ssh-keygen.
fn keygen(dir: &Path) -> HostKey {
    let f = dir.join("test_host_key");
    let _ = std::fs::remove_file(&f);
    let _ = std::fs::remove_file(f.with_extension("pub"));
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "banger-test", "-f"])
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success());
    HostKey {
        private: std::fs::read(&f).unwrap(),
        public: std::fs::read(dir.join("test_host_key.pub")).unwrap(),
    }
}

fn random_machine_id() -> Vec<u8> {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap()
        .trim()
        .replace('-', "")
        .into_bytes()
}

/// What the guest's identity is, as its own tools report it.
const IDENTITY_REPORT: &str = "hostname; cat /etc/hostname /etc/machine-id;      cat /sys/class/net/eth0/address; ip -4 -o addr show dev eth0; cat /proc/net/route;      grep 127.0.1.1 /etc/hosts || true; sha256sum /etc/ssh/ssh_host_ed25519_key*";

/// A new identity for a running guest: first one whose default route
/// cannot be added (rolled back, nothing changes), then the real one.
fn identity(g: &Guest, c: &mut Client) {
    let nics = sh(c, 500, "ls /sys/class/net");
    let nics: Vec<&str> = nics.split_whitespace().filter(|n| *n != "lo").collect();
    assert_eq!(nics, vec!["eth0"]);
    let old_key = wait_for_host_key(g.ssh_old, None, Duration::from_secs(60))
        .expect("sshd answers on the first address");
    let before = sh(c, 501, IDENTITY_REPORT);
    eprintln!("identity before:\n{before}");
    assert!(before.contains(GUEST_MAC), "{before}");
    assert!(before.contains("inet 10.0.2.15/24"), "{before}");

    let key = keygen(&g.dir);
    let machine_id = random_machine_id();
    let new_mac = [0x06, 0x00, 0x0a, 0x00, 0x02, 0x10];

    // A gateway the kernel will not route through: the agent gets as far
    // as the default route, fails there, and puts everything back.
    sh(c, 502, "ip route add unreachable 10.0.2.3/32 scope link");
    let failing = Identity {
        hostname: Some(b"banger-failed".to_vec()),
        network: Some(Network {
            address: [10, 0, 2, 16],
            prefix: 24,
            gateway: [10, 0, 2, 3],
            mac: Some(new_mac),
            nameservers: vec![[10, 0, 2, 3]],
        }),
        host_key: Some(key.clone()),
        machine_id: Some(random_machine_id()),
    };
    let t = Instant::now();
    let m = c.request(503, &Message::SetIdentity(failing));
    eprintln!(
        "an identity whose route fails: {m:?} after {:?}",
        t.elapsed()
    );
    assert!(
        matches!(
            &m,
            Message::Error { code: ErrorCode::Failed, message }
                if message.contains("route") && message.contains("old network is back")
        ),
        "{m:?}"
    );
    sh(c, 504, "ip route del unreachable 10.0.2.3/32 scope link");
    let after = sh(c, 505, IDENTITY_REPORT);
    assert_eq!(after, before, "a failed identity left changes behind");
    let temps = sh(c, 506, "ls -a /etc /etc/ssh | grep banger-new || true");
    assert_eq!(temps.trim(), "", "temporary files left behind");
    assert_eq!(
        scan_host_key(g.ssh_old).as_deref(),
        Some(old_key.as_str()),
        "the old address stopped answering after a rollback"
    );

    // The real change: same /24 and gateway, a new address and MAC.
    let ident = Identity {
        hostname: Some(b"banger-renamed".to_vec()),
        network: Some(Network {
            address: [10, 0, 2, 16],
            prefix: 24,
            gateway: [10, 0, 2, 2],
            mac: Some(new_mac),
            nameservers: vec![[10, 0, 2, 3], [9, 9, 9, 9]],
        }),
        host_key: Some(key.clone()),
        machine_id: Some(machine_id.clone()),
    };
    let t = Instant::now();
    let m = c.request(507, &Message::SetIdentity(ident));
    eprintln!("identity applied: {m:?} in {:?}", t.elapsed());
    assert_eq!(m, Message::Done);

    let out = sh(
        c,
        508,
        "hostname; cat /etc/hostname /etc/machine-id /etc/resolv.conf;          cat /sys/class/net/eth0/address; cat /proc/net/route; ip -4 -o addr show dev eth0;          grep 127.0.1.1 /etc/hosts;          stat -c '%n %a %U' /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub            /etc/machine-id /etc/hostname /etc/resolv.conf",
    );
    eprintln!("identity after:\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "banger-renamed");
    assert_eq!(lines[1], "banger-renamed");
    assert_eq!(lines[2].as_bytes(), &machine_id[..]);
    assert_eq!(
        &lines[3..6],
        [
            "# written by banger-agent",
            "nameserver 10.0.2.3",
            "nameserver 9.9.9.9"
        ]
    );
    assert_eq!(lines[6], "06:00:0a:00:02:10");
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..]
                .starts_with(&["eth0", "00000000", "0202000A", "0003"])),
        "no default route via 10.0.2.2: {out}"
    );
    assert!(
        lines.iter().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 7 && f[0] == "eth0" && f[1] == "0002000A" && f[7] == "00FFFFFF"
        }),
        "no 10.0.2.0/24 route: {out}"
    );
    assert!(out.contains("inet 10.0.2.16/24 brd 10.0.2.255"), "{out}");
    assert!(!out.contains("10.0.2.15"), "{out}");
    assert!(out.contains("127.0.1.1\tbanger-renamed\n"), "{out}");
    for want in [
        "/etc/ssh/ssh_host_ed25519_key 600 root",
        "/etc/ssh/ssh_host_ed25519_key.pub 644 root",
        "/etc/machine-id 444 root",
        "/etc/hostname 644 root",
        "/etc/resolv.conf 644 root",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let private = c
        .run(
            509,
            exec(&["cat", "/etc/ssh/ssh_host_ed25519_key"]),
            None,
            |_, _| {},
        )
        .unwrap();
    assert_eq!(private.stdout, key.private);
    let public = c
        .run(
            510,
            exec(&["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]),
            None,
            |_, _| {},
        )
        .unwrap();
    assert_eq!(public.stdout, key.public);

    // sshd reloaded: the new address answers with the new key, the old
    // address is dead.
    let new_b64 = String::from_utf8(key.public.clone())
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let t = Instant::now();
    let got = wait_for_host_key(g.ssh_new, Some(&new_b64), Duration::from_secs(60));
    eprintln!(
        "sshd on the new address with the new key after {:?}",
        t.elapsed()
    );
    assert_eq!(got.as_deref(), Some(new_b64.as_str()));
    assert_ne!(new_b64, old_key);
    assert_eq!(
        scan_host_key(g.ssh_old),
        None,
        "the old address still answers"
    );
    let temps = sh(c, 511, "ls -a /etc /etc/ssh | grep banger-new || true");
    assert_eq!(temps.trim(), "");
}

#[test]
#[ignore = "needs a QEMU boot of ./runtime (make runtime-debian), as root; minutes under TCG"]
fn a_real_guest_serves_every_request() {
    assert!(
        runtime().join("initrd.features").exists()
            && std::fs::read_to_string(runtime().join("initrd.features"))
                .unwrap()
                .lines()
                .any(|l| l == "agent"),
        "./runtime has no agent: run make runtime-debian"
    );
    let start = Instant::now();
    let g = boot();
    let mut c = connect(&g);
    // The host connected before the guest booted: its hello waits in the
    // socket until the agent opens the port.
    let h = c.hello_within(Duration::from_secs(180));
    let boot_to_hello = start.elapsed();
    eprintln!("boot to agent hello: {boot_to_hello:?} ({h:?})");
    assert_eq!(h.channel, "virtio-serial");
    assert!(!h.pid1);

    let out = sh(&mut c, 1, "uname -a");
    eprintln!("uname -a: {}", out.trim());
    assert!(out.contains(&h.kernel_release));

    // Exec round trip.
    let mut times = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let o = c.run(100 + i, exec(&["true"]), None, |_, _| {}).unwrap();
        assert_eq!(o.code, 0);
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "exec true round trip: median {:?}, min {:?}, max {:?}",
        times[10], times[0], times[19]
    );

    // The agent runs in the final root, as root, with '@' in argv[0], and
    // holds nothing of the initramfs.
    let me = sh(
        &mut c,
        2,
        "for p in /proc/[0-9]*; do \
           case \"$(tr '\\0' ' ' <$p/cmdline 2>/dev/null)\" in @banger-agent*) \
             echo pid ${p#/proc/}; grep -E '^(VmRSS|Uid)' $p/status; \
             readlink $p/root; ls -l $p/fd | grep -c initramfs || true; \
             readlink $p/cwd;; esac; done; \
         grep ' / ' /proc/self/mountinfo",
    );
    eprintln!("agent in the guest:\n{me}");
    assert!(me.contains("pid "), "{me}");

    // Clock: an hour ahead, then back to the host's.
    let ahead = now() + Duration::from_secs(3600);
    let m = c.request(
        3,
        &Message::SetClock {
            secs: ahead.as_secs() as i64,
            nanos: ahead.subsec_nanos(),
        },
    );
    assert!(matches!(m, Message::ClockSet { .. }), "{m:?}");
    let guest: u64 = sh(&mut c, 4, "date +%s").trim().parse().unwrap();
    let host = now().as_secs();
    assert!(
        guest.abs_diff(host + 3600) <= 2,
        "guest {guest} host+1h {}",
        host + 3600
    );
    let t = now();
    let m = c.request(
        5,
        &Message::SetClock {
            secs: t.as_secs() as i64,
            nanos: t.subsec_nanos(),
        },
    );
    let Message::ClockSet { previous_secs, .. } = m else {
        panic!("{m:?}")
    };
    assert!(previous_secs.abs_diff(t.as_secs() as i64 + 3600) <= 2);
    let guest: f64 = sh(&mut c, 6, "date +%s.%N").trim().parse().unwrap();
    let host = now().as_secs_f64();
    eprintln!("clock after sync: guest - host = {:+.3} s", guest - host);
    assert!((guest - host).abs() < 1.0);

    // Entropy.
    let m = c.request(
        7,
        &Message::AddEntropy {
            data: (0..64u8).collect(),
            reseed: true,
        },
    );
    assert_eq!(m, Message::Done);

    // Freeze /: an overlay, so its upper disk is frozen; a write waits.
    let m = c.request(
        8,
        &Message::Freeze {
            mounts: vec![b"/".to_vec()],
            timeout_ms: 30_000,
        },
    );
    eprintln!("freeze /: {m:?}");
    let Message::Frozen(names) = m else {
        panic!("{m:?}")
    };
    assert!(
        names.iter().any(|n| n.contains("upper:/dev/vdb")),
        "{names:?}"
    );
    c.send(
        9,
        &Message::Exec(exec(&[
            "sh",
            "-c",
            "echo x >/root/frozen-write && sync && echo written",
        ])),
    );
    let mut exited_while_frozen = false;
    while let Some((id, m)) = c.recv(Duration::from_secs(2)) {
        if id == 9 && matches!(m, Message::Exited { .. }) {
            exited_while_frozen = true;
        }
    }
    assert!(
        !exited_while_frozen,
        "a write finished on a frozen filesystem"
    );
    let t = Instant::now();
    let m = c.request(10, &Message::Thaw);
    assert!(matches!(&m, Message::Thawed(n) if !n.is_empty()), "{m:?}");
    let mut written = false;
    while let Some((id, m)) = c.recv(Duration::from_secs(30)) {
        match (id, m) {
            (9, Message::Stdout(d)) => written |= d.starts_with(b"written"),
            (9, Message::Exited { code, .. }) => {
                assert_eq!(code, 0);
                break;
            }
            _ => {}
        }
    }
    assert!(written);
    eprintln!("the frozen write finished {:?} after the thaw", t.elapsed());

    // Every writable disk filesystem, thawed on its own after the timeout.
    let m = c.request(
        11,
        &Message::Freeze {
            mounts: vec![],
            timeout_ms: 1500,
        },
    );
    eprintln!("freeze (all): {m:?}");
    assert!(matches!(m, Message::Frozen(_)), "{m:?}");
    let t = Instant::now();
    sh(&mut c, 12, "echo y >/root/after-timeout && sync");
    eprintln!(
        "a write during a 1.5 s freeze finished after {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() >= Duration::from_millis(1000));

    // The host goes away mid-frame while frozen: the new host resyncs, and
    // nothing stays frozen.
    let m = c.request(
        13,
        &Message::Freeze {
            mounts: vec![b"/".to_vec()],
            timeout_ms: 600_000,
        },
    );
    assert!(matches!(m, Message::Frozen(_)), "{m:?}");
    let mut torn = Vec::new();
    encode_frame(0x0002, 14, &vec![7u8; 100_000], &mut torn).unwrap();
    c.send_raw(&torn[..5000]);
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let mut c = connect(&g);
    let h2 = c.hello();
    eprintln!("reconnect to hello: {:?}", t.elapsed());
    assert_eq!(h2.boot_id, h.boot_id);
    let t = Instant::now();
    sh(&mut c, 15, "echo z >/root/after-reconnect && sync");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "still frozen after the host left"
    );

    // sshd comes up later than the agent; a status request says when
    // (without the hello's reset: the host polls it as sessions run).
    let until = Instant::now() + Duration::from_secs(120);
    let mut status_id = 400;
    loop {
        status_id += 1;
        let m = c.request(status_id, &Message::Status);
        let Message::HelloReply(st) = m else {
            panic!("{m:?}")
        };
        assert_eq!(st.boot_id, h.boot_id);
        if st.sshd_accepting {
            eprintln!(
                "boot to sshd accepting (seen by the agent): {:?}",
                start.elapsed()
            );
            break;
        }
        assert!(Instant::now() < until, "sshd never accepted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut times = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let o = c.run(200 + i, exec(&["true"]), None, |_, _| {}).unwrap();
        assert_eq!(o.code, 0);
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "exec true round trip, booted: median {:?}, min {:?}, max {:?}",
        times[10], times[0], times[19]
    );
    let inside = sh(
        &mut c,
        299,
        "a=$(date +%s%N); for i in 1 2 3 4 5 6 7 8 9 10; do /bin/true; done; b=$(date +%s%N); \
         echo $(( (b - a) / 10000000 ))",
    );
    eprintln!(
        "fork+exec of /bin/true inside the guest (sh loop): {} ms each",
        inside.trim()
    );
    let t = Instant::now();
    let big = c
        .run(
            300,
            exec(&["head", "-c", "20000000", "/dev/zero"]),
            None,
            |_, _| {},
        )
        .unwrap();
    assert_eq!(big.stdout.len(), 20_000_000);
    eprintln!("20 MB of output from the guest in {:?}", t.elapsed());

    identity(&g, &mut c);

    // Shutdown: systemd powers off; QEMU ends.
    let t = Instant::now();
    let m = c.request(16, &Message::Shutdown(ShutdownAction::PowerOff));
    assert_eq!(m, Message::Done);
    let mut g = g;
    let until = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = g.qemu.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < until, "the guest did not power off");
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("shutdown to QEMU exit: {:?} ({status})", t.elapsed());
    let console = g.console();
    assert!(
        console.contains("reboot: Power down") || console.contains("Power down"),
        "{console}"
    );
}

#[test]
#[ignore = "needs a QEMU boot of ./runtime (make runtime-debian), as root; minutes under TCG"]
fn an_image_without_init_gets_the_agent_as_init() {
    let start = Instant::now();
    let g = boot_with(" init=/sbin/no-such-init");
    let mut c = connect(&g);
    let h = c.hello_within(Duration::from_secs(180));
    eprintln!("boot to agent hello (agent as init): {:?}", start.elapsed());
    assert!(h.pid1, "{h:?}");
    let out = sh(
        &mut c,
        1,
        "echo $$; cat /proc/1/cmdline | tr '\\0' ' '; tty </dev/null || true",
    );
    eprintln!("{out}");
    assert!(out.contains("@banger-agent --init"), "{out}");
    // A pty needs /dev/pts, which the agent mounted as init.
    let o = c
        .run(2, common::pty_exec(&["tty"], 24, 80), None, |_, _| {})
        .unwrap();
    assert!(o.stdout.starts_with(b"/dev/pts/"), "{o:?}");
    // Orphans are reaped: a double fork leaves no zombie behind.
    sh(&mut c, 3, "(sleep 0.2 &) ; sleep 1");
    let zombies = sh(
        &mut c,
        4,
        "grep -l '^State:.*Z' /proc/[0-9]*/status || true",
    );
    assert!(zombies.trim().is_empty(), "zombies: {zombies}");
    let t = Instant::now();
    let m = c.request(5, &Message::Shutdown(ShutdownAction::PowerOff));
    assert_eq!(m, Message::Done);
    let mut g = g;
    let until = Instant::now() + Duration::from_secs(60);
    while g.qemu.try_wait().unwrap().is_none() {
        assert!(Instant::now() < until, "the guest did not power off");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("shutdown to QEMU exit (agent as init): {:?}", t.elapsed());
}
