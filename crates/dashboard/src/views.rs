//! What the page receives, as JSON: bottles, requests, decisions, traffic lines.
//! Only names, states and the sidecars' redacted audit lines: no secret value ever
//! crosses the seam, so none can reach the page. The agent's texts are data here; the
//! page renders them with `textContent`.

use std::path::Path;

use backend_api::{AuditLog, BottleStatus, PendingRequest};
use serde::Serialize;
use serde_json::Value;

/// One service of a bottle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceView {
    /// `agent`, `egress`, `git-gate`, `supervise`.
    pub role: String,
    /// `running`, `exited`, ...
    pub state: String,
    /// `healthy`, `starting`, `unhealthy`, where there is a health check.
    pub health: Option<String>,
}

/// A bottle as the Bottles view shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BottleView {
    /// The slug.
    pub slug: String,
    /// The agent it runs.
    pub agent: Option<String>,
    /// Seconds since the epoch.
    pub created: Option<u64>,
    /// `running`, `starting`, `stopped` or `orphaned`, as `bottle ls` says.
    pub state: &'static str,
    /// The manifest it was started from.
    pub manifest: Option<String>,
    /// Whether that manifest changed since (or is gone).
    pub manifest_changed: bool,
    /// Its services.
    pub services: Vec<ServiceView>,
}

impl BottleView {
    /// The view of `bottle`; `changed` says whether its manifest changed.
    pub fn new(bottle: &BottleStatus, changed: bool) -> Self {
        let state = match (bottle.known(), bottle.running()) {
            (_, true) => "running",
            (true, false) if !bottle.ready => "starting",
            (false, _) => "orphaned",
            _ => "stopped",
        };
        Self {
            slug: bottle.slug.clone(),
            agent: bottle.agent.clone(),
            created: bottle.created,
            state,
            manifest: bottle
                .manifest
                .as_ref()
                .map(|(p, _)| p.display().to_string()),
            manifest_changed: changed,
            services: bottle
                .services
                .iter()
                .map(|s| ServiceView {
                    role: s.role.clone(),
                    state: s.state.clone(),
                    health: s.health.clone(),
                })
                .collect(),
        }
    }
}

/// Whether the manifest a bottle started from changed since (or is gone): reads it.
pub fn manifest_changed(bottle: &BottleStatus) -> bool {
    bottle
        .manifest
        .as_ref()
        .is_some_and(|(path, sha256)| sha256_of(path).is_none_or(|now| now != *sha256))
}

/// SHA-256 of a file's bytes, lowercase hex; None when it cannot be read.
pub fn sha256_of(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|bytes| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)))
}

/// How a request left the inbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Approved for this bottle.
    Approved,
    /// Approved, and the host written into the manifest.
    ApprovedAlways,
    /// Denied.
    Denied,
    /// Gone from the queue without a decision here (decided from the CLI, expired).
    Gone,
}

/// A request that is no longer pending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The request as it was pending.
    pub request: PendingRequest,
    /// What became of it.
    pub outcome: Outcome,
    /// The human's note.
    pub note: Option<String>,
}

/// One audit line of one bottle.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrafficLine {
    /// Increasing over the dashboard's life (the page drops what it already has).
    pub seq: u64,
    /// The bottle.
    pub slug: String,
    /// `egress` or `git-gate`.
    pub log: &'static str,
    /// What happened, for filters and counters: see [`verdict`].
    pub verdict: &'static str,
    /// The line, as the sidecar wrote it (redacted); `{"raw": ...}` if not JSON.
    pub entry: Value,
}

/// The verdict of an audit line: egress `allowed`, `denied`, `credential` (a
/// credential was injected), `dlp` (a DLP finding), `dns` (a query to the sink),
/// `reload`; git gate `push`, `push-refused`, `fetch`, `error`.
pub fn verdict(log: AuditLog, entry: &Value) -> &'static str {
    let field = |name: &str| entry.get(name).and_then(Value::as_str).unwrap_or("");
    match log {
        AuditLog::Egress => {
            if field("event") == "dns" {
                "dns"
            } else if entry.get("dlp").is_some_and(|d| !d.is_null()) {
                "dlp"
            } else if field("action") == "deny" {
                "denied"
            } else if field("reason").contains("credential injected") {
                "credential"
            } else if field("action") == "allow" {
                "allowed"
            } else {
                "reload"
            }
        }
        AuditLog::GitGate => match (field("operation"), field("result")) {
            (_, "error") => "error",
            ("push", "refused") => "push-refused",
            ("push", _) => "push",
            _ => "fetch",
        },
    }
}

/// Parses a redacted audit line for the page.
pub fn traffic_line(seq: u64, slug: &str, log: AuditLog, line: &str) -> TrafficLine {
    let entry = serde_json::from_str::<Value>(line)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| serde_json::json!({ "raw": line }));
    TrafficLine {
        seq,
        slug: slug.to_owned(),
        log: log.name(),
        verdict: verdict(log, &entry),
        entry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn verdicts() {
        let egress = |v: Value| verdict(AuditLog::Egress, &v);
        assert_eq!(
            egress(json!({"event": "http", "action": "allow"})),
            "allowed"
        );
        assert_eq!(egress(json!({"event": "http", "action": "deny"})), "denied");
        assert_eq!(
            egress(json!({"event": "http", "action": "deny", "dlp": "aws-key"})),
            "dlp"
        );
        assert_eq!(egress(json!({"event": "dns", "action": "deny"})), "dns");
        assert_eq!(
            egress(json!({"event": "http", "action": "allow",
                          "reason": "credential injected into x-api-key"})),
            "credential"
        );
        assert_eq!(
            egress(json!({"event": "reload", "action": "reload"})),
            "reload"
        );
        let git = |v: Value| verdict(AuditLog::GitGate, &v);
        assert_eq!(git(json!({"operation": "push", "result": "ok"})), "push");
        assert_eq!(
            git(json!({"operation": "push", "result": "refused"})),
            "push-refused"
        );
        assert_eq!(git(json!({"operation": "fetch", "result": "ok"})), "fetch");
        assert_eq!(
            git(json!({"operation": "fetch", "result": "error"})),
            "error"
        );
    }

    #[test]
    fn a_line_that_is_not_json_is_kept_raw() {
        let line = traffic_line(3, "dev-1", AuditLog::Egress, "<b>not json");
        assert_eq!(line.entry, json!({"raw": "<b>not json"}));
        assert_eq!(line.log, "egress");
    }
}
