//! What a bottle needs, whatever runs it: each sidecar's config from the plan, the
//! files the git gate must be handed, the supervise policy view. Pure: a backend
//! writes these where its sidecars read them (files in a state dir on Docker,
//! ConfigMaps and Secrets on Kubernetes), and the sidecars read the same types.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use plan::BottlePlan;
use sidecar_contract::egress::{
    AllowRule, AuditStdout, DlpConfig, DlpHostMode, DnsSinkConfig, EgressConfig, ExtraPattern,
    GuardedEnv, Limits, Route, SsrfConfig, UPSTREAM_PROXY_SECRET_ENV, UpstreamProxyConfig,
};
use sidecar_contract::git_gate::{self, GateConfig, UpstreamConfig};
use sidecar_contract::layout::{
    CA_CERT_FILE, CA_KEY_FILE, EGRESS_PROXY_PORT, EXTRA_CA_FILE, GIT_GATE_PORT, SIDECAR_AUDIT_DIR,
    SIDECAR_CONFIG_DIR, guarded_secret_env, route_secret_env,
};
use sidecar_contract::supervise::{AllowView, CredentialView, PolicyView, SuperviseConfig};

/// What the launcher may add on top of the plan (e2e uses it for its fake internet;
/// users never need it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressExtras {
    /// Extra CA bundle the proxy trusts for upstreams (PEM file on the host); the
    /// backend copies it into the egress config as [`EXTRA_CA_FILE`].
    pub extra_ca_bundle: Option<PathBuf>,
    /// Names the proxy resolves itself, without DNS.
    pub static_hosts: BTreeMap<String, IpAddr>,
}

/// The sidecar's spelling of a manifest DLP mode.
fn dlp_mode(mode: plan::DlpMode) -> sidecar_contract::egress::DlpMode {
    use sidecar_contract::egress::DlpMode;
    match mode {
        plan::DlpMode::Block => DlpMode::Block,
        plan::DlpMode::Audit => DlpMode::Audit,
        plan::DlpMode::Off => DlpMode::Off,
    }
}

/// The egress sidecar's policy for `plan`: the manifest's rules; `internal_cidrs`
/// (where the bottle's own sidecars live, which the backend knows) exempt from SSRF
/// blocking; routes, guarded values and the upstream proxy's credential read from
/// namespaced variables.
pub fn egress_config(
    plan: &BottlePlan,
    internal_cidrs: &[String],
    extras: &EgressExtras,
) -> EgressConfig {
    let egress = &plan.egress;
    let mut exempt_cidrs = egress.ssrf.exempt.clone();
    exempt_cidrs.extend(internal_cidrs.iter().cloned());
    EgressConfig {
        bottle_slug: plan.slug.to_string(),
        listen: SocketAddr::from(([0, 0, 0, 0], EGRESS_PROXY_PORT)),
        ca_cert: PathBuf::from(CA_CERT_FILE),
        ca_key: PathBuf::from(CA_KEY_FILE),
        extra_ca_bundle: extras
            .extra_ca_bundle
            .as_ref()
            .map(|_| PathBuf::from(EXTRA_CA_FILE)),
        audit_log: Some(Path::new(SIDECAR_AUDIT_DIR).join("egress.jsonl")),
        audit_stdout: AuditStdout::All,
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
            listen: SocketAddr::from(([0, 0, 0, 0], 53)),
        }),
        upstream_proxy: egress
            .upstream_proxy
            .as_ref()
            .map(|proxy| UpstreamProxyConfig {
                host: proxy.host.clone(),
                port: proxy.port,
                credential_env: proxy
                    .credentials
                    .as_ref()
                    .map(|_| UPSTREAM_PROXY_SECRET_ENV.to_owned()),
                no_proxy: proxy.no_proxy.clone(),
            }),
    }
}

/// A host file a sidecar needs a copy of, under `name` in its config directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopiedFile {
    /// The file on the launcher's host (an SSH key, a known_hosts file).
    pub from: PathBuf,
    /// Its name in the sidecar's config directory.
    pub name: String,
    /// Unix mode of the copy: 0600 for keys.
    pub mode: u32,
    /// Whether it is a credential (a Secret, not a ConfigMap, on Kubernetes).
    pub secret: bool,
}

