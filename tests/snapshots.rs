//! Memory snapshots end to end: a real guest, the real daemon and CLI.
//! `vm pause`/`vm resume` stop and run its vCPUs; `vm suspend` writes its
//! memory to the VM's directory and ends the VMM; `vm start` restores it
//! where it was. Needs root, a runtime bundle with the agent and QEMU;
//! skips, saying why, without.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::vms::*;
use common::*;

/// A sandbox whose VMs run on QEMU (suspend is QEMU's so far) with VM
/// `name` created and running, once it is this test's turn to boot.
fn running_vm(name: &str) -> Option<(VmSandbox, std::sync::MutexGuard<'static, ()>)> {
    let t = VmSandbox::with_vmm(&runtime_dir(), "qemu", "")?;
    let turn = booting();
    t.no_upstream_dns();
    ok(t.sb.banger(&[
        "vm", "create", "--name", name, "--memory", "384", "--vcpus", "1",
    ]));
    Some((t, turn))
}

/// Runs `script` in VM `name` through the agent; its stdout.
fn sh(sb: &Sandbox, name: &str, script: &str) -> String {
    ok(sb.banger(&["vm", "exec", name, "--", "sh", "-c", script]))
}

fn state(t: &VmSandbox, name: &str) -> String {
    t.json(&["vm", "show", name])["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// CPU time (user + system, in clock ticks) process `pid` has used.
fn cpu_ticks(pid: i64) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// How far VM `name`'s clock is from the host's, in whole seconds.
fn clock_skew(sb: &Sandbox, name: &str) -> i64 {
    let guest: i64 = sh(sb, name, "date +%s").trim().parse().unwrap();
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (guest - host).abs()
}

/// A counter the guest bumps ten times a second, in its tmpfs.
const COUNTER: &str = "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /dev/shm/count; sleep 0.1; done' >/dev/null 2>&1 &";

fn count(sb: &Sandbox, name: &str) -> u64 {
    sh(sb, name, "cat /dev/shm/count 2>/dev/null || echo 0")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_paused_guest_makes_no_progress_and_stays_paused_across_a_daemon_restart() {
    let Some((t, _turn)) = running_vm("still") else {
        return;
    };
    let sb = &t.sb;
    sh(sb, "still", COUNTER);
    assert!(wait_until(Duration::from_secs(10), || count(sb, "still") > 5));
    let pid = t.json(&["vm", "show", "still"])["pid"].as_i64().unwrap();

    let paused = t.json(&["vm", "pause", "still"]);
    assert_eq!(paused["state"], "paused", "{paused}");
    let list = t.json(&["vm", "list"]);
    assert_eq!(list[0]["state"], "paused", "{list}");
    // A paused guest cannot be reached, and says how to go on.
    fails(
        sb.banger(&["vm", "exec", "still", "--", "true"]),
        "vm resume",
    );
    // Its VMM uses (next to) no CPU: under TCG a running guest's vCPU
    // thread alone takes a good share of a core.
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    assert!(used < 20, "a paused VMM used {used} ticks in 2 s");

    // The next daemon finds it paused, not running and not stopped.
    ok(sb.banger(&["daemon", "stop"]));
    assert_eq!(state(&t, "still"), "paused");
    assert!(process_alive(pid as i32), "the VMM died with the daemon");

    ok(sb.banger(&["vm", "resume", "still"]));
    let at_resume = count(sb, "still");
    assert!(
        wait_until(Duration::from_secs(10), || count(sb, "still")
            > at_resume + 5),
        "the counter did not go on after resume"
    );
    // Its clock was set on resume: within a second or two of the host's.
    assert!(clock_skew(sb, "still") <= 2);
    // And it stops cleanly from paused too.
    ok(sb.banger(&["vm", "pause", "still"]));
    ok(sb.banger(&["vm", "stop", "still"]));
    assert_eq!(state(&t, "still"), "stopped");
}

#[test]
fn a_suspended_guest_comes_back_where_it_was_and_a_bad_snapshot_loses_nothing() {
    let Some((t, _turn)) = running_vm("sleepy") else {
        return;
    };
    let sb = &t.sb;
    let dir = sb.state_dir().join("vms/sleepy");
    // A process, a shell variable it holds and a tmpfs file: all memory.
    let sleeper = sh(
        sb,
        "sleepy",
        "nohup sh -c 'X=kept; while :; do echo $X > /dev/shm/var; sleep 1; done' >/dev/null 2>&1 & echo $!",
    );
    sh(sb, "sleepy", "echo tmpfs > /dev/shm/file");
    let host_key = std::fs::read_to_string(dir.join("known_hosts")).unwrap();
    let vm = t.json(&["vm", "show", "sleepy"]);
    let (pid, tap) = (
        vm["pid"].as_i64().unwrap(),
        vm["tap"].as_str().unwrap().to_string(),
    );

    let suspended = t.json(&["vm", "suspend", "sleepy"]);
    assert_eq!(suspended["state"], "suspended", "{suspended}");
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(pid as i32)),
        "the VMM outlived the suspend"
    );
    assert!(!link_exists(&tap), "the tap outlived the suspend");
    for file in ["snapshot/memory", "snapshot/snapshot.json"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    assert!(!dir.join("snapshot.tmp").exists());
    fails(
        sb.banger(&["vm", "ssh", "sleepy", "--", "true"]),
        "suspended",
    );

    let started = t.json(&["vm", "start", "sleepy"]);
    assert_eq!(started["restored"], true, "{started}");
    assert!(started["ssh_ready_ms"].as_u64().is_some(), "{started}");
    let still = sh(
        sb,
        "sleepy",
        &format!("kill -0 {} && cat /dev/shm/file", sleeper.trim()),
    );
    assert_eq!(still.trim(), "tmpfs");
    assert_eq!(
        sh(sb, "sleepy", "sleep 1.2; cat /dev/shm/var").trim(),
        "kept"
    );
    assert!(clock_skew(sb, "sleepy") <= 2);
    // SSH answers with the same host key (known_hosts is strict).
    assert_eq!(
        ok(sb.banger(&["vm", "ssh", "sleepy", "--", "cat", "/dev/shm/file"])).trim(),
        "tmpfs"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("known_hosts")).unwrap(),
        host_key
    );
    assert!(
        !dir.join("snapshot").exists(),
        "a restored snapshot is consumed"
    );

    // A damaged snapshot: a clear error, the VM still suspended, nothing
    // half made (no VMM, no tap); --cold boots it from its disks.
    ok(sb.banger(&["vm", "suspend", "sleepy"]));
    let memory = dir.join("snapshot/memory");
    let len = std::fs::metadata(&memory).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&memory)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = fails(sb.banger(&["vm", "start", "sleepy"]), "damaged");
    assert!(err.contains("--cold"), "{err}");
    assert_eq!(state(&t, "sleepy"), "suspended");
    assert!(!link_exists(&tap));
    assert!(vmm_processes().iter().all(|(_, cwd)| *cwd != dir));
    // A snapshot whose bytes are wrong, not short: the VMM refuses it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&memory)
        .unwrap()
        .set_len(len)
        .unwrap();
    let err = fails(sb.banger(&["vm", "start", "sleepy"]), "cannot restore");
    assert!(err.contains("--cold"), "{err}");
    assert_eq!(state(&t, "sleepy"), "suspended");
    assert!(!link_exists(&tap));
    assert!(vmm_processes().iter().all(|(_, cwd)| *cwd != dir));

    let cold = t.json(&["vm", "start", "sleepy", "--cold"]);
    assert_eq!(cold["restored"], false, "{cold}");
    assert!(!dir.join("snapshot").exists());
    assert_eq!(
        sh(sb, "sleepy", "cat /dev/shm/file || echo gone").trim(),
        "gone"
    );

    // Delete takes a suspended VM's snapshot with it.
    ok(sb.banger(&["vm", "suspend", "sleepy"]));
    ok(sb.banger(&["vm", "delete", "sleepy"]));
    assert!(!dir.exists());
}

