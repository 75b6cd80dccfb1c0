//! The Firecracker tier: the real `firecracker` binary, launched, configured
//! and started through banger's own client. Skipped, saying why, when no
//! binary (or, for the tests that boot, no kernel) is present; see E2E.md.
//!
//! Only what Firecracker itself guarantees is asserted (API answers,
//! `InstanceStart` accepted, process lifecycle), not that the guest boots:
//! on a host whose KVM is `kvm_pvm` the guest kernel stops early.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use banger::vmm::firecracker::models::InstanceState;
use banger::vmm::firecracker::{
    Client, DriveSpec, FirecrackerError, MachineSpec, NetSpec, RunFiles, launch, request_shutdown,
};
use banger::vmm::vmm_io::{VmmIo, VmmLogs};

const SKIP_NO_BINARY: &str = "no firecracker binary (set BANGER_FIRECRACKER or see E2E.md)";

/// The file an environment variable names, when set; naming a file that is
/// not there is a mistake worth failing on, not a reason to skip.
fn from_env(var: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os(var).filter(|p| !p.is_empty())?);
    assert!(path.is_file(), "{var}={} is not a file", path.display());
    Some(path)
}

/// `BANGER_FIRECRACKER`, else `firecracker` on `PATH`, else /usr/local/bin.
fn firecracker_binary() -> Option<PathBuf> {
    if let Some(path) = from_env("BANGER_FIRECRACKER") {
        return Some(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("firecracker"))
        .find(|p| p.is_file());
    on_path.or_else(|| Some(PathBuf::from("/usr/local/bin/firecracker")).filter(|p| p.is_file()))
}

/// `BANGER_KERNEL`, else the runtime bundle's `vmlinux` in this checkout.
fn kernel() -> Option<PathBuf> {
    if let Some(path) = from_env("BANGER_KERNEL") {
        return Some(path);
    }
    Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/vmlinux")).filter(|p| p.is_file())
}

/// The binary, a kernel and /dev/kvm, or the reason the test cannot run.
fn boot_prerequisites() -> Result<(PathBuf, PathBuf), &'static str> {
    let binary = firecracker_binary().ok_or(SKIP_NO_BINARY)?;
    let kernel = kernel()
        .ok_or("no guest kernel (set BANGER_KERNEL or put a vmlinux in runtime/, see E2E.md)")?;
    if !Path::new("/dev/kvm").exists() {
        return Err("no /dev/kvm");
    }
    if which("mkfs.ext4").is_none() {
        return Err("mkfs.ext4 not installed");
    }
    Ok((binary, kernel))
}

