//! How a build talks to its guest: banger's SSH client where the image
//! runs sshd, the guest agent where it has none (an image pulled from a
//! registry, say). Both run the same shell commands (`/bin/sh -c` in the
//! guest) and unpack uploads with the guest's `tar`.

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
            Link::Agent { vms, vm } => {
                let session = vms.exec(vm, shell(command, stdin.is_some())).await?;
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
                let session = vms.exec(vm, shell(command, false)).await?;
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
        if let Link::Ssh(ssh) = self {
            return Ok(ssh.upload(entries).await?);
        }
        let owned = entries.to_vec();
        let archive = tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::new();
            write_archive(&owned, &mut bytes).map(|()| bytes)
        })
        .await
        .map_err(|e| BuildError::CreateTask(e.to_string()))?
        .map_err(|source| SshError::BuildArchive { source })?;
        let mut stderr = Vec::new();
        let code = self
            .exec(
                "tar -x -p --no-same-owner -f - -C /",
                Some(&archive),
                &mut |stream, data| {
                    if stream == OutputStream::Stderr && stderr.len() < 4096 {
                        stderr.extend_from_slice(data);
                    }
                },
            )
            .await?;
        if code != 0 {
            return Err(SshError::ExtractUpload {
                status: code,
                stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            }
            .into());
        }
        Ok(())
    }

    pub async fn close(self) {
        if let Link::Ssh(ssh) = self {
            ssh.close().await;
        }
    }
}

/// `command` for the guest's shell, as root, in `/root`.
fn shell(command: &str, stdin: bool) -> proto::Exec {
    proto::Exec {
        argv: vec![
            b"/bin/sh".to_vec(),
            b"-c".to_vec(),
            command.as_bytes().to_vec(),
        ],
        env: vec![b"HOME=/root".to_vec()],
        cwd: Some(b"/root".to_vec()),
        stdin,
        pty: None,
    }
}
