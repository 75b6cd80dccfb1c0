//! Launching a VM: spawn `firecracker` in its own session (so it outlives
//! the daemon), wait for its API socket, configure logger, machine, boot
//! source, drives and network, then `InstanceStart`. Any failure after the
//! spawn kills and reaps the process and removes its socket, so a failed
//! launch leaves nothing behind.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::FirecrackerError;
use super::client::{ApiError, Client};
use super::models::{
    BootSource, Drive, LogLevel, Logger, MachineConfiguration, MemoryBackend, MemoryBackendType,
    NetworkInterface, NetworkOverride, SnapshotLoadParams, Vsock,
};
use crate::model::VmmKind;
use crate::vmm::VmmError;
use crate::vmm::launch::{LaunchPlan, Prepared, RunPaths};
use crate::vmm::vmm_io::VmmIo;

/// How long a fresh process may take to answer on its API socket (measured
/// here: 5–40 ms).
pub const API_READY_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the API socket is polled while waiting for it.
const API_POLL_INTERVAL: Duration = Duration::from_millis(2);

/// How long the log relay may take to write out a process's last words.
const RELAY_DRAIN: Duration = Duration::from_millis(100);

/// How much of the console's end goes into an early-exit error.
const CONSOLE_TAIL_LINES: usize = 20;

/// The guest network interface's id; banger gives each VM one NIC.
const IFACE_ID: &str = "eth0";

/// What to boot.
#[derive(Debug, Clone)]
pub struct MachineSpec {
    pub vcpus: u32,
    pub memory_mib: u32,
    /// An uncompressed ELF `vmlinux` (x86_64).
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub kernel_args: String,
    /// Attached in order: the first is the guest's `/dev/vda`.
    pub drives: Vec<DriveSpec>,
    /// No network device when absent.
    pub net: Option<NetSpec>,
    /// The vsock device's unix socket (as Firecracker sees the path), for
    /// the guest agent; no vsock device when absent.
    pub vsock: Option<PathBuf>,
    /// Load this snapshot (its device state, then its memory, as
    /// Firecracker sees the paths) instead of booting: the machine, drives,
    /// network and vsock come from it, the tap from `net`; the guest is
    /// held paused until `PATCH /vm` resumes it.
    pub restore: Option<(PathBuf, PathBuf)>,
    /// Where Firecracker writes its own log, as it sees the path: its
    /// stderr, or a jailed Firecracker's log FIFO.
    pub log_path: PathBuf,
}

/// Firecracker's jailer and what it is told.
#[derive(Debug, Clone)]
pub struct Jailer {
    pub binary: PathBuf,
    /// The uid and gid Firecracker runs as.
    pub uid: u32,
    pub gid: u32,
    /// `--chroot-base-dir`.
    pub chroot_base: PathBuf,
    /// cgroup v2 `FILE=VALUE` limits; none when empty.
    pub cgroups: Vec<String>,
}

/// One block device.
#[derive(Debug, Clone)]
pub struct DriveSpec {
    /// Firecracker's drive id (alphanumeric and `_`), e.g. `rootfs`.
    pub id: String,
    pub path: PathBuf,
    /// The kernel's `root=` is this device.
    pub root: bool,
    pub read_only: bool,
}

/// The VM's network interface.
#[derive(Debug, Clone)]
pub struct NetSpec {
    /// A tap device the VMM's user may open.
    pub tap: String,
    pub mac: String,
}

/// The per-VM files Firecracker uses, all inside the VM's directory.
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// The VM's directory: Firecracker's working directory, so its API
    /// socket is bound by a short relative name (whatever the length of the
    /// full path) and `/proc/<pid>/cwd` says which VM a process runs.
    pub dir: PathBuf,
    /// The API socket, in `dir`; a stale one is removed before launch.
    pub api_socket: PathBuf,
    /// Firecracker's own log (its stderr, written by the log relay).
    pub log: PathBuf,
    /// The guest serial console (its stdout, written by the log relay).
    pub console: PathBuf,
}

impl RunFiles {
    /// `--api-sock`: relative to `dir` when the socket is in it.
    fn socket_arg(&self) -> &Path {
        self.api_socket
            .strip_prefix(&self.dir)
            .unwrap_or(&self.api_socket)
    }
}

