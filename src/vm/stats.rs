//! `vm stats`: the VMM process's CPU, memory and uptime, from /proc.

use std::time::{Duration, Instant};

use crate::rpc::api::VmStats;
use crate::store::VmRecord;
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
        let first = read(&vm).ok_or_else(not_running)?;
        let t0 = Instant::now();
        tokio::time::sleep(SAMPLE).await;
        let now = read(&vm).ok_or_else(not_running)?;
        Ok(sample(&vm, &first, &now, t0.elapsed()))
    }

    /// Every VM whose VMM runs, sampled over one shared window: what a
    /// screen refreshing once a second asks for in a single request. A VMM
    /// that exits during the sample is left out.
    pub async fn stats_all(&self) -> Result<Vec<VmStats>, VmError> {
        let vms = self.store.lock().list_vms()?;
        let first: Vec<(VmRecord, ProcStats)> = vms
            .into_iter()
            .filter_map(|vm| read(&vm).map(|s| (vm, s)))
            .collect();
        if first.is_empty() {
            return Ok(Vec::new());
        }
        let t0 = Instant::now();
        tokio::time::sleep(SAMPLE).await;
        let elapsed = t0.elapsed();
        Ok(first
            .iter()
            .filter_map(|(vm, before)| Some(sample(vm, before, &read(vm)?, elapsed)))
            .collect())
    }
}

/// The VM's VMM process as /proc has it, if that is still the process
/// banger recorded (same pid, same start time).
fn read(vm: &VmRecord) -> Option<ProcStats> {
    let (pid, ticks) = (vm.pid?, vm.pid_start_ticks?);
    ProcStats::read(pid)
        .ok()
        .filter(|s| s.start_time_ticks == ticks)
}

fn sample(vm: &VmRecord, first: &ProcStats, now: &ProcStats, elapsed: Duration) -> VmStats {
    VmStats {
        name: vm.name.clone(),
        pid: now.pid,
        cpu_percent: cpu_percent(first, now, elapsed),
        rss_bytes: now.rss_bytes,
        uptime_secs: now.uptime().as_secs(),
        cpu_time_ms: now.cpu_time.as_millis() as u64,
    }
}
