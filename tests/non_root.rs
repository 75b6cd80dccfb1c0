//! banger as an ordinary user holding only the grant `banger doctor`
//! prints: the whole lifecycle on a real guest (create, SSH, stop, start,
//! delete), NAT and DNS through the daemon's own port 53; and every way
//! around the grant refused (`sudo -n ip netns exec`, `sudo -n nft flush
//! ruleset`, the helper asked for another interface, table, address or
//! another user's tap). Needs root (to make the user and install the
//! grant), a runtime bundle, QEMU, sudo and useradd; skips, saying why,
//! without them.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::upstream::Upstream;
use common::vms::{booting, link_exists, runtime_dir};
use common::*;

/// A throwaway login made for the test, and everything installed for it;
/// all removed again on drop.
struct TestUser {
    name: String,
    uid: u32,
    /// Where its copies of the binaries live (readable by it).
    bin: tempfile::TempDir,
    /// Root-owned files installed for the grant.
    installed: Vec<PathBuf>,
    /// `/dev/net/tun`'s mode before the test, to put back.
    tun_mode: u32,
}

impl TestUser {
    fn create(n: u32) -> TestUser {
        let name = format!("bgtu{n}");
        let _ = Command::new("userdel").arg(&name).output();
        run_ok(Command::new("useradd").args([
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            &name,
        ]));
        let id = run_ok(Command::new("id").args(["-u", &name]));
        let uid: u32 = id.trim().parse().unwrap();
        let bin = tempfile::Builder::new()
            .prefix("banger-user-bin-")
            .tempdir()
            .unwrap();
        for program in ["banger", "bangerd", "banger-helper"] {
            let from = Path::new(env!("CARGO_BIN_EXE_banger"))
                .parent()
                .unwrap()
                .join(program);
            std::fs::copy(&from, bin.path().join(program)).unwrap();
        }
        chown_tree(bin.path(), uid);
        let tun_mode = mode(Path::new("/dev/net/tun"));
        TestUser {
            name,
            uid,
            bin,
            installed: Vec::new(),
            tun_mode,
        }
    }

    /// A command running as this user with the sandbox's environment.
    fn command(&self, sb: &Sandbox, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .envs(sb.envs())
            .uid(self.uid)
            .gid(self.uid)
            .current_dir("/");
        cmd
    }

    fn banger(&self, sb: &Sandbox, args: &[&str]) -> Output {
        let program = self.bin.path().join("banger");
        self.command(sb, program.to_str().unwrap())
            .args(args)
            .output()
            .unwrap()
    }

    /// `sudo -n ARGS...` as this user.
    fn sudo(&self, sb: &Sandbox, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = self.sudo_command(sb);
        cmd.args(args);
        match stdin {
            Some(text) => {
                use std::io::Write;
                cmd.stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                let mut child = cmd.spawn().unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(text.as_bytes())
                    .unwrap();
                child.wait_with_output().unwrap()
            }
            None => cmd.output().unwrap(),
        }
    }

    /// `sudo -n` run by a process of this user, as the daemon runs it (the
    /// helper asks who ran sudo: `timeout` stays its parent, where the
    /// test itself, root, would be).
    fn sudo_command(&self, sb: &Sandbox) -> Command {
        let mut cmd = self.command(sb, "timeout");
        cmd.args(["120", "sudo", "-n"]);
        cmd
    }

