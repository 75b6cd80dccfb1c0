//! An image build as the TUI shows it: the daemon's [`Progress`] events
//! (the same enum the CLI draws) folded into steps, output and an outcome.

use std::collections::VecDeque;

use crate::rpc::api::Progress;
use crate::system::text::printable_line as printable;

/// How many lines of guest output are kept.
const OUTPUT_LINES: usize = 500;

/// One build, running or finished.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildState {
    pub image: String,
    /// Finished steps and how long each took (ms).
    pub done: Vec<(String, u64)>,
    /// The step running now.
    pub current: Option<String>,
    /// Guest output and notes, newest last.
    pub output: VecDeque<String>,
    pub outcome: Option<Outcome>,
}

/// How a build ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A line saying what was built.
    Built(String),
    /// What went wrong, outermost first, with the hint and log.
    Failed(Vec<String>),
}

impl BuildState {
    pub fn new(image: &str) -> BuildState {
        BuildState {
            image: image.into(),
            done: Vec::new(),
            current: None,
            output: VecDeque::new(),
            outcome: None,
        }
    }

    pub fn running(&self) -> bool {
        self.outcome.is_none()
    }

    pub fn show(&mut self, event: Progress) {
        match event {
            Progress::Step { step } => self.current = Some(step),
            Progress::StepDone { step, ms } => {
                self.current = None;
                self.done.push((step, ms));
            }
            Progress::Output { line, .. } => self.line(&line),
            Progress::Note { message } => self.line(&message),
            Progress::Done { image } => {
                self.current = None;
                self.outcome = Some(Outcome::Built(image.summary()));
            }
            Progress::Failed {
                step,
                error,
                hint,
                output_tail,
                log,
            } => {
                self.current = None;
                let mut lines = vec![match step {
                    Some(step) => format!("{step} failed"),
                    None => "the build failed".into(),
                }];
                lines.extend(error.iter().map(|e| printable(e)));
                lines.extend(hint.map(|h| format!("hint: {}", printable(&h))));
                if self.output.is_empty() {
                    for line in output_tail {
                        self.line(&line);
                    }
                }
                lines.extend(log.map(|l| format!("log: {}", l.display())));
                self.outcome = Some(Outcome::Failed(lines));
            }
        }
    }

    /// The stream ended without a last event: the daemon went away, or
    /// the build was cancelled.
    pub fn ended(&mut self, why: String) {
        if self.outcome.is_none() {
            self.current = None;
            self.outcome = Some(Outcome::Failed(vec![why]));
        }
    }

    fn line(&mut self, line: &str) {
        if self.output.len() == OUTPUT_LINES {
            self.output.pop_front();
        }
        self.output.push_back(printable(line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_fold_into_steps_and_a_failure() {
        let mut build = BuildState::new("dev");
        build.show(Progress::Step {
            step: "clone base".into(),
        });
        build.show(Progress::StepDone {
            step: "clone base".into(),
            ms: 1200,
        });
        build.show(Progress::Step {
            step: "install packages".into(),
        });
        build.show(Progress::Output {
            step: "install packages".into(),
            stream: crate::rpc::api::OutputStream::Stdout,
            line: "\u{1b}[31mE: no such package\u{1b}[0m".into(),
        });
        assert_eq!(build.current.as_deref(), Some("install packages"));
        build.show(Progress::Failed {
            step: Some("install packages".into()),
            error: vec!["apt-get failed".into()],
            hint: None,
            output_tail: vec![],
            log: None,
        });
        assert_eq!(build.done, [("clone base".to_string(), 1200)]);
        assert_eq!(build.output, ["E: no such package"]);
        assert!(!build.running());
        assert_eq!(
            build.outcome,
            Some(Outcome::Failed(vec![
                "install packages failed".into(),
                "apt-get failed".into()
            ]))
        );
    }
}
