//! Process stats of a real child process.
#![allow(clippy::disallowed_methods)]

use std::process::{Child, Command};
use std::time::{Duration, SystemTime};

use banger::system::proc::{ProcError, ProcStats};

/// Kills and reaps the child even when an assertion fails.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stats_of_a_sleeping_child() {
    let child = Reaped(Command::new("sleep").arg("30").spawn().unwrap());
    let pid = child.0.id();

    // The child may still be exec'ing; wait until /proc shows `sleep`.
    let mut stats = ProcStats::read(pid).unwrap();
    for _ in 0..100 {
        if stats.comm == "sleep" && stats.state == 'S' {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        stats = ProcStats::read(pid).unwrap();
    }
    assert_eq!(stats.pid, pid);
    assert_eq!(stats.comm, "sleep");
    assert_eq!(stats.state, 'S');
    assert_eq!(stats.cmdline, ["sleep", "30"]);
    assert!(stats.rss_bytes > 0);
    assert!(stats.start_time_ticks > 0);
    let skew = match SystemTime::now().duration_since(stats.started_at) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    // btime has one-second resolution.
    assert!(skew < Duration::from_secs(3), "started_at off by {skew:?}");
    assert!(stats.uptime() < Duration::from_secs(3));

    // The same process read again keeps its identity.
    let again = ProcStats::read(pid).unwrap();
    assert_eq!(again.start_time_ticks, stats.start_time_ticks);
}

#[test]
fn missing_pid_is_a_clear_error() {
    // Above the kernel's maximum pid (4194304), so never in use.
    let err = ProcStats::read(99_999_999).unwrap_err();
    assert!(matches!(err, ProcError::NoSuchProcess { pid: 99_999_999 }));
    assert_eq!(err.to_string(), "No process with pid 99999999");
}
