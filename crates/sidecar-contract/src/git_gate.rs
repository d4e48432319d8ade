//! The gate's configuration, read from `DIR/git-gate.json`.
//!
//! These are plain serde types: the launcher writes them, the gate reads them.
//! Unknown fields are rejected so a typo never silently weakens the policy.
//!
//! ```json
//! {
//!   "listen": "0.0.0.0:9418",
//!   "mirrors_dir": "/var/lib/git-gate",
//!   "audit_log": "/var/log/git-gate/audit.jsonl",
//!   "upstreams": [
//!     {
//!       "name": "project",
//!       "url": "git@github.com:example/project.git",
//!       "key_path": "/run/git-gate/keys/project",
//!       "known_hosts_path": "/run/git-gate/known_hosts",
//!       "push_refs": ["refs/heads/agent/*"],
//!       "allow_force_push": false,
//!       "allow_delete": false,
//!       "read_only": false
//!     }
//!   ]
//! }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// File name of the configuration inside the config directory.
pub const CONFIG_FILE_NAME: &str = "git-gate.json";

/// Default listen address. Port 9418 is git's registered port; the gate
/// speaks smart HTTP on it, so agent remotes look like `http://git-gate:9418/NAME.git`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9418";

/// Default directory holding one bare mirror per upstream.
pub const DEFAULT_MIRRORS_DIR: &str = "/var/lib/git-gate";

/// Everything the gate needs to serve the agent and reach the upstreams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Address the smart-HTTP server binds (default `0.0.0.0:9418`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory where the bare mirrors live, one `NAME.git` per upstream
    /// (default `/var/lib/git-gate`). Created if missing.
    #[serde(default = "default_mirrors_dir")]
    pub mirrors_dir: PathBuf,
    /// Optional file that receives the JSON-lines audit log (appended);
    /// the same lines always go to stdout.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// The upstream repositories the agent may reach through the gate.
    pub upstreams: Vec<UpstreamConfig>,
}

/// One real repository behind the gate, reached over SSH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name in the agent's URL: `http://GATE/NAME.git`. Letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// SSH URL of the upstream: `ssh://git@host:port/path.git` or scp-like `git@host:path.git`.
    pub url: String,
    /// Private key file used for this upstream (must be mode 0600 for ssh to accept it).
    pub key_path: PathBuf,
    /// known_hosts file holding the upstream's host key; unknown keys are never accepted.
    pub known_hosts_path: PathBuf,
    /// Glob patterns of refs the agent may push (`*` matches any characters,
    /// including `/`; `?` matches one). Empty means no push is allowed.
    #[serde(default)]
    pub push_refs: Vec<String>,
    /// Whether a push may rewrite history (non-fast-forward update).
    #[serde(default)]
    pub allow_force_push: bool,
    /// Whether a push may delete a ref.
    #[serde(default)]
    pub allow_delete: bool,
    /// Fetch only: pushes are refused before any data is sent.
    #[serde(default)]
    pub read_only: bool,
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("constant address parses")
}

fn default_mirrors_dir() -> PathBuf {
    PathBuf::from(DEFAULT_MIRRORS_DIR)
}

impl GateConfig {
    /// Checks what serde cannot: names usable in URLs and paths, no duplicates.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for upstream in &self.upstreams {
            if !is_valid_upstream_name(&upstream.name) {
                return Err(format!(
                    "upstream name {:?} must be non-empty, use only letters, digits, '.', '_', '-', \
                     must not start with '.' and must not end with \".git\"",
                    upstream.name
                ));
            }
            if !seen.insert(upstream.name.as_str()) {
                return Err(format!("upstream name {:?} is used twice", upstream.name));
            }
            if !is_ssh_url(&upstream.url) {
                return Err(format!(
                    "upstream {:?}: url {:?} must be ssh://… or scp-like user@host:path",
                    upstream.name, upstream.url
                ));
            }
            // ssh splits UserKnownHostsFile on whitespace, so such a path
            // would silently name other files.
            if upstream
                .known_hosts_path
                .to_string_lossy()
                .contains(char::is_whitespace)
            {
                return Err(format!(
                    "upstream {:?}: known_hosts_path must not contain whitespace",
                    upstream.name
                ));
            }
            for pattern in &upstream.push_refs {
                if !pattern.starts_with("refs/") {
                    return Err(format!(
                        "upstream {:?}: push_refs pattern {:?} must start with \"refs/\"",
                        upstream.name, pattern
                    ));
                }
            }
        }
        Ok(())
    }

    /// Finds an upstream by the name used in the agent's URL.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|upstream| upstream.name == name)
    }
}

