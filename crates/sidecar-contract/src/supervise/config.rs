//! `supervise.json` (written by the launcher) and the policy view
//! (`policy-view.json`, rewritten by the launcher whenever the bottle's
//! egress policy changes).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::supervise::Error;
use crate::supervise::store;

/// The config file's name inside the config directory.
pub const CONFIG_FILE: &str = "supervise.json";
/// Default listen address (the compose healthcheck probes 127.0.0.1).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8765";
/// Default queue directory (writable by the sidecar).
pub const DEFAULT_QUEUE_DIR: &str = "/var/lib/supervise/queue";
/// Default decisions directory (mounted read-only into the sidecar).
pub const DEFAULT_DECISIONS_DIR: &str = "/var/lib/supervise/decisions";
/// Default policy view file name, inside the config directory.
pub const DEFAULT_POLICY_VIEW: &str = "policy-view.json";
/// Default longest wait for a decision, in seconds.
pub const DEFAULT_DECISION_TIMEOUT_SECS: u64 = 600;
/// Longest `decision_timeout_secs` accepted (one day).
pub const MAX_DECISION_TIMEOUT_SECS: u64 = 86_400;
/// Default most requests pending at once; beyond, new asks are refused.
pub const DEFAULT_MAX_PENDING: usize = 16;
/// Default most new requests queued in any minute.
pub const DEFAULT_MAX_REQUESTS_PER_MINUTE: usize = 10;
/// Default time after which a pending request that no call waits on or asks
/// about again expires (its file leaves the queue).
pub const DEFAULT_ABANDON_AFTER_SECS: u64 = 600;
/// Largest `max_pending` and `max_requests_per_minute` accepted.
pub const MAX_LIMIT: usize = 1_000;

/// `DIR/supervise.json`.
///
/// ```json
/// {"bottle_slug":"implementer-3fa2",
///  "audit_log":"/var/log/bot-bottle/supervise.jsonl"}
/// ```
///
/// Every other field has a default: `listen` `0.0.0.0:8765`, `queue_dir`
/// `/var/lib/supervise/queue`, `decisions_dir`
/// `/var/lib/supervise/decisions`, `decision_timeout_secs` 600,
/// `policy_view` `policy-view.json` (relative: inside the config dir),
/// `max_pending` 16, `max_requests_per_minute` 10, `abandon_after_secs` 600.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuperviseConfig {
    /// The bottle this sidecar serves; stamped on every request.
    pub bottle_slug: String,
    /// Where the MCP server listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where request files are written (absolute).
    #[serde(default = "default_queue_dir")]
    pub queue_dir: PathBuf,
    /// Where the host CLI writes decisions (absolute; read-only here).
    #[serde(default = "default_decisions_dir")]
    pub decisions_dir: PathBuf,
    /// JSON-lines audit file (absolute), besides stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<PathBuf>,
    /// Longest wait for a decision in one tool call.
    #[serde(default = "default_decision_timeout_secs")]
    pub decision_timeout_secs: u64,
    /// The policy view; a relative path resolves inside the config dir.
    #[serde(default = "default_policy_view")]
    pub policy_view: PathBuf,
    /// Most requests pending at once: a new ask beyond is refused with a tool
    /// error (asking again for something pending still joins it).
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Most new requests queued in any 60 s; beyond, a new ask is refused.
    #[serde(default = "default_max_requests_per_minute")]
    pub max_requests_per_minute: usize,
    /// A pending request that no call waits on or asks about again for this
    /// long expires: its file is removed from the queue, so `bottle requests`
    /// shows only what the agent still waits for.
    #[serde(default = "default_abandon_after_secs")]
    pub abandon_after_secs: u64,
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid default")
}
fn default_queue_dir() -> PathBuf {
    DEFAULT_QUEUE_DIR.into()
}
fn default_decisions_dir() -> PathBuf {
    DEFAULT_DECISIONS_DIR.into()
}
fn default_decision_timeout_secs() -> u64 {
    DEFAULT_DECISION_TIMEOUT_SECS
}
fn default_policy_view() -> PathBuf {
    DEFAULT_POLICY_VIEW.into()
}
fn default_max_pending() -> usize {
    DEFAULT_MAX_PENDING
}
fn default_max_requests_per_minute() -> usize {
    DEFAULT_MAX_REQUESTS_PER_MINUTE
}
fn default_abandon_after_secs() -> u64 {
    DEFAULT_ABANDON_AFTER_SECS
}

