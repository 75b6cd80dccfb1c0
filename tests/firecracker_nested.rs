//! The Firecracker tier: every Firecracker code path proved on a real guest.
//!
//! On a host with hardware KVM the tests run here, on banger itself. Where
//! this host's KVM cannot boot a Firecracker guest (kvm_pvm, as on our
//! development machines and CI), they run one level down: banger builds an
//! outer image (the runtime bundle, the firecracker binary, nftables from
//! .deb files `make nested-debs` downloaded beforehand) and boots it under
//! QEMU with `-cpu max`, whose AMD SVM lets the outer guest's `kvm_amd` give
//! it a /dev/kvm; banger and bangerd are copied in with `vm cp`, and the
//! inner banger runs every test with `--vmm firecracker` and 1 vCPU (two
//! are flaky one level down, E2E.md).
//!
//! The tests share one outer VM, so this file runs them itself
//! (`harness = false`): each is reported like a cargo test, and when the
//! tier cannot run it says why (no firecracker binary, not root, no SVM in
//! the outer VM) and passes. It runs only when `BANGER_FIRECRACKER_TIER=1`
//! (`make test-firecracker`): it takes minutes. Nothing leaves the machine:
//! the daemons' DNS forwarders point at a dead loopback port, and the NAT
//! test's upstream is a listener of this test on the host's bridge address.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::vms::*;
use common::*;

/// Where the inner banger keeps its bundle in the outer guest.
const INNER_RUNTIME: &str = "/opt/banger/runtime";
/// How every inner VM is made: Firecracker, one vCPU.
const FC: &str = "--vmm firecracker --vcpus 1 --memory 512";

type TestFn = fn(&FcHost);

