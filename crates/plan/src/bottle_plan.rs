//! Typed plans: what the manifest asks for one agent's bottle, fully validated.
//!
//! Launch-time facts (network names, CIDRs, CA paths) are not here: they belong to the
//! backend's `LaunchFacts`, so a plan is the same on every machine and in every dry run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

pub use crate::manifest::{DlpMode, Runtime};
use crate::profile::AgentProfile;
use crate::rules::HostPattern;
use crate::secret::Secret;

/// Everything needed to launch one agent in its bottle.
#[derive(Clone, Debug, Serialize)]
pub struct BottlePlan {
    /// Unique name of this launch: compose project, labels, state dir.
    pub slug: Slug,
    /// Name of the bottle definition in the manifest.
    pub bottle: String,
    /// The agent container.
    pub agent: AgentPlan,
    /// Where the agent image comes from.
    pub image: ImagePlan,
    /// OCI runtime of the agent container.
    pub runtime: Runtime,
    /// The agent's environment.
    pub env: EnvPlan,
    /// The egress sidecar's policy.
    pub egress: EgressPlan,
    /// The git gate sidecar's upstreams (empty: no gate).
    pub git_gate: GitGatePlan,
    /// The approval channel.
    pub supervise: SupervisePlan,
    /// Resource limits of the agent container.
    pub limits: LimitsPlan,
}

impl BottlePlan {
    /// The size of the agent's `/tmp` tmpfs: the disk limit, unless the project lives
    /// under `/tmp` (an empty tmpfs over it would hide the working directory, which
    /// the runtime would then create as root).
    pub fn tmp_tmpfs_bytes(&self) -> Option<u64> {
        self.limits
            .disk_bytes
            .filter(|_| !self.agent.workdir.starts_with("/tmp"))
    }

    /// Hosts the agent program needs that the allowlist does not let through (none
    /// when `ANTHROPIC_BASE_URL` points the program elsewhere): `start` warns of them.
    pub fn missing_profile_hosts(&self) -> Vec<&crate::profile::NeededHost> {
        if self.env.vars.contains_key("ANTHROPIC_BASE_URL") {
            return Vec::new();
        }
        self.agent
            .profile
            .needs_hosts
            .iter()
            .filter(|needed| {
                !self.egress.allow.iter().any(|rule| {
                    rule.host.matches(&needed.host) && rule.ports.contains(&needed.port)
                })
            })
            .collect()
    }
}

/// A launch's unique name: `<agent>-<6 hex digits>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Slug(String);

impl Slug {
    /// Makes the slug of `agent` from caller-supplied entropy (tests pass a constant).
    pub fn new(agent: &str, entropy: u64) -> Self {
        // splitmix64 finalizer: nearby seeds (clock ticks) give unrelated suffixes.
        let mut z = entropy.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Self(format!("{agent}-{:06x}", z & 0xff_ffff))
    }

    /// The slug as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Slug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The agent container.
#[derive(Clone, Debug, Serialize)]
pub struct AgentPlan {
    /// Agent name from the manifest.
    pub name: String,
    /// Command run in the container.
    pub command: Vec<String>,
    /// Prompt file on the host, copied in at provisioning.
    pub prompt_file: Option<PathBuf>,
    /// Skills directories on the host, copied in at provisioning.
    pub skills_dirs: Vec<PathBuf>,
    /// Container name, and whether the user pinned it (no suffix retries then).
    pub container_name: String,
    /// Whether `container_name` was pinned in the manifest.
    pub container_name_pinned: bool,
    /// Working directory inside the container: the user's project path.
    pub workdir: PathBuf,
    /// What provisioning does for the program (first-run state, settings, sessions).
    pub profile: AgentProfile,
}

/// Where the agent image comes from.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ImagePlan {
    /// Build from a Dockerfile.
    Build {
        /// The Dockerfile on the host.
        dockerfile: PathBuf,
        /// The build context on the host.
        context: PathBuf,
        /// Tag given to the built image.
        tag: String,
    },
    /// Use an image the engine already has.
    Existing {
        /// The image reference.
        reference: String,
    },
}

/// One environment variable of the agent container.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum EnvVar {
    /// Written into the compose file.
    Literal(String),
    /// Forwarded through the compose process environment only.
    Secret(Secret),
}

/// The agent's environment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EnvPlan {
    /// Variables by name.
    pub vars: BTreeMap<String, EnvVar>,
}

impl EnvPlan {
    /// Every secret value of the agent's environment, by name.
    pub fn secrets(&self) -> impl Iterator<Item = (&str, &Secret)> {
        self.vars.iter().filter_map(|(name, var)| match var {
            EnvVar::Secret(secret) => Some((name.as_str(), secret)),
            EnvVar::Literal(_) => None,
        })
    }
}

/// The egress sidecar's policy.
#[derive(Clone, Debug, Serialize)]
pub struct EgressPlan {
    /// Allowed destinations; everything else is denied.
    pub allow: Vec<AllowRulePlan>,
    /// Credential routes.
    pub routes: Vec<RoutePlan>,
    /// Secret-exfiltration scanning.
    pub dlp: DlpPlan,
    /// SSRF blocking.
    pub ssrf: SsrfPlan,
    /// The agent's own secret values DLP refuses to let leave.
    pub guarded_env: Vec<GuardedEnvPlan>,
    /// The corporate proxy upstream connections go through (`None`: direct).
    pub upstream_proxy: Option<UpstreamProxyPlan>,
}

