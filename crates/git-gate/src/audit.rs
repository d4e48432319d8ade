//! The audit log: one JSON line per fetch and per push, to stdout and to
//! the configured file. Entries carry ref names, ids and outcomes; the gate
//! never reads key files, so key contents cannot reach this log.

use std::path::Path;
use std::time::SystemTime;

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
            time: audit_lines::rfc3339_utc(SystemTime::now()),
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

/// Where audit lines go: stdout, and a file if configured.
#[derive(Debug)]
pub struct AuditLog(audit_lines::JsonLines);

impl AuditLog {
    /// Opens (appending, creating) the audit file if one is configured.
    pub fn open(path: Option<&Path>) -> Result<Self, Error> {
        audit_lines::JsonLines::open("git-gate", path, true)
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
