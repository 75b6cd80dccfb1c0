//! `banger vm cp SRC DST`: copy files and directories between the host and
//! a VM over banger's own SSH client (no scp), with `cp -r` naming on both
//! sides. Exactly one side is `NAME:PATH`; a guest PATH is absolute or
//! relative to /root. A host path with a ':' before any '/' reads as a VM:
//! write it `./a:b`, as with scp.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use std::io::Write;

use tokio::sync::mpsc;

use crate::rpc::Client;
use crate::rpc::exec::{self, ExecEvent};
use crate::ssh::archive::{self, Entry};
use crate::ssh::{CHUNKS_IN_FLIGHT, ChunkReader, ChunkWriter, Download, Session, Target, quote};
use banger_agent::proto;

/// Bound on connect + handshake + auth to a VM that is already running.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Side<'a> {
    Host(&'a str),
    Guest { vm: &'a str, path: String },
}

/// `NAME:PATH` is a guest side when NAME holds no '/'; anything else is a
/// host path.
fn side(arg: &str) -> Side<'_> {
    match arg.split_once(':') {
        Some((vm, path)) if !vm.is_empty() && !vm.contains('/') => Side::Guest {
            vm,
            path: guest_path(path),
        },
        _ => Side::Host(arg),
    }
}

/// A guest path made absolute: relative paths start at root's home.
fn guest_path(path: &str) -> String {
    match path {
        "" => "/root".into(),
        p if p.starts_with('/') => p.into(),
        p => format!("/root/{p}"),
    }
}

/// The two sides, checked: exactly one is in a VM.
fn sides<'a>(src: &'a str, dst: &'a str) -> anyhow::Result<(Side<'a>, Side<'a>)> {
    match (side(src), side(dst)) {
        (Side::Host(_), Side::Host(_)) => {
            bail!("one side must be in a VM, as NAME:PATH (e.g. `banger vm cp ./dir box:/root/`)")
        }
        (Side::Guest { .. }, Side::Guest { .. }) => {
            bail!("copying between two VMs is not supported; one side must be a host path")
        }
        pair => Ok(pair),
    }
}

/// The VM named by `src` or `dst`, for the caller to validate before
/// anything starts.
pub fn vm_name<'a>(src: &'a str, dst: &'a str) -> anyhow::Result<&'a str> {
    match sides(src, dst)? {
        (Side::Guest { vm, .. }, _) | (_, Side::Guest { vm, .. }) => Ok(vm),
        _ => unreachable!("sides() returns exactly one guest side"),
    }
}

/// Copies `src` to `dst`; prints nothing on success. Over the VM's agent
/// where it has one (no sshd needed), else over SSH.
pub async fn run(client: &Client, src: &str, dst: &str) -> anyhow::Result<()> {
    let vm = vm_name(src, dst)?;
    let details = client.vm(vm).await?;
    if !details.state.is_running() {
        bail!("VM {vm} is {}: {}", details.state, details.state.to_run(vm));
    }
    if details.agent.is_some() {
        return over_agent(client, src, dst).await;
    }
    match sides(src, dst)? {
        (Side::Host(host), Side::Guest { vm, path }) => {
            let mut ssh = connect(client, vm).await?;
            upload(&mut ssh, Path::new(host), &path).await?;
            ssh.close().await;
        }
        (Side::Guest { vm, path }, Side::Host(host)) => {
            let mut ssh = connect(client, vm).await?;
            ssh.download(&path, Path::new(host))
                .await
                .with_context(|| format!("cannot copy {vm}:{path} to {host}"))?;
            ssh.close().await;
        }
        _ => unreachable!("sides() returns one host and one guest side"),
    }
    Ok(())
}

