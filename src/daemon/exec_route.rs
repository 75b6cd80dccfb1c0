//! `POST /v1/vms/{name}/exec`: the client's connection is upgraded to a
//! stream of agent frames ([`crate::agent::proto`]) and relayed to an exec
//! session on the VM's agent. The client speaks for one session (frame id
//! 1): an `Exec` first, then only stdin, end of stdin, resize, signal and
//! output credit; it hears `Started`, output, stdin credit and `Exited` or
//! `Error`. The client hanging up kills the program's process group.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Daemon;
use super::error::ApiError;
use super::extract::VmName;
use crate::agent::proto::{self, Decoder, Message, kind};
use crate::agent::{Agent, Session, SessionSender};

use crate::rpc::api::{EXEC_PROTOCOL, EXEC_SESSION as SESSION};

pub async fn exec(
    State(daemon): State<Arc<Daemon>>,
    VmName(name): VmName,
    request: Request,
) -> Result<Response, ApiError> {
    // Errors before the switch are ordinary answers: reach the agent first.
    let agent = daemon.vms.agent(&name).await?;
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => relay(TokioIo::new(upgraded), agent).await,
            Err(e) => tracing::debug!(vm = %name, error = %e, "exec upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, EXEC_PROTOCOL)
        .body(Body::empty())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, &e))
}

/// Relays one client's session until the program ends or the client goes.
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(stream: S, agent: Arc<Agent>) {
    let (mut from_client, mut to_client) = tokio::io::split(stream);
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<Message> = Vec::new();
    // The first frame opens the session.
    let exec = loop {
        if let Some(message) = pending.pop() {
            match message {
                Message::Exec(exec) => break exec,
                _ => return refuse(&mut to_client, "the first frame must be an exec").await,
            }
        }
        match read_messages(&mut from_client, &mut decoder, &mut buf).await {
            Some(mut messages) => {
                messages.reverse();
                pending = messages;
            }
            None => return,
        }
    };
    let mut session: Session = match agent.exec(exec).await {
        Ok(session) => session,
        Err(e) => return refuse(&mut to_client, &e.to_string()).await,
    };
    // Each direction runs on its own, so neither side's writes can wait
    // on the other's reads.
    let sender = session.sender();
    let upstream = async move {
        // Whatever came with the exec frame, then the rest.
        for message in pending.into_iter().rev() {
            if forward(&sender, message).await.is_err() {
                return;
            }
        }
        while let Some(messages) = read_messages(&mut from_client, &mut decoder, &mut buf).await {
            for message in messages {
                if forward(&sender, message).await.is_err() {
                    return;
                }
            }
        }
    };
    let downstream = async {
        loop {
            let Some(message) = session.next().await else {
                let _ = refuse(&mut to_client, "the connection to the guest agent closed").await;
                return;
            };
            let last = matches!(message, Message::Exited { .. } | Message::Error { .. });
            if write(&mut to_client, &message).await.is_err() || last {
                let _ = to_client.shutdown().await;
                return;
            }
        }
    };
    tokio::select! {
        // The client went away (or broke the protocol): dropping the
        // session kills the program's process group.
        () = upstream => {}
        () = downstream => {}
    }
}

/// Passes one client message on to the session: only what a client of a
/// running session may say.
async fn forward(session: &SessionSender, message: Message) -> Result<(), ()> {
    let allowed = matches!(
        message.kind(),
        kind::STDIN | kind::STDIN_EOF | kind::RESIZE | kind::SIGNAL | kind::OUTPUT_CREDIT
    );
    if !allowed {
        return Err(());
    }
    session.send(&message).await.map_err(drop)
}

/// The next messages of the client's session; `None` when it hung up or
/// sent what is no session message of its own.
async fn read_messages<R: AsyncRead + Unpin>(
    reader: &mut R,
    decoder: &mut Decoder,
    buf: &mut [u8],
) -> Option<Vec<Message>> {
    loop {
        let n = reader.read(buf).await.ok().filter(|n| *n > 0)?;
        let mut data = &buf[..n];
        let mut messages = Vec::new();
        while !data.is_empty() {
            let taken = decoder.feed(data);
            data = &data[taken..];
            while let Some(frame) = decoder.next_frame() {
                if frame.id != SESSION {
                    return None;
                }
                messages.push(Message::decode(&frame).ok()?);
            }
        }
        if !messages.is_empty() {
            return Some(messages);
        }
    }
}

async fn write<W: AsyncWrite + Unpin>(writer: &mut W, message: &Message) -> std::io::Result<()> {
    let mut frame = Vec::new();
    message
        .encode(SESSION, &mut frame)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    writer.write_all(&frame).await
}

/// Ends the client's stream with an error it can show.
async fn refuse<W: AsyncWrite + Unpin>(writer: &mut W, why: &str) {
    let error = Message::Error {
        code: proto::ErrorCode::Failed,
        message: why.to_string(),
    };
    let _ = write(writer, &error).await;
    let _ = writer.shutdown().await;
}
