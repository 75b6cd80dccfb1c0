//! The serve loop: one thread, one poll(2) over the channel, a signalfd
//! (SIGCHLD, SIGIO) and every session's descriptors. Nothing it reads can
//! make it panic or hold more than its bounds.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use banger_agent::proto::{
    DATA_CHUNK, DecodeError, Decoder, ErrorCode, Frame, MAX_FREEZE_MS, MAX_OUTPUT_QUEUE,
    MAX_SESSIONS, Message, ShutdownAction, encode_frame, kind,
};

use crate::channel::Channel;
use crate::identity;
use crate::session::{self, Session};
use crate::sys;
use crate::system::{self, Ending, Fs};

/// Output of programs is read only while less than this waits for the
/// channel; replies to requests may use the rest of [`MAX_OUTPUT_QUEUE`].
const OUTPUT_READ_LIMIT: usize = MAX_OUTPUT_QUEUE / 4;
/// While no host is on the serial port, look again this often (SIGIO
/// usually says so sooner).
const SERIAL_RETRY: Duration = Duration::from_secs(1);
/// A freeze without a timeout lasts this long.
const DEFAULT_FREEZE: Duration = Duration::from_secs(60);

pub struct Options {
    /// The agent is the guest's init: it reaps every orphan and ends the
    /// guest itself.
    pub pid1: bool,
    /// Serve clock, entropy, freeze, shutdown and identity (off only for
    /// tests on a host, where they must not touch the machine).
    pub system_requests: bool,
}

pub struct Server {
    chan: Channel,
    opts: Options,
    dec: Decoder,
    /// Frames waiting to be written to the channel, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    sessions: BTreeMap<u32, Session>,
    sigfd: OwnedFd,
    /// Filesystems outside the final root a freeze must reach (a layered
    /// root's upper disk), opened before leaving the initramfs.
    hidden: Vec<Fs>,
    frozen: Option<system::Frozen>,
    /// A shutdown asked of init, and when to do it ourselves.
    shutdown: Option<(ShutdownAction, Instant)>,
    next_serial_check: Instant,
    buf: Vec<u8>,
}

/// What a poll entry is for.
#[derive(Clone, Copy)]
enum Tag {
    Signals,
    Listener,
    Channel,
    Out(u32),
    Err(u32),
    Stdin(u32),
}

impl Server {
    /// Call in the process that serves (after any fork): SIGIO goes to the
    /// pid that asked for it.
    pub fn new(chan: Channel, opts: Options, hidden: Vec<Fs>) -> io::Result<Self> {
        // Blocked (and read from the signalfd) before anything can raise
        // them: SIGIO's default action ends the process.
        let sigfd = sys::signalfd(&[libc::SIGCHLD, libc::SIGIO])?;
        if let Channel::Serial { fd, path, .. } = &chan {
            // SIGIO tells the agent when a host connects, so it need not poll.
            if let Err(e) = sys::set_async(fd.as_fd()) {
                eprintln!("banger-agent: warning: no SIGIO on {}: {e}", path.display());
            }
        }
        Ok(Server {
            chan,
            opts,
            dec: Decoder::new(),
            out: Vec::new(),
            out_pos: 0,
            sessions: BTreeMap::new(),
            sigfd,
            hidden,
            frozen: None,
            shutdown: None,
            next_serial_check: Instant::now(),
            buf: vec![0; 64 * 1024],
        })
    }

    /// Serves until the channel is a descriptor that closed (tests); on a
    /// serial port or vsock, forever.
    pub fn run(&mut self) -> io::Result<()> {
        eprintln!("banger-agent: serving on {}", self.chan.describe());
        if matches!(self.chan, Channel::Fd { .. }) {
            self.say_ready();
        }
        loop {
            let now = Instant::now();
            self.timers(now);
            self.finish_sessions();
            if let Channel::Fd { open: false, .. } = self.chan {
                return Ok(());
            }
            let (mut pfds, tags) = self.poll_set();
            let timeout = self.timeout(now);
            sys::poll(&mut pfds, timeout)?;
            for (p, tag) in pfds.iter().zip(tags) {
                if p.revents != 0 {
                    self.event(tag, p.revents);
                }
            }
        }
    }

    fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn poll_set(&self) -> (Vec<libc::pollfd>, Vec<Tag>) {
        let mut pfds = Vec::new();
        let mut tags = Vec::new();
        let mut add = |fd: i32, events: i16, tag: Tag| {
            pfds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            tags.push(tag);
        };
        add(self.sigfd.as_raw_fd(), libc::POLLIN, Tag::Signals);
        if let Channel::Vsock { listener, .. } = &self.chan {
            add(listener.as_raw_fd(), libc::POLLIN, Tag::Listener);
        }
        if let Some(fd) = self.chan.io() {
            let mut ev = 0;
            if self.pending_out() < MAX_OUTPUT_QUEUE {
                ev |= libc::POLLIN;
            }
            if self.pending_out() > 0 {
                ev |= libc::POLLOUT;
            }
            add(fd.as_raw_fd(), ev, Tag::Channel);
        }
        let reading = self.pending_out() < OUTPUT_READ_LIMIT;
        for (&id, s) in &self.sessions {
            if reading && s.credit > 0 {
                if let Some(fd) = &s.out {
                    add(fd.as_raw_fd(), libc::POLLIN, Tag::Out(id));
                }
                if let Some(fd) = &s.err {
                    add(fd.as_raw_fd(), libc::POLLIN, Tag::Err(id));
                }
            }
            if let (Some(fd), false) = (&s.stdin, s.stdin_buf.is_empty()) {
                add(fd.as_raw_fd(), libc::POLLOUT, Tag::Stdin(id));
            }
        }
        (pfds, tags)
    }

    /// Milliseconds until the next timer, or -1.
    fn timeout(&self, now: Instant) -> i32 {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(f) = &self.frozen {
            at(f.deadline);
        }
        if let Some((_, t)) = self.shutdown {
            at(t);
        }
        if let Channel::Serial {
            connected: false, ..
        } = self.chan
        {
            at(self.next_serial_check);
        }
        for s in self.sessions.values() {
            if let Some((_, t)) = s.exited
                && s.credit > 0
                && (s.out.is_some() || s.err.is_some())
            {
                at(t + session::LINGER);
            }
        }
        match next {
            None => -1,
            Some(t) => t.saturating_duration_since(now).as_millis().min(60_000) as i32,
        }
    }

