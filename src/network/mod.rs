//! The host network service: the bridge (refused when its subnet clashes
//! with a host route), the taps, the NAT and guard tables kept equal to the
//! running VMs, the `.vm` DNS listener on the bridge address, published-port
//! relays ([`ports`]) and cleanup. One value, owned beside `vm::Manager`.

mod error;
mod ports;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::dns;
use crate::grant::netadmin::NetAdmin;
use crate::grant::{GuestList, Policy};
use crate::net::{Subnet, nat};
use crate::paths::Paths;
use crate::rpc::api::{LeaseStatus, NetworkCleanup, NetworkStatus};
use crate::store::SharedStore;
use crate::system::net;

pub use error::NetworkError;
pub use ports::tcp_relay_budget;

/// The host's network as banger's VMs use it.
pub struct Network {
    config: crate::config::NetworkConfig,
    config_file: PathBuf,
    database: PathBuf,
    store: SharedStore,
    subnet: Subnet,
    /// Makes every change to the host network, within the user's grant.
    netadmin: NetAdmin,
    /// The `.vm` DNS server, once the bridge is up; or why there is none.
    dns: tokio::sync::Mutex<Result<DnsListener, String>>,
    /// Serializes changes to the bridge, the taps and the NAT table.
    lock: tokio::sync::Mutex<()>,
    /// The listeners of published ports, per running VM.
    open_ports: Mutex<HashMap<String, Vec<ports::OpenPort>>>,
    /// Relayed TCP connections the daemon's descriptors allow, all ports together.
    tcp_relays: Arc<tokio::sync::Semaphore>,
}

/// Why there is no DNS listener before the bridge first comes up.
const NO_DNS_YET: &str = "not started: it starts with the first VM";

/// The running DNS listener.
struct DnsListener {
    addr: SocketAddr,
    server: dns::ServerThread,
}

/// What a DNS client at `ip` may ask: the host (loopback, the bridge
/// address) and VMs with NAT everything; a `--no-nat` VM, or an address of
/// the subnet no VM holds, `.vm` names only; anyone else nothing. `nat_of`
/// says whether the VM at an address has NAT, `None` when none has it.
fn dns_reach(
    ip: std::net::IpAddr,
    subnet: &crate::net::Subnet,
    gateway: Ipv4Addr,
    nat_of: impl Fn(Ipv4Addr) -> Option<bool>,
) -> dns::Reach {
    use dns::Reach;
    let std::net::IpAddr::V4(v4) = ip else {
        return if ip.is_loopback() {
            Reach::Everything
        } else {
            Reach::Nothing
        };
    };
    if v4.is_loopback() || v4 == gateway {
        Reach::Everything
    } else if !subnet.contains(v4) {
        Reach::Nothing
    } else if nat_of(v4) == Some(true) {
        Reach::Everything
    } else {
        Reach::VmNames
    }
}

impl Network {
    pub fn new(
        config: &Config,
        paths: &Paths,
        store: SharedStore,
    ) -> Result<Network, NetworkError> {
        let in_config =
            |e: String| NetworkError::Config(format!("{e} (in {})", paths.config_file().display()));
        let subnet: Subnet = config
            .network
            .subnet
            .parse()
            .map_err(|e: crate::net::NetError| in_config(e.to_string()))?;
        let policy = Policy::new(
            &config.network.bridge,
            &config.network.subnet,
            &config.network.nat_table,
        )
        .map_err(|e| in_config(e.to_string()))?;
        Ok(Network {
            config: config.network.clone(),
            config_file: paths.config_file(),
            database: paths.database(),
            store,
            subnet,
            netadmin: NetAdmin::new(policy, config.helper.as_deref()),
            dns: tokio::sync::Mutex::new(Err(NO_DNS_YET.to_string())),
            lock: tokio::sync::Mutex::new(()),
            open_ports: Mutex::new(HashMap::new()),
            tcp_relays: Arc::new(tokio::sync::Semaphore::new(tcp_relay_budget(
                crate::system::proc::open_files_limit(),
            ))),
        })
    }

    /// The VMs' subnet.
    pub fn subnet(&self) -> &Subnet {
        &self.subnet
    }

    /// Who changes the host network (taps are made and removed through it).
    pub fn netadmin(&self) -> &NetAdmin {
        &self.netadmin
    }

    /// Makes VM `tap` for `owner`.
    pub async fn tap_add(&self, tap: &str, owner: u32) -> Result<(), NetworkError> {
        self.netadmin
            .tap_add(tap, owner)
            .await
            .map_err(NetworkError::host(tap))
    }

    /// Renames VM tap `from` to `to` (a running VM's new lease).
    pub async fn tap_rename(&self, from: &str, to: &str) -> Result<(), NetworkError> {
        self.netadmin
            .tap_rename(from, to)
            .await
            .map_err(NetworkError::host(from))
    }

    /// Removes VM `tap`.
    pub async fn tap_del(&self, tap: &str) -> Result<(), NetworkError> {
        self.netadmin
            .tap_del(tap)
            .await
            .map_err(NetworkError::host(tap))
    }