/// What makes a VM itself, as its guest says (through SSH: its own host
/// key, address and name must all hold for that to work).
fn identity(sb: &Sandbox, name: &str) -> Vec<String> {
    let said = ok(sb.banger(&[
        "vm",
        "ssh",
        name,
        "--",
        "hostname; cat /etc/machine-id /etc/ssh/ssh_host_ed25519_key.pub; \
         ip -4 -o addr show eth0 | awk '{print $4}'; cat /sys/class/net/eth0/address",
    ]));
    said.lines().map(str::to_string).collect()
}

#[test]
fn vms_restored_from_one_warm_template_are_each_their_own() {
    let n = std::process::id() % 200 + 20;
    let Some(t) = VmSandbox::with_vmm(&runtime_dir(), "qemu", "") else {
        return;
    };
    let upstream = common::upstream::Upstream::new(n);
    let _turn = booting();
    let config = std::fs::read_to_string(t.sb.config_file()).unwrap()
        + &format!("dns_upstreams = [\"{}:53\"]\n", upstream.ip);
    std::fs::write(t.sb.config_file(), config).unwrap();
    let sb = &t.sb;
    let shape = ["--vcpus", "1", "--memory", "384"];

    // No template yet: it boots, and says why.
    let mut create = vec!["vm", "create", "--name", "cold"];
    create.extend(shape);
    let cold = t.json(&create);
    assert_eq!(cold["restored"], false);
    assert!(
        cold["booted_because"]
            .as_str()
            .unwrap()
            .contains("image warm"),
        "{cold}"
    );
    ok(sb.banger(&["vm", "delete", "cold"]));

    let mut warm = vec!["image", "warm", "default"];
    warm.extend(shape);
    let template = t.json(&warm);
    assert_eq!(template["key"], "qemu-1cpu-384mib", "{template}");
    let shown = t.json(&["image", "show", "default"]);
    assert_eq!(shown["templates"][0]["key"], "qemu-1cpu-384mib", "{shown}");
    assert!(
        t.json(&["vm", "list"]).as_array().unwrap().is_empty(),
        "the warm-up VM stayed"
    );

    let mut ids = Vec::new();
    for name in ["one", "two"] {
        let mut create = vec!["vm", "create", "--name", name];
        create.extend(shape);
        let made = t.json(&create);
        assert_eq!(made["template"], "qemu-1cpu-384mib", "{made}");
        assert_eq!(made["restored"], true, "{made}");
        ids.push(identity(sb, name));
    }
    let (one, two) = (&ids[0], &ids[1]);
    assert_eq!(one[0], "one");
    assert_eq!(two[0], "two");
    for (i, what) in ["machine-id", "host key", "address", "MAC"]
        .iter()
        .enumerate()
    {
        assert_ne!(one[i + 1], two[i + 1], "both have the same {what}");
    }
    let (a, b) = (
        t.json(&["vm", "show", "one"]),
        t.json(&["vm", "show", "two"]),
    );
    assert_eq!(one[3], format!("{}/24", a["ip"].as_str().unwrap()));
    assert_eq!(one[4], a["mac"].as_str().unwrap().to_ascii_lowercase());
    let b_ip = b["ip"].as_str().unwrap();

    // By name to each other, and out through NAT to the test upstream.
    let got = ok(sb.banger(&["vm", "ssh", "one", "--", "getent", "hosts", "two.vm"]));
    assert!(got.starts_with(b_ip), "{got}");
    for name in ["one", "two"] {
        let reply = ok(sb.banger(&[
            "vm",
            "ssh",
            name,
            "--",
            "timeout 10 bash -c 'exec 3<>/dev/tcp/upstream.test/8080; cat <&3'",
        ]));
        assert_eq!(reply.trim(), format!("peer {}", upstream.host_ip));
    }

    // The guard pairs each tap with its own VM's MAC and IP: `one` sending
    // as `two` is dropped.
    let gateway = sb.subnet.split('/').next().unwrap().to_string();
    let heard = heard_from(
        sb,
        "one",
        &gateway,
        &format!(
            "
                echo own > {{dest}}
                ip addr add {b_ip}/32 dev eth0
                ip route add {gateway}/32 dev eth0 src {b_ip}
                echo stolen-ip > {{dest}}
                ip route del {gateway}/32 dev eth0 src {b_ip}
                ip addr del {b_ip}/32 dev eth0
            "
        ),
    );
    assert_eq!(
        heard,
        [format!("own from {}", a["ip"].as_str().unwrap())],
        "{heard:?}"
    );

    // Each keeps its own writes across a stop and a (cold) start, and is
    // still itself.
    for name in ["one", "two"] {
        sh(sb, name, &format!("echo {name} > /root/mine; sync"));
    }
    for name in ["one", "two"] {
        ok(sb.banger(&["vm", "stop", name]));
        let started = t.json(&["vm", "start", name]);
        assert_eq!(started["restored"], false, "{started}");
        assert_eq!(sh(sb, name, "cat /root/mine").trim(), name);
        assert_eq!(identity(sb, name), ids[(name == "two") as usize]);
    }
}