/// A started VMM.
#[derive(Debug)]
pub struct Launched {
    pub pid: u32,
    /// The process handle: wait on it to reap the VMM when it exits. Dropping
    /// it leaves the VMM running (it is in its own session).
    pub child: Child,
    /// How long each launch step took, in order (`spawn`, `api_ready`,
    /// `put_logger`, ..., `instance_start`), for "create → InstanceStart"
    /// figures.
    pub timings: Vec<(&'static str, Duration)>,
}

impl Launched {
    /// Time from the spawn to the end of `InstanceStart`.
    pub fn total(&self) -> Duration {
        self.timings.iter().map(|(_, d)| *d).sum()
    }

    /// Kills the VMM (SIGKILL), reaps it and removes its API socket.
    pub async fn kill(mut self, files: &RunFiles) -> Result<(), FirecrackerError> {
        kill_and_reap(&mut self.child, self.pid, files).await
    }
}

/// Spawns `binary` for VM `vm_id`, configures it from `spec` and starts the
/// instance: [`spawn`] then [`Spawned::boot`]. Returns once `InstanceStart`
/// is accepted (the vCPUs run; the guest is still booting).
pub async fn launch(
    binary: &Path,
    vm_id: &str,
    files: &RunFiles,
    spec: &MachineSpec,
    io: VmmIo,
) -> Result<Launched, FirecrackerError> {
    spawn(binary, vm_id, files, io, None)
        .await?
        .boot(files, spec)
        .await
}

/// Starts the Firecracker process for VM `vm_id` in its own session, in
/// `files.dir`, with `io`'s console and log pipes and disk locks, and
/// returns as soon as it runs: the caller records its pid before anything
/// else happens. Dropping the result kills the process. With `jailer`, the
/// jailer starts it (and execs into it: the pid is Firecracker's), in the
/// jail laid out under `jailer.chroot_base`.
pub async fn spawn(
    binary: &Path,
    vm_id: &str,
    files: &RunFiles,
    io: VmmIo,
    jailer: Option<&Jailer>,
) -> Result<Spawned, FirecrackerError> {
    let mut watch = Stopwatch::new(vm_id);
    remove_stale_socket(&files.api_socket)?;
    let log_start = crate::system::fs::file_len(&files.log);
    let mut command = match jailer {
        None => {
            let mut command = std::process::Command::new(binary);
            command
                .arg("--api-sock")
                .arg(files.socket_arg())
                .arg("--id")
                .arg(instance_id(vm_id));
            command
        }
        Some(jailer) => {
            let mut command = std::process::Command::new(&jailer.binary);
            command
                .arg("--id")
                .arg(instance_id(vm_id))
                .arg("--exec-file")
                .arg(binary)
                .arg("--uid")
                .arg(jailer.uid.to_string())
                .arg("--gid")
                .arg(jailer.gid.to_string())
                .arg("--chroot-base-dir")
                .arg(&jailer.chroot_base);
            if !jailer.cgroups.is_empty() {
                command.args(["--cgroup-version", "2", "--parent-cgroup", "banger"]);
                for limit in &jailer.cgroups {
                    command.arg("--cgroup").arg(limit);
                }
            }
            command
                .arg("--")
                .arg("--api-sock")
                .arg(crate::vmm::jail::API_SOCKET);
            command
        }
    };
    command.current_dir(&files.dir);
    let locks = io.apply(&mut command);
    // SAFETY: the closure runs in the forked child before exec; it only calls
    // setsid(2), which is async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(|| rustix::process::setsid().map(drop).map_err(io::Error::from));
    }
    let spawned = Command::from(command).kill_on_drop(false).spawn();
    // The child holds the disk locks now (or there is no child).
    drop(locks);
    let child = spawned.map_err(|source| FirecrackerError::SpawnProcess {
        binary: binary.to_owned(),
        source,
    })?;
    // From here on a dropped launch (error or cancelled future) must not
    // leave the VMM behind.
    let mut guard = SpawnGuard {
        child: Some(child),
        api_socket: files.api_socket.clone(),
    };
    let Some(pid) = guard.child().id() else {
        // Not reachable: a just-spawned child has not been waited on yet.
        let status = guard.child().wait().await.unwrap_or_default();
        return Err(FirecrackerError::ProcessExited {
            status,
            console: console_tail(&files.log, log_start),
        });
    };
    watch.lap("spawn");
    tracing::debug!(vm = vm_id, pid, binary = %binary.display(), "firecracker spawned");
    Ok(Spawned {
        guard,
        pid,
        watch,
        log_start,
    })
}