/// The Firecracker binary, and a VM directory with a spec that boots; None
/// (saying why) where this host cannot boot one.
fn bootable_vm() -> Option<(PathBuf, VmDir, MachineSpec)> {
    let (binary, kernel) = match boot_prerequisites() {
        Ok(found) => found,
        Err(reason) => {
            common::skip(reason);
            return None;
        }
    };
    let vm = VmDir::new();
    let spec = vm.spec(&kernel);
    Some((binary, vm, spec))
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// One VM's directory with its run files and a real ext4 rootfs.
struct VmDir {
    dir: tempfile::TempDir,
    files: RunFiles,
}

impl VmDir {
    fn new() -> VmDir {
        let dir = tempfile::Builder::new()
            .prefix("banger-fc-")
            .tempdir()
            .unwrap();
        let files = RunFiles {
            dir: dir.path().to_path_buf(),
            api_socket: dir.path().join("firecracker.sock"),
            log: dir.path().join("firecracker.log"),
            console: dir.path().join("console.log"),
        };
        VmDir { dir, files }
    }

    /// A 64 MiB ext4 image made by the real mkfs.ext4.
    fn rootfs(&self) -> PathBuf {
        let image = self.dir.path().join("rootfs.ext4");
        if !image.exists() {
            common::sparse_file(&image, 64 << 20);
            let out = Command::new(which("mkfs.ext4").unwrap())
                .args(["-q", "-F", "-L", "rootfs"])
                .arg(&image)
                .output()
                .unwrap();
            assert!(out.status.success(), "mkfs.ext4: {out:?}");
        }
        image
    }

    /// The console and log pipes (through the real relay) and the disk
    /// locks for booting `spec`.
    fn io(&self, spec: &MachineSpec) -> VmmIo {
        let logs = VmmLogs {
            console: self.files.console.clone(),
            vmm_log: self.files.log.clone(),
            cap: 1 << 20,
            relay: PathBuf::from(env!("CARGO_BIN_EXE_bangerd")),
            log_fifo: None,
        };
        let drives: Vec<banger::vmm::disklock::Disk> = spec
            .drives
            .iter()
            .map(|d| banger::vmm::disklock::Disk {
                path: d.path.clone(),
                read_only: d.read_only,
            })
            .collect();
        VmmIo::prepare(&logs, &drives).unwrap()
    }

    fn spec(&self, kernel: &Path) -> MachineSpec {
        MachineSpec {
            vcpus: 1,
            memory_mib: 128,
            kernel: kernel.to_owned(),
            initrd: None,
            kernel_args: "console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw".into(),
            drives: vec![DriveSpec {
                id: "rootfs".into(),
                path: self.rootfs(),
                root: true,
                read_only: false,
            }],
            net: None,
            vsock: None,
            restore: None,
            log_path: "/dev/stderr".into(),
        }
    }
}

/// A machine with no disks (none of the tests using it gets to boot).
fn diskless_spec(kernel: PathBuf, kernel_args: &str) -> MachineSpec {
    MachineSpec {
        vcpus: 1,
        memory_mib: 128,
        kernel,
        initrd: None,
        kernel_args: kernel_args.into(),
        drives: Vec::new(),
        net: None,
        vsock: None,
        restore: None,
        log_path: "/dev/stderr".into(),
    }
}

/// Pids of live (non-zombie) processes working in `dir` (banger starts
/// each VMM in its VM's directory).
fn processes_in(dir: &Path) -> Vec<u32> {
    common::processes()
        .into_iter()
        .filter(|(pid, proc_dir)| {
            std::fs::read_link(proc_dir.join("cwd")).is_ok_and(|cwd| cwd == dir)
                && common::process_alive(*pid)
        })
        .map(|(pid, _)| pid as u32)
        .collect()
}

/// The session id of `pid` (field 6 of /proc/<pid>/stat).
fn session_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(") ").unwrap();
    rest.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// A tap device created for the test and deleted on drop.
struct Tap(String);

impl Tap {
    /// Creates `name` with `ip tuntap`, or says why not.
    fn create(name: &str) -> Result<Tap, String> {
        let ip = which("ip").ok_or("ip not installed")?;
        let out = Command::new(&ip)
            .args(["tuntap", "add", "dev", name, "mode", "tap"])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tap(name.to_owned()))
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Some(ip) = which("ip") {
            let _ = Command::new(ip)
                .args(["tuntap", "del", "dev", &self.0, "mode", "tap"])
                .output();
        }
    }
}

