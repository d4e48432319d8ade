//! Where a backend puts each sidecar's files, which ports the sidecars listen on and
//! the names their secrets arrive under: one owner for what every backend (compose
//! services, Kubernetes pods) lays out the same way, so a sidecar never needs to know
//! which engine runs it.

/// Service (role) names: stable, since the agent reaches sidecars by them.
pub const AGENT_SERVICE: &str = "agent";
/// The egress proxy service.
pub const EGRESS_SERVICE: &str = "egress";
/// The git gate service.
pub const GIT_GATE_SERVICE: &str = "git-gate";
/// The supervise service.
pub const SUPERVISE_SERVICE: &str = "supervise";

/// Port of the egress proxy.
pub const EGRESS_PROXY_PORT: u16 = 3128;
/// Port of the git gate's smart-HTTP server.
pub const GIT_GATE_PORT: u16 = 9418;
/// Port of the supervise MCP server.
pub const SUPERVISE_PORT: u16 = 8765;

/// Where sidecars find their config directory.
pub const SIDECAR_CONFIG_DIR: &str = "/etc/bot-bottle/config";
/// The bottle CA certificate's file name in the agent's CA directory.
pub const AGENT_CA_FILE: &str = "ca.crt";
/// Where the agent finds the bottle CA certificate.
pub const AGENT_CA_DIR: &str = "/etc/bot-bottle/ca";
/// The bottle CA certificate inside the agent.
pub const AGENT_CA_CERT: &str = "/etc/bot-bottle/ca/ca.crt";
/// Where the agent's persisted directories are mounted; provisioning links each into
/// the agent's home (the image's home is not known when rendering).
pub const AGENT_PERSIST_DIR: &str = "/var/lib/bot-bottle/persist";
/// Where sidecars write audit logs.
pub const SIDECAR_AUDIT_DIR: &str = "/var/log/bot-bottle";

/// Label keys every service carries: `bottle ls` and `bottle gc` look them up.
pub const LABEL_SLUG: &str = "dev.bot-bottle.slug";
/// Agent name label.
pub const LABEL_AGENT: &str = "dev.bot-bottle.agent";
/// State root label: which state directory owns the bottle, so `ls` and `gc` of one
/// state root never touch another's bottles.
pub const LABEL_STATE_ROOT: &str = "dev.bot-bottle.state-root";
/// Role label: agent, egress, git-gate or supervise.
pub const LABEL_ROLE: &str = "dev.bot-bottle.role";

/// Default pids limit where the plan sets none: a fork bomb must not take the host.
pub const DEFAULT_AGENT_PIDS: u32 = 4096;
/// Pids limit of each sidecar.
pub const SIDECAR_PIDS: u32 = 256;
/// Memory limit of each sidecar.
pub const SIDECAR_MEMORY: u64 = 512 << 20;

/// File name of the bottle CA certificate in the egress config directory.
pub const CA_CERT_FILE: &str = "ca-cert.pem";
/// File name of the bottle CA private key in the egress config directory (0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// File name of the extra CA bundle the proxy trusts for upstreams, in the egress
/// config directory.
pub const EXTRA_CA_FILE: &str = "extra-ca.pem";

/// Name under which the agent's guarded secret `index` reaches the egress sidecar
/// (for DLP to look for). Namespaced like [`route_secret_env`].
pub fn guarded_secret_env(index: usize) -> String {
    format!("BOT_BOTTLE_GUARDED_{index}")
}

/// Name under which route `index`'s credential reaches the egress sidecar. Namespaced
/// so it can never collide with a variable of the agent's.
pub fn route_secret_env(index: usize) -> String {
    format!("BOT_BOTTLE_ROUTE_{index}")
}

/// The variables that send the agent's tools through the egress proxy and make them
/// trust the bottle CA, in the order a backend sets them. `direct` are the sidecars
/// the agent reaches without the proxy (the git gate, supervise).
pub fn agent_network_env(direct: &[&str]) -> Vec<(String, String)> {
    let proxy = format!("http://{EGRESS_SERVICE}:{EGRESS_PROXY_PORT}");
    let no_proxy = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .chain(direct.iter().filter(|name| **name != EGRESS_SERVICE))
        .copied()
        .collect::<Vec<_>>()
        .join(",");
    let mut env = Vec::new();
    for name in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
        env.push((name.to_owned(), proxy.clone()));
    }
    for name in ["NO_PROXY", "no_proxy"] {
        env.push((name.to_owned(), no_proxy.clone()));
    }
    for name in [
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ] {
        env.push((name.to_owned(), AGENT_CA_CERT.to_owned()));
    }
    env
}

/// Repository of the sidecar image.
pub const SIDECAR_REPO: &str = "bot-bottle/sidecar";

/// The sidecar image of one `bottle` build: its version and the first 12 hex digits
/// of the binary's SHA-256, so a sidecar never runs another build than the CLI that
/// wrote its config.
pub fn sidecar_image_tag(version: &str, binary_sha256: &str) -> String {
    let short = binary_sha256.get(..12).unwrap_or(binary_sha256);
    format!("{SIDECAR_REPO}:{version}-{short}")
}
