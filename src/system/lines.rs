//! Normalized line lists, e.g. package manifests ("name version" per line).

/// Normalizes text to a sorted, de-duplicated list of lines: each line is
/// trimmed, comments are dropped (from a `#` at the start of the line or
/// after whitespace), inner whitespace runs become one space, and blank
/// lines go.
pub fn normalize_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| {
            strip_comment(line)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|line| !line.is_empty())
        .collect();
    lines.sort();
    lines.dedup();
    lines
}

/// `line` up to its comment: a `#` at the start or preceded by whitespace
/// (so `a#b` is kept whole).
fn strip_comment(line: &str) -> &str {
    let mut prev_is_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_is_space {
            return &line[..i];
        }
        prev_is_space = c.is_whitespace();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_manifest() {
        let text = "\
# packages
zlib1g 1:1.2.13
  curl   7.88.1  # pinned
\t
bash 5.2
curl 7.88.1
c++lib 1#2
";
        assert_eq!(
            normalize_lines(text),
            ["bash 5.2", "c++lib 1#2", "curl 7.88.1", "zlib1g 1:1.2.13"]
        );
    }

    #[test]
    fn sorts_by_bytes_and_handles_empty() {
        assert_eq!(normalize_lines("b\nB\na\n"), ["B", "a", "b"]);
        assert!(normalize_lines("").is_empty());
        assert!(normalize_lines("  # only a comment\n\n").is_empty());
    }
}
