//! The launch sequence of DESIGN.md, step by step, with teardown that always runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use compose_render::{
    EGRESS_NETWORK, INTERNAL_NETWORK, LABEL_ROLE, LABEL_SLUG, LABEL_STATE_ROOT, LaunchFacts,
    render, to_yaml,
};
use plan::{BottlePlan, ImagePlan};

use crate::engine::{BuildSpec, ComposeCall, Engine, ExecSpec, NetworkSpec};
use crate::error::{BackendError, Result};
use crate::progress::Progress;
use crate::sidecar_config;
use crate::state::{self, COMPOSE_FILE, Metadata, create_private_dir};
use crate::teardown::Teardown;
use backend_api::needs::EgressExtras;
pub use backend_api::redact::redact;

/// Everything a launch needs besides the plan: where, with what, and how.
#[derive(Clone, Debug)]
pub struct LaunchOptions {
    /// State root (`state_root(env)`).
    pub state_root: PathBuf,
    /// The manifest the plan came from and its SHA-256.
    pub manifest: PathBuf,
    /// SHA-256 of the manifest bytes.
    pub manifest_sha256: String,
    /// The sidecar image (the `bottle` binary on a small base).
    pub sidecar_image: String,
    /// `uid:gid` sidecars run as.
    pub sidecar_user: String,
    /// Create the egress network `--internal` too (e2e: nothing leaves the machine).
    pub egress_network_internal: bool,
    /// Use this existing network as the egress network instead of creating one (e2e:
    /// its fake internet sits there at addresses known before launch). The bottle
    /// neither labels nor removes it.
    pub egress_network: Option<String>,
    /// Extra egress settings (e2e's fake internet).
    pub egress_extras: EgressExtras,
    /// How long to wait for sidecars to become healthy.
    pub health_timeout: Duration,
    /// Current time, seconds since the epoch (for the CA and metadata).
    pub now_unix: i64,
    /// PID of this launcher.
    pub launcher_pid: u32,
}

/// A launched, provisioned bottle.
#[derive(Clone, Debug)]
pub struct BottleHandle {
    /// The bottle's metadata (also on disk).
    pub metadata: Metadata,
    /// The bottle's state directory.
    pub state_dir: PathBuf,
}

/// Repository of derived agent images (a content-addressed cache shared by bottles).
pub const DERIVED_IMAGE_REPO: &str = "bot-bottle/derived";

pub use compose_render::names::compose_project;

/// Checked between steps so Ctrl-C/SIGTERM stop a launch at the next step boundary.
pub type InterruptCheck<'a> = &'a dyn Fn() -> bool;

/// Launches `plan`: runs every step, and on any failure (or interruption) tears down
/// what was created, in reverse, and returns the original error.
pub fn launch(
    backend: &dyn Engine,
    plan: &BottlePlan,
    options: &LaunchOptions,
    progress: &mut dyn Progress,
    interrupted: InterruptCheck<'_>,
) -> Result<BottleHandle> {
    let mut teardown = Teardown::new(options.state_root.clone(), plan.slug.to_string());
    match launch_steps(backend, plan, options, progress, interrupted, &mut teardown) {
        Ok(handle) => Ok(handle),
        Err(error) => {
            progress.step(&format!("launch failed ({error}); tearing down"));
            for problem in teardown.run(backend, &secret_values(plan)) {
                progress.warn(&format!("teardown: {problem}"));
            }
            Err(error)
        }
    }
}

/// Every secret value of a bottle: what log dumps must redact.
pub fn secret_values(plan: &BottlePlan) -> Vec<String> {
    compose_render::compose_process_env(plan)
        .into_iter()
        .map(|(_, secret)| secret.expose().to_owned())
        .filter(|value| !value.is_empty())
        .collect()
}

fn check(interrupted: InterruptCheck<'_>) -> Result<()> {
    if interrupted() {
        Err(BackendError::Interrupted)
    } else {
        Ok(())
    }
}

