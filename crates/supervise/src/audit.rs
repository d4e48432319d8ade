//! The audit log: one JSON line per request and per decision seen (and per
//! timeout or refused decision file), to stdout and the configured file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::Error;
use crate::request::{Decision, Request, RequestKind, truncate};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The agent asked (a new request file was queued).
    Request,
    /// The agent asked again for something already pending.
    RequestRepeated,
    /// A valid decision was seen.
    Decision,
    /// A decision file was refused (wrong id, outcome, shape).
    InvalidDecision,
    /// The wait ended without a decision.
    Timeout,
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// RFC 3339 UTC time.
    pub time: String,
    /// The bottle.
    pub bottle: String,
    /// What happened.
    pub event: Event,
    /// Request id.
    pub id: String,
    /// Egress or question.
    pub kind: RequestKind,
    /// Egress: the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Egress: the port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Egress: the methods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Egress reason or question, shortened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// `pending`, `approved`, `denied`, `answered`, `timeout`, `refused`.
    pub outcome: String,
    /// The human's note (shortened), or why a decision file was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEntry {
    /// An entry about `request`, stamped now.
    pub fn for_request(request: &Request, event: Event, outcome: &str) -> Self {
        Self {
            time: rfc3339_utc(SystemTime::now()),
            bottle: request.bottle_slug.clone(),
            event,
            id: request.id.clone(),
            kind: request.kind,
            host: request.host.clone(),
            port: request.port,
            methods: request.methods.clone(),
            summary: request
                .reason
                .as_deref()
                .or(request.question.as_deref())
                .map(|text| truncate(text, 200)),
            outcome: outcome.to_owned(),
            detail: None,
        }
    }

    /// An entry for a decision seen on `request`.
    pub fn for_decision(request: &Request, decision: &Decision) -> Self {
        let mut entry = Self::for_request(request, Event::Decision, decision.outcome.as_str());
        entry.detail = decision.note.as_deref().map(|note| truncate(note, 200));
        entry
    }

    /// Adds a detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Where audit lines go: stdout always, and a file if configured.
#[derive(Debug)]
pub struct AuditLog {
    file: Option<(PathBuf, Mutex<std::fs::File>)>,
}

impl AuditLog {
    /// Opens (appends to) `path`, if any.
    pub fn open(path: Option<&Path>) -> Result<Self, Error> {
        let file = match path {
            None => None,
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .open(path)
                    .map_err(|source| Error::AuditLog {
                        path: path.to_owned(),
                        source,
                    })?;
                Some((path.to_owned(), Mutex::new(file)))
            }
        };
        Ok(Self { file })
    }

    /// Writes one line; a failing file write is reported on stderr and
    /// does not fail the request.
    pub fn record(&self, entry: &AuditEntry) {
        let line = serde_json::to_string(entry).expect("audit entries serialize");
        println!("{line}");
        if let Some((path, file)) = &self.file {
            let mut file = file.lock().unwrap_or_else(|poison| poison.into_inner());
            if let Err(error) = writeln!(file, "{line}") {
                eprintln!("supervise: writing audit log {}: {error}", path.display());
            }
        }
    }
}

/// `time` as RFC 3339 in UTC with milliseconds.
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
    use crate::request::Outcome;
    use std::time::Duration;

    #[test]
    fn times() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        assert_eq!(rfc3339_utc(t), "2025-11-24T16:00:00.123Z");
    }

    #[test]
    fn lines_go_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(Some(&path)).unwrap();
        let request = Request {
            id: "0123456789abcdef0123456789abcdef".into(),
            bottle_slug: "b".into(),
            created: 1,
            kind: RequestKind::Egress,
            host: Some("docs.rs".into()),
            port: Some(443),
            methods: None,
            reason: Some("read docs".into()),
            question: None,
        };
        log.record(&AuditEntry::for_request(
            &request,
            Event::Request,
            "pending",
        ));
        let decision = Decision::now(&request.id, Outcome::Approved, Some("fine".into()));
        log.record(&AuditEntry::for_decision(&request, &decision));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "request");
        assert_eq!(lines[0]["host"], "docs.rs");
        assert_eq!(lines[0]["summary"], "read docs");
        assert_eq!(lines[1]["event"], "decision");
        assert_eq!(lines[1]["outcome"], "approved");
        assert_eq!(lines[1]["detail"], "fine");
        assert_eq!(lines[1]["bottle"], "b");
    }
}
