//! The QEMU `microvm` VMM: launched in its own session (so it outlives the
//! daemon), controlled over its QMP socket. Same kernel, disks and tap as
//! Firecracker; used where Firecracker cannot boot a guest.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::VmmError;
use super::disklock::Disk;
use super::launch::{LaunchPlan, Launched, Prepared, RunPaths};
use super::vmm_io::VmmIo;
use crate::model::VmmKind;
use crate::system::tools;

/// Errors launching or talking to QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error(
        "qemu-system-x86_64 is not installed; install it: apt-get install qemu-system-x86 (Debian/Ubuntu), dnf install qemu-system-x86-core (Fedora)"
    )]
    NotInstalled,
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start qemu")]
    Spawn(#[source] std::io::Error),
    #[error("QMP on {socket} failed")]
    Qmp {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP command `{command}` failed: {message}")]
    QmpCommand { command: String, message: String },
}

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// Software emulation: slow, but boots anywhere.
    Tcg,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct QemuSpec {
    pub name: String,
    pub accel: Accel,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub kernel_args: String,
    /// Block devices in order: the first is `/dev/vda`.
    pub drives: Vec<Disk>,
    pub net: Option<QemuNet>,
    /// A virtio-serial port for the guest agent, on this unix socket.
    pub agent_socket: Option<PathBuf>,
    /// Restore the guest from the snapshot on this inherited descriptor
    /// (`-incoming`), held paused (`-S`) until `cont`, instead of booting.
    pub incoming_fd: Option<i32>,
}

/// The guest's network card.
#[derive(Debug, Clone)]
pub struct QemuNet {
    /// The tap, opened by the daemon and inherited at this number: QEMU
    /// needs no access to `/dev/net/tun` and cannot attach to another tap.
    pub tap_fd: i32,
    pub mac: String,
}

/// Where QEMU's files go. Its serial console is its stdout and its own
/// messages its stderr, both pipes to the log relay ([`VmmIo`]).
#[derive(Debug, Clone)]
pub struct QemuFiles {
    /// The VM's directory: QEMU's working directory, so its QMP socket is
    /// bound by a short relative name and `/proc/<pid>/cwd` names the VM.
    pub dir: PathBuf,
    /// The QMP socket, in `dir`.
    pub qmp_socket: PathBuf,
}

impl QemuFiles {
    /// The QMP socket as QEMU is told it: relative to `dir` when inside it.
    fn socket_arg(&self) -> &Path {
        self.qmp_socket
            .strip_prefix(&self.dir)
            .unwrap_or(&self.qmp_socket)
    }
}

/// The machine, accelerator and CPU options for `accel`.
pub fn machine_args(accel: Accel) -> Vec<String> {
    let (machine, accel, cpu) = match accel {
        // Under TCG the guest needs the PIT and PIC for its timer, or it
        // hangs calibrating the TSC (E2E.md).
        Accel::Tcg => ("microvm,acpi=on,rtc=on,pit=on,pic=on", "tcg", "max"),
        Accel::Kvm => ("microvm,acpi=on,rtc=on", "kvm", "host"),
    };
    ["-M", machine, "-accel", accel, "-cpu", cpu]
        .map(String::from)
        .into()
}

/// The argv after the program name.
pub fn args(spec: &QemuSpec, files: &QemuFiles) -> Vec<String> {
    let mut args: Vec<String> = vec!["-name".into(), spec.name.clone()];
    args.extend(machine_args(spec.accel));
    args.extend([
        "-m".into(),
        spec.memory_mib.to_string(),
        "-smp".into(),
        spec.vcpus.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        // QEMU's seccomp filter: no obsolete syscalls, no setuid, no
        // spawning processes, no changing its own priorities or affinity.
        "-sandbox".into(),
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-chardev".into(),
        "stdio,id=console,signal=off".into(),
        "-serial".into(),
        "chardev:console".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", files.socket_arg().display()),
        "-kernel".into(),
        spec.kernel.display().to_string(),
        "-append".into(),
        spec.kernel_args.clone(),
    ]);
    if let Some(initrd) = &spec.initrd {
        args.extend(["-initrd".into(), initrd.display().to_string()]);
    }
    for (i, drive) in spec.drives.iter().enumerate() {
        let readonly = if drive.read_only { ",readonly=on" } else { "" };
        args.extend([
            "-drive".into(),
            format!(
                "id=disk{i},file={},format=raw,if=none{readonly}",
                drive.path.display()
            ),
            "-device".into(),
            format!("virtio-blk-device,drive=disk{i}"),
        ]);
    }
    if let Some(socket) = &spec.agent_socket {
        let socket = socket.strip_prefix(&files.dir).unwrap_or(socket);
        args.extend([
            "-device".into(),
            "virtio-serial-device".into(),
            "-chardev".into(),
            format!(
                "socket,id=agent,path={},server=on,wait=off",
                socket.display()
            ),
            "-device".into(),
            format!(
                "virtserialport,chardev=agent,name={}",
                banger_agent::proto::SERIAL_PORT_NAME
            ),
        ]);
    }
    if let Some(fd) = spec.incoming_fd {
        args.extend(["-S".into(), "-incoming".into(), format!("fd:{fd}")]);
    }
    if let Some(net) = &spec.net {
        args.extend([
            "-netdev".into(),
            format!("tap,id=net0,fd={}", net.tap_fd),
            "-device".into(),
            format!("virtio-net-device,netdev=net0,mac={}", net.mac),
        ]);
    }
    args
}

/// Starts QEMU in its own session, in `files.dir`, with `io`'s pipes and
/// disk locks; returns the child (the caller reaps it).
pub fn launch(
    spec: &QemuSpec,
    files: &QemuFiles,
    io: VmmIo,
) -> Result<tokio::process::Child, QemuError> {
    let program = tools::find_program("qemu-system-x86_64", None).ok_or(QemuError::NotInstalled)?;
    let _ = std::fs::remove_file(&files.qmp_socket);
    let mut command = std::process::Command::new(program);
    command.current_dir(&files.dir).args(args(spec, files));
    let locks = io.apply(&mut command);
    // SAFETY: setsid is async-signal-safe and touches no memory of ours; a
    // session of its own keeps the VMM alive when the daemon goes.
    unsafe {
        command.pre_exec(|| rustix::process::setsid().map(drop).map_err(Into::into));
    }
    tracing::debug!(argv = ?command, "launching qemu");
    let spawned = tokio::process::Command::from(command)
        .kill_on_drop(false)
        .spawn()
        .map_err(QemuError::Spawn);
    // The child holds the disk locks now (or there is no child).
    drop(locks);
    spawned
}

/// Sends one QMP command and returns its `return` value.
pub async fn qmp(
    socket: &Path,
    command: &str,
    arguments: Option<Value>,
) -> Result<Value, QemuError> {
    Qmp::connect(socket)
        .await?
        .execute(command, arguments)
        .await
}

/// How long one QMP exchange may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(5);

/// One QMP connection, past its greeting and capabilities negotiation.
pub struct Qmp {
    socket: PathBuf,
    lines: BufReader<tokio::net::unix::OwnedReadHalf>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl Qmp {
    pub async fn connect(socket: &Path) -> Result<Qmp, QemuError> {
        let io = |source| QemuError::Qmp {
            socket: socket.to_path_buf(),
            source,
        };
        let stream = tokio::time::timeout(QMP_TIMEOUT, super::vmm_io::connect_control(socket))
            .await
            .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
            .map_err(io)?;
        let (read, write) = stream.into_split();
        let mut qmp = Qmp {
            socket: socket.to_path_buf(),
            lines: BufReader::new(read),
            write,
        };
        qmp.exchange("(greeting)", None, None).await?;
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs `command` and returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QemuError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        self.exchange(command, Some(request), None).await
    }

    /// Hands QEMU descriptor `fd` under `name` (`getfd`), for a later
    /// command on this connection to use as `fd:NAME`.
    pub async fn send_fd(
        &mut self,
        name: &str,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<(), QemuError> {
        let request = json!({ "execute": "getfd", "arguments": { "fdname": name } });
        self.exchange("getfd", Some(request), Some(fd))
            .await
            .map(drop)
    }

    /// Sends `request` (with `fd` attached, if any) and reads up to its
    /// reply, skipping events; with no request, reads the greeting.
    async fn exchange(
        &mut self,
        command: &str,
        request: Option<Value>,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<Value, QemuError> {
        let io = |source| QemuError::Qmp {
            socket: self.socket.clone(),
            source,
        };
        let exchange = async {
            if let Some(request) = &request {
                let line = format!("{request}\n");
                match fd {
                    Some(fd) => send_with_fd(&self.write, line.as_bytes(), fd).await?,
                    None => self.write.write_all(line.as_bytes()).await?,
                }
            }
            loop {
                // QEMU may close the socket as it quits: that is its answer.
                let Some(line) = next_line(&mut self.lines).await? else {
                    return Ok(Ok(Value::Null));
                };
                let value: Value = serde_json::from_str(&line).map_err(std::io::Error::other)?;
                if let Some(error) = value.get("error") {
                    return Ok(Err(error["desc"]
                        .as_str()
                        .unwrap_or("unknown error")
                        .to_string()));
                }
                if let Some(ret) = value.get("return") {
                    return Ok(Ok(ret.clone()));
                }
                if request.is_none() && value.get("QMP").is_some() {
                    return Ok(Ok(value));
                }
                // Anything else is an asynchronous event: skip it.
            }
        };
        let answer = tokio::time::timeout(QMP_TIMEOUT, exchange).await;
        let answer: std::io::Result<Result<Value, String>> =
            answer.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
        answer
            .map_err(io)?
            .map_err(|message| QemuError::QmpCommand {
                command: command.to_string(),
                message,
            })
    }
}

/// Writes `bytes` in one message carrying `fd` (SCM_RIGHTS).
async fn send_with_fd(
    write: &tokio::net::unix::OwnedWriteHalf,
    bytes: &[u8],
    fd: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let stream: &tokio::net::UnixStream = write.as_ref();
    let fds = [fd];
    let sent = stream
        .async_io(tokio::io::Interest::WRITABLE, || {
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds));
            sendmsg(
                stream,
                &[std::io::IoSlice::new(bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .map_err(std::io::Error::from)
        })
        .await?;
    if sent != bytes.len() {
        // A QMP command is a few dozen bytes: the socket takes it whole.
        return Err(std::io::Error::other("QMP took part of a command"));
    }
    Ok(())
}

/// How often a migration's progress is asked for.
const MIGRATION_POLL: Duration = Duration::from_millis(20);

/// Writes the paused guest's memory and device state into `into` (QEMU's
/// migration stream, through a descriptor: QEMU needs no path of ours),
/// then ends QEMU. The guest is stopped first if it runs.
pub async fn save(socket: &Path, into: &std::fs::File, timeout: Duration) -> Result<(), QemuError> {
    use std::os::fd::AsFd;
    let mut qmp = Qmp::connect(socket).await?;
    qmp.execute("stop", None).await?;
    // The default bandwidth cap (32 MiB/s) is for live migration over a
    // network; a file takes what the disk gives.
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": 1u64 << 40 })),
    )
    .await?;
    qmp.send_fd("snapshot", into.as_fd()).await?;
    qmp.execute("migrate", Some(json!({ "uri": "fd:snapshot" })))
        .await?;
    let began = std::time::Instant::now();
    loop {
        let status = qmp.execute("query-migrate", None).await?;
        match status["status"].as_str().unwrap_or("") {
            "completed" => break,
            "failed" | "cancelled" => {
                return Err(QemuError::QmpCommand {
                    command: "migrate".into(),
                    message: status["error-desc"]
                        .as_str()
                        .unwrap_or("the migration failed")
                        .to_string(),
                });
            }
            _ if began.elapsed() > timeout => {
                let _ = qmp.execute("migrate_cancel", None).await;
                return Err(QemuError::QmpCommand {
                    command: "migrate".into(),
                    message: format!("not done in {} s", timeout.as_secs()),
                });
            }
            _ => tokio::time::sleep(MIGRATION_POLL).await,
        }
    }
    Ok(())
}

/// Waits until a QEMU started with `-incoming` has loaded its snapshot
/// and holds the guest paused (`-S`), ready for `cont`.
pub async fn wait_restored(qmp: &mut Qmp, timeout: Duration) -> Result<(), QemuError> {
    let began = std::time::Instant::now();
    loop {
        // QMP answers while the stream loads.
        let status = qmp.execute("query-status", None).await?;
        if status["status"] != "inmigrate" {
            if status["running"] == false {
                return Ok(());
            }
            return Err(QemuError::QmpCommand {
                command: "query-status".into(),
                message: format!("unexpected state after restoring: {}", status["status"]),
            });
        }
        if began.elapsed() > timeout {
            return Err(QemuError::QmpCommand {
                command: "query-status".into(),
                message: format!("the snapshot did not load in {} s", timeout.as_secs()),
            });
        }
        tokio::time::sleep(MIGRATION_POLL).await;
    }
}

/// A QMP connection to a QEMU just spawned: its socket comes a moment
/// after the process.
pub async fn connect_new(socket: &Path, timeout: Duration) -> Result<Qmp, QemuError> {
    let began = std::time::Instant::now();
    loop {
        match Qmp::connect(socket).await {
            Err(QemuError::Qmp { .. }) if began.elapsed() < timeout => {
                tokio::time::sleep(MIGRATION_POLL).await
            }
            other => return other,
        }
    }
}

/// The QEMU version that runs behind `socket`, as `MAJOR.MINOR.MICRO`.
pub async fn version(qmp: &mut Qmp) -> Result<String, QemuError> {
    let v = qmp.execute("query-version", None).await?;
    let q = &v["qemu"];
    Ok(format!("{}.{}.{}", q["major"], q["minor"], q["micro"]))
}

/// The longest QMP line read: QEMU runs as another uid and may be
/// compromised, so no answer may grow the daemon.
const MAX_QMP_LINE: u64 = 1 << 20;

/// The next line from QMP, without its newline; `None` at the end.
async fn next_line(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
) -> std::io::Result<Option<String>> {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    let read = reader
        .take(MAX_QMP_LINE)
        .read_until(b'\n', &mut line)
        .await?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') && read as u64 == MAX_QMP_LINE {
        return Err(std::io::Error::other(format!(
            "a QMP line longer than {MAX_QMP_LINE} bytes"
        )));
    }
    Ok(Some(String::from_utf8_lossy(&line).trim_end().to_string()))
}

/// Presses the ACPI power button: a graceful shutdown request.
pub async fn powerdown(socket: &Path) -> Result<(), QemuError> {
    qmp(socket, "system_powerdown", None).await.map(drop)
}

/// Whether this host's KVM can run QEMU guests with hardware acceleration.
pub fn accel_for(kvm: crate::system::host::KvmKind) -> Accel {
    use crate::system::host::KvmKind;
    let usable = rustix::fs::access(
        "/dev/kvm",
        rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
    )
    .is_ok();
    match kvm {
        KvmKind::Intel | KvmKind::Amd if usable => Accel::Kvm,
        // kvm_pvm runs Firecracker's API but not a standard guest kernel.
        _ => Accel::Tcg,
    }
}

/// The host TSC frequency in kHz, for `tsc_early_khz=` under TCG (skips the
/// PIT calibration that sometimes hangs there).
pub fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0).round() as u64)
}

