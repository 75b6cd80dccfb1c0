//! Shared test harness: a private XDG tree per test, the real `banger` and
//! `bangerd` binaries, and cleanup of any daemon a test started.
#![allow(clippy::disallowed_methods, dead_code)]

pub mod apt;
pub mod netns;
pub mod oci;
pub mod upstream;
pub mod vms;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// One isolated banger user: its own config, state, data and runtime dirs,
/// and its own bridge, subnet and nftables table, so sandboxes never touch
/// each other's (or a real banger's) host networking.
pub struct Sandbox {
    pub root: tempfile::TempDir,
    pub bridge: String,
    pub nat_table: String,
    /// `10.213.N.1/24`.
    pub subnet: String,
}

static NEXT_NET: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox::with_config("")
    }

    /// A sandbox whose config.toml starts with `top` (top-level keys).
    pub fn with_config(top: &str) -> Sandbox {
        let n = (std::process::id() % 15) * 16
            + NEXT_NET.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 16
            + 1;
        let bridge = format!("bgt{n}");
        let nat_table = format!("bangertest{n}");
        let subnet = format!("10.213.{n}.1/24");
        let root = tempfile::Builder::new()
            .prefix("banger-test-")
            .tempdir()
            .unwrap();
        for dir in ["home", "config", "state", "data", "run"] {
            std::fs::create_dir(root.path().join(dir)).unwrap();
        }
        std::fs::set_permissions(
            root.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let config_dir = root.path().join("config/banger");
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::write(
            config_dir.join("config.toml"),
            format!(
                "{top}\n[network]\nbridge = \"{bridge}\"\nsubnet = \"{subnet}\"\nnat_table = \"{nat_table}\"\n"
            ),
        )
        .unwrap();
        Sandbox {
            root,
            bridge,
            nat_table,
            subnet,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.path("run/banger")
    }

    pub fn socket(&self) -> PathBuf {
        self.runtime_dir().join("bangerd.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state/banger")
    }

    pub fn config_file(&self) -> PathBuf {
        self.path("config/banger/config.toml")
    }

    /// A command for one of the project's binaries with this sandbox's environment.
    pub fn command(&self, binary: &str) -> Command {
        let program = match binary {
            "banger" => env!("CARGO_BIN_EXE_banger"),
            "bangerd" => env!("CARGO_BIN_EXE_bangerd"),
            other => panic!("unknown binary {other}"),
        };
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.envs());
        cmd
    }

    /// This user's environment: its home and XDG directories.
    pub fn envs(&self) -> Vec<(&'static str, PathBuf)> {
        xdg_envs(self.root.path())
    }

    /// Runs `banger ARGS...` to completion.
    pub fn banger(&self, args: &[&str]) -> Output {
        self.command("banger").args(args).output().unwrap()
    }

    /// The pid recorded in the daemon's lock file, if any.
    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.state_dir().join("bangerd.lock"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Sandbox {
    /// Never leaves a daemon behind, whatever the test did.
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid()
            && process_alive(pid)
        {
            signal(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The environment of a user whose home and XDG directories are `home`,
/// `config`, `state`, `data` and `run` under `root`.
pub fn xdg_envs(root: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("HOME", root.join("home")),
        ("XDG_CONFIG_HOME", root.join("config")),
        ("XDG_STATE_HOME", root.join("state")),
        ("XDG_DATA_HOME", root.join("data")),
        ("XDG_RUNTIME_DIR", root.join("run")),
    ]
}

/// Says why a test cannot run here and returns, so the caller can
/// `return`: on stderr, and appended to `$BANGER_SKIP_LOG` when set, so
/// `make test` can print every tier that did not run (a passing test's
/// output is hidden by the harness).
pub fn skip(why: &str) {
    eprintln!("skipped: {why}");
    if let Some(log) = std::env::var_os("BANGER_SKIP_LOG") {
        use std::io::Write;
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .map(|s| {
                s.rsplit_once('-')
                    .map_or(s.clone(), |(name, _)| name.to_string())
            })
            .unwrap_or_default();
        let test = std::thread::current().name().unwrap_or("?").to_string();
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{binary}::{test}: {why}");
        }
    }
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: i32, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// True while `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The A records `server` (port 53) gives for `name`, asked over UDP.
pub fn resolve_a(server: std::net::Ipv4Addr, name: &str) -> Vec<std::net::Ipv4Addr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    socket
        .send_to(
            &banger::dns::build_query(42, name, simple_dns::TYPE::A),
            (server, 53),
        )
        .unwrap();
    let mut buf = [0u8; 1500];
    let len = socket.recv(&mut buf).unwrap();
    banger::dns::parse_reply(&buf[..len]).unwrap().2
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every process on the machine: its pid and its `/proc` directory.
pub fn processes() -> Vec<(i32, PathBuf)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect()
}

/// Runs `cmd` to completion and asserts it succeeded.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        stderr(&out)
    );
    out
}

/// A new file of `bytes` at `path`, all hole.
pub fn sparse_file(path: &Path, bytes: u64) {
    std::fs::File::create(path).unwrap().set_len(bytes).unwrap();
}

/// True when `tool` is installed; otherwise says the test is skipped for
/// want of it (found in the distribution's `package`).
pub fn installed(tool: &str, package: &str) -> bool {
    let found = banger::system::tools::find_program(tool, None).is_some();
    if !found {
        skip(&format!(
            "{tool} is not installed (apt-get install {package})"
        ));
    }
    found
}

/// Makes a sparse ext4 image of `bytes` at `image` holding `tree`.
pub fn mkfs_ext4(tree: &Path, image: &Path, bytes: u64) {
    sparse_file(image, bytes);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(tree)
        .arg(image));
}

