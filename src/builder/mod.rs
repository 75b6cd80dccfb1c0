//! The native image builder. `image build` clones a base image, boots it
//! in a temporary build VM, provisions it over banger's own SSH client
//! (files, apt sources, packages, kernel modules, scripts), records the
//! package manifest, shuts the guest down cleanly, checks the filesystem
//! and registers the result as a new immutable image.
//!
//! - [`spec`]: the request checked and normalized, and its build key.
//! - [`guest`]: the commands run in the guest, as text.
//! - [`report`]: progress to the client (NDJSON) and to the build log.
//!
//! A build is keyed by a digest of its inputs: a repeat returns the image
//! already made without booting anything. A failure or a cancel (the
//! client hung up) kills the build VM, releases its tap and lease and
//! removes the partial image; a daemon killed mid-build leaves a build VM
//! and a staging directory that the next daemon start removes.

mod guest;
mod link;
mod report;
mod spec;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use report::{Cancelled, ProgressRx, ProgressTx, Reporter, progress_channel};
pub use spec::{Spec, SpecError, image_identity};

use crate::image::{DEFAULT_IMAGE, ImageError, ImageInfo, Images, Staged, unix_now};
use crate::rpc::api::{BuildImage, CreateVm, ImageBuilt, OutputStream, Progress, VmOpResult};
use crate::ssh::archive::Entry;
use crate::ssh::{SshError, Target};
use crate::store::{ImageRecord, StoreError};
use crate::system::pid::ExitWatch;
use crate::vm::{Manager, VmError};
use link::Link;
use report::Lines;

