//! One connection to one VM's agent: a reader task that decodes frames and
//! routes them by id, a writer task that sends queued frames, and the
//! requests and sessions that share them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};

use super::proto::{self, Decoder, HelloReply, Message};
use super::{AgentError, Channel, REQUEST_TIMEOUT, Session};

/// Bytes a session's route may hold unread before its agent is deemed to
/// flood it: the output window the agent must keep to, plus room for the
/// small messages (stdin credit, say) that come with it. Each message
/// counts at least [`MESSAGE_COST`], so a flood of empty ones is one too.
const ROUTE_BYTES: usize = proto::OUTPUT_WINDOW as usize + 1024 * 1024;
const MESSAGE_COST: usize = 64;
/// Frames waiting to be written to the agent.
const OUT_DEPTH: usize = 64;

type Routes = Arc<Mutex<HashMap<u32, Route>>>;

/// Where one id's messages go, and how many bytes of them wait unread.
#[derive(Clone)]
struct Route {
    tx: mpsc::UnboundedSender<Message>,
    queued: Arc<AtomicUsize>,
}

/// The receiving end of a [`Route`].
pub(super) struct Inbox {
    rx: mpsc::UnboundedReceiver<Message>,
    queued: Arc<AtomicUsize>,
}

impl Inbox {
    pub(super) async fn recv(&mut self) -> Option<Message> {
        let message = self.rx.recv().await?;
        self.queued.fetch_sub(cost(&message), Ordering::Relaxed);
        Some(message)
    }
}

/// What a queued message counts against its route's budget.
fn cost(message: &Message) -> usize {
    let data = match message {
        Message::Stdout(d) | Message::Stderr(d) => d.len(),
        _ => 0,
    };
    data.max(MESSAGE_COST)
}

