//! Teardown in reverse order of creation; it always runs to the end and reports its
//! problems without masking the error that caused it.

use std::path::{Path, PathBuf};

use crate::engine::{COMPOSE_SERVICE_LABEL, ComposeCall, ContainerInfo, Engine};
use crate::error::{BackendError, Result};
use crate::launch::redact;
use crate::state::COMPOSE_LOG;

/// Directory under the state root where the redacted compose logs of removed
/// bottles are kept: the one record a bottle leaves.
pub const LOGS_DIR: &str = "logs";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    RemoveStateDir,
    RemoveImage(String),
    RemoveNetwork(String),
    ComposeDown { project: String, file: PathBuf },
}

/// What a launch created so far, to undo in reverse.
#[derive(Debug)]
pub struct Teardown {
    state_root: PathBuf,
    slug: String,
    steps: Vec<Step>,
}

impl Teardown {
    /// An empty teardown for the bottle `slug`.
    pub fn new(state_root: PathBuf, slug: String) -> Self {
        Self {
            state_root,
            slug,
            steps: Vec::new(),
        }
    }

    /// The bottle's state dir was created.
    pub fn remove_state_dir(&mut self) {
        self.steps.push(Step::RemoveStateDir);
    }
    /// An image was tagged for this bottle.
    pub fn remove_image(&mut self, tag: String) {
        self.steps.push(Step::RemoveImage(tag));
    }
    /// A network was created.
    pub fn remove_network(&mut self, name: String) {
        self.steps.push(Step::RemoveNetwork(name));
    }
    /// The compose project may have containers: dump logs, then `down`.
    pub fn compose_down(&mut self, project: String, file: PathBuf) {
        self.steps.push(Step::ComposeDown { project, file });
    }
    /// The launch succeeded: the bottle lives on; `bottle down` removes it later.
    pub fn disarm(&mut self) {
        self.steps.clear();
    }

    /// Undoes every step in reverse; returns the problems it met (it never stops early).
    pub fn run(&mut self, backend: &dyn Engine, secrets: &[String]) -> Vec<BackendError> {
        let mut problems = Vec::new();
        let state_dir = self.state_root.join(&self.slug);
        while let Some(step) = self.steps.pop() {
            let result = match &step {
                Step::ComposeDown { project, file } => dump_logs(
                    backend,
                    project,
                    file,
                    &state_dir.join(COMPOSE_LOG),
                    secrets,
                )
                .and_then(|()| compose_down(backend, project, file))
                .or_else(|error| {
                    problems.push(error);
                    compose_down(backend, project, file)
                }),
                Step::RemoveNetwork(name) => backend.remove_network(name),
                Step::RemoveImage(tag) => backend.remove_image(tag),
                Step::RemoveStateDir => archive_log_and_remove(&self.state_root, &self.slug),
            };
            if let Err(error) = result {
                problems.push(error);
            }
        }
        problems
    }
}

/// `compose down` for a project (containers and its default network; our external
/// networks are removed separately).
pub fn compose_down(backend: &dyn Engine, project: &str, file: &Path) -> Result<()> {
    if !file.exists() {
        return Ok(());
    }
    let out = backend.compose(&ComposeCall {
        project: project.to_owned(),
        file: file.to_path_buf(),
        args: vec![
            "down".into(),
            "--volumes".into(),
            "--remove-orphans".into(),
            "--timeout".into(),
            "5".into(),
        ],
        env: Vec::new(),
    })?;
    if out.success() {
        Ok(())
    } else {
        Err(BackendError::Command {
            command: format!("compose -p {project} down"),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Dumps `compose logs --no-color --timestamps` to `target`, every secret redacted.
pub fn dump_logs(
    backend: &dyn Engine,
    project: &str,
    file: &Path,
    target: &Path,
    secrets: &[String],
) -> Result<()> {
    if !file.exists() {
        return Ok(());
    }
    let out = backend.compose(&ComposeCall {
        project: project.to_owned(),
        file: file.to_path_buf(),
        args: vec!["logs".into(), "--no-color".into(), "--timestamps".into()],
        env: Vec::new(),
    })?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    crate::state::write_atomic(target, redact(&text, secrets).as_bytes(), 0o600)
}

/// Dumps each of `containers`' output (`docker logs --timestamps`, all asked at once)
/// to `target` as `compose logs` prints it, `<service>  | <line>`, every secret
/// redacted: without compose's own start-up and container lookup.
pub fn dump_container_logs(
    backend: &dyn Engine,
    containers: &[ContainerInfo],
    target: &Path,
    secrets: &[String],
) -> Result<()> {
    let ids: Vec<String> = containers.iter().map(|c| c.id.clone()).collect();
    let logs = backend.container_logs(&ids)?;
    let mut text = String::new();
    for (container, log) in containers.iter().zip(&logs) {
        let service = container
            .labels
            .get(COMPOSE_SERVICE_LABEL)
            .map_or(container.name.as_str(), String::as_str);
        for stream in [&log.stdout, &log.stderr] {
            for line in String::from_utf8_lossy(stream).lines() {
                text.push_str(&format!("{service}  | {line}\n"));
            }
        }
    }
    crate::state::write_atomic(target, redact(&text, secrets).as_bytes(), 0o600)
}

/// Moves the bottle's (redacted) compose log to `<root>/logs/<slug>.compose.log`, then
/// removes the bottle's state dir: the CA key and copied SSH keys go with it.
pub fn archive_log_and_remove(state_root: &Path, slug: &str) -> Result<()> {
    let state_dir = state_root.join(slug);
    let log = state_dir.join(COMPOSE_LOG);
    if log.exists() {
        let logs = state_root.join(LOGS_DIR);
        crate::state::create_private_dir(&logs)?;
        let target = logs.join(format!("{slug}.compose.log"));
        std::fs::rename(&log, &target)
            .map_err(BackendError::io("archiving compose log to", &target))?;
    }
    match std::fs::remove_dir_all(&state_dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(BackendError::Io {
            action: "removing state dir",
            path: state_dir,
            source: error,
        }),
    }
}
