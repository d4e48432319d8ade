//! The data that crosses the seam: what to start, what runs, what to change.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use plan::BottlePlan;

/// What `up` starts: a plan and the launch's circumstances.
#[derive(Clone, Debug)]
pub struct UpRequest {
    /// The bottle, as the manifest asks for it.
    pub plan: BottlePlan,
    /// The manifest the plan came from (for `ls`: has it changed since?).
    pub manifest: PathBuf,
    /// SHA-256 of the manifest bytes, lowercase hex.
    pub manifest_sha256: String,
    /// The sidecar image (or its equivalent) this launcher's sidecars run.
    pub sidecar_image: String,
    /// `uid:gid` sidecars run as (the owner of the state root).
    pub sidecar_user: String,
    /// How long to wait for the sidecars to be ready.
    pub ready_timeout: Duration,
    /// Seconds since the epoch (for the CA and metadata).
    pub now_unix: i64,
    /// This launcher's pid: `gc` collects a bottle whose launcher died mid-start.
    pub launcher_pid: u32,
    /// Settings for tests and the demo, which bring their own stand-in internet.
    pub testing: TestingKnobs,
}

/// Launch settings for a stand-in internet (e2e, `bottle demo`): never set by a
/// manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestingKnobs {
    /// Make the bottle's outside network internal too: nothing can leave.
    pub egress_network_internal: bool,
    /// Attach the egress proxy to this existing network instead of a new one.
    pub egress_network: Option<String>,
    /// A PEM bundle the egress proxy trusts for upstreams, beside the system roots.
    pub extra_ca_bundle: Option<PathBuf>,
    /// Names the egress proxy resolves without DNS.
    pub static_hosts: BTreeMap<String, IpAddr>,
}

/// A bottle that `up` started and provisioned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// Its slug: what every other operation takes.
    pub slug: String,
    /// Where its state lives on this host.
    pub state_dir: PathBuf,
}

/// One service of a bottle (agent, egress, git-gate, supervise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceStatus {
    /// Its role (`agent`, `egress`, ...); the engine's name when unlabelled.
    pub role: String,
    /// The engine's name for it.
    pub name: String,
    /// `running`, `exited`, ...
    pub state: String,
    /// `healthy`, `starting`, `unhealthy`, where the service has a health check.
    pub health: Option<String>,
}

/// A bottle as `ls` shows it: what the host knows of it and what runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BottleStatus {
    /// The slug.
    pub slug: String,
    /// The agent it runs (None: its launch record is missing or unreadable).
    pub agent: Option<String>,
    /// When it was created, seconds since the epoch.
    pub created: Option<u64>,
    /// Whether its launch finished.
    pub ready: bool,
    /// The manifest it came from and that manifest's SHA-256 then.
    pub manifest: Option<(PathBuf, String)>,
    /// Its services.
    pub services: Vec<ServiceStatus>,
    /// Its state directory on this host.
    pub state_dir: PathBuf,
}

impl BottleStatus {
    /// Whether it has services and every one runs.
    pub fn running(&self) -> bool {
        !self.services.is_empty() && self.services.iter().all(|s| s.state == "running")
    }

    /// Whether it has a launch record at all (else: left over from a dead launch).
    pub fn known(&self) -> bool {
        self.agent.is_some()
    }
}

/// A change to a running bottle's egress policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyChange {
    /// Allow `host` (exact or `*.suffix`) on `port` (or the default ports), for
    /// `methods` only when given (an agent's request says which it needs).
    Allow {
        host: String,
        port: Option<u16>,
        methods: Option<Vec<String>>,
    },
    /// Stop allowing `host` (on `port`, or on every port).
    Deny { host: String, port: Option<u16> },
}

/// Parses `HOST[:PORT]` as `bottle egress allow|deny` takes it: the host normalised
/// (lowercase, `*.suffix` kept), the port when given.
pub fn parse_host_port(text: &str) -> crate::Result<(String, Option<u16>)> {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
            let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                crate::Error::BadPolicyChange(format!("`{port}` is not a port (1-65535)"))
            })?;
            (host, Some(port))
        }
        _ => (text, None),
    };
    let pattern =
        plan::rules::HostPattern::parse(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|reason| crate::Error::BadPolicyChange(format!("`{host}`: {reason}")))?;
    Ok((pattern.to_string(), port))
}

