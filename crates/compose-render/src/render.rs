//! BottlePlan + LaunchFacts -> ComposeFile. Pure.

use std::collections::BTreeMap;
use std::path::Path;

use plan::{BottlePlan, EnvVar, Runtime};

use crate::compose::{
    ComposeFile, DependsOn, Healthcheck, Logging, Network, Service, ServiceNetwork, Volume,
};
use crate::facts::LaunchFacts;

/// Compose-local name of the internal network.
pub const INTERNAL_NETWORK: &str = "internal";
/// Compose-local name of the egress network.
pub const EGRESS_NETWORK: &str = "egress";

use sidecar_contract::egress::UPSTREAM_PROXY_SECRET_ENV;
pub use sidecar_contract::layout::{
    AGENT_CA_CERT, AGENT_CA_DIR, AGENT_PERSIST_DIR, AGENT_SERVICE, DEFAULT_AGENT_PIDS,
    EGRESS_PROXY_PORT, EGRESS_SERVICE, GIT_GATE_PORT, GIT_GATE_SERVICE, LABEL_AGENT, LABEL_ROLE,
    LABEL_SLUG, LABEL_STATE_ROOT, SIDECAR_AUDIT_DIR, SIDECAR_CONFIG_DIR, SIDECAR_MEMORY,
    SIDECAR_PIDS, SUPERVISE_PORT, SUPERVISE_SERVICE, guarded_secret_env, route_secret_env,
};

/// Container logs of every service are bounded: an agent that floods stdout (or the
/// sidecars' audit lines) cannot fill the host's disk through the engine's log files.
pub fn bounded_logging() -> Logging {
    Logging {
        driver: "json-file".to_owned(),
        options: BTreeMap::from([
            ("max-size".to_owned(), "10m".to_owned()),
            ("max-file".to_owned(), "3".to_owned()),
        ]),
    }
}

/// The compose file of one bottle.
pub fn render(plan: &BottlePlan, facts: &LaunchFacts) -> ComposeFile {
    let mut services = BTreeMap::new();
    services.insert(EGRESS_SERVICE.to_owned(), egress_service(plan, facts));
    if plan.git_gate.enabled() {
        services.insert(GIT_GATE_SERVICE.to_owned(), git_gate_service(plan, facts));
    }
    if plan.supervise.enabled {
        services.insert(SUPERVISE_SERVICE.to_owned(), supervise_service(plan, facts));
    }
    let agent = agent_service(plan, facts, &services);
    services.insert(AGENT_SERVICE.to_owned(), agent);
    for service in services.values_mut() {
        service.logging = Some(bounded_logging());
    }
    let networks = BTreeMap::from([
        (
            INTERNAL_NETWORK.to_owned(),
            Network {
                external: true,
                name: facts.internal_network.clone(),
            },
        ),
        (
            EGRESS_NETWORK.to_owned(),
            Network {
                external: true,
                name: facts.egress_network.clone(),
            },
        ),
    ]);
    ComposeFile { services, networks }
}

/// The variables the launcher must set in the compose process environment, by
/// name: the values behind every bare `NAME` in the file. Nothing else carries them.
pub fn compose_process_env(plan: &BottlePlan) -> Vec<(String, plan::Secret)> {
    let mut vars: Vec<(String, plan::Secret)> = plan
        .env
        .secrets()
        .map(|(name, secret)| (name.to_owned(), secret.clone()))
        .collect();
    for (index, route) in plan.egress.routes.iter().enumerate() {
        vars.push((route_secret_env(index), route.token.clone()));
    }
    for (index, guarded) in plan.egress.guarded_env.iter().enumerate() {
        vars.push((guarded_secret_env(index), guarded.value.clone()));
    }
    if let Some(credentials) = upstream_proxy_credentials(plan) {
        vars.push((UPSTREAM_PROXY_SECRET_ENV.to_owned(), credentials.clone()));
    }
    vars
}

/// The upstream proxy's `user:password`, if the bottle has a proxy that needs one.
fn upstream_proxy_credentials(plan: &BottlePlan) -> Option<&plan::Secret> {
    plan.egress
        .upstream_proxy
        .as_ref()
        .and_then(|proxy| proxy.credentials.as_ref())
}

/// Compose interpolates `$` in values: escape every literal one.
fn literal(value: &str) -> String {
    value.replace('$', "$$")
}

fn host_path(path: &Path) -> String {
    literal(&path.display().to_string())
}

