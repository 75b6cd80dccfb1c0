//! `vm identity`: a running VM given a new identity through its agent: a
//! host name, a new lease (address, MAC and tap), a new SSH host key and
//! machine id. The guest changes first (its agent puts the old network
//! back if it cannot); the host then follows: the tap is renamed, the
//! guard and NAT tables and published ports move to the new address, and
//! banger's known_hosts to the new key. A failure on the host's side asks
//! the guest to take its old identity back.

use std::sync::Arc;

use banger_agent::proto::{self, HostKey, Identity};

use crate::model::Lease;
use crate::rpc::api::{SetIdentity, VmDetails};
use crate::system::ssh;

use super::create::write_known_hosts;
use super::{Manager, VmError};

impl Manager {
    pub async fn set_identity(
        self: &Arc<Manager>,
        name: &str,
        req: &SetIdentity,
    ) -> Result<VmDetails, VmError> {
        let _held = self.operation(name).await;
        let vm = self.get(name)?;
        VmError::check_state(&vm, vm.state.is_running(), "change the identity of")?;
        if let Some(hostname) = &req.hostname {
            crate::net::check_dns_label(hostname)
                .map_err(|why| VmError::BadRequest(format!("hostname `{hostname}` {why}")))?;
        }
        let agent = self.agent(name).await?;
        agent.status().await?;
        let can = agent
            .last_hello()
            .is_some_and(|h| h.features.iter().any(|f| f == "identity"));
        if !can {
            return Err(VmError::NoAgent(
                name.into(),
                "its agent cannot change identities (rebuild the bundle: make runtime-debian)"
                    .into(),
            ));
        }
        let old = vm
            .lease
            .clone()
            .ok_or_else(|| VmError::NoLease(name.into()))?;
        let files = self.files(name);

        // The new lease is taken in the store first: a race for it is lost
        // before anything changed.
        let lease = match req.new_address {
            true => {
                let mut store = self.store.lock();
                let lease = self.free_lease(&store)?;
                store.replace_lease(name, &lease)?;
                lease
            }
            false => old.clone(),
        };
        let new_key = files.scratch.join("ssh_host_ed25519_key");
        let prepared = async {
            let mut identity = Identity {
                hostname: req.hostname.as_ref().map(|h| h.as_bytes().to_vec()),
                machine_id: Some(machine_id().into_bytes()),
                ..Default::default()
            };
            if req.new_address {
                identity.network = Some(self.guest_network(&lease));
            }
            if req.new_host_key {
                let _ = std::fs::remove_file(&new_key);
                let _ = std::fs::remove_file(new_key.with_extension("pub"));
                let public = ssh::generate_key(&new_key, &format!("root@{name}")).await?;
                identity.host_key = Some(HostKey {
                    private: std::fs::read(&new_key).map_err(VmError::io(&new_key))?,
                    public: public.into_bytes(),
                });
            }
            identity
                .validate()
                .map_err(|why| VmError::BadRequest(format!("the new identity {why}")))?;
            Ok::<Identity, VmError>(identity)
        };
        let changed = match prepared.await {
            Ok(identity) => agent
                .request(proto::Message::SetIdentity(identity))
                .await
                .map_err(VmError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = changed {
            if req.new_address {
                let _ = self.store.lock().replace_lease(name, &old);
            }
            return Err(e);
        }

        // The guest has its new identity: the host follows.
        if req.new_address
            && let Err(e) = self.move_lease(name, &old, &lease).await
        {
            tracing::error!(vm = name, error = %e, "cannot move the host side; asking the guest back");
            let back = Identity {
                network: Some(self.guest_network(&old)),
                ..Default::default()
            };
            let _ = agent.request(proto::Message::SetIdentity(back)).await;
            let _ = self.store.lock().replace_lease(name, &old);
            let _ = self.network.sync_nat().await;
            return Err(e);
        }
        let mut host_key = vm.host_key.clone().unwrap_or_default();
        if req.new_host_key {
            for (from, to) in [
                (new_key.clone(), files.host_key.clone()),
                (
                    new_key.with_extension("pub"),
                    files.host_key.with_extension("pub"),
                ),
            ] {
                std::fs::rename(&from, &to).map_err(VmError::io(&to))?;
            }
            host_key = ssh::public_key(&files.host_key)?;
            self.store.lock().set_vm_host_key(name, &host_key)?;
        }
        write_known_hosts(&files, name, lease.ip, &host_key)?;
        // A new key reloads sshd: done means it answers again.
        if req.new_host_key && agent.last_hello().is_some_and(|h| h.sshd_accepting) {
            let within = std::time::Duration::from_secs(15);
            if let Err(e) = super::agent::wait_sshd(&agent, within).await {
                tracing::warn!(vm = name, error = %e, "sshd did not come back after the new host key");
            }
        }
        let what = [
            req.hostname.as_ref().map(|h| format!("host name {h}")),
            req.new_address
                .then(|| format!("address {} (was {})", lease.ip, old.ip)),
            req.new_host_key.then(|| "a new SSH host key".to_string()),
        ];
        let what: Vec<String> = what.into_iter().flatten().collect();
        self.event(name, "identity-changed", &what.join(", "));
        tracing::info!(vm = name, changed = ?what, "identity changed");
        Ok(self.details(&self.get(name)?))
    }

    /// Gives a just-restored guest that woke as another VM (a template, a
    /// fork's source) VM `vm`'s own identity through its agent: its name,
    /// address, MAC, route and resolver, its host key, a fresh machine id,
    /// then fresh entropy and the host's clock; thaws filesystems a fork
    /// froze. Its disks already are its own copies.
    pub(crate) async fn assume_identity(&self, vm: &crate::store::VmRecord) -> Result<(), VmError> {
        let name = &vm.name;
        let lease = vm
            .lease
            .clone()
            .ok_or_else(|| VmError::NoLease(name.clone()))?;
        let channel = self
            .agent_channel(vm)
            .map_err(|why| VmError::NoAgent(name.clone(), why))?;
        let (agent, _) = self
            .wait_agent(name, &channel, std::time::Duration::from_secs(30))
            .await?;
        let files = self.files(name);
        let read = |path: &std::path::Path| std::fs::read(path).map_err(VmError::io(path));
        let identity = Identity {
            hostname: Some(name.as_bytes().to_vec()),
            network: Some(self.guest_network(&lease)),
            host_key: Some(HostKey {
                private: read(&files.host_key)?,
                public: read(&files.host_key.with_extension("pub"))?,
            }),
            machine_id: Some(machine_id().into_bytes()),
        };
        agent.request(proto::Message::SetIdentity(identity)).await?;
        // A fork's source was frozen for its snapshot; nothing else is.
        let _ = agent.request(proto::Message::Thaw).await;
        super::agent::sync_clock(&agent).await?;
        self.event(
            name,
            "identity-set",
            &format!(
                "restored as {name} ({}), with its own host key and machine id",
                lease.ip
            ),
        );
        Ok(())
    }

    /// What the guest is told of its network for `lease`: the bridge's
    /// gateway, which also answers DNS.
    fn guest_network(&self, lease: &Lease) -> proto::Network {
        let subnet = self.network.subnet();
        proto::Network {
            address: lease.ip.octets(),
            prefix: subnet.netmask().to_bits().count_ones() as u8,
            gateway: subnet.gateway.octets(),
            mac: Some(lease.mac.0),
            nameservers: vec![subnet.gateway.octets()],
        }
    }

    /// Moves running VM `name`'s host side from lease `old` to `new`: its
    /// tap renamed (its VMM keeps it), the guard and NAT tables and the
    /// published ports' relays on the new address.
    async fn move_lease(&self, name: &str, old: &Lease, new: &Lease) -> Result<(), VmError> {
        {
            let held = self.network.lock().await;
            self.network
                .tap_rename(old.tap.as_str(), new.tap.as_str())
                .await?;
            self.network.sync_nat_held(&held).await?;
        }
        self.network.open_vm_ports(name).await?;
        Ok(())
    }
}

/// A fresh machine id: 32 lowercase hex digits.
fn machine_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