/// How many build logs are kept per image name.
const KEEP_LOGS: usize = 10;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    BadName(#[from] crate::rpc::NameError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("no image `{0}` to build from")]
    UnknownBase(String),
    #[error("image `{0}` already exists")]
    Exists(String),
    #[error("--size {asked} is smaller than the base image ({base})")]
    TooSmall { asked: String, base: String },
    #[error("the runtime bundle has no kernel modules to install")]
    NoModules,
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("SSH to the build VM failed")]
    Ssh(#[from] SshError),
    #[error("the build VM's agent failed")]
    Agent(#[source] crate::agent::AgentError),
    #[error(
        "--packages needs apt-get in the image, and `{image}` has none: banger installs packages with apt (Debian, Ubuntu); for another image, install them with --run SCRIPT using its own package manager"
    )]
    NoApt { image: String },
    #[error("the build VM's VMM exited; the console ends with:\n{console_tail}")]
    VmmExited { console_tail: String },
    #[error("{what} failed with exit code {code}")]
    Command { what: String, code: u32 },
    #[error("script {} exited with code {code}", script.display())]
    Script { script: PathBuf, code: u32 },
    #[error("the build VM did not shut down by itself; its filesystem may be damaged")]
    UncleanShutdown,
    #[error(
        "the built filesystem is not clean (e2fsck -n found problems); the image was not registered"
    )]
    NotClean,
    #[error("cannot check the built filesystem")]
    Check(#[source] crate::system::e2fs::E2fsError),
    #[error("cannot move {path} into the image store")]
    Move {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the build VM's create failed inside bangerd: {0}")]
    CreateTask(String),
    #[error("cancelled")]
    Cancelled,
}

impl BuildError {
    /// What the user can do about it.
    fn hint(&self) -> Option<String> {
        Some(match self {
            BuildError::Exists(name) => format!(
                "add --replace to build a new version of `{name}` (VMs made from the old one keep working), or pick another name"
            ),
            BuildError::UnknownBase(_) => "`banger image list` shows the images to build from".into(),
            BuildError::NoModules => "rebuild the bundle with `make runtime-debian`, which ships modules/<kver>".into(),
            BuildError::Command { what, .. } if what.starts_with("apt") => {
                "check the package names and the apt sources (--apt-source); the output above says what apt could not do".into()
            }
            BuildError::Script { .. } => "the script's output is above and in the build log".into(),
            BuildError::Cancelled => "nothing was registered; the build VM was removed".into(),
            _ => return None,
        })
    }
}

/// Checks what can be checked of `req` before anything starts: its names
/// and its spec. The daemon answers a request that fails this with an
/// error instead of a progress stream.
pub fn check_request(req: &BuildImage) -> Result<(), BuildError> {
    crate::rpc::check_image_name(&req.name)?;
    if let Some(from) = &req.from {
        crate::rpc::check_image_name(from)?;
    }
    Spec::from_request(req, DEFAULT_IMAGE)?;
    Ok(())
}

/// Runs the build asked for by `req`, reporting to `reporter` until its
/// final event (`done` or `failed`). Cancelled when `cancelled` fires.
pub async fn build(
    vms: Arc<Manager>,
    images: Arc<Images>,
    req: BuildImage,
    mut reporter: Reporter,
    cancelled: Cancelled,
) {
    let started = Instant::now();
    let builder = Builder { vms, images };
    let b = &builder;
    if let Err(err) = check_request(&req) {
        reporter.end(failure(&err, &reporter));
        return;
    }
    let logs = b.vms.paths.state_dir.join("builds");
    let log = logs.join(format!("{}-{}.log", req.name, unix_now()));
    if let Err(e) = reporter.log_to(log.clone(), b.vms.config.log_cap()) {
        tracing::warn!(log = %log.display(), error = %e, "cannot write the build log");
    }
    let mut made = Made::default();
    let result = tokio::select! {
        result = run(b, &req, &mut reporter, &mut made, started) => result,
        () = cancelled.wait() => Err(BuildError::Cancelled),
    };
    // A create cut short by a cancel runs on to its end (it cannot be
    // dropped half way: disks and rollback run in tasks of their own); then
    // its VM is removed like any other.
    if let Some(creating) = made.creating.take() {
        let _ = creating.await;
    }
    if let Some(vm) = made.vm.take()
        && let Err(e) = b.vms.delete(&vm, true).await
    {
        tracing::error!(%vm, error = %e, "cannot remove the build VM; `banger vm delete` it");
    }
    drop(made.staged.take());
    match result {
        Ok(built) => {
            tracing::info!(image = %req.name, cached = built.cached, ms = built.total_ms, "image built");
            reporter.end(Progress::Done {
                image: Box::new(built),
            });
        }
        Err(err) => {
            tracing::warn!(image = %req.name, error = %err, "image build failed");
            reporter.end(failure(&err, &reporter));
        }
    }
    prune_logs(&logs, &req.name);
}

/// What a build uses: the VMs (its build VM is one) and the image registry.
struct Builder {
    vms: Arc<Manager>,
    images: Arc<Images>,
}

/// What a build made so far, for cleaning up after a failure or a cancel.
#[derive(Default)]
struct Made {
    /// The build VM's name, once it exists.
    vm: Option<String>,
    /// The build VM's create while it runs.
    creating: Option<tokio::task::JoinHandle<Result<VmOpResult, VmError>>>,
    /// The new image's files until they are registered.
    staged: Option<Staged>,
}

async fn run(
    b: &Builder,
    req: &BuildImage,
    rep: &mut Reporter,
    made: &mut Made,
    started: Instant,
) -> Result<ImageBuilt, BuildError> {
    rep.step("check inputs");
    let lock = b.images.lock(&req.name);
    let _held = lock.lock().await;
    let plan = Plan::check(b, req).await?;
    if let Some(image) = from_cache(b, req, &plan, rep).await? {
        return built(b, image, true, rep, started);
    }
    let mut ssh = boot(b, req, &plan, rep, made).await?;
    let manifest = match provision(&mut ssh, &plan, rep).await? {
        Some(manifest) => Some(manifest),
        None => b.images.packages(&plan.base),
    };
    rep.step("clean up the guest");
    let code = exec(&mut ssh, &guest::clean_up(), rep).await?;
    check(code, "cleaning up the guest")?;
    ssh.close().await;
    let record = finish(b, req, plan, manifest, rep, made, started).await?;
    built(b, record, false, rep, started)
}

/// A build's checked inputs.
struct Plan {
    spec: Spec,
    base: ImageRecord,
    base_bytes: u64,
    /// The bundle's modules directory and kernel version, for `--modules`.
    modules: Option<(PathBuf, String)>,
    key: String,
}

impl Plan {
    async fn check(b: &Builder, req: &BuildImage) -> Result<Plan, BuildError> {
        let bundle = b.vms.bundle()?;
        let spec = Spec::from_request(req, DEFAULT_IMAGE)?;
        let base = b
            .images
            .get_or_default(&spec.from, Some(&bundle))
            .await?
            .ok_or_else(|| BuildError::UnknownBase(spec.from.clone()))?;
        let modules = match (spec.modules, bundle.modules, bundle.kernel_version) {
            (false, ..) => None,
            (true, Some(dir), Some(kver)) => Some((dir, kver)),
            (true, ..) => return Err(BuildError::NoModules),
        };
        let base_bytes = base.size_bytes.unwrap_or(0);
        if let Some(asked) = spec.size_bytes.filter(|s| *s < base_bytes) {
            return Err(BuildError::TooSmall {
                asked: crate::size::format_size(asked),
                base: crate::size::format_size(base_bytes),
            });
        }
        let kver = modules.as_ref().map(|(_, k)| k.as_str());
        let key = spec.build_key(&image_identity(&base), kver)?;
        // Refused before a boot: packages come from apt, and the base has none.
        if !spec.packages.is_empty()
            && !crate::system::debugfs::exists(&base.rootfs_path, "/usr/bin/apt-get")
                .await
                .unwrap_or(true)
        {
            return Err(BuildError::NoApt { image: base.name });
        }
        Ok(Plan {
            spec,
            base,
            base_bytes,
            modules,
            key,
        })
    }
}

/// The image this build would make, when one exists already: under its
/// own name (nothing to do), or under another (copied). Refuses to build
/// over an existing name without `--replace`.
async fn from_cache(
    b: &Builder,
    req: &BuildImage,
    plan: &Plan,
    rep: &mut Reporter,
) -> Result<Option<ImageRecord>, BuildError> {
    let images = &b.images;
    let existing = images.get(&req.name).ok();
    let cached = |image: &ImageRecord| image.build_key.as_deref() == Some(&plan.key);
    if let Some(image) = existing.as_ref().filter(|i| !req.no_cache && cached(i)) {
        rep.note(&format!(
            "cached: image `{}` was built from the same inputs; nothing to do (--no-cache builds it again)",
            image.name
        ));
        return Ok(Some(image.clone()));
    }
    if existing.is_some() && !req.replace {
        return Err(BuildError::Exists(req.name.clone()));
    }
    if req.no_cache {
        return Ok(None);
    }
    let Some(twin) = images.by_build_key(&plan.key)? else {
        return Ok(None);
    };
    rep.note(&format!(
        "cached: image `{}` was built from the same inputs; copying it",
        twin.name
    ));
    rep.step("copy cached image");
    let staged = images.stage(&req.name)?;
    let size = crate::image::copy_rootfs(&twin.rootfs_path, &staged.rootfs()).await?;
    if let Some(packages) = images.packages(&twin) {
        write_manifest(&staged, &packages)?;
    }
    let info = ImageInfo {
        name: req.name.clone(),
        size_bytes: size,
        created_at: unix_now(),
        ..images.info(&twin).unwrap_or_default()
    };
    Ok(Some(images.register(staged, &info, req.replace)?))
}

/// Creates and boots the build VM and connects to it.
async fn boot(
    b: &Builder,
    req: &BuildImage,
    plan: &Plan,
    rep: &mut Reporter,
    made: &mut Made,
) -> Result<Link, BuildError> {
    rep.step("boot the build VM");
    let vm_name = format!("{}.build", req.name);
    made.vm = Some(vm_name.clone());
    let request = CreateVm {
        name: vm_name.clone(),
        image: Some(plan.base.name.clone()),
        vcpus: None,
        memory_mib: None,
        disk_bytes: Some(plan.spec.size_bytes.unwrap_or(plan.base_bytes)),
        work_disk_bytes: None,
        vmm: req.vmm,
        start: true,
        nat: true,
        // The VM layer waits for SSH, booting a stalled guest once more.
        wait_ssh: true,
        publish: Vec::new(),
        cold: true,
    };
    let creator = Arc::clone(&b.vms);
    let creating = made.creating.insert(tokio::spawn(async move {
        creator.create_build_vm(request).await
    }));
    let created = creating.await;
    made.creating = None;
    let boot = match created {
        Ok(Ok(boot)) => boot,
        Ok(Err(e)) => {
            // A failed create removes its own VM.
            made.vm = None;
            return Err(e.into());
        }
        Err(join) => return Err(BuildError::CreateTask(join.to_string())),
    };
    let steps: Vec<String> = boot
        .timings
        .iter()
        .map(|t| format!("{} {} ms", t.step, t.ms))
        .collect();
    rep.output(
        OutputStream::Stdout,
        &format!("{} ({})", boot.vm.vmm_detail, steps.join(", ")),
    );

    if boot.ssh_ready_ms.is_none() && boot.vm.agent.is_some() {
        rep.output(
            OutputStream::Stdout,
            "no sshd in the image: provisioning through the guest agent",
        );
        return Ok(Link::Agent {
            vms: Arc::clone(&b.vms),
            vm: vm_name,
        });
    }
    rep.step("wait for SSH");
    let vm = b.vms.get(&vm_name)?;
    let ip: Ipv4Addr = vm
        .lease
        .as_ref()
        .map(|lease| lease.ip)
        .ok_or_else(|| VmError::NoLease(vm_name.clone()))?;
    let target = Target {
        addr: SocketAddr::from((ip, 22)),
        user: "root".into(),
        key: b.vms.ssh_key(),
        host_key: vm.host_key.clone().unwrap_or_default(),
    };
    let pid = vm.pid.unwrap_or(0);
    let exited = ExitWatch::new(pid).map_err(VmError::io(format!("/proc/{pid}")))?;
    let timeout = Duration::from_secs(b.vms.config.ssh_timeout_secs);
    tokio::select! {
        session = crate::ssh::wait_for(&target, timeout) => Ok(Link::Ssh(session?)),
        () = exited.exited() => Err(BuildError::VmmExited {
            console_tail: crate::vm::log_tail(&b.vms.files(&vm_name).console, 0, 25),
        }),
    }
}

/// Copies, apt sources, packages, modules and scripts, in that order;
/// then the guest's package manifest (`None` without dpkg).
async fn provision(
    ssh: &mut Link,
    plan: &Plan,
    rep: &mut Reporter,
) -> Result<Option<Vec<String>>, BuildError> {
    let spec = &plan.spec;
    if !spec.copy.is_empty() {
        rep.step("copy files");
        let entries: Vec<Entry> = spec
            .copy
            .iter()
            .map(|c| Entry {
                host: c.host.clone(),
                guest: c.guest.clone(),
            })
            .collect();
        for e in &entries {
            rep.output(
                OutputStream::Stdout,
                &format!("{} -> {}", e.host.display(), e.guest),
            );
        }
        ssh.upload(&entries).await?;
    }
    if !spec.apt_sources.is_empty() {
        rep.step("add apt sources");
        let lines: String = spec.apt_sources.iter().map(|l| format!("{l}\n")).collect();
        let add = guest::add_apt_sources();
        let code = exec_input(ssh, &add, Some(lines.as_bytes()), rep).await?;
        check(code, "adding the apt sources")?;
    }
    if !spec.packages.is_empty() {
        rep.step("install packages");
        if ssh.output("command -v apt-get").await?.0 != 0 {
            return Err(BuildError::NoApt {
                image: plan.base.name.clone(),
            });
        }
        let cmd = guest::apt_install(&spec.packages, spec.install_recommends);
        let code = exec(ssh, &cmd, rep).await?;
        check(code, "apt-get install")?;
    }
    if let Some((dir, kver)) = &plan.modules {
        rep.step("install kernel modules");
        let guest_dir = guest::modules_dir(kver);
        rep.output(
            OutputStream::Stdout,
            &format!("{} -> {guest_dir}", dir.display()),
        );
        ssh.upload(&[Entry {
            host: dir.clone(),
            guest: guest_dir,
        }])
        .await?;
        let code = exec(ssh, &guest::depmod(kver), rep).await?;
        check(code, "depmod")?;
    }
    for (i, script) in spec.run.iter().enumerate() {
        let base_name = script
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "script".into());
        rep.step(&format!("run {base_name}"));
        let guest_path = format!("{}/{}-{base_name}", guest::WORK_DIR, i + 1);
        ssh.upload(&[Entry {
            host: script.clone(),
            guest: guest_path.clone(),
        }])
        .await?;
        let code = exec(ssh, &guest::run_script(&guest_path), rep).await?;
        if code != 0 {
            return Err(BuildError::Script {
                script: script.clone(),
                code,
            });
        }
    }

    rep.step("record packages");
    let (status, listed) = ssh.output(guest::LIST_PACKAGES).await?;
    match status {
        0 => {
            let manifest = guest::parse_manifest(&String::from_utf8_lossy(&listed));
            let count = format!("{} packages installed", manifest.len());
            rep.output(OutputStream::Stdout, &count);
            Ok(Some(manifest))
        }
        guest::NOT_FOUND => {
            rep.output(
                OutputStream::Stderr,
                "no dpkg-query in the guest: the base's manifest is kept",
            );
            Ok(None)
        }
        code => Err(BuildError::Command {
            what: "dpkg-query".into(),
            code,
        }),
    }
}

