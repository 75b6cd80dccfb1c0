//! Copy-on-write roots on real guests: a layered VM keeps what it writes
//! across stop and start, two VMs of one image never see each other's
//! writes, the image file is never written, a bundle whose initrd cannot
//! layer a root falls back to full clones, `vm clone` gives a copy its own
//! identity, and a create that fails halfway leaves nothing.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::vms::{VmSandbox, booting, clone_only_bundle, runtime_dir};
use common::*;

fn sandbox() -> Option<VmSandbox> {
    let vs = VmSandbox::new("")?;
    vs.no_upstream_dns();
    Some(vs)
}

/// The bundle must be able to layer roots for this tier to mean anything.
fn layered_bundle() -> bool {
    let json = std::fs::read_to_string(runtime_dir().join("bundle.json")).unwrap_or_default();
    if !json.contains("\"layered_root\": true") {
        skip("the runtime bundle's initrd cannot layer roots (rebuild it: make runtime-debian)");
        return false;
    }
    true
}

fn ssh(vs: &VmSandbox, vm: &str, script: &str) -> String {
    ok(vs.sb.banger(&["vm", "ssh", vm, "--", script]))
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    stdout(&out).split_whitespace().next().unwrap().to_string()
}

fn disk(vm: &serde_json::Value, role: &str) -> serde_json::Value {
    vm["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["role"] == role)
        .cloned()
        .unwrap_or_else(|| panic!("no {role} disk: {vm:#}"))
}

#[test]
fn a_layered_root_keeps_its_writes_to_itself_and_never_writes_the_image() {
    let Some(vs) = sandbox() else { return };
    if !layered_bundle() {
        return;
    }
    let _turn = booting();
    ok(vs
        .sb
        .banger(&["vm", "create", "--name", "one", "--no-start"]));
    let one = vs.json(&["vm", "show", "one"]);
    assert_eq!(one["root_mode"], "layered", "{one:#}");
    let image = PathBuf::from(disk(&one, "image")["path"].as_str().unwrap());
    assert_eq!(disk(&one, "image")["shared"], true);
    // A fresh VM takes a few MiB: its upper and work disks are sparse.
    let fresh: u64 = ["upper", "work"]
        .iter()
        .map(|r| disk(&one, r)["used_bytes"].as_u64().unwrap())
        .sum();
    assert!(fresh <= 16 << 20, "a fresh VM takes {fresh} bytes");
    let before = sha256(&image);

    ok(vs.sb.banger(&["vm", "start", "one"]));
    let df = ssh(&vs, "one", "df -B1 --output=size / | tail -1");
    let size: u64 = df.trim().parse().unwrap();
    assert!(
        size > 1 << 30 && size <= 2 << 30,
        "df / says {size}: the upper disk's room"
    );
    ssh(
        &vs,
        "one",
        "echo one > /root/mine && echo changed >> /etc/motd && rm /etc/issue && sync",
    );

    // A second VM of the same image sees the image, not the first's writes.
    ok(vs.sb.banger(&["vm", "create", "--name", "two"]));
    let seen = ssh(
        &vs,
        "two",
        "cat /root/mine 2>&1; grep -c changed /etc/motd; test -e /etc/issue && echo issue",
    );
    let lines: Vec<&str> = seen.lines().collect();
    assert!(
        lines.len() == 3 && lines[0].contains("No such file"),
        "{seen}"
    );
    assert_eq!(lines[1..], ["0", "issue"], "{seen}");

    // Writes survive a stop and a start.
    ok(vs.sb.banger(&["vm", "stop", "one"]));
    ok(vs.sb.banger(&["vm", "start", "one"]));
    let kept = ssh(
        &vs,
        "one",
        "cat /root/mine; grep -c changed /etc/motd; test -e /etc/issue || echo gone",
    );
    assert_eq!(
        kept.split_whitespace().collect::<Vec<_>>(),
        ["one", "1", "gone"],
        "{kept}"
    );

    // Nested overlays (Docker's overlay2): not on a directory of the
    // overlay root, which the README says, but on /work (plain ext4).
    let nested = |base: &str| {
        vs.sb.banger(&[
            "vm",
            "ssh",
            "one",
            "--",
            &format!(
                "mkdir -p {base}/o/l {base}/o/u {base}/o/w {base}/o/m && echo low > {base}/o/l/f && \
                 mount -t overlay overlay -o lowerdir={base}/o/l,upperdir={base}/o/u,workdir={base}/o/w {base}/o/m && \
                 echo up >> {base}/o/m/f && cat {base}/o/m/f && umount {base}/o/m"
            ),
        ])
    };
    let on_work = nested("/work");
    assert!(on_work.status.success(), "{}", stderr(&on_work));
    assert_eq!(
        stdout(&on_work).split_whitespace().collect::<Vec<_>>(),
        ["low", "up"]
    );
    let on_root = nested("/root");
    println!(
        "nested overlay on a directory of /: {}",
        if on_root.status.success() {
            "works".to_string()
        } else {
            format!("refused ({})", stderr(&on_root).trim())
        }
    );

    for vm in ["one", "two"] {
        ok(vs.sb.banger(&["vm", "stop", vm]));
    }
    assert_eq!(sha256(&image), before, "the image file changed");
    let one = vs.json(&["vm", "show", "one"]);
    println!(
        "upper disk after two boots: {} bytes used of {}",
        disk(&one, "upper")["used_bytes"],
        disk(&one, "upper")["apparent_bytes"]
    );
    for vm in ["one", "two"] {
        ok(vs.sb.banger(&["vm", "delete", vm]));
    }
}

#[test]
fn a_clone_of_a_stopped_vm_boots_with_its_own_identity() {
    let Some(vs) = sandbox() else { return };
    let _turn = booting();
    ok(vs.sb.banger(&["vm", "create", "--name", "origin"]));
    ssh(
        &vs,
        "origin",
        "echo from-origin > /root/made-here && echo data > /work/w && sync",
    );
    ok(vs.sb.banger(&["vm", "stop", "origin"]));
    let out = vs.sb.banger(&["vm", "clone", "origin", "copy"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (
        vs.json(&["vm", "show", "origin"]),
        vs.json(&["vm", "show", "copy"]),
    );
    assert_eq!(b["state"], "created");
    assert_eq!(a["root_mode"], b["root_mode"]);
    for key in ["ip", "mac", "tap", "host_key", "name"] {
        assert_ne!(a[key], b[key], "{key} is shared");
    }
    ok(vs.sb.banger(&["vm", "start", "copy"]));
    let seen = ssh(
        &vs,
        "copy",
        "hostname; cat /root/made-here /work/w; ip -4 -o addr show eth0",
    );
    assert!(seen.starts_with("copy\nfrom-origin\ndata\n"), "{seen}");
    assert!(seen.contains(b["ip"].as_str().unwrap()), "{seen}");
    // The clone's writes are its own.
    ssh(&vs, "copy", "echo copy > /root/made-here && sync");
    ok(vs.sb.banger(&["vm", "stop", "copy"]));
    ok(vs.sb.banger(&["vm", "start", "origin"]));
    assert_eq!(
        ssh(&vs, "origin", "cat /root/made-here").trim(),
        "from-origin"
    );
    // A running VM is not cloned.
    fails(
        vs.sb.banger(&["vm", "clone", "origin", "third"]),
        "stop it first",
    );
    for vm in ["origin", "copy"] {
        ok(vs.sb.banger(&["vm", "delete", "--force", vm]));
    }
}

#[test]
fn a_bundle_that_cannot_layer_gives_each_vm_a_full_clone() {
    let dir = tempfile::tempdir().unwrap();
    if !runtime_dir().join("bundle.json").is_file() {
        return skip("no runtime bundle (make runtime-debian)");
    }
    let bundle = clone_only_bundle(&dir.path().join("bundle"));
    let Some(vs) = VmSandbox::with_bundle(&bundle, "") else {
        return;
    };
    vs.no_upstream_dns();
    let _turn = booting();
    let doctor = ok(vs.sb.banger(&["doctor"]));
    assert!(
        doctor.contains("VM root disks") && doctor.contains("clone:"),
        "{doctor}"
    );
    ok(vs.sb.banger(&["vm", "create", "--name", "whole"]));
    let vm = vs.json(&["vm", "show", "whole"]);
    assert_eq!(vm["root_mode"], "clone", "{vm:#}");
    assert!(
        vm["root_mode_detail"]
            .as_str()
            .unwrap()
            .contains("layered_root"),
        "{vm:#}"
    );
    assert_eq!(disk(&vm, "root")["shared"], false);
    ssh(&vs, "whole", "echo kept > /root/kept && sync");
    ok(vs.sb.banger(&["vm", "stop", "whole"]));
    ok(vs.sb.banger(&["vm", "start", "whole"]));
    assert_eq!(
        ssh(&vs, "whole", "cat /root/kept; findmnt -n -o FSTYPE /")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["kept", "ext4"]
    );
    ok(vs.sb.banger(&["vm", "delete", "--force", "whole"]));
}

#[test]
fn a_create_that_fails_after_its_upper_disk_exists_leaves_nothing() {
    let Some(vs) = sandbox() else { return };
    // The work disk is made beside the upper disk; one too large for the
    // state directory's filesystem fails once the upper disk is made.
    let out = vs.sb.banger(&[
        "vm",
        "create",
        "--name",
        "half",
        "--work-disk",
        "20T",
        "--no-start",
    ]);
    if out.status.success() {
        ok(vs.sb.banger(&["vm", "delete", "half"]));
        return skip(
            "the state directory's filesystem takes a 20 TiB file: no failure to roll back",
        );
    }
    assert!(stderr(&out).contains("File too large"), "{}", stderr(&out));
    assert_eq!(vs.json(&["vm", "list"]), serde_json::json!([]));
    let vms = vs.sb.state_dir().join("vms");
    let left: Vec<_> = std::fs::read_dir(&vms)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let log = std::fs::read_to_string(vs.sb.state_dir().join("bangerd.log")).unwrap();
    assert!(log.contains("rolling back"), "{log}");
    // The name and address are free again.
    ok(vs
        .sb
        .banger(&["vm", "create", "--name", "half", "--no-start"]));
    let vm = vs.json(&["vm", "show", "half"]);
    assert!(vm["ip"].as_str().unwrap().ends_with(".2"), "{vm:#}");
    ok(vs.sb.banger(&["vm", "delete", "half"]));
    assert!(wait_until(Duration::from_secs(5), || !vms
        .join("half")
        .exists()));
}