impl SuperviseConfig {
    /// A config with every default, for the launcher to adjust and write.
    pub fn new(bottle_slug: impl Into<String>) -> Self {
        Self {
            bottle_slug: bottle_slug.into(),
            listen: default_listen(),
            queue_dir: default_queue_dir(),
            decisions_dir: default_decisions_dir(),
            audit_log: None,
            decision_timeout_secs: DEFAULT_DECISION_TIMEOUT_SECS,
            policy_view: default_policy_view(),
            max_pending: DEFAULT_MAX_PENDING,
            max_requests_per_minute: DEFAULT_MAX_REQUESTS_PER_MINUTE,
            abandon_after_secs: DEFAULT_ABANDON_AFTER_SECS,
        }
    }

    /// Reads `config_dir/supervise.json`, validates it and resolves
    /// `policy_view` against `config_dir`.
    pub fn load(config_dir: &Path) -> Result<Self, Error> {
        let path = config_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadConfig {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text, config_dir, &path)
    }

    /// Parses and validates config text; `path` only names the file in errors.
    pub fn parse(text: &str, config_dir: &Path, path: &Path) -> Result<Self, Error> {
        let mut config: Self = serde_json::from_str(text).map_err(|source| Error::ParseConfig {
            path: path.to_owned(),
            source,
        })?;
        config.validate().map_err(|reason| Error::InvalidConfig {
            path: path.to_owned(),
            reason,
        })?;
        if config.policy_view.is_relative() {
            config.policy_view = config_dir.join(&config.policy_view);
        }
        Ok(config)
    }

    /// Writes `config_dir/supervise.json` atomically (for the launcher).
    pub fn write(&self, config_dir: &Path) -> Result<(), Error> {
        store::write_json_atomic(config_dir, CONFIG_FILE, self, true)
    }

    /// The rules serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let slug_ok = !self.bottle_slug.is_empty()
            && self.bottle_slug.len() <= 100
            && self
                .bottle_slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !slug_ok {
            return Err(format!(
                "bottle_slug `{}` must be 1 to 100 lowercase letters, digits, `-` or `_`",
                self.bottle_slug
            ));
        }
        if !(1..=MAX_DECISION_TIMEOUT_SECS).contains(&self.decision_timeout_secs) {
            return Err(format!(
                "decision_timeout_secs must be between 1 and {MAX_DECISION_TIMEOUT_SECS}"
            ));
        }
        for (name, value) in [
            ("max_pending", self.max_pending),
            ("max_requests_per_minute", self.max_requests_per_minute),
        ] {
            if !(1..=MAX_LIMIT).contains(&value) {
                return Err(format!("{name} must be between 1 and {MAX_LIMIT}"));
            }
        }
        if !(1..=MAX_DECISION_TIMEOUT_SECS).contains(&self.abandon_after_secs) {
            return Err(format!(
                "abandon_after_secs must be between 1 and {MAX_DECISION_TIMEOUT_SECS}"
            ));
        }
        for (name, path) in [
            ("queue_dir", Some(&self.queue_dir)),
            ("decisions_dir", Some(&self.decisions_dir)),
            ("audit_log", self.audit_log.as_ref()),
        ] {
            if let Some(path) = path
                && !path.is_absolute()
            {
                return Err(format!(
                    "{name} must be an absolute path, got {}",
                    path.display()
                ));
            }
        }
        // The sidecar writes the queue; decisions must come from elsewhere.
        let queue = lexical(&self.queue_dir);
        let decisions = lexical(&self.decisions_dir);
        if queue.starts_with(&decisions) || decisions.starts_with(&queue) {
            return Err(format!(
                "queue_dir {} and decisions_dir {} must be separate directories, neither inside the other",
                self.queue_dir.display(),
                self.decisions_dir.display()
            ));
        }
        if let Some(audit) = &self.audit_log
            && lexical(audit).starts_with(&decisions)
        {
            return Err("audit_log must not sit inside decisions_dir".into());
        }
        Ok(())
    }
}

