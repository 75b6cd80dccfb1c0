//! The HTTP API under a fuzz run: the real `bangerd`, in a sandbox with no
//! runtime bundle (so nothing it is asked to create or build can be made),
//! takes tens of thousands of random requests over its real unix socket.
//! They are built from the real route templates and mutated at every layer:
//! method, path, headers, body. Every answer must be a 4xx (a 2xx only for
//! a harmless read, a build stream that ends in `failed`, or a network
//! cleanup of the sandbox's own names; a 503 only for a create that got as
//! far as needing the runtime bundle the host lacks), in the API's JSON
//! error shape when bangerd wrote it (hyper's own refusals of unparsable
//! HTTP have no body); no connection may be dropped or hang. Slow clients run
//! alongside and must be cut off by the daemon's time limits. Afterwards
//! the daemon still answers, never panicked, and gave its memory back.
//!
//! The run is deterministic: request `i` comes from the seed and `i` alone.
//! `BANGER_FUZZ_SEED` and `BANGER_FUZZ_REQUESTS` change the seed and size.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use common::*;

/// Requests in a run.
const REQUESTS: usize = 20_000;
/// Clients sending at once.
const CLIENTS: usize = 8;
/// The seed, unless `BANGER_FUZZ_SEED` says otherwise.
const SEED: u64 = 0xba46_e2f0_0d5e_ed01;
/// How long one exchange may take before it counts as hung.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The daemon's limits (`daemon::server::HEADER_TIMEOUT`,
/// `daemon::extract::BODY_TIMEOUT`), and how late it may be to enforce them.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(10);
const TIMEOUT_SLACK: Duration = Duration::from_secs(5);
/// How much the daemon's RSS may grow over the run.
const RSS_SLACK_KIB: u64 = 64 << 10;
/// Failures kept for the report (the run stops early past this many).
const MAX_FAILURES: usize = 50;

#[test]
fn the_api_survives_a_fuzz_run() {
    let seed = std::env::var("BANGER_FUZZ_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(SEED);
    let requests = std::env::var("BANGER_FUZZ_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(REQUESTS);
    eprintln!("fuzz seed: {seed:#018x} (BANGER_FUZZ_SEED to repeat), {requests} requests");

    let sb = fuzz_sandbox();
    ok(sb.banger(&["daemon", "start"]));
    let pid = sb.daemon_pid().expect("the daemon recorded its pid");
    let socket = sb.socket();
    let env = Env::new(&sb);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Warm up, so the start figure is of a daemon that has served.
        for _ in 0..20 {
            let r = exchange(&socket, &get("/v1/health"), false).await.unwrap();
            assert_eq!(r.status, 200);
        }
        let rss_start = rss_kib(pid);

        let slow = tokio::spawn(slow_clients(socket.clone()));
        let started = Instant::now();
        let report = fuzz(&socket, &env, seed, requests).await;
        let elapsed = started.elapsed();
        let slow_failures = slow.await.unwrap();

        tokio::time::sleep(Duration::from_secs(2)).await;
        let health = exchange(&socket, &get("/v1/health"), false).await;
        let rss_end = rss_kib(pid);

        eprintln!(
            "fuzz: {} requests in {:.1} s ({:.0}/s) over {CLIENTS} connections at once",
            report.sent,
            elapsed.as_secs_f64(),
            report.sent as f64 / elapsed.as_secs_f64()
        );
        eprintln!("fuzz: answers by status: {:?}", report.statuses);
        for (route, (n, statuses, took)) in &report.routes {
            eprintln!(
                "fuzz:   {route:<24} {n:>6} requests, {:>6.1} ms each, answers {statuses:?}",
                took.as_secs_f64() * 1000.0 / *n as f64
            );
        }
        eprintln!(
            "fuzz: bangerd RSS {} KiB at the start, {} KiB at the end (peak {} KiB)",
            rss_start,
            rss_end,
            peak_rss_kib(pid)
        );

        let mut failures = report.failures;
        failures.extend(slow_failures);
        assert!(
            failures.is_empty(),
            "{} failures (seed {seed:#018x}):\n{}",
            failures.len(),
            failures.join("\n\n")
        );
        assert!(report.sent >= requests, "only {} sent", report.sent);
        let health = health.expect("bangerd still answers");
        assert_eq!(health.status, 200, "{}", health.text());
        // Nothing was made.
        for list in ["/v1/vms", "/v1/images"] {
            let r = exchange(&socket, &get(list), false).await.unwrap();
            assert_eq!(
                (r.status, r.body.as_slice()),
                (200, b"[]".as_slice()),
                "{list}"
            );
        }
        assert!(process_alive(pid), "bangerd is still running");
        assert_eq!(sb.daemon_pid(), Some(pid), "the same bangerd");
        assert!(
            rss_end < rss_start + RSS_SLACK_KIB,
            "bangerd kept {} KiB after the run",
            rss_end.saturating_sub(rss_start)
        );
    });

    let log = std::fs::read_to_string(sb.state_dir().join("bangerd.log")).unwrap();
    assert!(!log.contains("panicked"), "bangerd panicked:\n{log}");
    ok(sb.banger(&["daemon", "stop"]));
}

/// A sandbox whose daemon can make nothing: its runtime bundle directory
/// is empty, and its bridge and NAT table names are this process's own,
/// so even a network cleanup touches nothing of anyone else's.
fn fuzz_sandbox() -> Sandbox {
    let sb = Sandbox::new();
    let id = std::process::id();
    std::fs::create_dir(sb.path("no-runtime")).unwrap();
    std::fs::write(
        sb.config_file(),
        format!(
            "runtime_dir = \"{}\"\n[network]\nbridge = \"bgfz{}\"\nsubnet = \"10.214.{}.1/24\"\nnat_table = \"bangerfuzz{id}\"\n",
            sb.path("no-runtime").display(),
            id % 100_000,
            id % 250 + 1
        ),
    )
    .unwrap();
    sb
}

