//! BottlePlan + ClusterFacts + Materials -> the bottle's Kubernetes objects. Pure.
//!
//! One namespace per bottle. Each sidecar is its own Pod behind its own Service:
//! containers of one Pod share a network namespace, so an agent beside its proxy
//! could skip it. NetworkPolicy denies everything by default; the agent may reach
//! only its sidecars' ports, the egress pod only addresses outside the cluster's
//! private ranges. Secrets (the CA key, route credentials, SSH keys) are mounted into
//! sidecar pods only. See `docs/kubernetes.md` for the threat model.

use std::collections::BTreeMap;

use backend_api::needs::{self, EgressExtras};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, HostAlias, KeyToPath, Namespace, Pod,
    PodDNSConfig, PodSecurityContext, PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements,
    SeccompProfile, Secret, SecretKeySelector, SecretProjection, SecurityContext, Service,
    ServicePort, ServiceSpec, Sysctl, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use plan::{BottlePlan, EnvVar as PlanEnvVar, ImagePlan, Runtime};
use sidecar_contract::egress::{POLICY_FILE_NAME, UPSTREAM_PROXY_SECRET_ENV};
use sidecar_contract::layout::{
    AGENT_CA_DIR, AGENT_PERSIST_DIR, AGENT_SERVICE, CA_CERT_FILE, CA_KEY_FILE, EGRESS_PROXY_PORT,
    EGRESS_SERVICE, EXTRA_CA_FILE, GIT_GATE_PORT, GIT_GATE_SERVICE, LABEL_AGENT, LABEL_ROLE,
    LABEL_SLUG, SIDECAR_AUDIT_DIR, SIDECAR_CONFIG_DIR, SIDECAR_MEMORY, SUPERVISE_PORT,
    SUPERVISE_SERVICE, agent_network_env, guarded_secret_env, route_secret_env,
};
use sidecar_contract::supervise::config::{
    CONFIG_FILE as SUPERVISE_CONFIG_FILE, DEFAULT_DECISIONS_DIR, DEFAULT_POLICY_VIEW,
    DEFAULT_QUEUE_DIR,
};

use crate::names::{
    AGENT_CA_CONFIG, ANNOTATION_READY, DEFAULT_DENY_POLICY, EGRESS_CA_SECRET,
    EGRESS_CREDENTIALS_SECRET, EGRESS_POLICY_CONFIG, GIT_GATE_CONFIG, GIT_GATE_KEYS_SECRET,
    LABEL_MANAGED_BY, MANAGED_BY, SUPERVISE_CONFIG, SUPERVISE_DECISIONS_CONFIG, namespace,
};

/// What only the cluster knows: the Services' addresses (the agent reaches its
/// sidecars by them, without DNS) and the images it pulls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterFacts {
    /// ClusterIP of the egress Service: the agent's proxy and only nameserver.
    pub egress_ip: String,
    /// ClusterIP of the git gate's Service, when the bottle has one.
    pub git_gate_ip: Option<String>,
    /// ClusterIP of the supervise Service, when the bottle has one.
    pub supervise_ip: Option<String>,
    /// The agent image, pullable by the cluster, with the project's workdir in it.
    pub agent_image: String,
    /// The sidecar image (the `bottle` binary), pullable by the cluster.
    pub sidecar_image: String,
    /// Uid and gid the sidecars run as.
    pub sidecar_uid: i64,
    /// See `sidecar_uid`.
    pub sidecar_gid: i64,
}

impl ClusterFacts {
    /// Deterministic stand-ins for `bottle render --backend k8s`.
    pub fn preview(plan: &BottlePlan) -> Self {
        let agent_image = match &plan.image {
            ImagePlan::Build { tag, .. } => format!("{tag}-workdir"),
            ImagePlan::Existing { reference } => format!("{reference}-workdir"),
        };
        Self {
            egress_ip: "10.96.0.10".to_owned(),
            git_gate_ip: plan.git_gate.enabled().then(|| "10.96.0.11".to_owned()),
            supervise_ip: plan.supervise.enabled.then(|| "10.96.0.12".to_owned()),
            agent_image,
            sidecar_image: format!(
                "{}:{}",
                sidecar_contract::layout::SIDECAR_REPO,
                env!("CARGO_PKG_VERSION")
            ),
            sidecar_uid: 1000,
            sidecar_gid: 1000,
        }
    }
}

