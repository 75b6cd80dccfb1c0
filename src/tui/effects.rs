//! Carrying out the app's [`Effect`]s against the daemon: each request runs
//! in a task of its own and comes back as an [`Event`], so the screen never
//! waits on the daemon.

use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use super::app::{Effect, Event, Op};
use super::logs::LogSource;
use crate::rpc::Client;
use crate::system::follow::Follow;
use crate::system::fs::log_tail;

/// How often an open logs pane looks for new lines.
const LOG_POLL: Duration = Duration::from_millis(250);
/// How many lines of each log the pane opens with.
const LOG_LINES: usize = 2000;

/// Runs effects; their results arrive on the receiver [`Runner::new`] returns.
pub struct Runner {
    client: Client,
    tx: UnboundedSender<Event>,
    /// The task following the open logs pane's files.
    logs: Option<JoinHandle<()>>,
    /// The running build: aborting it hangs up, which cancels the build.
    build: Option<JoinHandle<()>>,
}

impl Runner {
    pub fn new(client: Client) -> (Runner, UnboundedReceiver<Event>) {
        let (tx, rx) = unbounded_channel();
        let runner = Runner {
            client,
            tx,
            logs: None,
            build: None,
        };
        (runner, rx)
    }

    /// Starts carrying out `effect`. [`Effect::Shell`] needs the terminal
    /// and is the caller's; it is ignored here.
    pub fn run(&mut self, effect: Effect) {
        let client = self.client.clone();
        let tx = self.tx.clone();
        // The receiver only goes away when the TUI ends: nothing to tell.
        let send = move |event| drop(tx.send(event));
        match effect {
            Effect::RefreshVms => spawn(async move { send(Event::Vms(client.list_vms().await)) }),
            Effect::RefreshStats => {
                spawn(async move { send(Event::Stats(client.all_stats().await)) })
            }
            Effect::RefreshImages => {
                spawn(async move { send(Event::Images(client.list_images().await)) })
            }
            Effect::LoadDefaults => {
                spawn(async move { send(Event::Defaults(client.create_defaults().await)) })
            }
            Effect::LoadImage(name) => {
                spawn(async move { send(Event::Image(client.image(&name).await)) })
            }
            Effect::Run(op) => spawn(async move {
                let label = op.label();
                let result = run_op(&client, op).await;
                send(Event::Done { op: label, result });
            }),
            Effect::Ssh(name, kind) => {
                spawn(
                    async move { send(Event::SshReady(client.vm(&name).await.map(Box::new), kind)) },
                )
            }
            Effect::FollowLogs(name) => {
                self.stop_logs();
                self.logs = Some(tokio::spawn(follow_logs(client, name, send)));
            }
            Effect::StopLogs => self.stop_logs(),
            Effect::Build(req) => {
                if let Some(old) = self.build.take() {
                    old.abort();
                }
                let progress = send.clone();
                self.build = Some(tokio::spawn(async move {
                    let result = client
                        .build_image(&req, |p| progress(Event::Build(p)))
                        .await;
                    send(Event::BuildEnded(result));
                }));
            }
            Effect::CancelBuild => {
                if let Some(build) = self.build.take() {
                    build.abort();
                }
            }
            Effect::Shell(..) => {}
        }
    }

    fn stop_logs(&mut self) {
        if let Some(task) = self.logs.take() {
            task.abort();
        }
    }
}

fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(task);
}

/// Runs one operation; a line for the status bar when it succeeds.
async fn run_op(client: &Client, op: Op) -> Result<String, crate::rpc::ClientError> {
    Ok(match op {
        Op::Create(req) => client.create_vm(&req).await?.summary("created"),
        Op::Start(name) => client
            .start_vm(&name, &Default::default())
            .await?
            .summary("started"),
        Op::Restart(name) => client.restart_vm(&name).await?.summary("restarted"),
        Op::Stop { name, force } => {
            client.stop_vm(&name, force).await?;
            format!("{name} stopped")
        }
        Op::Delete(name) => {
            client.delete_vm(&name, false).await?;
            format!("{name} deleted")
        }
        Op::Clone { src, name } => {
            client.clone_vm(&src, &name).await?;
            format!("{src} cloned as {name}")
        }
        Op::Action { name, action } => {
            let vm = client.vm_action(&name, action).await?;
            format!("{name} {}", vm.state)
        }
    })
}

/// Sends the tail of the VM's console and VMM log, then what is appended
/// to either, until aborted.
async fn follow_logs(client: Client, vm: String, send: impl Fn(Event)) {
    let details = match client.vm(&vm).await {
        Ok(details) => details,
        Err(error) => return send(Event::LogsFailed { vm, error }),
    };
    let mut follows = Vec::new();
    for (source, path) in [
        (LogSource::Console, &details.console_log),
        (LogSource::Vmm, &details.vmm_log),
    ] {
        // Where to follow from, taken before the tail is read: nothing is lost.
        let follow = Follow::from_end(path);
        let mut text = if path.exists() {
            log_tail(path, 0, LOG_LINES)
        } else {
            "(nothing yet: the VM has not run)".to_string()
        };
        text.push('\n');
        send(Event::LogText {
            vm: vm.clone(),
            source,
            text,
        });
        follows.push((source, follow));
    }
    loop {
        tokio::time::sleep(LOG_POLL).await;
        for (source, follow) in &mut follows {
            let text = follow.read();
            if !text.is_empty() {
                send(Event::LogText {
                    vm: vm.clone(),
                    source: *source,
                    text,
                });
            }
        }
    }
}
