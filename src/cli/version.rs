//! `banger version`: this binary's version and, if one runs, the daemon's.
//! Never starts a daemon.

use std::process::ExitCode;

use serde_json::json;

use super::{Ctx, output};
use crate::rpc::Client;

pub async fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let version = env!("CARGO_PKG_VERSION");
    let daemon = Client::new(ctx.paths.socket()).health().await.ok();
    if ctx.json {
        output::json(&json!({
            "banger": version,
            "bangerd": daemon.as_ref().map(|h| &h.version),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("banger {version}");
    match daemon {
        Some(h) => println!("bangerd {} (pid {})", h.version, h.pid),
        None => println!("bangerd not running"),
    }
    Ok(ExitCode::SUCCESS)
}