const TESTS: &[(&str, TestFn)] = &[
    (
        "doctor_picks_firecracker_with_hardware_kvm",
        doctor_picks_firecracker,
    ),
    ("lifecycle_keeps_disks_across_stop_and_start", lifecycle),
    (
        "daemon_kill_readopts_and_delete_leaves_nothing",
        readopt_and_delete,
    ),
    ("nat_and_dns_between_two_guests", nat_and_dns),
    ("image_build_runs_its_build_vm_on_firecracker", image_build),
    ("exec_and_identity_go_through_vsock", exec_and_identity),
    ("suspend_warm_and_fork_through_snapshots", snapshots),
    (
        "unjailed_snapshots_as_the_daemons_own_uid",
        unjailed_snapshots,
    ),
    ("failed_boot_rolls_back_and_shows_the_console", failed_boot),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in TESTS {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let started = Instant::now();
    let host = match FcHost::prepare() {
        Ok(host) => host,
        Err(why) => {
            skip(&why);
            println!("\nrunning 0 tests (the Firecracker tier did not run: {why})");
            println!(
                "\ntest result: ok. 0 passed; 0 failed; {} ignored; 0 measured; 0 filtered out; finished in 0.00s\n",
                TESTS.len()
            );
            return ExitCode::SUCCESS;
        }
    };
    println!(
        "\nrunning {} tests on {} ({:.0} s to prepare)",
        TESTS.len(),
        host.describe(),
        started.elapsed().as_secs_f64()
    );
    let (mut passed, mut failed, mut filtered) = (0, Vec::new(), 0);
    for (name, test) in TESTS {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            filtered += 1;
            continue;
        }
        let t = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&host)));
        let secs = t.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                println!("test {name} ... ok ({secs:.0} s)");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED ({secs:.0} s)");
                // The inner daemon's view, gone with the outer VM otherwise.
                let log = host.sh("tail -n 40 ~/.local/state/banger/bangerd.log");
                println!("the inner bangerd.log ends:\n{}", stdout(&log));
                failed.push(*name);
            }
        }
    }
    if std::env::var_os("BANGER_NESTED_FIGURES").is_some() {
        figures(&host);
    }
    let total = started.elapsed().as_secs_f64();
    drop(host);
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; {filtered} filtered out; finished in {total:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Where the Firecracker tests run.
enum Place {
    /// This host has hardware KVM: banger runs Firecracker here.
    Direct,
    /// One level down, in the outer VM `outer` of the sandbox's banger.
    Nested { outer: String },
}

/// A host that can boot Firecracker guests, and the banger that drives them.
struct FcHost {
    t: VmSandbox,
    place: Place,
    /// This host's address on the sandbox bridge (the NAT test's upstream).
    gateway: Ipv4Addr,
}

impl FcHost {
    /// Everything the tier needs, or why it cannot run here.
    fn prepare() -> Result<FcHost, String> {
        if std::env::var_os("BANGER_FIRECRACKER_TIER").is_none() {
            return Err("it takes minutes; run `make test-firecracker`".into());
        }
        if !rustix::process::geteuid().is_root() {
            return Err("needs root (bridges, taps, nested VMs)".into());
        }
        let firecracker = firecracker_binary().ok_or(
            "no firecracker binary (set BANGER_TEST_FIRECRACKER, or build one: README, Development)",
        )?;
        let runtime = runtime_dir();
        if !runtime.join("bundle.json").is_file() {
            return Err(format!(
                "no runtime bundle at {} (make runtime-debian)",
                runtime.display()
            ));
        }
        let kvm = banger::system::host::kvm_kind();
        let hardware = matches!(
            kvm,
            banger::system::host::KvmKind::Intel | banger::system::host::KvmKind::Amd
        );
        let debs = std::env::var_os("BANGER_NESTED_DEBS")
            .map(PathBuf::from)
            .unwrap_or_else(|| runtime.join("nested-debs"));
        if !hardware && !debs.join("requested").is_file() {
            return Err(format!(
                "no .deb files for the outer VM at {} (make nested-debs)",
                debs.display()
            ));
        }
        let config = if hardware {
            format!("firecracker = \"{}\"", firecracker.display())
        } else {
            String::new()
        };
        let t = VmSandbox::new(&config).ok_or("the end-to-end tier cannot run here (see above)")?;
        t.no_upstream_dns();
        let gateway = t.bridge_up();
        if hardware {
            return Ok(FcHost {
                t,
                place: Place::Direct,
                gateway,
            });
        }
        let outer = make_outer(&t, &runtime, &firecracker, &debs)?;
        Ok(FcHost {
            t,
            place: Place::Nested { outer },
            gateway,
        })
    }

    fn describe(&self) -> String {
        match &self.place {
            Place::Direct => "this host (hardware KVM)".into(),
            Place::Nested { outer } => format!("the outer VM `{outer}` (QEMU, -cpu max, kvm_amd)"),
        }
    }

    /// Runs shell `script` on the Firecracker host, as root.
    fn sh(&self, script: &str) -> Output {
        match &self.place {
            Place::Nested { outer } => self.t.sb.banger(&["vm", "ssh", outer, "--", script]),
            Place::Direct => {
                // banger on PATH, with the sandbox's environment.
                let banger = Path::new(env!("CARGO_BIN_EXE_banger"));
                let path = format!(
                    "{}:{}",
                    banger.parent().unwrap().display(),
                    std::env::var("PATH").unwrap_or_default()
                );
                Command::new("bash")
                    .env_clear()
                    .envs(self.t.sb.envs())
                    .env("PATH", path)
                    .args(["-c", script])
                    .output()
                    .unwrap()
            }
        }
    }

    /// `sh`, asserting success; its stdout.
    fn ok(&self, script: &str) -> String {
        ok(self.sh(script))
    }

    /// The JSON a `banger ... --json` command prints on the Firecracker host.
    fn json(&self, banger_args: &str) -> serde_json::Value {
        let out = self.ok(&format!("banger {banger_args} --json"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

impl Drop for FcHost {
    fn drop(&mut self) {
        if let Place::Nested { outer } = &self.place {
            let _ = self.t.sb.banger(&["vm", "delete", "--force", outer]);
        }
    }
}

/// Builds (or finds in the build cache) the outer image, boots it, checks
/// that it has a /dev/kvm from `kvm_amd`, and copies banger in.
fn make_outer(
    t: &VmSandbox,
    runtime: &Path,
    firecracker: &Path,
    debs: &Path,
) -> Result<String, String> {
    let sb = &t.sb;
    if banger::system::tools::find_program("qemu-system-x86_64", None).is_none() {
        return Err("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into());
    }
    // What the outer image holds besides the base: the bundle for the inner
    // banger (1 vCPU by default; a second bundle whose kernel argument
    // panics the guest, for the rollback test), its config, firecracker,
    // and the .debs it lacks.
    let ctx = sb.path("outer-context");
    std::fs::create_dir_all(ctx.join("config/banger")).unwrap();
    // The bundle's own description (its initrd layers roots and carries
    // the agent when it says so), with the inner paths and VM shape.
    let runtime_bundle: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runtime.join("bundle.json")).unwrap())
            .unwrap();
    let bundle_json = |extra_args: &str, dir: &str| {
        let mut bundle = runtime_bundle.clone();
        let object = bundle.as_object_mut().unwrap();
        object.remove("modules");
        for (key, file) in [
            ("kernel", "vmlinux"),
            ("initrd", "initrd.img"),
            ("rootfs", "rootfs.ext4"),
        ] {
            object.insert(key.into(), format!("{dir}/{file}").into());
        }
        object.insert(
            "defaults".into(),
            serde_json::json!({
                "vcpus": 1,
                "memory_mib": 512,
                "disk_size": "2G",
                "work_disk_size": "256M",
                "kernel_args": format!("console=ttyS0 reboot=k panic=1 root=/dev/vda rw{extra_args}"),
            }),
        );
        bundle.to_string()
    };
    std::fs::write(ctx.join("bundle.json"), bundle_json("", ".")).unwrap();
    std::fs::write(
        ctx.join("bad-bundle.json"),
        bundle_json(" rdinit=/nonexistent", INNER_RUNTIME),
    )
    .unwrap();
    std::fs::write(
        ctx.join("config/banger/config.toml"),
        format!(
            "runtime_dir = \"{INNER_RUNTIME}\"\nssh_timeout_secs = 180\n[network]\ndns_upstreams = [\"127.0.0.1:9\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        ctx.join("setup.sh"),
        "#!/bin/sh\nset -e\ndpkg -i /opt/debs/*.deb\nrm -rf /opt/debs\n\
         mkdir -p /opt/banger/bad-runtime\n\
         mv /opt/banger/bad-bundle.json /opt/banger/bad-runtime/bundle.json\n\
         command -v nft\n",
    )
    .unwrap();
    std::fs::write(
        ctx.join("mark.sh"),
        "#!/bin/sh\necho built-on-firecracker > /etc/fc-built\n",
    )
    .unwrap();
    let copy = |host: &Path, guest: &str| format!("{}:{guest}", host.display());
    let mut args: Vec<String> = vec![
        "image".into(),
        "build".into(),
        "fc-host".into(),
        "--size".into(),
        "3G".into(),
    ];
    let jailer = jailer_for(firecracker).map(|j| (j, "/usr/local/bin/jailer".to_string()));
    for (host, guest) in [
        (runtime.join("vmlinux"), format!("{INNER_RUNTIME}/vmlinux")),
        (
            runtime.join("initrd.img"),
            format!("{INNER_RUNTIME}/initrd.img"),
        ),
        (
            runtime.join("rootfs.ext4"),
            format!("{INNER_RUNTIME}/rootfs.ext4"),
        ),
        (
            ctx.join("bundle.json"),
            format!("{INNER_RUNTIME}/bundle.json"),
        ),
        (
            ctx.join("bad-bundle.json"),
            "/opt/banger/bad-bundle.json".into(),
        ),
        (ctx.join("config"), "/root/.config".into()),
        (ctx.join("mark.sh"), "/root/mark.sh".into()),
        (
            firecracker.to_path_buf(),
            "/usr/local/bin/firecracker".into(),
        ),
        (debs.to_path_buf(), "/opt/debs".into()),
    ]
    .into_iter()
    .chain(jailer)
    {
        args.push("--copy".into());
        args.push(copy(&host, &guest));
    }
    args.push("--run".into());
    args.push(ctx.join("setup.sh").display().to_string());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let built = sb.banger(&argv);
    if !built.status.success() {
        panic!("cannot build the outer image:\n{}", stderr(&built));
    }

    let outer = "fchost".to_string();
    ok(sb.banger(&[
        "vm", "create", "--name", &outer, "--image", "fc-host", "--vmm", "qemu", "--vcpus", "2",
        "--memory", "4G", "--disk", "8G",
    ]));
    let ssh = |script: &str| sb.banger(&["vm", "ssh", &outer, "--", script]);
    let svm = stdout(&ssh("grep -c -w svm /proc/cpuinfo || true"));
    if svm.trim() == "0" {
        let _ = sb.banger(&["vm", "delete", "--force", &outer]);
        return Err("no SVM in the outer VM (QEMU did not offer AMD-V with -cpu max)".into());
    }
    // udev loads kvm_amd from the rootfs's modules shortly after boot.
    let kvm = ssh(
        "for i in $(seq 60); do test -c /dev/kvm && grep -qw kvm_amd /proc/modules && exit 0; sleep 0.5; done; exit 1",
    );
    assert!(
        kvm.status.success(),
        "the outer VM has SVM but no /dev/kvm from kvm_amd"
    );
    // banger itself changes with every build: copied in, not baked in.
    let bin = sb.path("outer-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["banger", "bangerd"] {
        let src = match name {
            "banger" => env!("CARGO_BIN_EXE_banger"),
            _ => env!("CARGO_BIN_EXE_bangerd"),
        };
        let stripped = bin.join(name);
        let out = Command::new("objcopy")
            .args(["--strip-debug", src])
            .arg(&stripped)
            .output()
            .unwrap();
        assert!(out.status.success(), "objcopy: {}", stderr(&out));
    }
    for name in ["banger", "bangerd"] {
        let host = bin.join(name).display().to_string();
        ok(sb.banger(&["vm", "cp", &host, &format!("{outer}:/usr/local/bin/")]));
    }
    let found = stdout(&ssh("ls -l /usr/local/bin"));
    assert!(
        found.contains("banger") && found.contains("bangerd"),
        "{found}"
    );
    Ok(outer)
}

/// The jailer the inner banger gets beside a static `firecracker`: the one
/// next to it, or `BANGER_TEST_JAILER`. A glibc firecracker cannot run in a
/// jail, and banger does not try.
fn jailer_for(firecracker: &Path) -> Option<PathBuf> {
    if !banger::vmm::jail::is_static_elf(firecracker) {
        return None;
    }
    std::env::var_os("BANGER_TEST_JAILER")
        .map(PathBuf::from)
        .or_else(|| firecracker.parent().map(|d| d.join("jailer")))
        .filter(|p| p.is_file())
}

/// `BANGER_TEST_FIRECRACKER`, else what banger would find: the bundle's,
/// or `firecracker` on PATH.
fn firecracker_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BANGER_TEST_FIRECRACKER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "BANGER_TEST_FIRECRACKER={} is not a file",
            path.display()
        );
        return Some(path);
    }
    Some(runtime_dir().join("firecracker"))
        .filter(|p| p.is_file())
        .or_else(|| banger::system::tools::find_program("firecracker", None))
}

// ---------------------------------------------------------------- the tests

fn doctor_picks_firecracker(fc: &FcHost) {
    let report = fc.json("doctor");
    let vmm = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "vmm")
        .expect("a vmm check");
    let detail = vmm["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("auto -> firecracker") && detail.contains("hardware KVM"),
        "{detail}"
    );
    // The outer guest's udev gives /dev/kvm to group kvm and /dev/net/tun
    // to everyone: each Firecracker can drop root.
    let user = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "vmm user")
        .expect("a vmm user check");
    assert_eq!(user["ok"], true, "{user:#}");
    let jailed = firecracker_binary()
        .and_then(|fc| jailer_for(&fc))
        .is_some();
    assert_eq!(
        user["detail"].as_str().unwrap().contains("jail"),
        jailed,
        "{user:#}"
    );
}

