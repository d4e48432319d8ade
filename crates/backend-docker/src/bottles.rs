//! [`backend_api::Backend`] on an [`Engine`] (Docker, or the fake one tests use):
//! the seam's bottle-level operations, carried out by this crate's launch sequence,
//! lifecycle operations and supervise host side. Compose files, networks, state
//! directories and container labels stay in here.

use std::path::PathBuf;
use std::time::Duration;

use backend_api::{
    Attached, AuditChunk, AuditCursor, AuditLog, Backend, BottleStatus, Decided, GcReport,
    LogSource, PendingRequest, PolicyChange, Progress, RequestKind, ServiceStatus, UpRequest,
};
use compose_render::{AGENT_SERVICE, LABEL_ROLE};

use crate::engine::{ComposeCall, Engine, ExecSpec, Followed};
use crate::error::{BackendError, Result};
use crate::images::{OwnBinary, Sources};
use crate::launch::{LaunchOptions, compose_project, launch, redact};
use crate::state::COMPOSE_FILE;
use crate::{audit_feed, images, ops, requests};
use backend_api::needs::EgressExtras;

/// Where the sidecar image of this launcher comes from.
#[derive(Clone, Debug)]
pub enum SidecarSource {
    /// A fixed image (`BOT_BOTTLE_SIDECAR_IMAGE`): only checked, never built.
    Fixed(String),
    /// The running executable's own image, built on first use (the executable is
    /// read and hashed only then: `ls`, `down` and the rest never need it).
    Own {
        /// Where the base and build contexts come from, or why the host gives no
        /// place (which only matters when something must be built).
        sources: std::result::Result<Sources, String>,
    },
}

/// Bottles on an engine, with their state under `state_root`.
pub struct Bottles {
    engine: Box<dyn Engine>,
    name: &'static str,
    state_root: PathBuf,
    sidecar: SidecarSource,
    pid_alive: fn(u32) -> bool,
    /// The secret values of ready bottles, by slug, for redacting their audit lines
    /// without asking the engine on every poll.
    secrets: std::sync::Mutex<std::collections::BTreeMap<String, Vec<String>>>,
}

impl Bottles {
    /// Bottles on `engine` (called `name` in messages), state in `state_root`, sidecars
    /// from `sidecar`; `pid_alive` tells `gc` whether a launcher still runs.
    pub fn new(
        engine: Box<dyn Engine>,
        name: &'static str,
        state_root: PathBuf,
        sidecar: SidecarSource,
        pid_alive: fn(u32) -> bool,
    ) -> Self {
        Self {
            engine,
            name,
            state_root,
            sidecar,
            pid_alive,
            secrets: std::sync::Mutex::default(),
        }
    }

    /// The values `audit` redacts in `slug`'s lines: remembered once the bottle is
    /// ready and runs (before that a service's environment may still be missing).
    fn secrets_of(&self, slug: &str) -> Result<Vec<String>> {
        if let Some(known) = self.secrets.lock().ok().and_then(|m| m.get(slug).cloned()) {
            return Ok(known);
        }
        let bottle = ops::find(self.engine.as_ref(), &self.state_root, slug)?;
        let secrets = ops::running_secrets(&bottle);
        let complete = bottle.metadata.as_ref().is_some_and(|m| m.ready)
            && !bottle.containers.is_empty()
            && bottle.containers.iter().all(|c| c.state == "running");
        if complete && let Ok(mut known) = self.secrets.lock() {
            known.insert(slug.to_owned(), secrets.clone());
        }
        Ok(secrets)
    }

    fn agent_container(&self, bottle: &ops::BottleStatus) -> Result<String> {
        bottle
            .containers
            .iter()
            .find(|c| {
                c.labels.get(LABEL_ROLE).is_some_and(|r| r == AGENT_SERVICE) && c.state == "running"
            })
            .map(|c| c.name.clone())
            .ok_or_else(|| BackendError::ServiceNotRunning {
                slug: bottle.slug.clone(),
                role: AGENT_SERVICE.to_owned(),
            })
    }
}

/// The seam's view of a bottle: services by role, no engine objects.
fn status(bottle: ops::BottleStatus) -> BottleStatus {
    let mut services: Vec<ServiceStatus> = bottle
        .containers
        .iter()
        .map(|c| ServiceStatus {
            role: c
                .labels
                .get(LABEL_ROLE)
                .cloned()
                .unwrap_or_else(|| c.name.clone()),
            name: c.name.clone(),
            state: c.state.clone(),
            health: c.health.clone(),
        })
        .collect();
    services.sort_by(|a, b| a.role.cmp(&b.role));
    let metadata = bottle.metadata;
    BottleStatus {
        slug: bottle.slug,
        agent: metadata.as_ref().map(|m| m.agent.clone()),
        created: metadata.as_ref().map(|m| m.created),
        ready: metadata.as_ref().is_some_and(|m| m.ready),
        manifest: metadata
            .as_ref()
            .map(|m| (m.manifest.clone(), m.manifest_sha256.clone())),
        services,
        state_dir: bottle.state_dir,
    }
}

