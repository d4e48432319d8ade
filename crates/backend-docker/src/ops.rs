//! Lifecycle commands on bottles that exist: list, tear down, garbage-collect, and
//! change a running bottle's egress policy atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use compose_render::{EGRESS_PROXY_PORT, EGRESS_SERVICE, LABEL_ROLE, LABEL_SLUG, LABEL_STATE_ROOT};

pub use backend_api::{Garbage, GarbageReason, PolicyChange, parse_host_port};

use crate::engine::{ContainerInfo, Engine, ExecSpec};
use crate::error::{BackendError, Result};
use crate::sidecar_config::write_policy;
use crate::state::{COMPOSE_FILE, METADATA_FILE, Metadata};
use crate::teardown::{LOGS_DIR, archive_log_and_remove, compose_down, dump_container_logs};
use backend_api::needs::policy_version;

/// A bottle as `ls` shows it: what is on disk and what runs.
#[derive(Clone, Debug)]
pub struct BottleStatus {
    /// The slug.
    pub slug: String,
    /// `metadata.json`, if the state dir has one.
    pub metadata: Option<Metadata>,
    /// Containers carrying the slug label.
    pub containers: Vec<ContainerInfo>,
    /// The state dir (may not exist).
    pub state_dir: PathBuf,
}

impl BottleStatus {
    /// Whether every container of the bottle runs.
    pub fn running(&self) -> bool {
        !self.containers.is_empty() && self.containers.iter().all(|c| c.state == "running")
    }
}

/// Every bottle known on disk or to the engine, sorted by slug.
pub fn list(backend: &dyn Engine, state_root: &Path) -> Result<Vec<BottleStatus>> {
    let mut slugs: BTreeSet<String> = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(state_root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let not_a_bottle = [
                LOGS_DIR,
                compose_render::AGENTS_STATE_DIR,
                crate::demo::DEMOS_DIR,
            ];
            if !not_a_bottle.contains(&name.as_str()) && entry.path().is_dir() {
                slugs.insert(name);
            }
        }
    }
    let mut by_slug: BTreeMap<String, Vec<ContainerInfo>> = BTreeMap::new();
    // Only this state root's bottles: another root (another user, another test) owns
    // its own.
    for container in backend.containers_with_label(&root_label(state_root))? {
        if let Some(slug) = container.labels.get(LABEL_SLUG).cloned() {
            slugs.insert(slug.clone());
            by_slug.entry(slug).or_default().push(container);
        }
    }
    Ok(slugs
        .into_iter()
        .map(|slug| {
            let state_dir = state_root.join(&slug);
            BottleStatus {
                metadata: Metadata::read(&state_dir).ok(),
                containers: by_slug.remove(&slug).unwrap_or_default(),
                state_dir,
                slug,
            }
        })
        .collect())
}

fn root_label(state_root: &Path) -> String {
    format!("{LABEL_STATE_ROOT}={}", state_root.display())
}

/// One bottle by slug (error if neither disk nor engine knows it).
pub fn find(backend: &dyn Engine, state_root: &Path, slug: &str) -> Result<BottleStatus> {
    list(backend, state_root)?
        .into_iter()
        .find(|b| b.slug == slug)
        .ok_or_else(|| BackendError::UnknownBottle {
            slug: slug.to_owned(),
        })
}

