//! Published ports, the one way into a guest from outside the host: while
//! a VM runs, the daemon listens on each of its host addresses and ports
//! and relays every TCP connection, and every UDP exchange, to the guest.
//! The ports are recorded with the VM, so they come back with every start
//! and daemon restart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::model::{PortSpec, Proto};

use super::{Network, NetworkError};

/// A published port being served, and the task listening on it.
pub(crate) type OpenPort = (PortSpec, tokio::task::JoinHandle<()>);

/// At most this many TCP connections are relayed at once per published
/// port; more wait in the kernel's accept queue, costing the daemon nothing.
const TCP_MAX_PER_PORT: usize = 256;
/// How long the guest gets to accept a relayed connection.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A relayed connection with no byte either way for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(600);
/// How often an idle connection is looked at.
const TCP_IDLE_CHECK: Duration = Duration::from_secs(5);
/// Accept errors (out of descriptors, say) back off from this to the max,
/// so a failing listener never spins a core.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// The daemon's budget of relayed TCP connections over all ports: each
/// holds two descriptors, and the daemon keeps a reserve of descriptors
/// for its API, DNS and VMM starts whatever clients do.
pub fn tcp_relay_budget(open_files_limit: u64) -> usize {
    const RESERVE: u64 = 512;
    (open_files_limit.saturating_sub(RESERVE) / 2).clamp(16, 4096) as usize
}

impl Network {
    /// Checks that every port in `ports` is free on the host now.
    pub async fn check_ports_free(&self, ports: &[PortSpec]) -> Result<(), NetworkError> {
        for port in ports {
            drop(bind(port).await?);
        }
        Ok(())
    }

    /// Starts publishing `port` of running VM `name` (it is free: checked
    /// by binding it before it was recorded).
    pub async fn open_port(&self, name: &str, port: PortSpec) -> Result<(), NetworkError> {
        let listener = bind(&port).await?;
        self.serve_port(name, port, listener);
        Ok(())
    }

    /// Stops publishing `port` of VM `name`.
    pub fn close_port(&self, name: &str, port: &PortSpec) {
        let mut open = self.open_ports.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ports) = open.get_mut(name) {
            ports.retain(|(p, task)| {
                let keep = p != port;
                if !keep {
                    task.abort();
                }
                keep
            });
        }
    }

    /// Listens on every port VM `name` publishes (it just started running).
    pub async fn open_vm_ports(&self, name: &str) -> Result<(), NetworkError> {
        self.close_vm_ports(name);
        let ports = self.store.lock().ports_of(name)?;
        for port in ports {
            let listener = bind(&port).await?;
            self.serve_port(name, port, listener);
        }
        Ok(())
    }

    /// Stops listening on VM `name`'s ports (it stopped or is going away).
    pub fn close_vm_ports(&self, name: &str) {
        let mut open = self.open_ports.lock().unwrap_or_else(|p| p.into_inner());
        for (_, task) in open.remove(name).unwrap_or_default() {
            task.abort();
        }
    }

    fn serve_port(&self, name: &str, port: PortSpec, listener: Listener) {
        let Some(guest) = self.store.lock().get_vm(name).ok().and_then(|vm| vm.ip()) else {
            return;
        };
        let target = SocketAddr::from((guest, port.guest_port));
        let task = match listener {
            Listener::Tcp(listener) => {
                tokio::spawn(relay_tcp(listener, target, self.tcp_relays.clone()))
            }
            Listener::Udp(socket) => tokio::spawn(relay_udp(Arc::new(socket), target)),
        };
        self.open_ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .push((port, task));
    }
}

/// A bound host port.
enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Listens on `port`'s host address and port; taken is a clear error.
async fn bind(port: &PortSpec) -> Result<Listener, NetworkError> {
    let at = (port.host_addr, port.host_port);
    let bound = match port.proto {
        Proto::Tcp => TcpListener::bind(at).await.map(Listener::Tcp),
        Proto::Udp => UdpSocket::bind(at).await.map(Listener::Udp),
    };
    bound.map_err(|e| {
        let at = format!("{}:{}/{}", port.host_addr, port.host_port, port.proto.as_str());
        let ss = match port.proto {
            Proto::Tcp => "ss -ltnp",
            Proto::Udp => "ss -lunp",
        };
        NetworkError::Port(match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "host port {at} is already in use on this host; pick another (`{ss}` shows what holds it)"
            ),
            _ => format!("cannot listen on {at} for {port}: {e}"),
        })
    })
}

