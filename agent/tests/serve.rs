//! The real agent binary, serving on one end of a socketpair, driven the
//! way the host daemon drives it. No root needed.
// Tests start the agent (and it starts programs): spawning is their job.
#![allow(clippy::disallowed_methods)]

mod common;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banger_agent::proto::{
    ErrorCode, Exec, INPUT_WINDOW, MAGIC, Message, OUTPUT_WINDOW, WinSize, crc32c, encode_frame,
    sync_preamble,
};
use common::{Client, Output, argv, assert_error, exec, pty_exec, wait_gone};

struct Agent {
    child: Child,
    client: Client,
}

impl Agent {
    fn start() -> Agent {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Agent {
        let (child, client) = start_raw(extra);
        Agent { child, client }
    }

    fn run(&mut self, id: u32, e: Exec) -> Output {
        self.client.run(id, e, None, |_, _| {}).unwrap()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }
}

/// The agent on one end of a socketpair; the client on the other.
fn start_raw(extra: &[&str]) -> (Child, Client) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_banger-agent"))
        .args(["--fd", "0"])
        .args(extra)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (child, Client::new(Box::new(ours)))
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn hello_answers_at_once_and_the_agent_speaks_first() {
    let mut a = Agent::start();
    let (id, first) = a
        .client
        .recv(Duration::from_secs(10))
        .expect("the agent's own hello");
    assert_eq!(id, 0);
    let Message::HelloReply(first) = first else {
        panic!("{first:?}")
    };
    assert_eq!(first.nonce, 0);
    let start = Instant::now();
    let h = a.client.hello();
    let took = start.elapsed();
    assert_eq!(h.version, banger_agent::proto::VERSION);
    assert_eq!(h.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(h.channel, "fd");
    assert!(!h.pid1);
    assert_eq!(h.boot_id.len(), 36, "{h:?}");
    assert_eq!(
        h.boot_id,
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap()
            .trim()
    );
    assert_eq!(
        h.kernel_release,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap()
            .trim()
    );
    assert!(h.uptime_ms > 0);
    assert!(h.features.iter().any(|f| f == "exec"));
    let sshd = std::net::TcpStream::connect(("127.0.0.1", 22)).is_ok();
    assert_eq!(
        h.sshd_accepting, sshd,
        "the agent and the test disagree about sshd"
    );
    eprintln!("hello round trip: {took:?}");
}

#[test]
fn exit_codes_are_kept_and_a_signal_is_128_plus_n() {
    let mut a = Agent::start();
    assert_eq!(a.run(1, exec(&["true"])).code, 0);
    assert_eq!(a.run(2, exec(&["sh", "-c", "exit 7"])).code, 7);
    let killed = a.run(3, exec(&["sh", "-c", "kill -9 $$"]));
    assert_eq!((killed.code, killed.signal), (137, 9));
    // Session ids can be used again once a session ended.
    assert_eq!(a.run(1, exec(&["false"])).code, 1);
}

#[test]
fn stdout_and_stderr_stay_apart() {
    let mut a = Agent::start();
    let out = a.run(
        1,
        exec(&[
            "sh",
            "-c",
            "echo out; echo err >&2; echo out2; echo err2 >&2",
        ]),
    );
    assert_eq!(out.stdout, b"out\nout2\n");
    assert_eq!(out.stderr, b"err\nerr2\n");
}

#[test]
fn environment_is_what_the_host_gives_plus_a_default_path() {
    let mut a = Agent::start();
    let mut e = exec(&["env"]);
    e.env = argv(&["A=1", "B=two words"]);
    let out = String::from_utf8(a.run(1, e).stdout).unwrap();
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "A=1",
            "B=two words",
            &format!("PATH={}", banger_agent::proto::DEFAULT_PATH)
        ]
    );
    let mut e = exec(&["sh", "-c", "echo $PATH; pwd"]);
    e.env = argv(&["PATH=/bin:/usr/bin"]);
    e.cwd = Some(b"/tmp".to_vec());
    assert_eq!(a.run(2, e).stdout, b"/bin:/usr/bin\n/tmp\n");
    // No working directory: /.
    assert_eq!(a.run(3, exec(&["pwd"])).stdout, b"/\n");
}

