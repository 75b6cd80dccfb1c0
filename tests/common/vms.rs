//! Sandboxes for tests that boot real guests: the runtime bundle, a VMM,
//! root; skipped, saying why, where a piece is missing.
#![allow(dead_code, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::*;

pub struct VmSandbox {
    pub sb: Sandbox,
    pub bridge: String,
}

impl VmSandbox {
    /// None (and a printed reason) when this host cannot run the tier.
    pub fn new(extra_config: &str) -> Option<VmSandbox> {
        VmSandbox::with_bundle(&runtime_dir(), extra_config)
    }

    /// [`VmSandbox::new`] booting the runtime bundle in `bundle`.
    pub fn with_bundle(bundle: &Path, extra_config: &str) -> Option<VmSandbox> {
        // `auto` runs Firecracker on hosts with hardware KVM and a firecracker
        // binary, QEMU elsewhere; BANGER_E2E_VMM forces one.
        let vmm = std::env::var("BANGER_E2E_VMM").unwrap_or_else(|_| "auto".into());
        VmSandbox::with_vmm(bundle, &vmm, extra_config)
    }

    /// [`VmSandbox::with_bundle`] with VMM choice `vmm` in its config.
    pub fn with_vmm(bundle: &Path, vmm: &str, extra_config: &str) -> Option<VmSandbox> {
        if !rustix::process::geteuid().is_root() {
            skip("needs root for bridges and taps");
            return None;
        }
        if !bundle.join("bundle.json").is_file() {
            skip(&format!(
                "no runtime bundle at {} (make runtime-debian, or set BANGER_RUNTIME)",
                bundle.display()
            ));
            return None;
        }
        let find = |tool| banger::system::tools::find_program(tool, None).is_some();
        if !find("qemu-system-x86_64") && !find("firecracker") {
            skip("neither qemu-system-x86_64 nor firecracker is installed");
            return None;
        }
        let sb = Sandbox::with_config(&format!(
            "vmm = \"{vmm}\"\nruntime_dir = \"{}\"\n{extra_config}",
            bundle.display()
        ));
        let bridge = sb.bridge.clone();
        Some(VmSandbox { sb, bridge })
    }

    /// Brings the sandbox's bridge up before the daemon does, so a test
    /// server can listen on its address (the daemon keeps an existing
    /// bridge); returns that address.
    pub fn bridge_up(&self) -> std::net::Ipv4Addr {
        let cidr = &self.sb.subnet;
        let gateway = cidr.split('/').next().unwrap().parse().unwrap();
        for args in [
            vec!["link", "add", "name", &self.bridge, "type", "bridge"],
            vec!["addr", "add", cidr, "dev", &self.bridge],
            vec!["link", "set", &self.bridge, "up"],
        ] {
            run(std::process::Command::new("ip").args(&args));
        }
        gateway
    }

    /// Keeps the daemon's DNS forwarder from asking anything off the
    /// machine: a dead loopback port as its only upstream.
    pub fn no_upstream_dns(&self) {
        use std::io::Write;
        // [network] is the config's last table, so this line lands in it.
        let mut config = std::fs::OpenOptions::new()
            .append(true)
            .open(self.sb.config_file())
            .unwrap();
        writeln!(config, "dns_upstreams = [\"127.0.0.1:9\"]").unwrap();
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&ok(self.sb.banger(&args))).unwrap()
    }
}

impl Drop for VmSandbox {
    fn drop(&mut self) {
        // Delete every VM the test left (killing VMMs, removing taps), then the bridge.
        if self.sb.daemon_pid().is_some_and(process_alive) {
            if let Ok(out) = self
                .sb
                .command("banger")
                .args(["vm", "list", "--json"])
                .output()
            {
                let vms: Vec<serde_json::Value> =
                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                for vm in vms {
                    let name = vm["name"].as_str().unwrap_or_default();
                    let _ = self.sb.banger(&["vm", "delete", "--force", name]);
                }
            }
            let _ = self.sb.banger(&["daemon", "stop"]);
        }
        // What no API call may remove (a build VM belongs to its build)
        // or what a dead daemon left: any process still using this
        // sandbox's files.
        let root = self.sb.root.path().display().to_string();
        for (pid, dir) in processes() {
            // VMMs work in their VM's directory; others name files here.
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            let cwd = std::fs::read_link(dir.join("cwd")).unwrap_or_default();
            let uses_sandbox = String::from_utf8_lossy(&cmdline).contains(&root)
                || cwd.starts_with(self.sb.root.path());
            if pid != std::process::id() as i32 && uses_sandbox {
                signal(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// Tests that boot guests take turns: under software emulation on two
/// cores, concurrent boots only slow each other down.
static BOOTING: Mutex<()> = Mutex::new(());

pub fn booting() -> std::sync::MutexGuard<'static, ()> {
    BOOTING.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn runtime_dir() -> PathBuf {
    std::env::var_os("BANGER_RUNTIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime"))
}

/// A copy of the runtime bundle at `at` (links to its files) whose
/// bundle.json does not claim layered roots: what an older or third-party
/// bundle looks like.
pub fn clone_only_bundle(at: &Path) -> PathBuf {
    std::fs::create_dir_all(at).unwrap();
    for entry in std::fs::read_dir(runtime_dir()).unwrap().flatten() {
        let name = entry.file_name();
        if name != "bundle.json" {
            std::os::unix::fs::symlink(entry.path(), at.join(&name)).unwrap();
        }
    }
    let json = std::fs::read_to_string(runtime_dir().join("bundle.json")).unwrap();
    let json: String = json
        .lines()
        .filter(|l| !l.contains("layered_root"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(at.join("bundle.json"), json).unwrap();
    at.to_path_buf()
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// What the host hears on a UDP port of `gateway` (the bridge's address)
/// while VM `vm` runs `script` (with `{dest}` replaced by
/// `/dev/udp/GATEWAY/PORT`) in the background: each datagram as
/// `TEXT from IP`, until 4 s of silence.
pub fn heard_from(sb: &Sandbox, vm: &str, gateway: &str, script: &str) -> Vec<String> {
    let listener = std::net::UdpSocket::bind((gateway, 0)).unwrap();
    listener
        .set_read_timeout(Some(std::time::Duration::from_secs(4)))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = script.replace("{dest}", &format!("/dev/udp/{gateway}/{port}"));
    ok(sb.banger(&[
        "vm",
        "ssh",
        vm,
        "--",
        &format!("nohup bash -c '{script}' >/dev/null 2>&1 &"),
    ]));
    let mut heard = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok((len, from)) = listener.recv_from(&mut buf) {
        heard.push(format!(
            "{} from {}",
            String::from_utf8_lossy(&buf[..len]).trim(),
            from.ip()
        ));
    }
    heard
}
