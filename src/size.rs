//! Sizes as people type them: `512M`, `4G`, `1.5G`, `1048576` (binary units);
//! sizes and durations as people read them.

/// Parses `text` into bytes: a number with an optional K, M, G or T suffix
/// (powers of 1024; a trailing `B`/`iB` is accepted).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a size: use a number with K, M, G or T, like 512M or 4G");
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    let bytes = value * (1u64 << shift) as f64;
    if bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// `1536 MiB` → `1.5 GiB`, `300 MiB`: a size for people.
pub fn format_size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes >= GIB {
        let gib = bytes as f64 / GIB as f64;
        if bytes.is_multiple_of(GIB) {
            format!("{} GiB", bytes / GIB)
        } else {
            format!("{gib:.1} GiB")
        }
    } else {
        format!("{} MiB", bytes.div_ceil(MIB))
    }
}

/// Guest memory as people type it: a bare number is MiB (as Firecracker
/// and QEMU count memory), anything else a size like `2G`.
pub fn parse_memory_mib(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let mib = if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        text.parse::<u64>()
            .map_err(|_| format!("`{text}` is too large"))?
    } else {
        parse_size(text)? >> 20
    };
    u32::try_from(mib).map_err(|_| format!("`{text}` is too large"))
}

/// `3d 4h`, `5m 2s`: a duration for people.
pub fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(42), "42s");
        assert_eq!(format_duration(3 * 60 + 2), "3m 2s");
        assert_eq!(format_duration(2 * 3600 + 60), "2h 1m");
        assert_eq!(format_duration(86400 * 3 + 3600 * 4), "3d 4h");
    }

    #[test]
    fn memory_is_mib_or_a_size() {
        assert_eq!(parse_memory_mib("512"), Ok(512));
        assert_eq!(parse_memory_mib(" 2G "), Ok(2048));
        assert!(parse_memory_mib("lots").is_err());
        assert!(parse_memory_mib("99999999999").is_err());
    }

    #[test]
    fn sizes_format() {
        assert_eq!(format_size(1536 << 20), "1.5 GiB");
        assert_eq!(format_size(2 << 30), "2 GiB");
        assert_eq!(format_size(300 << 20), "300 MiB");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("4g").unwrap(), 4 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        for bad in ["", "G", "4X", "-1G", "four", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