/// A Firecracker process that runs but has no guest yet.
pub struct Spawned {
    guard: SpawnGuard,
    pid: u32,
    watch: Stopwatch,
    /// Where this run's output begins in the VMM log (its stderr).
    log_start: u64,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the API socket, configures the machine from `spec` and
    /// starts the instance. Any failure kills and reaps the process.
    pub async fn boot(
        mut self,
        files: &RunFiles,
        spec: &MachineSpec,
    ) -> Result<Launched, FirecrackerError> {
        let pid = self.pid;
        let watch = &mut self.watch;
        let client = Client::new(&files.api_socket);
        let child = self.guard.child();
        let configured = async {
            wait_api_ready(&client, child, &files.log, self.log_start).await?;
            watch.lap("api_ready");
            configure(&client, spec, watch).await?;
            if spec.restore.is_none() {
                client.instance_start().await?;
                watch.lap("instance_start");
            }
            Ok::<(), FirecrackerError>(())
        }
        .await;

        let mut child = self.guard.disarm();
        match configured {
            Ok(()) => Ok(Launched {
                pid,
                child,
                timings: std::mem::take(&mut self.watch.laps),
            }),
            Err(err) => {
                tracing::debug!(vm = %self.watch.vm_id, pid, error = %err, "firecracker launch failed; killing it");
                if let Err(kill_err) = kill_and_reap(&mut child, pid, files).await {
                    tracing::warn!(vm = %self.watch.vm_id, pid, error = %kill_err, "cannot clean up firecracker");
                }
                Err(err)
            }
        }
    }
}

/// Asks the guest behind `api_socket` to shut down (Ctrl+Alt+Del). The
/// guest may take its time or ignore it; the caller waits for the process
/// and kills it after its own grace period.
pub async fn request_shutdown(api_socket: &Path) -> Result<(), FirecrackerError> {
    Client::new(api_socket).send_ctrl_alt_del().await
}

/// Owns the VMM while it is being configured: dropped armed (the launch
/// future was cancelled), it sends SIGKILL and removes the API socket; tokio
/// reaps the orphaned child in the background.
struct SpawnGuard {
    child: Option<Child>,
    api_socket: PathBuf,
}

impl SpawnGuard {
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("an armed guard holds the child")
    }

    /// Hands the child over; the guard no longer kills it.
    fn disarm(&mut self) -> Child {
        self.child.take().expect("an armed guard holds the child")
    }
}

impl Drop for SpawnGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
            let _ = std::fs::remove_file(&self.api_socket);
        }
    }
}

/// Times the launch steps, one lap per step.
struct Stopwatch {
    vm_id: String,
    last: Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl Stopwatch {
    fn new(vm_id: &str) -> Stopwatch {
        Stopwatch {
            vm_id: vm_id.to_string(),
            last: Instant::now(),
            laps: Vec::new(),
        }
    }

    /// Records the time since the previous lap as step `name`.
    fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        let took = now - self.last;
        self.last = now;
        tracing::debug!(
            vm = %self.vm_id,
            step = name,
            ?took,
            "firecracker launch step"
        );
        self.laps.push((name, took));
    }
}

/// Every configuration request before `InstanceStart`, in Firecracker's order.
async fn configure(
    client: &Client,
    spec: &MachineSpec,
    watch: &mut Stopwatch,
) -> Result<(), FirecrackerError> {
    // Firecracker's own log goes where its stderr goes (the VMM log, through
    // the relay); without a target it would write to stdout, the console.
    client
        .put_logger(&Logger {
            log_path: Some(spec.log_path.clone()),
            level: Some(LogLevel::Info),
            show_level: Some(true),
            show_log_origin: Some(false),
        })
        .await?;
    watch.lap("put_logger");
    if let Some((state, memory)) = &spec.restore {
        let params = SnapshotLoadParams {
            snapshot_path: state.clone(),
            mem_backend: MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: memory.clone(),
            },
            resume_vm: false,
            network_overrides: spec
                .net
                .iter()
                .map(|net| NetworkOverride {
                    iface_id: IFACE_ID.to_owned(),
                    host_dev_name: net.tap.clone(),
                })
                .collect(),
        };
        client
            .clone()
            .with_timeout(super::client::INSTANCE_START_TIMEOUT)
            .load_snapshot(&params)
            .await?;
        watch.lap("load_snapshot");
        return Ok(());
    }
    client
        .put_machine_config(&MachineConfiguration {
            vcpu_count: spec.vcpus,
            mem_size_mib: spec.memory_mib,
            smt: None,
        })
        .await?;
    watch.lap("put_machine_config");
    client
        .put_boot_source(&BootSource {
            kernel_image_path: spec.kernel.clone(),
            initrd_path: spec.initrd.clone(),
            boot_args: Some(spec.kernel_args.clone()),
        })
        .await?;
    watch.lap("put_boot_source");
    for drive in &spec.drives {
        client
            .put_drive(&Drive {
                drive_id: drive.id.clone(),
                path_on_host: drive.path.clone(),
                is_root_device: drive.root,
                is_read_only: drive.read_only,
                cache_type: None,
            })
            .await?;
        watch.lap("put_drive");
    }
    if let Some(net) = &spec.net {
        client
            .put_network_interface(&NetworkInterface {
                iface_id: IFACE_ID.to_owned(),
                host_dev_name: net.tap.clone(),
                guest_mac: Some(net.mac.clone()),
            })
            .await?;
        watch.lap("put_network_interface");
    }
    if let Some(uds_path) = &spec.vsock {
        client
            .put_vsock(&Vsock {
                guest_cid: 3,
                uds_path: uds_path.clone(),
            })
            .await?;
        watch.lap("put_vsock");
    }
    Ok(())
}

