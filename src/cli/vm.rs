//! `banger vm ...`

use std::process::ExitCode;

use clap::Subcommand;

use super::{Ctx, autostart, output};

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// List every VM with its state and address.
    #[command(visible_alias = "ls")]
    List,
}

pub async fn run(ctx: &Ctx, command: VmCommand) -> anyhow::Result<ExitCode> {
    match command {
        VmCommand::List => list(ctx).await,
    }
}

async fn list(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let vms = autostart::client(&ctx.paths).await?.list_vms().await?;
    if ctx.json {
        output::json(&vms)?;
    } else if vms.is_empty() {
        println!("No VMs.");
    } else {
        let rows: Vec<Vec<String>> = vms
            .into_iter()
            .map(|vm| {
                vec![
                    vm.name,
                    vm.state,
                    vm.image.unwrap_or_else(|| "-".into()),
                    vm.backend,
                    vm.vcpus.to_string(),
                    output::bytes(u64::from(vm.memory_mib) << 20),
                    vm.ip.unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        output::table(
            &["NAME", "STATE", "IMAGE", "VMM", "VCPUS", "MEMORY", "IP"],
            &rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}
