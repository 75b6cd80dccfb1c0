//! Published ports, the one way into a guest from outside the host: while
//! a VM runs, the daemon listens on each of its host addresses and ports
//! and relays every TCP connection, and every UDP exchange, to the guest.
//! The ports are recorded with the VM, so they come back with every start
//! and daemon restart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::net::ports::{PortSpec, Proto};
use crate::rpc::api::VmDetails;
use crate::store::VmRole;

use super::{Guards, Manager, VmError};

/// A published port being served, and the task listening on it.
pub(crate) type OpenPort = (PortSpec, tokio::task::JoinHandle<()>);

impl Manager {
    /// Publishes `spec` for VM `name`; at once if it runs, else from its
    /// next start.
    pub async fn publish(
        self: &Arc<Manager>,
        name: &str,
        spec: &str,
    ) -> Result<VmDetails, VmError> {
        let port: PortSpec = spec.parse().map_err(VmError::BadRequest)?;
        let _held = self.operation(name).await;
        let vm = self.get(name)?;
        if vm.role != VmRole::Vm {
            return Err(VmError::BadRequest(format!(
                "`{name}` is not a VM of yours"
            )));
        }
        if self.store.lock().ports_of(name)?.contains(&port) {
            return Ok(self.details(&vm));
        }
        // Taken on the host (by anyone) is an error before anything is recorded.
        let listener = bind(&port).await?;
        self.store.lock().add_port(name, &port)?;
        if vm.state.can_stop() {
            self.serve_port(name, port, listener);
        }
        tracing::info!(vm = name, %port, "published");
        Ok(self.details(&self.get(name)?))
    }

    /// Stops publishing `spec` for VM `name`.
    pub async fn unpublish(
        self: &Arc<Manager>,
        name: &str,
        spec: &str,
    ) -> Result<VmDetails, VmError> {
        let port: PortSpec = spec.parse().map_err(VmError::BadRequest)?;
        let _held = self.operation(name).await;
        if !self.store.lock().remove_port(name, &port)? {
            return Err(VmError::BadRequest(format!(
                "VM `{name}` does not publish {port}"
            )));
        }
        let mut open = self.open_ports.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ports) = open.get_mut(name) {
            ports.retain(|(p, task)| {
                let keep = *p != port;
                if !keep {
                    task.abort();
                }
                keep
            });
        }
        drop(open);
        Ok(self.details(&self.get(name)?))
    }

    /// Checks that every port in `ports` is free on the host now.
    pub(crate) async fn check_ports_free(&self, ports: &[PortSpec]) -> Result<(), VmError> {
        for port in ports {
            drop(bind(port).await?);
        }
        Ok(())
    }

    /// Listens on every port VM `name` publishes (it just started running).
    pub(crate) async fn open_vm_ports(self: &Arc<Manager>, name: &str) -> Result<(), VmError> {
        self.close_vm_ports(name);
        let ports = self.store.lock().ports_of(name)?;
        for port in ports {
            let listener = bind(&port).await?;
            self.serve_port(name, port, listener);
        }
        Ok(())
    }

    /// Stops listening on VM `name`'s ports (it stopped or is going away).
    pub(crate) fn close_vm_ports(&self, name: &str) {
        let mut open = self.open_ports.lock().unwrap_or_else(|p| p.into_inner());
        for (_, task) in open.remove(name).unwrap_or_default() {
            task.abort();
        }
    }

    fn serve_port(self: &Arc<Manager>, name: &str, port: PortSpec, listener: Listener) {
        let Some(guest) = self
            .get(name)
            .ok()
            .and_then(|vm| vm.ip?.parse::<std::net::Ipv4Addr>().ok())
        else {
            return;
        };
        let target = SocketAddr::from((guest, port.guest_port));
        let task = match listener {
            Listener::Tcp(listener) => tokio::spawn(relay_tcp(listener, target)),
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
async fn bind(port: &PortSpec) -> Result<Listener, VmError> {
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
        VmError::BadRequest(match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "host port {at} is already in use on this host; pick another (`{ss}` shows what holds it)"
            ),
            _ => format!("cannot listen on {at} for {port}: {e}"),
        })
    })
}

/// Relays each connection to `listener` to `target`, both ways.
async fn relay_tcp(listener: TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut upstream) = TcpStream::connect(target).await {
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
    }
}

/// How long a UDP client may be silent before its relay is closed.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// At most this many UDP clients are relayed at once per port; datagrams
/// from more are dropped until one goes idle.
const UDP_MAX_CLIENTS: usize = 256;

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
        let _ = relay.upstream.send(&buf[..len]).await;
    }
}

/// One UDP client's way to the guest.
struct UdpClient {
    /// Connected to the guest's port.
    upstream: UdpSocket,
    /// When the client last sent something.
    last_sent: Mutex<Instant>,
}

/// Sends the guest's replies back to `client` until neither side has said
/// anything for [`UDP_IDLE`], then forgets the client.
async fn udp_replies(
    socket: Arc<UdpSocket>,
    relay: Arc<UdpClient>,
    client: SocketAddr,
    clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpClient>>>>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        match tokio::time::timeout(UDP_IDLE, relay.upstream.recv(&mut buf)).await {
            Ok(Ok(len)) => {
                let _ = socket.send_to(&buf[..len], client).await;
            }
            Ok(Err(_)) => {}
            Err(_) => {
                let last = *relay.last_sent.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() >= UDP_IDLE {
                    break;
                }
            }
        }
    }
    clients
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&client);
}