#[tokio::test]
async fn launch_starts_a_real_firecracker_and_kill_leaves_nothing_behind() {
    let Some((binary, vm, mut spec)) = bootable_vm() else {
        return;
    };
    // A second, read-only drive, as banger attaches the work disk.
    let data = vm.dir.path().join("data.img");
    common::sparse_file(&data, 1 << 20);
    spec.drives.push(DriveSpec {
        id: "data".into(),
        path: data,
        root: false,
        read_only: true,
    });
    let tap_name = format!("bgfc{}", std::process::id() % 100_000);
    let tap = match Tap::create(&tap_name) {
        Ok(tap) => {
            spec.net = Some(NetSpec {
                tap: tap.0.clone(),
                mac: "02:fc:00:00:00:02".into(),
            });
            Some(tap)
        }
        Err(why) => {
            println!("no network device: cannot create tap {tap_name}: {why}");
            None
        }
    };

    let launched = launch(&binary, "fc-api-test", &vm.files, &spec, vm.io(&spec))
        .await
        .unwrap_or_else(|e| panic!("launch: {}", chain(&e)));
    let steps: Vec<&str> = launched.timings.iter().map(|(step, _)| *step).collect();
    let mut expected = vec![
        "spawn",
        "api_ready",
        "put_logger",
        "put_machine_config",
        "put_boot_source",
        "put_drive",
        "put_drive",
    ];
    if tap.is_some() {
        expected.push("put_network_interface");
    }
    expected.push("instance_start");
    assert_eq!(steps, expected);
    println!(
        "launch timings: {:?} (total {:?})",
        launched.timings,
        launched.total()
    );

    // Its own session: it outlives the test's (the daemon's) session.
    let pid = launched.pid;
    assert_eq!(session_of(pid), pid, "firecracker leads its own session");
    assert_ne!(session_of(pid), session_of(std::process::id()));
    assert_eq!(processes_in(vm.dir.path()), vec![pid]);

    let info = Client::new(&vm.files.api_socket)
        .describe_instance()
        .await
        .unwrap_or_else(|e| panic!("describe_instance: {}", chain(&e)));
    assert_eq!(info.id, "fc-api-test");
    assert_eq!(info.state, InstanceState::Running);
    assert_eq!(info.app_name, "Firecracker");
    assert!(!info.vmm_version.is_empty());

    // Configuration is pre-boot only: Firecracker refuses it now, and says why.
    let err = Client::new(&vm.files.api_socket)
        .put_machine_config(&banger::vmm::firecracker::models::MachineConfiguration {
            vcpu_count: 2,
            mem_size_mib: 256,
            smt: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, FirecrackerError::PutMachineConfig(_)),
        "{err:?}"
    );
    assert!(!err.fault_message().unwrap().is_empty());

    request_shutdown(&vm.files.api_socket)
        .await
        .unwrap_or_else(|e| panic!("request_shutdown: {}", chain(&e)));

    // Firecracker's own log went where the logger was pointed.
    let log = std::fs::read_to_string(&vm.files.log).unwrap();
    assert!(!log.is_empty(), "firecracker.log is empty");

    launched.kill(&vm.files).await.unwrap();
    assert!(!vm.files.api_socket.exists(), "api socket left behind");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process left behind"
    );
    assert!(processes_in(vm.dir.path()).is_empty());
    drop(tap);
}

#[tokio::test]
async fn config_error_carries_the_fault_message_and_leaves_nothing_behind() {
    let Some(binary) = firecracker_binary() else {
        return common::skip(SKIP_NO_BINARY);
    };
    let vm = VmDir::new();
    let spec = diskless_spec(vm.dir.path().join("no-such-vmlinux"), "console=ttyS0");
    // A stale socket from an earlier run is replaced, not an obstacle.
    std::fs::write(&vm.files.api_socket, "").unwrap();

    let err = launch(&binary, "fc-bad-kernel", &vm.files, &spec, vm.io(&spec))
        .await
        .unwrap_err();
    assert!(matches!(err, FirecrackerError::PutBootSource(_)), "{err:?}");
    let api = err.api().unwrap();
    assert_eq!(api.path(), Some("/boot-source"));
    assert_eq!(api.status().map(|s| s.as_u16()), Some(400));
    let fault = err.fault_message().unwrap();
    assert!(!fault.is_empty());
    // The chain a user sees names the step, the request and Firecracker's reason.
    let shown = chain(&err);
    assert!(
        shown.contains("boot source") && shown.contains("/boot-source"),
        "{shown}"
    );
    assert!(shown.contains(fault), "{shown}");
    println!("config error as shown: {shown}");

    assert!(
        processes_in(vm.dir.path()).is_empty(),
        "process left behind"
    );
    assert!(!vm.files.api_socket.exists(), "api socket left behind");
}

