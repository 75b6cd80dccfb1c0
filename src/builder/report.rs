//! A build's progress: each event goes to the client as one NDJSON line
//! and, as plain text, to the build's log file; the last lines of output
//! are kept for the error message. Everything here is bounded, whatever
//! the guest prints: lines are split at [`MAX_LINE`], the log is capped
//! like every other log, and output lines wait for a slow client only up
//! to [`MAX_QUEUED_OUTPUT`] (then they are dropped, never a step or the
//! result).

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::rpc::api::{OutputStream, Progress, Timing};
use crate::vmm::logcap::CappedFile;

/// How many lines of output a failure shows.
const TAIL_LINES: usize = 20;

/// The longest line kept whole; a longer one is cut into lines of this size.
pub const MAX_LINE: usize = 4096;

/// Output lines queued for a client that reads slower than the guest
/// prints; more are dropped (and counted) until it catches up.
pub const MAX_QUEUED_OUTPUT: usize = 1024;

/// A build's events on their way to the client: a channel that never holds
/// more than [`MAX_QUEUED_OUTPUT`] output lines.
pub fn progress_channel() -> (ProgressTx, ProgressRx) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        ProgressTx {
            tx,
            queued: queued.clone(),
        },
        ProgressRx { rx, queued },
    )
}

/// The reporter's end of [`progress_channel`].
#[derive(Clone)]
pub struct ProgressTx {
    tx: UnboundedSender<Progress>,
    /// Output lines sent and not yet taken by the client.
    queued: Arc<AtomicUsize>,
}

impl ProgressTx {
    /// Sends `event`; an output line only while fewer than
    /// [`MAX_QUEUED_OUTPUT`] wait. Says whether it was sent.
    fn send(&self, event: Progress) -> bool {
        if matches!(event, Progress::Output { .. }) {
            if self.queued.load(Ordering::Relaxed) >= MAX_QUEUED_OUTPUT {
                return false;
            }
            self.queued.fetch_add(1, Ordering::Relaxed);
        }
        // A client that left is noticed through `Cancelled`.
        self.tx.send(event).is_ok()
    }
}

/// The client's end of [`progress_channel`].
pub struct ProgressRx {
    rx: UnboundedReceiver<Progress>,
    queued: Arc<AtomicUsize>,
}

impl ProgressRx {
    pub async fn recv(&mut self) -> Option<Progress> {
        let event = self.rx.recv().await?;
        if matches!(event, Progress::Output { .. }) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        Some(event)
    }
}

/// Completes when the client stops listening (it hung up, or Ctrl-C).
pub struct Cancelled(UnboundedSender<Progress>);

impl Cancelled {
    pub async fn wait(&self) {
        self.0.closed().await
    }
}

/// Where a build's events go.
pub struct Reporter {
    tx: ProgressTx,
    log: Option<(PathBuf, CappedFile)>,
    /// Output lines the client did not get (it fell behind) in this step.
    dropped: usize,
    /// The step running now and when it began.
    current: Option<(String, Instant)>,
    pub timings: Vec<Timing>,
    tail: VecDeque<String>,
}

impl Reporter {
    /// A reporter sending on `tx`, and what tells the build its client left.
    pub fn new(tx: ProgressTx) -> (Reporter, Cancelled) {
        let cancelled = Cancelled(tx.tx.clone());
        let reporter = Reporter {
            tx,
            log: None,
            dropped: 0,
            current: None,
            timings: Vec::new(),
            tail: VecDeque::new(),
        };
        (reporter, cancelled)
    }

