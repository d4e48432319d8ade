//! The audit log: one JSON line per decision, to stdout and optionally to a
//! file. Records carry names (rules, DLP findings), never secret values; URL
//! queries are not logged because they can carry credentials.
//!
//! The log is bounded, so an agent cannot fill the host's disk through it: the
//! file is rotated at 64 MiB and four files are kept, every line is cut to
//! 16 KiB with long fields cut to 4 KiB ([`audit_lines::Limits`]), and
//! identical denials collapse: a denial opens a window of
//! [`DEFAULT_REPEAT_WINDOW`] in which the same denial (event, host, port, rule,
//! reason, DLP rule; not the path or method) is written
//! [`DEFAULT_REPEAT_BURST`] times in all and then only counted, and one line
//! `N more like this in T s: <reason>` with `"repeated": N` follows when the
//! window closes (on a timer, at the next such denial, or when the log is
//! dropped), so no denial goes uncounted. Writing never fails a request.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::AuditStdout;
use crate::error::Error;

/// One audit line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditRecord {
    /// RFC 3339 UTC.
    pub time: String,
    /// `http`, `dns` or `reload`.
    pub event: &'static str,
    /// HTTP method (or `CONNECT`, or the DNS query type).
    pub method: String,
    /// Destination host (or DNS query name).
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Request path without the query.
    pub path: String,
    /// The rule that decided.
    pub rule: String,
    /// `allow`, `deny` or for reloads `reload`/`reload-failed`.
    pub action: &'static str,
    /// Why, in words.
    pub reason: String,
    /// The DLP rule name, when DLP decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dlp: Option<String>,
    /// On a summary line: how many records like it were counted and not
    /// written one by one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeated: Option<u64>,
}

impl AuditRecord {
    /// A record stamped now.
    pub fn now(event: &'static str, action: &'static str) -> Self {
        Self {
            time: audit_lines::rfc3339_utc(std::time::SystemTime::now()),
            event,
            method: String::new(),
            host: String::new(),
            port: 0,
            path: String::new(),
            rule: String::new(),
            action,
            reason: String::new(),
            dlp: None,
            repeated: None,
        }
    }
}

impl AuditRecord {
    /// Whether the line says more than "this request went through": a denial, a DLP
    /// finding (also one let through in audit mode), a reload, a DNS-sink query.
    pub fn is_notable(&self) -> bool {
        self.action != "allow" || self.dlp.is_some() || self.event != "http"
    }
}

/// The path part of a request target, without query or fragment, for logs.
pub fn loggable_path(path_and_query: &str) -> String {
    match path_and_query.split_once(['?', '#']) {
        Some((path, _)) => format!("{path}?[query omitted]"),
        None => path_and_query.to_owned(),
    }
}

/// How long after a denial is written the same denial is only counted.
pub const DEFAULT_REPEAT_WINDOW: Duration = Duration::from_secs(5);
/// How many of the same denial are written in one window before the rest
/// are only counted (the first few keep their paths for the reader).
pub const DEFAULT_REPEAT_BURST: u32 = 5;
/// Most distinct denials counted at once; beyond that, denials are written one
/// by one (the file's size cap still holds).
pub const DEFAULT_MAX_TRACKED: usize = 256;

/// How the audit log is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditLimits {
    /// File size, rotation and line length.
    pub lines: audit_lines::Limits,
    /// Identical denials within this window of the first are counted, not
    /// written (after `repeat_burst`); zero writes every one.
    pub repeat_window: Duration,
    /// Identical denials written in one window before the rest are counted.
    pub repeat_burst: u32,
    /// Most distinct denials counted at once.
    pub max_tracked: usize,
}

impl Default for AuditLimits {
    /// 64 MiB × 4 files, 16 KiB lines, identical denials collapsed for 5 s
    /// after the first 5.
    fn default() -> Self {
        Self {
            lines: audit_lines::Limits::default(),
            repeat_window: DEFAULT_REPEAT_WINDOW,
            repeat_burst: DEFAULT_REPEAT_BURST,
            max_tracked: DEFAULT_MAX_TRACKED,
        }
    }
}

/// Which audit lines go to stdout as well as to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// None (tests, and the file is the log).
    Off,
    /// Every line.
    All,
    /// Only [`AuditRecord::is_notable`] lines.
    Notable,
}

impl From<AuditStdout> for Stdout {
    fn from(config: AuditStdout) -> Self {
        match config {
            AuditStdout::All => Self::All,
            AuditStdout::Notable => Self::Notable,
        }
    }
}