fn launch_steps(
    backend: &dyn Engine,
    plan: &BottlePlan,
    options: &LaunchOptions,
    progress: &mut dyn Progress,
    interrupted: InterruptCheck<'_>,
    teardown: &mut Teardown,
) -> Result<BottleHandle> {
    let slug = plan.slug.to_string();
    backend.engine_version()?;
    let state_dir = options.state_root.join(&slug);
    create_private_dir(&options.state_root)?;
    create_private_dir(&state_dir)?;
    teardown.remove_state_dir();
    // Metadata first: from here on `gc` can tell a launch in progress (live launcher)
    // from one whose launcher died.
    let project = compose_project(&slug);
    let compose_file = state_dir.join(COMPOSE_FILE);
    let mut metadata = Metadata {
        slug: slug.clone(),
        agent: plan.agent.name.clone(),
        compose_project: project.clone(),
        compose_file: compose_file.clone(),
        created: options.now_unix.max(0) as u64,
        manifest: options.manifest.clone(),
        manifest_sha256: options.manifest_sha256.clone(),
        networks: Vec::new(),
        agent_container: plan.agent.container_name.clone(),
        launcher_pid: options.launcher_pid,
        ready: false,
        files: Vec::new(),
        secret_env: compose_render::compose_process_env(plan)
            .into_iter()
            .map(|(name, _)| name)
            .collect(),
    };
    metadata.write(&state_dir)?;

    // 1. Images: the agent image, then the derived image whose workdir is the project.
    check(interrupted)?;
    let base_image = match &plan.image {
        ImagePlan::Existing { reference } => {
            if !backend.image_exists(reference)? {
                return Err(BackendError::Command {
                    command: format!("docker image inspect {reference}"),
                    detail: "the image does not exist locally (no registry is used); build it or point `image` at a Dockerfile".into(),
                });
            }
            reference.clone()
        }
        ImagePlan::Build {
            dockerfile,
            context,
            tag,
        } => {
            let started = Instant::now();
            progress.step(&format!("building agent image {tag}"));
            backend.build_image(&BuildSpec {
                context: context.clone(),
                dockerfile: dockerfile.clone(),
                tag: tag.clone(),
                labels: BTreeMap::new(),
            })?;
            progress.done("agent image built", started.elapsed());
            tag.clone()
        }
    };
    if !backend.image_exists(&options.sidecar_image)? {
        return Err(BackendError::Command {
            command: format!("docker image inspect {}", options.sidecar_image),
            detail: "the sidecar image of this build of bottle is missing (its tag carries the binary's hash, so every build has its own); `bottle images build` builds it, or name an image built from this binary in BOT_BOTTLE_SIDECAR_IMAGE".into(),
        });
    }
    check(interrupted)?;
    // The derived image only adds the project directory as working dir; it runs as the
    // base image's user, so the agent has no more rights than its image gave it. It is
    // content-addressed (base image id + Dockerfile) and kept as a cache: warm starts
    // skip the build.
    let workdir = plan.agent.workdir.display().to_string();
    let user = backend.image_user(&base_image)?;
    // The project directory belongs to that user: git refuses to work in a directory
    // owned by someone else ("dubious ownership").
    let (own, restore_user) = if user.is_empty() {
        (String::new(), String::new())
    } else {
        (
            format!(" && chown {} {{dir}}", shell_quote(&user)),
            format!("USER {user}\n"),
        )
    };
    let dockerfile = format!(
        "FROM {base_image}\nUSER root\nRUN mkdir -p {{dir}} && chmod 0755 {{dir}}{own}\n{restore_user}WORKDIR {{dir}}\n"
    )
    .replace("{dir}", &shell_quote(&workdir));
    let base_id = backend.image_id(&base_image)?;
    let digest = sidecar_config::sha256_hex(format!("{base_id}\n{dockerfile}").as_bytes());
    let agent_image = format!("{DERIVED_IMAGE_REPO}:{}", &digest[..16]);
    if backend.image_exists(&agent_image)? {
        progress.done(
            &format!("derived image {agent_image} is cached"),
            Duration::ZERO,
        );
    } else {
        let derived_dir = state_dir.join("derived-image");
        create_private_dir(&derived_dir)?;
        state::write_atomic(
            &derived_dir.join("Dockerfile"),
            dockerfile.as_bytes(),
            0o600,
        )?;
        let started = Instant::now();
        progress.step(&format!("building derived image {agent_image}"));
        backend.build_image(&BuildSpec {
            context: derived_dir.clone(),
            dockerfile: derived_dir.join("Dockerfile"),
            tag: agent_image.clone(),
            labels: BTreeMap::from([("dev.bot-bottle.image".to_owned(), "derived".to_owned())]),
        })?;
        progress.done("derived image built", started.elapsed());
    }

    // 2. Networks, created outside compose and labelled; the internal CIDR inspected.
    check(interrupted)?;
    let network = |role: &str, internal: bool, subnet: Option<String>| NetworkSpec {
        ip_range: subnet.as_ref().map(|s| s.replace(".0/24", ".0/25")),
        // The agent's network: no address of the host on it.
        no_host_address: role == INTERNAL_NETWORK,
        name: compose_render::names::network(&slug, role),
        internal,
        subnet,
        labels: BTreeMap::from([
            (LABEL_SLUG.to_owned(), slug.clone()),
            (LABEL_ROLE.to_owned(), role.to_owned()),
            (
                LABEL_STATE_ROOT.to_owned(),
                options.state_root.display().to_string(),
            ),
        ]),
    };
    let internal = create_internal_network(backend, &network)?;
    teardown.remove_network(internal.name.clone());
    let egress = match &options.egress_network {
        Some(existing) => backend.inspect_network(existing)?,
        None => {
            let created = backend.create_network(&network(
                EGRESS_NETWORK,
                options.egress_network_internal,
                None,
            ))?;
            teardown.remove_network(created.name.clone());
            created
        }
    };
    let egress_ip = fixed_address(&internal.cidr)?;

    let facts = LaunchFacts {
        internal_network: internal.name.clone(),
        egress_network: egress.name.clone(),
        internal_cidr: internal.cidr.clone(),
        egress_ip,
        agent_image: agent_image.clone(),
        sidecar_image: options.sidecar_image.clone(),
        sidecar_user: options.sidecar_user.clone(),
        state_dir: state_dir.clone(),
        writable_layer_quota: plan.limits.disk_bytes.is_some() && backend.writable_layer_quota()?,
    };
    if let Some(bytes) = plan.limits.disk_bytes
        && !facts.writable_layer_quota
    {
        progress.warn(&match plan.tmp_tmpfs_bytes() {
            Some(_) => format!(
                "limits.disk: /tmp is capped at {} MiB, but this engine cannot cap the rest of the agent's writable layer (that needs the overlay2 driver on xfs with project quotas); the agent can still fill the engine's disk outside /tmp",
                bytes >> 20
            ),
            None => "limits.disk: nothing is capped: the project is under /tmp (so /tmp stays on the writable layer) and this engine cannot cap the writable layer (that needs overlay2 on xfs with project quotas)".to_owned(),
        });
    }

    // 3. The bottle CA; 4. sidecar configs.
    check(interrupted)?;
    for dir in [
        facts.egress_config_dir(),
        facts.ca_public_dir(),
        facts.audit_dir(),
    ] {
        create_private_dir(&dir)?;
    }
    let ca = crate::ca::mint_ca(&slug, options.now_unix)?;
    crate::ca::write_ca(&ca, &facts.egress_config_dir(), &facts.ca_public_dir())?;
    // The agent's CA mount and the audit dir are read by other uids inside containers.
    make_world_readable_dir(&facts.ca_public_dir())?;
    let egress_config = sidecar_config::egress_config(plan, &facts, &options.egress_extras);
    sidecar_config::write_egress_config(
        &egress_config,
        &options.egress_extras,
        &facts.egress_config_dir(),
    )?;
    if plan.git_gate.enabled() {
        create_private_dir(&facts.git_gate_config_dir())?;
        create_private_dir(&facts.git_gate_mirrors_dir())?;
        sidecar_config::write_git_gate_config(plan, &facts)?;
    }
    if plan.supervise.enabled {
        sidecar_config::write_supervise_config(plan, &facts)?;
    }
    // What the agent keeps across bottles (sessions, memory): made here so the mount
    // has a source; kept on teardown, removed by `bottle down --purge`.
    // An existing one belongs to the image's user by now: leave its mode alone.
    for dir in &plan.agent.profile.persist {
        let path = facts.persist_dir(&plan.agent.name, &dir.name);
        if !path.is_dir() {
            create_private_dir(&path)?;
        }
    }

    // 5. Compose file and metadata; 6. compose up with secrets only in its environment.
    metadata.networks = std::iter::once(internal.name.clone())
        .chain(
            options
                .egress_network
                .is_none()
                .then(|| egress.name.clone()),
        )
        .collect();
    let mut plan = plan.clone();
    let env = compose_render::compose_process_env(&plan);
    teardown.compose_down(project.clone(), compose_file.clone());
    let mut attempt = 1;
    let file = loop {
        check(interrupted)?;
        metadata.agent_container = plan.agent.container_name.clone();
        metadata.files = written_files(&state_dir);
        metadata.write(&state_dir)?;
        let file = render(&plan, &facts);
        state::write_atomic(&compose_file, to_yaml(&file).as_bytes(), 0o600)?;
        let started = Instant::now();
        // Created, not started: compose would start the agent only once its sidecars'
        // healthchecks passed, at their 2 s interval, but the agent container only
        // idles until `bottle` runs the program in it, so everything starts at once
        // below and the sidecars' readiness is probed directly before anyone attaches.
        let (verb, args) = ("compose create", ["up", "--no-start", "--no-build"]);
        progress.step(&format!("{verb} ({} services)", file.services.len()));
        let up = backend.compose(&ComposeCall {
            project: project.clone(),
            file: compose_file.clone(),
            args: args.map(str::to_owned).to_vec(),
            env: env.clone(),
        })?;
        if up.success() {
            progress.done(verb, started.elapsed());
            break file;
        }
        let stderr = String::from_utf8_lossy(&up.stderr).into_owned();
        let name_taken =
            stderr.contains("is already in use") && stderr.contains(&plan.agent.container_name);
        if name_taken && plan.agent.container_name_pinned {
            return Err(BackendError::NameConflict {
                name: plan.agent.container_name.clone(),
            });
        }
        if name_taken && attempt < 5 {
            attempt += 1;
            plan.agent.container_name = format!("{}-{attempt}", plan.slug.to_string() + "-agent");
            progress.warn(&format!(
                "container name taken; retrying as {}",
                plan.agent.container_name
            ));
            continue;
        }
        return Err(BackendError::Command {
            command: format!("compose -p {project} up"),
            detail: redact(&last_lines(&stderr, 25), &secret_values(&plan)),
        });
    };

    let started = Instant::now();
    let created = backend.containers_with_label(&format!("{LABEL_SLUG}={slug}"))?;
    // Compose v1 put each container on its first network only.
    let connects = crate::attach::missing_networks(&file, &created);
    if !connects.is_empty() {
        progress.step(&format!(
            "attaching the networks compose left for its own start ({})",
            connects.len()
        ));
        backend.connect_networks(&connects)?;
    }
    progress.step("starting the containers");
    let ids: Vec<String> = created.into_iter().map(|c| c.id).collect();
    backend.start_containers(&ids)?;
    progress.done("started", started.elapsed());
    wait_ready(
        backend,
        &slug,
        options.health_timeout,
        progress,
        interrupted,
    )?;

    // 7. Provision via docker exec.
    check(interrupted)?;
    let started = Instant::now();
    progress.step("provisioning the agent container");
    crate::provision::provision(backend, &plan, &facts)?;
    progress.done("provisioned", started.elapsed());

    metadata.ready = true;
    metadata.files = written_files(&state_dir);
    metadata.write(&state_dir)?;
    teardown.disarm();
    Ok(BottleHandle {
        metadata,
        state_dir,
    })
}