/// Shuts the build VM down, checks its filesystem and registers it.
async fn finish(
    b: &Builder,
    req: &BuildImage,
    plan: Plan,
    manifest: Option<Vec<String>>,
    rep: &mut Reporter,
    made: &mut Made,
    started: Instant,
) -> Result<ImageRecord, BuildError> {
    let images = &b.images;
    let vm_name = made.vm.clone().expect("booted");
    rep.step("shut down");
    if !b.vms.stop_build_vm(&vm_name).await? {
        return Err(BuildError::UncleanShutdown);
    }

    rep.step("check the filesystem");
    let rootfs = b.vms.files(&vm_name).rootfs;
    let clean = crate::system::e2fs::fsck_clean(&rootfs)
        .await
        .map_err(BuildError::Check)?;
    if !clean {
        return Err(BuildError::NotClean);
    }

    rep.step("register");
    let staged = made.staged.insert(images.stage(&req.name)?);
    move_file(&rootfs, &staged.rootfs()).await?;
    if let Some(m) = &manifest {
        write_manifest(staged, m)?;
    }
    let size = std::fs::metadata(staged.rootfs())
        .map(|m| m.len())
        .map_err(|source| BuildError::Move {
            path: staged.rootfs(),
            source,
        })?;
    let base_info = images.info(&plan.base).unwrap_or_default();
    let mut requested: Vec<String> = base_info
        .packages
        .iter()
        .chain(&plan.spec.packages)
        .cloned()
        .collect();
    requested.sort();
    requested.dedup();
    let info = ImageInfo {
        name: req.name.clone(),
        base: Some(plan.base.name.clone()),
        source: None,
        packages: requested,
        spec: serde_json::to_value(&plan.spec).ok(),
        kernel_version: plan.modules.map(|(_, k)| k).or(base_info.kernel_version),
        size_bytes: size,
        build_key: Some(plan.key),
        created_at: unix_now(),
        build_ms: Some(started.elapsed().as_millis() as u64),
        // Built on an image from a registry: how it would run stays known.
        oci: base_info.oci,
    };
    let staged = made.staged.take().expect("staged above");
    Ok(images.register(staged, &info, req.replace)?)
}