/// `path` with `.` dropped and `..` applied, without touching the disk.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A readable summary of the bottle's current egress policy, written by the
/// launcher (atomically) into the config dir whenever the policy changes.
/// It never holds a credential value.
///
/// ```json
/// {"allow":[{"host":"api.anthropic.com","ports":[443],"methods":null,"paths":null}],
///  "credentials":[{"host":"api.anthropic.com","header":"x-api-key"}],
///  "dlp":true,"ssrf":true,"version":"9c1b…"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    /// Allowed destinations.
    pub allow: Vec<AllowView>,
    /// Hosts whose requests get a credential injected by the egress proxy.
    #[serde(default)]
    pub credentials: Vec<CredentialView>,
    /// Whether DLP scanning is on.
    #[serde(default)]
    pub dlp: bool,
    /// Whether SSRF protection is on.
    #[serde(default)]
    pub ssrf: bool,
    /// SHA-256 (hex) of the egress policy file this view describes.
    pub version: String,
}

/// One allowed destination. `None` means any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowView {
    /// Host name or `*.suffix`.
    pub host: String,
    /// Allowed ports.
    #[serde(default)]
    pub ports: Option<Vec<u16>>,
    /// Allowed methods.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Allowed path prefixes.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
}

/// A host the proxy adds a credential for: the header's name, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialView {
    /// Host name or `*.suffix`.
    pub host: String,
    /// Header name, e.g. `authorization`.
    pub header: String,
}