/// The secret values of a running bottle, for redaction: the values, in its
/// containers' environments, of the variables its launch recorded as secret.
pub fn running_secrets(bottle: &BottleStatus) -> Vec<String> {
    let recorded = bottle
        .metadata
        .as_ref()
        .map(|m| m.secret_env.clone())
        .unwrap_or_default();
    // A launch by an older `bottle` recorded no names: its compose file lists them
    // bare (`- NAME`, no `=value`).
    let text = if recorded.is_empty() {
        std::fs::read_to_string(bottle.state_dir.join(COMPOSE_FILE)).unwrap_or_default()
    } else {
        String::new()
    };
    let bare: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- "))
        .filter(|entry| {
            !entry.is_empty()
                && entry
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
        .chain(recorded.iter().map(String::as_str))
        .collect();
    let mut values: Vec<String> = bottle
        .containers
        .iter()
        .flat_map(|c| c.env.iter())
        .filter(|(name, _)| bare.contains(name.as_str()))
        .map(|(_, value)| value.expose().to_owned())
        .filter(|value| !value.is_empty())
        .collect();
    values.sort();
    values.dedup();
    values
}

/// Tears a bottle down: dump logs (redacted), compose down, remove its networks and
/// derived image, archive the log and remove the state dir. Goes on past failures and
/// returns them all.
pub fn down(backend: &dyn Engine, state_root: &Path, slug: &str) -> Result<Vec<BackendError>> {
    let bottle = find(backend, state_root, slug)?;
    Ok(remove_bottle(backend, state_root, &bottle))
}

/// Removes what `agent` keeps across bottles (its sessions and memory); whether there
/// was anything.
pub fn purge_agent_state(state_root: &Path, agent: &str) -> Result<bool> {
    let dir = compose_render::agent_state_dir(state_root, agent);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(BackendError::io("removing", dir)(error)),
    }
}

fn remove_bottle(
    backend: &dyn Engine,
    state_root: &Path,
    bottle: &BottleStatus,
) -> Vec<BackendError> {
    let mut problems = Vec::new();
    let secrets = running_secrets(bottle);
    let compose_file = bottle.state_dir.join(COMPOSE_FILE);
    let project = bottle.metadata.as_ref().map_or_else(
        || crate::launch::compose_project(&bottle.slug),
        |m| m.compose_project.clone(),
    );
    // The containers `find` saw, stopped gracefully, their logs kept (redacted) and
    // removed, one call each (what `compose down` does, without its own lookup and
    // start-up); compose down if that fails.
    let ids: Vec<String> = bottle.containers.iter().map(|c| c.id.clone()).collect();
    let stopped = backend.stop_containers(&ids, 5);
    if compose_file.exists()
        && let Err(e) = dump_container_logs(
            backend,
            &bottle.containers,
            &bottle.state_dir.join(crate::state::COMPOSE_LOG),
            &secrets,
        )
    {
        problems.push(e);
    }
    if let Err(e) = stopped.and_then(|()| backend.remove_containers(&ids)) {
        problems.push(e);
        if let Err(e) = compose_down(backend, &project, &compose_file) {
            problems.push(e);
        }
    }
    let networks = bottle
        .metadata
        .as_ref()
        .map(|m| m.networks.clone())
        .unwrap_or_default();
    if let Err(e) = backend.remove_networks(&networks) {
        problems.push(e);
    }
    // Whatever the records missed (no launch record, a half-started project, a
    // failure above): everything still labelled with the slug.
    if !bottle.metadata.as_ref().is_some_and(|m| m.ready) || !problems.is_empty() {
        problems.extend(sweep_labelled(backend, &bottle.slug));
    }
    // Derived images are a content-addressed cache shared by bottles: they stay.
    if let Err(e) = archive_log_and_remove(state_root, &bottle.slug) {
        problems.push(e);
    }
    problems
}

/// Removes containers and networks carrying the bottle's label.
fn sweep_labelled(backend: &dyn Engine, slug: &str) -> Vec<BackendError> {
    let mut problems = Vec::new();
    let label = format!("{LABEL_SLUG}={slug}");
    match backend.containers_with_label(&label) {
        Ok(left) => {
            let ids: Vec<String> = left.into_iter().map(|c| c.id).collect();
            problems.extend(backend.remove_containers(&ids).err());
        }
        Err(e) => problems.push(e),
    }
    match backend.networks_with_label(&label) {
        Ok(networks) => problems.extend(
            networks
                .iter()
                .filter_map(|n| backend.remove_network(n).err()),
        ),
        Err(e) => problems.push(e),
    }
    problems
}

/// Finds (and unless `dry_run`, removes) what no live bottle owns. `pid_alive` tells
/// whether a launcher process still runs.
pub fn gc(
    backend: &dyn Engine,
    state_root: &Path,
    dry_run: bool,
    pid_alive: &dyn Fn(u32) -> bool,
) -> Result<(Vec<Garbage>, Vec<BackendError>)> {
    let mut garbage = Vec::new();
    let mut problems = Vec::new();
    let mut labelled_networks: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for network in backend.networks_with_label(&root_label(state_root))? {
        let slug = compose_render::names::slug_of_network(&network)
            .map_or_else(|| network.clone(), str::to_owned);
        labelled_networks.entry(slug).or_default().push(network);
    }
    let mut bottles = list(backend, state_root)?;
    for slug in labelled_networks.keys() {
        if !bottles.iter().any(|b| &b.slug == slug) {
            bottles.push(BottleStatus {
                slug: slug.clone(),
                metadata: None,
                containers: Vec::new(),
                state_dir: state_root.join(slug),
            });
        }
    }
    for bottle in bottles {
        let reason = match &bottle.metadata {
            None if bottle.state_dir.join(METADATA_FILE).exists() => None, // unreadable: leave it
            None => Some(GarbageReason::Orphaned),
            Some(m) if !m.ready && !pid_alive(m.launcher_pid) => {
                Some(GarbageReason::LauncherDied {
                    pid: m.launcher_pid,
                })
            }
            Some(m) if m.ready && !bottle.containers.iter().any(|c| c.state == "running") => {
                Some(GarbageReason::Stopped)
            }
            Some(_) => None,
        };
        let Some(reason) = reason else { continue };
        let mut resources: Vec<String> = bottle
            .containers
            .iter()
            .map(|c| format!("container {}", c.name))
            .collect();
        resources.extend(
            labelled_networks
                .get(&bottle.slug)
                .into_iter()
                .flatten()
                .map(|n| format!("network {n}")),
        );
        if bottle.state_dir.exists() {
            resources.push(format!("state dir {}", bottle.state_dir.display()));
        }
        if !dry_run {
            problems.extend(remove_bottle(backend, state_root, &bottle));
            if matches!(reason, GarbageReason::LauncherDied { .. }) {
                // The dead launcher's `compose up` child may outlive it and still be
                // creating containers: sweep the labels once more after it settles.
                std::thread::sleep(Duration::from_secs(2));
                problems.extend(sweep_labelled(backend, &bottle.slug));
            }
        }
        garbage.push(Garbage {
            slug: bottle.slug,
            reason,
            resources,
        });
    }
    Ok((garbage, problems))
}

/// The egress container of a bottle.
fn egress_container(bottle: &BottleStatus) -> Result<&ContainerInfo> {
    bottle
        .containers
        .iter()
        .find(|c| {
            c.labels
                .get(LABEL_ROLE)
                .is_some_and(|r| r == EGRESS_SERVICE)
                && c.state == "running"
        })
        .ok_or_else(|| BackendError::Command {
            command: format!("finding the egress sidecar of {}", bottle.slug),
            detail: "it is not running".into(),
        })
}

/// The policy version the running egress sidecar reports.
pub fn running_policy_version(backend: &dyn Engine, container: &str) -> Result<String> {
    let out = backend.exec(&ExecSpec {
        container: container.to_owned(),
        user: None,
        workdir: None,
        command: vec![
            "bottle".into(),
            "sidecar".into(),
            "probe".into(),
            "--print".into(),
            format!("http://127.0.0.1:{EGRESS_PROXY_PORT}/status"),
        ],
        stdin: None,
    })?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    status["policy_version"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| BackendError::Command {
            command: format!("asking {container} for its policy version"),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
}

/// Applies `change` atomically: write a temp file beside the bind-mounted policy,
/// fsync, rename, fsync the directory, SIGHUP the sidecar, and confirm it runs the new
/// version. If it does not (it refused the file), the old file is put back and the
/// sidecar signalled again, so disk and sidecar agree. Returns the new version.
pub fn change_egress(
    backend: &dyn Engine,
    state_root: &Path,
    slug: &str,
    change: &PolicyChange,
    confirm_timeout: Duration,
) -> Result<String> {
    let bottle = find(backend, state_root, slug)?;
    let container = egress_container(&bottle)?.name.clone();
    let config_dir = bottle.state_dir.join("egress/config");
    let path = config_dir.join(sidecar_contract::egress::POLICY_FILE_NAME);
    let old = std::fs::read(&path).map_err(BackendError::io("reading", &path))?;
    let config = sidecar_contract::egress::EgressConfig::from_json(&old).map_err(|e| {
        BackendError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        }
    })?;
    let updated = backend_api::policy_edit::apply_change(config, change)?;
    write_policy(&updated, &config_dir)?;
    let new_bytes = std::fs::read(&path).map_err(BackendError::io("reading back", &path))?;
    let version = policy_version(&new_bytes);
    backend.signal(&container, "HUP")?;
    let started = Instant::now();
    loop {
        match running_policy_version(backend, &container) {
            Ok(running) if running == version => {
                crate::sidecar_config::write_policy_view(&bottle.state_dir)?;
                return Ok(version);
            }
            _ if started.elapsed() > confirm_timeout => break,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    crate::state::write_atomic(&path, &old, 0o600)?;
    let _ = backend.signal(&container, "HUP");
    Err(BackendError::Timeout {
        what: format!(
            "the egress sidecar of {slug} to confirm policy {version} (the change was rolled back)"
        ),
        seconds: confirm_timeout.as_secs(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bottle(dir: &Path, recorded: &[&str]) -> BottleStatus {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), plan::Secret::new(*v)))
                .collect()
        };
        BottleStatus {
            slug: "t-000000".into(),
            metadata: Some(Metadata {
                slug: "t-000000".into(),
                agent: "t".into(),
                compose_project: "bot-bottle-t-000000".into(),
                compose_file: dir.join(COMPOSE_FILE),
                created: 0,
                manifest: "/m".into(),
                manifest_sha256: String::new(),
                networks: Vec::new(),
                agent_container: "t-000000-agent".into(),
                launcher_pid: 1,
                ready: true,
                files: Vec::new(),
                secret_env: recorded.iter().map(|n| n.to_string()).collect(),
            }),
            containers: vec![ContainerInfo {
                id: "1".into(),
                name: "t-000000-egress".into(),
                state: "running".into(),
                health: None,
                labels: BTreeMap::new(),
                env: env(&[("TOKEN", "real-token-value"), ("MODE", "test")]),
                networks: Vec::new(),
            }],
            state_dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn the_recorded_names_say_which_values_are_secret() {
        let dir = tempfile::tempdir().unwrap();
        // No compose file at all: the names come from the launch record.
        assert_eq!(
            running_secrets(&bottle(dir.path(), &["TOKEN"])),
            ["real-token-value"]
        );
    }

    #[test]
    fn an_older_launch_falls_back_to_the_compose_files_bare_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(COMPOSE_FILE),
            "services:\n  egress:\n    environment:\n    - TOKEN\n    - MODE=test\n",
        )
        .unwrap();
        assert_eq!(
            running_secrets(&bottle(dir.path(), &[])),
            ["real-token-value"]
        );
    }
}