/// Whether the bundle's initrd layers roots (bundle.json says so).
fn layered_bundle(runtime: &Path) -> bool {
    std::fs::read_to_string(runtime.join("bundle.json"))
        .is_ok_and(|j| j.contains("\"layered_root\": true"))
}

fn lifecycle(fc: &FcHost) {
    let created = fc.json(&format!("vm create --name life {FC}"));
    assert_eq!(created["vm"]["backend"], "firecracker", "{created:#}");
    let mode = if layered_bundle(&runtime_dir()) {
        "layered"
    } else {
        "clone"
    };
    assert_eq!(created["vm"]["root_mode"], mode, "{created:#}");
    assert!(created["ssh_ready_ms"].is_u64(), "{created:#}");
    // Firecracker runs as the VM's own uid, not root.
    let uid = created["vm"]["vmm_uid"].as_u64().unwrap_or(0);
    assert!(uid >= 0x7000_0000, "the VMM runs as uid {uid}: {created:#}");
    // Jailed, under the jailer's cgroup v2 limits: its vCPU and one more,
    // its memory and 128 MiB (the outer guest runs systemd's cgroup v2).
    if firecracker_binary()
        .and_then(|fc| jailer_for(&fc))
        .is_some()
    {
        let limits =
            fc.ok("cat /sys/fs/cgroup/banger/life/cpu.max /sys/fs/cgroup/banger/life/memory.max");
        assert_eq!(limits, format!("200000 100000\n{}\n", (512u64 + 128) << 20));
    }
    // vm ssh: output and exit codes come back through both levels.
    assert_eq!(fc.ok("banger vm ssh life -- cat /etc/hostname"), "life\n");
    let exit = fc.sh("banger vm ssh life -- exit 7");
    assert_eq!(exit.status.code(), Some(7), "{}", stderr(&exit));
    fc.ok("banger vm ssh life -- 'echo kept > /work/marker && echo root > /root/marker && sync'");

    // Stop: Ctrl-Alt-Del, the guest shuts down, Firecracker exits by itself.
    fc.ok("banger vm stop life");
    let log =
        fc.ok("grep 'vm=\"life\"' ~/.local/state/banger/bangerd.log | grep stopped | tail -n 1");
    assert!(log.contains("shut down cleanly"), "{log}");
    assert_eq!(fc.json("vm show life")["state"], "stopped");
    fc.ok("banger vm start life");
    assert_eq!(
        fc.ok("banger vm ssh life -- cat /work/marker /root/marker"),
        "kept\nroot\n"
    );
    fc.ok("banger vm delete life");
}