/// Polls `GET /` until it answers, the process exits, or the timeout passes.
async fn wait_api_ready(
    client: &Client,
    child: &mut Child,
    log: &Path,
    log_start: u64,
) -> Result<(), FirecrackerError> {
    let deadline = Instant::now() + API_READY_TIMEOUT;
    let mut last: Option<ApiError> = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            // The log relay writes what the process said a moment later.
            tokio::time::sleep(RELAY_DRAIN).await;
            return Err(FirecrackerError::ProcessExited {
                status,
                console: console_tail(log, log_start),
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FirecrackerError::WaitApiSocket {
                socket: client.socket().to_owned(),
                timeout: API_READY_TIMEOUT,
                source: last,
            });
        }
        // The socket file appears when Firecracker binds it; connecting
        // before that only costs a failed syscall.
        if client.socket().exists() {
            match client.clone().with_timeout(left).describe_instance().await {
                Ok(_) => return Ok(()),
                Err(err) => last = into_api(err),
            }
        }
        tokio::time::sleep(API_POLL_INTERVAL).await;
    }
}

fn into_api(err: FirecrackerError) -> Option<ApiError> {
    match err {
        FirecrackerError::DescribeInstance(api) => Some(api),
        _ => None,
    }
}

/// SIGKILL, reap, remove the socket (Firecracker cannot remove it itself).
async fn kill_and_reap(
    child: &mut Child,
    pid: u32,
    files: &RunFiles,
) -> Result<(), FirecrackerError> {
    let killed = match child.start_kill() {
        // Already exited and reaped: nothing to signal.
        Err(_) if child.id().is_none() => Ok(()),
        result => result,
    };
    let reaped = child.wait().await.map(drop);
    let removed = remove_stale_socket(&files.api_socket);
    killed
        .and(reaped)
        .map_err(|source| FirecrackerError::KillProcess { pid, source })?;
    removed
}

fn remove_stale_socket(socket: &Path) -> Result<(), FirecrackerError> {
    match std::fs::remove_file(socket) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(prepare(socket, source)),
    }
}

fn prepare(path: &Path, source: io::Error) -> FirecrackerError {
    FirecrackerError::PrepareFile {
        path: path.to_owned(),
        source,
    }
}

/// What the process wrote to the console since `start` (its last lines),
/// for an error message.
fn console_tail(console: &Path, start: u64) -> String {
    crate::system::fs::log_tail(console, start, CONSOLE_TAIL_LINES)
}

/// Firecracker's instance ID for VM `name`: it accepts only ASCII letters,
/// digits and '-', at most 64 of them (a build VM's name has a '.').
pub fn instance_id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