/// The QEMU half of [`super::launch::launch`]: the guest's tap by
/// descriptor, the argv, the process; `spawned` hears its pid.
pub(super) async fn start<E: From<VmmError>>(
    plan: &LaunchPlan,
    paths: &RunPaths,
    prepared: Prepared,
    spawned: impl FnOnce(u32) -> Result<(), E>,
) -> Result<Launched, E> {
    let failed = VmmError::launch(VmmKind::Qemu);
    let Prepared {
        mut io,
        kernel,
        initrd,
        drives,
        ..
    } = prepared;
    let tap = crate::system::net::open_tap(plan.tap.as_str()).map_err(|e| failed(e.into()))?;
    let incoming_fd = match &plan.restore {
        Some(memory) => {
            let file = std::fs::File::open(memory).map_err(VmmError::io(memory))?;
            Some(io.pass_fd(file.into()))
        }
        None => None,
    };
    let spec = QemuSpec {
        name: plan.name.clone(),
        accel: accel_for(crate::system::host::kvm_kind()),
        vcpus: plan.vcpus,
        memory_mib: plan.memory_mib,
        kernel,
        initrd,
        kernel_args: plan.kernel_args.clone(),
        drives,
        net: Some(QemuNet {
            tap_fd: io.pass_fd(tap),
            mac: plan.mac.to_string(),
        }),
        agent_socket: plan.agent.then(|| paths.agent_socket.clone()),
        incoming_fd,
    };
    let files = QemuFiles {
        dir: paths.dir.clone(),
        qmp_socket: paths.api_socket.clone(),
    };
    let mut child = launch(&spec, &files, io).map_err(|e| failed(e.into()))?;
    let Some(pid) = child.id() else {
        return Err(failed("qemu exited at once".into()).into());
    };
    if let Err(e) = spawned(pid) {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Err(e);
    }
    Ok(Launched { pid, child })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_has_disks_in_order_and_the_tap() {
        let spec = QemuSpec {
            name: "box".into(),
            accel: Accel::Tcg,
            vcpus: 2,
            memory_mib: 512,
            kernel: "/k".into(),
            initrd: Some("/i".into()),
            kernel_args: "console=ttyS0".into(),
            drives: vec![Disk::ro("/root.ext4"), Disk::rw("/work.ext4")],
            net: Some(QemuNet {
                tap_fd: 9,
                mac: "06:00:00:00:00:01".into(),
            }),
            agent_socket: Some("/vm/run/agent.sock".into()),
            incoming_fd: None,
        };
        let files = QemuFiles {
            dir: "/vm".into(),
            qmp_socket: "/vm/q.sock".into(),
        };
        let argv = args(&spec, &files).join(" ");
        crate::testing::assert_contains_all(
            &argv,
            &[
                "-accel tcg",
                "socket,id=agent,path=run/agent.sock,server=on,wait=off",
                "virtserialport,chardev=agent,name=org.banger.agent",
                "pit=on,pic=on",
                "-initrd /i",
                "file=/root.ext4,format=raw,if=none,readonly=on",
                "file=/work.ext4,format=raw,if=none -device",
                "-netdev tap,id=net0,fd=9 ",
                "mac=06:00:00:00:00:01",
                "unix:q.sock,server=on,wait=off",
                "-chardev stdio,id=console",
                "-sandbox on,obsolete=deny",
            ],
        );
        let root = argv.find("file=/root.ext4").unwrap();
        let work = argv.find("file=/work.ext4").unwrap();
        assert!(root < work);
        assert!(!argv.contains("-incoming"), "{argv}");
        // A restore: held paused, the snapshot on an inherited descriptor.
        let restore = QemuSpec {
            incoming_fd: Some(11),
            ..spec
        };
        let argv = args(&restore, &files).join(" ");
        assert!(argv.contains("-S -incoming fd:11"), "{argv}");
    }
}