/// What the launcher reads or mints and the renderer places: the bottle CA, the git
/// gate's files, the extra CA bundle. Secret values stay [`plan::Secret`]s.
#[derive(Clone, Debug)]
pub struct Materials {
    /// The bottle CA certificate (PEM).
    pub ca_cert_pem: String,
    /// The bottle CA private key (PEM).
    pub ca_key_pem: plan::Secret,
    /// Contents of each file the git gate is handed, by its name in the config dir.
    pub git_gate_files: BTreeMap<String, plan::Secret>,
    /// An extra CA bundle the proxy trusts for upstreams (tests only).
    pub extra_ca_pem: Option<String>,
}

impl Materials {
    /// Stand-ins that say where the real values come from, for the dry run.
    pub fn preview(plan: &BottlePlan) -> Self {
        let git_gate_files = needs::git_gate(plan)
            .map(|gate| {
                gate.files
                    .into_iter()
                    .map(|file| {
                        let from = format!("(read from {} at launch)", file.from.display());
                        (file.name, plan::Secret::new(from))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            ca_cert_pem: "(minted per bottle at launch)".to_owned(),
            ca_key_pem: plan::Secret::new("(minted per bottle at launch)"),
            git_gate_files,
            extra_ca_pem: None,
        }
    }
}

/// Whether secret values are written into Secrets (to create them) or replaced by a
/// marker (to print them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reveal {
    /// `bottle render`: every secret value is `(redacted)`.
    Never,
    /// `up`: the objects go to the API server.
    ForApply,
}

/// The marker a printed Secret holds instead of a value (`plan`'s, as everywhere).
pub use plan::REDACTED;

/// Every object of one bottle, in the order they are created: the namespace, the
/// default-deny policy before anything can run, data, Services, sidecars, the agent.
#[derive(Clone, Debug)]
pub struct Manifests {
    /// The bottle's namespace.
    pub namespace: Namespace,
    /// Default deny, the agent's way to its sidecars, the sidecars' ways out.
    pub network_policies: Vec<NetworkPolicy>,
    /// CA key, credentials, SSH keys: sidecars only.
    pub secrets: Vec<Secret>,
    /// Policy, configs, the agent's CA certificate, the decisions.
    pub config_maps: Vec<ConfigMap>,
    /// One ClusterIP Service per sidecar.
    pub services: Vec<Service>,
    /// One Pod per sidecar.
    pub sidecar_pods: Vec<Pod>,
    /// The agent's Pod: made last, once the Services have addresses.
    pub agent: Pod,
}

/// One object of [`Manifests`], for printing them in order.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Object<'a> {
    Namespace(&'a Namespace),
    NetworkPolicy(&'a NetworkPolicy),
    Secret(&'a Secret),
    ConfigMap(&'a ConfigMap),
    Service(&'a Service),
    Pod(&'a Pod),
}

impl Manifests {
    /// The objects as one multi-document YAML stream.
    pub fn to_yaml(&self) -> String {
        let objects = std::iter::once(Object::Namespace(&self.namespace))
            .chain(self.network_policies.iter().map(Object::NetworkPolicy))
            .chain(self.secrets.iter().map(Object::Secret))
            .chain(self.config_maps.iter().map(Object::ConfigMap))
            .chain(self.services.iter().map(Object::Service))
            .chain(self.sidecar_pods.iter().map(Object::Pod))
            .chain(std::iter::once(Object::Pod(&self.agent)));
        let mut out = String::new();
        for object in objects {
            out.push_str("---\n");
            out.push_str(&serde_saphyr::to_string(&object).expect("objects serialize"));
        }
        out
    }
}

/// The bottle's objects. The egress proxy exempts nothing of the cluster from SSRF
/// blocking: the agent reaches its sidecars directly, never through the proxy.
pub fn render(
    plan: &BottlePlan,
    facts: &ClusterFacts,
    materials: &Materials,
    reveal: Reveal,
) -> Manifests {
    let ns = namespace(plan.slug.as_str());
    let extras = EgressExtras {
        extra_ca_bundle: materials
            .extra_ca_pem
            .as_ref()
            .map(|_| EXTRA_CA_FILE.into()),
        static_hosts: BTreeMap::new(),
    };
    let policy = needs::egress_config(plan, &[], &extras);
    let policy_bytes = needs::policy_bytes(&policy);
    let gate = needs::git_gate(plan);
    let supervise = needs::supervise_config(plan);

    let mut secrets = vec![
        secret(
            plan,
            EGRESS_CA_SECRET,
            BTreeMap::from([
                (CA_CERT_FILE.to_owned(), materials.ca_cert_pem.clone()),
                (
                    CA_KEY_FILE.to_owned(),
                    reveal_value(&materials.ca_key_pem, reveal),
                ),
            ]),
        ),
        secret(
            plan,
            EGRESS_CREDENTIALS_SECRET,
            plan.egress
                .routes
                .iter()
                .enumerate()
                .map(|(i, route)| (route_secret_env(i), reveal_value(&route.token, reveal)))
                .chain(
                    plan.egress
                        .guarded_env
                        .iter()
                        .enumerate()
                        .map(|(i, guarded)| {
                            (guarded_secret_env(i), reveal_value(&guarded.value, reveal))
                        }),
                )
                .chain(upstream_proxy_credentials(plan).map(|credentials| {
                    (
                        UPSTREAM_PROXY_SECRET_ENV.to_owned(),
                        reveal_value(credentials, reveal),
                    )
                }))
                .collect(),
        ),
    ];
    let agent_env: BTreeMap<String, String> = plan
        .env
        .secrets()
        .map(|(name, value)| (name.to_owned(), reveal_value(value, reveal)))
        .collect();
    if !agent_env.is_empty() {
        secrets.push(secret(plan, AGENT_ENV_SECRET, agent_env));
    }
    let mut policy_data = BTreeMap::from([(
        POLICY_FILE_NAME.to_owned(),
        String::from_utf8(policy_bytes.clone()).expect("policy JSON is UTF-8"),
    )]);
    if let Some(pem) = &materials.extra_ca_pem {
        policy_data.insert(EXTRA_CA_FILE.to_owned(), pem.clone());
    }
    let mut config_maps = vec![
        config_map(plan, EGRESS_POLICY_CONFIG, policy_data),
        config_map(
            plan,
            AGENT_CA_CONFIG,
            BTreeMap::from([(
                sidecar_contract::layout::AGENT_CA_FILE.to_owned(),
                materials.ca_cert_pem.clone(),
            )]),
        ),
    ];
    let mut services = vec![service(
        plan,
        EGRESS_SERVICE,
        &[
            ("proxy", EGRESS_PROXY_PORT, "TCP"),
            ("dns", 53, "UDP"),
            ("dns-tcp", 53, "TCP"),
        ],
    )];
    let mut sidecar_pods = vec![egress_pod(plan, facts)];
    let mut network_policies = vec![
        default_deny(plan),
        agent_policy(plan),
        ingress_from_agent(
            plan,
            EGRESS_SERVICE,
            &[(EGRESS_PROXY_PORT, "TCP"), (53, "UDP"), (53, "TCP")],
        ),
        egress_out(plan, &policy.ssrf.exempt_cidrs),
    ];

    if let Some(gate) = &gate {
        let mut data = BTreeMap::from([
            (
                sidecar_contract::git_gate::CONFIG_FILE_NAME.to_owned(),
                json_text(&gate.config),
            ),
            (
                "passwd".to_owned(),
                needs::sidecar_passwd(&format!("{}:{}", facts.sidecar_uid, facts.sidecar_gid)),
            ),
        ]);
        let mut keys = BTreeMap::new();
        for file in &gate.files {
            let contents = materials
                .git_gate_files
                .get(&file.name)
                .map(|value| {
                    if file.secret {
                        reveal_value(value, reveal)
                    } else {
                        value.expose().to_owned()
                    }
                })
                .unwrap_or_default();
            if file.secret {
                keys.insert(file.name.clone(), contents);
            } else {
                data.insert(file.name.clone(), contents);
            }
        }
        config_maps.push(config_map(plan, GIT_GATE_CONFIG, data));
        secrets.push(secret(plan, GIT_GATE_KEYS_SECRET, keys));
        services.push(service(
            plan,
            GIT_GATE_SERVICE,
            &[("git", GIT_GATE_PORT, "TCP")],
        ));
        sidecar_pods.push(git_gate_pod(plan, facts, gate));
        network_policies.push(ingress_from_agent(
            plan,
            GIT_GATE_SERVICE,
            &[(GIT_GATE_PORT, "TCP")],
        ));
        network_policies.push(git_gate_out(plan, gate));
    }
    if let Some(config) = &supervise {
        let view = needs::policy_view(&policy, needs::policy_version(&policy_bytes));
        config_maps.push(config_map(
            plan,
            SUPERVISE_CONFIG,
            BTreeMap::from([
                (SUPERVISE_CONFIG_FILE.to_owned(), json_text(config)),
                (DEFAULT_POLICY_VIEW.to_owned(), json_text(&view)),
            ]),
        ));
        config_maps.push(config_map(
            plan,
            SUPERVISE_DECISIONS_CONFIG,
            BTreeMap::new(),
        ));
        services.push(service(
            plan,
            SUPERVISE_SERVICE,
            &[("mcp", SUPERVISE_PORT, "TCP")],
        ));
        sidecar_pods.push(supervise_pod(plan, facts));
        network_policies.push(ingress_from_agent(
            plan,
            SUPERVISE_SERVICE,
            &[(SUPERVISE_PORT, "TCP")],
        ));
    }
    Manifests {
        namespace: Namespace {
            metadata: ObjectMeta {
                name: Some(ns),
                labels: Some(labels(plan, None)),
                annotations: Some(BTreeMap::from([(
                    ANNOTATION_READY.to_owned(),
                    "false".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        },
        network_policies,
        secrets,
        config_maps,
        services,
        sidecar_pods,
        agent: agent_pod(plan, facts),
    }
}

/// `bottle render --backend k8s`: the objects with stand-in addresses and materials
/// and every secret value redacted, as YAML.
pub fn preview_yaml(plan: &BottlePlan) -> String {
    render(
        plan,
        &ClusterFacts::preview(plan),
        &Materials::preview(plan),
        Reveal::Never,
    )
    .to_yaml()
}

fn reveal_value(secret: &plan::Secret, reveal: Reveal) -> String {
    match reveal {
        Reveal::Never => REDACTED.to_owned(),
        Reveal::ForApply => secret.expose().to_owned(),
    }
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("config serializes");
    text.push('\n');
    text
}

/// Labels of every object: slug, agent, `managed-by`, and the role where there is one.
fn labels(plan: &BottlePlan, role: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_SLUG.to_owned(), plan.slug.to_string()),
        (LABEL_AGENT.to_owned(), plan.agent.name.clone()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ]);
    if let Some(role) = role {
        labels.insert(LABEL_ROLE.to_owned(), role.to_owned());
    }
    labels
}

fn meta(plan: &BottlePlan, name: &str, role: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace(plan.slug.as_str())),
        labels: Some(labels(plan, role)),
        ..ObjectMeta::default()
    }
}

fn role_selector(role: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(LABEL_ROLE.to_owned(), role.to_owned())])),
        ..LabelSelector::default()
    }
}

fn secret(plan: &BottlePlan, name: &str, data: BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: meta(plan, name, None),
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        // Write-only text: the API server keeps it base64 in `data`; printed, it
        // reads as what it is (or as `(redacted)`).
        string_data: Some(data),
        ..Secret::default()
    }
}

fn config_map(plan: &BottlePlan, name: &str, data: BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        metadata: meta(plan, name, None),
        data: Some(data),
        ..ConfigMap::default()
    }
}

fn service(plan: &BottlePlan, role: &str, ports: &[(&str, u16, &str)]) -> Service {
    Service {
        metadata: meta(plan, role, Some(role)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(BTreeMap::from([(LABEL_ROLE.to_owned(), role.to_owned())])),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port, protocol)| ServicePort {
                        name: Some((*name).to_owned()),
                        port: i32::from(*port),
                        target_port: Some(IntOrString::Int(i32::from(*port))),
                        protocol: Some((*protocol).to_owned()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn port(port: u16, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some(protocol.to_owned()),
        end_port: None,
    }
}

/// No pod of the bottle may send or receive anything another policy does not allow.
fn default_deny(plan: &BottlePlan) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(plan, DEFAULT_DENY_POLICY, None),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: None,
            egress: None,
        }),
    }
}

/// The agent's only ways out: its sidecars' ports.
fn agent_policy(plan: &BottlePlan) -> NetworkPolicy {
    let mut egress = vec![NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(role_selector(EGRESS_SERVICE)),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![
            port(EGRESS_PROXY_PORT, "TCP"),
            port(53, "UDP"),
            port(53, "TCP"),
        ]),
    }];
    if plan.git_gate.enabled() {
        egress.push(to_role(GIT_GATE_SERVICE, GIT_GATE_PORT));
    }
    if plan.supervise.enabled {
        egress.push(to_role(SUPERVISE_SERVICE, SUPERVISE_PORT));
    }
    NetworkPolicy {
        metadata: meta(plan, AGENT_SERVICE, None),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(role_selector(AGENT_SERVICE)),
            policy_types: Some(vec!["Egress".to_owned()]),
            ingress: None,
            egress: Some(egress),
        }),
    }
}

