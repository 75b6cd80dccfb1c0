//! A VM's events: what happened to it (created, started, a stalled boot, a
//! failure), recorded in the store as it happens and shown by `vm show`.

use crate::rpc::api::VmEvent;

use super::Manager;

/// How many of a VM's events `vm show` lists.
const SHOWN: u32 = 10;

impl Manager {
    /// Records that `kind` happened to VM `vm`; a store error is logged,
    /// never fatal.
    pub(crate) fn event(&self, vm: &str, kind: &str, message: &str) {
        if let Err(e) = self.store.lock().record_event(Some(vm), kind, message) {
            tracing::warn!(%vm, error = %e, "cannot record event");
        }
    }

    /// VM `vm`'s last events, oldest first.
    pub(crate) fn recent_events(&self, vm: &str) -> Vec<VmEvent> {
        self.store
            .lock()
            .events(Some(vm), SHOWN)
            .unwrap_or_default()
            .into_iter()
            .map(|e| VmEvent {
                at: e.at,
                kind: e.kind,
                message: e.message,
            })
            .collect()
    }
}
