//! Sidecar configs written at launch: the typed config of each sidecar crate, filled
//! from the plan and the launch facts. The sidecar reads the same types it was
//! written with: they ship in the same binary.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use compose_render::{
    LaunchFacts, SIDECAR_AUDIT_DIR, SIDECAR_CONFIG_DIR, guarded_secret_env, route_secret_env,
};
use plan::BottlePlan;

use crate::error::{BackendError, Result};
use crate::state::write_atomic;

/// Options the launcher may add on top of the plan (e2e uses them for its fake
/// internet; users never need them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressExtras {
    /// Extra CA bundle the proxy trusts for upstreams (PEM file on the host).
    pub extra_ca_bundle: Option<PathBuf>,
    /// Names the proxy resolves itself, without DNS.
    pub static_hosts: BTreeMap<String, IpAddr>,
}

/// The sidecar's spelling of a manifest DLP mode.
fn dlp_mode(mode: plan::DlpMode) -> sidecar_contract::egress::DlpMode {
    match mode {
        plan::DlpMode::Block => sidecar_contract::egress::DlpMode::Block,
        plan::DlpMode::Audit => sidecar_contract::egress::DlpMode::Audit,
        plan::DlpMode::Off => sidecar_contract::egress::DlpMode::Off,
    }
}

/// File name of the extra CA bundle inside the egress config dir.
pub const EXTRA_CA_FILE: &str = "extra-ca.pem";

/// The egress sidecar's policy for `plan`: the manifest's rules, the internal CIDR
/// exempt from SSRF blocking, routes reading their credentials from namespaced
/// variables.
pub fn egress_config(
    plan: &BottlePlan,
    facts: &LaunchFacts,
    extras: &EgressExtras,
) -> sidecar_contract::egress::EgressConfig {
    use sidecar_contract::egress::*;
    let egress = &plan.egress;
    let mut exempt_cidrs = egress.ssrf.exempt.clone();
    exempt_cidrs.push(facts.internal_cidr.clone());
    EgressConfig {
        bottle_slug: plan.slug.to_string(),
        listen: std::net::SocketAddr::from(([0, 0, 0, 0], compose_render::EGRESS_PROXY_PORT)),
        ca_cert: PathBuf::from(crate::ca::CA_CERT_FILE),
        ca_key: PathBuf::from(crate::ca::CA_KEY_FILE),
        extra_ca_bundle: extras
            .extra_ca_bundle
            .as_ref()
            .map(|_| PathBuf::from(EXTRA_CA_FILE)),
        audit_log: Some(Path::new(SIDECAR_AUDIT_DIR).join("egress.jsonl")),
        static_hosts: extras.static_hosts.clone(),
        allow: egress
            .allow
            .iter()
            .map(|rule| AllowRule {
                host: rule.host.to_string(),
                ports: Some(rule.ports.clone()),
                methods: rule.methods.clone(),
                path_prefixes: rule.paths.clone(),
            })
            .collect(),
        routes: egress
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| Route {
                host: route.host.clone(),
                path_prefix: route.path_prefix.clone(),
                header: route.header.clone(),
                format: route.format.clone(),
                secret_env: route_secret_env(index),
                placeholder: Some(route.placeholder.clone()),
                agent_env: Some(route.agent_env.clone()),
            })
            .collect(),
        dlp: DlpConfig {
            enabled: egress.dlp.enabled,
            extra_patterns: egress
                .dlp
                .patterns
                .iter()
                .map(|p| ExtraPattern {
                    name: p.name.clone(),
                    regex: p.regex.clone(),
                    allowed_hosts: p.allowed_hosts.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            mode: dlp_mode(egress.dlp.mode),
            hosts: egress
                .dlp
                .hosts
                .iter()
                .map(|h| DlpHostMode {
                    host: h.host.to_string(),
                    mode: dlp_mode(h.mode),
                })
                .collect(),
        },
        guarded_env: egress
            .guarded_env
            .iter()
            .enumerate()
            .map(|(index, guarded)| GuardedEnv {
                name: guarded.var.clone(),
                secret_env: guarded_secret_env(index),
                allowed_hosts: guarded.may_send_to.clone(),
            })
            .collect(),
        ssrf: SsrfConfig {
            enabled: egress.ssrf.enabled,
            exempt_cidrs,
        },
        limits: Limits::default(),
        dns_sink: Some(DnsSinkConfig {
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], 53)),
        }),
    }
}

/// Writes the egress policy (0600) and the optional extra CA into `config_dir`.
pub fn write_egress_config(
    config: &sidecar_contract::egress::EgressConfig,
    extras: &EgressExtras,
    config_dir: &Path,
) -> Result<()> {
    if let Some(bundle) = &extras.extra_ca_bundle {
        let pem =
            std::fs::read(bundle).map_err(BackendError::io("reading extra CA bundle", bundle))?;
        write_atomic(&config_dir.join(EXTRA_CA_FILE), &pem, 0o644)?;
    }
    write_policy(config, config_dir)
}

/// Writes `policy.json` atomically; returns its version (what the sidecar reports).
pub fn write_policy(
    config: &sidecar_contract::egress::EgressConfig,
    config_dir: &Path,
) -> Result<()> {
    let mut text = serde_json::to_string_pretty(config).expect("egress config serializes");
    text.push('\n');
    write_atomic(
        &config_dir.join(sidecar_contract::egress::POLICY_FILE_NAME),
        text.as_bytes(),
        0o600,
    )
}

