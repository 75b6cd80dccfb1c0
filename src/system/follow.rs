//! Following a log as it grows, as `tail -f` does: what was appended since
//! the last look, as [`printable`](super::text::printable) text (a guest
//! or a VMM wrote it). `vm logs --follow` and the TUI's logs pane read
//! their logs through this.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::fs::file_len;
use super::text::printable;

/// The most of an unfinished line that is held back.
const HOLD_MAX: usize = 64 << 10;

/// One log being followed.
#[derive(Debug)]
pub struct Follow {
    path: PathBuf,
    /// How far the log has been read.
    offset: u64,
    /// What came after the last newline, held back until its line ends or
    /// the log goes quiet for a look: an escape sequence or a UTF-8
    /// character split between two reads is then judged whole.
    pending: Vec<u8>,
}

impl Follow {
    /// Follows `path` from its current end; take this before reading its
    /// tail, so nothing written in between is lost.
    pub fn from_end(path: &Path) -> Follow {
        Follow {
            path: path.to_path_buf(),
            offset: file_len(path),
            pending: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The text appended since the last call (empty when nothing was). A
    /// log that shrank was truncated or replaced (rotated): it is read
    /// again from its beginning.
    pub fn read(&mut self) -> String {
        let len = file_len(&self.path);
        if len < self.offset {
            self.offset = 0;
            self.pending.clear();
        }
        let new = if len > self.offset {
            read_from(&self.path, self.offset).unwrap_or_default()
        } else {
            Vec::new()
        };
        self.offset += new.len() as u64;
        self.pending.extend_from_slice(&new);
        let cut = if new.is_empty() || self.pending.len() > HOLD_MAX {
            self.pending.len()
        } else {
            self.pending
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |end| end + 1)
        };
        printable(&self.pending.drain(..cut).collect::<Vec<u8>>())
    }
}

/// What `path` holds after byte `offset`.
fn read_from(path: &Path, offset: u64) -> Option<Vec<u8>> {
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_whole_lines_then_the_rest_when_quiet() {
        let (_dir, log) = crate::testing::temp_file("console.log", "before\n");
        let mut follow = Follow::from_end(&log);
        assert_eq!(follow.read(), "");
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(b"one\ntw").unwrap();
        assert_eq!(follow.read(), "one\n");
        // Quiet: the unfinished line comes out.
        assert_eq!(follow.read(), "tw");
        // An escape sequence split across two writes is dropped whole.
        file.write_all(b"\x1b[3").unwrap();
        assert_eq!(follow.read(), "");
        file.write_all(b"1mred\n").unwrap();
        assert_eq!(follow.read(), "red\n");
    }

    #[test]
    fn a_rotated_log_is_read_from_its_start() {
        let (_dir, log) = crate::testing::temp_file("console.log", "a long first line\n");
        let mut follow = Follow::from_end(&log);
        std::fs::write(&log, "new\n").unwrap();
        assert_eq!(follow.read(), "new\n");
    }
}
