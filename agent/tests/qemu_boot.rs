//! A real guest: boots `./runtime` (built by `make runtime-debian`, whose
//! initrd carries the agent) under QEMU microvm with a virtio-serial port,
//! and drives the agent as the daemon will: hello, exec, clock, entropy,
//! freeze and thaw, a host reconnecting mid-frame, shutdown.
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

use banger_agent::proto::{Message, SERIAL_PORT_NAME, ShutdownAction, encode_frame, sync_preamble};
use common::{Client, exec};

struct Guest {
    qemu: Child,
    dir: PathBuf,
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
    let mut append =
        "console=ttyS0 reboot=k panic=1 root=/dev/vda rw banger.upper=/dev/vdb".to_string();
    if let Some(khz) = host_tsc_khz() {
        append.push_str(&format!(" tsc_early_khz={khz} tsc=reliable"));
    }
    append.push_str(extra_args);
    let sock = dir.join("agent.sock");
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
    Guest { qemu, dir }
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

    // sshd comes up later than the agent; the hello says when.
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        if c.hello().sshd_accepting {
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