/// A live connection to a guest agent.
pub struct Agent {
    out: mpsc::Sender<Vec<u8>>,
    routes: Routes,
    next_id: AtomicU32,
    hello: watch::Receiver<Option<HelloReply>>,
    /// Where a status answer updates what [`Agent::last_hello`] says.
    hello_tx: watch::Sender<Option<HelloReply>>,
    closed: watch::Receiver<bool>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for Agent {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Agent {
    /// Connects to the agent behind `channel`, says hello and waits up to
    /// `within` for its answer (resending the hello: a guest still booting
    /// opens its end of the channel late).
    pub async fn connect(channel: &Channel, within: Duration) -> Result<Agent, AgentError> {
        let path = channel.path().to_path_buf();
        let connect = async {
            let mut stream = UnixStream::connect(&path).await?;
            if let Channel::Vsock(_) = channel {
                stream
                    .write_all(format!("CONNECT {}\n", proto::VSOCK_PORT).as_bytes())
                    .await?;
            }
            Ok::<UnixStream, std::io::Error>(stream)
        };
        let mut stream = tokio::time::timeout(REQUEST_TIMEOUT, connect)
            .await
            .map_err(|_| AgentError::Timeout(REQUEST_TIMEOUT))?
            .map_err(|source| AgentError::Connect {
                path: path.clone(),
                source,
            })?;
        if let Channel::Vsock(_) = channel {
            vsock_answer(&mut stream, within.max(REQUEST_TIMEOUT)).await?;
        }
        let (reader, mut writer) = stream.into_split();
        if let Channel::Serial(_) = channel {
            // Completes whatever torn frame an earlier host left, so the
            // agent finds our hello (see `proto::SYNC_LEN`).
            writer
                .write_all(&proto::sync_preamble())
                .await
                .map_err(|source| AgentError::Connect {
                    path: path.clone(),
                    source,
                })?;
        }
        let (out, mut queued) = mpsc::channel::<Vec<u8>>(OUT_DEPTH);
        let routes: Routes = Arc::default();
        let (hello_tx, hello) = watch::channel(None);
        let (closed_tx, closed) = watch::channel(false);
        let writing = tokio::spawn(async move {
            while let Some(frame) = queued.recv().await {
                if writer.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let reading = tokio::spawn(read_frames(
            reader,
            routes.clone(),
            out.clone(),
            hello_tx.clone(),
            closed_tx,
        ));
        let agent = Agent {
            out,
            routes,
            next_id: AtomicU32::new(1),
            hello,
            hello_tx,
            closed,
            tasks: [reading, writing],
        };
        agent.hello(within).await?;
        Ok(agent)
    }

    /// Says hello and waits for the answer that echoes it. A hello ends
    /// every session of the previous conversation: only `connect` and a
    /// boot that waits for readiness (no sessions yet) call it.
    pub async fn hello(&self, within: Duration) -> Result<HelloReply, AgentError> {
        let nonce = nonce();
        let mut hello = self.hello.clone();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.send(
                0,
                &Message::Hello {
                    nonce,
                    version: proto::VERSION,
                },
            )
            .await?;
            let resend = tokio::time::Instant::now() + Duration::from_millis(500);
            let answered = tokio::time::timeout_at(
                resend.min(deadline),
                hello.wait_for(|r| r.as_ref().is_some_and(|r| r.nonce == nonce)),
            )
            .await;
            match answered {
                Ok(Ok(reply)) => return Ok(reply.clone().expect("matched a reply")),
                Ok(Err(_)) => return Err(AgentError::Closed),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(AgentError::Timeout(within));
                }
                Err(_) => {}
            }
        }
    }

    /// What the agent says of the guest now (sshd accepting, versions),
    /// without ending any session: a `Status` request, answered like a hello.
    pub async fn status(&self) -> Result<HelloReply, AgentError> {
        match self.request(Message::Status).await? {
            Message::HelloReply(reply) => {
                self.hello_tx.send_replace(Some(reply.clone()));
                Ok(reply)
            }
            other => Err(AgentError::Unexpected(super::kind_name(&other))),
        }
    }

    /// The agent's last hello (it also says one on its own when it starts).
    pub fn last_hello(&self) -> Option<HelloReply> {
        self.hello.borrow().clone()
    }

    /// True once the connection is gone (the guest stopped, say).
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Sends `request` and waits for its one answer; an `Error` answer is
    /// [`AgentError::Refused`].
    pub async fn request(&self, request: Message) -> Result<Message, AgentError> {
        let (id, mut answers) = self.route()?;
        let sent = self.send(id, &request).await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(REQUEST_TIMEOUT, answers.recv())
                .await
                .map_err(|_| AgentError::Timeout(REQUEST_TIMEOUT))
                .and_then(|a| a.ok_or(AgentError::Closed)),
            Err(e) => Err(e),
        };
        self.forget(id);
        match answer? {
            Message::Error { message, .. } => Err(AgentError::Refused(message)),
            other => Ok(other),
        }
    }

    /// Starts `exec` as a new session: returns once the agent says it
    /// started (or why not), within [`REQUEST_TIMEOUT`].
    pub async fn exec(self: &Arc<Self>, exec: proto::Exec) -> Result<Session, AgentError> {
        let (id, messages) = self.route()?;
        if let Err(e) = self.send(id, &Message::Exec(exec)).await {
            self.forget(id);
            return Err(e);
        }
        // Dropped on any failure below, the session kills what it started.
        let mut session = Session::new(self.clone(), id, messages);
        let first = tokio::time::timeout(REQUEST_TIMEOUT, session.next())
            .await
            .map_err(|_| AgentError::Timeout(REQUEST_TIMEOUT))?;
        match first.ok_or(AgentError::Closed)? {
            Message::Started { .. } => Ok(session),
            Message::Error { message, .. } => Err(AgentError::Refused(message)),
            other => Err(AgentError::Unexpected(super::kind_name(&other))),
        }
    }

    /// Queues `message` under frame id `id`.
    pub(super) async fn send(&self, id: u32, message: &Message) -> Result<(), AgentError> {
        let mut frame = Vec::new();
        message
            .encode(id, &mut frame)
            .map_err(|_| AgentError::Unexpected("a frame over the limit"))?;
        self.out.send(frame).await.map_err(|_| AgentError::Closed)
    }

    /// Queues `message` without waiting (for a session being dropped).
    pub(super) fn send_now(&self, id: u32, message: &Message) {
        let mut frame = Vec::new();
        if message.encode(id, &mut frame).is_ok() {
            let _ = self.out.try_send(frame);
        }
    }

    /// A fresh id and the channel its frames arrive on.
    fn route(&self) -> Result<(u32, Inbox), AgentError> {
        if self.is_closed() {
            return Err(AgentError::Closed);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let inbox = Inbox {
            rx,
            queued: queued.clone(),
        };
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if routes.len() >= proto::MAX_SESSIONS {
            return Err(AgentError::Refused("too many sessions at once".into()));
        }
        let id = loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 && !routes.contains_key(&id) {
                break id;
            }
        };
        routes.insert(id, Route { tx, queued });
        Ok((id, inbox))
    }

    /// Stops routing frames of `id`.
    pub(super) fn forget(&self, id: u32) {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// Reads frames until the connection ends, routing each by its id.
async fn read_frames(
    mut reader: tokio::net::unix::OwnedReadHalf,
    routes: Routes,
    out: mpsc::Sender<Vec<u8>>,
    hello: watch::Sender<Option<HelloReply>>,
    closed: watch::Sender<bool>,
) {
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    'read: loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut data = &buf[..n];
        while !data.is_empty() {
            let taken = decoder.feed(data);
            data = &data[taken..];
            while let Some(frame) = decoder.next_frame() {
                let message = match Message::decode(&frame) {
                    Ok(message) => message,
                    Err(e) => {
                        tracing::debug!(kind = frame.kind, error = ?e, "undecodable frame from the agent");
                        continue;
                    }
                };
                if frame.id == 0 {
                    if let Message::HelloReply(reply) = message {
                        hello.send_replace(Some(reply));
                    }
                    continue;
                }
                let route = routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&frame.id)
                    .cloned();
                let Some(route) = route else {
                    continue;
                };
                let cost = cost(&message);
                let queued = route.queued.fetch_add(cost, Ordering::Relaxed) + cost;
                let flooded = queued > ROUTE_BYTES;
                if !flooded {
                    let _ = route.tx.send(message);
                } else {
                    // Beyond its window: a hostile or broken agent. The
                    // session ends here rather than growing the daemon.
                    tracing::warn!(
                        id = frame.id,
                        "the guest agent flooded a session; ending it"
                    );
                    routes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&frame.id);
                    let mut kill = Vec::new();
                    if Message::Signal(9).encode(frame.id, &mut kill).is_ok() {
                        let _ = out.try_send(kill);
                    }
                }
                if out.is_closed() {
                    break 'read;
                }
            }
        }
    }
    closed.send_replace(true);
    // Dropping the routes ends every session's stream.
    routes.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// Firecracker's answer to `CONNECT <port>`: `OK <host port>\n`. Read a
/// byte at a time: what follows the line is the agent's. A booting guest
/// takes the request only once its vsock driver runs: wait for it (up to
/// `within`) rather than leave a request behind that the guest would take
/// later, in place of the connection that replaced it.
async fn vsock_answer(stream: &mut UnixStream, within: Duration) -> Result<(), AgentError> {
    let read_line = async {
        let mut line = Vec::new();
        while line.len() < 64 {
            let byte = stream.read_u8().await?;
            if byte == b'\n' {
                break;
            }
            line.push(byte);
        }
        Ok::<Vec<u8>, std::io::Error>(line)
    };
    match tokio::time::timeout(within, read_line).await {
        Ok(Ok(line)) if line.starts_with(b"OK ") => Ok(()),
        Ok(Ok(line)) => Err(AgentError::Handshake(format!(
            "answered {:?} (is the agent listening on vsock port {}?)",
            String::from_utf8_lossy(&line),
            proto::VSOCK_PORT
        ))),
        Ok(Err(e)) => Err(AgentError::Handshake(e.to_string())),
        Err(_) => Err(AgentError::Timeout(within)),
    }
}

/// A hello nonce no earlier conversation used: never 0 (the agent's own).
fn nonce() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_nanos() as u64) | 1
}
