//! `bangerd`: takes the per-user lock, opens the store, listens on the unix
//! socket and serves the `/v1` API until SIGTERM, SIGINT or a shutdown request.

mod error;
pub mod exec_route;
mod extract;
mod image_routes;
mod lock;
mod routes;
mod server;
mod socket;
mod vm_routes;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tokio::net::UnixListener;
use tokio::sync::Notify;

pub use error::ApiError;
pub use lock::{DaemonLock, LockError};
pub use socket::{Peer, SocketError};

use crate::config::Config;
use crate::image::Images;
use crate::network::Network;
use crate::paths::Paths;
use crate::store::{SharedStore, Store};
use crate::vm::Manager;

/// What every request handler shares.
pub struct Daemon {
    pub paths: Paths,
    /// The only uid this daemon serves (its own).
    pub uid: u32,
    pub started: Instant,
    /// Every VM operation.
    pub vms: Arc<Manager>,
    /// The image registry.
    pub images: Arc<Images>,
    /// The host network service.
    pub network: Arc<Network>,
    pub store: SharedStore,
    /// Woken by `POST /v1/daemon/shutdown`.
    pub shutdown: Notify,
}

impl Daemon {
    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock()
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "bangerd",
    version,
    about = "The banger daemon: owns every VM of one user"
)]
struct Args {
    /// Log only to the log file (used when `banger` starts the daemon for
    /// you; it points stderr at the same file, so fatal errors land there too).
    #[arg(long)]
    background: bool,
    #[command(subcommand)]
    helper: Option<Helper>,
}

/// Jobs `bangerd` runs for the daemon in processes of their own.
#[derive(Debug, clap::Subcommand)]
enum Helper {
    /// Copy a VMM's console and log (inherited descriptors) into capped
    /// files until the VMM closes them; started by the daemon with each VMM.
    #[command(name = "log-relay", hide = true)]
    LogRelay {
        /// Rotate each file at this many bytes.
        #[arg(long)]
        cap: u64,
        /// `FIFO=PATH`: also copy what a jailed Firecracker logs into its
        /// FIFO into PATH, for as long as the streams last.
        #[arg(long)]
        fifo: Option<String>,
        /// `FD=PATH`: copy descriptor FD into PATH.
        #[arg(required = true)]
        streams: Vec<String>,
    },
}

/// The `bangerd` binary.
pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Helper::LogRelay { cap, fifo, streams }) = args.helper {
        let fifo = fifo
            .map(|f| {
                let (fifo, path) = f.split_once('=').context("--fifo is FIFO=PATH")?;
                anyhow::Ok((PathBuf::from(fifo), PathBuf::from(path)))
            })
            .transpose()?;
        let streams = streams
            .iter()
            .map(|s| {
                let (fd, path) = s.split_once('=').context("a stream is FD=PATH")?;
                anyhow::Ok((
                    fd.parse().context("a stream is FD=PATH")?,
                    PathBuf::from(path),
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        return Ok(crate::vmm::logcap::relay(streams, fifo, cap)?);
    }
    crate::vmm::vmm_io::stop_passing_on_inherited_fds();
    let open_files = crate::system::proc::raise_open_files_limit();
    let paths = Paths::from_env()?;
    let as_root = rustix::process::geteuid().is_root();
    if as_root {
        trusted_by_root(&paths.config_file())?;
    }
    let config = Config::load(&paths.config_file())?;
    if as_root {
        refuse_what_others_can_change(&paths, &config)?;
    }
    paths.prepare_state_dir()?;
    init_logging(&paths, &config, !args.background)?;
    let _lock = DaemonLock::acquire(&paths.lock_file())?;
    paths.prepare_runtime_dir()?;
    let store = Store::open(&paths.database())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Before the socket answers anyone: a SIGTERM that follows a first
        // answer must find the handler, not the default action.
        let signals = StopSignals::install();
        let listener = socket::bind(&paths.socket())?;
        let store = SharedStore::new(store);
        let images = Arc::new(Images::new(&paths.data_dir, store.clone()));
        let network = Arc::new(Network::new(&config, &paths, store.clone())?);
        let vms = Manager::new(
            paths.clone(),
            config,
            store.clone(),
            images.clone(),
            network.clone(),
        );
        let found = vms.reconcile().await?;
        if !found.adopted.is_empty() || !found.released.is_empty() {
            tracing::info!(adopted = ?found.adopted, released = ?found.released, "reconciled VMs");
        }
        let daemon = Arc::new(Daemon {
            paths: paths.clone(),
            uid: crate::paths::current_uid(),
            started: Instant::now(),
            vms,
            images,
            network,
            store,
            shutdown: Notify::new(),
        });
        tracing::info!(pid = std::process::id(), socket = %paths.socket().display(), open_files, "bangerd listening");
        let stop = stop_signal(signals, daemon.clone());
        serve_rebinding(listener, daemon.clone(), stop)
            .await
            .context("the server failed")?;
        daemon.vms.finish_operations(SHUTDOWN_GRACE).await;
        anyhow::Ok(())
    })?;
    // Remove the socket while still holding the lock, so a new daemon never
    // sees ours half-gone.
    let _ = std::fs::remove_file(paths.socket());
    tracing::info!("bangerd stopped");
    Ok(())
}

/// A root daemon acts on its config (which names programs root runs) and
/// its state and data (keys, disks, the runtime bundle): all of them must
/// be root's alone, or another user (whose `$XDG_CONFIG_HOME` `sudo -E`
/// passed on, say) could choose what root runs.
fn refuse_what_others_can_change(paths: &Paths, config: &Config) -> anyhow::Result<()> {
    for dir in [&paths.state_dir, &paths.data_dir] {
        trusted_by_root(dir)?;
    }
    let programs = [
        ("helper", &config.helper),
        ("jailer", &config.jailer),
        ("firecracker", &config.firecracker),
        ("runtime_dir", &config.runtime_dir),
    ];
    for (key, path) in programs {
        if let Some(path) = path.as_ref().filter(|p| !p.as_os_str().is_empty()) {
            crate::system::trust::root_owned(path).map_err(|why| {
                anyhow::anyhow!(
                    "bangerd runs as root and will not use `{key}` = {} from {}: {why}; \
                     name a root-owned path that only root can change",
                    path.display(),
                    paths.config_file().display()
                )
            })?;
        }
    }
    Ok(())
}

/// Fails unless `path` (or, when it does not exist yet, the nearest
/// directory above it that does) can be changed by root alone.
fn trusted_by_root(path: &std::path::Path) -> anyhow::Result<()> {
    let existing = path.ancestors().find(|p| p.exists()).unwrap_or(path);
    crate::system::trust::root_owned(existing).map_err(|why| {
        anyhow::anyhow!(
            "bangerd runs as root and will not trust {}: {why}; a root daemon keeps its \
             config and state where only root can change them (start it without `sudo -E`, \
             or with HOME=/root and no XDG_* variables of another user)",
            path.display()
        )
    })
}

/// Serves the API on `listener` until `stop` completes, then lets the
/// requests in flight finish.
pub async fn serve(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, routes::router(daemon), stop).await
}