/// The policy version of a policy file's bytes: hex SHA-256, as the sidecar computes it.
pub fn policy_version(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Writes the git gate's config, a copy of each upstream's key (0600) and known_hosts,
/// and a passwd file so ssh finds an entry for the sidecar's uid.
pub fn write_git_gate_config(plan: &BottlePlan, facts: &LaunchFacts) -> Result<()> {
    let config_dir = facts.git_gate_config_dir();
    let in_container = Path::new(SIDECAR_CONFIG_DIR);
    let mut upstreams = Vec::new();
    for upstream in &plan.git_gate.upstreams {
        let key_name = format!("{}.key", upstream.name);
        let hosts_name = format!("{}.known_hosts", upstream.name);
        let key = std::fs::read(&upstream.key_path)
            .map_err(BackendError::io("reading SSH key", &upstream.key_path))?;
        write_atomic(&config_dir.join(&key_name), &key, 0o600)?;
        let hosts = std::fs::read(&upstream.known_hosts_path).map_err(BackendError::io(
            "reading known_hosts",
            &upstream.known_hosts_path,
        ))?;
        write_atomic(&config_dir.join(&hosts_name), &hosts, 0o644)?;
        upstreams.push(sidecar_contract::git_gate::UpstreamConfig {
            name: upstream.name.clone(),
            url: upstream.url.clone(),
            key_path: in_container.join(key_name),
            known_hosts_path: in_container.join(hosts_name),
            push_refs: upstream.push_refs.clone(),
            allow_force_push: upstream.force_push,
            allow_delete: upstream.allow_delete,
            read_only: upstream.read_only,
        });
    }
    let config = sidecar_contract::git_gate::GateConfig {
        listen: std::net::SocketAddr::from(([0, 0, 0, 0], compose_render::GIT_GATE_PORT)),
        mirrors_dir: PathBuf::from(sidecar_contract::git_gate::DEFAULT_MIRRORS_DIR),
        audit_log: Some(Path::new(SIDECAR_AUDIT_DIR).join("git-gate.jsonl")),
        upstreams,
    };
    let mut text = serde_json::to_string_pretty(&config).expect("git-gate config serializes");
    text.push('\n');
    write_atomic(
        &config_dir.join(sidecar_contract::git_gate::CONFIG_FILE_NAME),
        text.as_bytes(),
        0o600,
    )?;
    let (uid, gid) = facts
        .sidecar_user
        .split_once(':')
        .unwrap_or((&facts.sidecar_user, "0"));
    let passwd = format!(
        "root:x:0:0:root:/root:/bin/sh\nbottle:x:{uid}:{gid}:bot-bottle sidecar:/tmp:/bin/sh\n"
    );
    write_atomic(&facts.git_gate_passwd_file(), passwd.as_bytes(), 0o644)
}

/// Writes the supervise sidecar's config and its policy view, and creates the request
/// queue (writable by the sidecar) and the decisions dir (written only by the host CLI;
/// mounted read-only).
pub fn write_supervise_config(plan: &BottlePlan, facts: &LaunchFacts) -> Result<()> {
    for dir in [
        facts.supervise_config_dir(),
        facts.supervise_queue_dir(),
        facts.supervise_decisions_dir(),
    ] {
        crate::state::create_private_dir(&dir)?;
    }
    let mut config = sidecar_contract::supervise::SuperviseConfig::new(plan.slug.to_string());
    config.audit_log = Some(Path::new(SIDECAR_AUDIT_DIR).join("supervise.jsonl"));
    config
        .write(&facts.supervise_config_dir())
        .map_err(|e| BackendError::Corrupt {
            path: facts.supervise_config_dir(),
            detail: e.to_string(),
        })?;
    write_policy_view(&facts.state_dir)
}

/// Rewrites the supervise sidecar's view of the egress policy (what the agent's
/// `policy()` tool shows) from the bottle's current `policy.json`. A bottle without
/// supervise has no view to write.
pub fn write_policy_view(state_dir: &Path) -> Result<()> {
    let config_dir = state_dir.join("supervise/config");
    if !config_dir.is_dir() {
        return Ok(());
    }
    let policy_path = state_dir
        .join("egress/config")
        .join(sidecar_contract::egress::POLICY_FILE_NAME);
    let bytes = std::fs::read(&policy_path).map_err(BackendError::io("reading", &policy_path))?;
    let policy = sidecar_contract::egress::EgressConfig::from_json(&bytes).map_err(|e| {
        BackendError::Corrupt {
            path: policy_path.clone(),
            detail: e.to_string(),
        }
    })?;
    let view = sidecar_contract::supervise::PolicyView {
        allow: policy
            .allow
            .iter()
            .map(|rule| sidecar_contract::supervise::AllowView {
                host: rule.host.clone(),
                ports: rule.ports.clone(),
                methods: rule.methods.clone(),
                paths: rule.path_prefixes.clone(),
            })
            .collect(),
        credentials: policy
            .routes
            .iter()
            .map(|route| sidecar_contract::supervise::CredentialView {
                host: route.host.clone(),
                header: route.header.clone(),
            })
            .collect(),
        dlp: policy.dlp.enabled,
        ssrf: policy.ssrf.enabled,
        version: policy_version(&bytes),
    };
    let path = config_dir.join(sidecar_contract::supervise::config::DEFAULT_POLICY_VIEW);
    view.write(&path).map_err(|e| BackendError::Corrupt {
        path,
        detail: e.to_string(),
    })
}