/// The final result.
fn built(
    b: &Builder,
    record: ImageRecord,
    cached: bool,
    rep: &mut Reporter,
    started: Instant,
) -> Result<ImageBuilt, BuildError> {
    rep.finish();
    Ok(ImageBuilt {
        pulled_from: None,
        image: b.images.details(record)?,
        cached,
        total_ms: started.elapsed().as_millis() as u64,
        log: rep.log_path(),
        timings: rep.timings.clone(),
    })
}

/// Runs `cmd` in the guest (with `stdin`, if any), its output going to
/// the reporter line by line.
async fn exec_input(
    ssh: &mut Link,
    cmd: &str,
    stdin: Option<&[u8]>,
    rep: &mut Reporter,
) -> Result<u32, BuildError> {
    let (mut stdout, mut stderr) = (Lines::default(), Lines::default());
    let mut on_output = |stream, bytes: &[u8]| {
        let lines = match stream {
            OutputStream::Stdout => &mut stdout,
            OutputStream::Stderr => &mut stderr,
        };
        lines.feed(bytes, |line| rep.output(stream, line));
    };
    let code = ssh.exec(cmd, stdin, &mut on_output).await;
    stdout.flush(|line| rep.output(OutputStream::Stdout, line));
    stderr.flush(|line| rep.output(OutputStream::Stderr, line));
    code
}