/// Relays each connection to `listener` to `target`, both ways: at most
/// [`TCP_MAX_PER_PORT`] at once, and none beyond the daemon's `budget`
/// (those are closed at once); each closed when the guest does not accept
/// it in time or when it stays idle.
async fn relay_tcp(listener: TcpListener, target: SocketAddr, budget: Arc<Semaphore>) {
    let per_port = Arc::new(Semaphore::new(TCP_MAX_PER_PORT));
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let Ok(slot) = per_port.clone().acquire_owned().await else {
            return;
        };
        let client = match listener.accept().await {
            Ok((client, _)) => {
                backoff = ACCEPT_BACKOFF.0;
                client
            }
            Err(e) => {
                if backoff == ACCEPT_BACKOFF.0 {
                    tracing::warn!(%target, error = %e, "cannot accept on a published port; backing off");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        let Ok(share) = budget.clone().try_acquire_owned() else {
            tracing::debug!(%target, "relay budget spent; connection refused");
            continue;
        };
        tokio::spawn(async move {
            let _held = (slot, share);
            let Ok(Ok(upstream)) =
                tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(target)).await
            else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            relay_until_idle(client, upstream).await;
        });
    }
}

/// Copies both ways until both sides close, or nothing moves for [`TCP_IDLE`].
async fn relay_until_idle(client: TcpStream, upstream: TcpStream) {
    let clock = tokio::time::Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Watched::new(client, clock, last.clone());
    let mut upstream = Watched::new(upstream, clock, last.clone());
    let idle = async {
        loop {
            tokio::time::sleep(TCP_IDLE_CHECK).await;
            let quiet = clock.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
            if quiet >= TCP_IDLE.as_millis() as u64 {
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        () = idle => {}
    }
}

/// A stream that notes when it last read something (every byte relayed is
/// read first).
struct Watched {
    inner: TcpStream,
    clock: tokio::time::Instant,
    last: Arc<AtomicU64>,
}

impl Watched {
    fn new(inner: TcpStream, clock: tokio::time::Instant, last: Arc<AtomicU64>) -> Watched {
        Watched { inner, clock, last }
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = self.clock.elapsed().as_millis() as u64;
            self.last.store(now, Ordering::Relaxed);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How long a UDP client may be silent before its relay is closed.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// At most this many UDP clients are relayed at once per port; datagrams
/// from more are dropped until one goes idle.
const UDP_MAX_CLIENTS: usize = 256;
/// Each datagram a client sends lets the guest answer it with this many
/// (up to [`UDP_MAX_CREDIT`] banked): a guest, or a client with a forged
/// source address, cannot turn the host into a flood towards anyone.
const UDP_REPLIES_PER_DATAGRAM: u32 = 64;
const UDP_MAX_CREDIT: u32 = 1024;

/// Relays UDP datagrams to `target`: each client (by source address) gets
/// a socket of its own towards the guest, so the guest's replies go back
/// to the client they answer. A client silent for [`UDP_IDLE`] is forgotten.
async fn relay_udp(socket: Arc<UdpSocket>, target: SocketAddr) {
    let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpClient>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((len, client)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let known = clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&client)
            .cloned();
        let relay = match known {
            Some(relay) => relay,
            None => {
                if clients.lock().unwrap_or_else(|p| p.into_inner()).len() >= UDP_MAX_CLIENTS {
                    continue;
                }
                let Ok(upstream) = UdpSocket::bind(("0.0.0.0", 0)).await else {
                    continue;
                };
                if upstream.connect(target).await.is_err() {
                    continue;
                }
                let relay = Arc::new(UdpClient {
                    upstream,
                    last_sent: Mutex::new(Instant::now()),
                    credit: AtomicU32::new(0),
                });
                clients
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(client, relay.clone());
                tokio::spawn(udp_replies(
                    socket.clone(),
                    relay.clone(),
                    client,
                    clients.clone(),
                ));
                relay
            }
        };
        *relay.last_sent.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let _ = relay
            .credit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some((c + UDP_REPLIES_PER_DATAGRAM).min(UDP_MAX_CREDIT))
            });
        let _ = relay.upstream.send(&buf[..len]).await;
    }
}

/// One UDP client's way to the guest.
struct UdpClient {
    /// Connected to the guest's port.
    upstream: UdpSocket,
    /// When the client last sent something.
    last_sent: Mutex<Instant>,
    /// How many more datagrams the guest may send the client.
    credit: AtomicU32,
}

/// Sends the guest's replies back to `client`, within its credit, until
/// the client has been silent for [`UDP_IDLE`] (whatever the guest sends),
/// then forgets the client.
async fn udp_replies(
    socket: Arc<UdpSocket>,
    relay: Arc<UdpClient>,
    client: SocketAddr,
    clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpClient>>>>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let silent = relay
            .last_sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        let Some(left) = UDP_IDLE.checked_sub(silent).filter(|d| !d.is_zero()) else {
            break;
        };
        if let Ok(Ok(len)) = tokio::time::timeout(left, relay.upstream.recv(&mut buf)).await {
            let paid = relay
                .credit
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1))
                .is_ok();
            if paid {
                let _ = socket.send_to(&buf[..len], client).await;
            }
        }
    }
    clients
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&client);
}
