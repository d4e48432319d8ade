//! The raw manifest: serde types that mirror `bottle.yaml` exactly.
//!
//! Nothing here is validated beyond shape; [`crate::planner`] turns these into plans and
//! reports every semantic problem. Keys are `snake_case`, like compose's own.
//! Unknown keys are errors (`deny_unknown_fields`), so a typo never silently disables
//! a protection.

use std::collections::BTreeMap;
use std::fmt;

pub use crate::profile::AgentKind;
use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::spanned::Spanned;

/// A whole manifest: sandbox definitions and who runs in them.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "bot-bottle manifest")]
pub struct Manifest {
    /// Sandbox definitions, by name.
    #[serde(default)]
    pub bottles: BTreeMap<Spanned<String>, Bottle>,
    /// Agents, by name: each runs in one bottle.
    #[serde(default)]
    pub agents: BTreeMap<Spanned<String>, Agent>,
}

/// One sandbox definition.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bottle {
    /// Where the agent image comes from.
    pub image: Spanned<Image>,
    /// Container runtime: `runc` (default) or `runsc` (gVisor).
    #[serde(default)]
    pub runtime: Option<Spanned<Runtime>>,
    /// Environment of the agent container.
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, Spanned<EnvValue>>,
    /// A dotenv file (relative to the manifest) whose entries are all treated as secrets.
    #[serde(default)]
    pub env_file: Option<Spanned<String>>,
    /// What may leave the bottle, and with which credentials.
    #[serde(default)]
    pub egress: Egress,
    /// Git upstreams reachable through the git gate.
    #[serde(default)]
    pub git: Git,
    /// Whether the approval channel (supervise sidecar) is on.
    #[serde(default)]
    pub supervise: Option<Spanned<bool>>,
    /// Resource limits of the agent container.
    #[serde(default)]
    pub limits: Limits,
}

/// The agent image: either a Dockerfile to build or an existing image reference.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Path of a Dockerfile, relative to the manifest.
    #[serde(default)]
    pub dockerfile: Option<Spanned<String>>,
    /// Build context, relative to the manifest (default: the Dockerfile's directory).
    #[serde(default)]
    pub context: Option<Spanned<String>>,
    /// An image reference already present in the engine (e.g. `bot-bottle/agent:latest`).
    #[serde(default, rename = "ref")]
    pub reference: Option<Spanned<String>>,
}

/// OCI runtime of the agent container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// The engine's default runtime.
    #[default]
    Runc,
    /// gVisor: a user-space kernel between the agent and the host.
    Runsc,
}

/// An environment value: a plain string (with `${HOST_VAR}` interpolation) or a table
/// that can mark it secret.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(with = "EnvValueSchema")]
pub enum EnvValue {
    /// `NAME: value`
    Plain(String),
    /// `NAME: { value: ..., secret: true, may_send_to: [host] }`
    Detailed {
        /// The value, with `${HOST_VAR}` interpolation.
        value: String,
        /// Secret values go only through the compose process environment, never a file,
        /// and DLP refuses requests that carry them.
        #[serde(default)]
        secret: bool,
        /// Hosts a secret value may be sent to (DLP lets it through to these alone).
        #[serde(default)]
        may_send_to: Vec<String>,
    },
}

