//! Crash consistency on real guests: a logout under a running VM, a second
//! boot of the same disks, concurrent operations on one name, and the daemon
//! killed with SIGKILL at every step of create, start, stop and delete.
//! After each, every VM is whole and usable or completely gone, and the
//! host (VMM processes, taps, nftables, files) agrees with the database.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::vms::{VmSandbox, booting, link_exists};
use common::*;

/// Kept short so a stop of a guest still booting falls back to a kill soon.
const CONFIG: &str = "stop_timeout_secs = 3\n";

fn sandbox() -> Option<VmSandbox> {
    let vs = VmSandbox::new(CONFIG)?;
    vs.no_upstream_dns();
    Some(vs)
}

/// VMM processes (by executable) working anywhere in this sandbox, with
/// the directory each works in.
fn vmms(vs: &VmSandbox) -> Vec<(i32, PathBuf)> {
    let root = vs.sb.state_dir().join("vms");
    let mut found = vmm_processes();
    found.retain(|(_, cwd)| cwd.starts_with(&root));
    found
}

/// This sandbox's taps: named from the guest IP, so from its subnet.
fn taps(vs: &VmSandbox) -> BTreeSet<String> {
    let octets: Vec<u32> = vs
        .sb
        .subnet
        .split(['.', '/'])
        .map(|o| o.parse().unwrap())
        .collect();
    let prefix = format!(
        "bg-{:06x}",
        (octets[0] << 16) | (octets[1] << 8) | octets[2]
    );
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn nft_table(vs: &VmSandbox) -> Option<String> {
    let out = Command::new("nft")
        .args(["list", "table", "ip", &vs.sb.nat_table])
        .output()
        .ok()?;
    out.status.success().then(|| stdout(&out))
}

fn list(vs: &VmSandbox) -> Vec<serde_json::Value> {
    let out = vs.sb.banger(&["vm", "list", "--json"]);
    if !out.status.success() {
        panic!("vm list: {}\ndaemon log:\n{}", stderr(&out), log_tail(vs));
    }
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

fn log_tail(vs: &VmSandbox) -> String {
    let log = std::fs::read_to_string(vs.sb.state_dir().join("bangerd.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

const TRANSIENT: [&str; 7] = [
    "creating",
    "starting",
    "stopping",
    "deleting",
    "suspending",
    "restoring",
    "forking",
];

/// The VMs, once none is in a transient state (reconcile finishes a stop
/// in the background).
fn settled(vs: &VmSandbox) -> Vec<serde_json::Value> {
    let mut vms = list(vs);
    let settled_in_time = wait_until(Duration::from_secs(30), || {
        vms = list(vs);
        vms.iter()
            .all(|vm| !TRANSIENT.contains(&vm["state"].as_str().unwrap_or_default()))
    });
    assert!(settled_in_time, "VMs still in transient states: {vms:#?}");
    vms
}

/// Every way the host can disagree with the database, as messages.
fn inconsistencies(vs: &VmSandbox, vms: &[serde_json::Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let vmms = vmms(vs);
    let taps = taps(vs);
    let table = nft_table(vs).unwrap_or_default();
    let vms_dir = vs.sb.state_dir().join("vms");
    let mut expected_taps = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for vm in vms {
        let name = vm["name"].as_str().unwrap();
        let state = vm["state"].as_str().unwrap();
        let dir = vms_dir.join(name);
        dirs.insert(dir.clone());
        let ip = vm["ip"].as_str().unwrap_or_default();
        // Taps are named from the address (`vm list` does not show them).
        let tap = &ip
            .parse::<std::net::Ipv4Addr>()
            .map(|a| format!("bg-{:08x}", u32::from(a)))
            .unwrap_or_default();
        let running_here: Vec<i32> = vmms
            .iter()
            .filter(|(_, d)| *d == dir)
            .map(|(p, _)| *p)
            .collect();
        // A layered VM's root writes go to its upper disk; a clone's to its copy.
        let root = if vm["root_mode"] == "layered" {
            "upper.ext4"
        } else {
            "rootfs.ext4"
        };
        for file in [root, "work.ext4", "known_hosts", "ssh_host_ed25519_key"] {
            if !dir.join(file).is_file() {
                problems.push(format!("{name} ({state}) lacks {file}"));
            }
        }
        let snapshot = dir.join("snapshot/snapshot.json").is_file();
        if snapshot != (state == "suspended") {
            problems.push(format!("{name} is {state} with snapshot: {snapshot}"));
        }
        if dir.join("snapshot.tmp").exists() {
            problems.push(format!("{name} ({state}) has a partial snapshot"));
        }
        match state {
            "running" | "paused" => {
                if running_here.len() != 1 {
                    problems.push(format!("{name} is running with VMMs {running_here:?}"));
                }
                if !link_exists(tap) {
                    problems.push(format!("{name} is running without its tap {tap}"));
                }
                if !table.contains(ip) {
                    problems.push(format!(
                        "{name} is running but {ip} is not in the NAT table"
                    ));
                }
                expected_taps.insert(tap.to_string());
            }
            "created" | "stopped" | "failed" | "suspended" => {
                if !running_here.is_empty() {
                    problems.push(format!(
                        "{name} is {state} but VMMs {running_here:?} run on it"
                    ));
                }
                if table.contains(&format!("{ip} ")) {
                    problems.push(format!("{name} is {state} but {ip} is in the NAT table"));
                }
            }
            other => problems.push(format!("{name} is in state {other}")),
        }
    }
    for tap in taps.difference(&expected_taps) {
        problems.push(format!("tap {tap} belongs to no running VM"));
    }
    for (pid, dir) in &vmms {
        if !dirs.contains(dir) {
            problems.push(format!("VMM {pid} runs in {} of no VM", dir.display()));
        }
    }
    for entry in std::fs::read_dir(&vms_dir).into_iter().flatten().flatten() {
        if !dirs.contains(&entry.path()) {
            problems.push(format!("{} belongs to no VM", entry.path().display()));
        }
    }
    if vms.iter().all(|vm| vm["state"] != "running") && nft_table(vs).is_some() {
        problems.push("the NAT table is left with no VM running".into());
    }
    problems
}

/// The VMs once the host agrees with them; after a crash the next daemon
/// may still be finishing a stop in the background, so this waits a while.
fn assert_consistent(vs: &VmSandbox, context: &str) -> Vec<serde_json::Value> {
    let mut vms = settled(vs);
    let mut problems = inconsistencies(vs, &vms);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !problems.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        vms = settled(vs);
        problems = inconsistencies(vs, &vms);
    }
    if !problems.is_empty() {
        panic!(
            "{context}:\n  {}\nVMs: {vms:#?}\ndaemon log:\n{}",
            problems.join("\n  "),
            log_tail(vs)
        );
    }
    vms
}

/// Every VM is usable: one that is not running starts; then all are
/// deleted, and nothing of them is left.
fn use_then_remove_all(vs: &VmSandbox, context: &str) {
    for vm in list(vs) {
        let name = vm["name"].as_str().unwrap();
        if vm["state"] != "running" {
            let out = vs.sb.banger(&["vm", "start", "--no-wait", name]);
            assert!(
                out.status.success(),
                "{context}: {name} cannot start: {}",
                stderr(&out)
            );
        }
    }
    assert_consistent(vs, &format!("{context}, after starting every VM"));
    for vm in list(vs) {
        ok(vs
            .sb
            .banger(&["vm", "delete", "--force", vm["name"].as_str().unwrap()]));
    }
    let vms = assert_consistent(vs, &format!("{context}, after deleting every VM"));
    assert!(vms.is_empty());
    assert!(
        vmms(vs).is_empty() && taps(vs).is_empty(),
        "{context}: leftovers"
    );
}

fn stop_daemon(vs: &VmSandbox) {
    let _ = vs.sb.banger(&["daemon", "stop"]);
    if let Some(pid) = vs.sb.daemon_pid() {
        assert!(wait_until(Duration::from_secs(10), || !process_alive(pid)));
    }
}

#[test]
fn a_logout_under_a_running_vm_never_boots_it_twice() {
    let Some(vs) = sandbox() else { return };
    let _turn = booting();
    ok(vs
        .sb
        .banger(&["vm", "create", "--name", "stays", "--no-wait"]));
    let before = vmms(&vs);
    assert_eq!(before.len(), 1, "{before:?}");
    let tap = vs.json(&["vm", "show", "stays"])["tap"]
        .as_str()
        .unwrap()
        .to_string();

    // logind removes /run/user/$UID at logout; here the daemon dies too.
    let daemon = vs.sb.daemon_pid().unwrap();
    signal(daemon, rustix::process::Signal::KILL);
    assert!(wait_until(Duration::from_secs(5), || !process_alive(
        daemon
    )));
    std::fs::remove_dir_all(vs.sb.runtime_dir()).unwrap();

    // The next command starts a daemon, which adopts the VM. (Once in CI
    // the new daemon found the lock still held after the old one was gone:
    // say who held it if that happens again.)
    let shown = vs.sb.banger(&["vm", "show", "stays", "--json"]);
    if !shown.status.success() {
        panic!(
            "{}\nbangerd.lock is held by: {:?}",
            stderr(&shown),
            holders_of(&vs.sb.state_dir().join("bangerd.lock"))
        );
    }
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["state"], "running");
    fails(vs.sb.banger(&["vm", "start", "stays"]), "is running");
    assert_eq!(vmms(&vs), before, "the VMM changed or got a twin");
    assert!(link_exists(&tap), "the running VM lost its tap");

    // A second daemon on the same state directory is refused, wherever
    // its runtime directory is.
    let second = vs
        .sb
        .command("bangerd")
        .env("XDG_RUNTIME_DIR", vs.sb.path("home"))
        .output()
        .unwrap();
    fails(second, "already running");

    // The running daemon's socket goes with another logout; it listens again.
    std::fs::remove_dir_all(vs.sb.runtime_dir()).unwrap();
    assert!(wait_until(Duration::from_secs(5), || vs
        .sb
        .socket()
        .exists()));
    assert_eq!(vs.json(&["vm", "show", "stays"])["state"], "running");

    // And the VM is still controllable: its control socket lives with it.
    let out = ok(vs.sb.banger(&["vm", "stop", "stays"]));
    assert!(out.contains("stopped"), "{out}");
    assert!(vmms(&vs).is_empty());
    use_then_remove_all(&vs, "after a logout");
}

#[test]
fn a_second_boot_of_running_disks_fails_in_the_launcher() {
    let Some(vs) = sandbox() else { return };
    let _turn = booting();
    ok(vs
        .sb
        .banger(&["vm", "create", "--name", "locked", "--no-wait"]));
    let (pid, _) = vmms(&vs).pop().unwrap();
    let logs = banger::vmm::vmm_io::VmmLogs {
        console: vs.sb.path("twin-console.log"),
        vmm_log: vs.sb.path("twin-vmm.log"),
        cap: 1 << 20,
        relay: PathBuf::from(env!("CARGO_BIN_EXE_bangerd")),
        log_fifo: None,
    };
    // Both launchers take their descriptors from here: no VmmIo, no VMM.
    // A disk the VMM writes is locked to anyone else; the image under a
    // layered root is shared with readers but not with a writer.
    use banger::vmm::disklock::Disk;
    let disks = vs.json(&["vm", "show", "locked"])["disks"].clone();
    let mut writable = Vec::new();
    for disk in disks.as_array().unwrap() {
        let path = PathBuf::from(disk["path"].as_str().unwrap());
        let err = banger::vmm::vmm_io::VmmIo::prepare(&logs, &[Disk::rw(&path)]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("in use by another VMM"), "{message}");
        assert!(message.contains(&format!("pid {pid}")), "{message}");
        if disk["shared"] == false {
            writable.push(path);
        }
    }
    assert!(!writable.is_empty(), "{disks:#}");
    assert_eq!(vmms(&vs).len(), 1);
    ok(vs.sb.banger(&["vm", "stop", "--force", "locked"]));
    // Once the VMM is gone, so are its locks (and a relay starts, which
    // takes a runtime).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let io = rt
        .block_on(async { banger::vmm::vmm_io::VmmIo::prepare(&logs, &[Disk::rw(&writable[0])]) });
    assert!(io.is_ok(), "{io:?}");
    drop(io);
    use_then_remove_all(&vs, "after the disk-lock check");
}

/// A small ext4 image, so the race's many creates copy little: the
/// directories banger writes into, nothing to boot (its VMM soon exits).
fn small_image(vs: &VmSandbox) {
    let image = common::small_image(vs.sb.root.path());
    ok(vs
        .sb
        .banger(&["image", "import", "small", image.to_str().unwrap()]));
}

#[test]
fn concurrent_delete_create_and_start_of_one_name_stay_legal() {
    let Some(vs) = sandbox() else { return };
    let _turn = booting();
    small_image(&vs);
    let create = [
        &["vm", "create", "--name", "race", "--no-start"],
        &ON_SMALL_IMAGE[..],
    ]
    .concat();
    ok(vs.sb.banger(&create));
    let rounds = 30;
    let mut outcomes = std::collections::BTreeMap::new();
    let started = std::time::Instant::now();
    for round in 0..rounds {
        let spawn = |args: &[&str]| {
            vs.sb
                .command("banger")
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        // The order they reach the daemon varies from round to round.
        let mut children = match round % 3 {
            0 => vec![
                spawn(&["vm", "delete", "--force", "race"]),
                spawn(&create),
                spawn(&["vm", "start", "--no-wait", "race"]),
            ],
            1 => vec![
                spawn(&create),
                spawn(&["vm", "start", "--no-wait", "race"]),
                spawn(&["vm", "delete", "--force", "race"]),
            ],
            _ => vec![
                spawn(&["vm", "start", "--no-wait", "race"]),
                spawn(&["vm", "delete", "--force", "race"]),
                spawn(&create),
            ],
        };
        for child in &mut children {
            child.wait().unwrap();
        }
        let dir = vs.sb.state_dir().join("vms/race");
        let twins: Vec<_> = vmms(&vs).into_iter().filter(|(_, d)| *d == dir).collect();
        assert!(
            twins.len() <= 1,
            "round {round}: two VMMs on one disk: {twins:?}"
        );
        let vms = list(&vs);
        for vm in &vms {
            let state = vm["state"].as_str().unwrap();
            assert!(
                ["created", "running", "stopped", "failed"].contains(&state),
                "round {round}: {vm:#?}"
            );
        }
        let outcome = vms
            .first()
            .map_or("gone", |vm| vm["state"].as_str().unwrap());
        *outcomes.entry(outcome.to_string()).or_insert(0) += 1;
        if vms.is_empty() {
            assert!(
                !dir.exists(),
                "round {round}: files of a deleted VM are left"
            );
            ok(vs.sb.banger(&create));
        }
    }
    println!(
        "{rounds} rounds of delete+create+start on one name in {:.1} s; states after each: {outcomes:?}",
        started.elapsed().as_secs_f64()
    );
    // The small image does not boot: its VMM may have exited by now.
    let _ = assert_consistent(&vs, "after the race");
    for vm in list(&vs) {
        ok(vs
            .sb
            .banger(&["vm", "delete", "--force", vm["name"].as_str().unwrap()]));
    }
    assert!(vmms(&vs).is_empty() && taps(&vs).is_empty());
}

/// Runs `action` with the daemon set to die at `point`; checks that it did,
/// and that the next daemon leaves everything consistent and usable.
fn crash_at(vs: &VmSandbox, point: &str, setup: &[&[&str]], action: &[&str]) {
    // BANGER_CRASH_ONLY=stop: runs only the points it starts (debugging).
    if std::env::var("BANGER_CRASH_ONLY").is_ok_and(|only| !point.starts_with(&only)) {
        return;
    }
    stop_daemon(vs);
    for args in setup {
        ok(vs.sb.banger(args));
    }
    stop_daemon(vs);
    let log = vs.sb.state_dir().join("bangerd.log");
    let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let out = vs
        .sb
        .command("banger")
        .env("BANGER_CRASH_AT", point)
        .args(action)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{point}: {action:?} succeeded; the crash point was not reached"
    );
    let text = std::fs::read(&log).unwrap();
    let said = String::from_utf8_lossy(&text[log_start as usize..]).into_owned();
    assert!(
        said.contains(&format!("point=\"{point}\"")) || said.contains(&format!("point={point}")),
        "{point}: the daemon did not die there:\n{said}"
    );
    if let Some(pid) = vs.sb.daemon_pid() {
        assert!(
            wait_until(Duration::from_secs(5), || !process_alive(pid)),
            "{point}: the daemon still runs"
        );
    }
    // The next command starts a daemon without the crash point.
    let vms = assert_consistent(vs, &format!("after a crash at {point}"));
    println!(
        "{point}: {:?}",
        vms.iter()
            .map(|v| format!("{} {}", v["name"], v["state"]))
            .collect::<Vec<_>>()
    );
    use_then_remove_all(vs, &format!("after a crash at {point}"));
}

/// A guest is fenced before its tap exists: the daemon killed right after
/// making the first VM's tap (before the VMM starts) leaves the bridge
/// guard holding that tap with its own MAC and IP, so no frame of it ever
/// passes unchecked.
#[test]
fn a_new_guest_is_fenced_before_its_tap_comes_up() {
    let Some(vs) = sandbox() else { return };
    ok(vs
        .sb
        .banger(&["vm", "create", "--name", "fenced", "--no-start"]));
    let vm = vs.json(&["vm", "show", "fenced"]);
    let (tap, mac, ip) = (
        vm["tap"].as_str().unwrap().to_string(),
        vm["mac"].as_str().unwrap().to_ascii_lowercase(),
        vm["ip"].as_str().unwrap().to_string(),
    );
    stop_daemon(&vs);
    let out = vs
        .sb
        .command("banger")
        .env("BANGER_CRASH_AT", "start:tap")
        .args(["vm", "start", "--no-wait", "fenced"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the crash point was not reached");
    if let Some(pid) = vs.sb.daemon_pid() {
        assert!(wait_until(Duration::from_secs(5), || !process_alive(pid)));
    }
    assert!(link_exists(&tap), "the daemon died before making {tap}");
    let guard = Command::new("nft")
        .args(["list", "table", "bridge", &vs.sb.nat_table])
        .output()
        .unwrap();
    let guard = stdout(&guard);
    assert!(
        guard.contains(&format!("\"{tap}\" . {mac} . {ip}")),
        "{tap} came up unfenced:\n{guard}"
    );
    use_then_remove_all(&vs, "after a crash with the tap just made");
}

#[test]
fn a_daemon_killed_at_any_step_leaves_every_vm_whole_or_gone() {
    let Some(vs) = sandbox() else { return };
    let _turn = booting();
    let create: &[&str] = &["vm", "create", "--name", "crash", "--no-wait"];
    let create_stopped: &[&str] = &["vm", "create", "--name", "crash", "--no-start"];
    let mut points = 0;
    // create, and its first boot
    for point in [
        "create:row",
        "create:disks",
        "create:files",
        "create:created",
        "start:tap",
        "start:spawned",
        "start:running",
        "start:nat",
    ] {
        crash_at(&vs, point, &[], create);
        points += 1;
    }
    // start of a stopped VM
    for point in ["start:tap", "start:spawned", "start:running", "start:nat"] {
        crash_at(
            &vs,
            point,
            &[create_stopped],
            &["vm", "start", "--no-wait", "crash"],
        );
        points += 1;
    }
    // stop of a running VM
    for point in ["stop:marked", "stop:requested", "stop:halted"] {
        crash_at(&vs, point, &[create], &["vm", "stop", "crash"]);
        points += 1;
    }
    // delete of a running and of a stopped VM
    for made in [create, create_stopped] {
        for point in [
            "delete:marked",
            "delete:halted",
            "delete:tap",
            "delete:files",
        ] {
            crash_at(&vs, point, &[made], &["vm", "delete", "crash"]);
            points += 1;
        }
    }
    println!("{points} kill points, every VM whole or gone after each");
}

/// Every path below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

/// Suspend and restore (QEMU's), killed at each of their steps: every VM
/// is left running, suspended (its snapshot whole) or stopped, never half.
#[test]
fn a_daemon_killed_mid_suspend_or_restore_leaves_every_vm_whole() {
    let Some(vs) = VmSandbox::with_vmm(&common::vms::runtime_dir(), "qemu", CONFIG) else {
        return;
    };
    vs.no_upstream_dns();
    let _turn = booting();
    let create: &[&str] = &["vm", "create", "--name", "crash", "--no-wait"];
    let suspend: &[&str] = &["vm", "suspend", "crash"];
    let mut points = 0;
    for point in ["suspend:marked", "suspend:saved", "suspend:written"] {
        crash_at(&vs, point, &[create], suspend);
        points += 1;
    }
    // A fork: the source runs on, the new VM is whole or gone.
    for point in ["fork:marked", "fork:saved", "fork:written"] {
        crash_at(&vs, point, &[create], &["vm", "fork", "crash", "forked"]);
        points += 1;
    }
    // A warm-up: its VM and its half-made template go.
    crash_at(&vs, "warm:staged", &[], &["image", "warm", "default"]);
    let staged: Vec<_> = walk(&vs.sb.root.path().join("data"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(staged.is_empty(), "half-made templates left: {staged:?}");
    points += 1;
    for point in [
        "start:tap",
        "start:spawned",
        "restore:consumed",
        "start:running",
    ] {
        crash_at(
            &vs,
            point,
            &[create, suspend],
            &["vm", "start", "--no-wait", "crash"],
        );
        points += 1;
    }
    println!("{points} kill points, every VM whole or gone after each");
}

#[test]
fn a_guest_flooding_its_console_is_capped_and_the_daemon_answers() {
    let Some(vs) = VmSandbox::new("log_max_mib = 1\n") else {
        return;
    };
    vs.no_upstream_dns();
    let _turn = booting();
    ok(vs.sb.banger(&["vm", "create", "--name", "loud"]));
    // The guest's serial port runs at about 0.6 MB/s under software
    // emulation: 8 MiB is eight times the cap, and the relay is driven at
    // full volume by `relay_caps_a_flood` below.
    let mut flood = vs
        .sb
        .command("banger")
        .args([
            "vm",
            "ssh",
            "loud",
            "--",
            "head -c 8388608 /dev/zero | tr '\\0' x > /dev/ttyS0",
        ])
        .spawn()
        .unwrap();
    let mut answered = 0;
    while flood.try_wait().unwrap().is_none() {
        ok(vs.sb.banger(&["vm", "list"]));
        answered += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(flood.wait().unwrap().success());
    let console = vs.sb.state_dir().join("vms/loud/console.log");
    let cap = 1 << 20;
    let now = std::fs::metadata(&console).unwrap().len();
    let old = std::fs::metadata(console.with_extension("log.1"))
        .unwrap()
        .len();
    assert!(
        now <= cap && old <= cap,
        "console {now}, console.1 {old}, cap {cap}"
    );
    println!(
        "8 MiB from the guest: console.log {now} B, console.log.1 {old} B; daemon answered {answered} times meanwhile"
    );
    ok(vs.sb.banger(&["vm", "delete", "--force", "loud"]));
}

/// The relay itself at the volume: 500 MiB through the real
/// `bangerd log-relay`, as fast as the host can write it.
#[test]
fn relay_caps_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    let (console, vmm_log) = (dir.path().join("console.log"), dir.path().join("vmm.log"));
    let cap: u64 = 1 << 20;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pipes = rt.block_on(async {
        banger::vmm::logcap::spawn_relay(
            Path::new(env!("CARGO_BIN_EXE_bangerd")),
            &console,
            &vmm_log,
            cap,
            None,
            &[],
        )
        .unwrap()
    });
    let mut writer = std::fs::File::from(pipes.console);
    drop(pipes.vmm_log);
    let chunk = vec![b'x'; 1 << 20];
    // 500 MiB and a tail, so the last file's length says the relay is done.
    let tail = 12_345;
    let started = std::time::Instant::now();
    for _ in 0..500 {
        use std::io::Write;
        writer.write_all(&chunk).unwrap();
    }
    std::io::Write::write_all(&mut writer, &chunk[..tail]).unwrap();
    drop(writer);
    let len = || std::fs::metadata(&console).map(|m| m.len()).unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(10), || len() == tail as u64),
        "console.log is {} B",
        len()
    );
    let now = std::fs::metadata(&console).unwrap().len();
    let old = std::fs::metadata(dir.path().join("console.log.1"))
        .unwrap()
        .len();
    assert!(now <= cap && old <= cap, "{now} {old}");
    println!(
        "500 MiB through the relay in {:.1} s: console.log {now} B, console.log.1 {old} B",
        started.elapsed().as_secs_f64()
    );
}

/// The processes with `path` open, with their command lines.
fn holders_of(path: &Path) -> Vec<String> {
    let Ok(target) = path.canonicalize() else {
        return Vec::new();
    };
    processes()
        .into_iter()
        .filter(|(_, dir)| {
            std::fs::read_dir(dir.join("fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == target))
            })
        })
        .map(|(pid, dir)| {
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            )
        })
        .collect()
}
