//! The VM table's columns: what each shows, how it sorts, and which give
//! way first when the terminal is narrow. Pure: no drawing here.

use std::cmp::Ordering;

use crate::model::VmRole;
use crate::rpc::api::{VmStats, VmSummary};
use crate::size::{format_duration, format_size};

/// A column of the VM table, in the order they are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    Name,
    State,
    Backend,
    Ip,
    Dns,
    Image,
    Vcpus,
    Memory,
    Cpu,
    Rss,
    Uptime,
    Ports,
}

impl Column {
    /// Every column, in display order.
    pub const ALL: [Column; 12] = [
        Column::Name,
        Column::State,
        Column::Backend,
        Column::Ip,
        Column::Dns,
        Column::Image,
        Column::Vcpus,
        Column::Memory,
        Column::Cpu,
        Column::Rss,
        Column::Uptime,
        Column::Ports,
    ];

    /// Which columns stay when the terminal is narrow: first in, last out.
    const PRIORITY: [Column; 12] = [
        Column::Name,
        Column::State,
        Column::Ip,
        Column::Cpu,
        Column::Rss,
        Column::Uptime,
        Column::Image,
        Column::Backend,
        Column::Vcpus,
        Column::Memory,
        Column::Dns,
        Column::Ports,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Column::Name => "NAME",
            Column::State => "STATE",
            Column::Backend => "VMM",
            Column::Ip => "IP",
            Column::Dns => "DNS",
            Column::Image => "IMAGE",
            Column::Vcpus => "CPUS",
            Column::Memory => "MEM",
            Column::Cpu => "CPU%",
            Column::Rss => "RSS",
            Column::Uptime => "UPTIME",
            Column::Ports => "PORTS",
        }
    }

    /// The widest a cell of this column gets; longer text is cut.
    fn max_width(self) -> usize {
        match self {
            Column::Name | Column::Image => 20,
            Column::Dns => 24,
            Column::Ports => 30,
            Column::State => 16,
            _ => 12,
        }
    }

    /// Numbers read best right-aligned.
    pub fn numeric(self) -> bool {
        matches!(
            self,
            Column::Vcpus | Column::Memory | Column::Cpu | Column::Rss | Column::Uptime
        )
    }

    /// The column after this one, for the sort key.
    pub fn next(self) -> Column {
        let i = Column::ALL.iter().position(|c| *c == self).unwrap_or(0);
        Column::ALL[(i + 1) % Column::ALL.len()]
    }

    /// The text of this column for `vm`, whose VMM `stats` describe when it runs.
    pub fn cell(self, vm: &VmSummary, stats: Option<&VmStats>) -> String {
        let dash = || "-".to_string();
        match self {
            Column::Name => vm.name.clone(),
            Column::State if vm.role == VmRole::Build => format!("{} (build)", vm.state),
            Column::State if vm.role == VmRole::Template => format!("{} (warming)", vm.state),
            Column::State => vm.state.to_string(),
            Column::Backend => vm.vmm.to_string(),
            Column::Ip => vm.ip.map_or_else(dash, |ip| ip.to_string()),
            Column::Dns if vm.dns_name.is_empty() => dash(),
            Column::Dns => vm.dns_name.clone(),
            Column::Image => vm.image.clone().unwrap_or_else(dash),
            Column::Vcpus => vm.vcpus.to_string(),
            Column::Memory => format_size(u64::from(vm.memory_mib) << 20),
            Column::Cpu => stats.map_or_else(dash, |s| format!("{:.1}", s.cpu_percent)),
            Column::Rss => stats.map_or_else(dash, |s| format_size(s.rss_bytes)),
            Column::Uptime => stats.map_or_else(dash, |s| format_duration(s.uptime_secs)),
            Column::Ports if vm.published.is_empty() => dash(),
            Column::Ports => vm
                .published
                .iter()
                .map(|p| short_port(p))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// Orders two VMs by this column (VMs without a value last).
    pub fn compare(
        self,
        a: (&VmSummary, Option<&VmStats>),
        b: (&VmSummary, Option<&VmStats>),
    ) -> Ordering {
        fn some_first<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Ordering {
            match (a, b) {
                (Some(a), Some(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            }
        }
        let by = match self {
            Column::Name | Column::Dns => Ordering::Equal,
            Column::State => a.0.state.as_str().cmp(b.0.state.as_str()),
            Column::Backend => a.0.vmm.as_str().cmp(b.0.vmm.as_str()),
            Column::Ip => some_first(a.0.ip, b.0.ip),
            Column::Image => some_first(a.0.image.as_ref(), b.0.image.as_ref()),
            Column::Vcpus => a.0.vcpus.cmp(&b.0.vcpus),
            Column::Memory => a.0.memory_mib.cmp(&b.0.memory_mib),
            Column::Cpu => some_first(a.1.map(|s| s.cpu_percent), b.1.map(|s| s.cpu_percent)),
            Column::Rss => some_first(a.1.map(|s| s.rss_bytes), b.1.map(|s| s.rss_bytes)),
            Column::Uptime => some_first(a.1.map(|s| s.uptime_secs), b.1.map(|s| s.uptime_secs)),
            Column::Ports => a.0.published.len().cmp(&b.0.published.len()),
        };
        by.then_with(|| a.0.name.cmp(&b.0.name))
    }
}

/// `127.0.0.1:8080:80/tcp` as `8080→80`; another host address is kept.
fn short_port(published: &str) -> String {
    let spec = published.strip_suffix("/tcp").unwrap_or(published);
    let mut parts = spec.rsplitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(guest), Some(host), Some("127.0.0.1")) => format!("{host}→{guest}"),
        (Some(guest), Some(host), Some(addr)) => format!("{addr}:{host}→{guest}"),
        _ => spec.to_string(),
    }
}

/// The columns that fit in `width` and how wide each is, in display order:
/// each as wide as its widest cell (within its maximum), the least
/// important dropped until the rest fit. One space separates columns.
pub fn layout(width: u16, rows: &[Vec<String>]) -> Vec<(Column, u16)> {
    let natural: Vec<(Column, usize)> = Column::ALL
        .iter()
        .enumerate()
        .map(|(i, &column)| {
            let widest = rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
            (
                column,
                widest.max(column.title().len() + 1).min(column.max_width()),
            )
        })
        .collect();
    let mut kept: Vec<Column> = Column::PRIORITY.to_vec();
    let total = |kept: &[Column]| -> usize {
        natural
            .iter()
            .filter(|(c, _)| kept.contains(c))
            .map(|(_, w)| w + 1)
            .sum()
    };
    // The selection marker takes two cells.
    while kept.len() > 2 && total(&kept) + 2 > usize::from(width) {
        kept.pop();
    }
    natural
        .into_iter()
        .filter(|(c, _)| kept.contains(c))
        .map(|(c, w)| (c, w as u16))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RootMode, VmState, VmmKind};

    fn vm(name: &str, ip: &str) -> VmSummary {
        VmSummary {
            name: name.into(),
            state: VmState::Stopped,
            image: Some("default".into()),
            vmm: VmmKind::Qemu,
            vcpus: 2,
            memory_mib: 1024,
            ip: Some(ip.parse().unwrap()),
            dns_name: format!("{name}.vm"),
            created_at: 0,
            role: VmRole::Vm,
            root_mode: RootMode::Layered,
            disks: vec![],
            published: vec!["127.0.0.1:8080:80/tcp".into(), "0.0.0.0:2222:22/tcp".into()],
        }
    }

    #[test]
    fn addresses_sort_as_numbers() {
        let (a, b) = (vm("a", "10.0.0.10"), vm("b", "10.0.0.9"));
        assert_eq!(
            Column::Ip.compare((&a, None), (&b, None)),
            Ordering::Greater
        );
    }

    #[test]
    fn ports_read_short() {
        let v = vm("a", "10.0.0.2");
        assert_eq!(Column::Ports.cell(&v, None), "8080→80,0.0.0.0:2222→22");
    }

    #[test]
    fn narrow_terminals_keep_name_state_and_address() {
        let v = vm("testbox", "10.0.0.2");
        let rows = vec![Column::ALL.iter().map(|c| c.cell(&v, None)).collect()];
        let wide: Vec<Column> = layout(200, &rows).into_iter().map(|(c, _)| c).collect();
        assert_eq!(wide, Column::ALL.to_vec());
        let narrow: Vec<Column> = layout(40, &rows).into_iter().map(|(c, _)| c).collect();
        assert_eq!(&narrow[..3], &[Column::Name, Column::State, Column::Ip]);
        assert!(layout(40, &rows).iter().map(|(_, w)| w + 1).sum::<u16>() + 2 <= 40);
    }
}
