//! [`JsonLines`]: bounded lines to stdout and to a size-capped, rotated file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::bound::bounded_line;

/// Default size at which a log file is rotated: 64 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;
/// Default number of files kept per log, the live one included.
pub const DEFAULT_MAX_FILES: usize = 4;
/// Default longest line, newline included: 16 KiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 << 10;
/// Default longest string field before it is cut: 4 KiB.
pub const DEFAULT_MAX_FIELD_BYTES: usize = 4 << 10;

/// How large a log may grow.
///
/// On disk a log never holds more than `max_files × max_file_bytes`; every line
/// (stdout too) is at most `max_record_bytes`, and strings in it at most
/// `max_field_bytes` (plus the truncation marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A file is rotated before a line would take it past this size.
    pub max_file_bytes: u64,
    /// Files kept: `x.jsonl` and `x.jsonl.1` … `x.jsonl.<max_files - 1>`.
    pub max_files: usize,
    /// Longest line, newline included.
    pub max_record_bytes: usize,
    /// Longest string field.
    pub max_field_bytes: usize,
}

impl Default for Limits {
    /// 64 MiB × 4 files, 16 KiB lines, 4 KiB fields.
    fn default() -> Self {
        Self {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_files: DEFAULT_MAX_FILES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_field_bytes: DEFAULT_MAX_FIELD_BYTES,
        }
    }
}

impl Limits {
    /// The limits made consistent: at least one file, lines of at least 256 bytes that
    /// fit in a file, fields of at least 64 bytes.
    pub fn normalized(&self) -> Self {
        let max_record_bytes = self.max_record_bytes.max(256);
        Self {
            max_file_bytes: self.max_file_bytes.max(max_record_bytes as u64),
            max_files: self.max_files.max(1),
            max_record_bytes,
            max_field_bytes: self.max_field_bytes.max(64),
        }
    }

    /// The most a log holds on disk: `max_files × max_file_bytes`.
    pub fn max_total_bytes(&self) -> u64 {
        let limits = self.normalized();
        limits
            .max_file_bytes
            .saturating_mul(limits.max_files as u64)
    }
}

/// `path` for generation 0, `path.N` for the N-th rotated file.
pub fn rotated_path(path: &Path, generation: usize) -> PathBuf {
    if generation == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{generation}"));
    PathBuf::from(name)
}

/// Where a sidecar's audit lines go.
#[derive(Debug)]
pub struct JsonLines {
    sidecar: &'static str,
    to_stdout: bool,
    limits: Limits,
    file: Option<LogFile>,
    lost: AtomicU64,
    truncated: AtomicU64,
}

#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    state: Mutex<FileState>,
}

#[derive(Debug)]
struct FileState {
    /// None after a failed rotation or reopen; the next write tries again.
    file: Option<File>,
    /// Bytes in the live file.
    size: u64,
    /// A write failed part way: the next line starts on a fresh line.
    broken_line: bool,
}

impl JsonLines {
    /// [`JsonLines::open_with`] the default [`Limits`] (64 MiB × 4 files).
    pub fn open(
        sidecar: &'static str,
        path: Option<&Path>,
        to_stdout: bool,
    ) -> std::io::Result<Self> {
        Self::open_with(sidecar, path, to_stdout, Limits::default())
    }