/// Host paths a request may name: none is an image, none is precious.
struct Env {
    /// A file that is not a filesystem image.
    garbage: PathBuf,
    /// A script a build could run, were there a bundle.
    script: PathBuf,
    /// A directory.
    dir: PathBuf,
}

impl Env {
    fn new(sb: &Sandbox) -> Env {
        let dir = sb.path("inputs");
        std::fs::create_dir(&dir).unwrap();
        let garbage = dir.join("garbage.img");
        std::fs::write(&garbage, vec![0u8; 8192]).unwrap();
        let script = dir.join("setup.sh");
        std::fs::write(&script, "#!/bin/sh\ntrue\n").unwrap();
        Env {
            garbage,
            script,
            dir,
        }
    }

    fn paths(&self) -> Vec<String> {
        vec![
            self.garbage.display().to_string(),
            self.script.display().to_string(),
            self.dir.display().to_string(),
            format!("{}/absent.img", self.dir.display()),
            "/nonexistent/rootfs.ext4".into(),
            "relative/path.ext4".into(),
            "".into(),
            "/".into(),
            "/dev/null".into(),
            "/proc/self/status".into(),
            "/tmp/\u{0}nul".into(),
            "../../../../etc".into(),
        ]
    }
}

// ---------------------------------------------------------------------------
// The run

struct Report {
    sent: usize,
    statuses: BTreeMap<u16, usize>,
    /// Per route: requests, answers by status, and the time they took.
    routes: BTreeMap<&'static str, (usize, BTreeMap<u16, usize>, Duration)>,
    failures: Vec<String>,
}

async fn fuzz(socket: &Path, env: &Env, seed: u64, requests: usize) -> Report {
    let next = Arc::new(AtomicUsize::new(0));
    let report = Arc::new(Mutex::new(Report {
        sent: 0,
        statuses: BTreeMap::new(),
        routes: BTreeMap::new(),
        failures: Vec::new(),
    }));
    let paths = Arc::new(env.paths());
    let big = Arc::new(big_noise(seed));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (next, report, paths, big) = (next.clone(), report.clone(), paths.clone(), big.clone());
        let socket = socket.to_path_buf();
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= requests || report.lock().unwrap().failures.len() >= MAX_FAILURES {
                    return;
                }
                let mut rng = Rng::new(seed.wrapping_add(i as u64));
                let req = generate(&mut rng, &paths, &big);
                let bytes = req.bytes();
                assert_safe(&req, &bytes);
                let began = Instant::now();
                let outcome = tokio::time::timeout(
                    EXCHANGE_TIMEOUT,
                    exchange(&socket, &bytes, req.is_head()),
                )
                .await;
                let took = began.elapsed();
                let verdict = match outcome {
                    Err(_) => Err(format!("no answer within {} s", EXCHANGE_TIMEOUT.as_secs())),
                    Ok(Err(e)) => Err(e),
                    Ok(Ok(response)) => judge(&req, &response).map(|()| response.status),
                };
                let mut r = report.lock().unwrap();
                r.sent += 1;
                let route = r.routes.entry(req.route).or_default();
                route.0 += 1;
                route.2 += took;
                match verdict {
                    Ok(status) => {
                        *route.1.entry(status).or_default() += 1;
                        *r.statuses.entry(status).or_default() += 1;
                    }
                    Err(why) => {
                        if r.failures.len() < MAX_FAILURES {
                            r.failures
                                .push(format!("request {i}: {why}\n{}", req.describe()));
                        }
                    }
                }
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    Arc::try_unwrap(report)
        .ok()
        .expect("every client is done")
        .into_inner()
        .unwrap()
}

/// Never `POST /v1/daemon/shutdown`, in any spelling, and nothing that
/// could become one: the word appears at most in the request line of a
/// request that is not a POST. (Bodies of several MiB are not searched:
/// they are cut from noise without an `s`, or one letter repeated.)
fn assert_safe(req: &Request, bytes: &[u8]) {
    let line_end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let searched = if req.body.len() > HUGE {
        &bytes[line_end..bytes.len() - req.body.len().min(bytes.len() - line_end)]
    } else {
        &bytes[line_end..]
    };
    assert!(
        !contains_ci(searched, b"shutdown"),
        "the generator put `shutdown` outside a request line"
    );
    if contains_ci(&req.target, b"shutdown") {
        assert!(
            !req.method.eq_ignore_ascii_case(b"POST"),
            "the generator made a shutdown request"
        );
    }
}

/// Whether `hay` holds `needle` (lowercase ASCII letters), in any case.
/// A plain index loop: this runs over megabytes in a debug build.
fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        if hay[i] | 0x20 == first && hay[i..i + needle.len()].eq_ignore_ascii_case(needle) {
            return true;
        }
        i += 1;
    }
    false
}

