//! `banger doctor`: every host requirement with ✓ or ✗ and the fix.

use std::process::ExitCode;

use super::{Ctx, autostart, output};
use crate::rpc::api::DoctorReport;

pub async fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    // The daemon is what needs these things, so ask it; if it cannot even
    // start, check from here (same host) and say so.
    let (report, daemon_problem) = match autostart::client(&ctx.paths).await {
        Ok(client) => (client.doctor().await?, None),
        Err(err) => {
            let config = crate::config::Config::load(&ctx.paths.config_file()).unwrap_or_default();
            let report = crate::doctor::report(&config, &ctx.paths).await;
            (report, Some(format!("{err:#}")))
        }
    };
    if ctx.json {
        output::json(&report)?;
    } else {
        print(&report);
        if let Some(problem) = &daemon_problem {
            println!("\n✗ bangerd could not be reached: {problem}");
        }
    }
    Ok(if report.ok() && daemon_problem.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print(report: &DoctorReport) {
    let width = report
        .checks
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0);
    for check in &report.checks {
        let mark = match (check.ok, check.required) {
            (true, _) => "✓",
            (false, true) => "✗",
            (false, false) => "-",
        };
        println!("{mark} {:<width$}  {}", check.name, check.detail);
        if let (false, Some(fix)) = (check.ok, &check.fix) {
            let mut lines = fix.lines();
            println!(
                "  {:<width$}  fix: {}",
                "",
                lines.next().unwrap_or_default()
            );
            for line in lines {
                println!("  {:<width$}       {line}", "");
            }
        }
    }
    let failed = report.checks.iter().filter(|c| !c.ok && c.required).count();
    if failed == 0 {
        println!("\nAll required checks pass.");
    } else {
        println!("\n{failed} required check(s) failed.");
    }
}