/// Schema of [`EnvValue`]: scalars are accepted and read as text.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum EnvValueSchema {
    Text(String),
    Number(f64),
    Flag(bool),
    Detailed {
        /// The value, with `${HOST_VAR}` interpolation.
        value: String,
        /// Secret values go only through the compose process environment, never a file,
        /// and DLP refuses requests that carry them.
        #[serde(default)]
        secret: bool,
        /// Hosts a secret value may be sent to (DLP lets it through to these alone).
        #[serde(default)]
        may_send_to: Vec<String>,
    },
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvValueVisitor;
        impl<'de> Visitor<'de> for EnvValueVisitor {
            type Value = EnvValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a table with `value`, `secret` and `may_send_to`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvValue, E> {
                Ok(EnvValue::Plain(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<EnvValue, E> {
                Ok(EnvValue::Plain(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EnvValue, E> {
                Ok(EnvValue::Plain(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EnvValue, E> {
                Ok(EnvValue::Plain(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<EnvValue, E> {
                Ok(EnvValue::Plain(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EnvValue, A::Error> {
                const FIELDS: &[&str] = &["value", "secret", "may_send_to"];
                let mut value = None;
                let mut secret = None;
                let mut may_send_to = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "value" if value.is_none() => value = Some(map.next_value::<String>()?),
                        "secret" if secret.is_none() => secret = Some(map.next_value::<bool>()?),
                        "may_send_to" if may_send_to.is_none() => {
                            may_send_to = Some(map.next_value::<Vec<String>>()?)
                        }
                        "value" => return Err(de::Error::duplicate_field("value")),
                        "secret" => return Err(de::Error::duplicate_field("secret")),
                        "may_send_to" => return Err(de::Error::duplicate_field("may_send_to")),
                        other => return Err(de::Error::unknown_field(other, FIELDS)),
                    }
                }
                let value = value.ok_or_else(|| de::Error::missing_field("value"))?;
                Ok(EnvValue::Detailed {
                    value,
                    secret: secret.unwrap_or(false),
                    may_send_to: may_send_to.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_any(EnvValueVisitor)
    }
}

impl EnvValue {
    /// The value as written, before interpolation.
    pub fn raw(&self) -> &str {
        match self {
            Self::Plain(v) | Self::Detailed { value: v, .. } => v,
        }
    }

    /// Whether the value must stay out of every file.
    pub fn is_secret(&self) -> bool {
        matches!(self, Self::Detailed { secret: true, .. })
    }

    /// Hosts the value may be sent to despite DLP.
    pub fn may_send_to(&self) -> &[String] {
        match self {
            Self::Plain(_) => &[],
            Self::Detailed { may_send_to, .. } => may_send_to,
        }
    }
}

/// Egress policy of a bottle. Default deny: only what `allow` lists leaves.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    /// Allowed destinations.
    #[serde(default)]
    pub allow: Vec<Spanned<AllowRule>>,
    /// Credential injection: the agent holds a placeholder, the proxy sets the real header.
    #[serde(default)]
    pub routes: Vec<Spanned<Route>>,
    /// Secret-exfiltration scanning.
    #[serde(default)]
    pub dlp: Dlp,
    /// Blocking of requests to private, loopback, link-local and metadata addresses.
    #[serde(default)]
    pub ssrf: Ssrf,
    /// Another HTTP proxy (a corporate one) the egress sidecar reaches the internet
    /// through, after its own allowlist, credential routes, DLP and SSRF checks.
    #[serde(default)]
    pub upstream_proxy: Option<Spanned<UpstreamProxy>>,
}

/// A corporate HTTP proxy in front of the internet: the sidecar opens a `CONNECT`
/// tunnel through it for every upstream connection (`https://` and `http://`).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamProxy {
    /// `http://host:port` (no credentials, no path).
    pub url: Spanned<String>,
    /// Host environment variable holding `user:password`, sent to the proxy as
    /// `Proxy-Authorization: Basic ...` by the sidecar alone (default: no
    /// authentication).
    #[serde(default)]
    pub credentials_env: Option<Spanned<String>>,
    /// Destinations reached directly, like `NO_PROXY`: `.example.com` (that domain
    /// and its subdomains), an exact host or address, or a CIDR such as `10.0.0.0/8`.
    #[serde(default)]
    pub no_proxy: Vec<Spanned<String>>,
}

/// One allowed destination.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// `api.example.com` or `*.example.com` (subdomains only).
    pub host: Spanned<String>,
    /// Allowed ports (default: 443 and 80).
    #[serde(default)]
    pub ports: Option<Vec<Spanned<u16>>>,
    /// Allowed HTTP methods (default: any).
    #[serde(default)]
    pub methods: Option<Vec<Spanned<String>>>,
    /// Allowed path prefixes, each starting with `/` (default: any).
    #[serde(default)]
    pub paths: Option<Vec<Spanned<String>>>,
}

/// A credential route: for requests to `host` (under `path_prefix`), the proxy sets
/// `header` to `format` with `{token}` replaced by the host's `token_env` value.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Exact host the credential is for; must be allowed by `allow`.
    pub host: Spanned<String>,
    /// Only requests under this path get the credential (default: all).
    #[serde(default)]
    pub path_prefix: Option<Spanned<String>>,
    /// Header to set, e.g. `authorization` or `x-api-key`.
    pub header: Spanned<String>,
    /// Header value template; must contain `{token}` (default: `{token}`).
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    /// Host environment variable holding the real credential.
    pub token_env: Spanned<String>,
    /// Agent environment variable that receives the placeholder (default: `token_env`).
    #[serde(default)]
    pub agent_env: Option<Spanned<String>>,
    /// Placeholder the agent sees (default: one shaped like the real token).
    #[serde(default)]
    pub placeholder: Option<Spanned<String>>,
    /// Skip the route (instead of failing) when `token_env` is not set on the host.
    #[serde(default)]
    pub optional: bool,
}

/// Data-loss prevention settings.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dlp {
    /// On by default.
    #[serde(default)]
    pub enabled: Option<Spanned<bool>>,
    /// Extra patterns on top of the built-in credential set.
    #[serde(default)]
    pub patterns: Vec<Spanned<DlpPattern>>,
    /// What a rule finding does on hosts `hosts` does not name: `block` (the
    /// default), `audit` (logged, let through) or `off`. The bottle's own
    /// secrets are refused whatever the mode.
    #[serde(default)]
    pub mode: Option<Spanned<DlpMode>>,
    /// Per-host modes (exact host or `*.suffix`; the most specific wins).
    #[serde(default)]
    pub hosts: Vec<Spanned<DlpHost>>,
}

/// What a DLP rule finding does to a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DlpMode {
    /// Refuse the request, naming the rule.
    #[default]
    Block,
    /// Let the request through and write the rule to the audit log.
    Audit,
    /// Do not run the rules (the bottle's own secrets are still refused).
    Off,
}

/// The DLP mode of one destination.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DlpHost {
    /// `api.example.com` or `*.example.com` (subdomains only).
    pub host: Spanned<String>,
    /// `block`, `audit` or `off`.
    pub mode: Spanned<DlpMode>,
}

/// A user-defined DLP pattern.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DlpPattern {
    /// Name reported in the audit log (never the match itself).
    pub name: Spanned<String>,
    /// A Rust `regex` expression.
    pub regex: Spanned<String>,
    /// Hosts this pattern may be sent to.
    #[serde(default)]
    pub allowed_hosts: Vec<Spanned<String>>,
}

/// SSRF protection settings.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ssrf {
    /// On by default.
    #[serde(default)]
    pub enabled: Option<Spanned<bool>>,
    /// Address ranges (CIDR) exempt from blocking; the bottle's own network always is.
    #[serde(default)]
    pub exempt: Vec<Spanned<String>>,
}

/// Git upstreams of a bottle.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Git {
    /// Upstream repositories, reachable by the agent as `http://git-gate:PORT/<name>.git`.
    #[serde(default)]
    pub upstreams: Vec<Spanned<Upstream>>,
}

/// One upstream repository behind the git gate.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Name the agent uses in the gate URL.
    pub name: Spanned<String>,
    /// SSH URL: `ssh://git@host[:port]/path.git` or `git@host:path.git`.
    pub url: Spanned<String>,
    /// Private key file (held only by the gate).
    pub key: Spanned<String>,
    /// known_hosts file; unknown host keys are never accepted.
    pub known_hosts: Spanned<String>,
    /// Ref patterns the agent may push, e.g. `refs/heads/agent/*` (default: none).
    #[serde(default)]
    pub push: Vec<Spanned<String>>,
    /// Whether non-fast-forward pushes are allowed (default: no).
    #[serde(default)]
    pub force_push: Option<Spanned<bool>>,
    /// Whether ref deletions are allowed (default: no).
    #[serde(default)]
    pub allow_delete: Option<Spanned<bool>>,
    /// Fetch only (default: no).
    #[serde(default)]
    pub read_only: Option<Spanned<bool>>,
}

/// Resource limits of the agent container.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// CPUs, e.g. `2` or `1.5`.
    #[serde(default)]
    pub cpus: Option<Spanned<f64>>,
    /// Memory, e.g. `4g`, `512m`, or a number of bytes.
    #[serde(default)]
    pub memory: Option<Spanned<Scalar>>,
    /// Maximum number of processes.
    #[serde(default)]
    pub pids: Option<Spanned<u32>>,
    /// Disk the agent may fill, e.g. `10g`: `/tmp` becomes a tmpfs of this size (in
    /// memory), and the writable layer gets a quota where the engine supports one.
    #[serde(default)]
    pub disk: Option<Spanned<Scalar>>,
}

/// Who runs in a bottle.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// Name of the bottle this agent runs in.
    pub bottle: Spanned<String>,
    /// Prompt file copied into the agent container (relative to the manifest).
    #[serde(default)]
    pub prompt: Option<Spanned<String>>,
    /// Skills directories copied into the agent container (relative to the manifest).
    #[serde(default)]
    pub skills: Vec<Spanned<String>>,
    /// Command run in the agent container (default: `["claude"]`).
    #[serde(default)]
    pub command: Option<Spanned<Vec<String>>>,
    /// Pinned container name: no numeric suffix is added on conflicts.
    #[serde(default)]
    pub container_name: Option<Spanned<String>>,
    /// Which program runs: `claude-code` or `generic` (default: `claude-code` when the
    /// command's program is `claude`, else `generic`). Decides what is provisioned.
    #[serde(default)]
    pub kind: Option<Spanned<AgentKind>>,
}

/// A scalar read as text whatever its YAML type (`memory: 4g` and `memory: 1073741824`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
#[schemars(with = "ScalarSchema")]
pub struct Scalar(pub String);

/// Schema of [`Scalar`]: a string or an integer.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ScalarSchema {
    Text(String),
    Number(u64),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}
