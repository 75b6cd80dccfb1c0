//! Popups over the screen: help, the last error, the delete confirmation
//! and the forms.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use super::title;
use crate::tui::app::App;
use crate::tui::form::Form;
use crate::tui::keys::HELP;

/// A box of at most `width`×`height` in the middle of `area`, cleared.
fn popup(frame: &mut Frame, area: Rect, width: u16, height: u16, heading: String) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [rect] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    frame.render_widget(Clear, rect);
    let block = Block::default().borders(Borders::ALL).title(title(heading));
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    inner
}

pub fn help(frame: &mut Frame, app: &App, area: Rect) {
    let t = app.theme;
    let key = |k: &str, what: &str| {
        Line::from(vec![
            Span::styled(format!("{k:>6}  "), t.key()),
            Span::raw(what.to_string()),
        ])
    };
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what, place)| {
            let what = match *place {
                "vm" => format!("{what} (VMs)"),
                "image" => format!("{what} (images)"),
                _ => what.to_string(),
            };
            key(k, &what)
        })
        .collect();
    lines.push(key("↑↓ jk", "move (pgup/pgdn, g/G)"));
    lines.push(key("esc", "clear the filter, else quit"));
    lines.push(Line::styled(
        "  logs: / search, n/N next/previous, f follow",
        t.dim(),
    ));
    let height = lines.len() as u16 + 2;
    let inner = popup(frame, area, 50, height, "keys".into());
    frame.render_widget(Paragraph::new(lines), inner);
}

pub fn error(frame: &mut Frame, app: &App, area: Rect) {
    let text = app.last_error.clone().unwrap_or_default();
    let width = area.width.saturating_sub(4).min(100);
    let inner = popup(
        frame,
        area,
        width,
        area.height.saturating_sub(2),
        "last error".into(),
    );
    frame.render_widget(
        Paragraph::new(text)
            .style(app.theme.error())
            .wrap(Wrap { trim: false }),
        inner,
    );
}

pub fn confirm_delete(frame: &mut Frame, app: &App, name: &str, area: Rect) {
    let t = app.theme;
    let inner = popup(frame, area, 52, 5, "delete".into());
    let lines = vec![
        Line::raw(format!("Delete VM {name} and its disks?")),
        Line::from(""),
        Line::from(vec![
            Span::styled("y", t.key()),
            Span::raw(" delete   "),
            Span::styled("any other key", t.key()),
            Span::raw(" keep it"),
        ]),
    ];
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), inner);
}

pub fn form(frame: &mut Frame, app: &App, form: &Form, area: Rect) {
    let t = app.theme;
    let height = form.fields.len() as u16 + 4;
    let inner = popup(frame, area, 62, height, form.title());
    let label_width = form.fields.iter().map(|f| f.label.len()).max().unwrap_or(0);
    let mut lines: Vec<Line> = form
        .fields
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let focused = i == form.focus;
            let label = Span::styled(
                format!("{:>label_width$}  ", field.label),
                if focused { t.key() } else { t.dim() },
            );
            let mut spans = vec![label];
            if field.value.is_empty() {
                spans.push(Span::styled(field.placeholder.to_string(), t.dim()));
            } else if field.toggle {
                spans.push(Span::raw(format!("[{}]", field.value)));
            } else {
                spans.push(Span::raw(field.value.clone()));
            }
            if focused && !field.toggle {
                spans.insert(
                    spans.len() - usize::from(field.value.is_empty()),
                    Span::styled("▏", t.key()),
                );
            }
            let line = Line::from(spans);
            if focused {
                line.style(t.selected())
            } else {
                line
            }
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(match &form.error {
        Some(error) => Line::styled(error.clone(), t.error()),
        None => Line::styled("⏎ submit · tab next · space toggles · esc cancel", t.dim()),
    });
    frame.render_widget(Paragraph::new(lines), inner);
}