/// A session to VM `name` as root, trusting only its recorded host key.
async fn connect(client: &Client, name: &str) -> anyhow::Result<Session> {
    let vm = client.vm(name).await?;
    if !vm.state.is_running() {
        bail!("VM {name} is {}: {}", vm.state, vm.state.to_run(name));
    }
    let ip: IpAddr = vm
        .ip
        .with_context(|| format!("VM {name} has no address"))?
        .into();
    let host_key = vm
        .host_key
        .with_context(|| format!("VM {name} has no recorded host key"))?;
    let target = Target {
        addr: SocketAddr::new(ip, 22),
        user: "root".into(),
        key: vm.ssh_key,
        host_key,
    };
    Ok(Session::connect(&target, CONNECT_TIMEOUT).await?)
}

/// `cp -r` naming: into `guest` when it is an existing directory, else as
/// `guest`.
async fn upload(ssh: &mut Session, host: &Path, guest: &str) -> anyhow::Result<()> {
    std::fs::symlink_metadata(host).with_context(|| format!("cannot read {}", host.display()))?;
    let is_dir = ssh
        .output(&format!("test -d {}", quote(guest)))
        .await?
        .status
        == 0;
    let guest = upload_target(host, guest, is_dir)?;
    ssh.upload(&[Entry {
        host: host.to_path_buf(),
        guest: guest.clone(),
    }])
    .await
    .with_context(|| format!("cannot copy {} to {guest}", host.display()))
}

/// Where `host` lands for a copy to `guest` (an existing directory or not).
fn upload_target(host: &Path, guest: &str, is_dir: bool) -> anyhow::Result<String> {
    Ok(if is_dir {
        // `.` and `..` have no name of their own: use the real one.
        let name = match host.file_name() {
            Some(name) => name.to_owned(),
            None => std::fs::canonicalize(host)?
                .file_name()
                .context("cannot copy the root directory into a directory")?
                .to_owned(),
        };
        let name = name
            .to_str()
            .with_context(|| format!("{} is not a UTF-8 name", host.display()))?;
        format!("{}/{name}", guest.trim_end_matches('/'))
    } else {
        guest.to_string()
    })
}

/// The copy over the VM's agent: the guest's `tar` packs or unpacks, the
/// host's side is banger's own archive code, with the same safety rules
/// as over SSH.
async fn over_agent(client: &Client, src: &str, dst: &str) -> anyhow::Result<()> {
    match sides(src, dst)? {
        (Side::Host(host), Side::Guest { vm, path }) => {
            let host = Path::new(host);
            std::fs::symlink_metadata(host)
                .with_context(|| format!("cannot read {}", host.display()))?;
            let is_dir = agent_run(client, vm, &["test", "-d", &path], None, None)
                .await?
                .0
                == 0;
            let guest = upload_target(host, &path, is_dir)?;
            archive::member_name(&guest)?;
            let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
            let entries = vec![Entry {
                host: host.to_path_buf(),
                guest: guest.clone(),
            }];
            let producer = tokio::task::spawn_blocking(move || {
                let mut out = ChunkWriter::new(tx);
                archive::write_archive(&entries, &mut out)?;
                out.flush()
            });
            let tar = ["tar", "-x", "-p", "--no-same-owner", "-f", "-", "-C", "/"];
            let (code, stderr) = agent_run(client, vm, &tar, Some(rx), None).await?;
            producer
                .await?
                .with_context(|| format!("cannot read {}", host.display()))?;
            if code != 0 {
                bail!(
                    "cannot copy {} to {vm}:{guest}: the guest's tar failed ({code}): {}",
                    host.display(),
                    String::from_utf8_lossy(&stderr).trim()
                );
            }
        }
        (Side::Guest { vm, path }, Side::Host(host)) => {
            let Download {
                parent,
                base,
                member,
                target,
            } = Download::plan(&path, Path::new(host))?;
            let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
            let unpacker = {
                let target = target.clone();
                tokio::task::spawn_blocking(move || {
                    archive::unpack(ChunkReader::new(rx), &base, &target)
                })
            };
            let tar = ["tar", "-c", "-f", "-", "-C", &parent, &member];
            let ran = agent_run(client, vm, &tar, None, Some(tx)).await;
            let unpacked = unpacker.await?;
            let (code, stderr) = ran?;
            if code != 0 {
                bail!(
                    "cannot copy {vm}:{path}: the guest's tar failed ({code}): {}",
                    String::from_utf8_lossy(&stderr).trim()
                );
            }
            unpacked.with_context(|| format!("cannot copy {vm}:{path} to {}", target.display()))?;
        }
        _ => unreachable!("sides() returns one host and one guest side"),
    }
    Ok(())
}

