//! Drawing: a pure function of the [`App`] onto a frame. The screen is a
//! title line with the tabs, the lost-daemon banner when it applies, the
//! VM table and the selected VM's details (or the images table), a status
//! line and the help bar; panes and popups go over it by mode.

mod panes;
mod popups;
mod vms;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::app::{App, Connection, Mode, Tab};
use super::keys::HELP;

/// The smallest screen worth drawing on.
const MIN_SIZE: (u16, u16) = (30, 8);

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let text = format!(
            "terminal too small ({}×{}): banger tui needs {}×{}",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let banner = matches!(app.connection, Connection::Lost(_));
    let status = status_lines(app, area.width);
    let [title, banner_area, body, status_area, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(u16::from(banner)),
        Constraint::Min(3),
        Constraint::Length(status.len() as u16),
        Constraint::Length(1),
    ])
    .areas(area);

    title_line(frame, app, title);
    if matches!(app.connection, Connection::Lost(_)) {
        let text = " bangerd is not answering: reconnecting every second (e: why)";
        frame.render_widget(Paragraph::new(text).style(app.theme.banner()), banner_area);
    }
    match &app.mode {
        Mode::Logs(view) => panes::logs(frame, app, view, body),
        Mode::Packages(p) => panes::packages(frame, app, p, body),
        Mode::Build => panes::build(frame, app, body),
        _ => match app.tab {
            Tab::Vms => vms::vm_tab(frame, app, body),
            Tab::Images => vms::images_tab(frame, app, body),
        },
    }
    frame.render_widget(Paragraph::new(status), status_area);
    help_bar(frame, app, help);
    match &app.mode {
        Mode::Help => popups::help(frame, app, area),
        Mode::Error => popups::error(frame, app, area),
        Mode::ConfirmDelete(name) => popups::confirm_delete(frame, app, name, area),
        Mode::Form(form) => popups::form(frame, app, form, area),
        _ => {}
    }
}

