//! A host-side client of the agent protocol, blocking, for tests: it does
//! what the daemon will do (hello, exec with credits both ways, requests)
//! over any byte stream.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use banger_agent::proto::{
    Decoder, ErrorCode, Exec, HelloReply, INPUT_WINDOW, Message, VERSION, WinSize,
};

/// The byte stream to the agent.
pub trait Stream: Read + Write + Send + 'static {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn Stream>>;
    fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
}

impl Stream for std::os::unix::net::UnixStream {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn Stream>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)
    }
}

pub struct Client {
    reader: Box<dyn Stream>,
    writer: Arc<Mutex<Box<dyn Stream>>>,
    dec: Decoder,
    pending: std::collections::VecDeque<banger_agent::proto::Frame>,
    buf: Vec<u8>,
    nonce: u64,
}

/// What one exec session gave back.
#[derive(Debug, Default)]
pub struct Output {
    pub pid: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub code: i32,
    pub signal: u8,
}

impl Client {
    pub fn new(stream: Box<dyn Stream>) -> Self {
        let writer = Arc::new(Mutex::new(stream.try_clone_box().unwrap()));
        Client {
            reader: stream,
            writer,
            dec: Decoder::new(),
            pending: Default::default(),
            buf: vec![0; 64 * 1024],
            nonce: 0,
        }
    }

    pub fn send(&self, id: u32, msg: &Message) {
        let mut out = Vec::new();
        msg.encode(id, &mut out).unwrap();
        self.send_raw(&out);
    }

    pub fn send_raw(&self, bytes: &[u8]) {
        self.writer.lock().unwrap().write_all(bytes).unwrap();
    }

    /// The next message, or None if none came within `timeout` (or the
    /// stream ended).
    pub fn recv(&mut self, timeout: Duration) -> Option<(u32, Message)> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(f) = self.pending.pop_front().or_else(|| self.dec.next_frame()) {
                return Some((
                    f.id,
                    Message::decode(&f).expect("the agent sends valid messages"),
                ));
            }
            let left = until.checked_duration_since(Instant::now())?;
            self.reader
                .set_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.reader.read(&mut self.buf) {
                Ok(0) => return None,
                Ok(n) => {
                    let mut off = 0;
                    while off < n {
                        off += self.dec.feed(&self.buf[off..n]);
                        while let Some(f) = self.dec.next_frame() {
                            self.pending.push_back(f);
                        }
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return None;
                }
                Err(e) => panic!("reading from the agent: {e}"),
            }
        }
    }

    /// Says hello and waits for the answer to it (skipping anything else,
    /// such as the agent's own hello).
    pub fn hello(&mut self) -> HelloReply {
        self.hello_within(Duration::from_secs(10))
    }

    pub fn hello_within(&mut self, limit: Duration) -> HelloReply {
        self.nonce += 1;
        let nonce = 0x5eed_0000 + self.nonce;
        self.send(
            0,
            &Message::Hello {
                nonce,
                version: VERSION,
            },
        );
        let until = Instant::now() + limit;
        while let Some((_, m)) = self.recv(until.saturating_duration_since(Instant::now())) {
            if let Message::HelloReply(h) = m
                && h.nonce == nonce
            {
                return h;
            }
        }
        panic!("no answer to hello");
    }

    /// A one-shot request: the answer under `id`.
    pub fn request(&mut self, id: u32, msg: &Message) -> Message {
        self.send(id, msg);
        let until = Instant::now() + Duration::from_secs(30);
        while let Some((rid, m)) = self.recv(until.saturating_duration_since(Instant::now())) {
            if rid == id {
                return m;
            }
        }
        panic!("no answer to request {id}");
    }

    /// Runs one session to its end: streams `stdin` (respecting the window),
    /// collects output (returning credit as it goes). `on_output` may act
    /// on the session as output arrives (resize, signal).
    pub fn run(
        &mut self,
        id: u32,
        exec: Exec,
        stdin: Option<Vec<u8>>,
        mut on_output: impl FnMut(&Client, &Output),
    ) -> Result<Output, (ErrorCode, String)> {
        let exec = Exec {
            stdin: stdin.is_some() || exec.stdin,
            ..exec
        };
        self.send(id, &Message::Exec(exec));
        let window = Arc::new((Mutex::new(INPUT_WINDOW as u64), Condvar::new()));
        let feeder = stdin.map(|data| {
            let writer = self.writer.clone();
            let window = window.clone();
            std::thread::spawn(move || {
                for chunk in data.chunks(64 * 1024) {
                    let (lock, cv) = &*window;
                    let mut w = lock.lock().unwrap();
                    while *w < chunk.len() as u64 {
                        let (g, t) = cv.wait_timeout(w, Duration::from_secs(60)).unwrap();
                        assert!(!t.timed_out(), "no stdin credit for 60 s");
                        w = g;
                    }
                    *w -= chunk.len() as u64;
                    drop(w);
                    let mut out = Vec::new();
                    Message::Stdin(chunk.to_vec()).encode(id, &mut out).unwrap();
                    writer.lock().unwrap().write_all(&out).unwrap();
                }
                let mut out = Vec::new();
                Message::StdinEof.encode(id, &mut out).unwrap();
                writer.lock().unwrap().write_all(&out).unwrap();
            })
        });
        let mut out = Output::default();
        let until = Instant::now() + Duration::from_secs(120);
        let result = loop {
            let Some((rid, m)) = self.recv(until.saturating_duration_since(Instant::now())) else {
                panic!("session {id} did not end; so far: {out:?}");
            };
            if rid != id {
                continue;
            }
            match m {
                Message::Started { pid } => out.pid = pid,
                Message::Stdout(d) | Message::Stderr(d) if d.is_empty() => {}
                Message::Stdout(d) => {
                    out.stdout.extend_from_slice(&d);
                    self.send(id, &Message::OutputCredit(d.len() as u32));
                    on_output(self, &out);
                }
                Message::Stderr(d) => {
                    out.stderr.extend_from_slice(&d);
                    self.send(id, &Message::OutputCredit(d.len() as u32));
                    on_output(self, &out);
                }
                Message::StdinCredit(n) => {
                    let (lock, cv) = &*window;
                    *lock.lock().unwrap() += u64::from(n);
                    cv.notify_all();
                }
                Message::Exited { code, signal } => {
                    out.code = code;
                    out.signal = signal;
                    break Ok(out);
                }
                Message::Error { code, message } => break Err((code, message)),
                other => panic!("unexpected in session {id}: {other:?}"),
            }
        };
        if let Some(f) = feeder
            && result.is_ok()
        {
            f.join().unwrap();
        }
        result
    }
}

pub fn argv(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

pub fn exec(args: &[&str]) -> Exec {
    Exec {
        argv: argv(args),
        env: vec![],
        cwd: None,
        stdin: false,
        pty: None,
    }
}

pub fn pty_exec(args: &[&str], rows: u16, cols: u16) -> Exec {
    Exec {
        pty: Some(WinSize { rows, cols }),
        ..exec(args)
    }
}

/// Whether `pid` is gone (or a zombie waiting for someone else's wait).
pub fn pid_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

pub fn wait_gone(pids: &[u32], within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if pids.iter().all(|&p| pid_gone(p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Fails, showing `m`, unless it is an `Error` with `code`.
#[track_caller]
pub fn assert_error(m: &Message, code: ErrorCode) {
    assert!(
        matches!(m, Message::Error { code: got, .. } if *got == code),
        "expected a {code:?} error: {m:?}"
    );
}