#[test]
fn a_program_that_cannot_start_is_an_error() {
    let mut a = Agent::start();
    let err = a
        .client
        .run(1, exec(&["/nonexistent/program"]), None, |_, _| {})
        .unwrap_err();
    assert_eq!(err.0, ErrorCode::ExecFailed, "{err:?}");
    let mut e = exec(&["true"]);
    e.cwd = Some(b"/nonexistent".to_vec());
    let err = a.client.run(2, e, None, |_, _| {}).unwrap_err();
    assert_eq!(err.0, ErrorCode::ExecFailed, "{err:?}");
    // The agent goes on.
    assert_eq!(a.run(3, exec(&["true"])).code, 0);
}

#[test]
fn twenty_megabytes_through_stdin_and_back_through_cat() {
    let mut a = Agent::start();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..20 * 1024 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let start = Instant::now();
    let mut peak_rss = 0;
    let agent_pid = a.child.id();
    let out = a
        .client
        .run(1, exec(&["cat"]), Some(data.clone()), |_, o| {
            if o.stdout.len() % (1024 * 1024) < 32 * 1024 {
                let rss = std::fs::read_to_string(format!("/proc/{agent_pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("VmRSS:"))
                            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
                    })
                    .unwrap_or(0u64);
                peak_rss = peak_rss.max(rss);
            }
        })
        .unwrap();
    let took = start.elapsed();
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "cat's output differs from its input");
    eprintln!(
        "20 MiB through cat and back in {took:?}; agent RSS peak {peak_rss} KiB, now {} KiB",
        a.rss_kib()
    );
    // Bounded buffers: nothing near the 20 MiB in flight.
    assert!(peak_rss < 16 * 1024, "agent RSS {peak_rss} KiB");
}

#[test]
fn sessions_run_at_once_multiplexed() {
    let mut a = Agent::start();
    // Three cats, fed in turn, each answering its own input.
    for id in 1..=3u32 {
        let mut e = exec(&["cat"]);
        e.stdin = true;
        a.client.send(id, &Message::Exec(e));
    }
    for round in 0..3 {
        for id in 1..=3u32 {
            a.client
                .send(id, &Message::Stdin(format!("s{id}r{round}\n").into_bytes()));
        }
    }
    for id in 1..=3u32 {
        a.client.send(id, &Message::StdinEof);
    }
    let mut outs = std::collections::BTreeMap::<u32, Vec<u8>>::new();
    let mut exited = 0;
    while exited < 3 {
        let (id, m) = a
            .client
            .recv(Duration::from_secs(10))
            .expect("session output");
        match m {
            Message::Stdout(d) => outs.entry(id).or_default().extend(d),
            Message::Exited { code, .. } => {
                assert_eq!(code, 0);
                exited += 1;
            }
            _ => {}
        }
    }
    for id in 1..=3u32 {
        assert_eq!(
            String::from_utf8(outs[&id].clone()).unwrap(),
            format!("s{id}r0\ns{id}r1\ns{id}r2\n")
        );
    }
}

#[test]
fn a_pty_is_the_controlling_terminal_with_the_size_sent_and_resized() {
    let mut a = Agent::start();
    let out = a.run(1, pty_exec(&["tty"], 24, 80));
    let tty = String::from_utf8(out.stdout).unwrap();
    assert!(tty.starts_with("/dev/pts/"), "{tty:?}");
    let out = a.run(2, pty_exec(&["stty", "size"], 33, 101));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "33 101");
    // The controlling terminal: /dev/tty opens, and the shell is the
    // session leader.
    let out = a.run(
        3,
        pty_exec(
            &[
                "sh",
                "-c",
                "echo x >/dev/tty && ps -o sid= -p $$ && echo $$",
            ],
            24,
            80,
        ),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let nums: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(nums[0], "x", "{text:?}");
    assert_eq!(
        nums[1], nums[2],
        "the program leads its own session: {text:?}"
    );
    // A resize reaches the program.
    let mut e = pty_exec(&["sh", "-c", "stty size; read line; stty size"], 24, 80);
    e.stdin = true;
    let mut resized = false;
    let out = a
        .client
        .run(4, e, None, |c, o| {
            if !resized && o.stdout.ends_with(b"\n") {
                resized = true;
                c.send(
                    4,
                    &Message::Resize(WinSize {
                        rows: 50,
                        cols: 132,
                    }),
                );
                c.send(4, &Message::Stdin(b"go\n".to_vec()));
            }
        })
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("24 80"), "{text:?}");
    assert!(text.trim_end().ends_with("50 132"), "{text:?}");
}