    /// Installs one file of doctor's grant, root-owned with its mode.
    fn install(&mut self, file: &serde_json::Value) {
        let path = PathBuf::from(file["path"].as_str().unwrap());
        let mode = file["mode"].as_u64().unwrap() as u32;
        let mut dir = path.parent().unwrap().to_path_buf();
        let mut made = Vec::new();
        while !dir.exists() {
            made.push(dir.clone());
            dir = dir.parent().unwrap().to_path_buf();
        }
        for dir in made.iter().rev() {
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        match (file["content"].as_str(), file["copy_of"].as_str()) {
            (Some(text), _) => std::fs::write(&path, text).unwrap(),
            (None, Some(from)) => {
                std::fs::copy(from, &path).unwrap();
            }
            _ => panic!("a grant file with neither content nor source: {file}"),
        }
        rustix::fs::chown(
            &path,
            Some(rustix::process::Uid::ROOT),
            Some(rustix::process::Gid::ROOT),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        // Removed in reverse: the file, then the directories made for it,
        // deepest first.
        self.installed.extend(made.into_iter().rev());
        self.installed.push(path);
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        kill_processes_of(self.uid);
        for path in self.installed.iter().rev() {
            if path.is_dir() {
                let _ = std::fs::remove_dir(path);
            } else {
                let _ = std::fs::remove_file(path);
            }
        }
        let _ = std::fs::set_permissions(
            "/dev/net/tun",
            std::fs::Permissions::from_mode(self.tun_mode),
        );
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// The tests here change host-wide things (`/dev/net/tun`'s mode, files
/// under /etc): one at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static HOST: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HOST.lock().unwrap_or_else(|p| p.into_inner())
}

fn run_ok(cmd: &mut Command) -> String {
    ok(cmd.output().unwrap())
}

fn chown_tree(path: &Path, uid: u32) {
    let owner = Some(rustix::process::Uid::from_raw(uid));
    let group = Some(rustix::process::Gid::from_raw(uid));
    rustix::fs::chown(path, owner, group).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            chown_tree(&entry.path(), uid);
        }
    }
}

fn kill_processes_of(uid: u32) {
    use std::os::unix::fs::MetadataExt;
    for (pid, dir) in processes() {
        if std::fs::metadata(dir).is_ok_and(|m| m.uid() == uid) {
            signal(pid, rustix::process::Signal::KILL);
        }
    }
}

/// A copy of the runtime bundle the user can read, whatever the modes of
/// the directories above the checkout.
fn bundle_copy(uid: u32) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("banger-user-bundle-")
        .tempdir()
        .unwrap();
    let from = runtime_dir();
    // The kernel's modules are only for `image build --modules`.
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(from.join("bundle.json")).unwrap()).unwrap();
    manifest.as_object_mut().unwrap().remove("modules");
    std::fs::write(dir.path().join("bundle.json"), manifest.to_string()).unwrap();
    for file in [
        "vmlinux",
        "initrd.img",
        "initrd.features",
        "rootfs.ext4.packages",
    ] {
        if from.join(file).exists() {
            std::fs::copy(from.join(file), dir.path().join(file)).unwrap();
        }
    }
    banger::system::fs::clone_file(&from.join("rootfs.ext4"), &dir.path().join("rootfs.ext4"))
        .unwrap();
    chown_tree(dir.path(), uid);
    dir
}

