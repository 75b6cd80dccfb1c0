//! Crash points for the fault-injection tests. With `BANGER_CRASH_AT=<point>`
//! in the daemon's environment, the daemon kills itself with SIGKILL the
//! moment it reaches that point, so a test can prove that a daemon dying at
//! each step of create, start, stop and delete leaves nothing the next
//! daemon cannot finish or undo. Without the variable, a point is a no-op.

use std::sync::OnceLock;

/// The environment variable naming the point to die at.
pub const CRASH_AT: &str = "BANGER_CRASH_AT";

/// The environment variable (tests only) making the daemon's first N boot
/// attempts stall: their guests' init waits forever on the console, silent.
pub const STALL_BOOTS: &str = "BANGER_TEST_STALL_BOOTS";

/// Kernel arguments that make this boot stall, while the daemon's
/// [`STALL_BOOTS`] budget lasts: the initramfs's init becomes `cat`, which
/// reads the console and never writes.
pub(crate) fn stall_this_boot() -> Option<&'static str> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static LEFT: OnceLock<AtomicU32> = OnceLock::new();
    let left = LEFT.get_or_init(|| {
        AtomicU32::new(
            std::env::var(STALL_BOOTS)
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        )
    });
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .ok()
        .map(|_| " rdinit=/bin/cat")
}

pub(crate) fn point(name: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(CRASH_AT).ok());
    if at.as_deref() == Some(name) {
        tracing::warn!(point = name, "{CRASH_AT}: killing the daemon here");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}