fn title_line(frame: &mut Frame, app: &App, area: Rect) {
    let t = app.theme;
    let tab = |label: String, on: bool| {
        if on {
            Span::styled(
                format!(" {label} "),
                t.selected().add_modifier(Modifier::BOLD),
            )
        } else {
            Span::styled(format!(" {label} "), t.dim())
        }
    };
    let mut spans = vec![
        Span::styled(" banger ", t.header()),
        tab(format!("VMs ({})", app.vms.len()), app.tab == Tab::Vms),
        tab(
            format!("Images ({})", app.images.len()),
            app.tab == Tab::Images,
        ),
    ];
    if app.tab == Tab::Vms {
        let arrow = if app.sort.descending { "▼" } else { "▲" };
        spans.push(Span::styled(
            format!("  sort: {} {arrow}", app.sort.column.title().to_lowercase()),
            t.dim(),
        ));
        if !app.filter.is_empty() || app.mode == Mode::Filter {
            spans.push(Span::raw(format!("  filter: {}", app.filter)));
        }
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The status line: what is running (with a spinner), then the last
/// message; an error may take up to three lines. While the filter is
/// typed, the filter.
fn status_lines(app: &App, width: u16) -> Vec<Line<'static>> {
    let t = app.theme;
    if app.mode == Mode::Filter {
        return vec![Line::from(vec![
            Span::styled("/", t.key()),
            Span::raw(app.filter.clone()),
            Span::styled("▏", t.key()),
            Span::styled("  ⏎ keep · esc clear", t.dim()),
        ])];
    }
    let mut spans = Vec::new();
    let mut busy: Vec<String> = app.busy.clone();
    if let Some(build) = app.build.as_ref().filter(|b| b.running()) {
        busy.push(match &build.current {
            Some(step) => format!("building {}: {step}", build.image),
            None => format!("building {}", build.image),
        });
    }
    if !busy.is_empty() {
        let spin = SPINNER[app.frame % SPINNER.len()];
        spans.push(Span::styled(
            format!("{spin} {} ", busy.join(", ")),
            t.busy(),
        ));
    }
    let Some(status) = &app.status else {
        return vec![Line::from(spans)];
    };
    let style = if status.error { t.error() } else { t.ok() };
    let mut text = status.text.lines().next().unwrap_or_default().to_string();
    if status.text.contains('\n') {
        text.push_str(" … (e: all of it)");
    }
    spans.push(Span::styled(text, style));
    let line = Line::from(spans);
    // Long errors wrap onto at most three lines; the rest is behind `e`.
    let cells = line.width();
    let width = usize::from(width.max(1));
    if !status.error || cells <= width {
        return vec![line];
    }
    let flat: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
    let chars: Vec<char> = flat.chars().collect();
    chars
        .chunks(width)
        .take(3)
        .map(|chunk| Line::styled(chunk.iter().collect::<String>(), style))
        .collect()
}

/// The keys that apply here, as many as fit; `?` always.
fn help_bar(frame: &mut Frame, app: &App, area: Rect) {
    let t = app.theme;
    let entries: Vec<(&str, &str)> = match &app.mode {
        Mode::Logs(_) => vec![
            ("tab", "console/vmm"),
            ("/", "search"),
            ("n/N", "next/prev"),
            ("↑↓", "scroll"),
            ("f", "follow"),
            ("esc", "close"),
        ],
        Mode::Packages(_) => vec![("↑↓", "scroll"), ("esc", "close")],
        Mode::Build if app.build.as_ref().is_some_and(|b| b.running()) => {
            vec![("x", "cancel"), ("esc", "hide (keeps building)")]
        }
        Mode::Build => vec![("esc", "close")],
        Mode::Form(_) => vec![
            ("⏎", "submit"),
            ("tab", "next field"),
            ("space", "toggle"),
            ("esc", "cancel"),
        ],
        Mode::ConfirmDelete(_) => vec![("y", "delete"), ("any key", "keep")],
        Mode::Help | Mode::Error => vec![("any key", "close")],
        Mode::Filter => vec![("⏎", "keep filter"), ("esc", "clear")],
        Mode::Normal => {
            let here = match app.tab {
                Tab::Vms => "vm",
                Tab::Images => "image",
            };
            let other_tab = match app.tab {
                Tab::Vms => "images",
                Tab::Images => "VMs",
            };
            HELP.iter()
                .filter(|(_, _, w)| w.is_empty() || *w == here)
                .filter(|(k, _, _)| !matches!(*k, "?" | "e"))
                .map(|(k, what, _)| match *k {
                    "tab" => (*k, other_tab),
                    _ => (*k, first_word(what)),
                })
                .chain([("?", "help")])
                .collect()
        }
    };
    let span_pair = |(key, what): (&str, &str)| {
        vec![
            Span::styled(key.to_string(), t.key()),
            Span::raw(format!(" {what} ")),
        ]
    };
    // The last entry (help, or how to close) always shows; the others in
    // order while they fit.
    let (body, last) = entries.split_at(entries.len().saturating_sub(1));
    let last: Vec<Span> = last.iter().flat_map(|e| span_pair(*e)).collect();
    let room = usize::from(area.width).saturating_sub(last.iter().map(Span::width).sum());
    let mut spans: Vec<Span> = Vec::new();
    let mut used = 0;
    for entry in body {
        let pair = span_pair(*entry);
        let w: usize = pair.iter().map(Span::width).sum();
        if used + w > room {
            break;
        }
        used += w;
        spans.extend(pair);
    }
    spans.extend(last);
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// `create a VM` → `create`: what the help bar has room for.
fn first_word(text: &str) -> &str {
    text.split_whitespace().next().unwrap_or(text)
}

/// A block's title: ` text `.
fn title(text: impl Into<String>) -> Line<'static> {
    Line::from(format!(" {} ", text.into())).style(Style::new().add_modifier(Modifier::BOLD))
}
