//! The audit log: one JSON line per request and per decision seen (and per
//! timeout, refused decision file, expired request, and refused asks at most
//! every few seconds with their count), to stdout and the configured file,
//! bounded by [`audit_lines::Limits`] (64 MiB × 4 files, 16 KiB lines).

use std::path::Path;
use std::time::SystemTime;

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
    /// A new ask was refused: too many pending, or too many in the last minute.
    Refused,
    /// A pending request nobody waited on or asked about for a while left the queue.
    Expired,
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
    /// `pending`, `approved`, `denied`, `answered`, `timeout`, `refused`, `expired`.
    pub outcome: String,
    /// The human's note (shortened), or why a decision file was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEntry {
    /// An entry about `request`, stamped now.
    pub fn for_request(request: &Request, event: Event, outcome: &str) -> Self {
        Self {
            time: audit_lines::rfc3339_utc(SystemTime::now()),
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

/// Where audit lines go: stdout, and a file if configured.
#[derive(Debug)]
pub struct AuditLog(audit_lines::JsonLines);

impl AuditLog {
    /// Opens (appending, creating) the audit file if one is configured.
    pub fn open(path: Option<&Path>) -> Result<Self, Error> {
        audit_lines::JsonLines::open("supervise", path, true)
            .map(Self)
            .map_err(|source| Error::AuditLog {
                path: path.map(Path::to_path_buf).unwrap_or_default(),
                source,
            })
    }

    /// Writes one entry; a failed file write is reported on stderr and never fails
    /// the operation it records.
    pub fn record(&self, entry: &AuditEntry) {
        self.0.write(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Outcome;

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