/// Creates the internal network with a subnet of our choosing (compose can pin the
/// egress sidecar's address only on a user-configured subnet).
fn create_internal_network(
    backend: &dyn Engine,
    network: &dyn Fn(&str, bool, Option<String>) -> NetworkSpec,
) -> Result<crate::engine::NetworkInfo> {
    create_in_free_subnet(backend, &|subnet| {
        network(INTERNAL_NETWORK, true, Some(subnet))
    })
}

/// Creates the network `spec` makes for a subnet: a random /24 in 10.213.0.0/16,
/// retried on overlap with the engine's other networks.
pub(crate) fn create_in_free_subnet(
    backend: &dyn Engine,
    spec: &dyn Fn(String) -> NetworkSpec,
) -> Result<crate::engine::NetworkInfo> {
    let [first, ..] = crate::ca::random_bytes::<1>()?;
    let mut last_error = None;
    for attempt in 0..32u8 {
        let third = first.wrapping_add(attempt.wrapping_mul(37));
        match backend.create_network(&spec(format!("10.213.{third}.0/24"))) {
            Ok(info) => return Ok(info),
            Err(BackendError::SubnetOverlap { subnet }) => last_error = Some(subnet),
            Err(error) => return Err(error),
        }
    }
    Err(BackendError::Command {
        command: "docker network create --internal".into(),
        detail: format!(
            "no free /24 in 10.213.0.0/16 after 32 tries (the last: {})",
            last_error.unwrap_or_default()
        ),
    })
}