/// Where audit lines go.
#[derive(Debug)]
pub struct AuditLog {
    inner: Arc<Inner>,
    /// Dropping it stops the thread that closes repeat windows.
    _ticker: Option<mpsc::Sender<()>>,
}

#[derive(Debug)]
struct Inner {
    /// The file, and stdout unless stdout takes notable lines only.
    lines: audit_lines::JsonLines,
    /// Stdout for notable lines only ([`Stdout::Notable`]).
    notable: Option<audit_lines::JsonLines>,
    window: Duration,
    burst: u32,
    max_tracked: usize,
    repeats: Mutex<HashMap<RepeatKey, Repeat>>,
}

/// What makes two denials "the same".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RepeatKey {
    event: &'static str,
    action: &'static str,
    host: String,
    port: u16,
    rule: String,
    reason: String,
    dlp: Option<String>,
}

#[derive(Debug)]
struct Repeat {
    /// When the denial that opened the window was written.
    first: Instant,
    /// Denials written in this window.
    written: u32,
    /// Denials counted since, not written.
    suppressed: u64,
}

impl AuditLog {
    /// Opens (appending) the audit file if one is configured, with the
    /// default [`AuditLimits`].
    pub fn open(path: Option<&Path>, to_stdout: bool) -> Result<Self, Error> {
        let stdout = if to_stdout { Stdout::All } else { Stdout::Off };
        Self::open_with(path, stdout, AuditLimits::default())
    }

    /// Like [`AuditLog::open`] with explicit limits.
    pub fn open_with(
        path: Option<&Path>,
        stdout: Stdout,
        limits: AuditLimits,
    ) -> Result<Self, Error> {
        let open = |path: Option<&Path>, to_stdout| {
            audit_lines::JsonLines::open_with("egress", path, to_stdout, limits.lines).map_err(
                |source| Error::OpenAuditLog {
                    path: path.map(Path::to_path_buf).unwrap_or_default(),
                    source,
                },
            )
        };
        let lines = open(path, stdout == Stdout::All)?;
        let notable = match stdout {
            Stdout::Notable => Some(open(None, true)?),
            Stdout::Off | Stdout::All => None,
        };
        let inner = Arc::new(Inner {
            lines,
            notable,
            window: limits.repeat_window,
            burst: limits.repeat_burst.max(1),
            max_tracked: limits.max_tracked,
            repeats: Mutex::new(HashMap::new()),
        });
        let ticker = (!limits.repeat_window.is_zero())
            .then(|| spawn_ticker(Arc::downgrade(&inner), limits.repeat_window))
            .flatten();
        Ok(Self {
            inner,
            _ticker: ticker,
        })
    }

    /// Writes one record (or counts it, for a denial repeated within the
    /// window); IO errors are counted and go to stderr, never fail a request.
    pub fn write(&self, record: &AuditRecord) {
        self.inner.write(record, Instant::now());
    }

    /// Lines the file could not take (full disk and the like).
    pub fn lost(&self) -> u64 {
        self.inner.lines.lost()
    }

    /// Writes the summary of every open repeat window now.
    pub fn flush(&self) {
        self.inner.close_windows(Instant::now(), true);
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // The counts of the windows still open are not lost.
        self.flush();
    }
}

