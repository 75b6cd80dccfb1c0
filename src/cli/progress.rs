//! Drawing a long operation's progress events: on a terminal a spinner per
//! step with its time and the last lines of guest output under it; on
//! anything else plain lines; with `--json` the events themselves.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::rpc::api::{ImageBuilt, Progress};

/// How many lines of output show under a running step.
const TAIL: usize = 5;

enum Mode {
    Json,
    Plain,
    Terminal {
        bars: MultiProgress,
        /// The running step's spinner, and the output lines under it.
        step: Option<(ProgressBar, Vec<ProgressBar>)>,
        tail: VecDeque<String>,
    },
}

/// Renders one operation's events.
pub struct BuildView {
    mode: Mode,
    last: Option<Progress>,
}

impl BuildView {
    pub fn new(json: bool) -> BuildView {
        let mode = if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Terminal {
                bars: MultiProgress::new(),
                step: None,
                tail: VecDeque::new(),
            }
        } else {
            Mode::Plain
        };
        BuildView { mode, last: None }
    }

    /// The last event seen: `done` or `failed` when the stream ended well.
    pub fn last(&self) -> Option<&Progress> {
        self.last.as_ref()
    }

    pub fn show(&mut self, event: &Progress) {
        match &mut self.mode {
            // Data, passed through as it came; it was decoded from JSON,
            // so it encodes again (its paths are UTF-8 strings).
            Mode::Json => println!(
                "{}",
                serde_json::to_string(event).expect("a decoded event encodes")
            ),
            Mode::Plain => plain(event),
            Mode::Terminal { bars, step, tail } => terminal(bars, step, tail, event),
        }
        self.last = Some(event.clone());
    }

    /// Ctrl-C: the connection is about to close, which cancels the build.
    pub fn interrupted(&mut self) {
        if let Mode::Terminal { step, .. } = &mut self.mode {
            clear(step);
        }
        eprintln!(
            "interrupted: the build is cancelled; bangerd removes its build VM and keeps the log"
        );
    }
}

fn plain(event: &Progress) {
    match event {
        Progress::Step { step } => eprintln!("==> {step}"),
        Progress::StepDone { ms, .. } => eprintln!("    done in {}", secs(*ms)),
        Progress::Output { line, .. } => eprintln!("    {}", printable(line)),
        Progress::Note { message } => eprintln!("{message}"),
        Progress::Done { image } => summary(image),
        Progress::Failed { .. } => failed(event),
    }
}

fn terminal(
    bars: &MultiProgress,
    step: &mut Option<(ProgressBar, Vec<ProgressBar>)>,
    tail: &mut VecDeque<String>,
    event: &Progress,
) {
    match event {
        Progress::Step { step: name } => {
            clear(step);
            tail.clear();
            let spinner = bars.add(ProgressBar::new_spinner());
            spinner.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                    .expect("a static, valid template"),
            );
            spinner.set_message(name.clone());
            spinner.enable_steady_tick(Duration::from_millis(100));
            let lines = (0..TAIL)
                .map(|_| {
                    let line = bars.add(ProgressBar::new_spinner());
                    line.set_style(
                        ProgressStyle::with_template("    {wide_msg:.dim}")
                            .expect("a static, valid template"),
                    );
                    line
                })
                .collect();
            *step = Some((spinner, lines));
        }
        Progress::StepDone { step: name, ms } => {
            clear(step);
            let _ = bars.println(format!("✓ {name} ({})", secs(*ms)));
        }
        Progress::Output { line, .. } => {
            if tail.len() == TAIL {
                tail.pop_front();
            }
            tail.push_back(printable(line));
            if let Some((_, lines)) = step {
                for (bar, text) in lines.iter().zip(tail.iter()) {
                    bar.set_message(text.clone());
                }
            }
        }
        Progress::Note { message } => {
            let _ = bars.println(message);
        }
        Progress::Done { image } => {
            clear(step);
            summary(image);
        }
        Progress::Failed { .. } => {
            clear(step);
            failed(event);
        }
    }
}

fn clear(step: &mut Option<(ProgressBar, Vec<ProgressBar>)>) {
    if let Some((spinner, lines)) = step.take() {
        spinner.finish_and_clear();
        for line in lines {
            line.finish_and_clear();
        }
    }
}

fn summary(built: &ImageBuilt) {
    println!("{}", built.summary());
    if let Some(log) = &built.log {
        println!("log: {}", log.display());
    }
}

fn failed(event: &Progress) {
    let Progress::Failed {
        step,
        error,
        hint,
        output_tail,
        log,
    } = event
    else {
        return;
    };
    match step {
        Some(step) => eprintln!("✗ {step} failed"),
        None => eprintln!("✗ build failed"),
    }
    if !output_tail.is_empty() {
        eprintln!("  last output:");
        for line in output_tail {
            eprintln!("    {}", printable(line));
        }
    }
    super::print_chain(error, hint.as_deref());
    if let Some(log) = log {
        eprintln!("log: {}", log.display());
    }
}

/// A line of guest output as it may reach the terminal: without control
/// sequences (a guest may print anything, and none of it may drive the
/// user's terminal), tabs as spaces so the spinner view measures it right.
fn printable(line: &str) -> String {
    crate::system::text::printable_line(line)
}

fn secs(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        crate::size::format_duration(ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_output_cannot_drive_the_terminal() {
        let shown = [
            ("\u{1b}[31mred\u{1b}[0m text", "red text"),
            ("a\u{7}b\u{1b}]0;title\u{7}c", "abc"),
            ("tab\there", "tab    here"),
        ];
        for (raw, text) in shown {
            assert_eq!(printable(raw), text);
        }
    }

    #[test]
    fn times_read_well() {
        assert_eq!(secs(1234), "1.2 s");
        assert_eq!(secs(125_000), "2m 5s");
    }
}