/// `sleep 1000 & sleep 1000` under sh; returns the agent and the pids.
fn sleepers(a: &mut Agent, id: u32) -> Vec<u32> {
    a.client.send(
        id,
        &Message::Exec(exec(&[
            "sh",
            "-c",
            "sleep 1000 & echo $!; sleep 1000 & echo $!; echo $$; wait",
        ])),
    );
    let mut text = String::new();
    let until = Instant::now() + Duration::from_secs(10);
    while text.lines().count() < 3 {
        let (rid, m) = a
            .client
            .recv(until.saturating_duration_since(Instant::now()))
            .expect("pids");
        if let (true, Message::Stdout(d)) = (rid == id, m) {
            text.push_str(&String::from_utf8(d).unwrap());
        }
    }
    text.lines().map(|l| l.parse().unwrap()).collect()
}

#[test]
fn a_signal_kills_the_whole_process_group() {
    let mut a = Agent::start();
    let pids = sleepers(&mut a, 1);
    assert!(pids.iter().all(|&p| !common::pid_gone(p)));
    a.client.send(1, &Message::Signal(9));
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (id, m) = a
            .client
            .recv(until.saturating_duration_since(Instant::now()))
            .expect("exit");
        if let (1, Message::Exited { code, signal }) = (id, m) {
            assert_eq!((code, signal), (137, 9));
            break;
        }
    }
    assert!(
        wait_gone(&pids, Duration::from_secs(5)),
        "{pids:?} still alive"
    );
}

