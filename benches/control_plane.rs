//! `make bench`: the control plane's figures, printed (never asserted).
//!
//! - `banger vm list` whole-process time against a warm daemon (median, p90);
//! - `bangerd` resident memory when idle;
//! - cloning a 1 GiB sparse image holding 300 MiB, banger's clone vs
//!   `cp --sparse=always`, on the filesystem of $TMPDIR.
#![allow(clippy::disallowed_methods)]

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const LIST_RUNS: usize = 200;
const CLONE_RUNS: usize = 5;

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let root = tempfile::Builder::new()
        .prefix("banger-bench-")
        .tempdir()
        .unwrap();
    for dir in ["home", "config", "state", "data", "run"] {
        std::fs::create_dir(root.path().join(dir)).unwrap();
    }
    let banger = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_banger"))
            .args(args)
            .env("HOME", root.path().join("home"))
            .env("XDG_CONFIG_HOME", root.path().join("config"))
            .env("XDG_STATE_HOME", root.path().join("state"))
            .env("XDG_DATA_HOME", root.path().join("data"))
            .env("XDG_RUNTIME_DIR", root.path().join("run"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    banger(&["daemon", "start"]);
    for _ in 0..10 {
        banger(&["vm", "list"]); // warm up the daemon and the page cache
    }
    let mut times: Vec<Duration> = (0..LIST_RUNS)
        .map(|_| {
            let start = Instant::now();
            banger(&["vm", "list"]);
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "vm list (warm daemon, {LIST_RUNS} runs): median {:.2} ms, p90 {:.2} ms, min {:.2} ms   goal <= 10 ms",
        ms(times[LIST_RUNS / 2]),
        ms(times[LIST_RUNS * 9 / 10]),
        ms(times[0])
    );

    std::thread::sleep(Duration::from_secs(1));
    let lock = root.path().join("run/banger/bangerd.lock");
    let pid: u32 = std::fs::read_to_string(lock)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or("VmRSS: ?");
    println!(
        "bangerd idle after {} requests: {}   goal <= 15 MiB",
        LIST_RUNS + 10,
        rss.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    );
    banger(&["daemon", "stop"]);

    clone_figures(root.path());
}

/// 1 GiB sparse, 300 MiB of data in 1 MiB extents spread over the file.
fn clone_figures(dir: &Path) {
    let src = dir.join("image.ext4");
    let mut file = std::fs::File::create(&src).unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8 ^ 0x5a).collect();
    for i in 0..300u64 {
        file.seek(SeekFrom::Start(i * (1 << 30) / 300)).unwrap();
        file.write_all(&chunk).unwrap();
    }
    file.set_len(1 << 30).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let median = |mut f: Box<dyn FnMut(&Path)>| {
        let mut times: Vec<Duration> = (0..CLONE_RUNS)
            .map(|i| {
                let dst = dir.join(format!("clone-{i}.ext4"));
                let start = Instant::now();
                f(&dst);
                let t = start.elapsed();
                std::fs::remove_file(&dst).unwrap();
                t
            })
            .collect();
        times.sort();
        times[CLONE_RUNS / 2]
    };
    let mut method = None;
    let ours = median(Box::new(|dst| {
        method = Some(banger::system::fs::clone_file(&src, dst).unwrap());
    }));
    let cp = median(Box::new(|dst| {
        let ok = Command::new("cp")
            .arg("--sparse=always")
            .arg(&src)
            .arg(dst)
            .status()
            .unwrap();
        assert!(ok.success());
    }));
    println!(
        "clone 1 GiB sparse / 300 MiB data: banger {:.1} ms ({}), cp --sparse=always {:.1} ms, ratio {:.2}x   goal <= 1.1x",
        ms(ours),
        method.map(|m| m.to_string()).unwrap_or_default(),
        ms(cp),
        ours.as_secs_f64() / cp.as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