/// The address the egress sidecar gets on the internal network: the subnet's last
/// host address, outside the range the engine hands out to other containers.
pub(crate) fn fixed_address(cidr: &str) -> Result<String> {
    let bad = || BackendError::Corrupt {
        path: PathBuf::from(cidr),
        detail: "not an IPv4 /24".into(),
    };
    let (network, bits) = cidr.split_once('/').ok_or_else(bad)?;
    let network: std::net::Ipv4Addr = network.parse().map_err(|_| bad())?;
    if bits != "24" {
        return Err(bad());
    }
    // The last host address: dynamic addresses come from the lower half (`--ip-range`).
    Ok(std::net::Ipv4Addr::from(u32::from(network) + 254).to_string())
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn make_world_readable_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(BackendError::io("setting mode 0755 on", dir))
}

fn written_files(state_dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if let Ok(relative) = path.strip_prefix(root) {
                out.push(relative.to_path_buf());
            }
        }
    }
    let mut files = Vec::new();
    walk(state_dir, state_dir, &mut files);
    files.sort();
    files
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The port of a sidecar's `/healthz`, by role.
fn health_port(role: &str) -> Option<u16> {
    match role {
        compose_render::EGRESS_SERVICE => Some(compose_render::EGRESS_PROXY_PORT),
        compose_render::GIT_GATE_SERVICE => Some(compose_render::GIT_GATE_PORT),
        compose_render::SUPERVISE_SERVICE => Some(compose_render::SUPERVISE_PORT),
        _ => None,
    }
}

