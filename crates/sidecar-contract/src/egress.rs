//! The sidecar's configuration as written by the launcher to
//! `DIR/policy.json`. Pure serde types: secrets are never in this file, only
//! the names of the environment variables that hold them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name of the policy inside the config directory.
pub const POLICY_FILE_NAME: &str = "policy.json";

/// Ports an allow rule without `ports` admits.
pub const DEFAULT_PORTS: [u16; 2] = [443, 80];

/// Name under which the upstream proxy's credential (`user:password`) reaches the
/// egress sidecar: namespaced like the route credentials, so it can never collide
/// with a variable of the agent's, and never given to the agent.
pub const UPSTREAM_PROXY_SECRET_ENV: &str = "BOT_BOTTLE_UPSTREAM_PROXY";

/// Everything the egress sidecar is told by the launcher.
///
/// Fields marked "restart" are read once at start; a SIGHUP reload applies
/// everything else (allow rules, routes, DLP, SSRF, static hosts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// The bottle's slug, used in the "how to allow this" hint of a denial.
    pub bottle_slug: String,
    /// Where the proxy listens (restart). Default `0.0.0.0:3128`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The bottle CA certificate, PEM; relative paths are inside the config
    /// directory (restart). Default `ca-cert.pem`.
    #[serde(default = "default_ca_cert")]
    pub ca_cert: PathBuf,
    /// The bottle CA private key, PEM (restart). Default `ca-key.pem`.
    #[serde(default = "default_ca_key")]
    pub ca_key: PathBuf,
    /// Extra CA certificates (PEM bundle) trusted for upstream connections in
    /// addition to the system roots.
    #[serde(default)]
    pub extra_ca_bundle: Option<PathBuf>,
    /// A JSON-lines audit file, in addition to stdout (restart).
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// Which audit lines also go to stdout, the engine's log of the sidecar
    /// (restart). Default: all of them.
    #[serde(default, skip_serializing_if = "AuditStdout::is_all")]
    pub audit_stdout: AuditStdout,
    /// Names resolved to fixed addresses instead of DNS (tests and e2e use it
    /// to stand in for the internet). Still subject to SSRF checks.
    #[serde(default)]
    pub static_hosts: BTreeMap<String, IpAddr>,
    /// The allowlist; anything not matched is denied.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
    /// Credential injection routes.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Secret scanning.
    #[serde(default)]
    pub dlp: DlpConfig,
    /// The agent's own secret values, which DLP refuses to let leave (except to
    /// their hosts), like route credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guarded_env: Vec<GuardedEnv>,
    /// Blocking of internal destinations after DNS resolution.
    #[serde(default)]
    pub ssrf: SsrfConfig,
    /// Resource limits and timeouts (restart).
    #[serde(default)]
    pub limits: Limits,
    /// The DNS sink, if the sidecar should run one (restart).
    #[serde(default)]
    pub dns_sink: Option<DnsSinkConfig>,
    /// Another HTTP proxy every upstream connection goes through (with CONNECT),
    /// after the allowlist, credential routes, DLP and the SSRF check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_proxy: Option<UpstreamProxyConfig>,
}

/// A corporate (or DLP) HTTP proxy in front of the internet. The sidecar opens a
/// `CONNECT host:port` tunnel through it for every upstream connection, `https://`
/// and `http://` alike, except to hosts `no_proxy` names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamProxyConfig {
    /// The proxy's host name or address (reached without the SSRF check: a
    /// corporate proxy usually has a private address).
    pub host: String,
    /// The proxy's port.
    pub port: u16,
    /// Environment variable of the SIDECAR holding `user:password`, sent as
    /// `Proxy-Authorization: Basic ...`; none: no authentication.
    #[serde(default)]
    pub credential_env: Option<String>,
    /// Destinations reached directly, like `NO_PROXY`: `.suffix` (the domain and its
    /// subdomains), an exact host or address, or a CIDR.
    #[serde(default)]
    pub no_proxy: Vec<String>,
}

/// Which audit lines the egress sidecar writes to stdout as well as to its audit file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditStdout {
    /// Every line: where the engine's log is where audit lines are read (pod logs).
    #[default]
    All,
    /// Denials, DLP findings, reloads and DNS-sink lines; allowed requests go to the
    /// audit file only. Where the audit file is at hand (Docker's state dir), the
    /// engine would otherwise log every request a second time, and the container's
    /// size-capped log would roll its denials away under routine traffic.
    Notable,
}

