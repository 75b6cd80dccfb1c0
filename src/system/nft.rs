//! nftables through `nft`: scripts go in on stdin (`nft -f -`), never
//! through a shell, and only the table named is ever read or removed.
//! These need root: the daemon reaches them through [`super::netadmin`].

use super::exec::{Cmd, ExecError};

/// Applies an nft script atomically (one transaction).
pub async fn apply(script: &str) -> Result<(), ExecError> {
    Cmd::new("nft")
        .args(["-f", "-"])
        .stdin_bytes(script.as_bytes().to_vec())
        .run()
        .await?;
    Ok(())
}

/// True when table `family name` exists.
pub async fn table_exists(family: &str, name: &str) -> Result<bool, ExecError> {
    let out = Cmd::new("nft")
        .args(["list", "tables", family])
        .run()
        .await?;
    Ok(out
        .stdout
        .lines()
        .any(|l| l.trim() == format!("table {family} {name}")))
}

/// The table's rules as `nft list table` prints them.
pub async fn list_table(family: &str, name: &str) -> Result<String, ExecError> {
    Ok(Cmd::new("nft")
        .args(["list", "table", family, name])
        .run()
        .await?
        .stdout)
}

/// Removes table `family name`; one that is not there is fine.
pub async fn delete_table(family: &str, name: &str) -> Result<(), ExecError> {
    if table_exists(family, name).await? {
        Cmd::new("nft")
            .args(["delete", "table", family, name])
            .run()
            .await?;
    }
    Ok(())
}
