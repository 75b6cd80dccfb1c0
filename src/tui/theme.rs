//! Colours, or none: with `NO_COLOR` set (https://no-color.org) every
//! distinction is made with bold, underline and reverse video instead.

use ratatui::style::{Color, Modifier, Style};

use crate::model::VmState;

/// How things are told apart on screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    /// False under `NO_COLOR`.
    pub color: bool,
}

impl Theme {
    /// Colour unless `NO_COLOR` is set to something.
    pub fn from_env() -> Theme {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Theme { color: !no_color }
    }

    pub fn plain() -> Theme {
        Theme { color: false }
    }

    pub fn colored() -> Theme {
        Theme { color: true }
    }

    fn fg(self, color: Color, fallback: Style) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            fallback
        }
    }

    /// A VM state: green running, yellow on its way, red failed.
    pub fn state(self, state: VmState) -> Style {
        match state {
            VmState::Running => self.fg(Color::Green, Style::new().add_modifier(Modifier::BOLD)),
            VmState::Failed => self.fg(
                Color::Red,
                Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            ),
            VmState::Creating
            | VmState::Starting
            | VmState::Stopping
            | VmState::Deleting
            | VmState::Suspending
            | VmState::Restoring
            | VmState::Forking => {
                self.fg(Color::Yellow, Style::new().add_modifier(Modifier::ITALIC))
            }
            VmState::Paused | VmState::Suspended => self.fg(Color::Cyan, Style::new()),
            VmState::Created | VmState::Stopped => self.fg(Color::DarkGray, Style::new()),
        }
    }

    /// The selected row: reverse video, so a row's own colours still show.
    pub fn selected(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    pub fn header(self) -> Style {
        self.fg(Color::Cyan, Style::new())
            .add_modifier(Modifier::BOLD)
    }

    pub fn key(self) -> Style {
        self.fg(Color::Cyan, Style::new())
            .add_modifier(Modifier::BOLD)
    }

    pub fn dim(self) -> Style {
        self.fg(Color::DarkGray, Style::new())
    }

    pub fn error(self) -> Style {
        self.fg(Color::Red, Style::new())
            .add_modifier(Modifier::BOLD)
    }

    pub fn ok(self) -> Style {
        self.fg(Color::Green, Style::new())
    }

    pub fn busy(self) -> Style {
        self.fg(Color::Yellow, Style::new())
    }

    /// The lost-daemon banner.
    pub fn banner(self) -> Style {
        if self.color {
            Style::new()
                .bg(Color::Red)
                .fg(Color::White)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        }
    }

    /// A search match in the logs pane.
    pub fn matched(self) -> Style {
        if self.color {
            Style::new().bg(Color::Yellow).fg(Color::Black)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }

    pub fn cpu_line(self) -> Style {
        self.fg(Color::Green, Style::new())
    }

    pub fn memory_line(self) -> Style {
        self.fg(Color::Magenta, Style::new())
    }
}
