//! The guest agent end to end: a real guest booted with the bundle's
//! initrd (which brings the agent), the real daemon and CLI. `vm exec`
//! goes CLI -> daemon (an upgraded connection) -> agent (QEMU's
//! virtio-serial port, or Firecracker's vsock) and back. Needs root, a
//! runtime bundle with the agent and a VMM; skips, saying why, without.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use common::vms::*;
use common::*;

/// A sandbox whose bundle brings the agent, or `None` (saying why).
fn agent_sandbox() -> Option<VmSandbox> {
    let bundle = runtime_dir().join("bundle.json");
    if let Ok(text) = std::fs::read_to_string(&bundle) {
        let desc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if desc["agent"] != true {
            skip("the runtime bundle's initrd has no agent (make runtime-debian rebuilds it)");
            return None;
        }
    }
    VmSandbox::new("")
}

/// An [`agent_sandbox`] whose DNS forwards nowhere, once it is this test's
/// turn to boot, with VM `name` created and running (1 vCPU, 384 MiB,
/// `extra` arguments); and what `vm create` printed.
fn agent_vm(name: &str, extra: &[&str]) -> Option<(VmSandbox, MutexGuard<'static, ()>, String)> {
    let t = agent_sandbox()?;
    let turn = booting();
    t.no_upstream_dns();
    let mut create = vec![
        "vm", "create", "--name", name, "--memory", "384", "--vcpus", "1",
    ];
    create.extend(extra);
    let created = ok(t.sb.banger(&create));
    Some((t, turn, created))
}

fn exec(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    let mut argv = vec!["vm", "exec"];
    argv.extend(args);
    sb.banger(&argv)
}