fn to_role(role: &str, tcp_port: u16) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(role_selector(role)),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![port(tcp_port, "TCP")]),
    }
}

/// A sidecar accepts only the agent, only on its own ports.
fn ingress_from_agent(plan: &BottlePlan, role: &str, ports: &[(u16, &str)]) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(plan, &format!("{role}-from-agent"), None),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(role_selector(role)),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(role_selector(AGENT_SERVICE)),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(ports.iter().map(|(p, proto)| port(*p, proto)).collect()),
            }]),
            egress: None,
        }),
    }
}

/// Address ranges no sidecar may reach unless the manifest exempts them: private,
/// shared, loopback and link-local (the metadata service) ranges.
pub const NON_PUBLIC_V4: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "0.0.0.0/8",
];
/// IPv6 counterpart of [`NON_PUBLIC_V4`].
pub const NON_PUBLIC_V6: &[&str] = &["fc00::/7", "fe80::/10", "::1/128"];

/// Peers outside the cluster's private ranges, plus the manifest's SSRF exemptions
/// (an internal upstream the user named).
fn public_peers(exempt: &[String]) -> Vec<NetworkPolicyPeer> {
    let block = |cidr: &str, except: &[&str]| NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_owned(),
            except: Some(except.iter().map(|c| (*c).to_owned()).collect()),
        }),
        ..NetworkPolicyPeer::default()
    };
    let mut peers = vec![
        block("0.0.0.0/0", NON_PUBLIC_V4),
        block("::/0", NON_PUBLIC_V6),
    ];
    peers.extend(exempt.iter().map(|cidr| block(cidr, &[])));
    peers
}

