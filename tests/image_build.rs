//! End to end: `banger image build` on real guests. The packages come from
//! a flat apt repository this test makes from `.deb` files it builds
//! itself (`dpkg-deb`) and serves over HTTP on the bridge address: the
//! build VM reaches nothing else (the base's own apt sources are replaced
//! by an empty list through `--copy`, and the daemon's DNS forwarder points
//! at a dead loopback port). Needs root, a runtime bundle and a VMM; skips,
//! saying why, without them.
#![allow(clippy::disallowed_methods)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::apt::{FileServer, LocalRepo};
use common::vms::*;
use common::*;

/// The events of `banger --json image build ...`, and whether it succeeded.
fn build_json(sb: &Sandbox, args: &[&str]) -> (bool, Vec<serde_json::Value>) {
    let mut argv = vec!["--json", "image", "build"];
    argv.extend_from_slice(args);
    let out = sb.banger(&argv);
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (out.status.success(), events)
}

fn last_event(events: &[serde_json::Value]) -> &serde_json::Value {
    events.last().expect("at least one event")
}

fn steps(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "step")
        .map(|e| e["step"].as_str().unwrap().to_string())
        .collect()
}

fn ssh(sb: &Sandbox, vm: &str, cmd: &str) -> String {
    ok(sb.banger(&["vm", "ssh", vm, "--", cmd]))
}

