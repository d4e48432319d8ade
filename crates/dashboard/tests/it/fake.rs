//! A backend in memory: canned bottles, requests and audit lines, and a record of
//! what the dashboard asked it to do.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend_api::{
    Attached, AuditChunk, AuditCursor, AuditLog, Backend, BottleStatus, Decided, Error, GcReport,
    LogSource, PendingRequest, PolicyChange, Progress, RequestKind, Result, ServiceStatus,
    UpRequest,
};

/// A call that changes something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Down(String),
    Egress(String, PolicyChange),
    Decide(String, bool, Option<String>),
}

#[derive(Default)]
struct Inner {
    bottles: Vec<BottleStatus>,
    requests: Vec<PendingRequest>,
    egress_lines: Vec<String>,
    audit_unsupported: bool,
    calls: Vec<Call>,
}

/// The shared state; each lane's backend is a handle on it.
#[derive(Clone, Default)]
pub struct Fake(Arc<Mutex<Inner>>);

fn bottle(slug: &str, manifest: Option<(&Path, &str)>) -> BottleStatus {
    BottleStatus {
        slug: slug.to_owned(),
        agent: Some(manifest.map_or("dev", |(_, a)| a).to_owned()),
        created: Some(1_800_000_000),
        ready: true,
        manifest: manifest.map(|(p, _)| (p.to_path_buf(), "0".repeat(64))),
        services: ["agent", "egress", "supervise"]
            .iter()
            .map(|role| ServiceStatus {
                role: (*role).to_owned(),
                name: format!("{slug}-{role}"),
                state: "running".to_owned(),
                health: Some("healthy".to_owned()),
            })
            .collect(),
        state_dir: format!("/state/{slug}").into(),
    }
}

impl Fake {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap()
    }

    /// One running bottle, `dev-1`.
    pub fn with_bottle() -> Self {
        let fake = Self::default();
        fake.lock().bottles.push(bottle("dev-1", None));
        fake
    }

    /// One running bottle, `dev-1`, of `agent`, started from `manifest`.
    pub fn with_bottle_from(manifest: &Path, agent: &str) -> Self {
        let fake = Self::default();
        fake.lock()
            .bottles
            .push(bottle("dev-1", Some((manifest, agent))));
        fake
    }

    /// An egress request of `dev-1` for GET on `host`.
    pub fn add_request(&self, id: &str, host: &str, reason: &str) {
        self.lock().requests.push(PendingRequest {
            slug: "dev-1".to_owned(),
            id: id.to_owned(),
            created: 1_800_000_100,
            kind: RequestKind::Egress,
            host: Some(host.to_owned()),
            port: None,
            methods: Some(vec!["GET".to_owned()]),
            reason: Some(reason.to_owned()),
            question: None,
        });
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// A line of `dev-1`'s egress log.
    pub fn add_audit(&self, line: &str) {
        self.lock().egress_lines.push(line.to_owned());
    }

    /// Make `audit` fail as the Kubernetes backend's does.
    pub fn set_audit_unsupported(&self) {
        self.lock().audit_unsupported = true;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }
}

fn unsupported<T>() -> Result<T> {
    Err(Error::Unsupported("not in this fake".to_owned()))
}

impl Backend for Fake {
    fn name(&self) -> &'static str {
        "test"
    }

    fn prepare(&self, _progress: &mut dyn Progress) -> Result<String> {
        unsupported()
    }

    fn up(
        &self,
        _request: &UpRequest,
        _progress: &mut dyn Progress,
        _interrupted: &dyn Fn() -> bool,
    ) -> Result<Attached> {
        unsupported()
    }

    fn attach(&self, _slug: &str, _command: &[String], _workdir: Option<&str>) -> Result<i32> {
        unsupported()
    }

    fn list(&self) -> Result<Vec<BottleStatus>> {
        Ok(self.lock().bottles.clone())
    }

    fn logs(
        &self,
        _slug: &str,
        _follow: bool,
        _sink: &mut dyn FnMut(LogSource, &str),
    ) -> Result<()> {
        unsupported()
    }

    fn audit(&self, slug: &str, log: AuditLog, from: AuditCursor) -> Result<AuditChunk> {
        let inner = self.lock();
        if inner.audit_unsupported {
            return Err(Error::Unsupported("following the audit logs".to_owned()));
        }
        if !inner.bottles.iter().any(|b| b.slug == slug) {
            return Err(Error::UnknownBottle {
                slug: slug.to_owned(),
            });
        }
        let lines = match log {
            AuditLog::Egress => &inner.egress_lines,
            AuditLog::GitGate => {
                return Ok(AuditChunk {
                    next: from,
                    ..AuditChunk::default()
                });
            }
        };
        let start = (from.offset as usize).min(lines.len());
        // Two lines per call: the poller must come back for the rest.
        let end = (start + 2).min(lines.len());
        Ok(AuditChunk {
            lines: lines[start..end].to_vec(),
            next: AuditCursor {
                file: 1,
                offset: end as u64,
            },
            more: end < lines.len(),
        })
    }

    fn down(&self, slug: &str) -> Result<Vec<Error>> {
        let mut inner = self.lock();
        inner.calls.push(Call::Down(slug.to_owned()));
        Ok(Vec::new())
    }

    fn purge_agent(&self, _agent: &str) -> Result<bool> {
        unsupported()
    }

    fn gc(&self, _dry_run: bool) -> Result<GcReport> {
        unsupported()
    }

    fn apply_egress(
        &self,
        slug: &str,
        change: &PolicyChange,
        _timeout: Duration,
    ) -> Result<String> {
        let mut inner = self.lock();
        if !inner.bottles.iter().any(|b| b.slug == slug) {
            return Err(Error::UnknownBottle {
                slug: slug.to_owned(),
            });
        }
        inner
            .calls
            .push(Call::Egress(slug.to_owned(), change.clone()));
        Ok(match change {
            PolicyChange::Allow { .. } => "v-allow",
            PolicyChange::Deny { .. } => "v-deny",
        }
        .to_owned())
    }

    fn requests(&self, slug: Option<&str>) -> Result<Vec<PendingRequest>> {
        Ok(self
            .lock()
            .requests
            .iter()
            .filter(|r| slug.is_none_or(|s| r.slug == s))
            .cloned()
            .collect())
    }

    fn decide(&self, id: &str, approve: bool, note: Option<String>) -> Result<Decided> {
        let mut inner = self.lock();
        inner.calls.push(Call::Decide(id.to_owned(), approve, note));
        let at = inner
            .requests
            .iter()
            .position(|r| r.id == id)
            .ok_or_else(|| Error::BadPolicyChange(format!("no request {id}")))?;
        let request = inner.requests.remove(at);
        Ok(Decided {
            slug: request.slug,
            id: request.id,
            kind: request.kind,
        })
    }
}