    fn timers(&mut self, now: Instant) {
        if self.frozen.as_ref().is_some_and(|f| now >= f.deadline) {
            let names = system::thaw(self.frozen.take().map(|f| f.fs).unwrap_or_default());
            eprintln!(
                "banger-agent: freeze timed out, thawed {}",
                names.join(", ")
            );
        }
        if let Some((action, t)) = self.shutdown
            && now >= t
        {
            eprintln!("banger-agent: init did not end the guest, doing it");
            system::end_now(action, self.opts.pid1);
        }
        if let Channel::Serial {
            connected: false, ..
        } = self.chan
            && now >= self.next_serial_check
        {
            self.check_serial();
        }
        // Streams of exited programs found empty after the linger close.
        let ids: Vec<u32> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.may_close_empty_stream(now) && s.credit > 0)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.read_stream(id, false);
            self.read_stream(id, true);
        }
    }

    /// Sees whether a host is on the serial port now.
    fn check_serial(&mut self) {
        let Channel::Serial { fd, connected, .. } = &mut self.chan else {
            return;
        };
        let mut p = [libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let hup = match sys::poll(&mut p, 0) {
            Ok(_) => p[0].revents & libc::POLLHUP != 0 && p[0].revents & libc::POLLIN == 0,
            Err(_) => true,
        };
        self.next_serial_check = Instant::now() + SERIAL_RETRY;
        if !hup {
            *connected = true;
            self.say_ready();
        }
    }

    /// The unsolicited hello (nonce 0) when a host arrives.
    fn say_ready(&mut self) {
        let hello = system::hello(0, self.opts.pid1, self.chan.name());
        self.send(0, &Message::HelloReply(hello));
    }

    fn event(&mut self, tag: Tag, revents: i16) {
        match tag {
            Tag::Signals => {
                for sig in sys::drain_signalfd(self.sigfd.as_fd()) {
                    if sig == libc::SIGIO as u32 {
                        self.next_serial_check = Instant::now();
                    }
                }
                self.reap();
            }
            Tag::Listener => self.accept(),
            Tag::Channel => {
                if revents & libc::POLLOUT != 0 {
                    self.write_channel();
                }
                if revents & (libc::POLLIN | libc::POLLERR) != 0 {
                    self.read_channel();
                } else if revents & libc::POLLHUP != 0 {
                    self.host_gone();
                }
            }
            Tag::Out(id) => self.read_stream(id, false),
            Tag::Err(id) => self.read_stream(id, true),
            Tag::Stdin(id) => self.flush_stdin(id),
        }
    }

    fn accept(&mut self) {
        let Channel::Vsock { listener, .. } = &self.chan else {
            return;
        };
        let (conn, cid) = match sys::vsock_accept(listener.as_fd()) {
            Ok(c) => c,
            Err(_) => return,
        };
        if cid != libc::VMADDR_CID_HOST {
            // Only the host may talk to the agent.
            eprintln!("banger-agent: refused a vsock connection from CID {cid}");
            return;
        }
        // A new connection is a new host: the old conversation ends.
        self.host_gone();
        if let Channel::Vsock { conn: c, .. } = &mut self.chan {
            *c = Some(conn);
        }
        self.say_ready();
    }

    /// The host went away: its sessions die, what it froze thaws, and what
    /// was queued for it is dropped.
    fn host_gone(&mut self) {
        match &mut self.chan {
            Channel::Serial { connected, .. } => {
                *connected = false;
                self.next_serial_check = Instant::now() + SERIAL_RETRY;
            }
            Channel::Vsock { conn, .. } => *conn = None,
            Channel::Fd { open, .. } => *open = false,
        }
        self.end_conversation();
        self.out.clear();
        self.out_pos = 0;
        self.dec.reset();
    }

    fn end_conversation(&mut self) {
        // Dropping a running session kills its process group.
        self.sessions.clear();
        if let Some(f) = self.frozen.take() {
            let names = system::thaw(f.fs);
            eprintln!("banger-agent: host gone, thawed {}", names.join(", "));
        }
    }

    fn read_channel(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        // A bounded number of reads per round, so sessions get their turn.
        for _ in 0..16 {
            if self.pending_out() >= MAX_OUTPUT_QUEUE {
                break;
            }
            let Some(fd) = self.chan.io() else { break };
            match sys::read(fd, &mut buf) {
                Ok(0) => {
                    self.host_gone();
                    break;
                }
                Ok(n) => {
                    let mut off = 0;
                    while off < n && self.chan.io().is_some() {
                        off += self.dec.feed(&buf[off..n]);
                        while let Some(f) = self.dec.next_frame() {
                            self.dispatch(f);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("banger-agent: reading the channel: {e}");
                    self.host_gone();
                    break;
                }
            }
        }
        self.buf = buf;
    }

    fn write_channel(&mut self) {
        while self.pending_out() > 0 {
            let Some(fd) = self.chan.io() else { return };
            match sys::write(fd, &self.out[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.host_gone();
                    return;
                }
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > MAX_OUTPUT_QUEUE {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
    }

    /// Writes what is queued, waiting up to `limit` (before a shutdown).
    fn flush_blocking(&mut self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.pending_out() > 0 && Instant::now() < until {
            let Some(fd) = self.chan.io() else { return };
            let mut p = [libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            }];
            let _ = sys::poll(&mut p, 50);
            self.write_channel();
        }
    }

    fn send(&mut self, id: u32, msg: &Message) {
        if self.chan.io().is_none() {
            return;
        }
        if let Err(e) = msg.encode(id, &mut self.out) {
            eprintln!("banger-agent: cannot send {:#06x}: {e}", msg.kind());
        }
        // Write at once when we can: replies should not wait for a round.
        self.write_channel();
    }

    fn error(&mut self, id: u32, code: ErrorCode, message: String) {
        self.send(id, &Message::Error { code, message });
    }

    fn dispatch(&mut self, f: Frame) {
        let id = f.id;
        let msg = match Message::decode(&f) {
            Ok(m) => m,
            Err(e @ DecodeError::UnknownKind(_)) => {
                return self.error(id, ErrorCode::UnknownKind, e.to_string());
            }
            Err(e) => return self.error(id, ErrorCode::Malformed, e.to_string()),
        };
        let system = matches!(
            msg,
            Message::SetClock { .. }
                | Message::AddEntropy { .. }
                | Message::Freeze { .. }
                | Message::Thaw
                | Message::Shutdown(_)
                | Message::SetIdentity(_)
        );
        if system && !self.opts.system_requests {
            return self.error(
                id,
                ErrorCode::Unsupported,
                "system requests are off (test mode)".into(),
            );
        }
        match msg {
            Message::Hello { nonce, .. } => {
                // A hello starts a new conversation: nothing of the last
                // one survives.
                self.end_conversation();
                let hello = system::hello(nonce, self.opts.pid1, self.chan.name());
                self.send(id, &Message::HelloReply(hello));
            }
            Message::Status => {
                if id == 0 {
                    return self.error(
                        id,
                        ErrorCode::Malformed,
                        "a status request needs its own id, not 0".into(),
                    );
                }
                // Unlike a hello: the conversation goes on untouched.
                let status = system::hello(0, self.opts.pid1, self.chan.name());
                self.send(id, &Message::HelloReply(status));
            }
            Message::SetIdentity(ident) => match identity::apply(&ident) {
                Ok(what) => {
                    eprintln!("banger-agent: identity set: {what}");
                    self.send(id, &Message::Done);
                }
                Err(f) => {
                    eprintln!("banger-agent: identity not set: {}", f.message);
                    self.error(id, f.code, f.message);
                }
            },
            Message::Exec(req) => self.exec(id, &req),
            Message::Stdin(data) => {
                let Some(s) = self.sessions.get_mut(&id) else {
                    return;
                };
                if s.push_stdin(&data).is_err() {
                    self.sessions.remove(&id);
                    return self.error(
                        id,
                        ErrorCode::WindowExceeded,
                        "stdin beyond the window".into(),
                    );
                }
                self.flush_stdin(id);
            }
            Message::StdinEof => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.stdin_eof = true;
                }
                self.flush_stdin(id);
            }
            Message::Resize(ws) => {
                if let Some(s) = self.sessions.get(&id) {
                    s.resize(ws);
                }
            }
            Message::Signal(sig) => {
                if let Some(s) = self.sessions.get(&id) {
                    s.signal(i32::from(sig));
                }
            }
            Message::OutputCredit(n) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.credit = s.credit.saturating_add(u64::from(n));
                }
            }
            Message::SetClock { secs, nanos } => match system::set_clock(secs, nanos) {
                Ok((previous_secs, previous_nanos)) => self.send(
                    id,
                    &Message::ClockSet {
                        previous_secs,
                        previous_nanos,
                    },
                ),
                Err(e) => self.error(id, ErrorCode::Failed, format!("clock_settime: {e}")),
            },
            Message::AddEntropy { data, reseed } => match system::add_entropy(&data, reseed) {
                Ok(()) => self.send(id, &Message::Done),
                Err(e) => self.error(id, ErrorCode::Failed, format!("entropy: {e}")),
            },
            Message::Freeze { mounts, timeout_ms } => {
                if self.frozen.is_some() {
                    return self.error(id, ErrorCode::Failed, "already frozen".into());
                }
                match system::freeze(&mounts, &self.hidden) {
                    Ok(fs) if fs.is_empty() => {
                        self.error(id, ErrorCode::Unsupported, "no filesystem to freeze".into())
                    }
                    Ok(fs) => {
                        let names = fs.iter().map(|f| f.name.clone()).collect();
                        let t = match timeout_ms {
                            0 => DEFAULT_FREEZE,
                            ms => Duration::from_millis(u64::from(ms.min(MAX_FREEZE_MS))),
                        };
                        self.frozen = Some(system::Frozen {
                            fs,
                            deadline: Instant::now() + t,
                        });
                        self.send(id, &Message::Frozen(names));
                    }
                    Err(e) => self.error(id, ErrorCode::Failed, e),
                }
            }
            Message::Thaw => {
                let names = system::thaw(self.frozen.take().map(|f| f.fs).unwrap_or_default());
                self.send(id, &Message::Thawed(names));
            }
            Message::Shutdown(action) => self.shutdown(id, action),
            other => self.error(
                id,
                ErrorCode::UnknownKind,
                format!("kind {:#06x} is not a request", other.kind()),
            ),
        }
    }

    fn exec(&mut self, id: u32, req: &banger_agent::proto::Exec) {
        if id == 0 {
            return self.error(
                id,
                ErrorCode::Malformed,
                "session id 0 is the connection's".into(),
            );
        }
        if self.sessions.contains_key(&id) {
            return self.error(
                id,
                ErrorCode::SessionExists,
                format!("session {id} is running"),
            );
        }
        if self.sessions.len() >= MAX_SESSIONS {
            return self.error(
                id,
                ErrorCode::TooManySessions,
                format!("{MAX_SESSIONS} sessions at once"),
            );
        }
        match session::spawn(req) {
            Ok(s) => {
                let pid = s.pid as u32;
                self.sessions.insert(id, s);
                self.send(id, &Message::Started { pid });
            }
            Err(e) => self.error(id, ErrorCode::ExecFailed, e.0),
        }
    }

    fn shutdown(&mut self, id: u32, action: ShutdownAction) {
        self.send(id, &Message::Done);
        self.flush_blocking(Duration::from_secs(1));
        let init = std::fs::read_link("/proc/1/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        match system::plan_shutdown(action, self.opts.pid1, &init) {
            Ending::Now => system::end_now(action, self.opts.pid1),
            Ending::AskInit {
                signal,
                fallback_after,
            } => {
                eprintln!("banger-agent: asking init ({init}) to {action:?}");
                if sys::kill(1, signal).is_err() {
                    system::end_now(action, self.opts.pid1);
                }
                self.shutdown = Some((action, Instant::now() + fallback_after));
            }
        }
    }

    fn flush_stdin(&mut self, id: u32) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        s.flush_stdin();
        if let Some(n) = s.take_stdin_credit() {
            self.send(id, &Message::StdinCredit(n));
        }
    }

    /// One read of a session's stdout (or stderr), within its credit.
    fn read_stream(&mut self, id: u32, stderr: bool) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(fd) = (if stderr { &s.err } else { &s.out }) else {
            return;
        };
        let max = (s.credit.min(DATA_CHUNK as u64) as usize).min(self.buf.len());
        if max == 0 {
            return;
        }
        let close = match sys::read(fd.as_fd(), &mut self.buf[..max]) {
            Ok(0) => true,
            Ok(n) => {
                s.credit -= n as u64;
                let k = if stderr { kind::STDERR } else { kind::STDOUT };
                // n <= DATA_CHUNK < MAX_PAYLOAD: encoding cannot fail.
                let _ = encode_frame(k, id, &self.buf[..n], &mut self.out);
                false
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                s.may_close_empty_stream(Instant::now())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
            // EIO: a pty whose every slave handle closed.
            Err(_) => true,
        };
        if close {
            if stderr {
                s.err = None;
            } else {
                s.out = None;
            }
        }
        self.write_channel();
    }

    fn reap(&mut self) {
        let now = Instant::now();
        while let Some((pid, status)) = sys::reap_any() {
            // Anything else is an orphan we adopted as init.
            if let Some(s) = self.sessions.values_mut().find(|s| s.pid == pid) {
                s.exited = Some((status, now));
            }
        }
    }

    fn finish_sessions(&mut self) {
        let done: Vec<u32> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.finished())
            .map(|(&id, _)| id)
            .collect();
        for id in done {
            let Some(s) = self.sessions.remove(&id) else {
                continue;
            };
            let Some((st, _)) = s.exited else { continue };
            self.send(
                id,
                &Message::Exited {
                    code: st.code,
                    signal: st.signal,
                },
            );
        }
    }
}

/// Serves forever on a channel that may not exist yet (the agent as PID 1
/// must never return): reaps children while it waits for one.
pub fn serve_as_init(opts_system: bool, hidden: Vec<Fs>) -> ! {
    let mut hidden = Some(hidden);
    loop {
        match crate::channel::find(Duration::from_secs(5)) {
            Ok(chan) => {
                let opts = Options {
                    pid1: true,
                    system_requests: opts_system,
                };
                match Server::new(chan, opts, hidden.take().unwrap_or_default()) {
                    Ok(mut s) => {
                        if let Err(e) = s.run() {
                            eprintln!("banger-agent: {e}");
                        }
                    }
                    Err(e) => eprintln!("banger-agent: {e}"),
                }
            }
            Err(e) => eprintln!("banger-agent: {e}; looking again"),
        }
        while sys::reap_any().is_some() {}
        std::thread::sleep(Duration::from_secs(1));
    }
}
