//! Crash points for the fault-injection tests. With `BANGER_CRASH_AT=<point>`
//! in the daemon's environment, the daemon kills itself with SIGKILL the
//! moment it reaches that point, so a test can prove that a daemon dying at
//! each step of create, start, stop and delete leaves nothing the next
//! daemon cannot finish or undo. Without the variable, a point is a no-op.

use std::sync::OnceLock;

/// The environment variable naming the point to die at.
pub const CRASH_AT: &str = "BANGER_CRASH_AT";

pub(crate) fn point(name: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(CRASH_AT).ok());
    if at.as_deref() == Some(name) {
        tracing::warn!(point = name, "{CRASH_AT}: killing the daemon here");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}
