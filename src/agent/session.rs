//! One exec session on an agent: its messages in order, and the process
//! group killed when the session is dropped before it ended.

use std::sync::Arc;
use std::time::Duration;

use super::conn::Inbox;

use super::proto::{self, Message};
use super::{Agent, AgentError, kind_name};

/// A program running in the guest.
pub struct Session {
    agent: Arc<Agent>,
    id: u32,
    messages: Inbox,
    ended: bool,
}

/// Sends to one session; the [`Session`] itself ends it.
#[derive(Clone)]
pub struct SessionSender {
    agent: Arc<Agent>,
    id: u32,
}

impl SessionSender {
    pub async fn send(&self, message: &Message) -> Result<(), AgentError> {
        self.agent.send(self.id, message).await
    }
}

/// What a program printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The exit status, or 128 + the signal that ended it.
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Session {
    pub(super) fn new(agent: Arc<Agent>, id: u32, messages: Inbox) -> Session {
        Session {
            agent,
            id,
            messages,
            ended: false,
        }
    }

    /// The next message of the session (`Started`, `Stdout`, `Stderr`,
    /// `StdinCredit`, then `Exited` or `Error`); `None` once the connection
    /// to the agent is gone.
    pub async fn next(&mut self) -> Option<Message> {
        let message = self.messages.recv().await;
        if matches!(
            message,
            None | Some(Message::Exited { .. } | Message::Error { .. })
        ) {
            self.ended = true;
            self.agent.forget(self.id);
        }
        message
    }

    /// Sends one of the host's session messages (stdin, resize, signal, credit).
    pub async fn send(&self, message: &Message) -> Result<(), AgentError> {
        self.agent.send(self.id, message).await
    }

    /// A handle that sends to this session, for a task of its own.
    pub fn sender(&self) -> SessionSender {
        SessionSender {
            agent: self.agent.clone(),
            id: self.id,
        }
    }

    /// Feeds `stdin` to the program (then end of file), collects its output
    /// up to `cap` bytes of each stream, and waits up to `timeout` for it to
    /// end. Output beyond `cap` ends the session with an error.
    pub async fn collect(
        self,
        stdin: &[u8],
        cap: usize,
        timeout: Duration,
    ) -> Result<Output, AgentError> {
        let mut output = Output::default();
        output.code = self
            .run(stdin, timeout, &mut |stream, data| match stream {
                Stream::Stdout => take(&mut output.stdout, data, cap),
                Stream::Stderr => take(&mut output.stderr, data, cap),
            })
            .await?;
        Ok(output)
    }

    /// Feeds `stdin` to the program (then end of file), hands each piece of
    /// its output to `on_output` as it comes (an error there ends the
    /// session), and waits up to `timeout` for it to end; its exit status.
    pub async fn run(
        mut self,
        stdin: &[u8],
        timeout: Duration,
        on_output: &mut OnOutput<'_>,
    ) -> Result<i32, AgentError> {
        let run = async {
            let mut stdin = stdin.chunks(proto::DATA_CHUNK);
            let mut unacked: u32 = 0;
            let mut eof_sent = false;
            loop {
                // Keep stdin flowing within the agent's window.
                while !eof_sent && unacked < proto::INPUT_WINDOW / 2 {
                    match stdin.next() {
                        Some(chunk) => {
                            unacked += chunk.len() as u32;
                            self.send(&Message::Stdin(chunk.to_vec())).await?;
                        }
                        None => {
                            self.send(&Message::StdinEof).await?;
                            eof_sent = true;
                        }
                    }
                }
                let (stream, data) = match self.next().await.ok_or(AgentError::Closed)? {
                    Message::Started { .. } => continue,
                    Message::StdinCredit(n) => {
                        unacked = unacked.saturating_sub(n);
                        continue;
                    }
                    Message::Stdout(data) | Message::Stderr(data)
                        if data.len() > proto::DATA_CHUNK =>
                    {
                        return Err(AgentError::Unexpected("an output frame over the limit"));
                    }
                    Message::Stdout(data) => (Stream::Stdout, data),
                    Message::Stderr(data) => (Stream::Stderr, data),
                    Message::Exited { code, .. } => return Ok(code),
                    Message::Error { message, .. } => return Err(AgentError::Refused(message)),
                    other => return Err(AgentError::Unexpected(kind_name(&other))),
                };
                on_output(stream, &data)?;
                self.send(&Message::OutputCredit(data.len() as u32)).await?;
            }
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| AgentError::Timeout(timeout))?
    }
}

/// What [`Session::run`] hands each piece of output to.
pub type OnOutput<'a> = dyn FnMut(Stream, &[u8]) -> Result<(), AgentError> + Send + 'a;

/// Which of a program's output streams a piece came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

fn take(into: &mut Vec<u8>, data: &[u8], cap: usize) -> Result<(), AgentError> {
    if into.len() + data.len() > cap {
        return Err(AgentError::TooMuchOutput(cap));
    }
    into.extend_from_slice(data);
    Ok(())
}

impl Drop for Session {
    /// A session dropped before it ended (its client went away) takes its
    /// program's whole process group with it.
    fn drop(&mut self) {
        if !self.ended {
            self.agent.send_now(self.id, &Message::Signal(9));
            self.agent.forget(self.id);
        }
    }
}