#[test]
fn images_are_built_with_packages_files_modules_and_scripts() {
    let Some(t) = VmSandbox::new("") else {
        return;
    };
    // No upstream resolver: nothing the guest asks for leaves the host.
    t.no_upstream_dns();
    if !find("dpkg-deb") {
        skip("dpkg-deb is not installed (apt-get install dpkg)");
        return;
    }
    let _turn = booting();
    let sb = &t.sb;
    let gateway = t.bridge_up();
    let mut repo = LocalRepo::new();
    repo.add(
        "banger-hello",
        "1.0",
        &[("/usr/share/banger-hello/hello.txt", "hello 1.0\n")],
    );
    let server = FileServer::start(gateway, repo.dir.path().to_path_buf());
    let source = format!("deb [trusted=yes] http://{}/ ./", server.addr);

    // The build context: an empty sources.list (only the test repository
    // is used), a tree with modes, a symlink and an empty directory, and a
    // script that removes the kernel modules so the next build can show
    // that --modules brings them back.
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(c.join("sources.list"), "").unwrap();
    std::fs::create_dir_all(c.join("tree/empty")).unwrap();
    std::fs::write(c.join("tree/tool"), "#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(c.join("tree/tool"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("tool", c.join("tree/link")).unwrap();
    std::fs::write(
        c.join("strip-modules.sh"),
        "#!/bin/sh\nset -e\nrm -rf /lib/modules/*\necho stripped in $(pwd)\n",
    )
    .unwrap();
    let empty_sources = format!("{}:/etc/apt/sources.list", c.join("sources.list").display());
    let tree = format!("{}:/opt/tree", c.join("tree").display());
    let strip = c.join("strip-modules.sh").display().to_string();
    let pkg_args = [
        "pkg",
        "--packages",
        "banger-hello",
        "--apt-source",
        &source,
        "--copy",
        &empty_sources,
        "--copy",
        &tree,
        "--run",
        &strip,
    ];

    // 1. Packages, files and a script.
    let (built, events) = build_json(sb, &pkg_args);
    assert!(built, "build failed: {:#}", last_event(&events));
    let done = last_event(&events);
    assert_eq!(done["event"], "done");
    assert_eq!(done["image"]["cached"], false);
    let pkg_packages: Vec<String> =
        serde_json::from_value(done["image"]["image"]["packages"].clone()).unwrap();
    let packages = pkg_packages.clone();
    assert!(
        packages.contains(&"banger-hello 1.0".to_string()),
        "{packages:?}"
    );
    assert!(steps(&events).contains(&"install packages".to_string()));
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "output"
                && e["line"].as_str().unwrap().contains("stripped in /root")),
        "the script's output streams back"
    );
    let log = PathBuf::from(done["image"]["log"].as_str().unwrap());
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("Setting up banger-hello (1.0)")
    );

    // 2. A repeat is a cache hit: nothing boots.
    let (built, events) = build_json(sb, &pkg_args);
    assert!(built, "{:#}", last_event(&events));
    assert_eq!(last_event(&events)["image"]["cached"], true);
    assert!(
        !steps(&events).contains(&"boot the build VM".to_string()),
        "{:?}",
        steps(&events)
    );

    // 3. A chained build with --modules; a newer package version shows up
    //    in the manifest, which keeps what the base had.
    repo.add(
        "banger-hello",
        "2.0",
        &[("/usr/share/banger-hello/hello.txt", "hello 2.0\n")],
    );
    let (built, events) = build_json(
        sb,
        &[
            "mod",
            "--from",
            "pkg",
            "--modules",
            "--packages",
            "banger-hello",
            "--copy",
            &empty_sources,
        ],
    );
    assert!(built, "build failed: {:#}", last_event(&events));
    let image = &last_event(&events)["image"]["image"];
    let packages: Vec<String> = serde_json::from_value(image["packages"].clone()).unwrap();
    assert!(
        packages.contains(&"banger-hello 2.0".to_string()),
        "{packages:?}"
    );
    assert!(!packages.contains(&"banger-hello 1.0".to_string()));
    // Everything else the base had is still listed, version for version.
    let others = |list: &[String]| -> Vec<String> {
        list.iter()
            .filter(|l| !l.starts_with("banger-hello "))
            .cloned()
            .collect()
    };
    assert_eq!(others(&packages), others(&pkg_packages));
    assert_eq!(image["base"], "pkg");
    assert_eq!(
        image["requested_packages"],
        serde_json::json!(["banger-hello"])
    );
    assert!(image["kernel_version"].is_string(), "{image:#}");
    let listed = ok(sb.banger(&["image", "show", "mod", "--packages"]));
    assert!(listed.lines().any(|l| l == "banger-hello 2.0"), "{listed}");

    // 4. A VM from `pkg`: the package's file, the copied tree, no modules.
    ok(sb.banger(&["vm", "create", "--name", "p1", "--image", "pkg"]));
    assert_eq!(
        ssh(sb, "p1", "cat /usr/share/banger-hello/hello.txt"),
        "hello 1.0\n"
    );
    assert_eq!(
        ssh(
            sb,
            "p1",
            "stat -c '%a %U' /opt/tree/tool; readlink /opt/tree/link; test -d /opt/tree/empty && echo empty-dir"
        ),
        "750 root\ntool\nempty-dir\n"
    );
    let no_module = sb.banger(&["vm", "ssh", "p1", "--", "modprobe", "dummy"]);
    assert!(
        !no_module.status.success(),
        "the modules were stripped in pkg"
    );
    // The build VM's keys and identity did not end up in the image.
    assert_eq!(ssh(sb, "p1", "cat /etc/hostname"), "p1\n");
    // vm cp both ways, a directory in and a file out.
    ok(sb.banger(&[
        "vm",
        "cp",
        &c.join("tree").display().to_string(),
        "p1:/root/",
    ]));
    assert_eq!(ssh(sb, "p1", "/root/tree/tool"), "tool\n");
    let out = c.join("hostname-from-guest");
    ok(sb.banger(&["vm", "cp", "p1:/etc/hostname", &out.display().to_string()]));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "p1\n");
    ok(sb.banger(&["vm", "delete", "p1"]));

    // 5. A VM from `mod`: the new version, and modprobe works.
    ok(sb.banger(&["vm", "create", "--name", "m1", "--image", "mod"]));
    assert_eq!(
        ssh(sb, "m1", "cat /usr/share/banger-hello/hello.txt"),
        "hello 2.0\n"
    );
    assert_eq!(
        ssh(
            sb,
            "m1",
            "modprobe dummy && test -d /sys/module/dummy && echo loaded"
        ),
        "loaded\n"
    );
    ok(sb.banger(&["vm", "delete", "m1"]));

    // 6. A package that does not exist fails the build and leaves nothing.
    let (built, events) = build_json(
        sb,
        &[
            "bad",
            "--from",
            "pkg",
            "--packages",
            "no-such-package",
            "--copy",
            &empty_sources,
        ],
    );
    assert!(!built);
    let failed = last_event(&events);
    assert_eq!(failed["event"], "failed", "{failed:#}");
    assert_eq!(failed["step"], "install packages");
    assert!(
        failed["output_tail"]
            .to_string()
            .contains("Unable to locate package no-such-package"),
        "{failed:#}"
    );
    let images = t.json(&["image", "list"]);
    assert!(!images.to_string().contains("\"bad\""), "{images}");
    assert_eq!(t.json(&["vm", "list"]), serde_json::json!([]));
    let network = t.json(&["network", "status"]);
    assert_eq!(network["leases"], serde_json::json!([]), "{network}");
    let taps = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path().join("master")).is_ok_and(|m| m.ends_with(&t.bridge))
        })
        .count();
    assert_eq!(taps, 0, "no tap left on the bridge");
    assert!(!sb.path("data/banger/images/bad").exists());
    assert!(!sb.state_dir().join("vms/bad.build").exists());
}

fn find(tool: &str) -> bool {
    banger::system::tools::find_program(tool, None).is_some()
}

