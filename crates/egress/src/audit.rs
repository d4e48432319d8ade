//! The audit log: one JSON line per decision, to stdout and optionally to a
//! file. Records carry names (rules, DLP findings), never secret values; URL
//! queries are not logged because they can carry credentials.

use std::path::Path;

use serde::Serialize;

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
        }
    }
}

/// The path part of a request target, without query or fragment, for logs.
pub fn loggable_path(path_and_query: &str) -> String {
    match path_and_query.split_once(['?', '#']) {
        Some((path, _)) => format!("{path}?[query omitted]"),
        None => path_and_query.to_owned(),
    }
}

/// Where audit lines go.
#[derive(Debug)]
pub struct AuditLog(audit_lines::JsonLines);

impl AuditLog {
    /// Opens (appending) the audit file if one is configured.
    pub fn open(path: Option<&Path>, to_stdout: bool) -> Result<Self, Error> {
        audit_lines::JsonLines::open("egress", path, to_stdout)
            .map(Self)
            .map_err(|source| Error::OpenAuditLog {
                path: path.map(Path::to_path_buf).unwrap_or_default(),
                source,
            })
    }

    /// Writes one record; IO errors go to stderr, never fail a request.
    pub fn write(&self, record: &AuditRecord) {
        self.0.write(record);
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
}