/// Runs `argv` in VM `vm` through its agent: stdin from `input` (none when
/// `None`), stdout into `output` (dropped when `None`); returns the exit
/// code and the head of stderr.
async fn agent_run(
    client: &Client,
    vm: &str,
    argv: &[&str],
    mut input: Option<mpsc::Receiver<Vec<u8>>>,
    output: Option<mpsc::Sender<Vec<u8>>>,
) -> anyhow::Result<(i32, Vec<u8>)> {
    let request = proto::Exec {
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: vec![b"HOME=/root".to_vec()],
        stdin: input.is_some(),
        ..Default::default()
    };
    let (mut reader, mut writer) = exec::open(client, vm, request).await?;
    let mut stderr = Vec::new();
    // A chunk taken from `input` that does not fit the window yet.
    let mut held: Option<Vec<u8>> = None;
    loop {
        if let Some(chunk) = held.take() {
            let room = writer.stdin_room();
            if chunk.len() <= room {
                writer.stdin(&chunk).await?;
            } else {
                if room > 0 {
                    writer.stdin(&chunk[..room]).await?;
                }
                held = Some(chunk[room..].to_vec());
            }
        }
        let want_input = input.is_some() && held.is_none();
        tokio::select! {
            chunk = async { input.as_mut().expect("checked").recv().await }, if want_input => {
                match chunk {
                    Some(chunk) => held = Some(chunk),
                    None => {
                        input = None;
                        writer.close_stdin().await?;
                    }
                }
            }
            event = reader.next() => match event? {
                ExecEvent::Stdout(data) => {
                    let n = data.len();
                    if let Some(out) = &output
                        && out.send(data).await.is_err()
                    {
                        bail!("the copy stopped on the host");
                    }
                    writer.credit(n).await;
                }
                ExecEvent::Stderr(data) => {
                    let keep = (16 * 1024usize).saturating_sub(stderr.len());
                    stderr.extend_from_slice(&data[..data.len().min(keep)]);
                    writer.credit(data.len()).await;
                }
                ExecEvent::StdinAccepted => {}
                ExecEvent::Exited(code) => return Ok((code, stderr)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_read_like_scp() {
        assert_eq!(side("./dir"), Side::Host("./dir"));
        assert_eq!(side("./a:b"), Side::Host("./a:b"));
        assert_eq!(side("/x/y:z"), Side::Host("/x/y:z"));
        assert_eq!(
            side("box:/etc/os-release"),
            Side::Guest {
                vm: "box",
                path: "/etc/os-release".into()
            }
        );
        assert_eq!(
            side("box:notes"),
            Side::Guest {
                vm: "box",
                path: "/root/notes".into()
            }
        );
        assert_eq!(
            side("box:"),
            Side::Guest {
                vm: "box",
                path: "/root".into()
            }
        );
    }

    #[test]
    fn exactly_one_side_is_a_vm() {
        assert_eq!(vm_name("./dir", "box:/root/").unwrap(), "box");
        assert_eq!(vm_name("box:/etc/os-release", ".").unwrap(), "box");
        // The name is returned as typed, for check_dns_label to judge.
        assert_eq!(vm_name("Box:/x", ".").unwrap(), "Box");
        let both = vm_name("a:/x", "b:/y").unwrap_err().to_string();
        assert!(both.contains("two VMs"), "{both}");
        let none = vm_name("./a", "./b").unwrap_err().to_string();
        assert!(none.contains("NAME:PATH"), "{none}");
    }
}