#[test]
fn a_fork_runs_beside_its_source_with_what_it_had() {
    let Some((t, _turn)) = running_vm("src") else {
        return;
    };
    let sb = &t.sb;
    sh(sb, "src", "echo before > /root/before; sync");
    let sleeper = sh(sb, "src", "nohup sleep 9999 >/dev/null 2>&1 & echo $!");
    let forked = t.json(&["vm", "fork", "src", "new"]);
    assert_eq!(forked["restored"], true, "{forked}");
    assert!(forked["source_paused_ms"].as_u64().is_some(), "{forked}");
    sh(sb, "src", "echo after > /root/after; sync");

    // Both run, each itself; the fork has what the source had before it,
    // its processes included, and nothing written after.
    assert_eq!(state(&t, "src"), "running");
    assert_eq!(state(&t, "new"), "running");
    let (src, new) = (identity(sb, "src"), identity(sb, "new"));
    assert_eq!(new[0], "new");
    assert_ne!(src[1..], new[1..]);
    assert_eq!(sh(sb, "new", "cat /root/before").trim(), "before");
    assert_eq!(
        sh(
            sb,
            "new",
            "test -e /root/after && echo there || echo absent"
        )
        .trim(),
        "absent"
    );
    assert_eq!(sh(sb, "src", "cat /root/after").trim(), "after");
    assert!(
        sh(
            sb,
            "new",
            &format!("kill -0 {} && echo alive", sleeper.trim())
        )
        .contains("alive")
    );
    // The source's filesystems were thawed again.
    sh(sb, "src", "echo still-writable > /root/thawed");
    sh(sb, "new", "echo writable > /root/thawed");
}
