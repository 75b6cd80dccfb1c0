//! Host network devices through `ip`: the VM bridge and one tap per VM.
//! Presence is read natively from `/sys/class/net`; changes go through the
//! exec point, privileged.

use std::path::Path;

use super::exec::{Cmd, ExecError};

/// True when a network interface named `name` exists.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Creates bridge `name` with address `gateway_cidr` (e.g. `172.30.0.1/24`)
/// and brings it up; a bridge already there is left as it is, its address
/// added if missing.
pub async fn ensure_bridge(name: &str, gateway_cidr: &str) -> Result<(), ExecError> {
    if !link_exists(name) {
        ip(&["link", "add", "name", name, "type", "bridge"]).await?;
    }
    let addrs = ip(&["-o", "-4", "addr", "show", "dev", name]).await?;
    if !addrs.split_whitespace().any(|word| word == gateway_cidr) {
        ip(&["addr", "add", gateway_cidr, "dev", name]).await?;
    }
    ip(&["link", "set", name, "up"]).await?;
    Ok(())
}

/// Creates tap `name` owned by `uid` (so an unprivileged VMM can open it),
/// enslaves it to `bridge` and brings it up. A tap left over from a VM that
/// died is replaced.
pub async fn add_tap(name: &str, uid: u32, bridge: &str) -> Result<(), ExecError> {
    if link_exists(name) {
        delete_link(name).await?;
    }
    let uid = uid.to_string();
    ip(&["tuntap", "add", "dev", name, "mode", "tap", "user", &uid]).await?;
    let attached = ip(&["link", "set", name, "master", bridge, "up"]).await;
    if attached.is_err() {
        let _ = delete_link(name).await;
    }
    attached.map(drop)
}

/// Deletes interface `name`; one that is already gone is fine.
pub async fn delete_link(name: &str) -> Result<(), ExecError> {
    if !link_exists(name) {
        return Ok(());
    }
    match ip(&["link", "del", name]).await {
        Err(_) if !link_exists(name) => Ok(()),
        other => other.map(drop),
    }
}

async fn ip(args: &[&str]) -> Result<String, ExecError> {
    Ok(Cmd::new("ip").args(args).privileged().run().await?.stdout)
}
