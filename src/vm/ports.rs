//! Published ports, the one way into a guest from outside the host: while
//! a VM runs, the daemon listens on each of its host addresses and ports
//! and relays every TCP connection to the guest. The ports are recorded
//! with the VM, so they come back with every start and daemon restart.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::net::ports::PortSpec;
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

    fn serve_port(self: &Arc<Manager>, name: &str, port: PortSpec, listener: TcpListener) {
        let Some(guest) = self
            .get(name)
            .ok()
            .and_then(|vm| vm.ip?.parse::<std::net::Ipv4Addr>().ok())
        else {
            return;
        };
        let target = SocketAddr::from((guest, port.guest_port));
        let task = tokio::spawn(async move {
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
        });
        self.open_ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .push((port, task));
    }
}

/// Listens on `port`'s host address and port; taken is a clear error.
async fn bind(port: &PortSpec) -> Result<TcpListener, VmError> {
    TcpListener::bind((port.host_addr, port.host_port))
        .await
        .map_err(|e| {
            let at = format!("{}:{}", port.host_addr, port.host_port);
            VmError::BadRequest(match e.kind() {
                std::io::ErrorKind::AddrInUse => format!(
                    "host port {at} is already in use on this host; pick another (`ss -ltnp` shows what holds it)"
                ),
                _ => format!("cannot listen on {at} for {port}: {e}"),
            })
        })
}
