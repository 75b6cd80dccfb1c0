//! Undoing a half-done operation: each step that changes the host records
//! how to take it back; on failure they run in reverse, so a failed create
//! leaves no VM record, disk, tap or process behind.

use std::path::PathBuf;
use std::time::Duration;

use crate::grant::netadmin::NetAdmin;
use crate::store::SharedStore;
use crate::system::pid::{self, ExitWatch};

/// One way to take a step back.
#[derive(Debug)]
pub(crate) enum Undo {
    /// Forget the VM record (and its lease).
    DeleteVm(String),
    RemoveDir(PathBuf),
    DeleteTap(String),
    /// Kill the VMM process and wait for it to go.
    Kill(u32),
}

/// The steps taken so far, most recent last.
#[must_use = "run() it on failure or disarm() it on success"]
pub(crate) struct Rollback {
    store: SharedStore,
    netadmin: NetAdmin,
    steps: Vec<Undo>,
}

impl Rollback {
    pub fn new(store: SharedStore, netadmin: NetAdmin) -> Rollback {
        Rollback {
            store,
            netadmin,
            steps: Vec::new(),
        }
    }

    pub fn push(&mut self, undo: Undo) {
        self.steps.push(undo);
    }

    /// Success: keep everything.
    pub fn disarm(mut self) {
        self.steps.clear();
    }

    /// Failure: undo every step, newest first, as far as possible.
    pub async fn run(mut self) {
        while let Some(step) = self.steps.pop() {
            tracing::info!(?step, "rolling back");
            let failed = match &step {
                Undo::DeleteVm(name) => self
                    .store
                    .lock()
                    .delete_vm(name)
                    .err()
                    .map(|e| e.to_string()),
                Undo::RemoveDir(dir) => match std::fs::remove_dir_all(dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Some(e.to_string()),
                    _ => None,
                },
                Undo::DeleteTap(tap) => self
                    .netadmin
                    .tap_del(tap)
                    .await
                    .err()
                    .map(|e| e.to_string()),
                Undo::Kill(pid) => {
                    let watch = ExitWatch::new(*pid).ok();
                    let _ = pid::signal(*pid, rustix::process::Signal::KILL);
                    if let Some(watch) = watch {
                        watch.exited_within(Duration::from_secs(5)).await;
                    }
                    None
                }
            };
            if let Some(error) = failed {
                tracing::error!(?step, %error, "rollback step failed; clean up by hand");
            }
        }
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        if !self.steps.is_empty() {
            tracing::error!(steps = ?self.steps, "rollback dropped without running");
        }
    }
}
