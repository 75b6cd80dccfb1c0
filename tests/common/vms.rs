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
            let out = std::process::Command::new("ip")
                .args(&args)
                .output()
                .unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
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
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            // VMMs work in their VM's directory; others name files here.
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
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

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}