/// A thread that closes expired repeat windows, so a summary follows a
/// burst even when nothing else is logged; it ends with the log.
fn spawn_ticker(inner: Weak<Inner>, window: Duration) -> Option<mpsc::Sender<()>> {
    let (stop, stopped) = mpsc::channel::<()>();
    let tick = (window / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    std::thread::Builder::new()
        .name("egress-audit".to_owned())
        .spawn(move || {
            loop {
                match stopped.recv_timeout(tick) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let Some(inner) = inner.upgrade() else { return };
                inner.close_windows(Instant::now(), false);
            }
        })
        .ok()
        .map(|_| stop)
}

impl Inner {
    fn emit(&self, record: &AuditRecord) {
        self.lines.write(record);
        if let Some(stdout) = &self.notable
            && record.is_notable()
        {
            stdout.write(record);
        }
    }

    fn write(&self, record: &AuditRecord, now: Instant) {
        if record.action != "deny" || record.repeated.is_some() || self.window.is_zero() {
            self.emit(record);
            return;
        }
        let key = RepeatKey {
            event: record.event,
            action: record.action,
            host: record.host.clone(),
            port: record.port,
            rule: record.rule.clone(),
            reason: record.reason.clone(),
            dlp: record.dlp.clone(),
        };
        let mut repeats = self.repeats.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(repeat) = repeats.get_mut(&key) {
            if now.saturating_duration_since(repeat.first) < self.window {
                if repeat.written < self.burst {
                    repeat.written += 1;
                    self.emit(record);
                } else {
                    repeat.suppressed += 1;
                }
                return;
            }
            if let Some(repeat) = repeats.remove(&key) {
                self.summarize(&key, &repeat, now);
            }
        }
        if repeats.len() >= self.max_tracked {
            self.close_expired(&mut repeats, now, false);
        }
        if repeats.len() < self.max_tracked {
            repeats.insert(
                key,
                Repeat {
                    first: now,
                    written: 1,
                    suppressed: 0,
                },
            );
        }
        // Under the lock: a window's summary is never written before its first line.
        self.emit(record);
    }

    fn close_windows(&self, now: Instant, all: bool) {
        let mut repeats = self.repeats.lock().unwrap_or_else(|p| p.into_inner());
        self.close_expired(&mut repeats, now, all);
    }

    fn close_expired(&self, repeats: &mut HashMap<RepeatKey, Repeat>, now: Instant, all: bool) {
        repeats.retain(|key, repeat| {
            let open = !all && now.saturating_duration_since(repeat.first) < self.window;
            if !open {
                self.summarize(key, repeat, now);
            }
            open
        });
    }

    fn summarize(&self, key: &RepeatKey, repeat: &Repeat, now: Instant) {
        if repeat.suppressed == 0 {
            return;
        }
        let span = now.saturating_duration_since(repeat.first);
        let secs = span.as_secs() + u64::from(span.subsec_nanos() > 0);
        let mut record = AuditRecord::now(key.event, key.action);
        record.host = key.host.clone();
        record.port = key.port;
        record.rule = key.rule.clone();
        record.dlp = key.dlp.clone();
        record.reason = format!(
            "{} more like this in {} s: {}",
            repeat.suppressed,
            secs.max(1),
            key.reason
        );
        record.repeated = Some(repeat.suppressed);
        self.emit(&record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_not_logged() {
        assert_eq!(loggable_path("/a/b?token=x"), "/a/b?[query omitted]");
        assert_eq!(loggable_path("/a/b"), "/a/b");
    }

    #[test]
    fn records_are_one_json_line_each_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(Some(&path), false).unwrap();
        let mut record = AuditRecord::now("http", "deny");
        record.host = "evil.test".to_owned();
        record.dlp = Some("github-pat".to_owned());
        log.write(&record);
        log.write(&AuditRecord::now("http", "allow"));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["host"], "evil.test");
        assert_eq!(lines[0]["dlp"], "github-pat");
        assert_eq!(lines[1]["action"], "allow");
        assert!(lines[1].get("dlp").is_none());
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
    }

    fn read(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn denial(host: &str, path: &str) -> AuditRecord {
        let mut record = AuditRecord::now("http", "deny");
        record.method = "GET".to_owned();
        record.host = host.to_owned();
        record.port = 80;
        record.path = path.to_owned();
        record.rule = "default-deny".to_owned();
        record.reason = format!("{host} is not in the bottle's egress allowlist");
        record
    }

    #[test]
    fn notable_lines_are_the_ones_that_say_more_than_went_through() {
        let mut allowed = AuditRecord::now("http", "allow");
        assert!(!allowed.is_notable(), "a routine request");
        allowed.reason = "credential injected into authorization".to_owned();
        assert!(!allowed.is_notable(), "an injection that went through");
        allowed.dlp = Some("aws-access-key".to_owned());
        assert!(
            allowed.is_notable(),
            "a DLP finding let through in audit mode"
        );
        assert!(denial("a.test", "/").is_notable());
        assert!(AuditRecord::now("reload", "reload").is_notable());
        assert!(AuditRecord::now("dns", "allow").is_notable());
    }

    /// A log whose windows only close when the test says (no ticker).
    fn manual_log(path: &Path, window_secs: u64, max_tracked: usize) -> Inner {
        Inner {
            lines: audit_lines::JsonLines::open("test", Some(path), false).unwrap(),
            notable: None,
            window: Duration::from_secs(window_secs),
            burst: 1,
            max_tracked,
            repeats: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn identical_denials_collapse_into_a_counted_summary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = manual_log(&path, 5, 16);
        let t0 = Instant::now();
        log.write(&denial("evil.test", "/first"), t0);
        for i in 0..10 {
            // Other paths, same host and reason: the same denial.
            log.write(
                &denial("evil.test", &format!("/{i}")),
                t0 + Duration::from_millis(100 * i),
            );
        }
        // Something else is written at once, allows are never collapsed.
        log.write(&denial("other.test", "/"), t0 + Duration::from_secs(1));
        let mut allow = AuditRecord::now("http", "allow");
        allow.host = "ok.test".to_owned();
        log.write(&allow, t0 + Duration::from_secs(1));
        log.write(&allow, t0 + Duration::from_secs(1));
        // After the window, the same denial closes it and opens a new one.
        log.write(&denial("evil.test", "/late"), t0 + Duration::from_secs(6));
        log.write(&denial("evil.test", "/late2"), t0 + Duration::from_secs(7));
        log.close_windows(t0 + Duration::from_secs(8), true);
        let lines = read(&path);
        let summary: Vec<_> = lines
            .iter()
            .map(|l| {
                (
                    l["host"].as_str().unwrap(),
                    l["path"].as_str().unwrap(),
                    l.get("repeated").cloned(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("evil.test", "/first", None),
                ("other.test", "/", None),
                ("ok.test", "", None),
                ("ok.test", "", None),
                ("evil.test", "", Some(10.into())),
                ("evil.test", "/late", None),
                ("evil.test", "", Some(1.into())),
            ]
        );
        assert_eq!(
            lines[4]["reason"],
            "10 more like this in 6 s: evil.test is not in the bottle's egress allowlist"
        );
        assert_eq!(lines[4]["action"], "deny");
        assert_eq!(lines[4]["rule"], "default-deny");
        // Every denial is accounted for: written or counted.
        let denials: u64 = lines
            .iter()
            .filter(|l| l["host"] == "evil.test")
            .map(|l| l.get("repeated").and_then(|r| r.as_u64()).unwrap_or(1))
            .sum();
        assert_eq!(denials, 13);
    }

    #[test]
    fn the_first_few_of_a_window_are_written_in_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut log = manual_log(&path, 5, 16);
        log.burst = 3;
        let t0 = Instant::now();
        for i in 0..10 {
            log.write(&denial("evil.test", &format!("/{i}")), t0);
        }
        log.close_windows(t0 + Duration::from_secs(5), false);
        let lines = read(&path);
        let paths: Vec<_> = lines.iter().map(|l| l["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["/0", "/1", "/2", ""]);
        assert_eq!(lines[3]["repeated"], 7);
        assert_eq!(
            lines[3]["reason"],
            "7 more like this in 5 s: evil.test is not in the bottle's egress allowlist"
        );
    }

    #[test]
    fn past_the_tracking_cap_denials_are_written_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = manual_log(&path, 5, 2);
        let t0 = Instant::now();
        for _ in 0..3 {
            for host in ["a.test", "b.test", "c.test"] {
                log.write(&denial(host, "/"), t0);
            }
        }
        log.close_windows(t0, true);
        let hosts: Vec<_> = read(&path)
            .iter()
            .map(|l| {
                (
                    l["host"].as_str().unwrap().to_owned(),
                    l["repeated"].as_u64(),
                )
            })
            .collect();
        let count = |host: &str| hosts.iter().filter(|(h, _)| h == host).count();
        assert_eq!(count("c.test"), 3, "{hosts:?}");
        assert!(hosts.contains(&("a.test".to_owned(), Some(2))), "{hosts:?}");
        assert!(hosts.contains(&("b.test".to_owned(), Some(2))), "{hosts:?}");
    }

    #[test]
    fn a_window_closes_on_its_own_and_when_the_log_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let limits = AuditLimits {
            repeat_window: Duration::from_millis(200),
            repeat_burst: 1,
            ..AuditLimits::default()
        };
        let log = AuditLog::open_with(Some(&path), Stdout::Off, limits).unwrap();
        for _ in 0..5 {
            log.write(&denial("evil.test", "/"));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while read(&path).len() < 2 {
            assert!(Instant::now() < deadline, "no summary after the window");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(read(&path)[1]["repeated"], 4);
        // Nothing else is logged: dropping the log writes what was counted.
        let limits = AuditLimits {
            repeat_window: Duration::from_secs(3600),
            repeat_burst: 1,
            ..AuditLimits::default()
        };
        let log = AuditLog::open_with(Some(&path), Stdout::Off, limits).unwrap();
        for _ in 0..3 {
            log.write(&denial("evil.test", "/"));
        }
        drop(log);
        let lines = read(&path);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[3]["repeated"], 2);
    }

    #[test]
    fn a_huge_path_is_cut_to_a_bounded_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(Some(&path), false).unwrap();
        let long = format!("/{}", "A".repeat(60_000));
        log.write(&denial("evil.test", &long));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.len() <= audit_lines::DEFAULT_MAX_RECORD_BYTES,
            "{}",
            text.len()
        );
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        let kept = line["path"].as_str().unwrap();
        assert!(kept.starts_with("/AAAA") && kept.ends_with("bytes truncated]"));
        assert_eq!(line["host"], "evil.test");
    }
}
