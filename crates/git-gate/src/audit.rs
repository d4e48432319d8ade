//! The audit log: one JSON line per fetch and per push, to stdout and to
//! the configured file. Entries carry ref names, ids and outcomes; the gate
//! never reads key files, so key contents cannot reach this log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::Error;

/// One ref in an audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefChange {
    /// Full ref name.
    #[serde(rename = "ref")]
    pub refname: String,
    /// Id before (None: the ref did not exist).
    pub old: Option<String>,
    /// Id after, or requested (None: deleted).
    pub new: Option<String>,
    /// What happened to this ref: `updated`, `pushed`, `refused: …`, …
    pub result: String,
}

/// What the agent did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// A clone or fetch (the mirror was refreshed from the upstream).
    Fetch,
    /// A push attempt.
    Push,
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// RFC 3339 UTC time of the decision.
    pub time: String,
    /// Upstream name.
    pub upstream: String,
    /// Fetch or push.
    pub operation: Operation,
    /// The refs involved.
    pub refs: Vec<RefChange>,
    /// `ok`, `refused` or `error`.
    pub result: String,
    /// Human-readable detail (error text, refusal rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEntry {
    /// An entry stamped with the current time.
    pub fn now(upstream: &str, operation: Operation, refs: Vec<RefChange>, result: &str) -> Self {
        Self {
            time: rfc3339_utc(SystemTime::now()),
            upstream: upstream.to_owned(),
            operation,
            refs,
            result: result.to_owned(),
            detail: None,
        }
    }

    /// Adds a detail message.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Where audit lines go.
#[derive(Debug)]
pub struct AuditLog {
    file: Option<(PathBuf, Mutex<std::fs::File>)>,
}

impl AuditLog {
    /// Opens (appending, creating) the audit file if one is configured.
    pub fn open(path: Option<&Path>) -> Result<Self, Error> {
        let file = match path {
            None => None,
            Some(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|source| Error::AuditLog {
                        path: path.to_path_buf(),
                        source,
                    })?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| Error::AuditLog {
                        path: path.to_path_buf(),
                        source,
                    })?;
                Some((path.to_path_buf(), Mutex::new(file)))
            }
        };
        Ok(Self { file })
    }

    /// Writes one entry. Failures to write the file are reported on stderr
    /// rather than failing the git operation that was already decided.
    pub fn record(&self, entry: &AuditEntry) {
        let mut line = serde_json::to_string(entry).expect("audit entries serialize");
        line.push('\n');
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
        if let Some((path, file)) = &self.file {
            let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Err(error) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
                eprintln!("git-gate: writing audit log {}: {error}", path.display());
            }
        }
    }
}

/// Formats a time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap_day = UNIX_EPOCH + Duration::from_millis(951_782_400_123);
        assert_eq!(rfc3339_utc(leap_day), "2000-02-29T00:00:00.123Z");
        let later = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339_utc(later), "2026-11-18T11:06:40.000Z");
    }

    #[test]
    fn entries_are_single_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/log.jsonl");
        let log = AuditLog::open(Some(&path)).unwrap();
        let change = RefChange {
            refname: "refs/heads/agent/x".into(),
            old: None,
            new: Some("ab".into()),
            result: "pushed".into(),
        };
        log.record(&AuditEntry::now("p", Operation::Push, vec![change], "ok"));
        log.record(&AuditEntry::now("p", Operation::Fetch, vec![], "error").with_detail("x\ny"));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["operation"], "push");
        assert_eq!(lines[0]["refs"][0]["ref"], "refs/heads/agent/x");
        assert_eq!(lines[1]["detail"], "x\ny");
    }
}