fn labels(plan: &BottlePlan, facts: &LaunchFacts, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_SLUG.to_owned(), plan.slug.to_string()),
        (LABEL_AGENT.to_owned(), literal(&plan.agent.name)),
        (LABEL_ROLE.to_owned(), role.to_owned()),
        (
            LABEL_STATE_ROOT.to_owned(),
            literal(&facts.state_root().display().to_string()),
        ),
    ])
}

/// Hardening every sidecar gets: no capabilities, no privilege gain, read-only root,
/// small limits, the state dir owner's uid.
fn hardened_sidecar(plan: &BottlePlan, facts: &LaunchFacts, role: &str, port: u16) -> Service {
    Service {
        image: Some(facts.sidecar_image.clone()),
        command: Some(vec![
            "bottle".to_owned(),
            "sidecar".to_owned(),
            role.to_owned(),
            "--config".to_owned(),
            SIDECAR_CONFIG_DIR.to_owned(),
        ]),
        user: Some(facts.sidecar_user.clone()),
        labels: labels(plan, facts, role),
        cap_drop: vec!["ALL".to_owned()],
        security_opt: vec!["no-new-privileges:true".to_owned()],
        read_only: Some(true),
        tmpfs: vec!["/tmp".to_owned()],
        init: Some(true),
        // Egress and git-gate sit on two networks: they must never route between
        // them, whatever the agent sends their way. Off in their namespace, for free.
        sysctls: BTreeMap::from([("net.ipv4.ip_forward".to_owned(), "0".to_owned())]),
        mem_limit: Some(SIDECAR_MEMORY),
        pids_limit: Some(SIDECAR_PIDS),
        restart: Some("no".to_owned()),
        environment: vec!["HOME=/tmp".to_owned()],
        healthcheck: Some(Healthcheck {
            test: vec![
                "CMD".to_owned(),
                "bottle".to_owned(),
                "sidecar".to_owned(),
                "probe".to_owned(),
                format!("http://127.0.0.1:{port}/healthz"),
            ],
            interval: "2s".to_owned(),
            timeout: "2s".to_owned(),
            retries: 30,
            start_period: "1s".to_owned(),
        }),
        ..Service::default()
    }
}

fn egress_service(plan: &BottlePlan, facts: &LaunchFacts) -> Service {
    let mut service = hardened_sidecar(plan, facts, EGRESS_SERVICE, EGRESS_PROXY_PORT);
    // The DNS sink listens on 53 without any capability: lower the namespaced
    // unprivileged-port floor instead of granting NET_BIND_SERVICE.
    service.sysctls.insert(
        "net.ipv4.ip_unprivileged_port_start".to_owned(),
        "0".to_owned(),
    );
    service
        .environment
        .extend((0..plan.egress.routes.len()).map(route_secret_env));
    service
        .environment
        .extend((0..plan.egress.guarded_env.len()).map(guarded_secret_env));
    if upstream_proxy_credentials(plan).is_some() {
        service
            .environment
            .push(UPSTREAM_PROXY_SECRET_ENV.to_owned());
    }
    service.volumes = vec![
        Volume::bind(
            host_path(&facts.egress_config_dir()),
            SIDECAR_CONFIG_DIR,
            true,
        ),
        Volume::bind(host_path(&facts.audit_dir()), SIDECAR_AUDIT_DIR, false),
    ];
    service.networks = BTreeMap::from([
        (
            INTERNAL_NETWORK.to_owned(),
            ServiceNetwork {
                ipv4_address: Some(facts.egress_ip.clone()),
                aliases: Vec::new(),
            },
        ),
        (EGRESS_NETWORK.to_owned(), ServiceNetwork::default()),
    ]);
    service
}

fn git_gate_service(plan: &BottlePlan, facts: &LaunchFacts) -> Service {
    let mut service = hardened_sidecar(plan, facts, GIT_GATE_SERVICE, GIT_GATE_PORT);
    service.volumes = vec![
        Volume::bind(
            host_path(&facts.git_gate_config_dir()),
            SIDECAR_CONFIG_DIR,
            true,
        ),
        Volume::bind(
            host_path(&facts.git_gate_mirrors_dir()),
            "/var/lib/git-gate",
            false,
        ),
        Volume::bind(host_path(&facts.audit_dir()), SIDECAR_AUDIT_DIR, false),
    ];
    service.networks = BTreeMap::from([
        (INTERNAL_NETWORK.to_owned(), ServiceNetwork::default()),
        (EGRESS_NETWORK.to_owned(), ServiceNetwork::default()),
    ]);
    service
}

