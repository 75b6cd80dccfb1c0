//! `banger vm exec NAME [-i] [-t] [--env K=V]... [--workdir DIR] -- CMD...`:
//! a command run by the VM's guest agent, like `docker exec`: the exit code
//! is kept, stdin streams with `-i`, `-t` gives it a terminal. No network,
//! no sshd needed in the guest.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::rpc::Client;
use crate::rpc::exec::{self, ExecEvent};
use banger_agent::proto::{self, WinSize};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub interactive: bool,
    pub tty: bool,
}

/// Runs `req` in VM `name` and returns its exit code.
pub async fn run(client: &Client, name: &str, req: ExecRequest) -> anyhow::Result<ExitCode> {
    // (Returns only with an error: success exits with the command's code.)
    if req.argv.is_empty() {
        bail!("what to run? `banger vm exec {name} -- COMMAND [ARGS...]`");
    }
    for pair in &req.env {
        if !pair.contains('=') || pair.starts_with('=') {
            bail!("--env {pair}: use KEY=VALUE");
        }
    }
    if req.tty && !std::io::stdin().is_terminal() {
        bail!("-t needs a terminal on stdin; run it without -t");
    }
    let code = if req.tty {
        let _raw = RawMode::enable()?;
        session(client, name, &req).await?
    } else {
        session(client, name, &req).await?
    };
    // A read of stdin may still be blocked in the runtime's thread pool
    // (the command ended before its input did), and a runtime waits for
    // those when it shuts down: leave at once with the command's code.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code.clamp(0, 255));
}

/// The exec as the agent takes it: the environment is whole (the agent
/// adds PATH), so it gets HOME and, on a terminal, TERM.
fn exec_message(req: &ExecRequest) -> proto::Exec {
    let mut env = vec![b"HOME=/root".to_vec()];
    if req.tty {
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        env.push(format!("TERM={term}").into_bytes());
    }
    env.extend(req.env.iter().map(|e| e.as_bytes().to_vec()));
    proto::Exec {
        argv: req.argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env,
        cwd: req.workdir.as_ref().map(|d| d.as_bytes().to_vec()),
        stdin: req.interactive,
        pty: req.tty.then(window_size),
    }
}

fn window_size() -> WinSize {
    let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
    WinSize { rows, cols }
}

/// Drives one session to its end: stdin out within the agent's window,
/// output written as it comes (and credited back), resizes passed on.
async fn session(client: &Client, name: &str, req: &ExecRequest) -> anyhow::Result<i32> {
    let (mut reader, mut writer) = exec::open(client, name, exec_message(req)).await?;
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut resized = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("cannot watch the terminal size")?;
    let mut chunk = vec![0u8; proto::DATA_CHUNK];
    let mut stdin_open = req.interactive;
    loop {
        let room = writer.stdin_room().min(chunk.len());
        tokio::select! {
            event = reader.next() => match event? {
                ExecEvent::Stdout(data) => {
                    stdout.write_all(&data).await?;
                    stdout.flush().await?;
                    writer.credit(data.len()).await;
                }
                ExecEvent::Stderr(data) => {
                    stderr.write_all(&data).await?;
                    stderr.flush().await?;
                    writer.credit(data.len()).await;
                }
                ExecEvent::StdinAccepted => {}
                ExecEvent::Exited(code) => return Ok(code),
            },
            // A write that fails means the session is ending: its end
            // (`Exited`) is still to be read.
            read = stdin.read(&mut chunk[..room]), if stdin_open && room > 0 => match read {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    let _ = writer.close_stdin().await;
                }
                Ok(n) => {
                    if writer.stdin(&chunk[..n]).await.is_err() {
                        stdin_open = false;
                    }
                }
            },
            _ = resized.recv(), if req.tty => {
                let _ = writer.resize(window_size()).await;
            }
        }
    }
}

/// The local terminal in raw mode while a `-t` session runs.
struct RawMode;

impl RawMode {
    fn enable() -> anyhow::Result<RawMode> {
        crossterm::terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}