/// A corporate HTTP proxy the egress sidecar tunnels through.
#[derive(Clone, Debug, Serialize)]
pub struct UpstreamProxyPlan {
    /// Lowercase host name or address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Host variable the credential came from.
    pub credentials_env: Option<String>,
    /// `user:password`: only the egress sidecar's process environment receives it.
    pub credentials: Option<Secret>,
    /// Normalized exceptions: `.suffix`, exact hosts or addresses, CIDRs.
    pub no_proxy: Vec<String>,
}

/// A secret value of the agent's environment, guarded by DLP like a credential.
#[derive(Clone, Debug, Serialize)]
pub struct GuardedEnvPlan {
    /// The agent's variable.
    pub var: String,
    /// Its value: only the egress sidecar's process environment receives it.
    pub value: Secret,
    /// Exact hosts it may be sent to.
    pub may_send_to: Vec<String>,
}

/// One allowed destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AllowRulePlan {
    /// Host pattern.
    pub host: HostPattern,
    /// Allowed ports.
    pub ports: Vec<u16>,
    /// Allowed methods (`None`: any).
    pub methods: Option<Vec<String>>,
    /// Allowed path prefixes (`None`: any).
    pub paths: Option<Vec<String>>,
}

/// One credential route.
#[derive(Clone, Debug, Serialize)]
pub struct RoutePlan {
    /// Exact host.
    pub host: String,
    /// Path prefix (`None`: all paths).
    pub path_prefix: Option<String>,
    /// Lowercase header name.
    pub header: String,
    /// Value template containing `{token}`.
    pub format: String,
    /// Host variable the token came from (also the name it is forwarded under).
    pub token_env: String,
    /// The real credential: only the egress sidecar receives it.
    pub token: Secret,
    /// Agent variable holding the placeholder.
    pub agent_env: String,
    /// What the agent holds instead of the credential.
    pub placeholder: String,
}

/// DLP settings.
#[derive(Clone, Debug, Serialize)]
pub struct DlpPlan {
    /// Whether scanning is on.
    pub enabled: bool,
    /// Extra patterns.
    pub patterns: Vec<DlpPatternPlan>,
    /// What a rule finding does on hosts `hosts` does not name.
    pub mode: DlpMode,
    /// Per-host modes.
    pub hosts: Vec<DlpHostPlan>,
}

/// The DLP mode of one destination.
#[derive(Clone, Debug, Serialize)]
pub struct DlpHostPlan {
    /// The host or wildcard.
    pub host: HostPattern,
    /// Its mode.
    pub mode: DlpMode,
}

/// One user DLP pattern.
#[derive(Clone, Debug, Serialize)]
pub struct DlpPatternPlan {
    /// Name for the audit log.
    pub name: String,
    /// Validated regex source.
    pub regex: String,
    /// Hosts the pattern may go to.
    pub allowed_hosts: Vec<HostPattern>,
}

/// SSRF settings.
#[derive(Clone, Debug, Serialize)]
pub struct SsrfPlan {
    /// Whether blocking is on.
    pub enabled: bool,
    /// Exempt ranges from the manifest (the bottle's internal CIDR is added at launch).
    pub exempt: Vec<String>,
}

/// The git gate's upstreams.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GitGatePlan {
    /// Upstreams in manifest order; empty means the bottle has no git gate.
    pub upstreams: Vec<UpstreamPlan>,
}

impl GitGatePlan {
    /// Whether the bottle runs a git gate at all.
    pub fn enabled(&self) -> bool {
        !self.upstreams.is_empty()
    }
}

/// One upstream behind the gate.
#[derive(Clone, Debug, Serialize)]
pub struct UpstreamPlan {
    /// Name in the gate URL.
    pub name: String,
    /// SSH URL.
    pub url: String,
    /// Private key file on the host.
    pub key_path: PathBuf,
    /// known_hosts file on the host.
    pub known_hosts_path: PathBuf,
    /// Ref patterns the agent may push.
    pub push_refs: Vec<String>,
    /// Non-fast-forward pushes allowed.
    pub force_push: bool,
    /// Deletions allowed.
    pub allow_delete: bool,
    /// Fetch only.
    pub read_only: bool,
}

/// The approval channel.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SupervisePlan {
    /// Whether the supervise sidecar runs.
    pub enabled: bool,
}

/// Resource limits of the agent container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LimitsPlan {
    /// CPUs.
    pub cpus: Option<f64>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// Maximum processes.
    pub pids: Option<u32>,
    /// Disk in bytes: the size of `/tmp` and, where the engine can, of the writable layer.
    pub disk_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_is_deterministic_and_spread() {
        assert_eq!(Slug::new("impl", 1), Slug::new("impl", 1));
        assert_ne!(Slug::new("impl", 1), Slug::new("impl", 2));
        let s = Slug::new("impl", 42);
        assert!(s.as_str().starts_with("impl-"));
        assert_eq!(s.as_str().len(), "impl-".len() + 6);
    }
}