fn missing_piece() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root to make a user and install its grant".into());
    }
    if !runtime_dir().join("bundle.json").is_file() {
        return Some("no runtime bundle (make runtime-debian)".into());
    }
    for tool in ["qemu-system-x86_64", "sudo", "useradd", "userdel"] {
        if banger::system::tools::find_program(tool, None).is_none() {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

#[test]
fn an_ordinary_user_with_doctors_grant_runs_everything_and_nothing_more() {
    if let Some(why) = missing_piece() {
        skip(&why);
        return;
    }
    let _host = one_at_a_time();
    let n = std::process::id() % 200 + 20;
    let mut user = TestUser::create(n);
    let bundle = bundle_copy(user.uid);
    let upstream = Upstream::new(n);
    let helper = format!("/run/banger-test-{n}/libexec/banger-helper");
    let sb = Sandbox::with_config(&format!(
        "vmm = \"qemu\"\nruntime_dir = \"{}\"\nhelper = \"{helper}\"\n",
        bundle.path().display()
    ));
    {
        use std::io::Write;
        let mut config = std::fs::OpenOptions::new()
            .append(true)
            .open(sb.config_file())
            .unwrap();
        writeln!(config, "dns_upstreams = [\"{}:53\"]", upstream.ip).unwrap();
    }
    chown_tree(sb.root.path(), user.uid);
    let _turn = booting();

    // Before the grant, doctor says exactly what is missing and how to
    // grant it; the test installs exactly that and nothing else.
    let out = user.banger(&sb, &["doctor", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("doctor --json: {}", stderr(&out)));
    let failed: Vec<&serde_json::Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["required"] == true && c["ok"] == false)
        .collect();
    let names: Vec<&str> = failed.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"network grant"), "{report:#}");
    for check in &failed {
        match check["name"].as_str().unwrap() {
            "network grant" => {
                let grant = check["grant"].as_array().unwrap();
                assert_eq!(grant.len(), 3, "helper, sudoers rule, policy: {check:#}");
                assert_eq!(grant[0]["path"], helper.as_str());
                for file in grant {
                    user.install(file);
                }
            }
            "/dev/net/tun" => {
                assert!(
                    check["fix"].as_str().unwrap().contains("chmod 0666"),
                    "{check}"
                );
                std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o666))
                    .unwrap();
            }
            other => panic!("doctor failed a check the test cannot grant: {other}: {check:#}"),
        }
    }
    let doctor = user.banger(&sb, &["doctor"]);
    assert!(
        doctor.status.success(),
        "{}{}",
        stdout(&doctor),
        stderr(&doctor)
    );
    assert!(
        stdout(&doctor).contains(&format!("sudo -n {helper} may change bridge {}", sb.bridge)),
        "{}",
        stdout(&doctor)
    );

    // The grant is narrow: no raw ip or nft, nothing outside the policy.
    for args in [
        vec!["ip", "netns", "exec", "x", "id"],
        vec!["nft", "flush", "ruleset"],
        vec!["/bin/sh", "-c", "id"],
    ] {
        let out = user.sudo(&sb, &args, None);
        assert!(!out.status.success(), "sudo -n {args:?} was allowed");
    }
    let gateway: Ipv4Addr = sb.subnet.split('/').next().unwrap().parse().unwrap();
    let guest = |d: u8| {
        let [a, b, c, _] = gateway.octets();
        Ipv4Addr::new(a, b, c, d)
    };
    // A tap of the user's subnet that root made (another user's, say).
    let foreign_tap = banger::model::TapName::for_ip(guest(200)).to_string();
    run_ok(Command::new("ip").args(["tuntap", "add", "dev", &foreign_tap, "mode", "tap"]));
    let refused = |args: &[&str], stdin: Option<&str>, why: &str| {
        let mut argv = vec![helper.as_str()];
        argv.extend(args);
        let out = user.sudo(&sb, &argv, stdin);
        assert!(!out.status.success(), "the helper did {args:?}");
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    };
    refused(&["tap-del", "lo"], None, "not a banger tap");
    refused(&["tap-add", "eth0"], None, "not a banger tap");
    refused(
        &[
            "tap-del",
            banger::model::TapName::for_ip(Ipv4Addr::new(10, 99, 0, 2)).as_str(),
        ],
        None,
        "not a banger tap",
    );
    refused(
        &["tap-del", &foreign_tap],
        None,
        "belongs to no user, not to uid",
    );
    refused(
        &["bridge-up", "lo", &sb.subnet],
        None,
        "not this user's banger bridge",
    );
    refused(
        &["bridge-up", &sb.bridge, "10.0.0.1/8"],
        None,
        "gets the address",
    );
    refused(
        &["bridge-down", "lo"],
        None,
        "not this user's banger bridge",
    );
    refused(
        &["nft-delete", "filter"],
        None,
        "not this user's banger nftables table",
    );
    refused(
        &["nft-list", "nat"],
        None,
        "not this user's banger nftables table",
    );
    refused(&["dns-socket", "127.0.0.1"], None, "may listen on");
    refused(
        &["nft-apply", &sb.nat_table],
        Some(
            r#"{"nat_sources":[],"guests":[{"tap":"eth0","mac":"06:00:00:00:00:01","ip":"10.0.0.1"}]}"#,
        ),
        "not a banger tap",
    );
    refused(&["netns", "exec", "x", "sh"], None, "usage");
    assert!(
        link_exists("lo") && link_exists(&foreign_tap),
        "a refused request changed something"
    );
    run_ok(Command::new("ip").args(["link", "del", &foreign_tap]));

    // The whole lifecycle, as the user.
    ok(user.banger(&sb, &["daemon", "start"]));
    let health = ok(user.banger(&sb, &["daemon", "status", "--json"]));
    assert!(
        health.contains(&format!("\"uid\": {}", user.uid))
            || health.contains(&format!("\"uid\":{}", user.uid)),
        "{health}"
    );
    let created = user.banger(
        &sb,
        &[
            "vm", "create", "--name", "box", "--memory", "384", "--vcpus", "1",
        ],
    );
    if !created.status.success() {
        let log = std::fs::read_to_string(sb.state_dir().join("bangerd.log")).unwrap_or_default();
        panic!("vm create failed: {}\ndaemon log:\n{log}", stderr(&created));
    }
    let vm: serde_json::Value =
        serde_json::from_str(&ok(user.banger(&sb, &["vm", "show", "box", "--json"]))).unwrap();
    let ip = vm["ip"].as_str().unwrap().to_string();
    // The VMM runs as the user, on a tap the user owns.
    let tap = banger::model::TapName::for_ip(ip.parse().unwrap()).to_string();
    let owner = std::fs::read_to_string(format!("/sys/class/net/{tap}/owner")).unwrap();
    assert_eq!(owner.trim(), user.uid.to_string());
    let vmm_pid = vm["pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{vmm_pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == user.uid.to_string()),
        "{uid_line}"
    );

    assert_eq!(
        ok(user.banger(&sb, &["vm", "ssh", "box", "--", "hostname"])).trim(),
        "box"
    );
    // DNS: the daemon, not root, answers on the bridge's port 53.
    let ips = resolve_a(gateway, "box.vm");
    assert_eq!(ips, vec![ip.parse::<Ipv4Addr>().unwrap()]);
    // Out through NAT by a name the upstream resolves.
    let reply = ok(user.banger(
        &sb,
        &[
            "vm",
            "ssh",
            "box",
            "--",
            "echo kept > /root/kept; timeout 10 bash -c 'exec 3<>/dev/tcp/upstream.test/8080; cat <&3'",
        ],
    ));
    assert_eq!(reply.trim(), format!("peer {}", upstream.host_ip));

    ok(user.banger(&sb, &["vm", "stop", "box"]));
    assert!(!link_exists(&tap), "the tap outlived the stop");
    ok(user.banger(&sb, &["vm", "start", "box"]));
    assert_eq!(
        ok(user.banger(&sb, &["vm", "ssh", "box", "--", "cat", "/root/kept"])).trim(),
        "kept"
    );
    ok(user.banger(&sb, &["vm", "delete", "--force", "box"]));
    assert!(!link_exists(&tap));
    let tables = run_ok(Command::new("nft").args(["list", "tables"]));
    assert!(!tables.contains(&sb.nat_table), "{tables}");
    let cleanup = ok(user.banger(&sb, &["network", "cleanup"]));
    assert!(
        cleanup.contains(&format!("bridge {}", sb.bridge)),
        "{cleanup}"
    );
    assert!(!link_exists(&sb.bridge));
    ok(user.banger(&sb, &["daemon", "stop"]));
}

