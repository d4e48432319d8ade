//! Following a bottle's audit logs by polling (`Backend::audit`, the dashboard's live
//! traffic): the sidecars append JSON lines to `<state dir>/audit/<log>.jsonl` and
//! rotate it to `<log>.jsonl.1` when it grows too big (`audit-lines`). A cursor is the
//! file's inode and a byte offset in it, so a reader that was in the middle of the file
//! that has just been rotated finishes `.1` and then starts the new file; a file that
//! shrank under the cursor (truncated) is read again from its start. Only whole lines
//! are returned: a line the sidecar is still writing waits for the next call.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use backend_api::{AuditChunk, AuditCursor, AuditLog};

use crate::error::{BackendError, Result};

/// At most this much of a log is read per call (a line is at most 16 KiB).
pub const MAX_CHUNK_BYTES: u64 = 256 * 1024;

/// Where the sidecars write `log` in a bottle's state dir.
pub fn log_path(state_dir: &Path, log: AuditLog) -> PathBuf {
    state_dir.join("audit").join(log.file_name())
}

/// Reads the log at `path` on from `from`, whole lines only, each passed through
/// `redact` (which is asked for only when there is something to redact), at most
/// `max_bytes` of it.
pub fn read(
    path: &Path,
    from: AuditCursor,
    max_bytes: u64,
    redact: &mut dyn FnMut(&str) -> Result<String>,
) -> Result<AuditChunk> {
    let current = match std::fs::metadata(path) {
        Ok(meta) => meta,
        // Not written yet: nothing to read, and the cursor stays.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(AuditChunk {
                lines: Vec::new(),
                next: from,
                more: false,
            });
        }
        Err(e) => return Err(BackendError::io("reading", path)(e)),
    };
    let rotated = audit_lines::rotated_path(path, 1);
    let (file, ino, offset, len, after) = if from.file == current.ino() {
        (
            path.to_path_buf(),
            current.ino(),
            from.offset,
            current.len(),
            None,
        )
    } else {
        match std::fs::metadata(&rotated) {
            // The file the cursor was in has been rotated: finish it, then go on with
            // the new one.
            Ok(old) if from.file != 0 && old.ino() == from.file => (
                rotated,
                old.ino(),
                from.offset,
                old.len(),
                Some(current.ino()),
            ),
            // A fresh cursor, or one whose file is gone (rotated twice since): the
            // current file from its start.
            _ => (path.to_path_buf(), current.ino(), 0, current.len(), None),
        }
    };
    // Truncated under the cursor: read it again from the start.
    let offset = if offset > len { 0 } else { offset };
    let wanted = (len - offset).min(max_bytes);
    let mut bytes = Vec::with_capacity(wanted as usize);
    if wanted > 0 {
        let mut handle = File::open(&file).map_err(BackendError::io("opening", &file))?;
        handle
            .seek(SeekFrom::Start(offset))
            .map_err(BackendError::io("seeking in", &file))?;
        handle
            .take(wanted)
            .read_to_end(&mut bytes)
            .map_err(BackendError::io("reading", &file))?;
    }
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut lines = Vec::new();
    for line in String::from_utf8_lossy(&bytes[..whole]).lines() {
        if !line.trim().is_empty() {
            lines.push(redact(line)?);
        }
    }
    let consumed = offset + whole as u64;
    let left_here = consumed < len;
    let next_cursor = match after {
        // The rotated file is done (a partial last line there will never be finished).
        Some(next_ino) if !left_here || whole == 0 && wanted < max_bytes => AuditCursor {
            file: next_ino,
            offset: 0,
        },
        _ => AuditCursor {
            file: ino,
            offset: consumed,
        },
    };
    let more = next_cursor.file != ino || (left_here && whole > 0);
    Ok(AuditChunk {
        lines,
        next: next_cursor,
        more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    fn plain(line: &str) -> Result<String> {
        Ok(line.to_owned())
    }

    /// Reads until nothing more is there, like the dashboard's poller.
    fn drain(path: &Path, cursor: &mut AuditCursor, max: u64) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let chunk = read(path, *cursor, max, &mut plain).unwrap();
            lines.extend(chunk.lines);
            *cursor = chunk.next;
            if !chunk.more {
                return lines;
            }
        }
    }

    #[test]
    fn a_missing_log_is_empty_and_keeps_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), AuditLog::Egress);
        assert!(path.ends_with("audit/egress.jsonl"));
        let from = AuditCursor { file: 7, offset: 9 };
        let chunk = read(&path, from, MAX_CHUNK_BYTES, &mut plain).unwrap();
        assert_eq!(chunk.next, from);
        assert!(chunk.lines.is_empty() && !chunk.more);
    }

    #[test]
    fn only_whole_lines_are_returned_and_a_partial_one_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.jsonl");
        append(&path, "{\"a\":1}\n{\"b\":");
        let mut cursor = AuditCursor::default();
        assert_eq!(drain(&path, &mut cursor, MAX_CHUNK_BYTES), ["{\"a\":1}"]);
        assert_eq!(cursor.offset, 8);
        assert!(drain(&path, &mut cursor, MAX_CHUNK_BYTES).is_empty());
        append(&path, "2}\n");
        assert_eq!(drain(&path, &mut cursor, MAX_CHUNK_BYTES), ["{\"b\":2}"]);
    }

    #[test]
    fn a_small_budget_reads_in_several_calls_without_losing_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.jsonl");
        let all: Vec<String> = (0..50).map(|i| format!("{{\"n\":{i}}}")).collect();
        append(&path, &(all.join("\n") + "\n"));
        let mut cursor = AuditCursor::default();
        assert_eq!(drain(&path, &mut cursor, 30), all);
    }

    #[test]
    fn rotation_finishes_the_old_file_then_reads_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.jsonl");
        append(&path, "one\n");
        let mut cursor = AuditCursor::default();
        assert_eq!(drain(&path, &mut cursor, MAX_CHUNK_BYTES), ["one"]);
        // Written after the last read, then rotated, as audit-lines does.
        append(&path, "two\n");
        std::fs::rename(&path, audit_lines::rotated_path(&path, 1)).unwrap();
        append(&path, "three\n");
        assert_eq!(drain(&path, &mut cursor, MAX_CHUNK_BYTES), ["two", "three"]);
        append(&path, "four\n");
        assert_eq!(drain(&path, &mut cursor, MAX_CHUNK_BYTES), ["four"]);
    }

    #[test]
    fn a_truncated_log_is_read_again_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("git-gate.jsonl");
        append(&path, "a long first line\nsecond\n");
        let mut cursor = AuditCursor::default();
        assert_eq!(drain(&path, &mut cursor, MAX_CHUNK_BYTES).len(), 2);
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(drain(&path, &mut cursor, MAX_CHUNK_BYTES), ["new"]);
    }

    #[test]
    fn lines_are_redacted_and_secrets_are_looked_up_only_when_needed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.jsonl");
        let mut asked = 0;
        let mut redact = |line: &str| {
            asked += 1;
            Ok(backend_api::redact::redact(
                line,
                &["s3cr3t-value".to_owned()],
            ))
        };
        let chunk = read(&path, AuditCursor::default(), MAX_CHUNK_BYTES, &mut redact).unwrap();
        assert!(chunk.lines.is_empty());
        append(&path, "{\"reason\":\"saw s3cr3t-value\"}\n");
        let chunk = read(&path, chunk.next, MAX_CHUNK_BYTES, &mut redact).unwrap();
        assert_eq!(chunk.lines, ["{\"reason\":\"saw <redacted>\"}"]);
        assert_eq!(asked, 1);
    }
}