    /// Also writes everything to `path` from now on, rotating it at `cap`
    /// bytes like every other log.
    pub fn log_to(&mut self, path: PathBuf, cap: u64) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = CappedFile::open(&path, cap)?;
        self.log = Some((path, file));
        Ok(())
    }

    pub fn log_path(&self) -> Option<PathBuf> {
        self.log.as_ref().map(|(p, _)| p.clone())
    }

    /// The step running now, if any.
    pub fn current_step(&self) -> Option<String> {
        self.current.as_ref().map(|(s, _)| s.clone())
    }

    /// Begins `step`, finishing the one before it.
    pub fn step(&mut self, step: &str) {
        self.finish();
        self.write_log(&format!("==> {step}"));
        self.current = Some((step.to_string(), Instant::now()));
        self.tail.clear();
        self.send(Progress::Step {
            step: step.to_string(),
        });
    }

    /// Finishes the running step, recording how long it took.
    pub fn finish(&mut self) {
        if self.dropped > 0 {
            let dropped = std::mem::take(&mut self.dropped);
            self.send(Progress::Note {
                message: format!(
                    "{dropped} lines of output were not shown (the client fell behind); the build log has them"
                ),
            });
        }
        if let Some((step, began)) = self.current.take() {
            let ms = began.elapsed().as_millis() as u64;
            self.write_log(&format!("    ({step}: {ms} ms)"));
            self.timings.push(Timing {
                step: step.clone(),
                ms,
            });
            self.send(Progress::StepDone { step, ms });
        }
    }

    /// One line of output from the running step.
    pub fn output(&mut self, stream: OutputStream, line: &str) {
        let line = line.trim_end();
        // The log is for people to read (and `cat`): no control sequences.
        let shown = crate::system::text::printable(line.as_bytes());
        self.write_log(&format!("    {shown}"));
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
        let step = self.current_step().unwrap_or_default();
        let sent = self.tx.send(Progress::Output {
            step,
            stream,
            line: line.to_string(),
        });
        if !sent {
            self.dropped += 1;
        }
    }

    /// Something to tell the user that is not a step.
    pub fn note(&mut self, message: &str) {
        self.write_log(message);
        self.send(Progress::Note {
            message: message.to_string(),
        });
    }

    /// The last lines of output.
    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    /// The final event.
    pub fn end(&mut self, event: Progress) {
        if let Progress::Failed { error, .. } = &event {
            self.write_log(&format!("FAILED: {}", error.join(": ")));
        }
        self.send(event);
    }

    fn send(&self, event: Progress) {
        self.tx.send(event);
    }

    fn write_log(&mut self, line: &str) {
        if let Some((_, file)) = &mut self.log {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// Splits a byte stream into lines for [`Reporter::output`]: `\n` and `\r`
/// (apt's progress) end a line, and so does reaching [`MAX_LINE`] bytes;
/// invalid UTF-8 is replaced.
#[derive(Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// Feeds `bytes`, calling `line` for each complete line.
    pub fn feed(&mut self, bytes: &[u8], mut line: impl FnMut(&str)) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.partial.is_empty() {
                    line(&String::from_utf8_lossy(&self.partial));
                    self.partial.clear();
                }
            } else {
                self.partial.push(b);
                if self.partial.len() == MAX_LINE {
                    line(&String::from_utf8_lossy(&self.partial));
                    self.partial.clear();
                }
            }
        }
    }

    /// The last line, if it had no newline.
    pub fn flush(&mut self, mut line: impl FnMut(&str)) {
        if !self.partial.is_empty() {
            line(&String::from_utf8_lossy(&self.partial));
            self.partial.clear();
        }
    }
}

impl crate::image::oci::Progress for Reporter {
    fn step(&mut self, step: &str) {
        Reporter::step(self, step)
    }

    fn note(&mut self, message: &str) {
        Reporter::note(self, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_on_newlines_and_carriage_returns() {
        let mut lines = Lines::default();
        let mut got = Vec::new();
        lines.feed(b"one\ntw", |l| got.push(l.to_string()));
        lines.feed(b"o\r\n\rthree 50%\rthree 100%\nfour", |l| {
            got.push(l.to_string())
        });
        lines.flush(|l| got.push(l.to_string()));
        assert_eq!(got, ["one", "two", "three 50%", "three 100%", "four"]);
    }

    #[test]
    fn a_line_without_an_end_is_cut_at_the_limit() {
        let mut lines = Lines::default();
        let mut got = Vec::new();
        let chunk = vec![b'x'; 1000];
        for _ in 0..10 {
            lines.feed(&chunk, |l| got.push(l.len()));
        }
        lines.flush(|l| got.push(l.len()));
        assert_eq!(got, [MAX_LINE, MAX_LINE, 10_000 - 2 * MAX_LINE]);
    }

    #[tokio::test]
    async fn a_slow_client_loses_output_lines_but_never_steps() {
        let (tx, mut rx) = progress_channel();
        let (mut reporter, _cancelled) = Reporter::new(tx);
        reporter.step("flood");
        for i in 0..MAX_QUEUED_OUTPUT + 500 {
            reporter.output(OutputStream::Stdout, &format!("line {i}"));
        }
        reporter.step("next");
        let mut outputs = 0;
        let mut others = Vec::new();
        while let Ok(Some(event)) =
            tokio::time::timeout(std::time::Duration::from_millis(50), rx.recv()).await
        {
            match event {
                Progress::Output { .. } => outputs += 1,
                other => others.push(other),
            }
        }
        assert_eq!(outputs, MAX_QUEUED_OUTPUT);
        assert!(matches!(&others[0], Progress::Step { step } if step == "flood"));
        assert!(
            matches!(&others[1], Progress::Note { message } if message.starts_with("500 lines")),
            "{others:?}"
        );
        assert!(matches!(&others[2], Progress::StepDone { .. }));
        assert!(matches!(&others[3], Progress::Step { step } if step == "next"));
        // Once the client caught up, output flows again.
        reporter.output(OutputStream::Stdout, "after");
        assert!(matches!(rx.recv().await, Some(Progress::Output { .. })));
    }

    #[tokio::test]
    async fn steps_are_timed_and_the_tail_is_bounded() {
        let (tx, mut rx) = progress_channel();
        let (mut reporter, _cancelled) = Reporter::new(tx);
        reporter.step("a");
        for i in 0..30 {
            reporter.output(OutputStream::Stdout, &format!("line {i}"));
        }
        assert_eq!(reporter.tail().len(), TAIL_LINES);
        assert_eq!(reporter.tail().last().unwrap(), "line 29");
        // A failure shows the output of its own step only.
        reporter.step("b");
        assert!(reporter.tail().is_empty());
        reporter.finish();
        assert_eq!(reporter.timings.len(), 2);
        assert_eq!(rx.recv().await, Some(Progress::Step { step: "a".into() }));
    }
}