/// The Firecracker half of [`crate::vmm::launch::launch`]: spawn it
/// (through its jailer when there is one), tell `spawned` its pid, then
/// configure and start the instance.
pub(crate) async fn start<E: From<VmmError>>(
    plan: &LaunchPlan,
    paths: &RunPaths,
    prepared: Prepared,
    spawned: impl FnOnce(u32) -> Result<(), E>,
) -> Result<crate::vmm::launch::Launched, E> {
    let failed = VmmError::launch(VmmKind::Firecracker);
    let binary = plan
        .firecracker
        .as_deref()
        .ok_or_else(|| failed("no firecracker binary".into()))?;
    let Prepared {
        io,
        kernel,
        initrd,
        drives,
        jail,
    } = prepared;
    // The agent's vsock socket as Firecracker sees it: in its jail (linked
    // from the VM's `run/`), or by a short name relative to the VM directory.
    let vsock = match &jail {
        _ if !plan.agent => None,
        Some((_, jail)) => {
            jail.link_vsock(&paths.agent_socket)
                .map_err(VmmError::io(&paths.agent_socket))?;
            Some(PathBuf::from(crate::vmm::jail::VSOCK_SOCKET))
        }
        None => Some(
            paths
                .agent_socket
                .strip_prefix(&paths.dir)
                .unwrap_or(&paths.agent_socket)
                .to_path_buf(),
        ),
    };
    // Paths as Firecracker sees them: in its jail, or its descriptors.
    let (kernel, initrd, drive_paths, log_path, api_socket) = match &jail {
        Some((_, jail)) => (
            jail.kernel.clone(),
            jail.initrd.clone(),
            jail.drives.clone(),
            PathBuf::from(crate::vmm::jail::LOG_FIFO),
            jail.api_socket.clone(),
        ),
        None => (
            kernel,
            initrd,
            drives.iter().map(|d| d.path.clone()).collect(),
            PathBuf::from("/dev/stderr"),
            paths.api_socket.clone(),
        ),
    };
    // A snapshot to load goes into the jail, the VMM's; unjailed as the
    // daemon, it reads the VM's own snapshot files where they are.
    let restore = match (&plan.restore, &jail, &plan.user) {
        (None, _, _) => None,
        (Some(memory), Some((_, jail)), Some(user)) => Some(
            jail.stage_snapshot(
                &memory.with_file_name(super::snapshot::STATE_FILE),
                memory,
                (user.uid, user.gid),
            )
            .map_err(VmmError::io(&jail.root))?,
        ),
        (Some(memory), None, None) => Some((
            memory.with_file_name(super::snapshot::STATE_FILE),
            memory.clone(),
        )),
        (Some(_), _, _) => {
            return Err(failed(super::snapshot::not_supported().into()).into());
        }
    };
    let spec = MachineSpec {
        vcpus: plan.vcpus,
        memory_mib: plan.memory_mib,
        kernel,
        initrd,
        kernel_args: plan.kernel_args.clone(),
        drives: drives
            .iter()
            .zip(drive_paths)
            .zip(["vda", "vdb", "vdc", "vdd"])
            .enumerate()
            .map(|(i, ((disk, path), id))| DriveSpec {
                id: id.into(),
                path,
                root: i == 0,
                read_only: disk.read_only,
            })
            .collect(),
        net: Some(NetSpec {
            tap: plan.tap.to_string(),
            mac: plan.mac.to_string(),
        }),
        vsock,
        restore,
        log_path,
    };
    let run_files = RunFiles {
        dir: paths.dir.clone(),
        api_socket,
        log: paths.vmm_log.clone(),
        console: paths.console.clone(),
    };
    let jailer = match (&jail, &plan.user) {
        (Some((binary, jail)), Some(user)) => Some(Jailer {
            binary: binary.clone(),
            uid: user.uid,
            gid: user.gid,
            chroot_base: jail.base.clone(),
            cgroups: crate::vmm::jail::cgroup_limits(plan.vcpus, plan.memory_mib),
        }),
        _ => None,
    };
    let vmm = spawn(binary, &plan.name, &run_files, io, jailer.as_ref())
        .await
        .map_err(|e| failed(e.into()))?;
    // Dropping `vmm` on failure kills it.
    spawned(vmm.pid())?;
    let launched = vmm
        .boot(&run_files, &spec)
        .await
        .map_err(|e| failed(e.into()))?;
    Ok(crate::vmm::launch::Launched {
        pid: launched.pid,
        child: launched.child,
    })
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::*;

    #[test]
    fn console_tail_reads_only_this_run_and_at_most_the_tail() {
        let (_dir, path) = crate::testing::temp_file("console.log", "previous run\n");
        let start = std::fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(file, "Error: bad argument").unwrap();
        assert_eq!(console_tail(&path, start), "Error: bad argument");

        for i in 0..100 {
            writeln!(file, "line {i}").unwrap();
        }
        let tail = console_tail(&path, start);
        assert_eq!(tail.lines().count(), CONSOLE_TAIL_LINES);
        assert!(tail.ends_with("line 99"), "{tail}");
    }

    #[test]
    fn console_tail_says_when_there_is_nothing() {
        let (dir, path) = crate::testing::temp_file("console.log", "");
        assert_eq!(console_tail(&path, 0), "(nothing)");
        assert!(console_tail(&dir.path().join("absent"), 0).starts_with("(cannot read"));
    }

    #[test]
    fn stale_socket_is_removed_and_absence_is_fine() {
        let (_dir, socket) = crate::testing::temp_file("firecracker.sock", "");
        remove_stale_socket(&socket).unwrap();
        assert!(!socket.exists());
        remove_stale_socket(&socket).unwrap();
    }
}
