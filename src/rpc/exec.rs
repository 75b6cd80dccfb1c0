//! The client side of `POST /v1/vms/{name}/exec`: one session's agent
//! frames over the upgraded connection, as a reader (what the program
//! says) and a writer (what it is sent), so a caller can wait on both.

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use super::api::EXEC_SESSION;
use super::{Client, ClientError};
use banger_agent::proto::{self, Decoder, Message, WinSize};

type Stream = TokioIo<Upgraded>;

/// What a running program said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The agent passed on stdin: [`ExecWriter::stdin_room`] grew.
    StdinAccepted,
    /// It ended: its exit status, or 128 + the signal that ended it.
    Exited(i32),
}

/// Starts `exec` in VM `name`.
pub async fn open(
    client: &Client,
    name: &str,
    exec: proto::Exec,
) -> Result<(ExecReader, ExecWriter), ClientError> {
    let (reader, writer) = tokio::io::split(client.exec_stream(name).await?);
    let mut writer = ExecWriter {
        writer,
        unacked: 0,
        credit: tokio::sync::watch::channel(0).0,
    };
    writer.send(&Message::Exec(exec)).await?;
    let reader = ExecReader {
        reader,
        decoder: Decoder::new(),
        buf: vec![0; 64 * 1024],
        ready: Vec::new(),
        credit: writer.credit.clone(),
    };
    Ok((reader, writer))
}

/// The program's side: its output and how it ended.
pub struct ExecReader {
    reader: ReadHalf<Stream>,
    decoder: Decoder,
    buf: Vec<u8>,
    /// Decoded and not yet handed out, last first.
    ready: Vec<Message>,
    /// Stdin bytes the agent passed on, for the writer's window.
    credit: tokio::sync::watch::Sender<u64>,
}

impl ExecReader {
    /// The next thing the program said. Output must be acknowledged with
    /// [`ExecWriter::credit`] once consumed, or the program is held.
    pub async fn next(&mut self) -> Result<ExecEvent, ClientError> {
        loop {
            while let Some(message) = self.ready.pop() {
                match message {
                    Message::Stdout(data) => return Ok(ExecEvent::Stdout(data)),
                    Message::Stderr(data) => return Ok(ExecEvent::Stderr(data)),
                    Message::Exited { code, .. } => return Ok(ExecEvent::Exited(code)),
                    Message::StdinCredit(n) => {
                        self.credit.send_modify(|c| *c += u64::from(n));
                        return Ok(ExecEvent::StdinAccepted);
                    }
                    Message::Error { message, .. } => return Err(ClientError::Exec(message)),
                    _ => {}
                }
            }
            let n = self.reader.read(&mut self.buf).await.map_err(broken)?;
            if n == 0 {
                return Err(ClientError::Exec(
                    "the daemon ended the exec stream early".into(),
                ));
            }
            let mut data = &self.buf[..n];
            let mut decoded = Vec::new();
            while !data.is_empty() {
                let taken = self.decoder.feed(data);
                data = &data[taken..];
                while let Some(frame) = self.decoder.next_frame() {
                    if frame.id == EXEC_SESSION
                        && let Ok(message) = Message::decode(&frame)
                    {
                        decoded.push(message);
                    }
                }
            }
            decoded.reverse();
            self.ready = decoded;
        }
    }
}

/// The host's side: stdin, resizes, signals and output credit.
pub struct ExecWriter {
    writer: WriteHalf<Stream>,
    /// Stdin bytes sent so far.
    unacked: u64,
    credit: tokio::sync::watch::Sender<u64>,
}

impl ExecWriter {
    /// Sends `data` to the program's stdin: at most [`ExecWriter::stdin_room`]
    /// bytes (the agent ends a session that overruns its window).
    pub async fn stdin(&mut self, data: &[u8]) -> Result<(), ClientError> {
        if data.len() > self.stdin_room() {
            return Err(ClientError::Exec("stdin beyond the agent's window".into()));
        }
        for chunk in data.chunks(proto::DATA_CHUNK) {
            self.unacked += chunk.len() as u64;
            self.send(&Message::Stdin(chunk.to_vec())).await?;
        }
        Ok(())
    }

    /// How many stdin bytes may be sent now without waiting.
    pub fn stdin_room(&self) -> usize {
        let acked = *self.credit.borrow();
        let in_flight = self.unacked.saturating_sub(acked);
        u64::from(proto::INPUT_WINDOW).saturating_sub(in_flight) as usize
    }

    /// No more stdin.
    pub async fn close_stdin(&mut self) -> Result<(), ClientError> {
        self.send(&Message::StdinEof).await
    }

    /// `n` bytes of output were consumed. Not an error when the session
    /// has just ended (the daemon may have closed its side after `Exited`,
    /// which the reader still holds).
    pub async fn credit(&mut self, n: usize) {
        let _ = self.send(&Message::OutputCredit(n as u32)).await;
    }

    pub async fn resize(&mut self, size: WinSize) -> Result<(), ClientError> {
        self.send(&Message::Resize(size)).await
    }

    async fn send(&mut self, message: &Message) -> Result<(), ClientError> {
        let mut frame = Vec::new();
        message
            .encode(EXEC_SESSION, &mut frame)
            .map_err(|e| ClientError::Exec(e.to_string()))?;
        self.writer.write_all(&frame).await.map_err(broken)
    }
}

fn broken(e: std::io::Error) -> ClientError {
    ClientError::Exec(format!("the exec stream broke: {e}"))
}
