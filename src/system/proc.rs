//! Process stats read natively from `/proc/<pid>`, without spawning `ps`.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

/// Every process id in `/proc` now (empty when `/proc` cannot be read).
pub fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// True when `pid` has a descriptor open on `target` (a canonical path).
pub fn has_open(pid: u32, target: &std::path::Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == target))
    })
}

/// A snapshot of one process, as `banger vm stats` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcStats {
    /// The process id.
    pub pid: u32,
    /// Scheduler state from `/proc/<pid>/stat` (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Executable name as the kernel keeps it (at most 15 bytes).
    pub comm: String,
    /// The full argv; empty for zombies and kernel threads.
    pub cmdline: Vec<String>,
    /// CPU time used so far, user plus system.
    pub cpu_time: Duration,
    /// Start time in clock ticks since boot; with the pid it identifies the
    /// process, so a reused pid is told apart from the one recorded.
    pub start_time_ticks: u64,
    /// Wall-clock start time (second resolution, from the boot time).
    pub started_at: SystemTime,
    /// Resident set size.
    pub rss_bytes: u64,
}

/// Why process stats could not be read.
#[derive(Debug, Error)]
pub enum ProcError {
    /// The process does not exist (or has been reaped).
    #[error("No process with pid {pid}")]
    NoSuchProcess {
        /// The pid asked for.
        pid: u32,
    },
    /// A `/proc` file could not be read.
    #[error("Cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// A `/proc` file did not have the expected format.
    #[error("Unexpected format in {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// The fields of `/proc/<pid>/stat` that banger uses, in their raw units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFields {
    /// Field 2, without its parentheses.
    pub comm: String,
    /// Field 3.
    pub state: char,
    /// Field 14, in clock ticks.
    pub utime: u64,
    /// Field 15, in clock ticks.
    pub stime: u64,
    /// Field 22, in clock ticks since boot.
    pub start_time: u64,
    /// Field 24, in pages.
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name may hold spaces and
/// parentheses, so it ends at the last `)`.
pub fn parse_stat(text: &str) -> Result<StatFields, String> {
    let open = text.find('(').ok_or("no '(' before the command name")?;
    let close = text.rfind(')').ok_or("no ')' after the command name")?;
    if close < open {
        return Err("')' before '('".into());
    }
    let comm = text[open + 1..close].to_string();
    // Fields from 3 (state) on; rest[i] is field i + 3.
    let rest: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        let raw = rest.get(n - 3).ok_or(format!("missing field {n}"))?;
        raw.parse()
            .map_err(|_| format!("field {n} is not a number: {raw:?}"))
    };
    let state = rest
        .first()
        .and_then(|s| s.chars().next())
        .ok_or("missing state")?;
    Ok(StatFields {
        comm,
        state,
        utime: field(14)?,
        stime: field(15)?,
        start_time: field(22)?,
        rss_pages: field(24)?,
    })
}

/// Splits `/proc/<pid>/cmdline` (NUL-separated, NUL-terminated) into arguments.
pub fn parse_cmdline(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// The real uid `pid` runs as (`Uid:` in `/proc/<pid>/status`).
pub fn uid_of(pid: u32) -> Option<u32> {
    status_field(pid, "Uid:")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The value of `field` (with its colon) in `/proc/<pid>/status`.
fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status.lines().find_map(|line| line.strip_prefix(field))?;
    Some(value.trim().to_string())
}

/// Raises this process's soft limit on open files to its hard limit (a
/// desktop session gives 1024, which a few hundred relayed connections
/// would use up); returns the soft limit now in force.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open files limit");
        }
    }
    open_files_limit()
}

/// This process's soft limit on open files (unlimited reads as `u64::MAX`).
pub fn open_files_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// The parent of `pid` (`PPid:` in `/proc/<pid>/status`).
pub fn parent_of(pid: u32) -> Option<u32> {
    status_field(pid, "PPid:")?.parse().ok()
}

/// Finds the boot time (`btime`, seconds since the epoch) in `/proc/stat`.
pub fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn ticks_to_duration(ticks: u64, per_second: u64) -> Duration {
    let per_second = per_second.max(1);
    let nanos = u128::from(ticks % per_second) * 1_000_000_000 / u128::from(per_second);
    Duration::new(ticks / per_second, nanos as u32)
}

fn read_proc(path: PathBuf, pid: u32) -> Result<Vec<u8>, ProcError> {
    std::fs::read(&path).map_err(|source| {
        // ESRCH shows up when the process exits between open and read.
        let gone = source.kind() == io::ErrorKind::NotFound
            || source.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error());
        if gone {
            ProcError::NoSuchProcess { pid }
        } else {
            ProcError::Read { path, source }
        }
    })
}