fn readopt_and_delete(fc: &FcHost) {
    let created = fc.json(&format!("vm create --name adopt {FC}"));
    let pid = created["vm"]["pid"].as_u64().unwrap();
    let tap = created["vm"]["tap"].as_str().unwrap().to_string();
    let daemon = fc.json("daemon status")["daemon"]["pid"].as_u64().unwrap();
    fc.ok(&format!("kill -9 {daemon}"));
    // The next command starts a daemon, which re-adopts the running VM.
    let vm = fc.json("vm show adopt");
    assert_eq!(vm["state"], "running", "{vm:#}");
    assert_eq!(
        vm["pid"].as_u64(),
        Some(pid),
        "the same Firecracker process"
    );
    assert_eq!(
        fc.ok("banger vm ssh adopt -- echo still-here"),
        "still-here\n"
    );
    let dir = vm["dir"].as_str().unwrap().to_string();
    fc.ok("banger vm delete adopt");
    let left = fc.ok(&format!(
        "test -e /sys/class/net/{tap} && echo tap; test -e /proc/{pid} && echo process; \
         test -e {dir} && echo dir; pgrep -x firecracker >/dev/null && echo firecracker; \
         find /run/user/0/banger/vms /tmp/banger-0/vms -mindepth 1 2>/dev/null; true"
    ));
    assert_eq!(left.trim(), "", "left behind: {left}");
}