impl AuditStdout {
    /// The default, left out when serialized.
    pub fn is_all(&self) -> bool {
        *self == Self::All
    }
}

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// An exact host (`api.example.com`, an IP) or `*.suffix`, which matches
    /// subdomains of `suffix` but not `suffix` itself.
    pub host: String,
    /// Allowed ports; default 443 and 80.
    #[serde(default)]
    pub ports: Option<Vec<u16>>,
    /// Allowed methods (case-insensitive); default any.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Allowed path prefixes; default any.
    #[serde(default)]
    pub path_prefixes: Option<Vec<String>>,
}

/// A credential injection: requests to `host` (+ `path_prefix`) get
/// `header: format` with `{token}` replaced by the real secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The exact host the credential belongs to.
    pub host: String,
    /// Only requests whose path starts with this get the header.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The header to set, e.g. `authorization` or `x-api-key`.
    pub header: String,
    /// The header value template, e.g. `Bearer {token}`.
    #[serde(default = "default_format")]
    pub format: String,
    /// The environment variable of the SIDECAR holding the real token.
    pub secret_env: String,
    /// The placeholder the agent holds instead of the token (at least 8
    /// characters). The route replaces it by setting `header`; a request that
    /// still carries it anywhere else (another header, the URL, the body, or
    /// any host or path the route does not cover) is refused: a placeholder
    /// never leaves the proxy.
    #[serde(default)]
    pub placeholder: Option<String>,
    /// The agent's variable that holds the placeholder (e.g.
    /// `ANTHROPIC_API_KEY`), named when a placeholder is refused; defaults to
    /// `secret_env`.
    #[serde(default)]
    pub agent_env: Option<String>,
}

/// DLP settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpConfig {
    /// Scan requests at all. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Site-specific patterns on top of the built-in credential rules.
    #[serde(default)]
    pub extra_patterns: Vec<ExtraPattern>,
    /// What a rule finding does on hosts `hosts` does not name. Default
    /// `block`.
    #[serde(default)]
    pub mode: DlpMode,
    /// Per-host modes (exact host or `*.suffix`; the most specific wins).
    /// The bottle's own secrets are refused whatever the mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<DlpHostMode>,
}

impl Default for DlpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            extra_patterns: Vec::new(),
            mode: DlpMode::Block,
            hosts: Vec::new(),
        }
    }
}

/// What a DLP rule finding does to a request to some host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DlpMode {
    /// Refuse the request (403), naming the rule.
    #[default]
    Block,
    /// Let it through and write the rule to the audit line.
    Audit,
    /// Do not run the rules (the bottle's own secrets are still refused).
    Off,
}

/// The DLP mode of one host or wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpHostMode {
    /// An exact host or `*.suffix`.
    pub host: String,
    /// Its mode.
    pub mode: DlpMode,
}

/// One of the agent's secret values, guarded by DLP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardedEnv {
    /// The agent's variable (named in findings: `bottle-secret:NAME`).
    pub name: String,
    /// Environment variable of this process holding the value.
    pub secret_env: String,
    /// Exact hosts the value may be sent to.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// An operator-supplied DLP pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraPattern {
    /// Reported in denials and the audit log.
    pub name: String,
    /// A Rust `regex` pattern, matched against bytes.
    pub regex: String,
    /// Hosts (exact or `*.suffix`) to which a match may go.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// SSRF settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsrfConfig {
    /// Block internal destinations. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// CIDRs that are reachable even though internal (e.g. the bottle's own
    /// internal network, `10.1.2.0/24`).
    #[serde(default)]
    pub exempt_cidrs: Vec<String>,
}

impl Default for SsrfConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            exempt_cidrs: Vec::new(),
        }
    }
}

/// Bounds that turn hostile input into a clean error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Concurrent client connections; more wait for a slot.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Maximum bytes of a request head (request line + headers).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Seconds for a client to send a request head.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// Seconds for DNS + TCP connect + TLS handshake upstream.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds from sending a request to the upstream's response head.
    #[serde(default = "default_response_timeout")]
    pub response_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            max_header_bytes: default_max_header_bytes(),
            header_timeout_secs: default_header_timeout(),
            connect_timeout_secs: default_connect_timeout(),
            response_timeout_secs: default_response_timeout(),
        }
    }
}

