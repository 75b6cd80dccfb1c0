//! `vm stats`: the VMM process's CPU, memory and uptime, from /proc.

use std::time::{Duration, Instant};

use crate::rpc::api::VmStats;
use crate::system::proc::{ProcStats, cpu_percent};

use super::{Manager, VmError};

/// How long CPU use is sampled.
const SAMPLE: Duration = Duration::from_millis(250);

impl Manager {
    pub async fn stats(&self, name: &str) -> Result<VmStats, VmError> {
        let vm = self.get(name)?;
        let not_running = || VmError::WrongState {
            name: name.into(),
            state: vm.state,
            action: "sample",
        };
        let (Some(pid), Some(ticks)) = (vm.pid, vm.pid_start_ticks) else {
            return Err(not_running());
        };
        let read = || {
            ProcStats::read(pid)
                .ok()
                .filter(|s| s.start_time_ticks == ticks)
        };
        let first = read().ok_or_else(not_running)?;
        let t0 = Instant::now();
        tokio::time::sleep(SAMPLE).await;
        let now = read().ok_or_else(not_running)?;
        Ok(VmStats {
            name: name.to_string(),
            pid,
            cpu_percent: cpu_percent(&first, &now, t0.elapsed()),
            rss_bytes: now.rss_bytes,
            uptime_secs: now.uptime().as_secs(),
            cpu_time_ms: now.cpu_time.as_millis() as u64,
        })
    }
}
