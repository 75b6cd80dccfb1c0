//! `banger network status|cleanup`

use std::process::ExitCode;

use clap::Subcommand;

use super::{Ctx, autostart, output};

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Show the bridge, NAT table, DNS listener and every lease.
    Status,
    /// Remove host networking no running VM needs (stale taps; with no VM
    /// running, also the NAT table, DNS listener and bridge).
    Cleanup,
}

pub async fn run(ctx: &Ctx, command: NetworkCommand) -> anyhow::Result<ExitCode> {
    let client = autostart::client(&ctx.paths).await?;
    match command {
        NetworkCommand::Status => {
            let status = client.network_status().await?;
            if ctx.json {
                return output::json(&status).map(|()| ExitCode::SUCCESS);
            }
            let bridge = if status.bridge_present {
                format!(
                    "{} up, {}",
                    status.bridge,
                    status.bridge_addresses.join(" ")
                )
            } else {
                format!("{} absent (made when a VM starts)", status.bridge)
            };
            println!("bridge    {bridge}");
            println!("subnet    {}", status.subnet);
            let nat = match &status.nat_table {
                Some(rules) => format!(
                    "loaded ({} rules)",
                    rules
                        .lines()
                        .filter(|l| l.contains("accept")
                            || l.contains("masquerade")
                            || l.contains("drop"))
                        .count()
                ),
                None => "absent (no VM running)".into(),
            };
            println!("nat       {nat}");
            println!(
                "dns       {}",
                status.dns_listen.clone().unwrap_or_else(|| format!(
                    "not listening ({})",
                    status.dns_problem.as_deref().unwrap_or("unknown")
                ))
            );
            println!(
                "upstream  {}",
                if status.dns_upstreams.is_empty() {
                    "-".into()
                } else {
                    status.dns_upstreams.join(", ")
                }
            );
            if !status.leases.is_empty() {
                println!();
                let rows: Vec<Vec<String>> = status
                    .leases
                    .into_iter()
                    .map(|l| {
                        vec![
                            l.vm,
                            l.state.to_string(),
                            l.ip.to_string(),
                            l.mac.to_string(),
                            format!("{}{}", l.tap, if l.tap_present { "" } else { " (absent)" }),
                            if l.nat { "yes".into() } else { "no".into() },
                        ]
                    })
                    .collect();
                output::table(&["VM", "STATE", "IP", "MAC", "TAP", "NAT"], &rows);
            }
        }
        NetworkCommand::Cleanup => {
            let done = client.network_cleanup().await?;
            if ctx.json {
                output::json(&done)?;
            } else if done.removed.is_empty() {
                println!("nothing to clean up");
            } else {
                for item in done.removed {
                    println!("removed {item}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