/// How long a stopping daemon waits for requests and operations in flight
/// before it exits anyway; what is cut off then is left in a state the next
/// daemon's reconcile finishes or undoes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// How often the daemon checks that its socket file is still its own.
const SOCKET_CHECK: Duration = Duration::from_secs(1);

/// [`serve`], binding the socket again whenever its file goes away: logind
/// removes the runtime directory at logout while this daemon runs on, and
/// the next login must find this daemon, not start a second one.
async fn serve_rebinding(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let path = daemon.paths.socket();
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let when_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(serve(listener, daemon.clone(), when_stopped()));
    let mut bound = socket::identity(&path);
    let mut check = tokio::time::interval(SOCKET_CHECK);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = check.tick() => {}
        }
        let now = socket::identity(&path);
        if now.is_some() && now == bound {
            continue;
        }
        let rebound = daemon
            .paths
            .prepare_runtime_dir()
            .map_err(|e| e.to_string())
            .and_then(|()| socket::bind(&path).map_err(|e| e.to_string()));
        match rebound {
            Ok(listener) => {
                tracing::warn!(socket = %path.display(), "the socket file was gone (logout?); listening again");
                bound = socket::identity(&path);
                servers.spawn(serve(listener, daemon.clone(), when_stopped()));
            }
            Err(error) => {
                tracing::error!(%error, "the socket file is gone and cannot be made again")
            }
        }
    }
    let _ = stopping.send(true);
    // Requests in flight get the grace period; long streams are cut then.
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(done) = servers.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::error!(error = %e, "a listener failed");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "requests still open after {} s; closing them",
            SHUTDOWN_GRACE.as_secs()
        );
        servers.shutdown().await;
    }
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct StopSignals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl StopSignals {
    fn install() -> StopSignals {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => StopSignals(Some((term, int))),
            _ => StopSignals(None),
        }
    }
}

/// Completes on SIGTERM, SIGINT or a shutdown request.
async fn stop_signal(signals: StopSignals, daemon: Arc<Daemon>) {
    let Some((mut term, mut int)) = signals.0 else {
        tracing::error!("cannot install signal handlers; stop bangerd with `banger daemon stop`");
        daemon.shutdown.notified().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        _ = daemon.shutdown.notified() => {}
    }
}

/// Logs to `bangerd.log` in the state directory, and to stderr in the foreground.
fn init_logging(paths: &Paths, config: &Config, to_stderr: bool) -> anyhow::Result<()> {
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let log_path = paths.daemon_log();
    let file = crate::vmm::logcap::CappedFile::open(&log_path, config.log_cap())
        .with_context(|| format!("cannot open the daemon log {}", log_path.display()))?;
    let level: tracing::Level = config.log_level.into();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false);
    let file = Mutex::new(file);
    if to_stderr {
        subscriber.with_writer(file.and(std::io::stderr)).init();
    } else {
        subscriber.with_writer(file).init();
    }
    Ok(())
}
