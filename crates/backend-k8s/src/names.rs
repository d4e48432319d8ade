//! The one owner of every Kubernetes name a bottle uses: its namespace, its objects,
//! its labels. Roles, ports and in-container paths are `sidecar_contract::layout`'s.

/// Prefix of every bottle's namespace.
pub const NAMESPACE_PREFIX: &str = "bot-bottle-";

/// The namespace of bottle `slug`: everything of the bottle lives in it, and deleting
/// it removes the bottle.
pub fn namespace(slug: &str) -> String {
    format!("{NAMESPACE_PREFIX}{slug}")
}

/// The slug of a bottle namespace, or `None` for any other namespace.
pub fn slug_of_namespace(namespace: &str) -> Option<&str> {
    namespace
        .strip_prefix(NAMESPACE_PREFIX)
        .filter(|slug| !slug.is_empty())
}

/// Label on every object `bottle` makes, so `ls` and `gc` find them by selector.
pub const LABEL_MANAGED_BY: &str = "dev.bot-bottle.managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "bottle";
/// Annotation on the namespace: `true` once the bottle's launch finished.
pub const ANNOTATION_READY: &str = "dev.bot-bottle.ready";

/// The bottle CA (certificate and private key), mounted into the egress pod only.
pub const EGRESS_CA_SECRET: &str = "egress-ca";
/// Route credentials and guarded values, as the egress container's environment.
pub const EGRESS_CREDENTIALS_SECRET: &str = "egress-credentials";
/// The git gate's SSH private keys.
pub const GIT_GATE_KEYS_SECRET: &str = "git-gate-keys";
/// The egress policy (`policy.json`): replaced to change a running bottle's policy.
pub const EGRESS_POLICY_CONFIG: &str = "egress-policy";
/// The CA certificate alone, for the agent.
pub const AGENT_CA_CONFIG: &str = "agent-ca";
/// The git gate's config, known_hosts and passwd.
pub const GIT_GATE_CONFIG: &str = "git-gate";
/// The supervise config and policy view.
pub const SUPERVISE_CONFIG: &str = "supervise";
/// The human's decisions, written by the CLI through the API, read-only in supervise.
pub const SUPERVISE_DECISIONS_CONFIG: &str = "supervise-decisions";

/// The NetworkPolicy that denies everything not allowed by another.
pub const DEFAULT_DENY_POLICY: &str = "default-deny";