/// The two attacks on the helper the security review made, with a grant
/// an administrator might well write: `!secure_path` (upstream sudo's
/// default) keeps the caller's `PATH`, and `SETENV` lets the caller set
/// `SUDO_UID`. Neither may reach root or another user's network. Also:
/// doctor names the policy file the helper reads whatever `$USER` says.
#[test]
fn the_helper_trusts_nothing_of_its_callers_environment() {
    if !rustix::process::geteuid().is_root() {
        skip("needs root to make users and install a grant");
        return;
    }
    for tool in ["sudo", "useradd", "userdel", "nft"] {
        if banger::system::tools::find_program(tool, None).is_none() {
            skip(&format!("{tool} is not installed"));
            return;
        }
    }
    let _host = one_at_a_time();
    let n = std::process::id() % 200 + 220;
    let mut attacker = TestUser::create(n);
    let victim = TestUser::create(n + 1);
    let sb = Sandbox::new();
    chown_tree(sb.root.path(), attacker.uid);

    // doctor's grant names the user by uid and /etc/passwd: with `USER`
    // unset and with `USER` naming someone else alike.
    let expected = format!("/etc/banger/users/{}.toml", attacker.name);
    let helper_path = format!("/run/banger-test-{n}/libexec/banger-helper");
    std::fs::write(
        sb.config_file(),
        format!(
            "{}helper = \"{helper_path}\"\n",
            std::fs::read_to_string(sb.config_file()).unwrap()
        ),
    )
    .unwrap();
    for user_env in [None, Some("root"), Some(victim.name.as_str())] {
        let program = attacker.bin.path().join("banger");
        let mut cmd = attacker.command(&sb, program.to_str().unwrap());
        cmd.env_remove("USER").env_remove("LOGNAME");
        if let Some(name) = user_env {
            cmd.env("USER", name);
        }
        let out = cmd.args(["doctor", "--json"]).output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("doctor --json: {}", stderr(&out)));
        let grant = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "network grant")
            .unwrap_or_else(|| panic!("no grant check: {report:#}"));
        let paths: Vec<&str> = grant["grant"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["path"].as_str())
            .collect();
        assert!(
            paths.contains(&expected.as_str()),
            "USER={user_env:?}: doctor lists {paths:?}, the helper reads {expected}"
        );
    }

    // The grant, loosened the way the review found it in the wild.
    let helper = helper_path.as_str();
    let victim_bridge = format!("bgv{n}");
    let grant = |path: String, content: String| serde_json::json!({ "path": path, "mode": 0o644, "content": content });
    attacker.install(&serde_json::json!({
        "path": helper, "mode": 0o755,
        "copy_of": env!("CARGO_BIN_EXE_banger-helper"),
    }));
    let mut rule = grant(
        format!("/etc/sudoers.d/banger-{}", attacker.name),
        format!(
            "Defaults:{0} !secure_path\n{0} ALL=(root) NOPASSWD:SETENV: {helper}\n",
            attacker.name
        ),
    );
    rule["mode"] = 0o440.into();
    attacker.install(&rule);
    attacker.install(&grant(
        expected.clone(),
        format!(
            "bridge = \"{}\"\nsubnet = \"{}\"\nnat_table = \"{}\"\n",
            sb.bridge, sb.subnet, sb.nat_table
        ),
    ));
    attacker.install(&grant(
        format!("/etc/banger/users/{}.toml", victim.name),
        format!(
            "bridge = \"{victim_bridge}\"\nsubnet = \"10.213.{}.1/24\"\nnat_table = \"bgv{n}\"\n",
            n % 250
        ),
    ));

    // A fake `nft` first on the caller's PATH never runs as root.
    let fake = tempfile::Builder::new()
        .prefix("banger-fake-nft-")
        .tempdir()
        .unwrap();
    let marker = fake.path().join("ran-as-root");
    let nft = fake.path().join("nft");
    std::fs::write(
        &nft,
        format!("#!/bin/sh\nid > {}\nexit 0\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o755)).unwrap();
    chown_tree(fake.path(), attacker.uid);
    std::fs::set_permissions(fake.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = attacker.sudo_command(&sb);
    cmd.env(
        "PATH",
        format!("{}:/usr/local/bin:/usr/bin:/bin", fake.path().display()),
    );
    let out = cmd
        .args([helper, "nft-list", &sb.nat_table])
        .output()
        .unwrap();
    assert!(
        !marker.exists(),
        "the caller's nft ran: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
    assert!(out.status.success(), "nft-list: {}", stderr(&out));

    // SUDO_UID naming another user, or root, is refused.
    for uid in [victim.uid, 0] {
        let cidr = format!("10.213.{}.1/24", n % 250);
        let out = attacker.sudo(
            &sb,
            &[
                &format!("SUDO_UID={uid}"),
                helper,
                "bridge-up",
                &victim_bridge,
                &cidr,
            ],
            None,
        );
        let made = link_exists(&victim_bridge);
        let _ = Command::new("ip")
            .args(["link", "del", &victim_bridge])
            .output();
        assert!(
            !made,
            "SUDO_UID={uid} made {victim_bridge}: {}",
            stderr(&out)
        );
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("SUDO_UID says"),
            "SUDO_UID={uid}: {}",
            stderr(&out)
        );
    }
    drop(victim);
}
