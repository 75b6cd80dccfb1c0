//! `banger tui`: the terminal UI (src/tui), with the one thing it cannot do
//! itself: start a shell (`ssh`, or `banger vm exec -it`), which only
//! src/cli may.

use std::process::ExitCode;

use super::{Ctx, autostart, vm};

pub async fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    crate::tui::require_terminal()?;
    let client = autostart::client(&ctx.paths).await?;
    let mut shell = |details: &crate::rpc::api::VmDetails, kind| match kind {
        crate::tui::ShellKind::Ssh => vm::ssh_and_wait(details),
        crate::tui::ShellKind::Exec => vm::exec_shell_and_wait(details),
    };
    crate::tui::run(client, &mut shell).await?;
    Ok(ExitCode::SUCCESS)
}
