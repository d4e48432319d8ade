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