/// Waits until every sidecar answers its `/healthz`, asked directly through the probe
/// its healthcheck runs (the engine's health status only changes at the healthcheck's
/// interval). A container that stopped, or that the engine already calls unhealthy,
/// fails the launch at once.
fn wait_ready(
    backend: &dyn Engine,
    slug: &str,
    timeout: Duration,
    progress: &mut dyn Progress,
    interrupted: InterruptCheck<'_>,
) -> Result<()> {
    let started = Instant::now();
    progress.step("waiting for the sidecars to be ready");
    let mut ready: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    loop {
        check(interrupted)?;
        let containers = backend.containers_with_label(&format!("{LABEL_SLUG}={slug}"))?;
        let mut pending = Vec::new();
        for container in &containers {
            let role = container
                .labels
                .get(LABEL_ROLE)
                .map(String::as_str)
                .unwrap_or("?");
            if container.state != "running" {
                return Err(BackendError::Command {
                    command: format!("waiting for {role}"),
                    detail: format!(
                        "container {} is {}; see `bottle logs {slug}`",
                        container.name, container.state
                    ),
                });
            }
            if container.health.as_deref() == Some("unhealthy") {
                return Err(BackendError::Command {
                    command: format!("waiting for {role}"),
                    detail: format!("container {} is unhealthy", container.name),
                });
            }
            let Some(port) = health_port(role) else {
                continue;
            };
            if ready.contains(&container.name) {
                continue;
            }
            let probe = backend.exec(&ExecSpec {
                container: container.name.clone(),
                user: None,
                workdir: None,
                command: ["bottle", "sidecar", "probe"]
                    .map(str::to_owned)
                    .into_iter()
                    .chain([format!("http://127.0.0.1:{port}/healthz")])
                    .collect(),
                stdin: None,
            })?;
            if probe.success() {
                ready.insert(container.name.clone());
            } else {
                pending.push(role.to_owned());
            }
        }
        if !containers.is_empty() && pending.is_empty() {
            progress.done("sidecars ready", started.elapsed());
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(BackendError::Timeout {
                what: format!(
                    "readiness of {}",
                    if pending.is_empty() {
                        "the bottle".into()
                    } else {
                        pending.join(", ")
                    }
                ),
                seconds: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_address_is_outside_the_dynamic_range() {
        assert_eq!(fixed_address("10.213.7.0/24").unwrap(), "10.213.7.254");
        assert!(fixed_address("172.20.0.0/16").is_err());
        assert!(fixed_address("fd00::/64").is_err());
    }
}
