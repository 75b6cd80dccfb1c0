//! How a build talks to its guest: banger's SSH client where the image
//! runs sshd, the guest agent where it has none (an image pulled from a
//! registry, say). Both run the same shell commands and unpack uploads
//! with the guest's `tar`. Through the agent, a command is first written
//! into the guest as a script (the guest's shell reads one line on stdin,
//! whose `printf` builtin writes the file) and then run as `/bin/sh
//! SCRIPT`, with the command's own stdin: no command line is handed to a
//! shell to split, and a stripped image needs nothing but `/bin/sh`.

use std::sync::Arc;
use std::time::Duration;

use crate::agent::Stream;
use crate::agent::proto;
use crate::rpc::api::OutputStream;
use crate::ssh::archive::{Entry, write_archive};
use crate::ssh::{Session, SshError};
use crate::vm::Manager;

use super::BuildError;

/// The longest one build command may run through the agent (apt on a slow
/// mirror under emulation).
const AGENT_COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);
/// The most output kept from a command whose output is read whole.
const MAX_CAPTURED: usize = 16 << 20;
/// Where a command goes in the guest before it runs (it removes itself).
const SCRIPT: &str = "/tmp/banger-build-command.sh";
/// How the guest unpacks an upload: into `/`, owners left to root.
const UNPACK: &str = "tar -x -p --no-same-owner -f - -C /";

pub enum Link {
    Ssh(Session),
    Agent { vms: Arc<Manager>, vm: String },
}

impl Link {
    /// Runs `command`, feeding it `stdin` (then end of file) and each piece
    /// of its output to `on_output`; its exit status.
    pub async fn exec(
        &mut self,
        command: &str,
        stdin: Option<&[u8]>,
        on_output: &mut (dyn FnMut(OutputStream, &[u8]) + Send),
    ) -> Result<u32, BuildError> {
        match self {
            Link::Ssh(ssh) => Ok(match stdin {
                Some(input) => ssh.exec_with_input(command, input, on_output).await?,
                None => ssh.exec(command, on_output).await?,
            }),
            Link::Agent { vms, vm } => agent_shell(vms, vm, command, stdin, on_output).await,
        }
    }

    /// Runs `command` and returns its exit status and stdout.
    pub async fn output(&mut self, command: &str) -> Result<(u32, Vec<u8>), BuildError> {
        match self {
            Link::Ssh(ssh) => {
                let out = ssh.output(command).await?;
                Ok((out.status, out.stdout))
            }
            Link::Agent { vms, vm } => {
                put_script(vms, vm, command).await?;
                let session = vms.exec(vm, argv(&["/bin/sh", SCRIPT], false)).await?;
                let out = session
                    .collect(&[], MAX_CAPTURED, AGENT_COMMAND_TIMEOUT)
                    .await
                    .map_err(BuildError::Agent)?;
                Ok((out.code.max(0) as u32, out.stdout))
            }
        }
    }

    /// Copies host files into the guest (see `ssh::Session::upload`).
    pub async fn upload(&mut self, entries: &[Entry]) -> Result<(), BuildError> {
        match self {
            Link::Ssh(ssh) => Ok(ssh.upload(entries).await?),
            Link::Agent { vms, vm } => {
                let owned = entries.to_vec();
                let archive = tokio::task::spawn_blocking(move || {
                    let mut bytes = Vec::new();
                    write_archive(&owned, &mut bytes).map(|()| bytes)
                })
                .await
                .map_err(|e| BuildError::CreateTask(e.to_string()))?
                .map_err(|source| SshError::BuildArchive { source })?;
                unpack(vms, vm, &archive).await
            }
        }
    }

    pub async fn close(self) {
        if let Link::Ssh(ssh) = self {
            ssh.close().await;
        }
    }
}

/// Writes `command` into the guest as [`SCRIPT`], which removes itself
/// when it runs.
async fn put_script(vms: &Manager, vm: &str, command: &str) -> Result<(), BuildError> {
    let script = format!("rm -f -- \"$0\" 2>/dev/null\n{command}\n");
    let write = format!("printf '%s' {} > {SCRIPT}\n", crate::ssh::quote(&script));
    let mut said = Vec::new();
    let mut keep =
        |_: OutputStream, data: &[u8]| said.extend_from_slice(&data[..data.len().min(4096)]);
    let code = agent_run(
        vms,
        vm,
        &["/bin/sh", "-s"],
        Some(write.as_bytes()),
        &mut keep,
    )
    .await?;
    match code {
        0 => Ok(()),
        code => Err(BuildError::Command {
            what: format!(
                "writing {SCRIPT} ({})",
                String::from_utf8_lossy(&said).trim()
            ),
            code,
        }),
    }
}

/// Runs shell `command` in the guest through its agent (see the module).
async fn agent_shell(
    vms: &Manager,
    vm: &str,
    command: &str,
    stdin: Option<&[u8]>,
    on_output: &mut (dyn FnMut(OutputStream, &[u8]) + Send),
) -> Result<u32, BuildError> {
    put_script(vms, vm, command).await?;
    agent_run(vms, vm, &["/bin/sh", SCRIPT], stdin, on_output).await
}

/// Unpacks `archive` into the guest's `/` with its `tar`.
async fn unpack(vms: &Manager, vm: &str, archive: &[u8]) -> Result<(), BuildError> {
    let mut stderr = Vec::new();
    let mut keep = |stream: OutputStream, data: &[u8]| {
        if stream == OutputStream::Stderr && stderr.len() < 4096 {
            stderr.extend_from_slice(data);
        }
    };
    let code = agent_shell(vms, vm, UNPACK, Some(archive), &mut keep).await?;
    if code != 0 {
        return Err(SshError::ExtractUpload {
            status: code,
            stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
        }
        .into());
    }
    Ok(())
}

/// Runs `args` in the guest through its agent, streaming its output.
async fn agent_run(
    vms: &Manager,
    vm: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    on_output: &mut (dyn FnMut(OutputStream, &[u8]) + Send),
) -> Result<u32, BuildError> {
    let session = vms.exec(vm, argv(args, stdin.is_some())).await?;
    let code = session
        .run(
            stdin.unwrap_or_default(),
            AGENT_COMMAND_TIMEOUT,
            &mut |stream, data| {
                let stream = match stream {
                    Stream::Stdout => OutputStream::Stdout,
                    Stream::Stderr => OutputStream::Stderr,
                };
                on_output(stream, data);
                Ok(())
            },
        )
        .await
        .map_err(BuildError::Agent)?;
    Ok(code.max(0) as u32)
}

/// `args` as root, in `/root`.
fn argv(args: &[&str], stdin: bool) -> proto::Exec {
    proto::Exec {
        argv: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: vec![b"HOME=/root".to_vec()],
        cwd: Some(b"/root".to_vec()),
        stdin,
        pty: None,
    }
}
