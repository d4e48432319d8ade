//! One loaded policy version: the parsed config compiled into the decision
//! engines, the credential routes with their secret values, the placeholder
//! guard (one small automaton over the routes' placeholders, used whatever
//! the DLP setting: a placeholder never leaves the proxy), and the pooled
//! upstream client (a new pool per version, so a reload also retires
//! connections made under the old SSRF settings). Requests take one `Arc`
//! snapshot of this and finish under it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use crate::config::{EgressConfig, POLICY_FILE_NAME};
use crate::dlp::{DlpEngine, KnownSecret};
use crate::error::Error;
use crate::path::normalize_prefix;
use crate::placeholder::{GuardedRoute, PlaceholderGuard};
use crate::policy::{AllowPolicy, normalize_host};
use crate::scrub::{ResponseScrubber, ScrubSecret};
use crate::secret::SecretValue;
use crate::ssrf::SsrfGuard;
use crate::upstream::{UpstreamClient, build_client, upstream_tls_config};
use crate::upstream_proxy::{ProxyConfigError, UpstreamProxy};

/// Where route secrets come from: the sidecar's own environment in
/// production, a map in tests (setting env vars is `unsafe` in Rust 2024).
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// `std::env::var`.
    ProcessEnv,
    /// A fixed map from variable name to value.
    Map(BTreeMap<String, String>),
}

impl SecretSource {
    /// The value of variable `name`, if set.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        match self {
            Self::ProcessEnv => std::env::var(name).ok(),
            Self::Map(map) => map.get(name).cloned(),
        }
    }
}

/// A credential route ready to apply.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    /// Normalized host.
    pub host: String,
    /// Optional path prefix.
    pub path_prefix: Option<String>,
    /// The header to set.
    pub header: HeaderName,
    /// The full header value (format with the token filled in).
    pub value: SecretValue,
}

impl CompiledRoute {
    /// Whether this route applies to a request.
    pub fn applies_to(&self, host: &str, path: &str) -> bool {
        self.host == host
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }

    /// The header value, marked sensitive so hyper never logs it.
    pub fn header_value(&self) -> Option<HeaderValue> {
        let mut value = HeaderValue::from_str(self.value.expose()).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// A compiled, validated policy version.
pub struct LivePolicy {
    /// The config it came from.
    pub config: EgressConfig,
    /// Hex SHA-256 of the policy file bytes.
    pub version: String,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
    /// The allowlist.
    pub allow: AllowPolicy,
    /// DLP rules.
    pub dlp: DlpEngine,
    /// The bottle's placeholders: refused wherever a route did not replace them.
    pub placeholders: PlaceholderGuard,
    /// Credential routes.
    pub routes: Vec<CompiledRoute>,
    /// Scrubs the routes' real secrets from their hosts' responses ([`crate::scrub`]).
    pub scrub: Arc<ResponseScrubber>,
    /// The pooled upstream clients (SSRF-checked connector), one per shard
    /// ([`crate::shard`]): see [`LivePolicy::client`].
    pub clients: Vec<UpstreamClient>,
}

impl LivePolicy {
    /// The calling shard's pooled upstream client: its connections are driven
    /// on this thread, so a request never waits on another thread's task.
    pub fn client(&self) -> &UpstreamClient {
        &self.clients[crate::shard::current() % self.clients.len()]
    }
}

impl std::fmt::Debug for LivePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivePolicy")
            .field("version", &self.version)
            .field("loaded_at", &self.loaded_at)
            .finish_non_exhaustive()
    }
}

/// The path of the policy file in a config directory.
pub fn policy_path(config_dir: &Path) -> PathBuf {
    config_dir.join(POLICY_FILE_NAME)
}