/// Whether `response` is an acceptable answer to `req`.
fn judge(req: &Request, response: &Response) -> Result<(), String> {
    let status = response.status;
    let fail = |why: &str| {
        Err(format!(
            "HTTP {status}: {why}\n  answer: {}",
            response.text()
        ))
    };
    let api_error = || -> Result<(), String> {
        if req.is_head() {
            return Ok(());
        }
        if response.body.is_empty() {
            // hyper's own refusals of what is not HTTP it can parse.
            return match status {
                400 | 414 | 431 => Ok(()),
                _ => fail("an empty error body"),
            };
        }
        if response.header("content-type") != Some("application/json") {
            return fail("an error body that is not application/json");
        }
        match serde_json::from_slice::<serde_json::Value>(&response.body) {
            Ok(v) if error_shape(&v) => Ok(()),
            _ => fail("an error body not in the API's shape"),
        }
    };
    match status {
        400..=499 => api_error(),
        200..=299 => {
            let method = req.method.as_slice();
            if method == b"GET" || method == b"HEAD" {
                return Ok(());
            }
            match (method, req.route) {
                (b"POST", "/v1/builds") => {
                    if response.header("content-type") != Some("application/x-ndjson") {
                        return fail("a build stream that is not NDJSON");
                    }
                    let text = String::from_utf8_lossy(&response.body);
                    let last = text.lines().last().unwrap_or("");
                    match serde_json::from_str::<serde_json::Value>(last) {
                        Ok(v) if v["event"] == "failed" => Ok(()),
                        _ => fail("a build stream that did not end in `failed`"),
                    }
                }
                (b"POST", "/v1/network/cleanup") => Ok(()),
                _ => fail("success for a request that should have been refused"),
            }
        }
        // The host cannot run VMs (no runtime bundle): nothing the request did.
        503 if matches!(req.route, "/v1/vms" | "/v1/defaults")
            && (req.is_head()
                || String::from_utf8_lossy(&response.body).contains("no runtime bundle")) =>
        {
            api_error()
        }
        _ => fail("not a 4xx"),
    }
}

/// `{"error": ["...", ...], "hint": "..."}`, the hint optional.
fn error_shape(v: &serde_json::Value) -> bool {
    let Some(obj) = v.as_object() else {
        return false;
    };
    let chain_ok = obj["error"]
        .as_array()
        .is_some_and(|a| !a.is_empty() && a.iter().all(|s| s.is_string()));
    let hint_ok = obj.get("hint").is_none_or(|h| h.is_string());
    chain_ok && hint_ok && obj.keys().all(|k| k == "error" || k == "hint")
}

// ---------------------------------------------------------------------------
// Clients that are too slow: the daemon must cut each off in time.

async fn slow_clients(socket: PathBuf) -> Vec<String> {
    let limit = DAEMON_TIMEOUT + TIMEOUT_SLACK;
    let cases: Vec<(&'static str, Vec<u8>, Expect)> = vec![
        ("silent client", vec![], Expect::Closed),
        (
            "half-sent head",
            b"GET /v1/health HTTP/1.1\r\nHost: bangerd\r\n".to_vec(),
            Expect::Closed,
        ),
        ("blank lines only", b"\r\n\r\n\r\n".to_vec(), Expect::Closed),
        (
            "body shorter than its Content-Length",
            b"POST /v1/vms HTTP/1.1\r\nHost: bangerd\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":".to_vec(),
            Expect::Status(408),
        ),
        (
            "chunked body that stops",
            b"POST /v1/images HTTP/1.1\r\nHost: bangerd\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"nam".to_vec(),
            Expect::Status(408),
        ),
        (
            "idle kept-alive connection",
            get("/v1/health"),
            Expect::ClosedAfterOne,
        ),
    ];
    let mut tasks = Vec::new();
    for (what, bytes, expect) in cases {
        let socket = socket.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let result = tokio::time::timeout(limit, stall(&socket, &bytes, expect)).await;
            match result {
                Ok(Ok(())) => None,
                Ok(Err(why)) => Some(format!("slow client, {what}: {why}")),
                Err(_) => Some(format!(
                    "slow client, {what}: still connected after {:.1} s",
                    started.elapsed().as_secs_f64()
                )),
            }
        }));
    }
    // One that drips its head a byte at a time still gets cut off.
    let socket_drip = socket.clone();
    tasks.push(tokio::spawn(async move {
        let started = Instant::now();
        let mut stream = UnixStream::connect(&socket_drip).await.ok()?;
        let head = b"GET /v1/health HTTP/1.1\r\nHost: bangerd\r\nX-Slow: ".to_vec();
        let mut bytes = head.into_iter().chain(std::iter::repeat(b'a'));
        loop {
            if started.elapsed() > limit {
                return Some("slow client, dripping head: still connected".to_string());
            }
            let byte = bytes.next()?;
            if stream.write_all(&[byte]).await.is_err() {
                return None; // closed on it
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }));
    let mut failures = Vec::new();
    for task in tasks {
        if let Some(why) = task.await.unwrap() {
            failures.push(why);
        }
    }
    failures
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The daemon closes the connection without an answer.
    Closed,
    /// It answers with this status (a JSON error) and closes.
    Status(u16),
    /// It answers the one request, then closes the idle connection.
    ClosedAfterOne,
}

async fn stall(socket: &Path, bytes: &[u8], expect: Expect) -> Result<(), String> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    stream
        .write_all(bytes)
        .await
        .map_err(|e| format!("cannot write: {e}"))?;
    let mut got = Vec::new();
    // Read until the daemon closes (the caller's timeout fails a hang).
    loop {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    match expect {
        Expect::Closed if got.is_empty() => Ok(()),
        Expect::Closed => Err(format!("answered: {text}")),
        Expect::Status(s) => {
            let r = parse_response(&got, false)
                .ok_or_else(|| format!("no complete answer: {text:?}"))?;
            let json = serde_json::from_slice::<serde_json::Value>(&r.body).ok();
            if r.status == s && json.as_ref().is_some_and(error_shape) {
                Ok(())
            } else {
                Err(format!("expected HTTP {s} with a JSON error, got {text}"))
            }
        }
        Expect::ClosedAfterOne => match parse_response(&got, false) {
            Some(r) if r.status == 200 => Ok(()),
            _ => Err(format!("expected one 200, got {text:?}")),
        },
    }
}

// ---------------------------------------------------------------------------
// One exchange over the socket, and a small HTTP/1.1 response parser.

struct Response {
    status: u16,
    body: Vec<u8>,
    head: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn text(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(600).collect();
        format!("{}\n  {body}", self.head.lines().next().unwrap_or(""))
    }
}

/// Sends `bytes` on a new connection while reading the first final answer.
/// The write may fail once the daemon has answered (it stops reading a
/// body it refused); only the answer counts.
async fn exchange(socket: &Path, bytes: &[u8], head_only: bool) -> Result<Response, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut rd, mut wr) = stream.into_split();
    let write = async {
        let _ = wr.write_all(bytes).await;
        std::future::pending::<()>().await;
    };
    let read = async {
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            if let Some(r) = parse_response(&got, head_only) {
                return Ok(r);
            }
            match rd.read(&mut chunk).await {
                Ok(0) => {
                    return parse_to_eof(&got).ok_or_else(|| {
                        format!(
                            "connection closed after {} bytes without a complete answer: {:?}",
                            got.len(),
                            String::from_utf8_lossy(&got[..got.len().min(300)])
                        )
                    });
                }
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read failed after {} bytes: {e}", got.len())),
            }
        }
    };
    tokio::select! {
        r = read => r,
        () = write => unreachable!("the write half never completes"),
    }
}

