//! The VM table with the selected VM's details under it, and the images table.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, TableState};

use super::title;
use crate::rpc::api::VmSummary;
use crate::size::{format_duration, format_size};
use crate::tui::app::App;
use crate::tui::table::{Column, layout};

/// The details pane needs this many rows, and the table at least as many
/// again, or the pane is left out.
const DETAILS_HEIGHT: u16 = 8;

pub fn vm_tab(frame: &mut Frame, app: &App, area: Rect) {
    let with_details = area.height >= DETAILS_HEIGHT * 2;
    let [table, details] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(if with_details { DETAILS_HEIGHT } else { 0 }),
    ])
    .areas(area);
    let visible = app.visible_vms();
    vm_table(frame, app, &visible, table);
    if with_details && let Some(i) = app.vm_index(&visible) {
        vm_details(frame, app, visible[i], details);
    }
}

fn vm_table(frame: &mut Frame, app: &App, visible: &[&VmSummary], area: Rect) {
    let t = app.theme;
    let empty = if !app.loaded {
        Some("loading…".to_string())
    } else if app.vms.is_empty() {
        Some("No VMs. Press c to create one.".to_string())
    } else if visible.is_empty() {
        Some(format!(
            "No VM's name contains `{}` (esc clears the filter).",
            app.filter
        ))
    } else {
        None
    };
    let cells: Vec<Vec<String>> = visible
        .iter()
        .map(|vm| {
            Column::ALL
                .iter()
                .map(|c| c.cell(vm, app.stats.get(&vm.name)))
                .collect()
        })
        .collect();
    let columns = layout(area.width, &cells);
    let header = Row::new(columns.iter().map(|(c, _)| {
        let mut text = c.title().to_string();
        if *c == app.sort.column {
            text.push(if app.sort.descending { '▼' } else { '▲' });
        }
        Cell::from(align(text, *c))
    }))
    .style(t.header());
    let rows = visible.iter().zip(&cells).map(|(vm, row)| {
        Row::new(columns.iter().map(|(c, width)| {
            let i = Column::ALL.iter().position(|x| x == c).unwrap_or(0);
            let cell = Cell::from(align(fit(&row[i], *width), *c));
            if *c == Column::State {
                cell.style(t.state(vm.state))
            } else {
                cell
            }
        }))
    });
    let widths = columns.iter().map(|(_, w)| Constraint::Length(*w));
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(t.selected())
        .highlight_symbol("▶ ");
    let mut state = TableState::default().with_selected(app.vm_index(visible));
    frame.render_stateful_widget(table, area, &mut state);
    if let Some(text) = empty {
        let below_header = Rect {
            y: area.y + 1,
            height: area.height.saturating_sub(1),
            ..area
        };
        frame.render_widget(
            Paragraph::new(format!("  {text}")).style(t.dim()),
            below_header,
        );
    }
}

/// `text` cut to `width` cells, with `…` where it was cut.
fn fit(text: &str, width: u16) -> String {
    let width = usize::from(width);
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn align(text: String, column: Column) -> Text<'static> {
    let text = Text::from(text);
    if column.numeric() {
        text.alignment(Alignment::Right)
    } else {
        text
    }
}