    /// Brings the bridge up (after checking its subnet is free). The caller
    /// holds the network lock (`_net`) and keeps it until the tap it is
    /// about to make is accounted for by its VM's state, so `network
    /// cleanup` never removes a bridge or tap a starting VM relies on.
    pub async fn ensure_bridge(
        &self,
        _net: &tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<(), NetworkError> {
        let bridge = &self.config.bridge;
        if !net::link_exists(bridge) {
            let routes = net::routes().map_err(NetworkError::io("/proc/thread-self/net/route"))?;
            if let Some(route) = nat::clashing_route(&routes, &self.subnet, bridge) {
                return Err(NetworkError::Config(format!(
                    "the VM subnet {} clashes with the host route {}/{} on {}; set `network.subnet` in {} to a free range",
                    self.subnet.cidr(),
                    route.destination,
                    route.prefix,
                    route.iface,
                    self.config_file.display()
                )));
            }
        }
        self.netadmin
            .bridge_up()
            .await
            .map_err(NetworkError::host(bridge))?;
        Ok(())
    }

    /// The lock serializing changes to the bridge, taps and the NAT table.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// Starts the DNS listener on the bridge address if it is not running.
    /// A failure is logged, not fatal: VMs work without names.
    pub async fn ensure_dns(&self) {
        let mut dns = self.dns.lock().await;
        if dns.as_ref().is_ok_and(|d| d.server.is_running()) {
            return;
        }
        let addr = SocketAddr::from((self.subnet.gateway, 53));
        let socket = self.netadmin.dns_socket().await;
        let started = (|| {
            let socket = socket.map_err(|e| {
                format!(
                    "cannot listen on {addr}: {}",
                    crate::system::host::error_chain(&e)
                )
            })?;
            // A connection of its own, read-only: in WAL mode it reads while
            // the daemon commits, so a lookup never waits for an fsync.
            let reader = Arc::new(std::sync::Mutex::new(
                crate::store::Store::open_reader(&self.database)
                    .map_err(|e| format!("cannot read the state database: {e}"))?,
            ));
            let names = reader.clone();
            let lookup: dns::Lookup = Arc::new(move |name: &str| {
                let vm = names.lock().ok()?.get_vm(name).ok()?;
                vm.ip()
            });
            let (subnet, gateway) = (self.subnet, self.subnet.gateway);
            let access: dns::Access = Arc::new(move |ip: std::net::IpAddr| {
                dns_reach(ip, &subnet, gateway, |ip| {
                    reader.lock().ok()?.vm_by_ip(ip).ok().map(|vm| vm.nat)
                })
            });
            let upstreams = self.dns_upstreams();
            tracing::info!(%addr, ?upstreams, "serving .vm DNS");
            dns::ServerThread::spawn(socket, lookup, access, upstreams)
                .map_err(|e| format!("cannot start the DNS thread: {e}"))
        })();
        match started {
            Ok(server) => *dns = Ok(DnsListener { addr, server }),
            Err(why) => {
                tracing::warn!(%addr, error = %why, "cannot serve .vm DNS (VMs still work, by address)");
                *dns = Err(why);
                return;
            }
        }
        drop(dns);
        if let Err(e) = self.netadmin.resolved().await {
            tracing::info!(error = %e, "systemd-resolved not told about .vm (see `banger doctor`)");
        }
    }

    /// Configured upstreams, else the host's resolvers (never ourselves).
    fn dns_upstreams(&self) -> Vec<SocketAddr> {
        match &self.config.dns_upstreams {
            Some(list) => list
                .iter()
                .filter_map(|s| {
                    s.parse::<SocketAddr>().ok().or_else(|| {
                        s.parse::<std::net::IpAddr>()
                            .ok()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                })
                .collect(),
            None => {
                let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
                dns::upstreams_from_resolv_conf(&text, self.subnet.gateway)
            }
        }
    }

    /// Makes banger's nftables table match the running VMs: created with
    /// the first, removed with the last.
    pub async fn sync_nat(&self) -> Result<(), NetworkError> {
        let held = self.lock.lock().await;
        self.sync_nat_held(&held).await
    }

    /// [`Network::sync_nat`] with the network lock held by the caller.
    pub async fn sync_nat_held(
        &self,
        _net: &tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<(), NetworkError> {
        let vms = self.store.lock().list_vms()?;
        let running: Vec<_> = vms.iter().filter(|vm| vm.state.can_stop()).collect();
        if running.is_empty() {
            return self
                .netadmin
                .nft_delete()
                .await
                .map_err(NetworkError::host("nftables"));
        }
        let guests = GuestList {
            nat_sources: running
                .iter()
                .filter(|vm| vm.nat)
                .filter_map(|vm| vm.ip())
                .collect(),
            guests: running.iter().filter_map(|vm| vm.lease.clone()).collect(),
        };
        self.netadmin
            .ip_forward()
            .await
            .map_err(NetworkError::host("ip_forward"))?;
        self.netadmin
            .nft_apply(&guests)
            .await
            .map_err(NetworkError::host("nftables"))?;
        Ok(())
    }

    /// What `banger network status` shows.
    pub async fn status(&self) -> Result<NetworkStatus, NetworkError> {
        let bridge = self.config.bridge.clone();
        let bridge_present = net::link_exists(&bridge);
        let bridge_addresses = if bridge_present {
            net::addresses(&bridge).await.unwrap_or_default()
        } else {
            Vec::new()
        };
        let nat_table = self.netadmin.nft_list().await.ok().flatten();
        let (dns_listen, dns_problem) = match &*self.dns.lock().await {
            Ok(d) if d.server.is_running() => (Some(d.addr.to_string()), None),
            Ok(d) => (
                None,
                Some(format!(
                    "the listener on {} stopped; see the daemon log",
                    d.addr
                )),
            ),
            Err(why) => (None, Some(why.clone())),
        };
        let leases = self
            .store
            .lock()
            .list_vms()?
            .into_iter()
            .filter_map(|vm| {
                let lease = vm.lease?;
                Some(LeaseStatus {
                    tap_present: net::link_exists(lease.tap.as_str()),
                    vm: vm.name,
                    state: vm.state,
                    ip: lease.ip,
                    mac: lease.mac,
                    tap: lease.tap,
                    nat: vm.nat,
                })
            })
            .collect();
        Ok(NetworkStatus {
            bridge,
            bridge_present,
            bridge_addresses,
            subnet: self.subnet.to_string(),
            nat_table,
            dns_listen,
            dns_problem,
            dns_upstreams: self
                .dns_upstreams()
                .iter()
                .map(ToString::to_string)
                .collect(),
            leases,
        })
    }

    /// Removes banger's host networking that no running VM needs: taps of
    /// stopped VMs and, when nothing runs, the NAT table, the DNS listener
    /// and the bridge. Leases stay with their VMs.
    ///
    /// The network lock is held throughout, so a VM starting meanwhile
    /// either finds everything gone and makes it again, or has its tap
    /// recorded as needed before cleanup looks.
    pub async fn cleanup(&self) -> Result<NetworkCleanup, NetworkError> {
        let held = self.lock.lock().await;
        let mut removed = Vec::new();
        let vms = self.store.lock().list_vms()?;
        for vm in &vms {
            if let Some(tap) = vm
                .tap()
                .filter(|t| !vm.state.can_stop() && net::link_exists(t))
            {
                self.netadmin
                    .tap_del(tap)
                    .await
                    .map_err(NetworkError::host(tap))?;
                removed.push(format!("tap {tap}"));
            }
        }
        // Anything with a VMM (running, starting or stopping) keeps the
        // bridge, the table and the listener; the table is re-synced.
        if vms.iter().any(|vm| vm.state.can_stop()) {
            self.sync_nat_held(&held).await?;
            return Ok(NetworkCleanup { removed });
        }
        let table = &self.config.nat_table;
        if self
            .netadmin
            .nft_list()
            .await
            .map_err(NetworkError::host("nftables"))?
            .is_some()
        {
            removed.push(format!(
                "nftables tables {} {table} and {} {table}",
                nat::FAMILY,
                nat::GUARD_FAMILY
            ));
        }
        self.netadmin
            .nft_delete()
            .await
            .map_err(NetworkError::host("nftables"))?;
        let mut dns = self.dns.lock().await;
        if let Ok(listener) = &mut *dns {
            listener.server.stop();
            removed.push(format!("DNS listener {}", listener.addr));
        }
        *dns = Err(NO_DNS_YET.to_string());
        drop(dns);
        let bridge = &self.config.bridge;
        if net::link_exists(bridge) {
            self.netadmin
                .bridge_down()
                .await
                .map_err(NetworkError::host(bridge))?;
            removed.push(format!("bridge {bridge}"));
        }
        Ok(NetworkCleanup { removed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Reach;

    #[test]
    fn dns_answers_by_who_asks() {
        let subnet: crate::net::Subnet = "10.0.0.1/24".parse().unwrap();
        let gateway = subnet.gateway;
        let nat = |ip: Ipv4Addr| match ip.octets()[3] {
            2 => Some(true),
            3 => Some(false),
            _ => None,
        };
        let reach = |ip: &str| dns_reach(ip.parse().unwrap(), &subnet, gateway, nat);
        assert_eq!(reach("127.0.0.1"), Reach::Everything);
        assert_eq!(reach("::1"), Reach::Everything);
        assert_eq!(reach("10.0.0.1"), Reach::Everything, "the host");
        assert_eq!(reach("10.0.0.2"), Reach::Everything, "a VM with NAT");
        assert_eq!(reach("10.0.0.3"), Reach::VmNames, "a --no-nat VM");
        assert_eq!(reach("10.0.0.9"), Reach::VmNames, "no VM has it");
        assert_eq!(reach("192.168.1.5"), Reach::Nothing, "a LAN host");
        assert_eq!(reach("2001:db8::1"), Reach::Nothing);
    }
}