/// The git gate of a bottle: its config and the files it refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitGateNeeds {
    /// `git-gate.json`.
    pub config: GateConfig,
    /// Each upstream's key and known_hosts, copied beside the config.
    pub files: Vec<CopiedFile>,
}

/// The git gate `plan` needs, or `None` when it has no upstreams.
pub fn git_gate(plan: &BottlePlan) -> Option<GitGateNeeds> {
    if !plan.git_gate.enabled() {
        return None;
    }
    let in_sidecar = Path::new(SIDECAR_CONFIG_DIR);
    let mut upstreams = Vec::new();
    let mut files = Vec::new();
    for upstream in &plan.git_gate.upstreams {
        let key_name = format!("{}.key", upstream.name);
        let hosts_name = format!("{}.known_hosts", upstream.name);
        files.push(CopiedFile {
            from: upstream.key_path.clone(),
            name: key_name.clone(),
            mode: 0o600,
            secret: true,
        });
        files.push(CopiedFile {
            from: upstream.known_hosts_path.clone(),
            name: hosts_name.clone(),
            mode: 0o644,
            secret: false,
        });
        upstreams.push(UpstreamConfig {
            name: upstream.name.clone(),
            url: upstream.url.clone(),
            key_path: in_sidecar.join(key_name),
            known_hosts_path: in_sidecar.join(hosts_name),
            push_refs: upstream.push_refs.clone(),
            allow_force_push: upstream.force_push,
            allow_delete: upstream.allow_delete,
            read_only: upstream.read_only,
        });
    }
    Some(GitGateNeeds {
        config: GateConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], GIT_GATE_PORT)),
            mirrors_dir: PathBuf::from(git_gate::DEFAULT_MIRRORS_DIR),
            audit_log: Some(Path::new(SIDECAR_AUDIT_DIR).join("git-gate.jsonl")),
            upstreams,
        },
        files,
    })
}

/// A `/etc/passwd` naming the sidecar's `uid:gid`, so ssh in the git gate finds an
/// entry for the user it runs as.
pub fn sidecar_passwd(user: &str) -> String {
    let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
    format!("root:x:0:0:root:/root:/bin/sh\nbottle:x:{uid}:{gid}:bot-bottle sidecar:/tmp:/bin/sh\n")
}

/// The supervise sidecar's config, or `None` when the bottle has no supervise.
pub fn supervise_config(plan: &BottlePlan) -> Option<SuperviseConfig> {
    if !plan.supervise.enabled {
        return None;
    }
    let mut config = SuperviseConfig::new(plan.slug.to_string());
    config.audit_log = Some(Path::new(SIDECAR_AUDIT_DIR).join("supervise.jsonl"));
    Some(config)
}

/// The version of a policy file's bytes: hex SHA-256, as the egress sidecar reports
/// it in `/status` once it has loaded that file.
pub fn policy_version(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The policy file of `config`, as written: pretty JSON and a newline.
pub fn policy_bytes(config: &EgressConfig) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(config).expect("egress config serializes");
    text.push('\n');
    text.into_bytes()
}

/// What the agent's `policy()` tool shows of `policy` (the file whose bytes have
/// `version`): hosts, methods, paths and which hosts get a credential, never the
/// credentials or the rules' internals.
pub fn policy_view(policy: &EgressConfig, version: String) -> PolicyView {
    PolicyView {
        allow: policy
            .allow
            .iter()
            .map(|rule| AllowView {
                host: rule.host.clone(),
                ports: rule.ports.clone(),
                methods: rule.methods.clone(),
                paths: rule.path_prefixes.clone(),
            })
            .collect(),
        credentials: policy
            .routes
            .iter()
            .map(|route| CredentialView {
                host: route.host.clone(),
                header: route.header.clone(),
            })
            .collect(),
        dlp: policy.dlp.enabled,
        ssrf: policy.ssrf.enabled,
        version,
    }
}
