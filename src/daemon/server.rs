//! The accept loop: each connection is served by hyper's HTTP/1.1 server in
//! a task of its own, with a time limit on request headers so that a slow,
//! silent or half-sent client cannot hold a connection forever.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

use super::socket::Peer;

/// How long a client may take to send a request's headers, or to begin
/// its next request on a kept-alive connection; then the connection is
/// closed. (A body has [`super::extract::BODY_TIMEOUT`].)
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop` completes, then lets the
/// requests in flight finish.
pub async fn serve(
    listener: UnixListener,
    app: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (closing_tx, closing) = watch::channel(false);
    // Every connection task holds a sender: once all are gone, `recv` ends.
    let (open_tx, mut open) = mpsc::channel::<()>(1);
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let peer = Peer::of(&stream);
        tokio::spawn(connection(
            stream,
            peer,
            app.clone(),
            closing.clone(),
            open_tx.clone(),
        ));
    }
    drop(listener);
    let _ = closing_tx.send(true);
    drop(open_tx);
    let _ = open.recv().await;
    Ok(())
}

/// Serves one connection until the client is done with it, it times out,
/// or the daemon stops (then the request in flight is finished first).
async fn connection(
    stream: UnixStream,
    peer: Peer,
    app: Router,
    mut closing: watch::Receiver<bool>,
    _open: mpsc::Sender<()>,
) {
    let app = TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        app.call(request)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = closing.wait_for(|c| *c), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