fn vm_details(frame: &mut Frame, app: &App, vm: &VmSummary, area: Rect) {
    let t = app.theme;
    let block = Block::default()
        .borders(Borders::TOP)
        .title(title(&vm.name));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(inner);

    let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
    let disks: Vec<String> = vm
        .disks
        .iter()
        .filter(|d| !d.shared)
        .map(|d| {
            format!(
                "{} {}/{}",
                d.role,
                format_size(d.used_bytes),
                format_size(d.apparent_bytes)
            )
        })
        .collect();
    let stats = app.stats.get(&vm.name);
    let label = |text: &'static str| Span::styled(format!("{text:<6}"), t.dim());
    let lines = vec![
        Line::from(vec![
            label("state"),
            Span::styled(vm.state.to_string(), t.state(vm.state)),
            Span::raw(format!(
                "  {}  {}",
                vm.vmm,
                stats.map_or_else(String::new, |s| format!(
                    "up {}",
                    format_duration(s.uptime_secs)
                ))
            )),
        ]),
        Line::from(vec![
            label("ip"),
            Span::raw(format!(
                "{}  {}",
                vm.ip.map_or("-".into(), |ip| ip.to_string()),
                vm.dns_name
            )),
        ]),
        Line::from(vec![
            label("image"),
            Span::raw(format!(
                "{} ({})  {} vCPU  {}",
                dash(vm.image.as_deref()),
                vm.root_mode,
                vm.vcpus,
                format_size(u64::from(vm.memory_mib) << 20)
            )),
        ]),
        Line::from(vec![label("disks"), Span::raw(disks.join(", "))]),
        Line::from(vec![
            label("ports"),
            Span::raw(if vm.published.is_empty() {
                "-".to_string()
            } else {
                vm.published.join(", ")
            }),
        ]),
    ];
    frame.render_widget(Paragraph::new(lines), left);

    let history = app.history.get(&vm.name);
    let (Some(history), Some(stats)) = (history.filter(|_| vm.state.can_stop()), stats) else {
        let text = if vm.state.can_stop() {
            "sampling…"
        } else {
            "not running"
        };
        frame.render_widget(Paragraph::new(text).style(t.dim()), right);
        return;
    };
    let [cpu_label, cpu, rss_label, rss] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Length(2),
    ])
    .areas(right);
    let max_cpu = history.cpu.iter().max().copied().unwrap_or(0);
    frame.render_widget(
        Paragraph::new(format!(
            "CPU {:.1}% (peak {:.1}%)",
            stats.cpu_percent,
            max_cpu as f64 / 10.0
        )),
        cpu_label,
    );
    let cores = u64::from(vm.vcpus.max(1)) * 1000;
    frame.render_widget(
        spark(&history.cpu, cpu.width, cores).style(t.cpu_line()),
        cpu,
    );
    frame.render_widget(
        Paragraph::new(format!(
            "RSS {} of {}",
            format_size(stats.rss_bytes),
            format_size(u64::from(vm.memory_mib) << 20)
        )),
        rss_label,
    );
    frame.render_widget(
        spark(&history.rss, rss.width, u64::from(vm.memory_mib)).style(t.memory_line()),
        rss,
    );
}

/// The newest `width` samples, scaled to `max` (at least).
fn spark(series: &std::collections::VecDeque<u64>, width: u16, max: u64) -> Sparkline<'static> {
    let skip = series.len().saturating_sub(usize::from(width));
    let data: Vec<u64> = series.iter().skip(skip).copied().collect();
    let peak = data.iter().max().copied().unwrap_or(0);
    Sparkline::default().data(data).max(max.max(peak).max(1))
}

pub fn images_tab(frame: &mut Frame, app: &App, area: Rect) {
    let t = app.theme;
    let rows = app.image_rows();
    let header = Row::new(["NAME", "SIZE", "PACKAGES", "BASE", "USED BY"]).style(t.header());
    let body = rows.iter().map(|(image, users)| {
        Row::new([
            Cell::from(image.name.clone()),
            Cell::from(
                Text::from(image.size_bytes.map_or_else(|| "-".into(), format_size))
                    .alignment(Alignment::Right),
            ),
            Cell::from(
                Text::from(
                    image
                        .package_count
                        .map_or_else(|| "-".into(), |n| n.to_string()),
                )
                .alignment(Alignment::Right),
            ),
            Cell::from(image.base.clone().unwrap_or_else(|| "-".into())),
            Cell::from(if users.is_empty() {
                "-".to_string()
            } else {
                users.join(", ")
            }),
        ])
    });
    let table = Table::new(
        body,
        [
            Constraint::Length(20),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(14),
            Constraint::Min(10),
        ],
    )
    .header(header)
    .column_spacing(1)
    .row_highlight_style(t.selected())
    .highlight_symbol("▶ ");
    let mut state = TableState::default().with_selected(app.image_index());
    frame.render_stateful_widget(table, area, &mut state);
    if rows.is_empty() {
        let text = if app.images_loaded() {
            "No images yet."
        } else {
            "loading…"
        };
        let below = Rect {
            y: area.y + 1,
            height: area.height.saturating_sub(1),
            ..area
        };
        frame.render_widget(Paragraph::new(format!("  {text}")).style(t.dim()), below);
    } else if let Some(hint) = (area.height as usize > rows.len() + 2)
        .then_some("⏎ shows the selected image's package manifest")
    {
        let last = Rect {
            y: area.y + area.height - 1,
            height: 1,
            ..area
        };
        frame.render_widget(Paragraph::new(format!("  {hint}")).style(t.dim()), last);
    }
}
