//! A VM's guest agent as the manager holds it: one connection per running
//! VM (QEMU's virtio-serial port takes one host at a time), made on first
//! use and dropped when the VM stops; readiness at boot; exec sessions.

use std::sync::Arc;
use std::time::Duration;

use crate::agent::proto::{self, HelloReply};
use crate::agent::{Agent, AgentError, Channel, Session};
use crate::model::VmmKind;
use crate::rpc::api::AgentInfo;
use crate::store::VmRecord;

use super::{Manager, VmError};

/// How long a running VM's agent gets to answer a new connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a booting guest is asked whether its sshd accepts.
const SSHD_POLL: Duration = Duration::from_millis(250);

impl Manager {
    /// How VM `vm`'s agent is reached, or why it has none.
    pub(crate) fn agent_channel(&self, vm: &VmRecord) -> Result<Channel, String> {
        let bundle = self.bundle().map_err(|e| e.to_string())?;
        bundle.agent().map_err(String::from)?;
        let socket = self.files(&vm.name).agent_socket;
        Ok(match vm.vmm {
            VmmKind::Qemu => Channel::Serial(socket),
            VmmKind::Firecracker => Channel::Vsock(socket),
        })
    }

    /// Running VM `name`'s agent: the connection already held, else a new one.
    pub(crate) async fn agent(&self, name: &str) -> Result<Arc<Agent>, VmError> {
        let vm = self.get(name)?;
        VmError::check_state(&vm, vm.state.is_running(), "reach the agent of")?;
        let mut agents = self.agents.lock().await;
        if let Some(agent) = agents.get(name).filter(|a| !a.is_closed()) {
            return Ok(agent.clone());
        }
        let channel = self
            .agent_channel(&vm)
            .map_err(|why| VmError::NoAgent(name.into(), why))?;
        let agent = Arc::new(Agent::connect(&channel, CONNECT_TIMEOUT).await?);
        agents.insert(name.to_string(), agent.clone());
        Ok(agent)
    }

    /// The connection to `name`'s agent, if one is held and open.
    pub(crate) fn held_agent(&self, name: &str) -> Option<Arc<Agent>> {
        let agents = self.agents.try_lock().ok()?;
        agents.get(name).filter(|a| !a.is_closed()).cloned()
    }

    /// What `vm show` says of `vm`'s agent: as it last said hello, or why none answers.
    pub(crate) fn agent_info(&self, vm: &VmRecord) -> Result<AgentInfo, String> {
        // A held connection answers without reading the bundle again.
        let held = vm.state.is_running().then(|| self.held_agent(&vm.name));
        let Some(hello) = held.flatten().and_then(|a| a.last_hello()) else {
            self.agent_channel(vm)
                .map_err(|why| format!("none ({why})"))?;
            if !vm.state.is_running() {
                return Err(format!("not running (the VM is {})", vm.state));
            }
            return Err("not answering (see `banger vm show` again, or the console log)".into());
        };
        Ok(AgentInfo {
            version: hello.agent_version,
            protocol: hello.version,
            channel: hello.channel,
            sshd_accepting: hello.sshd_accepting,
            kernel_release: hello.kernel_release,
            boot_id: hello.boot_id,
        })
    }

    /// Forgets `name`'s agent connection (its VMM is gone).
    pub(crate) async fn drop_agent(&self, name: &str) {
        self.agents.lock().await.remove(name);
    }

    /// Sets running VM `name`'s clock from the host's; returns how far off it was.
    pub async fn sync_clock(&self, name: &str) -> Result<Duration, VmError> {
        let agent = self.agent(name).await?;
        let skew = sync_clock(&agent).await?;
        self.event(
            name,
            "clock-set",
            &format!("from the host's; it was {:.3} s off", skew.as_secs_f64()),
        );
        Ok(skew)
    }

    /// Starts `exec` in running VM `name`.
    pub async fn exec(&self, name: &str, exec: proto::Exec) -> Result<Session, VmError> {
        let agent = self.agent(name).await?;
        Ok(agent.exec(exec).await?)
    }

