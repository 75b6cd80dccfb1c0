//! `bangerd`: takes the per-user lock, opens the store, listens on the unix
//! socket and serves the `/v1` API until SIGTERM, SIGINT or a shutdown request.

mod error;
mod extract;
mod image_routes;
mod lock;
mod routes;
mod server;
mod socket;
mod vm_routes;

use std::fs::OpenOptions;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use tokio::net::UnixListener;
use tokio::sync::Notify;

pub use error::ApiError;
pub use lock::{DaemonLock, LockError};
pub use routes::doctor_report;
pub use socket::{Peer, SocketError};

use crate::config::Config;
use crate::paths::Paths;
use crate::store::{SharedStore, Store};
use crate::vm::Manager;

/// What every request handler shares.
pub struct Daemon {
    pub paths: Paths,
    /// The only uid this daemon serves (its own).
    pub uid: u32,
    pub started: Instant,
    /// Every VM and image operation.
    pub vms: Arc<Manager>,
    /// Woken by `POST /v1/daemon/shutdown`.
    pub shutdown: Notify,
}

impl Daemon {
    pub fn new(vms: Arc<Manager>, paths: Paths) -> Daemon {
        Daemon {
            paths,
            uid: crate::paths::current_uid(),
            started: Instant::now(),
            vms,
            shutdown: Notify::new(),
        }
    }

    pub fn store(&self) -> std::sync::MutexGuard<'_, crate::store::Store> {
        self.vms.store().lock()
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
}

/// The `bangerd` binary.
pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let paths = Paths::from_env()?;
    let config = Config::load(&paths.config_file())?;
    paths.prepare_state_dir()?;
    init_logging(&paths, &config, !args.background)?;
    paths.prepare_runtime_dir()?;
    let _lock = DaemonLock::acquire(&paths.lock_file())?;
    let store = Store::open(&paths.database())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = socket::bind(&paths.socket())?;
        let vms = Manager::new(paths.clone(), config, SharedStore::new(store))?;
        let found = vms.reconcile().await?;
        if !found.adopted.is_empty() || !found.released.is_empty() {
            tracing::info!(adopted = ?found.adopted, released = ?found.released, "reconciled VMs");
        }
        let daemon = Arc::new(Daemon::new(vms, paths.clone()));
        tracing::info!(pid = std::process::id(), socket = %paths.socket().display(), "bangerd listening");
        let stop = stop_signal(daemon.clone());
        serve(listener, daemon, stop).await.context("the server failed")?;
        anyhow::Ok(())
    })?;
    // Remove the socket while still holding the lock, so a new daemon never
    // sees ours half-gone.
    let _ = std::fs::remove_file(paths.socket());
    tracing::info!("bangerd stopped");
    Ok(())
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

/// Completes on SIGTERM, SIGINT or a shutdown request.
async fn stop_signal(daemon: Arc<Daemon>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
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
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
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