/// The cluster's DNS (kube-dns / CoreDNS in kube-system): sidecars resolve the names
/// the agent may not.
fn cluster_dns() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    "kube-system".to_owned(),
                )])),
                ..LabelSelector::default()
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "k8s-app".to_owned(),
                    "kube-dns".to_owned(),
                )])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
    }
}

/// The egress proxy may reach public addresses on any port (its allowlist decides)
/// and the cluster's DNS.
fn egress_out(plan: &BottlePlan, exempt: &[String]) -> NetworkPolicy {
    let mut rules = vec![
        NetworkPolicyEgressRule {
            to: Some(public_peers(exempt)),
            ports: None,
        },
        cluster_dns(),
    ];
    rules.extend(upstream_proxy_rule(plan));
    NetworkPolicy {
        metadata: meta(plan, &format!("{EGRESS_SERVICE}-out"), None),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(role_selector(EGRESS_SERVICE)),
            policy_types: Some(vec!["Egress".to_owned()]),
            ingress: None,
            egress: Some(rules),
        }),
    }
}

/// A corporate proxy is usually at a private address, which the public peers leave
/// out: an upstream proxy given as an address may be reached there, at its port
/// only. (A NetworkPolicy takes no names: a proxy given by name must be public, or
/// its address listed in `ssrf.exempt`; `docs/kubernetes.md`.)
fn upstream_proxy_rule(plan: &BottlePlan) -> Option<NetworkPolicyEgressRule> {
    let proxy = plan.egress.upstream_proxy.as_ref()?;
    let address: std::net::IpAddr = proxy.host.parse().ok()?;
    let cidr = match address {
        std::net::IpAddr::V4(v4) => format!("{v4}/32"),
        std::net::IpAddr::V6(v6) => format!("{v6}/128"),
    };
    Some(NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock { cidr, except: None }),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![port(proxy.port, "TCP")]),
    })
}

