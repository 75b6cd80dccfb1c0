//! `banger tui`: the terminal UI (src/tui), with the one thing it cannot do
//! itself: start `ssh`, which only src/cli may.

use std::process::ExitCode;

use super::{Ctx, autostart, vm};

pub async fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    crate::tui::require_terminal()?;
    let client = autostart::client(&ctx.paths).await?;
    crate::tui::run(client, &mut vm::ssh_and_wait).await?;
    Ok(ExitCode::SUCCESS)
}