impl ProcStats {
    /// Reads the stats of process `pid` from `/proc`.
    pub fn read(pid: u32) -> Result<ProcStats, ProcError> {
        let stat_path = PathBuf::from(format!("/proc/{pid}/stat"));
        let stat = read_proc(stat_path.clone(), pid)?;
        let fields =
            parse_stat(&String::from_utf8_lossy(&stat)).map_err(|reason| ProcError::Parse {
                path: stat_path,
                reason,
            })?;
        let cmdline = parse_cmdline(&read_proc(format!("/proc/{pid}/cmdline").into(), pid)?);

        let proc_stat_path = PathBuf::from("/proc/stat");
        let proc_stat =
            std::fs::read_to_string(&proc_stat_path).map_err(|source| ProcError::Read {
                path: proc_stat_path.clone(),
                source,
            })?;
        let btime = parse_btime(&proc_stat).ok_or_else(|| ProcError::Parse {
            path: proc_stat_path,
            reason: "no btime line".into(),
        })?;

        let hz = rustix::param::clock_ticks_per_second();
        let page_size = rustix::param::page_size() as u64;
        Ok(ProcStats {
            pid,
            state: fields.state,
            comm: fields.comm,
            cmdline,
            cpu_time: ticks_to_duration(fields.utime.saturating_add(fields.stime), hz),
            start_time_ticks: fields.start_time,
            started_at: UNIX_EPOCH
                + Duration::from_secs(btime)
                + ticks_to_duration(fields.start_time, hz),
            rss_bytes: fields.rss_pages.saturating_mul(page_size),
        })
    }

    /// How long the process has been running (zero if its start looks to be
    /// in the future, e.g. after a clock step).
    pub fn uptime(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.started_at)
            .unwrap_or_default()
    }
}

/// CPU use between two snapshots of the same process, in percent of one
/// core (a process busy on two cores shows 200). Zero when `wall` is zero.
pub fn cpu_percent(prev: &ProcStats, now: &ProcStats, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    let used = now.cpu_time.saturating_sub(prev.cpu_time);
    used.as_secs_f64() / wall.as_secs_f64() * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "6570 (cat) R 6563 6563 5744 0 -1 4194304 97 0 1 0 12 34 0 0 20 0 1 0 110774 3133440 360 18446744073709551615 94464465805312 0 0 0\n";

    #[test]
    fn parses_stat_fields() {
        let f = parse_stat(SAMPLE).unwrap();
        assert_eq!(f.comm, "cat");
        assert_eq!(f.state, 'R');
        assert_eq!((f.utime, f.stime), (12, 34));
        assert_eq!(f.start_time, 110774);
        assert_eq!(f.rss_pages, 360);
    }

    #[test]
    fn comm_with_spaces_and_parens() {
        let text = SAMPLE.replace("(cat)", "(a) b (c))");
        let f = parse_stat(&text).unwrap();
        assert_eq!(f.comm, "a) b (c)");
        assert_eq!(f.state, 'R');
        assert_eq!(f.start_time, 110774);
    }

    #[test]
    fn bad_stat_is_an_error_not_a_panic() {
        assert!(parse_stat("").is_err());
        assert!(parse_stat("1 (x) S 1 2").is_err());
        assert!(parse_stat(") 1 (").is_err());
        assert!(parse_stat(&SAMPLE.replace("110774", "x")).is_err());
    }

    #[test]
    fn parses_cmdline() {
        assert_eq!(parse_cmdline(b"sleep\x0030\x00"), ["sleep", "30"]);
        assert_eq!(parse_cmdline(b"a\x00\x00b\x00"), ["a", "", "b"]);
        assert!(parse_cmdline(b"").is_empty());
    }

    #[test]
    fn parses_btime() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1795639870\nprocesses 9\n";
        assert_eq!(parse_btime(text), Some(1_795_639_870));
        assert_eq!(parse_btime("cpu 1\n"), None);
    }

    #[test]
    fn ticks_convert_with_fraction() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
        assert_eq!(ticks_to_duration(5, 0), Duration::from_secs(5));
    }

    #[test]
    fn cpu_percent_of_one_core() {
        let mut prev = ProcStats {
            pid: 1,
            state: 'S',
            comm: "x".into(),
            cmdline: vec![],
            cpu_time: Duration::from_secs(1),
            start_time_ticks: 0,
            started_at: UNIX_EPOCH,
            rss_bytes: 0,
        };
        let mut now = prev.clone();
        now.cpu_time = Duration::from_millis(1500);
        assert_eq!(cpu_percent(&prev, &now, Duration::from_secs(1)), 50.0);
        assert_eq!(cpu_percent(&prev, &now, Duration::ZERO), 0.0);
        prev.cpu_time = Duration::from_secs(9);
        assert_eq!(cpu_percent(&prev, &now, Duration::from_secs(1)), 0.0);
    }
}