/// Where the DNS sink listens (UDP and TCP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSinkConfig {
    /// Default `0.0.0.0:53`.
    #[serde(default = "default_dns_listen")]
    pub listen: SocketAddr,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 3128))
}
fn default_dns_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 53))
}
fn default_ca_cert() -> PathBuf {
    PathBuf::from("ca-cert.pem")
}
fn default_ca_key() -> PathBuf {
    PathBuf::from("ca-key.pem")
}
fn default_format() -> String {
    "{token}".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_max_connections() -> usize {
    512
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}
fn default_header_timeout() -> u64 {
    30
}
fn default_connect_timeout() -> u64 {
    15
}
fn default_response_timeout() -> u64 {
    120
}

impl EgressConfig {
    /// Parses policy bytes; `deny_unknown_fields` makes typos an error.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Resolves a configured path against the config directory.
    pub fn resolve_path(config_dir: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            config_dir.join(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_policy_gets_safe_defaults() {
        let cfg = EgressConfig::from_json(br#"{"bottle_slug": "b1"}"#).unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:3128".parse().unwrap());
        assert!(cfg.dlp.enabled);
        assert!(cfg.ssrf.enabled);
        assert!(cfg.allow.is_empty());
        assert_eq!(cfg.ca_cert, PathBuf::from("ca-cert.pem"));
        assert_eq!(cfg.limits.max_connections, 512);
        assert!(cfg.upstream_proxy.is_none());
        let written = serde_json::to_string(&cfg).unwrap();
        assert!(!written.contains("upstream_proxy"), "{written}");
    }

    #[test]
    fn full_policy_round_trips() {
        let json = br#"{
            "bottle_slug": "b1",
            "listen": "127.0.0.1:0",
            "static_hosts": {"upstream.test": "127.0.0.1"},
            "allow": [{"host": "*.example.com", "ports": [443], "methods": ["GET"], "path_prefixes": ["/v1/"]}],
            "routes": [{"host": "api.example.com", "header": "authorization", "format": "Bearer {token}",
                        "secret_env": "EXAMPLE_TOKEN", "placeholder": "placeholder-123",
                        "agent_env": "EXAMPLE_API_KEY"}],
            "dlp": {"enabled": true, "extra_patterns": [{"name": "internal", "regex": "ACME-[0-9]{8}", "allowed_hosts": ["acme.test"]}]},
            "ssrf": {"enabled": true, "exempt_cidrs": ["10.0.0.0/8"]},
            "upstream_proxy": {"host": "proxy.corp.test", "port": 3128,
                               "credential_env": "BOT_BOTTLE_UPSTREAM_PROXY",
                               "no_proxy": [".internal.test", "10.0.0.0/8"]}
        }"#;
        let cfg = EgressConfig::from_json(json).unwrap();
        assert_eq!(cfg.routes[0].secret_env, "EXAMPLE_TOKEN");
        assert_eq!(cfg.routes[0].agent_env.as_deref(), Some("EXAMPLE_API_KEY"));
        assert_eq!(cfg.allow[0].ports, Some(vec![443]));
        assert_eq!(cfg.upstream_proxy.as_ref().unwrap().port, 3128);
        let again = EgressConfig::from_json(&serde_json::to_vec(&cfg).unwrap()).unwrap();
        assert_eq!(cfg, again);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = EgressConfig::from_json(br#"{"bottle_slug": "b1", "alow": []}"#).unwrap_err();
        assert!(err.to_string().contains("alow"), "{err}");
        assert!(
            EgressConfig::from_json(
                br#"{"bottle_slug": "b", "allow": [{"host": "a", "port": [1]}]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn relative_paths_resolve_inside_the_config_dir() {
        let dir = Path::new("/cfg");
        assert_eq!(
            EgressConfig::resolve_path(dir, Path::new("ca-cert.pem")),
            PathBuf::from("/cfg/ca-cert.pem")
        );
        assert_eq!(
            EgressConfig::resolve_path(dir, Path::new("/etc/ca.pem")),
            PathBuf::from("/etc/ca.pem")
        );
    }
}