/// The version a policy file's bytes run as: hex SHA-256, what `/status`
/// reports and the launcher waits for.
pub fn policy_version(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads the bytes of `DIR/policy.json` (through symlinks: a Kubernetes
/// ConfigMap mount makes it one).
pub fn read_policy(config_dir: &Path) -> Result<Vec<u8>, Error> {
    let path = policy_path(config_dir);
    std::fs::read(&path).map_err(|source| Error::ReadPolicy { path, source })
}

/// Reads `DIR/policy.json`, validates and compiles it for `shards` shards
/// (one pooled upstream client each).
pub fn load_policy(
    config_dir: &Path,
    secrets: &SecretSource,
    shards: usize,
) -> Result<LivePolicy, Error> {
    policy_from_bytes(config_dir, &read_policy(config_dir)?, secrets, shards)
}

/// Validates and compiles policy file content already read from `DIR`
/// (relative paths in it resolve there), so the version is that of exactly
/// these bytes.
pub fn policy_from_bytes(
    config_dir: &Path,
    bytes: &[u8],
    secrets: &SecretSource,
    shards: usize,
) -> Result<LivePolicy, Error> {
    let path = policy_path(config_dir);
    let config = EgressConfig::from_json(bytes).map_err(|source| Error::ParsePolicy {
        path: path.clone(),
        source,
    })?;
    compile_policy(config_dir, &path, bytes, config, secrets, shards)
}

fn compile_policy(
    config_dir: &Path,
    path: &Path,
    bytes: &[u8],
    config: EgressConfig,
    secrets: &SecretSource,
    shards: usize,
) -> Result<LivePolicy, Error> {
    let invalid = |reason: String| Error::InvalidPolicy {
        path: path.to_path_buf(),
        reason,
    };
    if config.bottle_slug.trim().is_empty() {
        return Err(invalid("bottle_slug is empty".to_owned()));
    }
    let allow = AllowPolicy::from_config(&config).map_err(invalid)?;
    let guard = SsrfGuard::new(config.ssrf.enabled, &config.ssrf.exempt_cidrs)
        .map_err(|e| invalid(format!("ssrf.exempt_cidrs: {e}")))?;

    let mut routes = Vec::new();
    let mut known = Vec::new();
    let mut guarded = Vec::new();
    let mut scrub_secrets = Vec::new();
    for (index, route) in config.routes.iter().enumerate() {
        let host = normalize_host(&route.host);
        if host.is_empty() || host.contains('*') {
            return Err(invalid(format!(
                "routes[{index}]: host must be an exact host name"
            )));
        }
        let header = HeaderName::from_bytes(route.header.as_bytes()).map_err(|_| {
            invalid(format!(
                "routes[{index}]: {:?} is not a header name",
                route.header
            ))
        })?;
        if !route.format.contains("{token}") {
            return Err(invalid(format!(
                "routes[{index}]: format must contain {{token}}"
            )));
        }
        let token = secrets
            .get(&route.secret_env)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::MissingSecretEnv {
                host: host.clone(),
                var: route.secret_env.clone(),
            })?;
        // Requests are matched in normal form: so is the prefix (`/%7Eme/` is `/~me/`).
        let path_prefix = route
            .path_prefix
            .as_deref()
            .map(normalize_prefix)
            .transpose()
            .map_err(|e| invalid(format!("routes[{index}]: {e}")))?;
        let value = SecretValue::new(route.format.replace("{token}", &token));
        if HeaderValue::from_str(value.expose()).is_err() {
            return Err(invalid(format!(
                "routes[{index}]: the value of {} is not a valid header value",
                route.secret_env
            )));
        }
        guarded.push(GuardedRoute {
            var: route
                .agent_env
                .clone()
                .unwrap_or_else(|| route.secret_env.clone()),
            placeholder: route.placeholder.clone(),
            host: host.clone(),
            path_prefix: path_prefix.clone(),
            header: header.as_str().to_owned(),
        });
        routes.push(CompiledRoute {
            host: host.clone(),
            path_prefix,
            header,
            value,
        });
        scrub_secrets.push(ScrubSecret {
            name: route.secret_env.clone(),
            value: SecretValue::new(token.clone()),
            placeholder: route.placeholder.clone(),
            host: host.clone(),
        });
        known.push(KnownSecret {
            name: route.secret_env.clone(),
            value: SecretValue::new(token),
            placeholder: route.placeholder.clone(),
            host,
        });
    }
    // The agent's own secrets: no host receives them but those named (a value that
    // may go nowhere is keyed to no host at all).
    for guarded in &config.guarded_env {
        let value = secrets
            .get(&guarded.secret_env)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::MissingSecretEnv {
                host: guarded.allowed_hosts.join(", "),
                var: guarded.secret_env.clone(),
            })?;
        let hosts: Vec<String> = if guarded.allowed_hosts.is_empty() {
            vec![String::new()]
        } else {
            guarded
                .allowed_hosts
                .iter()
                .map(|h| normalize_host(h))
                .collect()
        };
        for host in hosts {
            known.push(KnownSecret {
                name: guarded.name.clone(),
                value: SecretValue::new(value.clone()),
                placeholder: None,
                host,
            });
        }
    }
    let dlp = DlpEngine::new(&config.dlp, &known).map_err(invalid)?;
    let placeholders = PlaceholderGuard::new(guarded).map_err(invalid)?;
    let scrub = Arc::new(ResponseScrubber::new(&scrub_secrets).map_err(invalid)?);

    let static_hosts: BTreeMap<String, std::net::IpAddr> = config
        .static_hosts
        .iter()
        .map(|(name, ip)| (normalize_host(name), *ip))
        .collect();
    let bundle = config
        .extra_ca_bundle
        .as_deref()
        .map(|p| EgressConfig::resolve_path(config_dir, p));
    let tls = upstream_tls_config(bundle.as_deref())?;
    let proxy = config
        .upstream_proxy
        .as_ref()
        .map(|proxy| {
            UpstreamProxy::from_config(proxy, secrets).map_err(|e| match e {
                ProxyConfigError::MissingCredential { var } => Error::MissingSecretEnv {
                    host: format!("upstream proxy {}", proxy.host),
                    var,
                },
                other => invalid(other.to_string()),
            })
        })
        .transpose()?;
    let tls = Arc::new(tls);
    let clients = (0..shards.max(1))
        .map(|_| {
            build_client(
                tls.clone(),
                static_hosts.clone(),
                guard.clone(),
                proxy.clone(),
                Duration::from_secs(config.limits.connect_timeout_secs),
                config.limits.max_connections,
            )
        })
        .collect();
    Ok(LivePolicy {
        version: policy_version(bytes),
        loaded_at: audit_lines::rfc3339_utc(std::time::SystemTime::now()),
        config,
        allow,
        dlp,
        placeholders,
        routes,
        scrub,
        clients,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_policy(dir: &Path, json: &str) {
        std::fs::write(policy_path(dir), json).unwrap();
    }

    fn secrets() -> SecretSource {
        SecretSource::Map(BTreeMap::from([(
            "TOK".to_owned(),
            "real-token-value-123".to_owned(),
        )]))
    }

    #[tokio::test]
    async fn version_is_the_sha256_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"bottle_slug": "b1"}"#;
        write_policy(dir.path(), json);
        let live = load_policy(dir.path(), &secrets(), 1).unwrap();
        assert_eq!(live.version, hex::encode(Sha256::digest(json.as_bytes())));
    }

    #[tokio::test]
    async fn routes_fill_in_the_secret_and_never_show_it() {
        let dir = tempfile::tempdir().unwrap();
        write_policy(
            dir.path(),
            r#"{"bottle_slug": "b1", "routes": [{"host": "API.test", "header": "authorization",
                "format": "Bearer {token}", "secret_env": "TOK"}]}"#,
        );
        let live = load_policy(dir.path(), &secrets(), 1).unwrap();
        assert_eq!(live.routes[0].value.expose(), "Bearer real-token-value-123");
        assert!(live.routes[0].applies_to("api.test", "/x"));
        assert!(!format!("{:?}", live.routes).contains("real-token"));
    }

    #[tokio::test]
    async fn route_prefixes_are_matched_in_normal_form() {
        let dir = tempfile::tempdir().unwrap();
        write_policy(
            dir.path(),
            r#"{"bottle_slug": "b1", "routes": [{"host": "api.test", "header": "x-key",
                "path_prefix": "/%7Eme/", "secret_env": "TOK"}]}"#,
        );
        let live = load_policy(dir.path(), &secrets(), 1).unwrap();
        assert_eq!(live.routes[0].path_prefix.as_deref(), Some("/~me/"));
        write_policy(
            dir.path(),
            r#"{"bottle_slug": "b1", "routes": [{"host": "api.test", "header": "x-key",
                "path_prefix": "/v1/../", "secret_env": "TOK"}]}"#,
        );
        assert!(load_policy(dir.path(), &secrets(), 1).is_err());
    }

    #[tokio::test]
    async fn guarded_env_values_need_their_variable() {
        let dir = tempfile::tempdir().unwrap();
        write_policy(
            dir.path(),
            r#"{"bottle_slug": "b1", "guarded_env": [{"name": "APP", "secret_env": "TOK"}]}"#,
        );
        assert!(load_policy(dir.path(), &secrets(), 1).is_ok());
        write_policy(
            dir.path(),
            r#"{"bottle_slug": "b1", "guarded_env": [{"name": "APP", "secret_env": "NOPE"}]}"#,
        );
        assert!(matches!(
            load_policy(dir.path(), &secrets(), 1),
            Err(Error::MissingSecretEnv { .. })
        ));
    }

    #[tokio::test]
    async fn invalid_policies_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                r#"{"bottle_slug": "b1", "allow": [{"host": "*"}]}"#,
                "allow[0]",
            ),
            (
                r#"{"bottle_slug": "b1", "ssrf": {"enabled": true, "exempt_cidrs": ["x"]}}"#,
                "exempt_cidrs",
            ),
            (
                r#"{"bottle_slug": "b1", "routes": [{"host": "a.test", "header": "x", "secret_env": "NOPE"}]}"#,
                "NOPE",
            ),
            (
                r#"{"bottle_slug": "b1", "routes": [{"host": "a.test", "header": "x", "format": "Bearer", "secret_env": "TOK"}]}"#,
                "{token}",
            ),
            (
                r#"{"bottle_slug": "b1", "dlp": {"enabled": true, "extra_patterns": [{"name": "n", "regex": "("}]}}"#,
                "extra pattern",
            ),
            (r#"{"bottle_slug": ""}"#, "bottle_slug"),
            (
                r#"{"bottle_slug": "b1", "routes": [{"host": "a.test", "header": "x", "secret_env": "TOK", "placeholder": "short"}]}"#,
                "placeholder must be at least 8",
            ),
            (
                r#"{"bottle_slug": "b1", "extra_ca_bundle": "missing.pem"}"#,
                "missing.pem",
            ),
            ("not json", "parse"),
        ];
        for (json, needle) in cases {
            write_policy(dir.path(), json);
            let err = load_policy(dir.path(), &secrets(), 1)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