fn nat_and_dns(fc: &FcHost) {
    // The upstream: a listener of this test on the host's bridge address,
    // which records who connects (the outer VM, if the inner NAT works).
    let listener = TcpListener::bind((fc.gateway, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline && seen.lock().unwrap().is_empty() {
            match listener.accept() {
                Ok((mut s, peer)) => {
                    let _ = s.write_all(b"hi\n");
                    seen.lock().unwrap().push(peer.ip());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    let a = fc.json(&format!("vm create --name nat-a {FC}"));
    let b = fc.json(&format!("vm create --name nat-b {FC}"));
    let b_ip = b["vm"]["ip"].as_str().unwrap().to_string();
    let in_a = |script: &str| fc.ok(&format!("banger vm ssh nat-a -- {}", shell_word(script)));
    // .vm names resolve through the inner daemon; b's sshd answers a.
    let resolved = in_a("getent hosts nat-b.vm");
    assert!(resolved.starts_with(&b_ip), "{resolved}");
    assert_eq!(
        in_a("exec 3<>/dev/tcp/nat-b.vm/22 && head -c 4 <&3"),
        "SSH-"
    );
    // Out through the inner NAT to the host's bridge address.
    let got = in_a(&format!(
        "exec 3<>/dev/tcp/{}/{port} && head -n 1 <&3",
        fc.gateway
    ));
    assert_eq!(got, "hi\n");
    server.join().unwrap();
    let peer = peers.lock().unwrap()[0];
    let a_ip: Ipv4Addr = a["vm"]["ip"].as_str().unwrap().parse().unwrap();
    assert_ne!(
        peer,
        std::net::IpAddr::V4(a_ip),
        "the guest's address was masqueraded"
    );
    if let Place::Nested { outer } = &fc.place {
        let outer_ip = fc.t.json(&["vm", "show", outer])["ip"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(peer.to_string(), outer_ip, "seen as the outer VM");
    }
    fc.ok("banger vm delete nat-a && banger vm delete nat-b");
    let table = fc.sh("nft list table ip banger");
    assert!(
        !table.status.success(),
        "the NAT table goes with the last VM"
    );
}

fn image_build(fc: &FcHost) {
    let out = fc.ok("banger image build fcimg --vmm firecracker --run /root/mark.sh 2>&1");
    assert!(
        out.contains("firecracker (KVM: kvm_amd") || out.contains("firecracker (KVM: kvm_intel"),
        "{out}"
    );
    fc.ok(&format!("banger vm create --name built --image fcimg {FC}"));
    assert_eq!(
        fc.ok("banger vm ssh built -- cat /etc/fc-built"),
        "built-on-firecracker\n"
    );
    fc.ok("banger vm delete built && banger image delete fcimg");
}

/// The guest agent over Firecracker's vsock: `vm exec` (streams, exit
/// codes, a signal, stdin) and a new identity (name, address, host key).
fn exec_and_identity(fc: &FcHost) {
    let created = fc.json(&format!("vm create --name agent {FC}"));
    assert!(created["agent_ready_ms"].is_u64(), "{created:#}");
    let vm = fc.json("vm show agent");
    assert_eq!(vm["agent"]["channel"], "vsock", "{vm:#}");
    let both = fc.sh("banger vm exec agent -- sh -c 'echo out; echo err >&2; exit 7'");
    assert_eq!(both.status.code(), Some(7), "{}", stderr(&both));
    assert_eq!(stdout(&both), "out\n");
    assert!(stderr(&both).contains("err"), "{}", stderr(&both));
    let killed = fc.sh("banger vm exec agent -- sh -c 'kill -TERM $$'");
    assert_eq!(killed.status.code(), Some(128 + 15), "{}", stderr(&killed));
    // 4 MiB through stdin and back, byte for byte.
    let sums = fc.ok(
        "head -c 4194304 /dev/urandom > /tmp/blob && sha256sum < /tmp/blob && \
         banger vm exec -i agent -- cat < /tmp/blob | sha256sum",
    );
    let sums: Vec<&str> = sums.lines().collect();
    assert_eq!(sums.len(), 2, "{sums:?}");
    assert_eq!(sums[0], sums[1]);

    let old_ip = vm["ip"].as_str().unwrap().to_string();
    let changed = fc.json("vm identity agent --hostname renamed --new-address --new-host-key");
    let new_ip = changed["ip"].as_str().unwrap();
    assert_ne!(new_ip, old_ip, "{changed:#}");
    assert_ne!(changed["host_key"], vm["host_key"], "{changed:#}");
    // SSH (which trusts only the recorded key) answers at the new address.
    assert_eq!(fc.ok("banger vm ssh agent -- hostname"), "renamed\n");
    let old = fc.sh(&format!("timeout 5 bash -c 'echo > /dev/tcp/{old_ip}/22'"));
    assert!(
        !old.status.success(),
        "the old address {old_ip} still answers"
    );
    fc.ok("banger vm delete --force agent");
}

/// Firecracker's snapshot API: a suspended guest comes back with its
/// processes, a warm template restores instead of booting, and a fork runs
/// beside its source.
fn snapshots(fc: &FcHost) {
    fc.json(&format!("vm create --name sleepy {FC}"));
    let sleeper = fc.ok("banger vm ssh sleepy -- 'nohup sleep 9999 >/dev/null 2>&1 & echo $!'");
    fc.ok("banger vm ssh sleepy -- 'echo tmpfs > /dev/shm/file'");
    let suspended = fc.json("vm suspend sleepy");
    assert_eq!(suspended["state"], "suspended", "{suspended:#}");
    let dir = suspended["dir"].as_str().unwrap().to_string();
    let modes = fc.ok(&format!("stat -c '%a %n' {dir}/snapshot/*"));
    assert_eq!(
        modes.lines().filter(|l| l.starts_with("600 ")).count(),
        3,
        "memory, vmstate and snapshot.json, each 0600: {modes}"
    );
    let started = fc.json("vm start sleepy");
    assert_eq!(started["restored"], true, "{started:#}");
    let still = fc.ok(&format!(
        "banger vm ssh sleepy -- 'kill -0 {} && cat /dev/shm/file'",
        sleeper.trim()
    ));
    assert_eq!(still, "tmpfs\n");

    // A fork: both run; the fork has what the source had before it.
    fc.ok("banger vm ssh sleepy -- 'echo before > /root/before; sync'");
    let forked = fc.json("vm fork sleepy forked");
    assert_eq!(forked["restored"], true, "{forked:#}");
    fc.ok("banger vm ssh sleepy -- 'echo after > /root/after; sync'");
    assert_eq!(
        fc.ok("banger vm ssh forked -- cat /root/before"),
        "before\n"
    );
    assert_eq!(
        fc.ok("banger vm ssh forked -- 'test -e /root/after && echo there || echo absent'"),
        "absent\n"
    );
    assert_eq!(fc.ok("banger vm ssh forked -- hostname"), "forked\n");
    fc.ok("banger vm delete --force sleepy && banger vm delete --force forked");

    // A warm template: `vm create` restores it, with the VM's own identity.
    let shape = "--vcpus 1 --memory 512";
    fc.ok(&format!("banger image warm default {shape}"));
    let warm = fc.json(&format!("vm create --name warm {FC}"));
    assert!(warm["template"].is_string(), "{warm:#}");
    assert_eq!(fc.ok("banger vm ssh warm -- hostname"), "warm\n");
    fc.ok("banger vm delete --force warm");
}

/// Snapshots of a Firecracker that runs unjailed as the daemon's own uid
/// (what a daemon that is not root gets): a second banger user with no
/// jailer and no VMM users (a uid base that leaves no room: the VMM runs
/// as root, the daemon's uid), on a bridge of its own.
fn unjailed_snapshots(fc: &FcHost) {
    let env = "env XDG_CONFIG_HOME=/root/free/config XDG_STATE_HOME=/root/free/state \
               XDG_DATA_HOME=/root/free/data XDG_RUNTIME_DIR=/root/free/run";
    fc.ok(&format!(
        "mkdir -p /root/free/config/banger /root/free/run && chmod 700 /root/free/run && \
         printf 'runtime_dir = \"{INNER_RUNTIME}\"\njailer = \"\"\nvmm_uid_base = 4294967295\nssh_timeout_secs = 180\n[network]\nbridge = \"bgfree0\"\nsubnet = \"172.31.10.1/24\"\nnat_table = \"bangerfree\"\ndns_upstreams = [\"127.0.0.1:9\"]\n' > /root/free/config/banger/config.toml"
    ));
    let banger = |args: &str| fc.ok(&format!("{env} banger {args}"));
    let json = |args: &str| -> serde_json::Value {
        let out = banger(&format!("{args} --json"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let created = json(&format!("vm create --name free {FC}"));
    assert_eq!(created["vm"]["vmm_uid"], 0, "{created:#}");
    let dir = created["vm"]["dir"].as_str().unwrap().to_string();
    assert_eq!(
        fc.ok(&format!(
            "test -L {dir}/run/vmm.sock && echo jailed || echo unjailed"
        )),
        "unjailed\n"
    );
    let sleeper = banger("vm ssh free -- 'nohup sleep 9999 >/dev/null 2>&1 & echo $!'");
    banger("vm ssh free -- 'echo before > /root/before; sync'");
    assert_eq!(json("vm suspend free")["state"], "suspended");
    let started = json("vm start free");
    assert_eq!(started["restored"], true, "{started:#}");
    assert_eq!(
        banger(&format!(
            "vm ssh free -- 'kill -0 {} && echo alive'",
            sleeper.trim()
        )),
        "alive\n"
    );
    // A fork restores in another directory: its own disks, by their paths
    // relative to it, not the source's.
    let forked = json("vm fork free freed");
    assert_eq!(forked["restored"], true, "{forked:#}");
    banger("vm ssh free -- 'echo after > /root/after; sync'");
    assert_eq!(banger("vm ssh freed -- cat /root/before"), "before\n");
    assert_eq!(
        banger("vm ssh freed -- 'test -e /root/after && echo there || echo absent'"),
        "absent\n"
    );
    banger("vm ssh freed -- 'echo mine > /root/mine; sync'");
    assert_eq!(
        banger("vm ssh free -- 'test -e /root/mine && echo there || echo absent'"),
        "absent\n"
    );
    banger("vm delete --force freed");
    banger("vm delete --force free");
    fc.ok(&format!(
        "{env} banger daemon stop; ip link del bgfree0 2>/dev/null; true"
    ));
}

fn failed_boot(fc: &FcHost) {
    // A second banger user whose bundle's kernel arguments panic the guest.
    let env = "env XDG_CONFIG_HOME=/root/bad/config XDG_STATE_HOME=/root/bad/state \
               XDG_DATA_HOME=/root/bad/data XDG_RUNTIME_DIR=/root/bad/run";
    fc.ok(
        "mkdir -p /root/bad/config/banger /root/bad/run && chmod 700 /root/bad/run && \
         printf 'runtime_dir = \"/opt/banger/bad-runtime\"\\n[network]\\nbridge = \"bgbad0\"\\nsubnet = \"172.31.9.1/24\"\\nnat_table = \"bangerbad\"\\ndns_upstreams = [\"127.0.0.1:9\"]\\n' > /root/bad/config/banger/config.toml"
    );
    let out = fc.sh(&format!("{env} banger vm create --name doomed {FC}"));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Kernel panic"),
        "the console's tail is shown: {err}"
    );
    let left = fc.ok(&format!(
        "{env} banger vm list --json; ls /sys/class/net/bgbad0/brif 2>/dev/null; \
         pgrep -f '[f]irecracker.*doomed' >/dev/null && echo firecracker; \
         ls /root/bad/state/banger/vms 2>/dev/null; nft list table ip bangerbad 2>/dev/null; true"
    ));
    assert_eq!(left.trim(), "[]", "left behind: {left}");
    fc.ok(&format!(
        "{env} banger daemon stop; ip link del bgbad0 2>/dev/null; true"
    ));
}

/// With `BANGER_NESTED_FIGURES=1`: printed, never asserted. `vm create
/// --no-wait` step by step; create → SSH-ready against bare Firecracker
/// booting the same kernel, initrd and a banger-prepared disk of the same
/// rootfs (started by hand with `--config-file`, ready at its SSH banner),
/// median of 5 each.
fn figures(fc: &FcHost) {
    const RUNS: usize = 5;
    let median = |mut v: Vec<u64>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut steps: Vec<Vec<(String, u64)>> = Vec::new();
    for i in 0..RUNS {
        let r = fc.json(&format!("vm create --name nowait{i} --no-wait --cold {FC}"));
        steps.push(
            r["timings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["step"].as_str().unwrap().to_string(),
                        t["ms"].as_u64().unwrap(),
                    )
                })
                .collect(),
        );
        fc.ok(&format!("banger vm delete --force nowait{i}"));
    }
    let line: Vec<String> = steps[0]
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            format!(
                "{name} {} ms",
                median(steps.iter().map(|s| s[i].1).collect())
            )
        })
        .collect();
    println!(
        "figure: vm create --no-wait to InstanceStart (median of {RUNS}): {}",
        line.join(", ")
    );

    let mut banger = Vec::new();
    for i in 0..RUNS {
        let r = fc.json(&format!("vm create --name ready{i} --cold {FC}"));
        banger.push(r["ssh_ready_ms"].as_u64().unwrap());
        fc.ok(&format!("banger vm delete --force ready{i}"));
    }
    // Bare Firecracker: the root disk of a VM banger made but never
    // booted (a clone's own rootfs, or a layered VM's image: sshd's banner
    // needs no key), the same kernel arguments, a tap on the same bridge.
    let vm = fc.json(&format!("vm create --name bare --no-start {FC}"));
    let (ip, mac, tap) = (
        vm["vm"]["ip"].as_str().unwrap().to_string(),
        vm["vm"]["mac"].as_str().unwrap().to_string(),
        vm["vm"]["tap"].as_str().unwrap().to_string(),
    );
    let root_disk = vm["vm"]["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["role"] == "root" || d["role"] == "image")
        .and_then(|d| d["path"].as_str())
        .unwrap()
        .to_string();
    let gateway = "172.30.0.1";
    let config = format!(
        r#"{{"boot-source":{{"kernel_image_path":"{INNER_RUNTIME}/vmlinux","initrd_path":"{INNER_RUNTIME}/initrd.img","boot_args":"console=ttyS0 reboot=k panic=1 root=/dev/vda rw ip={ip}::{gateway}:255.255.255.0:bare:eth0:off"}},"drives":[{{"drive_id":"rootfs","path_on_host":"/root/bare-rootfs.ext4","is_root_device":true,"is_read_only":false}}],"network-interfaces":[{{"iface_id":"eth0","host_dev_name":"{tap}","guest_mac":"{mac}"}}],"machine-config":{{"vcpu_count":1,"mem_size_mib":512}}}}"#
    );
    let mut bare = Vec::new();
    for _ in 0..RUNS {
        let ms = fc.ok(&format!(
            "set -e
cp --sparse=always {root_disk} /root/bare-rootfs.ext4
echo '{config}' > /root/bare.json
if ! ip link show banger0 >/dev/null 2>&1; then
    ip link add banger0 type bridge
    ip addr add {gateway}/24 dev banger0
    ip link set banger0 up
fi
ip tuntap add dev {tap} mode tap
ip link set {tap} master banger0 up
start=$(date +%s%N)
firecracker --no-api --config-file /root/bare.json > /root/bare-console.log 2>&1 &
fc=$!
n=0
until head -c 4 2>/dev/null < /dev/tcp/{ip}/22 | grep -q SSH-; do
    n=$((n + 1))
    if [ $n -gt 1800 ]; then kill -9 $fc; ip link del {tap}; exit 1; fi
    sleep 0.1
done 2>/dev/null
end=$(date +%s%N)
kill -9 $fc
wait $fc 2>/dev/null || true
ip link del {tap}
echo $(( (end - start) / 1000000 ))"
        ));
        bare.push(ms.trim().parse::<u64>().unwrap());
    }
    fc.ok("banger vm delete bare; rm -f /root/bare-rootfs.ext4 /root/bare.json");
    let (b, f) = (median(banger.clone()), median(bare.clone()));
    println!(
        "figure: create -> SSH-ready on Firecracker, median of {RUNS}: banger {:.1} s ({banger:?} ms), bare firecracker to SSH banner {:.1} s ({bare:?} ms), ratio {:.2}",
        b as f64 / 1000.0,
        f as f64 / 1000.0,
        b as f64 / f as f64
    );

    // Restore from a warm template against a cold boot, to agent- and
    // SSH-ready.
    fc.ok("banger image warm default --vcpus 1 --memory 512");
    let ready = |name: &str, cold: bool| {
        let flag = if cold { " --cold" } else { "" };
        let r = fc.json(&format!("vm create --name {name}{flag} {FC}"));
        fc.ok(&format!("banger vm delete --force {name}"));
        (
            r["agent_ready_ms"].as_u64().unwrap(),
            r["ssh_ready_ms"].as_u64().unwrap(),
        )
    };
    let cold: Vec<(u64, u64)> = (0..RUNS)
        .map(|i| ready(&format!("cold{i}"), true))
        .collect();
    let warm: Vec<(u64, u64)> = (0..RUNS)
        .map(|i| ready(&format!("warm{i}"), false))
        .collect();
    let agent = |v: &[(u64, u64)]| median(v.iter().map(|r| r.0).collect()) as f64 / 1000.0;
    let ssh = |v: &[(u64, u64)]| median(v.iter().map(|r| r.1).collect()) as f64 / 1000.0;
    println!(
        "figure: Firecracker, median of {RUNS}: cold boot to agent-ready {:.1} s, SSH-ready {:.1} s; \
         restored from a warm template to agent-ready {:.1} s, SSH-ready {:.1} s",
        agent(&cold),
        ssh(&cold),
        agent(&warm),
        ssh(&warm)
    );
}

/// `script` as one word for the outer shell, so `vm ssh` passes it whole to
/// the inner guest's shell.
fn shell_word(script: &str) -> String {
    banger::ssh::quote(script)
}
