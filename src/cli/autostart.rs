//! Starting `bangerd` in the background when nothing answers, so users never
//! have to think about the daemon.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::paths::Paths;
use crate::rpc::api::Health;
use crate::rpc::{Client, ClientError};

/// How long a freshly started daemon has to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of a running daemon, starting one first if none answers.
pub async fn client(paths: &Paths) -> anyhow::Result<Client> {
    let client = Client::new(paths.socket());
    let mut result = client.health().await;
    // A daemon dying this very moment (killed, or stopping) resets the
    // connection instead of refusing it: ask again until it is plainly
    // there or plainly gone.
    let deadline = Instant::now() + Duration::from_secs(2);
    while matches!(result, Err(ClientError::Http(_))) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        result = client.health().await;
    }
    match result {
        Ok(_) => Ok(client),
        Err(e) if e.is_not_running() => {
            start(paths).await?;
            Ok(client)
        }
        Err(e) => Err(e.into()),
    }
}

/// Starts `bangerd --background` in its own session and waits until it
/// answers. Its stderr goes to the daemon log, so a daemon that dies at
/// start-up leaves its reason there.
pub async fn start(paths: &Paths) -> anyhow::Result<Health> {
    crate::paths::private_dir(&paths.state_dir)?;
    let log_path = paths.daemon_log();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open the daemon log {}", log_path.display()))?;
    // Only what this daemon writes is worth showing if it fails.
    let log_start = crate::system::fs::file_len(&log_path);
    let program = daemon_binary();
    let mut command = Command::new(&program);
    command
        .arg("--background")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory of ours; it
    // gives the daemon its own session, so it outlives this terminal.
    unsafe {
        command.pre_exec(|| rustix::process::setsid().map(drop).map_err(Into::into));
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start the daemon {}", program.display()))?;

    let client = Client::new(paths.socket());
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match client.health().await {
            Ok(health) => return Ok(health),
            Err(e) if !e.is_not_running() => return Err(e.into()),
            Err(_) => {}
        }
        // A daemon that exited may have lost the lock to another one that
        // started at the same moment (two commands at once): wait for that
        // one to answer instead of giving up.
        if let Some(status) = child.try_wait()? {
            if let Ok(health) = client.health().await {
                return Ok(health);
            }
            if lock_holder_alive(paths) && Instant::now() <= deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            bail!(
                "bangerd exited at start-up ({status}); its log {} says:\n{}",
                log_path.display(),
                crate::system::text::indent(&crate::system::fs::log_tail(&log_path, log_start, 10))
            );
        }
        if Instant::now() > deadline {
            bail!(
                "bangerd did not answer on {} within {} s; see its log {}",
                paths.socket().display(),
                START_TIMEOUT.as_secs(),
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// True when the daemon lock names a running process (a daemon starting up).
fn lock_holder_alive(paths: &Paths) -> bool {
    std::fs::read_to_string(paths.lock_file())
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// `bangerd` next to this `banger` (an installed pair or a build tree),
/// else the one on PATH.
fn daemon_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("bangerd")))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("bangerd"))
}
