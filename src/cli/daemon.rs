//! `banger daemon start|stop|status`

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;

use super::{Ctx, autostart, output};
use crate::rpc::Client;

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start bangerd in the background (commands also start it on demand).
    Start,
    /// Stop bangerd; running VMs keep running.
    Stop,
    /// Say whether bangerd runs, and where. Exits 1 when it does not.
    Status,
}

/// How long `daemon stop` waits for the daemon to go.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(ctx: &Ctx, command: DaemonCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(ctx.paths.socket());
    match command {
        DaemonCommand::Start => {
            match client.health().await {
                Ok(h) => println!("bangerd is already running (pid {})", h.pid),
                Err(e) if e.is_not_running() => {
                    let h = autostart::start(&ctx.paths).await?;
                    println!("bangerd started (pid {}), log {}", h.pid, h.log.display());
                }
                Err(e) => return Err(e.into()),
            }
            Ok(ExitCode::SUCCESS)
        }
        DaemonCommand::Stop => {
            match client.health().await {
                Err(e) if e.is_not_running() => {
                    println!("bangerd is not running");
                    return Ok(ExitCode::SUCCESS);
                }
                Err(e) => return Err(e.into()),
                Ok(health) => {
                    // Watched before it is asked to go: "stopped" means the
                    // process (and its lock) is gone, not just its socket.
                    let exit = crate::system::pid::ExitWatch::new(health.pid).ok();
                    client.shutdown().await?;
                    if let Some(exit) = exit
                        && !exit.exited_within(STOP_TIMEOUT).await
                    {
                        bail!("bangerd did not stop within {} s", STOP_TIMEOUT.as_secs());
                    }
                }
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            while ctx.paths.socket().exists() {
                if Instant::now() > deadline {
                    bail!("bangerd did not stop within {} s", STOP_TIMEOUT.as_secs());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            println!("bangerd stopped");
            Ok(ExitCode::SUCCESS)
        }
        DaemonCommand::Status => match client.health().await {
            Ok(h) => {
                if ctx.json {
                    output::json(&json!({ "running": true, "daemon": h }))?;
                } else {
                    println!(
                        "bangerd {} running (pid {}, up {})",
                        h.version,
                        h.pid,
                        crate::size::format_duration(h.uptime_secs)
                    );
                    println!("  socket  {}", h.socket.display());
                    println!("  state   {}", h.state_dir.display());
                    println!("  log     {}", h.log.display());
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) if e.is_not_running() => {
                if ctx.json {
                    output::json(&json!({ "running": false }))?;
                } else {
                    println!("bangerd is not running");
                }
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e.into()),
        },
    }
}
