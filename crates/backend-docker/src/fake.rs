//! An in-memory engine for tests: it follows the compose file it is given, keeps its
//! state in a JSON file (so the real `bottle` binary can use it across invocations:
//! `BOT_BOTTLE_BACKEND=fake:PATH`), and fails on demand at a named operation.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::*;
use crate::error::{BackendError, Result};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct FakeNetwork {
    cidr: String,
    #[serde(default)]
    host_address: bool,
    labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct FakeContainer {
    id: String,
    name: String,
    project: String,
    service: String,
    state: String,
    health: Option<String>,
    labels: BTreeMap<String, String>,
    env: Vec<(String, String)>,
    /// For an egress stand-in: the host dir mounted as its config, and the policy
    /// version it runs (the file's SHA-256 when it last accepted it).
    config_dir: Option<PathBuf>,
    policy_version: Option<String>,
    /// The networks it is on, and those its service asks for (by name).
    #[serde(default)]
    networks: Vec<String>,
    #[serde(default)]
    wanted_networks: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct FakeState {
    images: BTreeSet<String>,
    networks: BTreeMap<String, FakeNetwork>,
    containers: Vec<FakeContainer>,
    calls: Vec<String>,
    next_id: u32,
    /// Names reported as taken once (`BOT_BOTTLE_FAKE_FAIL=name-taken`), as if another
    /// container held them.
    #[serde(default)]
    names_reported_taken: BTreeSet<String>,
    /// `"IMAGE KEY"` to value: labels of images built or imported here.
    #[serde(default)]
    image_labels: BTreeMap<String, String>,
}

/// The fake engine.
#[derive(Debug)]
pub struct FakeEngine {
    path: Option<PathBuf>,
    state: RefCell<FakeState>,
    fail_at: Option<String>,
    /// Plays the legacy compose v1: `up --no-start` attaches a container to its
    /// first network only (the others at compose's own start).
    compose_v1: bool,
}

impl FakeEngine {
    /// A fresh engine in memory with `images` present.
    pub fn new(images: &[&str]) -> Self {
        let state = FakeState {
            images: images.iter().map(|s| s.to_string()).collect(),
            ..FakeState::default()
        };
        Self {
            path: None,
            state: RefCell::new(state),
            fail_at: None,
            compose_v1: false,
        }
    }

    /// The engine persisted at `path` (created with `images` if missing).
    pub fn open(path: &Path, images: &[&str]) -> Result<Self> {
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| BackendError::Corrupt {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?,
            Err(_) => FakeState {
                images: images.iter().map(|s| s.to_string()).collect(),
                ..FakeState::default()
            },
        };
        Ok(Self {
            path: Some(path.to_path_buf()),
            state: RefCell::new(state),
            fail_at: None,
            compose_v1: false,
        })
    }

    /// Fails the first operation whose key starts with `key` (e.g. `compose:up`,
    /// `network:egress`, `build:`, `exec`, `health`); `agent-exit:N` makes the
    /// attached agent exit with status N instead.
    pub fn fail_at(mut self, key: Option<String>) -> Self {
        self.fail_at = key;
        self
    }

    /// Plays the legacy compose v1 (`BOT_BOTTLE_COMPOSE=v1`): `up --no-start` attaches
    /// each container to its first network only.
    pub fn compose_v1(mut self, yes: bool) -> Self {
        self.compose_v1 = yes;
        self
    }

    /// Every operation so far, as `op:detail` keys.
    pub fn calls(&self) -> Vec<String> {
        self.state.borrow().calls.clone()
    }

    /// Names of live containers.
    pub fn container_names(&self) -> Vec<String> {
        self.state
            .borrow()
            .containers
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    /// Names of networks.
    pub fn network_names(&self) -> Vec<String> {
        self.state.borrow().networks.keys().cloned().collect()
    }

    /// Image tags.
    pub fn images(&self) -> Vec<String> {
        self.state.borrow().images.iter().cloned().collect()
    }

    /// Stops every container of `slug` (as if the engine restarted).
    pub fn stop_all(&self) {
        for c in &mut self.state.borrow_mut().containers {
            c.state = "exited".into();
        }
        self.save();
    }

    /// Writes the state through a temporary file and a rename, so that a test reading
    /// the file while a launcher writes it never sees half of it.
    fn save(&self) {
        if let Some(path) = &self.path {
            let bytes = serde_json::to_vec_pretty(&*self.state.borrow()).unwrap_or_default();
            let _ = crate::state::write_atomic(path, &bytes, 0o600);
        }
    }

    /// Records `key`; fails if it is the injected failure. `hang:KEY` instead blocks
    /// there for a minute: tests kill the launcher mid-start with it.
    fn op(&self, key: String) -> Result<()> {
        if let Some(hang) = self
            .fail_at
            .as_deref()
            .and_then(|f| f.strip_prefix("hang:"))
            && key.starts_with(hang)
        {
            self.state.borrow_mut().calls.push(format!("hang:{key}"));
            self.save();
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
        let fail = self
            .fail_at
            .as_ref()
            .is_some_and(|f| !f.starts_with("hang:") && key.starts_with(f.as_str()));
        self.state.borrow_mut().calls.push(key.clone());
        self.save();
        if fail {
            Err(BackendError::Command {
                command: key,
                detail: "injected failure (fake backend)".into(),
            })
        } else {
            Ok(())
        }
    }

    fn compose_up(&self, call: &ComposeCall) -> Result<Captured> {
        let text = std::fs::read_to_string(&call.file)
            .map_err(BackendError::io("reading compose file", &call.file))?;
        let file: serde_json::Value =
            serde_saphyr::from_str(&text).map_err(|e| BackendError::Corrupt {
                path: call.file.clone(),
                detail: e.to_string(),
            })?;
        let services = file["services"].as_object().cloned().unwrap_or_default();
        let secrets: BTreeMap<&str, &str> = call
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        let mut state = self.state.borrow_mut();
        for (service, spec) in &services {
            let name = spec["container_name"]
                .as_str()
                .map_or_else(|| format!("{}-{service}-1", call.project), str::to_owned);
            // `name-taken`: the agent's container name is taken the first time it is
            // asked for (another container holds it).
            let taken_once = self.fail_at.as_deref() == Some("name-taken")
                && spec["container_name"].is_string()
                && state.names_reported_taken.is_empty()
                && state.names_reported_taken.insert(name.clone());
            if taken_once || state.containers.iter().any(|c| c.name == name) {
                return Ok(Captured {
                    code: Some(1),
                    stdout: Vec::new(),
                    stderr: format!("Conflict. The container name \"/{name}\" is already in use by container \"0123\".").into_bytes(),
                });
            }
            let image = spec["image"].as_str().unwrap_or_default();
            if !state.images.contains(image) {
                return Ok(Captured {
                    code: Some(1),
                    stdout: Vec::new(),
                    stderr: format!("pull access denied for {image}").into_bytes(),
                });
            }
        }
        for (service, spec) in &services {
            let name = spec["container_name"]
                .as_str()
                .map_or_else(|| format!("{}-{service}-1", call.project), str::to_owned);
            let env = spec["environment"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str())
                .filter_map(|entry| match entry.split_once('=') {
                    Some((k, v)) => Some((k.to_owned(), v.replace("$$", "$"))),
                    None => secrets
                        .get(entry)
                        .map(|v| (entry.to_owned(), v.to_string())),
                })
                .collect();
            let config_dir = spec["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|v| {
                    (v["target"] == compose_render::SIDECAR_CONFIG_DIR)
                        .then(|| PathBuf::from(v["source"].as_str().unwrap_or_default()))
                });
            let policy_version = config_dir.as_ref().and_then(|dir| accepted_version(dir));
            // Service network keys to network names, in the file's (sorted) order.
            let wanted_networks: Vec<String> = spec["networks"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(key, _)| {
                    file["networks"][key]["name"]
                        .as_str()
                        .map_or_else(|| format!("{}_{key}", call.project), str::to_owned)
                })
                .collect();
            let created_only = call.args.iter().any(|a| a == "--no-start");
            let networks = if created_only && self.compose_v1 {
                wanted_networks.iter().take(1).cloned().collect()
            } else {
                wanted_networks.clone()
            };
            state.next_id += 1;
            let id = format!("fake{:04}", state.next_id);
            state.containers.push(FakeContainer {
                id,
                name,
                project: call.project.clone(),
                service: service.clone(),
                state: if call.args.iter().any(|a| a == "--no-start") {
                    "created"
                } else {
                    "running"
                }
                .into(),
                health: spec.get("healthcheck").map(|_| {
                    if self.fail_at.as_deref() == Some("health") {
                        "unhealthy"
                    } else {
                        "healthy"
                    }
                    .to_owned()
                }),
                labels: spec["labels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default(),
                env,
                config_dir,
                policy_version,
                networks,
                wanted_networks,
            });
        }
        drop(state);
        self.save();
        Ok(Captured {
            code: Some(0),
            ..Captured::default()
        })
    }
}

/// The version an egress stand-in accepts from `dir/policy.json`: its SHA-256 if the
/// file parses as an egress policy, else nothing (it keeps the old one).
fn accepted_version(dir: &Path) -> Option<String> {
    let bytes = std::fs::read(dir.join(sidecar_contract::egress::POLICY_FILE_NAME)).ok()?;
    sidecar_contract::egress::EgressConfig::from_json(&bytes).ok()?;
    Some(backend_api::needs::policy_version(&bytes))
}

impl Engine for FakeEngine {
    fn engine_version(&self) -> Result<String> {
        self.op("engine".into())?;
        Ok("fake-28.0".into())
    }

    fn describe(&self) -> Result<EngineFacts> {
        self.op("describe".into())?;
        Ok(EngineFacts {
            compose: Some("fake compose 0".into()),
            runtimes: vec!["runc".into()],
            cgroup_version: "2".into(),
            storage_driver: "fake".into(),
        })
    }

    fn writable_layer_quota(&self) -> Result<bool> {
        Ok(false)
    }

    fn image_exists(&self, reference: &str) -> Result<bool> {
        Ok(self.state.borrow().images.contains(reference))
    }

    fn image_id(&self, reference: &str) -> Result<String> {
        Ok(format!("sha256:fake-{reference}"))
    }

    fn image_user(&self, _reference: &str) -> Result<String> {
        Ok("1000:1000".into())
    }

    fn build_image(&self, spec: &BuildSpec) -> Result<()> {
        self.op(format!("build:{}", spec.tag))?;
        let mut state = self.state.borrow_mut();
        state.images.insert(spec.tag.clone());
        for (key, value) in &spec.labels {
            state
                .image_labels
                .insert(format!("{} {key}", spec.tag), value.clone());
        }
        drop(state);
        self.save();
        Ok(())
    }

    fn create_network(&self, spec: &NetworkSpec) -> Result<NetworkInfo> {
        let role = spec.name.rsplit('-').next().unwrap_or_default();
        self.op(format!("network:{role}:{}", spec.name))?;
        let mut state = self.state.borrow_mut();
        if state.networks.contains_key(&spec.name) {
            return Err(BackendError::Command {
                command: format!("docker network create {}", spec.name),
                detail: "network already exists".into(),
            });
        }
        let cidr = spec
            .subnet
            .clone()
            .unwrap_or_else(|| format!("10.250.{}.0/24", state.networks.len() % 250));
        if state.networks.values().any(|n| n.cidr == cidr) {
            return Err(BackendError::SubnetOverlap { subnet: cidr });
        }
        state.networks.insert(
            spec.name.clone(),
            FakeNetwork {
                cidr: cidr.clone(),
                host_address: !spec.no_host_address,
                labels: spec.labels.clone(),
            },
        );
        drop(state);
        self.save();
        let gateway = cidr.replace(".0/24", ".1");
        Ok(NetworkInfo {
            name: spec.name.clone(),
            cidr,
            gateway: Some(gateway),
        })
    }

    fn inspect_network(&self, name: &str) -> Result<NetworkInfo> {
        self.op(format!("network-inspect:{name}"))?;
        let state = self.state.borrow();
        let network = state
            .networks
            .get(name)
            .ok_or_else(|| BackendError::Command {
                command: format!("docker network inspect {name}"),
                detail: "No such network".into(),
            })?;
        Ok(NetworkInfo {
            name: name.to_owned(),
            cidr: network.cidr.clone(),
            gateway: None,
        })
    }

    fn remove_network(&self, name: &str) -> Result<()> {
        self.op(format!("network-rm:{name}"))?;
        self.state.borrow_mut().networks.remove(name);
        self.save();
        Ok(())
    }

    fn compose(&self, call: &ComposeCall) -> Result<Captured> {
        let verb = call.args.first().cloned().unwrap_or_default();
        self.op(format!("compose:{verb}:{}", call.project))?;
        match verb.as_str() {
            "up" => self.compose_up(call),
            "down" => {
                self.state
                    .borrow_mut()
                    .containers
                    .retain(|c| c.project != call.project);
                self.save();
                Ok(Captured {
                    code: Some(0),
                    ..Captured::default()
                })
            }
            "logs" => {
                let state = self.state.borrow();
                let mut log = String::new();
                for c in state
                    .containers
                    .iter()
                    .filter(|c| c.project == call.project)
                {
                    // A chatty container that prints its environment: redaction must hide it.
                    for (k, v) in &c.env {
                        log.push_str(&format!("{}  | 2026-01-01T00:00:00Z {k}={v}\n", c.service));
                    }
                }
                Ok(Captured {
                    code: Some(0),
                    stdout: log.into_bytes(),
                    stderr: Vec::new(),
                })
            }
            _ => Ok(Captured {
                code: Some(0),
                ..Captured::default()
            }),
        }
    }

    fn compose_follow(
        &self,
        call: &ComposeCall,
        on_event: &mut dyn FnMut(Followed<'_>),
    ) -> Result<i32> {
        on_event(Followed::Tick);
        let captured = self.compose(call)?;
        for line in String::from_utf8_lossy(&captured.stdout).lines() {
            on_event(Followed::Line(line));
        }
        on_event(Followed::Tick);
        Ok(captured.code.unwrap_or(1))
    }

    fn exec(&self, spec: &ExecSpec) -> Result<Captured> {
        self.op(format!(
            "exec:{}:{}",
            spec.container,
            spec.command.join(" ")
        ))?;
        let state = self.state.borrow();
        let Some(container) = state
            .containers
            .iter()
            .find(|c| c.name == spec.container && c.state == "running")
        else {
            return Ok(Captured {
                code: Some(1),
                stdout: Vec::new(),
                stderr: b"No such container".to_vec(),
            });
        };
        if spec.command.iter().any(|a| a.ends_with("/status")) {
            let version = container.policy_version.clone().unwrap_or_default();
            return Ok(Captured {
                code: Some(0),
                stdout: format!("{{\"policy_version\":\"{version}\"}}").into_bytes(),
                stderr: Vec::new(),
            });
        }
        // Provisioning asks for the image user's ids and the JSON files it merges
        // into (`sh -c SCRIPT sh FILE...`): none exists in the fake.
        if spec.command.iter().any(|a| a.contains("$(id -u)")) {
            let files = spec.command.len().saturating_sub(4);
            return Ok(Captured {
                code: Some(0),
                stdout: format!("1000:1000\n{}", "-1\n".repeat(files)).into_bytes(),
                stderr: Vec::new(),
            });
        }
        Ok(Captured {
            code: Some(0),
            ..Captured::default()
        })
    }

    fn exec_interactive(&self, spec: &ExecSpec) -> Result<i32> {
        self.op(format!(
            "exec-it:{}:{}",
            spec.container,
            spec.command.join(" ")
        ))?;
        // `agent-exit:N`: the agent exits with status N.
        Ok(self
            .fail_at
            .as_deref()
            .and_then(|key| key.strip_prefix("agent-exit:")?.parse().ok())
            .unwrap_or(0))
    }

    fn signal(&self, container: &str, signal: &str) -> Result<()> {
        self.op(format!("signal:{signal}:{container}"))?;
        let mut state = self.state.borrow_mut();
        if let Some(c) = state.containers.iter_mut().find(|c| c.name == container)
            && signal == "HUP"
            && let Some(version) = c.config_dir.as_deref().and_then(accepted_version)
        {
            c.policy_version = Some(version);
        }
        drop(state);
        self.save();
        Ok(())
    }

    fn containers_with_label(&self, label: &str) -> Result<Vec<ContainerInfo>> {
        let (key, value) = label
            .split_once('=')
            .map_or((label, None), |(k, v)| (k, Some(v)));
        Ok(self
            .state
            .borrow()
            .containers
            .iter()
            .filter(|c| {
                c.labels
                    .get(key)
                    .is_some_and(|v| value.is_none_or(|want| v == want))
            })
            .map(|c| ContainerInfo {
                id: c.id.clone(),
                name: c.name.clone(),
                state: c.state.clone(),
                health: c.health.clone(),
                // Compose labels each container with its service, as here.
                labels: c
                    .labels
                    .clone()
                    .into_iter()
                    .chain([(COMPOSE_SERVICE_LABEL.to_owned(), c.service.clone())])
                    .collect(),
                env: c
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), plan::Secret::new(v.clone())))
                    .collect(),
                networks: c.networks.clone(),
            })
            .collect())
    }

    fn connect_networks(&self, connects: &[NetworkConnect]) -> Result<()> {
        for connect in connects {
            self.op(format!("connect:{}:{}", connect.network, connect.container))?;
            let mut state = self.state.borrow_mut();
            let Some(container) = state
                .containers
                .iter_mut()
                .find(|c| c.id == connect.container || c.name == connect.container)
            else {
                return Err(BackendError::Command {
                    command: format!("docker network connect {}", connect.network),
                    detail: format!("(fake) no such container {}", connect.container),
                });
            };
            if !container.networks.contains(&connect.network) {
                container.networks.push(connect.network.clone());
            }
            drop(state);
            self.save();
        }
        Ok(())
    }

    fn networks_with_label(&self, label: &str) -> Result<Vec<String>> {
        let (key, value) = label
            .split_once('=')
            .map_or((label, None), |(k, v)| (k, Some(v)));
        Ok(self
            .state
            .borrow()
            .networks
            .iter()
            .filter(|(_, n)| {
                n.labels
                    .get(key)
                    .is_some_and(|v| value.is_none_or(|want| v == want))
            })
            .map(|(name, _)| name.clone())
            .collect())
    }

    fn stop_containers(&self, ids: &[String], _timeout_secs: u32) -> Result<()> {
        self.op(format!("stop:{}", ids.join(",")))?;
        let mut state = self.state.borrow_mut();
        for container in &mut state.containers {
            if ids.contains(&container.id) || ids.contains(&container.name) {
                container.state = "exited".into();
            }
        }
        drop(state);
        self.save();
        Ok(())
    }

    fn start_containers(&self, ids: &[String]) -> Result<()> {
        self.op(format!("start:{}", ids.join(",")))?;
        let mut state = self.state.borrow_mut();
        for container in &mut state.containers {
            if ids.contains(&container.id) || ids.contains(&container.name) {
                // Docker would start it, cut off from the sidecars it needs: a test
                // must see that as the failure it is.
                if let Some(missing) = container
                    .wanted_networks
                    .iter()
                    .find(|n| !container.networks.contains(n))
                {
                    return Err(BackendError::Command {
                        command: format!("docker start {}", container.name),
                        detail: format!("(fake) started without its network {missing}"),
                    });
                }
                container.state = "running".into();
            }
        }
        drop(state);
        self.save();
        Ok(())
    }

    fn container_logs(&self, ids: &[String]) -> Result<Vec<Captured>> {
        self.op(format!("logs:{}", ids.join(",")))?;
        let state = self.state.borrow();
        Ok(ids
            .iter()
            .map(|id| {
                let mut log = String::new();
                // A chatty container that prints its environment: redaction must hide it.
                for c in state.containers.iter().filter(|c| &c.id == id) {
                    for (k, v) in &c.env {
                        log.push_str(&format!("2026-01-01T00:00:00Z {k}={v}\n"));
                    }
                }
                Captured {
                    code: Some(0),
                    stdout: log.into_bytes(),
                    ..Captured::default()
                }
            })
            .collect())
    }

    fn remove_containers(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.op(format!("rm:{}", ids.join(",")))?;
        self.state
            .borrow_mut()
            .containers
            .retain(|c| !ids.contains(&c.id));
        self.save();
        Ok(())
    }

    fn remove_image(&self, tag: &str) -> Result<()> {
        self.op(format!("image-rm:{tag}"))?;
        self.state.borrow_mut().images.remove(tag);
        self.save();
        Ok(())
    }

    fn list_images(&self, repository: &str) -> Result<Vec<ImageInfo>> {
        let prefix = repository.trim_end_matches('*');
        Ok(self
            .state
            .borrow()
            .images
            .iter()
            .filter(|image| image.starts_with(prefix))
            .map(|image| ImageInfo {
                reference: image.clone(),
                id: format!("sha256:fake-{image}"),
                size: "1MB".into(),
                created: "now".into(),
            })
            .collect())
    }

    /// No registry: the fake engine is as offline as CI.
    fn pull_image(&self, reference: &str, _timeout: std::time::Duration) -> Result<Pulled> {
        self.op(format!("pull:{reference}"))?;
        Ok(Pulled::Unavailable("no registry (fake engine)".into()))
    }

    fn import_image(&self, _tarball: &Path, tag: &str, changes: &[String]) -> Result<()> {
        self.op(format!("import:{tag}"))?;
        let mut state = self.state.borrow_mut();
        state.images.insert(tag.to_owned());
        for change in changes {
            let Some(labels) = change.strip_prefix("LABEL ") else {
                continue;
            };
            for (key, value) in labels
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
            {
                state
                    .image_labels
                    .insert(format!("{tag} {key}"), value.to_owned());
            }
        }
        drop(state);
        self.save();
        Ok(())
    }

    fn image_label(&self, reference: &str, key: &str) -> Result<Option<String>> {
        let state = self.state.borrow();
        Ok(state
            .images
            .contains(reference)
            .then(|| {
                state
                    .image_labels
                    .get(&format!("{reference} {key}"))
                    .cloned()
            })
            .flatten())
    }

    fn images_in_use(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn tag_image(&self, source: &str, target: &str) -> Result<()> {
        self.op(format!("tag:{source}:{target}"))?;
        let mut state = self.state.borrow_mut();
        if !state.images.contains(source) {
            return Err(BackendError::Command {
                command: format!("docker tag {source} {target}"),
                detail: format!("No such image: {source}"),
            });
        }
        state.images.insert(target.to_owned());
        drop(state);
        self.save();
        Ok(())
    }

    /// Records the run; a run with a command answers like `bottle --version`.
    fn run_container(&self, spec: &RunSpec) -> Result<Captured> {
        self.op(format!("run:{}:{}", spec.image, spec.command.join(" ")))?;
        Ok(Captured {
            code: Some(0),
            stdout: format!("bottle {}\n", env!("CARGO_PKG_VERSION")).into_bytes(),
            stderr: Vec::new(),
        })
    }
}