    /// Opens `path` for appending (creating it and its directory, mode 0640), if given.
    /// `sidecar` names the writer in the stderr message when a write fails.
    pub fn open_with(
        sidecar: &'static str,
        path: Option<&Path>,
        to_stdout: bool,
        limits: Limits,
    ) -> std::io::Result<Self> {
        let file = match path {
            None => None,
            Some(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                let file = open_append(path)?;
                let size = file.metadata()?.len();
                Some(LogFile {
                    path: path.to_path_buf(),
                    state: Mutex::new(FileState {
                        file: Some(file),
                        size,
                        broken_line: false,
                    }),
                })
            }
        };
        Ok(Self {
            sidecar,
            to_stdout,
            limits: limits.normalized(),
            file,
            lost: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Lines that could not be written to the file (full disk, removed directory, …).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Lines that were cut to fit [`Limits::max_record_bytes`] or
    /// [`Limits::max_field_bytes`].
    pub fn truncated(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    /// Writes one entry as one bounded line. A failed write is counted and reported
    /// on stderr: the decision it records was already made and must not be undone by
    /// a full disk.
    pub fn write<T: Serialize + ?Sized>(&self, entry: &T) {
        let Some((mut line, cut)) = bounded_line(entry, &self.limits) else {
            return;
        };
        if cut {
            self.truncated.fetch_add(1, Ordering::Relaxed);
        }
        line.push('\n');
        if self.to_stdout {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout
                .write_all(line.as_bytes())
                .and_then(|()| stdout.flush());
        }
        if let Some(file) = &self.file {
            self.append(file, line.as_bytes());
        }
    }

    fn append(&self, log: &LogFile, line: &[u8]) {
        let mut state = log.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.file.is_none()
            && let Err(error) = reopen(log, &mut state)
        {
            drop(state);
            self.report(log, &error);
            return;
        }
        let len = u64::from(state.broken_line) + line.len() as u64;
        if state.size > 0
            && state.size + len > self.limits.max_file_bytes
            && let Err(error) = self.rotate(log, &mut state)
        {
            drop(state);
            self.report(log, &error);
            return;
        }
        let separator: &[u8] = if state.broken_line { b"\n" } else { b"" };
        let Some(file) = state.file.as_mut() else {
            return;
        };
        match file
            .write_all(separator)
            .and_then(|()| file.write_all(line))
        {
            Ok(()) => {
                state.size += (separator.len() + line.len()) as u64;
                state.broken_line = false;
            }
            Err(error) => {
                // Part of the line may have landed: count what is there, and start
                // the next line on a line of its own.
                let size = file.metadata().map(|m| m.len()).ok();
                state.size = size.unwrap_or(state.size + len);
                state.broken_line = state.size > 0;
                drop(state);
                self.report(log, &error);
            }
        }
    }

    /// Moves the live file to `x.1` (and `x.1` to `x.2`, …, dropping the oldest) and
    /// opens a fresh one; with one file, or when the history cannot move, empties the
    /// live file instead. On error nothing may be written.
    fn rotate(&self, log: &LogFile, state: &mut FileState) -> std::io::Result<()> {
        state.file = None;
        let path = &log.path;
        let keep = self.limits.max_files;
        let moved = keep > 1 && {
            let mut shifted = Ok(());
            for generation in (1..keep - 1).rev() {
                match std::fs::rename(
                    rotated_path(path, generation),
                    rotated_path(path, generation + 1),
                ) {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                        shifted = Err(error);
                        break;
                    }
                    _ => {}
                }
            }
            shifted.is_ok() && std::fs::rename(path, rotated_path(path, 1)).is_ok()
        };
        reopen(log, state)?;
        if !moved || state.size > 0 {
            if let Some(file) = &state.file {
                file.set_len(0)?;
            }
            state.size = 0;
        }
        state.broken_line = false;
        Ok(())
    }

    fn report(&self, log: &LogFile, error: &std::io::Error) {
        let lost = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
        if lost.is_power_of_two() {
            eprintln!(
                "{}: writing audit log {}: {error} ({lost} line{} lost so far)",
                self.sidecar,
                log.path.display(),
                if lost == 1 { "" } else { "s" }
            );
        }
    }
}

/// Opens the live file again after a failure (it may have been removed).
fn reopen(log: &LogFile, state: &mut FileState) -> std::io::Result<()> {
    let file = open_append(&log.path)?;
    state.size = file.metadata()?.len();
    state.broken_line = state.broken_line && state.size > 0;
    state.file = Some(file);
    Ok(())
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn read_lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn bytes_on_disk(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn lines_are_appended_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/log.jsonl");
        let log = JsonLines::open("test", Some(&path), false).unwrap();
        log.write(&json!({"a": 1}));
        log.write(&json!({"b": "two\nlines"}));
        assert_eq!(
            read_lines(&path),
            [json!({"a": 1}), json!({"b": "two\nlines"})]
        );
        assert_eq!(log.lost(), 0);
        assert_eq!(log.truncated(), 0);
    }

    #[test]
    fn rotation_keeps_the_total_under_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.jsonl");
        let limits = Limits {
            max_file_bytes: 4096,
            max_files: 3,
            max_record_bytes: 512,
            max_field_bytes: 300,
        };
        let log = JsonLines::open_with("test", Some(&path), false, limits).unwrap();
        let mut largest = 0;
        for i in 0..2000 {
            // Lines of varying length, some cut to fit.
            log.write(&json!({"n": i, "path": "p".repeat(i % 700)}));
            let total = bytes_on_disk(dir.path());
            largest = largest.max(total);
            assert!(
                total <= limits.max_total_bytes() + limits.max_record_bytes as u64,
                "{total} bytes on disk after line {i}"
            );
            for generation in 0..3 {
                let size = std::fs::metadata(rotated_path(&path, generation))
                    .map(|m| m.len())
                    .unwrap_or(0);
                assert!(size <= limits.max_file_bytes, "file {generation}: {size}");
            }
        }
        assert!(largest > 2 * 4096, "the files did fill up: {largest}");
        // Exactly the three generations, no more.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["egress.jsonl", "egress.jsonl.1", "egress.jsonl.2"]);
        // The newest line is last in the live file; the files hold consecutive lines.
        let live = read_lines(&path);
        assert_eq!(live.last().unwrap()["n"], 1999);
        let previous = read_lines(&rotated_path(&path, 1));
        assert_eq!(
            previous.last().unwrap()["n"].as_u64().unwrap() + 1,
            live[0]["n"].as_u64().unwrap()
        );
        // Every line parses and is within the record cap.
        for generation in 0..3 {
            let text = std::fs::read_to_string(rotated_path(&path, generation)).unwrap();
            for line in text.lines() {
                assert!(line.len() < 512, "{}", line.len());
                serde_json::from_str::<Value>(line).unwrap();
            }
        }
        assert!(log.truncated() > 0);
        assert_eq!(log.lost(), 0);
    }

    #[test]
    fn one_file_means_the_live_file_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.jsonl");
        let limits = Limits {
            max_file_bytes: 1024,
            max_files: 1,
            max_record_bytes: 256,
            max_field_bytes: 64,
        };
        let log = JsonLines::open_with("test", Some(&path), false, limits).unwrap();
        for i in 0..500 {
            log.write(&json!({"n": i}));
            assert!(std::fs::metadata(&path).unwrap().len() <= 1024);
        }
        assert_eq!(read_lines(&path).last().unwrap()["n"], 499);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_oversized_file_from_before_is_rotated_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.jsonl");
        std::fs::write(&path, "{\"old\":1}\n".repeat(1000)).unwrap();
        let limits = Limits {
            max_file_bytes: 2048,
            max_files: 2,
            max_record_bytes: 512,
            max_field_bytes: 256,
        };
        let log = JsonLines::open_with("test", Some(&path), false, limits).unwrap();
        log.write(&json!({"new": 1}));
        let live = read_lines(&path);
        assert!(live == [json!({"new": 1})], "{} lines", live.len());
        assert_eq!(read_lines(&rotated_path(&path, 1)).len(), 1000);
    }

    #[test]
    fn write_errors_are_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let path = logs.join("x.jsonl");
        let limits = Limits {
            max_file_bytes: 300,
            max_files: 2,
            max_record_bytes: 256,
            max_field_bytes: 64,
        };
        let log = JsonLines::open_with("test", Some(&path), false, limits).unwrap();
        log.write(&json!({"n": 0}));
        // The directory goes away: rotation cannot reopen the file.
        std::fs::remove_dir_all(&logs).unwrap();
        for i in 1..50 {
            log.write(&json!({"n": i, "pad": "x".repeat(40)}));
        }
        assert!(log.lost() > 0);
        // It comes back: writing resumes.
        std::fs::create_dir(&logs).unwrap();
        for i in 50..60 {
            log.write(&json!({"n": i, "pad": "x".repeat(40)}));
        }
        let lines = read_lines(&path);
        assert_eq!(lines.last().unwrap()["n"], 59);
    }

    #[test]
    fn rotated_names() {
        let path = Path::new("/s/audit/egress.jsonl");
        assert_eq!(rotated_path(path, 0), path);
        assert_eq!(rotated_path(path, 3), Path::new("/s/audit/egress.jsonl.3"));
    }
}
