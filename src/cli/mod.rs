//! `banger`: the command line. A thin client of `bangerd`, which it starts
//! when nothing answers. One file per command group.
#![allow(clippy::disallowed_methods)]

mod autostart;
mod build;
mod cp;
mod daemon;
mod doctor;
mod exec;
mod image;
mod network;
mod output;
mod progress;
mod tui;
mod version;
mod vm;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

use crate::paths::Paths;
use crate::rpc::ClientError;

/// banger: fresh, isolated Linux microVMs in well under a second.
#[derive(Debug, Parser)]
#[command(name = "banger", version, propagate_version = true)]
#[command(after_help = "The daemon, bangerd, starts by itself when a command needs it.")]
struct Cli {
    /// Print machine-readable JSON instead of tables (read commands).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage virtual machines.
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Manage root filesystem images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// The VM bridge, NAT table, `.vm` DNS server and address leases.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Check every host requirement and say how to fix what is missing.
    Doctor,
    /// Start, stop or inspect the background daemon.
    #[command(subcommand)]
    Daemon(daemon::DaemonCommand),
    /// Watch and drive every VM and image in a terminal UI (`?` lists the keys).
    Tui,
    /// Print the versions of banger and of the running daemon.
    Version,
    /// Print a shell completion script (e.g. `banger completions bash > /etc/bash_completion.d/banger`).
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// Context every command gets.
pub struct Ctx {
    paths: Paths,
    json: bool,
}

impl Ctx {
    /// `value` as JSON under `--json`, else the line `text` makes of it.
    fn print<T: serde::Serialize>(
        &self,
        value: &T,
        text: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            return output::json(value);
        }
        println!("{}", text(value));
        Ok(())
    }
}

/// The `banger` binary: exit 0 on success, 1 on failure, 2 on a usage error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "banger", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let result = Paths::from_env()
        .map_err(anyhow::Error::from)
        .and_then(|paths| {
            let ctx = Ctx {
                paths,
                json: cli.json,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run(&ctx, cli.command))
        });
    match result {
        Ok(code) => code,
        Err(err) => {
            print_error(&err);
            ExitCode::FAILURE
        }
    }
}

async fn run(ctx: &Ctx, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Vm(cmd) => vm::run(ctx, cmd).await,
        Command::Image(cmd) => image::run(ctx, cmd).await,
        Command::Network(cmd) => network::run(ctx, cmd).await,
        Command::Doctor => doctor::run(ctx).await,
        Command::Daemon(cmd) => daemon::run(ctx, cmd).await,
        Command::Tui => tui::run(ctx).await,
        Command::Version => version::run(ctx).await,
        Command::Completions { .. } => unreachable!("handled before the runtime starts"),
    }
}

/// Prints the error, its causes, and what to do next. A daemon error
/// carries its own chain and hint.
fn print_error(err: &anyhow::Error) {
    let mut lines: Vec<String> = Vec::new();
    let mut hint = None;
    for cause in err.chain() {
        match cause.downcast_ref::<ClientError>() {
            Some(ClientError::Api { chain, hint: h, .. }) => {
                lines.extend(chain.iter().cloned());
                hint = h.clone();
                break;
            }
            Some(ClientError::NotRunning { .. }) => {
                lines.push(cause.to_string());
                hint = Some("start it with `banger daemon start`".into());
                break;
            }
            _ => lines.push(cause.to_string()),
        }
    }
    print_chain(&lines, hint.as_deref());
}

/// Prints an error chain, outermost first, and what to do about it. A
/// message may quote a log tail or a name as sent, so none of it is trusted
/// to be free of terminal control sequences.
fn print_chain(chain: &[String], hint: Option<&str>) {
    let safe = |text: &str| crate::system::text::printable(text.as_bytes());
    let mut lines = chain.iter();
    if let Some(first) = lines.next() {
        eprintln!("error: {}", safe(first));
    }
    for line in lines {
        eprintln!("  caused by: {}", safe(line));
    }
    if let Some(hint) = hint {
        eprintln!("hint: {}", safe(hint));
    }
}
