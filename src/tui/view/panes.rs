//! The panes that take the body of the screen: a VM's logs, an image's
//! package manifest, a build's progress.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use super::{SPINNER, title};
use crate::tui::app::{App, Packages};
use crate::tui::build::Outcome;
use crate::tui::logs::{LogSource, LogView};

pub fn logs(frame: &mut Frame, app: &App, view: &LogView, area: Rect) {
    let t = app.theme;
    let other = match view.source {
        LogSource::Console => LogSource::Vmm,
        LogSource::Vmm => LogSource::Console,
    };
    let how = if view.following() {
        "following"
    } else {
        "paused (f follows)"
    };
    let block = Block::default().borders(Borders::ALL).title(title(format!(
        "{}: {} · {how} · tab: {}",
        view.vm,
        view.source.label(),
        other.label()
    )));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [text_area, foot] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);

    let lines = view.lines();
    let height = usize::from(text_area.height);
    let bottom = lines.len() - view.from_bottom.min(lines.len());
    let top = bottom.saturating_sub(height);
    let query = view.query.to_lowercase();
    let shown: Vec<Line> = lines[top..bottom]
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let current = view.current == Some(top + i);
            highlight(line, &query, t.matched(), current)
        })
        .collect();
    frame.render_widget(Paragraph::new(shown), text_area);

    let footer = match (&view.input, &view.note) {
        (Some(input), _) => Line::from(vec![
            Span::styled("/", t.key()),
            Span::raw(input.clone()),
            Span::styled("▏", t.key()),
        ]),
        (None, Some(note)) => Line::styled(note.clone(), t.error()),
        (None, None) => Line::styled(
            format!(
                "lines {}-{} of {}{}",
                top + usize::from(bottom > top),
                bottom,
                lines.len(),
                match view.current {
                    Some(line) if !view.query.is_empty() =>
                        format!(" · `{}` at line {}", view.query, line + 1),
                    _ => String::new(),
                }
            ),
            t.dim(),
        ),
    };
    frame.render_widget(Paragraph::new(footer), foot);
}

/// `line` with every (case-insensitive) match of `query` styled; the
/// current match's whole line is reversed as well.
fn highlight(line: &str, query: &str, matched: Style, current: bool) -> Line<'static> {
    let base = if current {
        Style::new().add_modifier(ratatui::style::Modifier::REVERSED)
    } else {
        Style::new()
    };
    if query.is_empty() {
        return Line::styled(line.to_string(), base);
    }
    let lower = line.to_lowercase();
    // Lowercasing can change byte lengths (rare scripts): then only the
    // line's own style.
    if lower.len() != line.len() {
        return Line::styled(line.to_string(), base);
    }
    let mut spans = Vec::new();
    let mut at = 0;
    for (start, found) in lower.match_indices(query) {
        if !line.is_char_boundary(start) || !line.is_char_boundary(start + found.len()) {
            continue;
        }
        spans.push(Span::styled(line[at..start].to_string(), base));
        spans.push(Span::styled(
            line[start..start + found.len()].to_string(),
            matched,
        ));
        at = start + found.len();
    }
    spans.push(Span::styled(line[at..].to_string(), base));
    Line::from(spans)
}

pub fn packages(frame: &mut Frame, app: &App, p: &Packages, area: Rect) {
    let t = app.theme;
    let (heading, body): (String, Vec<Line>) = match &p.lines {
        None => (p.image.clone(), vec![Line::styled("loading…", t.dim())]),
        Some(Err(why)) => (p.image.clone(), vec![Line::styled(why.clone(), t.error())]),
        Some(Ok(lines)) => (
            format!("{}: {} packages", p.image, lines.len()),
            lines
                .iter()
                .skip(p.top)
                .map(|l| Line::raw(l.clone()))
                .collect(),
        ),
    };
    let block = Block::default().borders(Borders::ALL).title(title(heading));
    frame.render_widget(Paragraph::new(body).block(block), area);
}

pub fn build(frame: &mut Frame, app: &App, area: Rect) {
    let t = app.theme;
    let Some(build) = &app.build else {
        return;
    };
    let state = if build.running() {
        "running"
    } else {
        "finished"
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title(format!("build {} · {state}", build.image)));
    let inner = block.inner(area);
    frame.render_widget(block, area);

    let mut steps: Vec<Line> = build
        .done
        .iter()
        .map(|(step, ms)| {
            Line::from(vec![
                Span::styled("✓ ", t.ok()),
                Span::raw(format!("{step} ({:.1} s)", *ms as f64 / 1000.0)),
            ])
        })
        .collect();
    if let Some(step) = &build.current {
        steps.push(Line::from(vec![
            Span::styled(format!("{} ", SPINNER[app.frame % SPINNER.len()]), t.busy()),
            Span::raw(step.clone()),
        ]));
    }
    let outcome: Vec<Line> = match &build.outcome {
        None => Vec::new(),
        Some(Outcome::Built(line)) => vec![Line::styled(format!("✓ {line}"), t.ok())],
        Some(Outcome::Failed(lines)) => lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Line::styled(
                    if i == 0 {
                        format!("✗ {l}")
                    } else {
                        format!("  {l}")
                    },
                    t.error(),
                )
            })
            .collect(),
    };
    // Steps on top (the newest if they overflow), the outcome at the
    // bottom, guest output in between.
    let steps_height = (steps.len() as u16).min(inner.height / 2);
    let outcome_height = (outcome.len() as u16).min(inner.height / 3);
    let [steps_area, output_area, outcome_area] = Layout::vertical([
        Constraint::Length(steps_height),
        Constraint::Min(0),
        Constraint::Length(outcome_height),
    ])
    .areas(inner);
    let skip = steps.len().saturating_sub(usize::from(steps_height));
    frame.render_widget(Paragraph::new(steps.split_off(skip)), steps_area);
    let rows = usize::from(output_area.height);
    let output: Vec<Line> = build
        .output
        .iter()
        .skip(build.output.len().saturating_sub(rows))
        .map(|l| Line::styled(format!("  {l}"), t.dim()))
        .collect();
    frame.render_widget(Paragraph::new(output), output_area);
    frame.render_widget(
        Paragraph::new(outcome).wrap(Wrap { trim: false }),
        outcome_area,
    );
}