#[test]
fn builds_run_side_by_side_and_leave_nothing_when_cancelled_or_orphaned() {
    let Some(t) = VmSandbox::new("") else {
        return;
    };
    t.no_upstream_dns();
    let _turn = booting();
    let sb = &t.sb;
    let nothing_left = |what: &str| {
        assert_eq!(t.json(&["vm", "list"]), serde_json::json!([]), "{what}");
        let images = t.json(&["image", "list"]).to_string();
        assert!(!images.contains("\"cut\""), "{what}: {images}");
        let brif = Path::new("/sys/class/net").join(&t.bridge).join("brif");
        let taps = std::fs::read_dir(&brif).map(|d| d.count()).unwrap_or(0);
        assert_eq!(taps, 0, "{what}: no tap on the bridge");
        assert!(!sb.path("data/banger/images/cut").exists(), "{what}");
        assert!(!sb.state_dir().join("vms/cut.build").exists(), "{what}");
    };
    // `image build NAME --no-cache`, left running.
    let build = |name: &str, stderr: std::process::Stdio| {
        sb.command("banger")
            .args(["image", "build", name, "--no-cache"])
            .stderr(stderr)
            .spawn()
            .unwrap()
    };

    // Two builds at once both work.
    let one = build("one", std::process::Stdio::piped());
    let two = build("two", std::process::Stdio::piped());
    for child in [one, two] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let images = t.json(&["image", "list"]).to_string();
    assert!(
        images.contains("\"one\"") && images.contains("\"two\""),
        "{images}"
    );

    // Ctrl-C on the CLI cancels the build: the build VM goes, nothing is registered.
    let building = || {
        t.json(&["vm", "list"])
            .as_array()
            .unwrap()
            .iter()
            .any(|vm| vm["name"] == "cut.build" && vm["role"] == "build")
    };
    let child = build("cut", std::process::Stdio::null());
    assert!(
        wait_until(Duration::from_secs(60), building),
        "the build VM appears"
    );
    signal(child.id() as i32, rustix::process::Signal::INT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        wait_until(Duration::from_secs(30), || !building()),
        "the build VM is removed"
    );
    let log = std::fs::read_to_string(sb.state_dir().join("bangerd.log")).unwrap();
    assert!(
        log.contains("image build failed image=cut error=cancelled"),
        "{log}"
    );
    nothing_left("after Ctrl-C");

    // A daemon killed mid-build: its next start removes the build VM.
    let child = build("cut", std::process::Stdio::piped());
    assert!(
        wait_until(Duration::from_secs(60), building),
        "the build VM appears"
    );
    if !wait_until(Duration::from_secs(60), || vmm_of("cut.build").is_some()) {
        let mut child = child;
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let log = std::fs::read_to_string(sb.state_dir().join("bangerd.log")).unwrap();
        panic!(
            "the build VM's VMM never ran: {}{}\ndaemon log:\n{log}",
            stdout(&out),
            stderr(&out)
        );
    }
    let vmm = vmm_of("cut.build").unwrap();
    signal(sb.daemon_pid().unwrap(), rustix::process::Signal::KILL);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the CLI sees its daemon go");
    nothing_left("after the daemon died mid-build");
    assert!(!process_alive(vmm), "the build VM's VMM was killed");
}

/// The pid of the VMM process running VM `name`: a VMM executable working
/// in the VM's directory, as banger starts them.
fn vmm_of(name: &str) -> Option<i32> {
    let dir = format!("/vms/{name}");
    vmm_processes()
        .into_iter()
        .find_map(|(pid, cwd)| cwd.to_string_lossy().ends_with(&dir).then_some(pid))
}

/// A guest decides how much it prints: a `--run` script that prints 200 MB
/// with no newline must not grow the daemon (lines are cut at a fixed
/// length, and a client falling behind loses output lines, not memory),
/// and the build log stays at its cap.
#[test]
fn a_build_flooding_its_output_leaves_the_daemon_small() {
    let Some(t) = VmSandbox::new("log_max_mib = 1\n") else {
        return;
    };
    t.no_upstream_dns();
    let _turn = booting();
    let sb = &t.sb;
    ok(sb.banger(&["daemon", "start"]));
    let daemon = sb.daemon_pid().unwrap();
    let kib = |field: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{daemon}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    let before = kib("VmRSS:");
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        script.path(),
        "#!/bin/sh\nhead -c 200000000 /dev/zero | tr '\\0' x\nexit 3\n",
    )
    .unwrap();
    let out = sb
        .command("banger")
        .args(["image", "build", "flood", "--no-cache", "--run"])
        .arg(script.path())
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the script exits 3");
    assert!(stderr(&out).contains("exit"), "{}", stderr(&out));
    let peak = kib("VmHWM:");
    let growth_mib = peak.saturating_sub(before) / 1024;
    println!("200 MB without a newline: daemon RSS {before} KiB before, peak {peak} KiB");
    assert!(
        growth_mib <= 64,
        "the daemon grew by {growth_mib} MiB (RSS {before} KiB, peak {peak} KiB)"
    );
    let logs = sb.state_dir().join("builds");
    let mut seen = 0;
    for entry in std::fs::read_dir(&logs).unwrap().flatten() {
        let len = entry.metadata().unwrap().len();
        assert!(
            len <= (1 << 20) + 8192,
            "{} is {len} bytes, over its 1 MiB cap",
            entry.path().display()
        );
        seen += 1;
    }
    assert!(seen >= 1, "no build log");
    assert_eq!(t.json(&["vm", "list"]), serde_json::json!([]));
}