fn supervise_service(plan: &BottlePlan, facts: &LaunchFacts) -> Service {
    let mut service = hardened_sidecar(plan, facts, SUPERVISE_SERVICE, SUPERVISE_PORT);
    service.volumes = vec![
        Volume::bind(
            host_path(&facts.supervise_config_dir()),
            SIDECAR_CONFIG_DIR,
            true,
        ),
        Volume::bind(
            host_path(&facts.supervise_queue_dir()),
            "/var/lib/supervise/queue",
            false,
        ),
        Volume::bind(
            host_path(&facts.supervise_decisions_dir()),
            "/var/lib/supervise/decisions",
            true,
        ),
        Volume::bind(host_path(&facts.audit_dir()), SIDECAR_AUDIT_DIR, false),
    ];
    // The approval channel has no business outside the bottle.
    service.networks = BTreeMap::from([(INTERNAL_NETWORK.to_owned(), ServiceNetwork::default())]);
    service
}

fn agent_service(
    plan: &BottlePlan,
    facts: &LaunchFacts,
    sidecars: &BTreeMap<String, Service>,
) -> Service {
    let mut environment: Vec<String> = plan
        .env
        .vars
        .iter()
        .map(|(name, var)| match var {
            EnvVar::Literal(value) => format!("{name}={}", literal(value)),
            // Bare name: compose copies the value from its own process environment.
            EnvVar::Secret(_) => name.clone(),
        })
        .collect();
    let direct: Vec<&str> = sidecars.keys().map(String::as_str).collect();
    environment.extend(
        sidecar_contract::layout::agent_network_env(&direct)
            .into_iter()
            .map(|(name, value)| format!("{name}={value}")),
    );
    let depends_on = sidecars
        .keys()
        .map(|name| {
            (
                name.clone(),
                DependsOn {
                    condition: "service_healthy".to_owned(),
                },
            )
        })
        .collect();
    Service {
        image: Some(facts.agent_image.clone()),
        container_name: Some(plan.agent.container_name.clone()),
        // The agent's own command runs through `docker exec -it`, so the TTY belongs
        // to the docker CLI; the container itself only idles.
        command: Some(vec!["sleep".to_owned(), "infinity".to_owned()]),
        working_dir: Some(host_path(&plan.agent.workdir)),
        environment,
        volumes: std::iter::once(Volume::bind(
            host_path(&facts.ca_public_dir()),
            AGENT_CA_DIR,
            true,
        ))
        .chain(plan.agent.profile.persist.iter().map(|dir| {
            Volume::bind(
                host_path(&facts.persist_dir(&plan.agent.name, &dir.name)),
                format!("{AGENT_PERSIST_DIR}/{}", dir.name),
                false,
            )
        }))
        .collect(),
        networks: BTreeMap::from([(INTERNAL_NETWORK.to_owned(), ServiceNetwork::default())]),
        dns: vec![facts.egress_ip.clone()],
        labels: labels(plan, facts, AGENT_SERVICE),
        cap_drop: vec!["ALL".to_owned()],
        // Enough for provisioning (`docker exec -u root` copying files, installing the
        // CA) and ordinary package installs; nothing that touches the network stack.
        cap_add: ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"]
            .map(str::to_owned)
            .to_vec(),
        security_opt: vec!["no-new-privileges:true".to_owned()],
        init: Some(true),
        runtime: (plan.runtime == Runtime::Runsc).then(|| "runsc".to_owned()),
        mem_limit: plan.limits.memory_bytes,
        cpus: plan.limits.cpus,
        pids_limit: Some(plan.limits.pids.unwrap_or(DEFAULT_AGENT_PIDS)),
        // A disk limit: /tmp in memory of that size (executable: build tools run
        // things from there), and a writable-layer quota where the engine has one.
        tmpfs: plan
            .tmp_tmpfs_bytes()
            .map(|bytes| format!("/tmp:rw,exec,nosuid,nodev,size={bytes},mode=1777"))
            .into_iter()
            .collect(),
        storage_opt: plan
            .limits
            .disk_bytes
            .filter(|_| facts.writable_layer_quota)
            .map(|bytes| ("size".to_owned(), bytes.to_string()))
            .into_iter()
            .collect(),
        depends_on,
        restart: Some("no".to_owned()),
        ..Service::default()
    }
}