async fn exec(ssh: &mut Link, cmd: &str, rep: &mut Reporter) -> Result<u32, BuildError> {
    exec_input(ssh, cmd, None, rep).await
}

fn check(code: u32, what: &str) -> Result<(), BuildError> {
    match code {
        0 => Ok(()),
        code => Err(BuildError::Command {
            what: what.to_string(),
            code,
        }),
    }
}

fn write_manifest(staged: &Staged, lines: &[String]) -> Result<(), BuildError> {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(staged.packages(), text).map_err(|source| BuildError::Move {
        path: staged.packages(),
        source,
    })
}

/// Renames `from` to `to`, copying when they are on different filesystems.
async fn move_file(from: &Path, to: &Path) -> Result<(), BuildError> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
            crate::image::copy_rootfs(from, to).await?;
            let _ = std::fs::remove_file(from);
            Ok(())
        }
        Err(source) => Err(BuildError::Move {
            path: from.to_path_buf(),
            source,
        }),
    }
}

/// The `failed` event for `err`.
fn failure(err: &BuildError, rep: &Reporter) -> Progress {
    let mut chain = vec![err.to_string()];
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        chain.push(e.to_string());
        source = e.source();
    }
    Progress::Failed {
        step: rep.current_step(),
        error: chain,
        hint: err.hint(),
        output_tail: rep.tail(),
        log: rep.log_path(),
    }
}

/// Keeps the newest [`KEEP_LOGS`] build logs of image `name`.
fn prune_logs(dir: &Path, name: &str) {
    let prefix = format!("{name}-");
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|rest| rest.strip_suffix(".log"))
                .is_some_and(|stamp| stamp.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    logs.sort();
    let excess = logs.len().saturating_sub(KEEP_LOGS);
    for old in &logs[..excess] {
        let _ = std::fs::remove_file(old);
    }
}