#[test]
fn a_host_that_goes_away_takes_its_sessions_with_it() {
    let (mut child, client) = start_raw(&[]);
    let mut a = Agent {
        child: Command::new("true").spawn().unwrap(),
        client,
    };
    let pids = sleepers(&mut a, 1);
    // The host vanishes mid-session.
    let client = std::mem::replace(
        &mut a.client,
        Client::new(Box::new(UnixStream::pair().unwrap().0)),
    );
    drop(client);
    assert!(
        wait_gone(&pids, Duration::from_secs(5)),
        "{pids:?} outlived the host"
    );
    // With an inherited descriptor there is nothing to wait for: it ends.
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_hello_drops_the_previous_conversation() {
    let mut a = Agent::start();
    let pids = sleepers(&mut a, 1);
    a.client.hello();
    assert!(
        wait_gone(&pids, Duration::from_secs(5)),
        "{pids:?} outlived the hello"
    );
    // The old session id is free again, and the agent serves.
    assert_eq!(a.run(1, exec(&["true"])).code, 0);
}

#[test]
fn garbage_never_stops_the_agent() {
    let mut a = Agent::start();
    let mut seed = 42u64;
    let mut junk: Vec<u8> = (0..2 * 1024 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    // Magics everywhere, and at the end a real header announcing a full
    // payload that never comes (a host that died mid-frame).
    for i in (0..junk.len() - 4).step_by(997) {
        junk[i..i + 4].copy_from_slice(&MAGIC);
    }
    let mut torn = Vec::new();
    encode_frame(0x0002, 9, &vec![1u8; 200_000], &mut torn).unwrap();
    junk.extend_from_slice(&torn[..1000]);
    a.client.send_raw(&junk);
    // A new host: the preamble, then hello.
    a.client.send_raw(&sync_preamble());
    let h = a.client.hello();
    assert_eq!(h.channel, "fd");
    assert_eq!(a.run(1, exec(&["true"])).code, 0);
    assert!(a.rss_kib() < 16 * 1024, "agent RSS {} KiB", a.rss_kib());
}

#[test]
fn unknown_kinds_and_bad_payloads_are_answered_with_errors() {
    let mut a = Agent::start();
    a.client.hello();
    let mut f = Vec::new();
    encode_frame(0x7777, 5, b"what", &mut f).unwrap();
    a.client.send_raw(&f);
    let (id, m) = a.client.recv(Duration::from_secs(5)).unwrap();
    assert_eq!(id, 5);
    assert_error(&m, ErrorCode::UnknownKind);
    // An exec whose argv count runs past the payload.
    let mut f = Vec::new();
    encode_frame(0x0002, 6, &[9, 0, 0, 0, 1], &mut f).unwrap();
    a.client.send_raw(&f);
    let m = a.client.recv(Duration::from_secs(5)).unwrap();
    assert_eq!(m.0, 6);
    assert_error(&m.1, ErrorCode::Malformed);
    // A reply kind sent to the agent.
    let m = a.client.request(7, &Message::Done);
    assert_error(&m, ErrorCode::UnknownKind);
    // Session 0 is the connection's.
    let m = a.client.request(0, &Message::Exec(exec(&["true"])));
    assert_error(&m, ErrorCode::Malformed);
    // The same id twice.
    let mut e = exec(&["cat"]);
    e.stdin = true;
    a.client.send(8, &Message::Exec(e.clone()));
    let m = a.client.request(8, &Message::Exec(e));
    assert!(matches!(m, Message::Started { .. }), "{m:?}");
    let m = a.client.recv(Duration::from_secs(5)).unwrap();
    assert_error(&m.1, ErrorCode::SessionExists);
    a.client.send(8, &Message::StdinEof);
    // A frame with a correct header CRC but a wrong payload CRC is dropped.
    let mut f = Vec::new();
    encode_frame(0x0001, 0, &[0; 10], &mut f).unwrap();
    f[30] ^= 1;
    a.client.send_raw(&f);
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(a.client.hello().version, 1);
}

#[test]
fn system_requests_are_parsed_and_refused_in_test_mode() {
    let mut a = Agent::start();
    a.client.hello();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    for (id, msg) in [
        (
            1,
            Message::SetClock {
                secs: now.as_secs() as i64,
                nanos: 0,
            },
        ),
        (
            2,
            Message::AddEntropy {
                data: vec![1; 32],
                reseed: true,
            },
        ),
        (
            3,
            Message::Freeze {
                mounts: vec![],
                timeout_ms: 1000,
            },
        ),
        (4, Message::Thaw),
        (
            5,
            Message::Shutdown(banger_agent::proto::ShutdownAction::Reboot),
        ),
    ] {
        let m = a.client.request(id, &msg);
        assert!(
            matches!(
                m,
                Message::Error {
                    code: ErrorCode::Unsupported,
                    ..
                }
            ),
            "{msg:?}: {m:?}"
        );
    }
    // A clock with 2e9 nanoseconds never reaches clock_settime.
    let mut p = 1_700_000_000i64.to_le_bytes().to_vec();
    p.extend_from_slice(&2_000_000_000u32.to_le_bytes());
    let mut f = Vec::new();
    encode_frame(0x0010, 9, &p, &mut f).unwrap();
    a.client.send_raw(&f);
    let (id, m) = loop {
        let m = a.client.recv(Duration::from_secs(5)).unwrap();
        if m.0 == 9 {
            break m;
        }
    };
    assert_eq!(id, 9);
    assert_error(&m, ErrorCode::Malformed);
}

#[test]
fn output_waits_for_credit_and_the_agent_does_not_grow() {
    let mut a = Agent::start();
    a.client.hello();
    a.client.send(
        1,
        &Message::Exec(exec(&["head", "-c", "8000000", "/dev/zero"])),
    );
    // Take output without returning credit: the agent stops at the window.
    let mut got = 0usize;
    while let Some((id, m)) = a.client.recv(Duration::from_millis(700)) {
        match (id, m) {
            (1, Message::Stdout(d)) => got += d.len(),
            (1, Message::Exited { .. }) => panic!("exited without credit"),
            _ => {}
        }
    }
    assert_eq!(got, OUTPUT_WINDOW as usize);
    let rss = a.rss_kib();
    assert!(
        rss < 16 * 1024,
        "agent RSS {rss} KiB while the host is behind"
    );
    // Credit lets the rest through.
    a.client.send(1, &Message::OutputCredit(u32::MAX));
    a.client.send(1, &Message::OutputCredit(u32::MAX));
    loop {
        let (id, m) = a.client.recv(Duration::from_secs(30)).expect("the rest");
        match (id, m) {
            (1, Message::Stdout(d)) => got += d.len(),
            (1, Message::Exited { code, .. }) => {
                assert_eq!(code, 0);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(got, 8_000_000);
}

#[test]
fn stdin_beyond_the_window_ends_the_session() {
    let mut a = Agent::start();
    // A program that never reads its stdin.
    let mut e = exec(&["sleep", "1000"]);
    e.stdin = true;
    let m = a.client.request(1, &Message::Exec(e));
    let Message::Started { pid } = m else {
        panic!("{m:?}")
    };
    // The pipe takes 64 KiB and the agent acknowledges those: go past both.
    for _ in 0..(INPUT_WINDOW as usize / (64 * 1024)) + 3 {
        a.client.send(1, &Message::Stdin(vec![0; 64 * 1024]));
    }
    loop {
        let (id, m) = a.client.recv(Duration::from_secs(10)).expect("an error");
        if id == 1
            && let Message::Error { code, .. } = m
        {
            assert_eq!(code, ErrorCode::WindowExceeded);
            break;
        }
    }
    assert!(wait_gone(&[pid], Duration::from_secs(5)));
}

#[test]
fn exit_does_not_wait_for_background_processes_holding_the_pipes() {
    let mut a = Agent::start();
    let start = Instant::now();
    let out = a.run(1, exec(&["sh", "-c", "sleep 30 & echo started"]));
    assert_eq!(out.stdout, b"started\n");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Tidy up the orphan.
    let _ = a.run(2, exec(&["pkill", "-f", "^sleep 30$"]));
}

#[test]
fn exec_round_trip_latency() {
    let mut a = Agent::start();
    a.client.hello();
    let mut times = Vec::new();
    for i in 0..20 {
        let start = Instant::now();
        assert_eq!(a.run(100 + i, exec(&["true"])).code, 0);
        times.push(start.elapsed());
    }
    times.sort();
    eprintln!("exec true round trip on the host: median {:?}", times[10]);
    assert!(times[10] < Duration::from_secs(1));
}

#[test]
fn status_answers_without_ending_the_conversation() {
    let mut a = Agent::start();
    a.client.hello();
    let m = a.client.request(1, &Message::Exec(exec(&["sleep", "5"])));
    let Message::Started { pid } = m else {
        panic!("{m:?}")
    };
    let start = Instant::now();
    let m = a.client.request(2, &Message::Status);
    let Message::HelloReply(s) = m else {
        panic!("{m:?}")
    };
    eprintln!("status round trip: {:?}", start.elapsed());
    assert_eq!(s.nonce, 0);
    assert_eq!(s.channel, "fd");
    assert!(s.uptime_ms > 0);
    for f in ["identity", "status", "exec"] {
        assert!(s.features.iter().any(|x| x == f), "{f}: {s:?}");
    }
    // Again, as a host polling for sshd would.
    for id in 3..6 {
        assert!(matches!(
            a.client.request(id, &Message::Status),
            Message::HelloReply(_)
        ));
    }
    assert!(
        !common::pid_gone(pid),
        "the status request killed the session"
    );
    // Id 0 is the connection's.
    let m = a.client.request(0, &Message::Status);
    assert_error(&m, ErrorCode::Malformed);
    // The session runs to its end.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (id, m) = a
            .client
            .recv(until.saturating_duration_since(Instant::now()))
            .expect("the session's end");
        if let (1, Message::Exited { code, signal }) = (id, m) {
            assert_eq!((code, signal), (0, 0));
            break;
        }
    }
    assert!(start.elapsed() >= Duration::from_secs(4));
}

/// What a SetIdentity could change on this machine, to compare.
fn identity_snapshot() -> Vec<(String, Option<Vec<u8>>)> {
    let mut paths = vec![
        "/proc/sys/kernel/hostname".to_string(),
        "/etc/hostname".into(),
        "/etc/hosts".into(),
        "/etc/resolv.conf".into(),
        "/etc/machine-id".into(),
        "/etc/ssh/ssh_host_ed25519_key.pub".into(),
        "/proc/net/route".into(),
    ];
    for dir in ["/etc", "/etc/ssh"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.contains("banger-new") {
                    paths.push(format!("{dir}/{n}"));
                }
            }
        }
    }
    paths
        .into_iter()
        .map(|p| {
            let v = std::fs::read(&p).ok();
            (p, v)
        })
        .collect()
}

#[test]
fn an_invalid_identity_is_refused_and_changes_nothing() {
    use banger_agent::proto::{HostKey, Identity, Network};
    // In test mode, so that nothing here can touch this machine: values
    // are checked when the frame is decoded, before the agent looks at
    // whether it serves the request, so a refusal is `Malformed` (a valid
    // identity would be `Unsupported`, see below).
    let mut a = Agent::start();
    a.client.hello();
    let before = identity_snapshot();
    let net = Network {
        address: [10, 0, 2, 16],
        prefix: 24,
        gateway: [10, 0, 2, 2],
        mac: None,
        nameservers: vec![],
    };
    let bad = [
        Identity {
            hostname: Some(b"Bad_Host".to_vec()),
            ..Default::default()
        },
        Identity {
            network: Some(Network {
                prefix: 31,
                ..net.clone()
            }),
            ..Default::default()
        },
        Identity {
            network: Some(Network {
                nameservers: vec![[1, 1, 1, 1]; 4],
                ..net.clone()
            }),
            ..Default::default()
        },
        Identity {
            network: Some(Network {
                gateway: [10, 0, 3, 1],
                ..net.clone()
            }),
            ..Default::default()
        },
        Identity {
            host_key: Some(HostKey {
                private: vec![b'k'; 17 * 1024],
                public: b"ssh-ed25519 AAAA".to_vec(),
            }),
            ..Default::default()
        },
        Identity {
            host_key: Some(HostKey {
                private: b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
                    .to_vec(),
                public: b"ssh-ed25519 AAAA".to_vec(),
            }),
            ..Default::default()
        },
        Identity {
            machine_id: Some(b"not-a-machine-id".to_vec()),
            ..Default::default()
        },
        // Every field invalid at once.
        Identity {
            hostname: Some(b"-x-".to_vec()),
            network: Some(Network {
                address: [10, 0, 2, 255],
                prefix: 0,
                gateway: [0, 0, 0, 0],
                mac: Some([0xff; 6]),
                nameservers: vec![[0; 4]; 5],
            }),
            host_key: Some(HostKey::default()),
            machine_id: Some(vec![b'0'; 32]),
        },
    ];
    for (i, id) in bad.into_iter().enumerate() {
        let m = a.client.request(10 + i as u32, &Message::SetIdentity(id));
        assert!(
            matches!(
                m,
                Message::Error {
                    code: ErrorCode::Malformed,
                    ..
                }
            ),
            "case {i}: {m:?}"
        );
    }
    assert_eq!(
        identity_snapshot(),
        before,
        "a refused identity changed something"
    );
    // The agent serves on.
    assert_eq!(a.run(1, exec(&["true"])).code, 0);
}

#[test]
fn identity_is_a_system_request_refused_in_test_mode() {
    // A valid identity that changes nothing even if it were applied.
    let mut a = Agent::start();
    a.client.hello();
    let before = identity_snapshot();
    let m = a.client.request(
        1,
        &Message::SetIdentity(banger_agent::proto::Identity::default()),
    );
    assert_error(&m, ErrorCode::Unsupported);
    assert_eq!(identity_snapshot(), before);
}