/// The port of an SSH remote: `ssh://user@host:PORT/path`, else 22.
pub fn ssh_port(url: &str) -> u16 {
    url.strip_prefix("ssh://")
        .and_then(|rest| rest.split('/').next())
        .map(|authority| authority.rsplit('@').next().unwrap_or(authority))
        .and_then(|host_port| {
            if host_port.starts_with('[') {
                host_port.rsplit_once("]:").map(|(_, port)| port)
            } else {
                host_port.rsplit_once(':').map(|(_, port)| port)
            }
        })
        .and_then(|port| port.parse().ok())
        .unwrap_or(22)
}

/// The git gate may reach its upstreams' SSH ports on public addresses, and DNS.
fn git_gate_out(plan: &BottlePlan, gate: &needs::GitGateNeeds) -> NetworkPolicy {
    let mut ports: Vec<u16> = gate
        .config
        .upstreams
        .iter()
        .map(|u| ssh_port(&u.url))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    NetworkPolicy {
        metadata: meta(plan, &format!("{GIT_GATE_SERVICE}-out"), None),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(role_selector(GIT_GATE_SERVICE)),
            policy_types: Some(vec!["Egress".to_owned()]),
            ingress: None,
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    to: Some(public_peers(&[])),
                    ports: Some(ports.into_iter().map(|p| port(p, "TCP")).collect()),
                },
                cluster_dns(),
            ]),
        }),
    }
}

fn hardened_container(name: &str, image: &str) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn pod_spec(containers: Vec<Container>, volumes: Vec<Volume>) -> PodSpec {
    PodSpec {
        containers,
        volumes: Some(volumes),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        restart_policy: Some("Never".to_owned()),
        ..PodSpec::default()
    }
}