/// The first final response in `buf`, once it is complete.
fn parse_response(buf: &[u8], head_only: bool) -> Option<Response> {
    let mut start = 0;
    loop {
        let end = find(&buf[start..], b"\r\n\r\n")? + start;
        let head = String::from_utf8_lossy(&buf[start..end]).into_owned();
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        if (100..200).contains(&status) {
            start = end + 4; // 100 Continue: the real answer follows
            continue;
        }
        let body = &buf[end + 4..];
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let body = if head_only || status == 204 || status == 304 {
            Vec::new()
        } else if header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            dechunk(body)?
        } else if let Some(len) = header("content-length") {
            let len: usize = len.parse().ok()?;
            body.get(..len)?.to_vec()
        } else {
            return None; // to the end of the connection
        };
        return Some(Response { status, body, head });
    }
}

/// A response whose body runs to the end of the connection.
fn parse_to_eof(buf: &[u8]) -> Option<Response> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Response {
        status,
        body: buf[end + 4..].to_vec(),
        head,
    })
}

/// A whole chunked body, or None while it is incomplete.
fn dechunk(mut buf: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(buf, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&buf[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        buf = &buf[line_end + 2..];
        if size == 0 {
            return find(buf, b"\r\n").map(|_| out);
        }
        out.extend_from_slice(buf.get(..size)?);
        buf = buf.get(size + 2..)?;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: bangerd\r\n\r\n").into_bytes()
}

fn rss_kib(pid: i32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn peak_rss_kib(pid: i32) -> u64 {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: i32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

// ---------------------------------------------------------------------------
// The generator

/// xorshift64, seeded through splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T: ?Sized>(&mut self, items: &'a [&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// What a route's body is.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    None,
    CreateVm,
    StopVm,
    ImportImage,
    BuildImage,
}

/// The route templates of `src/daemon/routes.rs`, with their methods, how
/// often each is picked, and what its body is.
const ROUTES: &[(&str, &[&str], u32, Shape)] = &[
    ("/v1/health", &["GET"], 6, Shape::None),
    ("/v1/doctor", &["GET"], 1, Shape::None),
    ("/v1/vms", &["GET", "POST"], 14, Shape::CreateVm),
    ("/v1/vms/{name}", &["GET", "DELETE"], 12, Shape::StopVm),
    ("/v1/vms/{name}/start", &["POST"], 6, Shape::None),
    ("/v1/vms/{name}/stop", &["POST"], 6, Shape::StopVm),
    ("/v1/vms/{name}/restart", &["POST"], 5, Shape::None),
    ("/v1/vms/{name}/clone", &["POST"], 4, Shape::None),
    ("/v1/vms/{name}/publish", &["POST"], 4, Shape::None),
    ("/v1/vms/{name}/unpublish", &["POST"], 4, Shape::None),
    ("/v1/vms/{name}/stats", &["GET"], 5, Shape::None),
    ("/v1/stats", &["GET"], 2, Shape::None),
    ("/v1/defaults", &["GET"], 2, Shape::None),
    ("/v1/images", &["GET", "POST"], 10, Shape::ImportImage),
    ("/v1/images/{name}", &["GET", "DELETE"], 10, Shape::None),
    ("/v1/builds", &["POST"], 10, Shape::BuildImage),
    ("/v1/network", &["GET"], 2, Shape::None),
    ("/v1/network/cleanup", &["POST"], 1, Shape::None),
    // Only ever with another method: see `assert_safe`.
    (
        "/v1/daemon/shutdown",
        &["GET", "DELETE", "PUT"],
        2,
        Shape::None,
    ),
];

/// Methods besides a route's own.
const ODD_METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT", "get", "Post",
    "FOO", "PROPFIND", "M-SEARCH", "BREW",
];

struct Request {
    route: &'static str,
    method: Vec<u8>,
    target: Vec<u8>,
    version: &'static str,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    /// How the body goes on the wire.
    framing: Framing,
}

#[derive(Clone, Copy, PartialEq)]
enum Framing {
    /// `Content-Length` with the true length.
    Length,
    /// No `Content-Length` (the body, if any, reads as a next request).
    NoLength,
    /// A `Content-Length` shorter than the body (the rest reads as a next request).
    Short,
    /// Two `Content-Length`s that disagree.
    Conflicting,
    /// A `Content-Length` that is not a number.
    Garbage,
    /// Chunked, well formed.
    Chunked,
    /// Chunked with a chunk size that is not hex.
    BadChunk,
    /// Both chunked and a `Content-Length`.
    ChunkedAndLength,
    /// A transfer coding other than chunked.
    OtherCoding,
}

impl Request {
    fn is_head(&self) -> bool {
        self.method == b"HEAD"
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 512);
        out.extend_from_slice(&self.method);
        out.push(b' ');
        out.extend_from_slice(&self.target);
        if !self.version.is_empty() {
            out.push(b' ');
            out.extend_from_slice(self.version.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        let len = self.body.len();
        let framing: &[&str] = match self.framing {
            Framing::Length => &[&format!("Content-Length: {len}")],
            Framing::NoLength => &[],
            Framing::Short => &[&format!("Content-Length: {}", len / 2)],
            Framing::Conflicting => &[&format!("Content-Length: {len}"), "Content-Length: 1"],
            Framing::Garbage => &["Content-Length: 12abc"],
            Framing::Chunked | Framing::BadChunk => &["Transfer-Encoding: chunked"],
            Framing::ChunkedAndLength => &[
                "Transfer-Encoding: chunked",
                &format!("Content-Length: {len}"),
            ],
            Framing::OtherCoding => &["Transfer-Encoding: gzip, chunked, identity"],
        };
        for line in framing {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        match self.framing {
            Framing::Chunked | Framing::ChunkedAndLength => {
                // Chunks of a few sizes, then the last one.
                let mut rest = self.body.as_slice();
                let mut size = 1;
                while !rest.is_empty() {
                    let n = size.min(rest.len());
                    out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                    out.extend_from_slice(&rest[..n]);
                    out.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                    size = size * 7 + 3;
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            Framing::BadChunk => {
                out.extend_from_slice(b"zz\r\n");
                out.extend_from_slice(&self.body);
                out.extend_from_slice(b"\r\n0\r\n\r\n");
            }
            _ => out.extend_from_slice(&self.body),
        }
        out
    }

    fn describe(&self) -> String {
        let clip = |b: &[u8], n: usize| {
            let s = String::from_utf8_lossy(&b[..b.len().min(n)]).into_owned();
            if b.len() > n {
                format!("{s:?}... ({} bytes)", b.len())
            } else {
                format!("{s:?}")
            }
        };
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{}: {}", clip(k, 40), clip(v, 60)))
            .collect();
        format!(
            "  {} {} {} (route {})\n  headers: {}\n  body: {}",
            clip(&self.method, 40),
            clip(&self.target, 200),
            self.version,
            self.route,
            headers.join(", "),
            clip(&self.body, 300)
        )
    }
}

/// Bodies larger than this are huge: past the daemon's limit.
const HUGE: usize = 3 << 19;

/// A few MiB of noise that huge bodies are cut from, without an `s` in
/// any case (so no body cut from it can spell `shutdown`).
fn big_noise(seed: u64) -> Vec<u8> {
    let mut noise = Rng::new(seed ^ 0xb16).bytes(6 << 20);
    for b in &mut noise {
        if *b | 0x20 == b's' {
            *b = b'x';
        }
    }
    noise
}

fn generate(rng: &mut Rng, paths: &[String], big: &[u8]) -> Request {
    let total: u32 = ROUTES.iter().map(|r| r.2).sum();
    let mut roll = rng.below(total as usize) as u32;
    let &(template, methods, _, shape) = ROUTES
        .iter()
        .find(|r| {
            if roll < r.2 {
                true
            } else {
                roll -= r.2;
                false
            }
        })
        .unwrap();

    let mut method = if rng.chance(85) {
        rng.pick(methods).to_string()
    } else {
        rng.pick(ODD_METHODS).to_string()
    };
    if rng.chance(1) {
        method = match rng.below(3) {
            0 => "X".repeat(1000),
            1 => "G\u{1}T".into(),
            _ => "".into(),
        };
    }

    let mut target = template.replace("{name}", "\u{0}").into_bytes();
    if let Some(at) = target.iter().position(|&b| b == 0) {
        let name = path_name(rng);
        target.splice(at..=at, name);
    }
    if rng.chance(30) {
        mutate_path(rng, &mut target);
    }
    if contains_ci(&target, b"shutdown") && method.eq_ignore_ascii_case("POST") {
        method = "GET".into();
    }

    let version = match rng.below(100) {
        0 => "HTTP/1.0",
        1 => "HTTP/2.0",
        2 => "HTTP/0.9",
        3 => "",
        4 => "HTTP/1.1 extra",
        5 => "http/1.1",
        _ => "HTTP/1.1",
    };

    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let h = |k: &str, v: &[u8]| (k.as_bytes().to_vec(), v.to_vec());
    match rng.below(100) {
        0..=84 => headers.push(h("Host", b"bangerd")),
        85..=89 => {}
        90..=94 => {
            headers.push(h("Host", b"bangerd"));
            headers.push(h("Host", b"other"));
        }
        95..=97 => headers.push(h("Host", &vec![b'h'; 100_000])),
        _ => headers.push(h("Host", b"\xff\xfe bad \x7f")),
    }

    let with_body = match shape {
        Shape::None => rng.chance(10),
        _ => method != "GET" || rng.chance(10),
    };
    let body = if with_body {
        body(rng, shape, paths, big)
    } else {
        Vec::new()
    };

    if !body.is_empty() || rng.chance(20) {
        match rng.below(100) {
            0..=69 => headers.push(h("Content-Type", b"application/json")),
            70..=74 => headers.push(h("Content-Type", b"application/json; charset=utf-8")),
            75..=77 => headers.push(h("Content-Type", b"application/problem+json")),
            78..=80 => headers.push(h("Content-Type", b"text/plain")),
            81..=82 => headers.push(h("Content-Type", b"application/jsonx")),
            83..=84 => headers.push(h("Content-Type", b"")),
            85..=86 => headers.push(h("Content-Type", b"\xff\xfe/\x80")),
            87..=89 => {
                headers.push(h("Content-Type", b"application/json"));
                headers.push(h("Content-Type", b"text/html"));
            }
            _ => {}
        }
    }

    let framing = match rng.below(100) {
        0..=79 => Framing::Length,
        80..=84 => Framing::NoLength,
        85..=87 => Framing::Short,
        88..=89 => Framing::Conflicting,
        90..=91 => Framing::Garbage,
        92..=96 => Framing::Chunked,
        97 => Framing::BadChunk,
        98 => Framing::ChunkedAndLength,
        _ => Framing::OtherCoding,
    };

    if rng.chance(3) {
        headers.push(h("Expect", b"100-continue"));
    }
    match rng.below(100) {
        0..=29 => headers.push(h("Connection", b"close")),
        30..=39 => headers.push(h("Connection", b"keep-alive")),
        40..=41 => {
            headers.push(h("Connection", b"upgrade"));
            headers.push(h("Upgrade", b"websocket"));
        }
        _ => {}
    }
    for _ in 0..rng.below(4) {
        headers.push(random_header(rng));
    }
    match rng.below(200) {
        0 => headers.push(h("X-Huge", &vec![b'v'; 200_000])),
        1 => headers.push(h("X-Too-Huge", &vec![b'v'; 600_000])),
        2 => {
            for i in 0..150 {
                headers.push((format!("X-Many-{i}").into_bytes(), b"1".to_vec()));
            }
        }
        3 => headers.push((b"Bad Name".to_vec(), b"x".to_vec())),
        4 => headers.push((b"".to_vec(), b"no name".to_vec())),
        5 => headers.push(h("X-Nul", b"a\x00b")),
        6 => headers.push(h("X-Line", b"a\nInjected: yes")),
        _ => {}
    }
    // Shuffle a little, so order never matters.
    if headers.len() > 1 && rng.chance(30) {
        let a = rng.below(headers.len());
        let b = rng.below(headers.len());
        headers.swap(a, b);
    }

    Request {
        route: template,
        method: method.into_bytes(),
        target,
        version,
        headers,
        body,
        framing,
    }
}

/// A `{name}` path segment as it goes on the wire.
fn path_name(rng: &mut Rng) -> Vec<u8> {
    let raw: String = match rng.below(40) {
        0..=11 => valid_name(rng),
        12 => "default".into(),
        13 => "Box".into(),
        14 => "a%20b".into(),
        15 => "..".into(),
        16 => ".".into(),
        17 => "%2e%2e".into(),
        18 => "a%2Fb".into(),
        19 => "%00".into(),
        20 => "%FF".into(),
        21 => "%C3%A9t%C3%A9".into(),
        22 => "%".into(),
        23 => "%zz".into(),
        24 => "x".repeat(64),
        25 => "x".repeat(5000),
        26 => "y".repeat(70_000),
        27 => "%F0%9F%92%A5".into(),
        28 => "".into(),
        29 => "-a".into(),
        30 => "a-".into(),
        31 => "a.build".into(),
        32 => "%0d%0aInjected:%20yes".into(),
        33 => "%1B%5B31mred".into(),
        34 => "a?name=b".into(),
        35 => "a#frag".into(),
        36 => "a;b".into(),
        37 => "%252e".into(),
        38 => "(){}[]".into(),
        _ => {
            // Raw bytes, some of them not URI characters at all.
            let n = 1 + rng.below(12);
            return rng
                .bytes(n)
                .into_iter()
                .filter(|&b| b != b' ' && b != b'\r' && b != b'\n')
                .collect();
        }
    };
    raw.into_bytes()
}

fn valid_name(rng: &mut Rng) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
    let n = 1 + rng.below(20);
    let mut s: Vec<u8> = (0..n).map(|_| CHARS[rng.below(CHARS.len())]).collect();
    if s[0] == b'-' {
        s[0] = b'a';
    }
    if s[n - 1] == b'-' {
        s[n - 1] = b'z';
    }
    String::from_utf8(s).unwrap()
}

fn mutate_path(rng: &mut Rng, target: &mut Vec<u8>) {
    match rng.below(16) {
        0 => target.push(b'/'),
        1 => target.insert(0, b'/'),
        2 => target.extend_from_slice(b"/extra"),
        3 => {
            if let Some(cut) = target.iter().rposition(|&b| b == b'/') {
                target.truncate(cut.max(1));
            }
        }
        4 => {
            let s = String::from_utf8_lossy(target).replacen("/v1/", "/v2/", 1);
            *target = s.into_bytes();
        }
        5 => {
            let s = String::from_utf8_lossy(target).replacen("/v1/", "/V1/", 1);
            *target = s.into_bytes();
        }
        6 => {
            let s = String::from_utf8_lossy(target).replacen("/v1/", "/v1/../v1/", 1);
            *target = s.into_bytes();
        }
        7 => {
            let s = String::from_utf8_lossy(target).replacen("/v1/", "/v1/./", 1);
            *target = s.into_bytes();
        }
        8 => {
            let q = format!("?q={}&force=true&%zz=%FF", rng.next());
            target.extend_from_slice(q.as_bytes());
        }
        9 => {
            // Percent-encode one letter of the fixed part.
            if let Some(at) = target.iter().skip(1).position(|b| b.is_ascii_lowercase()) {
                let at = at + 1;
                let enc = format!("%{:02X}", target[at]);
                target.splice(at..=at, enc.into_bytes());
            }
        }
        10 => {
            let mut t = b"http://bangerd".to_vec();
            t.extend_from_slice(target);
            *target = t;
        }
        11 => *target = b"*".to_vec(),
        12 => target.extend_from_slice("/z".repeat(20_000).as_bytes()),
        13 => target.extend_from_slice(b"/\xc3\x28\xff"),
        14 => target.extend_from_slice(b"//"),
        _ => {
            let s = String::from_utf8_lossy(target).replacen("/v1/", "/v1//", 1);
            *target = s.into_bytes();
        }
    }
}

fn random_header(rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    const NAMES: &[&str] = &[
        "Accept",
        "Accept-Encoding",
        "Authorization",
        "Cookie",
        "X-Forwarded-For",
        "Range",
        "If-None-Match",
        "Origin",
        "User-Agent",
        "Content-Encoding",
        "Content-Type",
        "Host",
        "X-Fuzz",
    ];
    let name = rng.pick(NAMES).as_bytes().to_vec();
    let value: Vec<u8> = match rng.below(5) {
        0 => b"gzip, deflate, br".to_vec(),
        1 => b"bytes=0-1, 5-".to_vec(),
        2 => (0..rng.below(80))
            .map(|_| b' ' + (rng.next() % 95) as u8)
            .collect(),
        3 => (0..rng.below(40))
            .map(|_| 0x80 | rng.next() as u8)
            .collect(),
        _ => b"*/*".to_vec(),
    };
    (name, value)
}

/// A body for a route of `shape`: mostly the right shape with odd values,
/// then the wrong shape, broken JSON, huge, not UTF-8, or nothing.
fn body(rng: &mut Rng, shape: Shape, paths: &[String], big: &[u8]) -> Vec<u8> {
    let body = match rng.below(100) {
        0..=44 if shape != Shape::None => object(rng, shape, paths).to_string().into_bytes(),
        0..=44 => json_value(rng, 2).to_string().into_bytes(),
        45..=54 => json_value(rng, 3).to_string().into_bytes(),
        55..=59 => {
            let depth = 1 + rng.below(100_000);
            let mut s = "[".repeat(depth);
            if rng.chance(50) {
                s.push_str(&"]".repeat(depth));
            }
            s.into_bytes()
        }
        60..=69 => {
            let full = if shape == Shape::None {
                json_value(rng, 3).to_string()
            } else {
                object(rng, shape, paths).to_string()
            };
            let cut = rng.below(full.len().max(1));
            full.as_bytes()[..cut].to_vec()
        }
        70..=72 => {
            // Several MiB: past the body limit.
            let n = (2 << 20) + rng.below(4 << 20);
            let start = rng.below(big.len() - n);
            let mut b = big[start..start + n].to_vec();
            if rng.chance(50) {
                // Or as JSON: a huge string.
                b = format!("{{\"name\":\"{}\"}}", "n".repeat(n)).into_bytes();
            }
            b
        }
        73..=74 => {
            // Just under the limit: read, then refused for what it says.
            format!("{{\"name\":\"{}\"}}", "a".repeat((1 << 20) - 20)).into_bytes()
        }
        75..=81 => {
            let n = rng.below(300);
            let mut b = rng.bytes(n);
            if rng.chance(50) {
                // Invalid UTF-8 inside otherwise plausible JSON.
                b = [
                    b"{\"name\":\"".as_slice(),
                    &b,
                    b"\",\"start\":true,\"nat\":true}",
                ]
                .concat();
            }
            b
        }
        82..=89 if shape != Shape::None => {
            // The right keys, twice, or with keys it does not know.
            let mut o = object(rng, shape, paths).to_string();
            o.pop();
            if rng.chance(50) {
                o.push_str(",\"name\":\"again\"}");
            } else {
                o.push_str(",\"unknown\":{\"deep\":[1,2,3]}}");
            }
            o.into_bytes()
        }
        _ => Vec::new(),
    };
    // A body may be read as a next request (see `Framing`): it must never
    // spell the one request this run does not send.
    if body.len() <= HUGE && contains_ci(&body, b"shutdown") {
        return b"{}".to_vec();
    }
    body
}

/// A random JSON value, at most `depth` deep.
fn json_value(rng: &mut Rng, depth: usize) -> serde_json::Value {
    use serde_json::{Value, json};
    match rng.below(if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => absurd_number(rng),
        3 => json!(odd_string(rng)),
        4 => json!(""),
        5 => json!(-1),
        6 => Value::Array(
            (0..rng.below(4))
                .map(|_| json_value(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.below(4) {
                m.insert(odd_string(rng), json_value(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

fn absurd_number(rng: &mut Rng) -> serde_json::Value {
    use serde_json::json;
    match rng.below(10) {
        0 => json!(u64::MAX),
        1 => json!(i64::MIN),
        2 => json!(1e308),
        3 => json!(-0.5),
        4 => json!(u32::MAX as u64 + 1),
        5 => json!(0),
        6 => json!(1),
        7 => json!(4096),
        8 => serde_json::from_str("18446744073709551616").unwrap(),
        _ => json!(rng.next()),
    }
}

fn odd_string(rng: &mut Rng) -> String {
    match rng.below(12) {
        0 => valid_name(rng),
        1 => "".into(),
        2 => "a b".into(),
        3 => "\u{0}\u{1b}[31m\u{7}".into(),
        4 => "../../etc/passwd".into(),
        5 => "é✓💥".into(),
        6 => "x".repeat(10_000),
        7 => "Box".into(),
        8 => "default".into(),
        9 => "-".into(),
        10 => "\\\"quoted\\\"".into(),
        _ => "auto".into(),
    }
}

/// An object with the keys of `shape`: each present or not, each value
/// right, null, of the wrong type or absurd.
fn object(rng: &mut Rng, shape: Shape, paths: &[String]) -> serde_json::Value {
    use serde_json::{Value, json};
    // Now and then a request that passes every check, to reach what lies
    // behind them (a create then fails for want of a bundle; a build
    // streams its steps, then fails the same way).
    if rng.chance(25) {
        let name = valid_name(rng);
        match shape {
            Shape::CreateVm => {
                return json!({ "name": name, "image": null, "vcpus": 2, "memory_mib": 512,
                    "disk_bytes": null, "work_disk_bytes": null, "vmm": null,
                    "start": true, "nat": rng.chance(50), "wait_ssh": false });
            }
            Shape::BuildImage => {
                return json!({ "name": name, "packages": ["curl", "jq"],
                    "copy": [{ "host": paths[0], "guest": "/opt/garbage" }],
                    "run": [paths[1]], "apt_sources": [], "no_cache": rng.chance(50) });
            }
            _ => {}
        }
    }
    let mut m = serde_json::Map::new();
    let put = |m: &mut serde_json::Map<String, Value>, key: &str, good: Value, rng: &mut Rng| {
        let v = match rng.below(100) {
            0..=79 => good,
            80..=83 => Value::Null,
            84..=87 => json_value(rng, 1),
            88..=92 => absurd_number(rng),
            93..=96 => json!(odd_string(rng)),
            _ => return, // left out
        };
        m.insert(key.to_string(), v);
    };
    let name = |rng: &mut Rng| {
        json!(if rng.chance(70) {
            valid_name(rng)
        } else {
            odd_string(rng)
        })
    };
    let path = |rng: &mut Rng| json!(paths[rng.below(paths.len())]);
    // The first two paths are files that exist (see `Env::paths`).
    let script = &paths[1];
    match shape {
        Shape::None => {}
        Shape::CreateVm => {
            put(&mut m, "name", name(rng), rng);
            put(&mut m, "image", name(rng), rng);
            put(&mut m, "vcpus", json!(rng.below(40)), rng);
            put(&mut m, "memory_mib", json!(rng.below(1 << 16)), rng);
            put(
                &mut m,
                "disk_bytes",
                json!(rng.next() >> rng.below(64)),
                rng,
            );
            put(
                &mut m,
                "work_disk_bytes",
                json!(rng.next() >> rng.below(64)),
                rng,
            );
            put(
                &mut m,
                "vmm",
                json!(rng.pick(&["auto", "firecracker", "qemu", "bochs", ""])),
                rng,
            );
            put(&mut m, "start", json!(rng.chance(50)), rng);
            put(&mut m, "nat", json!(rng.chance(50)), rng);
            put(&mut m, "wait_ssh", json!(rng.chance(50)), rng);
        }
        Shape::StopVm => put(&mut m, "force", json!(rng.chance(50)), rng),
        Shape::ImportImage => {
            put(&mut m, "name", name(rng), rng);
            put(&mut m, "path", path(rng), rng);
        }
        Shape::BuildImage => {
            put(&mut m, "name", name(rng), rng);
            put(&mut m, "from", name(rng), rng);
            put(
                &mut m,
                "size_bytes",
                json!(rng.next() >> rng.below(64)),
                rng,
            );
            let packages: Vec<Value> = (0..rng.below(5))
                .map(|_| {
                    json!(rng.pick(&["curl", "git=1:2.39", "jq", "vim", "bad pkg", "a;reboot", ""]))
                })
                .collect();
            put(&mut m, "packages", Value::Array(packages), rng);
            put(&mut m, "install_recommends", json!(rng.chance(50)), rng);
            put(&mut m, "modules", json!(rng.chance(50)), rng);
            let copies: Vec<Value> = (0..rng.below(3))
                .map(|_| {
                    let guest =
                        rng.pick(&["/etc/x", "/opt/y", "/etc/x", "relative", "/a/../b", ""]);
                    json!({ "host": path(rng), "guest": guest })
                })
                .collect();
            put(&mut m, "copy", Value::Array(copies), rng);
            let runs: Vec<Value> = (0..rng.below(3))
                .map(|_| {
                    if rng.chance(70) {
                        json!(script)
                    } else {
                        path(rng)
                    }
                })
                .collect();
            put(&mut m, "run", Value::Array(runs), rng);
            let sources: Vec<Value> = (0..rng.below(3))
                .map(|_| {
                    json!(rng.pick(&[
                        "deb [trusted=yes] http://127.0.0.1/ ./",
                        "deb http://127.0.0.1/debian stable main",
                        "rm -rf /",
                        "deb x\ny",
                    ]))
                })
                .collect();
            put(&mut m, "apt_sources", Value::Array(sources), rng);
            put(&mut m, "replace", json!(rng.chance(50)), rng);
            put(&mut m, "no_cache", json!(rng.chance(50)), rng);
            put(&mut m, "vmm", json!("auto"), rng);
        }
    }
    Value::Object(m)
}