/// One of a bottle's audit logs, as [`crate::Backend::audit`] reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuditLog {
    /// The egress proxy's decisions: allowed, denied (with the rule and reason),
    /// credentials injected, DLP findings, DNS sink queries, policy reloads.
    Egress,
    /// The git gate's fetches and pushes, accepted or refused.
    GitGate,
}

impl AuditLog {
    /// Both logs, in the order `logs` prints them.
    pub const ALL: [AuditLog; 2] = [AuditLog::Egress, AuditLog::GitGate];

    /// Its name (`egress`, `git-gate`): the service that writes it.
    pub fn name(self) -> &'static str {
        match self {
            AuditLog::Egress => "egress",
            AuditLog::GitGate => "git-gate",
        }
    }

    /// Its file's name (`egress.jsonl`), as `logs` names its lines.
    pub fn file_name(self) -> &'static str {
        match self {
            AuditLog::Egress => "egress.jsonl",
            AuditLog::GitGate => "git-gate.jsonl",
        }
    }
}

/// Where a reader of an audit log stopped. Only the backend that returned it knows
/// what the numbers mean (on Docker: the file's inode and a byte offset in it); the
/// default cursor reads a log from the start of its current file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AuditCursor {
    /// Which file of the log (an identity the backend can recognise after rotation).
    pub file: u64,
    /// How far into that file.
    pub offset: u64,
}

/// What [`crate::Backend::audit`] read: whole lines only, secrets redacted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditChunk {
    /// New lines (JSON, one event each, as the sidecar wrote them), oldest first.
    pub lines: Vec<String>,
    /// Where to go on from.
    pub next: AuditCursor,
    /// Whether more was there than one call returns: call again at once.
    pub more: bool,
}

/// Why `gc` considers a bottle garbage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GarbageReason {
    /// Resources carry the bottle's label, but no launch record says who owns them.
    Orphaned,
    /// The launcher died before the bottle was ready.
    LauncherDied { pid: u32 },
    /// The bottle was ready, but none of its services runs any more.
    Stopped,
}

/// A bottle `gc` removes (or would).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Garbage {
    /// The slug.
    pub slug: String,
    /// Why.
    pub reason: GarbageReason,
    /// What goes with it (containers, networks, directories), for the report.
    pub resources: Vec<String>,
}

/// What `gc` found, and what went wrong removing it (it goes on past failures).
#[derive(Debug, Default)]
pub struct GcReport {
    /// The bottles collected (or to collect, on a dry run).
    pub garbage: Vec<Garbage>,
    /// Steps that failed.
    pub problems: Vec<crate::Error>,
}

/// What an agent asks the human over supervise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// More egress: a host (port, methods) and why.
    Egress,
    /// A question for the human.
    Question,
}

/// A pending request, with the bottle it came from. The texts are the agent's: show
/// them escaped.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PendingRequest {
    /// The bottle's slug (`bottle_slug` in JSON, as supervise files it).
    #[serde(rename = "bottle_slug")]
    pub slug: String,
    /// The request's id (`bottle approve ID` takes a unique prefix).
    pub id: String,
    /// When it was filed, seconds since the epoch.
    pub created: u64,
    /// What is asked.
    #[serde(serialize_with = "kind_name")]
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
    /// Egress: the agent's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Question: the question.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
}

fn kind_name<S: serde::Serializer>(kind: &RequestKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match kind {
        RequestKind::Egress => "egress",
        RequestKind::Question => "question",
    })
}

/// What a decision did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    /// The bottle the request came from.
    pub slug: String,
    /// The request's full id.
    pub id: String,
    /// What it asked.
    pub kind: RequestKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_parse_like_the_cli_takes_them() {
        assert_eq!(
            parse_host_port("Example.com").unwrap(),
            ("example.com".to_owned(), None)
        );
        assert_eq!(
            parse_host_port("example.com:8443").unwrap(),
            ("example.com".to_owned(), Some(8443))
        );
        assert_eq!(
            parse_host_port("*.example.com:443").unwrap(),
            ("*.example.com".to_owned(), Some(443))
        );
        for bad in ["example.com:0", "example.com:x", "exa mple.com", ""] {
            assert!(
                matches!(parse_host_port(bad), Err(crate::Error::BadPolicyChange(_))),
                "{bad}"
            );
        }
    }
}