fn seccomp_default() -> Option<SeccompProfile> {
    Some(SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    })
}

fn empty_dir(name: &str, size: Option<u64>, memory: bool) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: memory.then(|| "Memory".to_owned()),
            size_limit: size.map(|bytes| Quantity(bytes.to_string())),
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

/// Size of each sidecar's `/tmp`.
const SIDECAR_TMP_BYTES: u64 = 64 << 20;
/// Size of each sidecar's audit directory (the audit lines rotate within 256 MiB).
const SIDECAR_AUDIT_BYTES: u64 = 300 << 20;

/// A sidecar pod: no capabilities, read-only root, its uid, `/tmp` and the audit
/// directory as sized emptyDirs, config as a read-only projected volume, a readiness
/// probe on its `/healthz`.
fn sidecar_pod(
    plan: &BottlePlan,
    facts: &ClusterFacts,
    role: &str,
    health_port: u16,
    config: ProjectedVolumeSource,
) -> Pod {
    let mut container = hardened_container(role, &facts.sidecar_image);
    container.command = Some(
        ["bottle", "sidecar", role, "--config", SIDECAR_CONFIG_DIR]
            .map(str::to_owned)
            .to_vec(),
    );
    container.env = Some(vec![EnvVar {
        name: "HOME".to_owned(),
        value: Some("/tmp".to_owned()),
        value_from: None,
    }]);
    if let Some(context) = container.security_context.as_mut() {
        context.read_only_root_filesystem = Some(true);
        context.run_as_non_root = Some(true);
    }
    container.resources = Some(ResourceRequirements {
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(SIDECAR_MEMORY.to_string()),
        )])),
        ..ResourceRequirements::default()
    });
    container.readiness_probe = Some(Probe {
        exec: Some(ExecAction {
            command: Some(
                [
                    "bottle".to_owned(),
                    "sidecar".to_owned(),
                    "probe".to_owned(),
                    format!("http://127.0.0.1:{health_port}/healthz"),
                ]
                .to_vec(),
            ),
        }),
        period_seconds: Some(2),
        timeout_seconds: Some(2),
        failure_threshold: Some(30),
        ..Probe::default()
    });
    container.volume_mounts = Some(vec![
        mount("config", SIDECAR_CONFIG_DIR, true),
        mount("tmp", "/tmp", false),
        mount("audit", SIDECAR_AUDIT_DIR, false),
    ]);
    let mut spec = pod_spec(
        vec![container],
        vec![
            Volume {
                name: "config".to_owned(),
                projected: Some(config),
                ..Volume::default()
            },
            empty_dir("tmp", Some(SIDECAR_TMP_BYTES), false),
            empty_dir("audit", Some(SIDECAR_AUDIT_BYTES), false),
        ],
    );
    spec.security_context = Some(PodSecurityContext {
        run_as_user: Some(facts.sidecar_uid),
        run_as_group: Some(facts.sidecar_gid),
        fs_group: Some(facts.sidecar_gid),
        run_as_non_root: Some(true),
        seccomp_profile: seccomp_default(),
        ..PodSecurityContext::default()
    });
    Pod {
        metadata: meta(plan, role, Some(role)),
        spec: Some(spec),
        status: None,
    }
}

fn config_map_projection(name: &str) -> VolumeProjection {
    VolumeProjection {
        config_map: Some(ConfigMapProjection {
            name: name.to_owned(),
            ..ConfigMapProjection::default()
        }),
        ..VolumeProjection::default()
    }
}

fn secret_projection(
    name: &str,
    items: Option<Vec<KeyToPath>>,
    mode: Option<i32>,
) -> VolumeProjection {
    VolumeProjection {
        secret: Some(SecretProjection {
            name: name.to_owned(),
            items: items.map(|items| {
                items
                    .into_iter()
                    .map(|item| KeyToPath { mode, ..item })
                    .collect()
            }),
            ..SecretProjection::default()
        }),
        ..VolumeProjection::default()
    }
}

