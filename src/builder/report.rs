//! A build's progress: each event goes to the client as one NDJSON line
//! and, as plain text, to the build's log file; the last lines of output
//! are kept for the error message.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use crate::rpc::api::{OutputStream, Progress, Timing};

/// How many lines of output a failure shows.
const TAIL_LINES: usize = 20;

/// Completes when the client stops listening (it hung up, or Ctrl-C).
pub struct Cancelled(UnboundedSender<Progress>);

impl Cancelled {
    pub async fn wait(&self) {
        self.0.closed().await
    }
}

/// Where a build's events go.
pub struct Reporter {
    tx: UnboundedSender<Progress>,
    log: Option<(PathBuf, std::fs::File)>,
    /// The step running now and when it began.
    current: Option<(String, Instant)>,
    pub timings: Vec<Timing>,
    tail: VecDeque<String>,
}

impl Reporter {
    /// A reporter sending on `tx`, and what tells the build its client left.
    pub fn new(tx: UnboundedSender<Progress>) -> (Reporter, Cancelled) {
        let cancelled = Cancelled(tx.clone());
        let reporter = Reporter {
            tx,
            log: None,
            current: None,
            timings: Vec::new(),
            tail: VecDeque::new(),
        };
        (reporter, cancelled)
    }

    /// Also writes everything to `path` from now on.
    pub fn log_to(&mut self, path: PathBuf) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::File::create(&path)?;
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
        let shown = crate::system::lines::printable(line.as_bytes());
        self.write_log(&format!("    {shown}"));
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
        let step = self.current_step().unwrap_or_default();
        self.send(Progress::Output {
            step,
            stream,
            line: line.to_string(),
        });
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
        // A client that left is noticed through `Cancelled`.
        let _ = self.tx.send(event);
    }

    fn write_log(&mut self, line: &str) {
        if let Some((_, file)) = &mut self.log {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// Splits a byte stream into lines for [`Reporter::output`]: `\n` and `\r`
/// (apt's progress) end a line; invalid UTF-8 is replaced.
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

    #[tokio::test]
    async fn steps_are_timed_and_the_tail_is_bounded() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
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