/// `ssh://…` (or git's `git+ssh://` / `ssh+git://` spellings) or scp-like
/// `[user@]host:path`; everything else (file paths, `ext::`, http) is refused.
fn is_ssh_url(url: &str) -> bool {
    if url.starts_with('-') || url.contains(char::is_whitespace) {
        return false;
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        return matches!(scheme, "ssh" | "git+ssh" | "ssh+git") && !rest.is_empty();
    }
    match url.split_once(':') {
        Some((host, path)) => {
            !host.is_empty() && !host.contains('/') && !path.is_empty() && !url.starts_with("ext:")
        }
        None => false,
    }
}

fn is_valid_upstream_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.ends_with(".git")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<GateConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn defaults_fill_optional_fields() {
        let config = parse(
            r#"{"upstreams":[{"name":"p","url":"git@h:p.git","key_path":"/k","known_hosts_path":"/kh"}]}"#,
        )
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:9418".parse().unwrap());
        assert_eq!(config.mirrors_dir, PathBuf::from("/var/lib/git-gate"));
        assert_eq!(config.audit_log, None);
        let upstream = &config.upstreams[0];
        assert!(upstream.push_refs.is_empty());
        assert!(!upstream.allow_force_push && !upstream.allow_delete && !upstream.read_only);
        config.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let error = parse(
            r#"{"upstreams":[{"name":"p","url":"u","key_path":"/k","known_hosts_path":"/kh","allow_force":true}]}"#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("allow_force"), "{error}");
    }

    #[test]
    fn bad_names_and_duplicates_are_rejected() {
        for name in ["", ".hidden", "a/b", "x.git", "sp ace"] {
            let config = GateConfig {
                listen: default_listen(),
                mirrors_dir: default_mirrors_dir(),
                audit_log: None,
                upstreams: vec![upstream(name)],
            };
            assert!(config.validate().is_err(), "{name:?} accepted");
        }
        let config = GateConfig {
            listen: default_listen(),
            mirrors_dir: default_mirrors_dir(),
            audit_log: None,
            upstreams: vec![upstream("a"), upstream("a")],
        };
        assert!(config.validate().unwrap_err().contains("twice"));
    }

    #[test]
    fn only_ssh_urls_are_accepted() {
        for url in [
            "ssh://git@host:2222/path.git",
            "git@github.com:example/project.git",
            "host:repo.git",
        ] {
            assert!(is_ssh_url(url), "{url} refused");
        }
        for url in [
            "",
            "https://github.com/x.git",
            "file:///srv/repo.git",
            "/srv/repo.git",
            "ext::sh -c evil",
            "-oProxyCommand=evil:x",
            "./relative:path",
        ] {
            assert!(!is_ssh_url(url), "{url} accepted");
        }
    }

    #[test]
    fn push_patterns_must_name_refs() {
        let mut bad = upstream("a");
        bad.push_refs = vec!["heads/agent/*".into()];
        let config = GateConfig {
            listen: default_listen(),
            mirrors_dir: default_mirrors_dir(),
            audit_log: None,
            upstreams: vec![bad],
        };
        assert!(config.validate().unwrap_err().contains("refs/"));
    }

    fn upstream(name: &str) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            url: "git@host:repo.git".into(),
            key_path: "/k".into(),
            known_hosts_path: "/kh".into(),
            push_refs: vec![],
            allow_force_push: false,
            allow_delete: false,
            read_only: false,
        }
    }
}