impl PolicyView {
    /// Reads a policy view file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        store::read_json(path)?.ok_or_else(|| {
            Error::io("reading", path)(std::io::Error::from(std::io::ErrorKind::NotFound))
        })
    }

    /// Writes the view to `path` atomically (temp file, fsync, rename):
    /// the launcher's side.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::InvalidFile {
                path: path.to_owned(),
                reason: "not a file name".into(),
            })?;
        store::write_json_atomic(dir, name, self, true)
    }

    /// The view as text for the agent.
    pub fn to_text(&self) -> String {
        fn list<T: ToString>(items: &Option<Vec<T>>, any: &str) -> String {
            match items {
                None => any.to_owned(),
                Some(items) if items.is_empty() => "none".to_owned(),
                Some(items) => items
                    .iter()
                    .map(T::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Egress policy of this bottle (version {}):",
            self.version
        );
        if self.allow.is_empty() {
            out.push_str("Allowed destinations: none.\n");
        } else {
            out.push_str("Allowed destinations (everything else is blocked):\n");
            for rule in &self.allow {
                let _ = writeln!(
                    out,
                    "- {}: ports {}; methods {}; paths {}",
                    rule.host,
                    list(&rule.ports, "any"),
                    list(&rule.methods, "any"),
                    list(&rule.paths, "any"),
                );
            }
        }
        if self.credentials.is_empty() {
            out.push_str("Credentials added by the proxy: none.\n");
        } else {
            out.push_str(
                "Credentials added by the proxy (you hold a placeholder; the proxy sends the real value):\n",
            );
            for credential in &self.credentials {
                let _ = writeln!(out, "- {}: header {}", credential.host, credential.header);
            }
        }
        let on = |b: bool| if b { "on" } else { "off" };
        let _ = writeln!(
            out,
            "DLP scanning of outgoing requests: {}. SSRF protection: {}.",
            on(self.dlp),
            on(self.ssrf)
        );
        out.push_str("To reach a host that is not allowed, call request_egress.");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SuperviseConfig, Error> {
        SuperviseConfig::parse(
            text,
            Path::new("/etc/bot-bottle/config"),
            Path::new("supervise.json"),
        )
    }

    #[test]
    fn defaults() {
        let config = parse(r#"{"bottle_slug":"impl-1"}"#).unwrap();
        assert_eq!(config.listen, "0.0.0.0:8765".parse().unwrap());
        assert_eq!(config.queue_dir, Path::new("/var/lib/supervise/queue"));
        assert_eq!(
            config.decisions_dir,
            Path::new("/var/lib/supervise/decisions")
        );
        assert_eq!(config.audit_log, None);
        assert_eq!(config.decision_timeout_secs, 600);
        assert_eq!(config.max_pending, 16);
        assert_eq!(config.max_requests_per_minute, 10);
        assert_eq!(config.abandon_after_secs, 600);
        assert_eq!(
            config.policy_view,
            Path::new("/etc/bot-bottle/config/policy-view.json")
        );
        let mut expected = SuperviseConfig::new("impl-1");
        expected.policy_view = config.policy_view.clone();
        assert_eq!(config, expected);
    }

    #[test]
    fn all_fields() {
        let config = parse(
            r#"{"bottle_slug":"b","listen":"127.0.0.1:1","queue_dir":"/q","decisions_dir":"/d",
                "audit_log":"/log/s.jsonl","decision_timeout_secs":5,"policy_view":"/p/v.json",
                "max_pending":3,"max_requests_per_minute":4,"abandon_after_secs":60}"#,
        )
        .unwrap();
        assert_eq!(
            (
                config.max_pending,
                config.max_requests_per_minute,
                config.abandon_after_secs
            ),
            (3, 4, 60)
        );
        assert_eq!(config.policy_view, Path::new("/p/v.json"));
        assert_eq!(config.decision_timeout_secs, 5);
        assert_eq!(config.audit_log.as_deref(), Some(Path::new("/log/s.jsonl")));
    }

    #[test]
    fn refusals() {
        for (text, what) in [
            (r#"{}"#, "missing field `bottle_slug`"),
            (
                r#"{"bottle_slug":"b","colour":1}"#,
                "unknown field `colour`",
            ),
            (r#"{"bottle_slug":"B A"}"#, "bottle_slug"),
            (
                r#"{"bottle_slug":"b","decision_timeout_secs":0}"#,
                "decision_timeout_secs",
            ),
            (r#"{"bottle_slug":"b","max_pending":0}"#, "max_pending"),
            (
                r#"{"bottle_slug":"b","max_requests_per_minute":1001}"#,
                "max_requests_per_minute",
            ),
            (
                r#"{"bottle_slug":"b","abandon_after_secs":0}"#,
                "abandon_after_secs",
            ),
            (r#"{"bottle_slug":"b","queue_dir":"q"}"#, "absolute"),
            (
                r#"{"bottle_slug":"b","queue_dir":"/x","decisions_dir":"/x"}"#,
                "separate",
            ),
            (
                r#"{"bottle_slug":"b","queue_dir":"/x/d/q","decisions_dir":"/x/d"}"#,
                "separate",
            ),
            (
                r#"{"bottle_slug":"b","queue_dir":"/x/q","decisions_dir":"/x/q/../q/d"}"#,
                "separate",
            ),
            (
                r#"{"bottle_slug":"b","audit_log":"/var/lib/supervise/decisions/a"}"#,
                "audit_log",
            ),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(what), "{text}: {error}");
        }
    }

    #[test]
    fn load_and_write_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = SuperviseConfig::new("b");
        config.policy_view = "view.json".into();
        config.write(dir.path()).unwrap();
        let loaded = SuperviseConfig::load(dir.path()).unwrap();
        assert_eq!(loaded.policy_view, dir.path().join("view.json"));
        assert!(matches!(
            SuperviseConfig::load(&dir.path().join("nope")),
            Err(Error::ReadConfig { .. })
        ));
    }

    fn view() -> PolicyView {
        serde_json::from_str(
            r#"{"allow":[{"host":"api.anthropic.com","ports":[443],"methods":null,"paths":null},
                         {"host":"*.crates.io","ports":null,"methods":["GET","HEAD"],"paths":["/api/"]}],
                "credentials":[{"host":"api.anthropic.com","header":"x-api-key"}],
                "dlp":true,"ssrf":false,"version":"abc123"}"#,
        )
        .unwrap()
    }

    #[test]
    fn policy_view_text() {
        let text = view().to_text();
        assert!(text.contains("version abc123"), "{text}");
        assert!(
            text.contains("- api.anthropic.com: ports 443; methods any; paths any"),
            "{text}"
        );
        assert!(
            text.contains("- *.crates.io: ports any; methods GET, HEAD; paths /api/"),
            "{text}"
        );
        assert!(
            text.contains("- api.anthropic.com: header x-api-key"),
            "{text}"
        );
        assert!(
            text.contains("DLP scanning of outgoing requests: on. SSRF protection: off."),
            "{text}"
        );
    }

    #[test]
    fn policy_view_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy-view.json");
        view().write(&path).unwrap();
        assert_eq!(PolicyView::load(&path).unwrap(), view());
        assert!(PolicyView::load(&dir.path().join("missing.json")).is_err());
    }
}