#[tokio::test]
async fn early_exit_reports_what_firecracker_printed() {
    let Some(binary) = firecracker_binary() else {
        return common::skip(SKIP_NO_BINARY);
    };
    let vm = VmDir::new();
    let spec = diskless_spec("/nonexistent".into(), "");
    // Firecracker cannot bind its API socket in a directory that does not
    // exist, and exits at startup saying so.
    let files = RunFiles {
        api_socket: vm.dir.path().join("no-such-dir/firecracker.sock"),
        ..vm.files.clone()
    };
    let err = launch(&binary, "early-exit", &files, &spec, vm.io(&spec))
        .await
        .unwrap_err();
    let FirecrackerError::ProcessExited { status, console } = &err else {
        panic!("expected ProcessExited, got {err:?}");
    };
    assert!(!status.success());
    assert!(!console.is_empty() && console != "(no output)", "{console}");
    println!("early exit as shown: {}", chain(&err));
    assert!(processes_in(vm.dir.path()).is_empty());
}

#[tokio::test]
async fn a_cancelled_launch_leaves_no_process_behind() {
    let Some((binary, vm, spec)) = bootable_vm() else {
        return;
    };
    // InstanceStart alone takes ~50 ms: the launch is dropped mid-way.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(15),
        launch(&binary, "fc-cancelled", &vm.files, &spec, vm.io(&spec)),
    )
    .await;
    assert!(cancelled.is_err(), "launch finished within 15 ms");
    // SIGKILL is delivered asynchronously; give the kernel a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !processes_in(vm.dir.path()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "process left behind");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!vm.files.api_socket.exists(), "api socket left behind");
}

#[tokio::test]
async fn a_missing_binary_is_a_spawn_error() {
    let vm = VmDir::new();
    let spec = diskless_spec("/nonexistent".into(), "");
    let missing = vm.dir.path().join("no-firecracker");
    let err = launch(&missing, "fc-missing", &vm.files, &spec, vm.io(&spec))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FirecrackerError::SpawnProcess { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn request_shutdown_without_a_vmm_is_a_connect_error() {
    let vm = VmDir::new();
    let err = request_shutdown(&vm.files.api_socket).await.unwrap_err();
    assert!(
        matches!(err, FirecrackerError::SendCtrlAltDel(_)),
        "{err:?}"
    );
    assert_eq!(err.api().unwrap().path(), None);
    assert!(err.fault_message().is_none());
}

/// Median per step over ten launches; run with `--nocapture` to see them.
#[tokio::test]
async fn launch_timings_median_of_ten() {
    let Some((binary, vm, spec)) = bootable_vm() else {
        return;
    };
    let mut runs: Vec<Vec<(&'static str, Duration)>> = Vec::new();
    for _ in 0..10 {
        let launched = launch(&binary, "fc-timing", &vm.files, &spec, vm.io(&spec))
            .await
            .unwrap_or_else(|e| panic!("launch: {}", chain(&e)));
        let mut timings = launched.timings.clone();
        timings.push(("total", launched.total()));
        runs.push(timings);
        launched.kill(&vm.files).await.unwrap();
    }
    println!("firecracker launch, median of {} runs:", runs.len());
    for (i, (step, _)) in runs[0].iter().enumerate() {
        let mut took: Vec<Duration> = runs.iter().map(|run| run[i].1).collect();
        took.sort();
        let median = took[took.len() / 2];
        println!(
            "  {step:<20} {:>8.2} ms  (min {:.2}, max {:.2})",
            ms(median),
            ms(took[0]),
            ms(took[took.len() - 1])
        );
    }
    assert!(processes_in(vm.dir.path()).is_empty());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The error and its sources, as the CLI prints them.
fn chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.join(": ")
}