    /// A booting guest's agent: waits until it answers on `channel` (within
    /// `within`), then holds the connection for the VM.
    pub(crate) async fn wait_agent(
        &self,
        name: &str,
        channel: &Channel,
        within: Duration,
    ) -> Result<(Arc<Agent>, HelloReply), AgentError> {
        // A channel serves one connection at a time: one already held (a
        // restore's identity step made it) is the one to use.
        let held = self
            .agents
            .lock()
            .await
            .get(name)
            .filter(|a| !a.is_closed())
            .cloned();
        if let Some(agent) = held {
            let hello = agent.status().await?;
            return Ok((agent, hello));
        }
        let deadline = tokio::time::Instant::now() + within;
        // The VMM may not have bound its socket yet, and Firecracker ends a
        // vsock connection at once while nothing in the guest listens on
        // the port (the agent starts late in the boot), or as the guest's
        // vsock transport resets: retry the connect.
        let agent = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match Agent::connect(channel, left).await {
                Ok(agent) => break Arc::new(agent),
                Err(AgentError::Connect { .. } | AgentError::Handshake(_) | AgentError::Closed)
                    if !left.is_zero() =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let hello = agent.last_hello().ok_or(AgentError::Closed)?;
        // The VMM binds the socket with its umask; its directory is the
        // VMM user's alone already, and the socket itself is made 0600 too.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(channel.path(), std::fs::Permissions::from_mode(0o600));
        self.agents
            .lock()
            .await
            .insert(name.to_string(), agent.clone());
        Ok((agent, hello))
    }
}

/// Asks the guest to shut down through its agent: a power-off under QEMU
/// (whose ACPI ends the VMM); a reboot under Firecracker, which ends its
/// VMM (`reboot=k`) where a power-off would leave it running.
pub(crate) async fn request_shutdown(agent: &Agent, vmm: VmmKind) -> Result<(), AgentError> {
    let action = match vmm {
        VmmKind::Qemu => proto::ShutdownAction::PowerOff,
        VmmKind::Firecracker => proto::ShutdownAction::Reboot,
    };
    agent.request(proto::Message::Shutdown(action)).await?;
    Ok(())
}

/// Sets the guest's wall clock to the host's and feeds its RNG fresh
/// host entropy (after a boot or a restore its clock and pool are stale).
pub(crate) async fn sync_clock(agent: &Agent) -> Result<Duration, AgentError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let answer = agent
        .request(proto::Message::SetClock {
            secs: now.as_secs() as i64,
            nanos: now.subsec_nanos(),
        })
        .await?;
    let proto::Message::ClockSet {
        previous_secs,
        previous_nanos,
    } = answer
    else {
        return Err(AgentError::Unexpected(crate::agent::kind_name(&answer)));
    };
    let previous = Duration::new(previous_secs.max(0) as u64, previous_nanos);
    let mut entropy = [0u8; 64];
    if getrandom(&mut entropy) {
        agent
            .request(proto::Message::AddEntropy {
                data: entropy.to_vec(),
                reseed: true,
            })
            .await?;
    }
    Ok(previous.abs_diff(now))
}

/// Fills `buf` from the host's RNG.
fn getrandom(buf: &mut [u8]) -> bool {
    let want = buf.len();
    rustix::rand::getrandom(buf, rustix::rand::GetRandomFlags::empty()).is_ok_and(|n| n == want)
}

/// Whether the guest has an sshd at all: the agent starts `sshd -V` (found
/// on the default PATH) and says whether there was one to start.
pub(crate) async fn has_sshd(agent: &Arc<Agent>) -> Result<bool, AgentError> {
    let probe = proto::Exec {
        argv: vec![b"sshd".to_vec(), b"-V".to_vec()],
        ..Default::default()
    };
    let ran = match agent.exec(probe).await {
        Ok(session) => session.collect(&[], 64 * 1024, CONNECT_TIMEOUT).await,
        Err(e) => Err(e),
    };
    match ran {
        Ok(_) => Ok(true),
        Err(AgentError::Refused(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until the guest's sshd accepts connections, asking its agent.
pub(crate) async fn wait_sshd(agent: &Agent, within: Duration) -> Result<(), AgentError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let status = agent.status().await?;
        if status.sshd_accepting {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AgentError::SshdSilent(within));
        }
        tokio::time::sleep(SSHD_POLL).await;
    }
}