#[test]
fn vm_exec_runs_commands_through_the_agent() {
    let Some((t, _turn, created)) = agent_vm("box", &["--json"]) else {
        return;
    };
    let sb = &t.sb;
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert!(created["agent_ready_ms"].as_u64().is_some(), "{created}");
    assert!(
        created["agent_ready_ms"].as_u64() <= created["ssh_ready_ms"].as_u64(),
        "{created}"
    );
    let show: serde_json::Value =
        serde_json::from_str(&ok(sb.banger(&["vm", "show", "box", "--json"]))).unwrap();
    assert!(show["agent"]["version"].is_string(), "{show}");
    assert_eq!(show["agent"]["sshd_accepting"], true, "{show}");

    // Exit codes: 0, 7, and 128 + 9 for a kill.
    assert_eq!(exec(sb, &["box", "--", "true"]).status.code(), Some(0));
    assert_eq!(
        exec(sb, &["box", "--", "sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    assert_eq!(
        exec(sb, &["box", "--", "sh", "-c", "kill -9 $$"])
            .status
            .code(),
        Some(137)
    );
    // Stdout and stderr apart; env and workdir given.
    let out = exec(
        sb,
        &[
            "box",
            "--env",
            "GREETING=hi",
            "--workdir",
            "/etc",
            "--",
            "sh",
            "-c",
            "echo $GREETING from $(pwd); echo oops >&2",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi from /etc\n");
    assert_eq!(stderr(&out), "oops\n");
    // A program that is not there: a clear error, not a hang.
    fails(
        exec(sb, &["box", "--", "no-such-program"]),
        "no-such-program",
    );

    // 20 MB through stdin and back.
    let data: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    let mut cat = sb
        .command("banger")
        .args(["vm", "exec", "-i", "box", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = cat.stdin.take().unwrap();
    let feeder = {
        let data = data.clone();
        std::thread::spawn(move || stdin.write_all(&data))
    };
    let out = cat.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        out.stdout == data,
        "20 MB came back as {} bytes",
        out.stdout.len()
    );
    eprintln!("20 MB through vm exec -i cat in {:?}", started.elapsed());

    // A terminal: `tty` names a device, and the window size arrives.
    let script = |cmd: &str| {
        let banger = sb.command("banger");
        let envs: Vec<String> = sb
            .envs()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.display()))
            .collect();
        let line = format!(
            "stty rows 33 cols 101; env {} {} vm exec -it box -- {cmd}",
            envs.join(" "),
            banger.get_program().to_str().unwrap()
        );
        Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let tty = script("tty");
    assert!(stdout(&tty).contains("/dev/pts/"), "{}", stdout(&tty));
    let size = script("stty size");
    assert!(stdout(&size).contains("33 101"), "{}", stdout(&size));

    // The client killed: its program's whole process group goes too.
    let mut held = sb
        .command("banger")
        .args([
            "vm",
            "exec",
            "box",
            "--",
            "sh",
            "-c",
            "sleep 1001 & sleep 1002; wait",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sleeps = || stdout(&exec(sb, &["box", "--", "pgrep", "-c", "-x", "sleep"]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while sleeps().trim() != "2" {
        assert!(Instant::now() < deadline, "the sleeps never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    held.kill().unwrap();
    held.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sleeps().trim() != "0" {
        assert!(
            Instant::now() < deadline,
            "the process group outlived its client: {}",
            sleeps()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The clock: an hour wrong, then set from the host's.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let wrong = format!("@{}", now() as u64 + 3600);
    ok(exec(sb, &["box", "--", "date", "-s", &wrong]));
    let set: serde_json::Value =
        serde_json::from_str(&ok(sb.banger(&["vm", "clock", "box", "--json"]))).unwrap();
    let skew = set["skew_ms"].as_u64().unwrap();
    assert!((3_590_000..3_610_000).contains(&skew), "{set}");
    let before = now();
    let guest: f64 = ok(exec(sb, &["box", "--", "date", "+%s.%N"]))
        .trim()
        .parse()
        .unwrap();
    let after = now();
    assert!(
        guest > before - 1.0 && guest < after + 1.0,
        "guest clock {guest} vs host {before}..{after}"
    );

    // A stopped VM's agent: a clear error.
    ok(sb.banger(&["vm", "stop", "box"]));
    fails(exec(sb, &["box", "--", "true"]), "is stopped");
    ok(sb.banger(&["vm", "delete", "box"]));
}

#[test]
fn a_guest_without_sshd_is_reached_through_its_agent() {
    let Some((t, _turn, _)) = agent_vm("nossh", &[]) else {
        return;
    };
    let sb = &t.sb;
    // Take sshd out of the guest (its upper disk: the image stays whole),
    // as an image built without it would be.
    ok(exec(
        sb,
        &[
            "nossh",
            "--",
            "rm",
            "-f",
            "/usr/sbin/sshd",
            "/etc/systemd/system/multi-user.target.wants/ssh.service",
        ],
    ));
    ok(sb.banger(&["vm", "stop", "nossh"]));
    let started = ok(sb.banger(&["vm", "start", "nossh", "--json"]));
    let started: serde_json::Value = serde_json::from_str(&started).unwrap();
    assert!(started["agent_ready_ms"].as_u64().is_some(), "{started}");
    assert!(started["ssh_ready_ms"].is_null(), "{started}");
    assert_eq!(started["vm"]["agent"]["sshd_accepting"], false, "{started}");

    assert_eq!(
        stdout(&exec(sb, &["nossh", "--", "echo", "hello"])),
        "hello\n"
    );
    // vm cp both ways, over the agent.
    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("note.txt");
    std::fs::write(&file, "through the agent\n").unwrap();
    ok(sb.banger(&["vm", "cp", file.to_str().unwrap(), "nossh:/root/"]));
    assert_eq!(
        stdout(&exec(sb, &["nossh", "--", "cat", "/root/note.txt"])),
        "through the agent\n"
    );
    let back = host.path().join("back");
    ok(sb.banger(&["vm", "cp", "nossh:/etc/hostname", back.to_str().unwrap()]));
    assert_eq!(std::fs::read_to_string(&back).unwrap().trim(), "nossh");
    // vm ssh says what to do instead.
    let ssh = fails(sb.banger(&["vm", "ssh", "nossh", "--", "true"]), "no sshd");
    assert!(ssh.contains("banger vm exec"), "{ssh}");
    ok(sb.banger(&["vm", "delete", "nossh"]));
}

/// The daemon's resident memory, from /proc.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_hostile_agent_cannot_hang_or_grow_the_daemon() {
    let Some((t, _turn, _)) = agent_vm("evil", &[]) else {
        return;
    };
    let sb = &t.sb;
    assert_eq!(stdout(&exec(sb, &["evil", "--", "echo", "hi"])), "hi\n");
    let daemon = sb.daemon_pid().unwrap();
    let before = rss_kib(daemon);
    // Root in the guest replaces the agent with a program that holds its
    // port and answers everything with garbage, as fast as it can.
    let flood = "for d in /sys/class/virtio-ports/*; do \
                 [ \"$(cat $d/name)\" = org.banger.agent ] && port=/dev/${d##*/}; done; \
                 pkill -KILL -f banger-agent; sleep 1; \
                 exec cat /dev/urandom > $port";
    ok(sb.banger(&[
        "vm",
        "ssh",
        "evil",
        "--",
        &format!("setsid nohup sh -c '{flood}' >/dev/null 2>&1 < /dev/null &"),
    ]));
    std::thread::sleep(Duration::from_secs(3));
    // The daemon answers others at once, and an exec fails in bounded time.
    let listed = Instant::now();
    ok(sb.banger(&["vm", "list"]));
    assert!(
        listed.elapsed() < Duration::from_secs(5),
        "vm list took {:?}",
        listed.elapsed()
    );
    let tried = Instant::now();
    let refused = exec(sb, &["evil", "--", "true"]);
    assert!(
        !refused.status.success(),
        "an exec through garbage succeeded"
    );
    assert!(
        tried.elapsed() < Duration::from_secs(30),
        "the exec hung for {:?}",
        tried.elapsed()
    );
    eprintln!(
        "exec through a flood failed in {:?}: {}",
        tried.elapsed(),
        stderr(&refused).trim()
    );
    // Keep it flooding a while: the daemon's memory stays put.
    std::thread::sleep(Duration::from_secs(10));
    let after = rss_kib(daemon);
    eprintln!("daemon RSS {before} KiB before the flood, {after} KiB after");
    assert!(
        after < before + 16 * 1024,
        "the daemon grew from {before} to {after} KiB"
    );
    ok(sb.banger(&["vm", "delete", "evil", "--force"]));
}

#[test]
fn a_running_guest_takes_a_new_identity_through_its_agent() {
    let Some((t, _turn, _)) = agent_vm("who", &[]) else {
        return;
    };
    let sb = &t.sb;
    let show = |sb: &Sandbox| -> serde_json::Value {
        serde_json::from_str(&ok(sb.banger(&["vm", "show", "who", "--json"]))).unwrap()
    };
    let before = show(sb);
    let old_ip: std::net::Ipv4Addr = before["ip"].as_str().unwrap().parse().unwrap();
    let old_machine_id = stdout(&exec(sb, &["who", "--", "cat", "/etc/machine-id"]));

    let changed: serde_json::Value = serde_json::from_str(&ok(sb.banger(&[
        "vm",
        "identity",
        "who",
        "--hostname",
        "renamed",
        "--new-address",
        "--new-host-key",
        "--json",
    ])))
    .unwrap();
    let new_ip: std::net::Ipv4Addr = changed["ip"].as_str().unwrap().parse().unwrap();
    assert_ne!(new_ip, old_ip, "{changed}");
    assert_ne!(changed["host_key"], before["host_key"], "{changed}");
    assert_ne!(changed["mac"], before["mac"], "{changed}");

    // SSH answers on the new address with the new key (banger's client
    // trusts only the recorded key), and the guest knows its new name.
    let hostname = ok(sb.banger(&["vm", "ssh", "who", "--", "hostname"]));
    assert_eq!(hostname.trim(), "renamed");
    let guest_key = stdout(&exec(
        sb,
        &["who", "--", "cat", "/etc/ssh/ssh_host_ed25519_key.pub"],
    ));
    let recorded = changed["host_key"].as_str().unwrap();
    assert_eq!(
        guest_key.split_whitespace().nth(1),
        recorded.split_whitespace().nth(1),
        "the guest serves another key than banger recorded"
    );
    assert_ne!(
        stdout(&exec(sb, &["who", "--", "cat", "/etc/machine-id"])),
        old_machine_id
    );
    // The `.vm` name follows; the old address is dead.
    let gateway: std::net::Ipv4Addr = sb.subnet.split('/').next().unwrap().parse().unwrap();
    assert_eq!(resolve_a(gateway, "who.vm"), vec![new_ip]);
    let old = std::net::SocketAddr::from((old_ip, 22));
    assert!(
        std::net::TcpStream::connect_timeout(&old, Duration::from_secs(3)).is_err(),
        "the old address {old_ip} still answers"
    );
    // The guest still reaches the host's side of the bridge from its new address.
    ok(exec(
        sb,
        &[
            "who",
            "--",
            "ping",
            "-c",
            "1",
            "-W",
            "3",
            &gateway.to_string(),
        ],
    ));
    ok(sb.banger(&["vm", "delete", "who", "--force"]));
}