fn egress_pod(plan: &BottlePlan, facts: &ClusterFacts) -> Pod {
    let config = ProjectedVolumeSource {
        default_mode: Some(0o440),
        sources: Some(vec![
            config_map_projection(EGRESS_POLICY_CONFIG),
            secret_projection(EGRESS_CA_SECRET, None, None),
        ]),
    };
    let mut pod = sidecar_pod(plan, facts, EGRESS_SERVICE, EGRESS_PROXY_PORT, config);
    let spec = pod.spec.as_mut().expect("sidecar pods have a spec");
    // The DNS sink listens on 53 without any capability (a safe, namespaced sysctl).
    if let Some(context) = spec.security_context.as_mut() {
        context.sysctls = Some(vec![Sysctl {
            name: "net.ipv4.ip_unprivileged_port_start".to_owned(),
            value: "0".to_owned(),
        }]);
    }
    let container = &mut spec.containers[0];
    container.ports = Some(vec![
        container_port("proxy", EGRESS_PROXY_PORT, "TCP"),
        container_port("dns", 53, "UDP"),
        container_port("dns-tcp", 53, "TCP"),
    ]);
    let env = container.env.get_or_insert_with(Vec::new);
    let names = (0..plan.egress.routes.len())
        .map(route_secret_env)
        .chain((0..plan.egress.guarded_env.len()).map(guarded_secret_env))
        .chain(upstream_proxy_credentials(plan).map(|_| UPSTREAM_PROXY_SECRET_ENV.to_owned()));
    for name in names {
        env.push(EnvVar {
            name: name.clone(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: EGRESS_CREDENTIALS_SECRET.to_owned(),
                    key: name,
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        });
    }
    pod
}

/// The upstream proxy's `user:password`, if the bottle has a proxy that needs one:
/// it goes into the egress credentials Secret, which only the egress pod reads.
fn upstream_proxy_credentials(plan: &BottlePlan) -> Option<&plan::Secret> {
    plan.egress
        .upstream_proxy
        .as_ref()
        .and_then(|proxy| proxy.credentials.as_ref())
}

fn container_port(name: &str, port: u16, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some(protocol.to_owned()),
        ..ContainerPort::default()
    }
}

fn git_gate_pod(plan: &BottlePlan, facts: &ClusterFacts, gate: &needs::GitGateNeeds) -> Pod {
    let keys = gate
        .files
        .iter()
        .filter(|file| file.secret)
        .map(|file| KeyToPath {
            key: file.name.clone(),
            path: file.name.clone(),
            mode: None,
        })
        .collect();
    let config = ProjectedVolumeSource {
        default_mode: Some(0o440),
        sources: Some(vec![
            config_map_projection(GIT_GATE_CONFIG),
            secret_projection(GIT_GATE_KEYS_SECRET, Some(keys), Some(0o400)),
        ]),
    };
    let mut pod = sidecar_pod(plan, facts, GIT_GATE_SERVICE, GIT_GATE_PORT, config);
    let spec = pod.spec.as_mut().expect("sidecar pods have a spec");
    spec.volumes
        .get_or_insert_with(Vec::new)
        .push(empty_dir("mirrors", None, false));
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: "passwd".to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: GIT_GATE_CONFIG.to_owned(),
            items: Some(vec![KeyToPath {
                key: "passwd".to_owned(),
                path: "passwd".to_owned(),
                mode: Some(0o444),
            }]),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    });
    let container = &mut spec.containers[0];
    container.ports = Some(vec![container_port("git", GIT_GATE_PORT, "TCP")]);
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    mounts.push(mount(
        "mirrors",
        sidecar_contract::git_gate::DEFAULT_MIRRORS_DIR,
        false,
    ));
    mounts.push(VolumeMount {
        sub_path: Some("passwd".to_owned()),
        ..mount("passwd", "/etc/passwd", true)
    });
    pod
}

fn supervise_pod(plan: &BottlePlan, facts: &ClusterFacts) -> Pod {
    let config = ProjectedVolumeSource {
        default_mode: Some(0o444),
        sources: Some(vec![config_map_projection(SUPERVISE_CONFIG)]),
    };
    let mut pod = sidecar_pod(plan, facts, SUPERVISE_SERVICE, SUPERVISE_PORT, config);
    let spec = pod.spec.as_mut().expect("sidecar pods have a spec");
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.push(empty_dir("queue", Some(16 << 20), false));
    volumes.push(Volume {
        name: "decisions".to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: SUPERVISE_DECISIONS_CONFIG.to_owned(),
            default_mode: Some(0o444),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    });
    let container = &mut spec.containers[0];
    container.ports = Some(vec![container_port("mcp", SUPERVISE_PORT, "TCP")]);
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    mounts.push(mount("queue", DEFAULT_QUEUE_DIR, false));
    mounts.push(mount("decisions", DEFAULT_DECISIONS_DIR, true));
    pod
}

/// CPU limit as a quantity: millicores.
fn cpu_quantity(cpus: f64) -> Quantity {
    Quantity(format!("{}m", (cpus * 1000.0).round() as i64))
}

