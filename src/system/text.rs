//! Text from outside: normalized line lists, e.g. package manifests ("name
//! version" per line), and [`printable`] text from bytes a guest wrote.

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

/// `bytes` as text that cannot drive a terminal: escape sequences (CSI,
/// OSC, DCS, SOS, PM, APC, and the short `ESC x` ones, in their 7-bit and
/// 8-bit forms) are dropped whole, other control characters are dropped
/// except `\n` and `\t`, and invalid UTF-8 becomes U+FFFD. A guest may
/// write anything to its console; this is what banger prints of it.
pub fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\u{1b}' => skip_escape(&mut chars),
            '\u{9b}' => skip_csi(&mut chars),
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => {
                if skip_string(&mut chars) {
                    skip_escape(&mut chars);
                }
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// One line of what a guest wrote, ready for a view that measures widths
/// (a spinner, a terminal UI): [`printable`], tabs as four spaces.
pub fn printable_line(line: &str) -> String {
    printable(line.as_bytes()).replace('\t', "    ")
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// Skips what follows an ESC that belongs to its sequence.
fn skip_escape(chars: &mut Chars<'_>) {
    loop {
        match chars.peek() {
            Some('[') => {
                chars.next();
                skip_csi(chars);
            }
            Some(']' | 'P' | 'X' | '^' | '_') => {
                chars.next();
                if skip_string(chars) {
                    // Cut short by another ESC: judge what follows that one.
                    continue;
                }
            }
            // `ESC SP..'/'* final`: charset selection and the like.
            Some(' '..='/') => {
                while chars.next_if(|c| matches!(c, ' '..='/')).is_some() {}
                chars.next_if(|c| matches!(c, '0'..='~'));
            }
            Some('0'..='~') => {
                chars.next();
            }
            // Anything else (or nothing): the lone ESC goes.
            _ => {}
        }
        return;
    }
}

/// Skips the rest of a control sequence: parameter and intermediate bytes,
/// then its final byte. A malformed one ends at the first other character,
/// which is kept for the caller to judge.
fn skip_csi(chars: &mut Chars<'_>) {
    while chars.next_if(|c| matches!(c, ' '..='?')).is_some() {}
    chars.next_if(|c| matches!(c, '@'..='~'));
}

/// Skips the rest of a control string (OSC, DCS, ...) up to and including
/// its terminator: BEL or ST (`ESC \\` or U+009C), or the end of the input.
/// Returns true when an ESC that is not ST cut it short; that ESC is
/// consumed, and what follows it is the rest of an escape sequence.
fn skip_string(chars: &mut Chars<'_>) -> bool {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return false,
            '\u{1b}' => return chars.next_if_eq(&'\\').is_none(),
            _ => {}
        }
    }
    false
}

/// Every line of `text`, indented by four spaces (for an error message).
pub fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
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

    /// `printable` of each input is the text beside it.
    fn cases(cases: &[(&[u8], &str)]) {
        for (input, want) in cases {
            assert_eq!(printable(input), *want, "{input:?}");
        }
    }

    #[test]
    fn printable_keeps_text_newlines_and_tabs() {
        cases(&[
            (b"plain text\n\tindented\n", "plain text\n\tindented\n"),
            ("héllo ✓".as_bytes(), "héllo ✓"),
            (b"", ""),
        ]);
    }

    #[test]
    fn printable_drops_csi_sequences() {
        cases(&[
            (b"\x1b[31mred\x1b[0m text", "red text"),
            (b"\x1b[2J\x1b[H\x1b[?25lclear", "clear"),
            (b"a\x1b[1;31;4mb", "ab"),
            // 8-bit CSI (U+009B in UTF-8).
            ("x\u{9b}31my".as_bytes(), "xy"),
            // A malformed CSI ends at the first character that cannot be in one.
            ("a\x1b[12é".as_bytes(), "aé"),
        ]);
    }

    #[test]
    fn printable_drops_osc_ended_by_bel_or_st() {
        cases(&[
            (b"a\x1b]0;evil title\x07b", "ab"),
            (b"a\x1b]0;evil title\x1b\\b", "ab"),
            (b"\x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\", "link"),
            ("a\u{9d}52;c;AAAA\u{9c}b".as_bytes(), "ab"),
            // An OSC cut short by another escape: that one is judged on its own.
            (b"a\x1b]0;t\x1b[31mb", "ab"),
            // Never terminated: everything after it goes.
            (b"a\x1b]0;never ends\nstill title", "a"),
        ]);
    }

    #[test]
    fn printable_drops_dcs_and_other_strings() {
        cases(&[
            (b"a\x1bP1$r0m\x1b\\b", "ab"),
            (b"a\x1b_apc\x1b\\b\x1b^pm\x07c", "abc"),
            ("a\u{90}dcs\u{9c}b".as_bytes(), "ab"),
        ]);
    }

    #[test]
    fn printable_drops_short_escapes_and_a_trailing_esc() {
        cases(&[
            (b"a\x1b(Bb\x1b#8c\x1bcd\x1b7e", "abcde"),
            (b"end\x1b", "end"),
            (b"end\x1b[", "end"),
            (b"end\x1b[31", "end"),
            (b"\x1b\x1b[31mx", "x"),
            (b"a\x1b\nb", "a\nb"),
        ]);
    }

    #[test]
    fn printable_drops_other_controls() {
        cases(&[
            (b"over\rwrite", "overwrite"),
            (b"line\r\n", "line\n"),
            (b"bell\x07 back\x08 nul\x00 del\x7f", "bell back nul del"),
            ("c1\u{85}\u{8d}x".as_bytes(), "c1x"),
        ]);
    }

    #[test]
    fn printable_replaces_invalid_utf8() {
        cases(&[
            (b"a\xffb", "a\u{fffd}b"),
            // A raw 8-bit CSI byte is not UTF-8: replaced, so it cannot act.
            (b"a\x9b31mb", "a\u{fffd}31mb"),
            (b"cut \xe2\x9c", "cut \u{fffd}"),
        ]);
    }
}