/// A 64 MiB ext4 image with nothing to boot, only the directories banger
/// writes a VM's identity into: `dir/small.ext4`, made from `dir/small-tree`.
pub fn small_image(dir: &Path) -> PathBuf {
    let tree = dir.join("small-tree");
    for sub in ["root", "etc/ssh"] {
        std::fs::create_dir_all(tree.join(sub)).unwrap();
    }
    let image = dir.join("small.ext4");
    mkfs_ext4(&tree, &image, 64 << 20);
    image
}

/// `vm create` arguments for a VM on [`small_image`] imported as `small`.
pub const ON_SMALL_IMAGE: [&str; 6] = ["--image", "small", "--disk", "64M", "--work-disk", "16M"];

/// Builds the package tree `root` into `deb`.
pub fn dpkg_deb(root: &Path, deb: &Path) {
    run(Command::new("dpkg-deb")
        .args(["-Zgzip", "--root-owner-group", "--build"])
        .arg(root)
        .arg(deb));
}

/// tmux arguments for a detached session `session` of `cols`×`rows`
/// running `command` with PATH, `TERM=screen`, `envs` and nothing else in
/// its environment.
pub fn tmux_session(
    session: &str,
    (cols, rows): (u16, u16),
    envs: &[(&str, PathBuf)],
    command: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = ["new-session", "-d", "-s", session, "-x"]
        .map(String::from)
        .to_vec();
    args.extend([cols.to_string(), "-y".into(), rows.to_string()]);
    args.extend(["env".into(), "-i".into()]);
    args.push(format!(
        "PATH={}",
        std::env::var("PATH").unwrap_or_default()
    ));
    args.push("TERM=screen".into());
    for (key, value) in envs {
        args.push(format!("{key}={}", value.display()));
    }
    args.extend(command.iter().map(|s| s.to_string()));
    args
}

/// Live VMM processes (QEMU or Firecracker, by executable), each with the
/// directory it works in (banger starts a VMM in its VM's directory).
pub fn vmm_processes() -> Vec<(i32, PathBuf)> {
    processes()
        .into_iter()
        .filter_map(|(pid, dir)| {
            let cwd = std::fs::read_link(dir.join("cwd")).ok()?;
            let exe = std::fs::read_link(dir.join("exe")).ok()?;
            let name = exe.file_name()?.to_string_lossy();
            let vmm = name.starts_with("qemu-system") || name.starts_with("firecracker");
            (vmm && process_alive(pid)).then_some((pid, cwd))
        })
        .collect()
}

/// Asserts `out` is a failure whose stderr says `says`; returns stderr.
pub fn fails(out: Output, says: &str) -> String {
    let err = stderr(&out);
    assert!(!out.status.success(), "succeeded: {}", stdout(&out));
    assert!(err.contains(says), "no {says:?} in: {err}");
    err
}