fn agent_pod(plan: &BottlePlan, facts: &ClusterFacts) -> Pod {
    let mut container = hardened_container(AGENT_SERVICE, &facts.agent_image);
    // The agent's program runs through `exec`; the container itself only idles.
    container.command = Some(vec!["sleep".to_owned(), "infinity".to_owned()]);
    container.working_dir = Some(plan.agent.workdir.display().to_string());
    container.stdin = Some(true);
    container.tty = Some(true);
    if let Some(context) = container.security_context.as_mut() {
        context.capabilities = Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: Some(
                ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"]
                    .map(str::to_owned)
                    .to_vec(),
            ),
        });
    }
    let mut direct = Vec::new();
    if plan.git_gate.enabled() {
        direct.push(GIT_GATE_SERVICE);
    }
    if plan.supervise.enabled {
        direct.push(SUPERVISE_SERVICE);
    }
    let env = plan
        .env
        .vars
        .iter()
        .map(|(name, var)| match var {
            PlanEnvVar::Literal(value) => EnvVar {
                name: name.clone(),
                value: Some(value.clone()),
                value_from: None,
            },
            // The agent's own secret values (never a route credential): from its
            // own Secret, so the pod spec holds only the name.
            PlanEnvVar::Secret(_) => EnvVar {
                name: name.clone(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: AGENT_ENV_SECRET.to_owned(),
                        key: name.clone(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
            },
        })
        .chain(
            agent_network_env(&direct)
                .into_iter()
                .map(|(name, value)| EnvVar {
                    name,
                    value: Some(value),
                    value_from: None,
                }),
        )
        .collect();
    container.env = Some(env);
    let mut limits = BTreeMap::new();
    if let Some(cpus) = plan.limits.cpus {
        limits.insert("cpu".to_owned(), cpu_quantity(cpus));
    }
    if let Some(bytes) = plan.limits.memory_bytes {
        limits.insert("memory".to_owned(), Quantity(bytes.to_string()));
    }
    if let Some(bytes) = plan.limits.disk_bytes {
        limits.insert("ephemeral-storage".to_owned(), Quantity(bytes.to_string()));
    }
    container.resources = (!limits.is_empty()).then(|| ResourceRequirements {
        limits: Some(limits),
        ..ResourceRequirements::default()
    });
    let mut mounts = vec![mount("ca", AGENT_CA_DIR, true)];
    let mut volumes = vec![Volume {
        name: "ca".to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: AGENT_CA_CONFIG.to_owned(),
            default_mode: Some(0o444),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if let Some(bytes) = plan.tmp_tmpfs_bytes() {
        volumes.push(empty_dir("tmp", Some(bytes), true));
        mounts.push(mount("tmp", "/tmp", false));
    }
    for (index, dir) in plan.agent.profile.persist.iter().enumerate() {
        let name = format!("persist-{index}");
        volumes.push(empty_dir(&name, None, false));
        mounts.push(mount(
            &name,
            &format!("{AGENT_PERSIST_DIR}/{}", dir.name),
            false,
        ));
    }
    container.volume_mounts = Some(mounts);
    let mut spec = pod_spec(vec![container], volumes);
    spec.security_context = Some(PodSecurityContext {
        seccomp_profile: seccomp_default(),
        ..PodSecurityContext::default()
    });
    // No cluster DNS: the egress DNS sink is the only nameserver, and the sidecars'
    // names are pinned to their Services' addresses.
    spec.dns_policy = Some("None".to_owned());
    spec.dns_config = Some(PodDNSConfig {
        nameservers: Some(vec![facts.egress_ip.clone()]),
        searches: None,
        options: None,
    });
    let mut aliases = vec![host_alias(EGRESS_SERVICE, &facts.egress_ip)];
    if let Some(ip) = &facts.git_gate_ip {
        aliases.push(host_alias(GIT_GATE_SERVICE, ip));
    }
    if let Some(ip) = &facts.supervise_ip {
        aliases.push(host_alias(SUPERVISE_SERVICE, ip));
    }
    spec.host_aliases = Some(aliases);
    spec.runtime_class_name = (plan.runtime == Runtime::Runsc).then(|| RUNSC_CLASS.to_owned());
    Pod {
        metadata: meta(plan, AGENT_SERVICE, Some(AGENT_SERVICE)),
        spec: Some(spec),
        status: None,
    }
}

/// The RuntimeClass `runtime: runsc` asks for (gVisor's conventional name).
pub const RUNSC_CLASS: &str = "gvisor";

/// The agent's own secret env values (`secret: true` in the manifest): a Secret only
/// its pod reads. Route credentials are never in it.
pub const AGENT_ENV_SECRET: &str = "agent-env";

fn host_alias(name: &str, ip: &str) -> HostAlias {
    HostAlias {
        ip: ip.to_owned(),
        hostnames: Some(vec![name.to_owned()]),
    }
}