fn pending(p: requests::PendingRequest) -> PendingRequest {
    let r = p.request;
    PendingRequest {
        slug: p.slug,
        id: r.id,
        created: r.created,
        kind: kind(&r.kind),
        host: r.host,
        port: r.port,
        methods: r.methods,
        reason: r.reason,
        question: r.question,
    }
}

fn kind(kind: &sidecar_contract::supervise::RequestKind) -> RequestKind {
    match kind {
        sidecar_contract::supervise::RequestKind::Egress => RequestKind::Egress,
        sidecar_contract::supervise::RequestKind::Question => RequestKind::Question,
    }
}

impl Backend for Bottles {
    fn name(&self) -> &'static str {
        self.name
    }

    fn prepare(&self, progress: &mut dyn Progress) -> Result<String> {
        match &self.sidecar {
            SidecarSource::Fixed(image) => Ok(image.clone()),
            SidecarSource::Own { sources } => {
                let binary = &OwnBinary::current()?;
                let tag = binary.sidecar_tag();
                if !self.engine.image_exists(&tag)? {
                    progress.step(&format!(
                        "first use of this bottle build: building its sidecar image {tag}"
                    ));
                    let sources = sources
                        .as_ref()
                        .map_err(|why| BackendError::Unsupported(why.clone()))?;
                    images::ensure_sidecar(self.engine.as_ref(), binary, sources, progress)?;
                }
                Ok(tag)
            }
        }
    }

    fn up(
        &self,
        request: &UpRequest,
        progress: &mut dyn Progress,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Attached> {
        let testing = &request.testing;
        let options = LaunchOptions {
            state_root: self.state_root.clone(),
            manifest: request.manifest.clone(),
            manifest_sha256: request.manifest_sha256.clone(),
            sidecar_image: request.sidecar_image.clone(),
            sidecar_user: request.sidecar_user.clone(),
            egress_network_internal: testing.egress_network_internal,
            egress_network: testing.egress_network.clone(),
            egress_extras: EgressExtras {
                extra_ca_bundle: testing.extra_ca_bundle.clone(),
                static_hosts: testing.static_hosts.clone(),
            },
            health_timeout: request.ready_timeout,
            now_unix: request.now_unix,
            launcher_pid: request.launcher_pid,
        };
        let handle = launch(
            self.engine.as_ref(),
            &request.plan,
            &options,
            progress,
            interrupted,
        )?;
        Ok(Attached {
            slug: handle.metadata.slug,
            state_dir: handle.state_dir,
        })
    }

    fn attach(&self, slug: &str, command: &[String], workdir: Option<&str>) -> Result<i32> {
        let bottle = ops::find(self.engine.as_ref(), &self.state_root, slug)?;
        let container = self.agent_container(&bottle)?;
        self.engine.exec_interactive(&ExecSpec {
            container,
            user: None,
            workdir: workdir.map(str::to_owned),
            command: command.to_vec(),
            stdin: None,
        })
    }

    fn list(&self) -> Result<Vec<BottleStatus>> {
        Ok(ops::list(self.engine.as_ref(), &self.state_root)?
            .into_iter()
            .map(status)
            .collect())
    }

    fn find(&self, slug: &str) -> Result<BottleStatus> {
        ops::find(self.engine.as_ref(), &self.state_root, slug).map(status)
    }

    fn logs(&self, slug: &str, follow: bool, sink: &mut dyn FnMut(LogSource, &str)) -> Result<()> {
        let bottle = ops::find(self.engine.as_ref(), &self.state_root, slug)?;
        let secrets = ops::running_secrets(&bottle);
        let compose_file = bottle.state_dir.join(COMPOSE_FILE);
        if !compose_file.exists() {
            return Err(BackendError::Incomplete {
                slug: slug.to_owned(),
                what: "compose file",
            });
        }
        // The audit files are the audit log (the egress sidecar prints only notable
        // lines): read them all, then, when following, whatever they gain.
        let mut cursors = [AuditCursor::default(); AuditLog::ALL.len()];
        let mut read_audit = |sink: &mut dyn FnMut(LogSource, &str)| {
            for (log, cursor) in AuditLog::ALL.into_iter().zip(cursors.iter_mut()) {
                let path = audit_feed::log_path(&bottle.state_dir, log);
                while let Ok(chunk) =
                    audit_feed::read(&path, *cursor, audit_feed::MAX_CHUNK_BYTES, &mut |line| {
                        Ok(redact(line, &secrets))
                    })
                {
                    for line in &chunk.lines {
                        sink(LogSource::Audit(log.file_name()), line);
                    }
                    *cursor = chunk.next;
                    if !chunk.more {
                        break;
                    }
                }
            }
        };
        if !follow {
            read_audit(sink);
        }
        let project = bottle
            .metadata
            .as_ref()
            .map_or_else(|| compose_project(slug), |m| m.compose_project.clone());
        let mut args = vec![
            "logs".to_owned(),
            "--no-color".to_owned(),
            "--timestamps".to_owned(),
        ];
        if follow {
            args.push("--follow".to_owned());
        }
        let call = ComposeCall {
            project,
            file: compose_file,
            args,
            env: Vec::new(),
        };
        self.engine
            .compose_follow(&call, &mut |event| match event {
                Followed::Line(line) => sink(LogSource::Services, &redact(line, &secrets)),
                Followed::Tick if follow => read_audit(sink),
                Followed::Tick => {}
            })
            .map(drop)
    }

    fn audit(&self, slug: &str, log: AuditLog, from: AuditCursor) -> Result<AuditChunk> {
        // A slug names a directory under the state root: nothing else is read.
        if slug.is_empty()
            || !slug
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(BackendError::UnknownBottle {
                slug: slug.to_owned(),
            });
        }
        let state_dir = self.state_root.join(slug);
        if !state_dir.is_dir() {
            return Err(BackendError::UnknownBottle {
                slug: slug.to_owned(),
            });
        }
        let mut secrets: Option<Vec<String>> = None;
        audit_feed::read(
            &audit_feed::log_path(&state_dir, log),
            from,
            audit_feed::MAX_CHUNK_BYTES,
            &mut |line| {
                if secrets.is_none() {
                    secrets = Some(self.secrets_of(slug)?);
                }
                Ok(redact(line, secrets.as_deref().unwrap_or_default()))
            },
        )
    }

    fn down(&self, slug: &str) -> Result<Vec<BackendError>> {
        if let Ok(mut known) = self.secrets.lock() {
            known.remove(slug);
        }
        ops::down(self.engine.as_ref(), &self.state_root, slug)
    }

    fn purge_agent(&self, agent: &str) -> Result<bool> {
        ops::purge_agent_state(&self.state_root, agent)
    }

    fn gc(&self, dry_run: bool) -> Result<GcReport> {
        let pid_alive = self.pid_alive;
        let (garbage, problems) = ops::gc(
            self.engine.as_ref(),
            &self.state_root,
            dry_run,
            &move |pid| pid_alive(pid),
        )?;
        Ok(GcReport { garbage, problems })
    }

    fn apply_egress(&self, slug: &str, change: &PolicyChange, timeout: Duration) -> Result<String> {
        ops::change_egress(
            self.engine.as_ref(),
            &self.state_root,
            slug,
            change,
            timeout,
        )
    }

    fn requests(&self, slug: Option<&str>) -> Result<Vec<PendingRequest>> {
        Ok(
            requests::pending(self.engine.as_ref(), &self.state_root, slug)?
                .into_iter()
                .map(pending)
                .collect(),
        )
    }

    fn decide(&self, id: &str, approve: bool, note: Option<String>) -> Result<Decided> {
        let (slug, request) = if approve {
            requests::approve(self.engine.as_ref(), &self.state_root, id, note)
        } else {
            requests::deny(self.engine.as_ref(), &self.state_root, id, note)
        }?;
        Ok(Decided {
            slug,
            id: request.id,
            kind: kind(&request.kind),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeEngine;

    fn bottles(dir: &std::path::Path) -> Bottles {
        Bottles::new(
            Box::new(FakeEngine::new(&["sidecar:test"])),
            "fake",
            dir.to_path_buf(),
            SidecarSource::Fixed("sidecar:test".into()),
            |_| false,
        )
    }

    #[test]
    fn an_unknown_bottle_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let bottles = bottles(dir.path());
        assert!(bottles.list().unwrap().is_empty());
        assert!(matches!(
            bottles.find("nope-000000"),
            Err(BackendError::UnknownBottle { .. })
        ));
        assert!(matches!(
            bottles.attach("nope-000000", &["sh".into()], None),
            Err(BackendError::UnknownBottle { .. })
        ));
    }

    #[test]
    fn the_seam_sees_services_by_role_and_the_launch_record() {
        use crate::engine::ContainerInfo;
        use crate::state::Metadata;
        let container = |name: &str, role: Option<&str>, state: &str| ContainerInfo {
            id: name.into(),
            name: name.into(),
            state: state.into(),
            health: None,
            labels: role
                .map(|r| [(LABEL_ROLE.to_owned(), r.to_owned())].into())
                .unwrap_or_default(),
            env: Vec::new(),
            networks: Vec::new(),
        };
        let bottle = ops::BottleStatus {
            slug: "dev-abc123".into(),
            metadata: Some(Metadata {
                slug: "dev-abc123".into(),
                agent: "dev".into(),
                compose_project: "bot-bottle-dev-abc123".into(),
                compose_file: "/s/dev-abc123/docker-compose.yml".into(),
                created: 1_800_000_000,
                manifest: "/p/bottle.yaml".into(),
                manifest_sha256: "ab".repeat(32),
                networks: vec!["n".into()],
                agent_container: "dev-abc123-agent".into(),
                launcher_pid: 7,
                ready: true,
                files: Vec::new(),
                secret_env: Vec::new(),
            }),
            containers: vec![
                container("dev-abc123-egress", Some("egress"), "running"),
                container("dev-abc123-agent", Some("agent"), "running"),
                container("stray", None, "exited"),
            ],
            state_dir: "/s/dev-abc123".into(),
        };
        let seen = status(bottle);
        assert_eq!(seen.agent.as_deref(), Some("dev"));
        assert!(seen.ready && seen.known());
        let roles: Vec<&str> = seen.services.iter().map(|s| s.role.as_str()).collect();
        assert_eq!(roles, ["agent", "egress", "stray"]);
        // One service stopped: the bottle does not run.
        assert!(!seen.running());
        assert_eq!(
            seen.manifest,
            Some(("/p/bottle.yaml".into(), "ab".repeat(32)))
        );
    }

    #[test]
    fn attaching_to_a_bottle_whose_agent_is_gone_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("dev-abc123");
        std::fs::create_dir_all(&state_dir).unwrap();
        crate::state::Metadata {
            slug: "dev-abc123".into(),
            agent: "dev".into(),
            compose_project: compose_project("dev-abc123"),
            compose_file: state_dir.join(COMPOSE_FILE),
            created: 0,
            manifest: "/m".into(),
            manifest_sha256: String::new(),
            networks: Vec::new(),
            agent_container: "dev-abc123-agent".into(),
            launcher_pid: 1,
            ready: true,
            files: Vec::new(),
            secret_env: Vec::new(),
        }
        .write(&state_dir)
        .unwrap();
        let bottles = bottles(dir.path());
        assert!(matches!(
            bottles.attach("dev-abc123", &["sh".into()], None),
            Err(BackendError::ServiceNotRunning { ref role, .. }) if role == AGENT_SERVICE
        ));
        assert!(matches!(
            bottles.logs("dev-abc123", false, &mut |_, _| {}),
            Err(BackendError::Incomplete {
                what: "compose file",
                ..
            })
        ));
    }

    #[test]
    fn audit_reads_a_bottles_log_and_names_nothing_outside_the_state_root() {
        let dir = tempfile::tempdir().unwrap();
        let bottles = bottles(dir.path());
        for slug in ["../etc", "a/b", "", "dev-abc123"] {
            assert!(
                matches!(
                    bottles.audit(slug, AuditLog::Egress, AuditCursor::default()),
                    Err(BackendError::UnknownBottle { .. })
                ),
                "{slug:?}"
            );
        }
        let log = audit_feed::log_path(&dir.path().join("dev-abc123"), AuditLog::GitGate);
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "{\"result\":\"ok\"}\n{\"par").unwrap();
        let chunk = bottles
            .audit("dev-abc123", AuditLog::GitGate, AuditCursor::default())
            .unwrap();
        assert_eq!(chunk.lines, ["{\"result\":\"ok\"}"]);
        let again = bottles
            .audit("dev-abc123", AuditLog::GitGate, chunk.next)
            .unwrap();
        assert!(again.lines.is_empty() && !again.more);
        // The other log is not written yet: nothing, and no error.
        let egress = bottles
            .audit("dev-abc123", AuditLog::Egress, AuditCursor::default())
            .unwrap();
        assert!(egress.lines.is_empty());
    }

    #[test]
    fn a_fixed_sidecar_is_not_built() {
        let dir = tempfile::tempdir().unwrap();
        let mut progress = backend_api::RecordedProgress::default();
        assert_eq!(
            bottles(dir.path()).prepare(&mut progress).unwrap(),
            "sidecar:test"
        );
        assert!(progress.lines.is_empty());
    }
}
