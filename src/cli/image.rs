//! `banger image ...`

use std::process::ExitCode;

use clap::Subcommand;

use super::{Ctx, autostart, output};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List the registered root filesystem images.
    #[command(visible_alias = "ls")]
    List,
}

pub async fn run(ctx: &Ctx, command: ImageCommand) -> anyhow::Result<ExitCode> {
    match command {
        ImageCommand::List => list(ctx).await,
    }
}

async fn list(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let images = autostart::client(&ctx.paths).await?.list_images().await?;
    if ctx.json {
        output::json(&images)?;
    } else if images.is_empty() {
        println!("No images.");
    } else {
        let rows: Vec<Vec<String>> = images
            .into_iter()
            .map(|image| {
                vec![
                    image.name,
                    image.size_bytes.map_or_else(|| "-".into(), output::bytes),
                    image.rootfs.display().to_string(),
                ]
            })
            .collect();
        output::table(&["NAME", "SIZE", "ROOTFS"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}
