//! The logs pane's state: a VM's serial console and VMM log as lines,
//! following what is appended, scrolled by hand, searched with `/`.

use crossterm::event::{KeyCode, KeyEvent};

/// Which of a VM's logs is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    Console,
    Vmm,
}

impl LogSource {
    pub fn label(self) -> &'static str {
        match self {
            LogSource::Console => "console",
            LogSource::Vmm => "vmm log",
        }
    }

    fn index(self) -> usize {
        match self {
            LogSource::Console => 0,
            LogSource::Vmm => 1,
        }
    }
}

/// The most lines kept of each log; older ones are dropped.
const MAX_LINES: usize = 20_000;

/// One VM's logs on screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogView {
    pub vm: String,
    pub source: LogSource,
    /// The console's and the VMM log's lines, oldest first.
    lines: [Vec<String>; 2],
    /// Whether each log's last line is still unfinished (no newline yet).
    open_line: [bool; 2],
    /// How many lines above the newest the view's bottom is; 0 follows.
    pub from_bottom: usize,
    /// The search being typed after `/`.
    pub input: Option<String>,
    /// The last search.
    pub query: String,
    /// The line the last search or `n`/`N` landed on.
    pub current: Option<usize>,
    /// Said when a search finds nothing.
    pub note: Option<String>,
}

impl LogView {
    pub fn new(vm: &str) -> LogView {
        LogView {
            vm: vm.into(),
            source: LogSource::Console,
            lines: Default::default(),
            open_line: [false; 2],
            from_bottom: 0,
            input: None,
            query: String::new(),
            current: None,
            note: None,
        }
    }

    pub fn lines(&self) -> &[String] {
        &self.lines[self.source.index()]
    }

    pub fn following(&self) -> bool {
        self.from_bottom == 0
    }

    /// Adds text read from `source` (printable already; may end mid-line).
    pub fn append(&mut self, source: LogSource, text: &str) {
        if text.is_empty() {
            return;
        }
        let i = source.index();
        let lines = &mut self.lines[i];
        let mut added = 0;
        for (n, piece) in text.split('\n').enumerate() {
            let piece = piece.replace('\t', "    ");
            let continues = n == 0 && self.open_line[i];
            match lines.last_mut() {
                Some(last) if continues => last.push_str(&piece),
                _ => {
                    lines.push(piece);
                    added += 1;
                }
            }
            self.open_line[i] = true;
        }
        // `split` yields an empty piece after a final newline: that line
        // is the next one, not yet begun.
        if text.ends_with('\n') {
            lines.pop();
            added -= 1;
            self.open_line[i] = false;
        }
        let dropped = lines.len().saturating_sub(MAX_LINES);
        lines.drain(..dropped);
        if source == self.source {
            if !self.following() {
                // Keep the view where the reader left it.
                self.from_bottom += added;
            }
            self.current = self.current.and_then(|c| c.checked_sub(dropped));
        }
        self.from_bottom = self.from_bottom.min(self.lines().len());
    }

    /// Handles a key; false when it asks to close the pane.
    pub fn key(&mut self, key: KeyEvent, page: usize) -> bool {
        if let Some(input) = &mut self.input {
            match key.code {
                KeyCode::Esc => self.input = None,
                KeyCode::Enter => {
                    self.query = std::mem::take(input);
                    self.input = None;
                    self.search(true, self.lines().len());
                }
                KeyCode::Backspace => {
                    input.pop();
                }
                KeyCode::Char(c) => input.push(c),
                _ => {}
            }
            return true;
        }
        let page = page.max(1);
        match key.code {
            KeyCode::Esc | KeyCode::Char('q') => return false,
            KeyCode::Char('/') => self.input = Some(String::new()),
            KeyCode::Char('n') => self.search(false, self.current.map_or(0, |c| c + 1)),
            KeyCode::Char('N') => self.search(true, self.current.unwrap_or(self.lines().len())),
            KeyCode::Tab => {
                self.source = match self.source {
                    LogSource::Console => LogSource::Vmm,
                    LogSource::Vmm => LogSource::Console,
                };
                self.from_bottom = 0;
                self.current = None;
            }
            KeyCode::Up | KeyCode::Char('k') => self.scroll_up(1),
            KeyCode::Down | KeyCode::Char('j') => self.scroll_down(1),
            KeyCode::PageUp => self.scroll_up(page),
            KeyCode::PageDown | KeyCode::Char(' ') => self.scroll_down(page),
            KeyCode::Home | KeyCode::Char('g') => self.from_bottom = self.lines().len(),
            KeyCode::End | KeyCode::Char('G') | KeyCode::Char('f') => self.from_bottom = 0,
            _ => {}
        }
        true
    }

    fn scroll_up(&mut self, n: usize) {
        self.from_bottom = (self.from_bottom + n).min(self.lines().len());
    }

    fn scroll_down(&mut self, n: usize) {
        self.from_bottom = self.from_bottom.saturating_sub(n);
    }

    /// Finds the query searching back from (before) `from`, or forward
    /// from (at) `from`, and puts the match at the view's bottom.
    fn search(&mut self, backward: bool, from: usize) {
        self.note = None;
        if self.query.is_empty() {
            return;
        }
        let query = self.query.to_lowercase();
        let hit = |line: &String| line.to_lowercase().contains(&query);
        let lines = self.lines();
        let found = if backward {
            lines[..from.min(lines.len())].iter().rposition(hit)
        } else {
            lines.iter().skip(from).position(hit).map(|i| i + from)
        };
        let len = lines.len();
        match found {
            Some(line) => {
                self.current = Some(line);
                self.from_bottom = len - 1 - line;
            }
            None => {
                let whither = if backward { "above" } else { "below" };
                self.note = Some(format!("`{}` not found {whither}", self.query));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(view: &mut LogView, code: KeyCode) {
        view.key(KeyEvent::from(code), 10);
    }

    #[test]
    fn text_arriving_in_pieces_makes_whole_lines() {
        let mut view = LogView::new("box");
        view.append(LogSource::Console, "one\ntw");
        view.append(LogSource::Console, "o\nthree\n");
        view.append(LogSource::Console, "four");
        assert_eq!(view.lines(), ["one", "two", "three", "four"]);
    }

    #[test]
    fn a_scrolled_view_stays_put_as_lines_arrive() {
        let mut view = LogView::new("box");
        view.append(LogSource::Console, "a\nb\nc\n");
        key(&mut view, KeyCode::Up);
        assert_eq!(view.from_bottom, 1);
        view.append(LogSource::Console, "d\ne\n");
        assert_eq!(view.from_bottom, 3);
        key(&mut view, KeyCode::End);
        assert!(view.following());
    }

    #[test]
    fn search_goes_back_then_forth() {
        let mut view = LogView::new("box");
        view.append(LogSource::Console, "boot\nerror one\nok\nerror two\nok\n");
        key(&mut view, KeyCode::Char('/'));
        for c in "ERROR".chars() {
            key(&mut view, KeyCode::Char(c));
        }
        key(&mut view, KeyCode::Enter);
        assert_eq!(view.current, Some(3));
        assert_eq!(view.from_bottom, 1);
        key(&mut view, KeyCode::Char('N'));
        assert_eq!(view.current, Some(1));
        key(&mut view, KeyCode::Char('N'));
        assert_eq!(view.current, Some(1));
        assert!(view.note.is_some());
        key(&mut view, KeyCode::Char('n'));
        assert_eq!(view.current, Some(3));
    }
}
