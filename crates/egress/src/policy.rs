//! The allowlist decision engine, pure (no IO, no clock): default deny, host
//! (exact or `*.suffix`), port, method and path prefix. A denial says what was
//! blocked, why, and how to allow it; the transport turns it into a 403.
//! Path prefixes are matched against the normalised path only
//! ([`crate::path`]): a request's target reaches [`AllowPolicy::check_request`]
//! as a [`NormalizedTarget`], and prefixes are normalised when compiled.

use std::fmt;

use crate::config::{AllowRule, EgressConfig};
use crate::path::{NormalizedTarget, PathRefusal, normalize_prefix};
use crate::ssrf::parse_numeric_host;

pub use crate::config::DEFAULT_PORTS;

/// Lower-cases a host, drops a trailing dot and brackets, and rewrites any
/// numeric spelling of an IP address (`2130706433`, `0x7f.1`) to its
/// canonical form, so policy and SSRF see one spelling per destination.
pub fn normalize_host(host: &str) -> String {
    let lowered = host.trim().to_ascii_lowercase();
    let trimmed = lowered.trim_end_matches('.');
    if let Some(ip) = parse_numeric_host(trimmed) {
        return ip.to_string();
    }
    trimmed.to_owned()
}

/// A host pattern of an allow rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this (normalized) host.
    Exact(String),
    /// Any strict subdomain: stores `.suffix`.
    Subdomains(String),
}

impl HostPattern {
    /// Parses `host` or `*.suffix`; rejects other wildcards and empty names.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let pattern = pattern.trim();
        if let Some(suffix) = pattern.strip_prefix("*.") {
            let suffix = normalize_host(suffix);
            if suffix.is_empty() || suffix.contains('*') {
                return Err(format!("host pattern {pattern:?} is not `*.suffix`"));
            }
            return Ok(Self::Subdomains(format!(".{suffix}")));
        }
        let host = normalize_host(pattern);
        if host.is_empty() || host.contains('*') || host.contains('/') {
            return Err(format!(
                "host pattern {pattern:?} must be a host name, an IP or `*.suffix`"
            ));
        }
        Ok(Self::Exact(host))
    }

    /// Whether an already-normalized host matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(exact) => exact == host,
            Self::Subdomains(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }

    /// How narrowly it matches: an exact host above any wildcard, a longer
    /// suffix above a shorter one (for picking the most specific of several).
    pub fn specificity(&self) -> usize {
        match self {
            Self::Exact(_) => usize::MAX,
            Self::Subdomains(suffix) => suffix.len(),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(host) => f.write_str(host),
            Self::Subdomains(suffix) => write!(f, "*{suffix}"),
        }
    }
}

#[derive(Debug, Clone)]
struct CompiledRule {
    label: String,
    host: HostPattern,
    ports: Vec<u16>,
    methods: Option<Vec<String>>,
    path_prefixes: Option<Vec<String>>,
}

impl CompiledRule {
    fn compile(index: usize, rule: &AllowRule) -> Result<Self, String> {
        let host = HostPattern::parse(&rule.host).map_err(|e| format!("allow[{index}]: {e}"))?;
        let ports = rule.ports.clone().unwrap_or_else(|| DEFAULT_PORTS.to_vec());
        if ports.is_empty() || ports.contains(&0) {
            return Err(format!(
                "allow[{index}]: ports must be a non-empty list of 1..65535"
            ));
        }
        let methods = rule.methods.as_ref().map(|ms| {
            ms.iter()
                .map(|m| m.trim().to_ascii_uppercase())
                .collect::<Vec<_>>()
        });
        let path_prefixes = rule
            .path_prefixes
            .as_ref()
            .map(|prefixes| {
                prefixes
                    .iter()
                    .map(|p| normalize_prefix(p).map_err(|e| format!("allow[{index}]: {e}")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(Self {
            label: format!("allow[{index}] {host}"),
            host,
            ports,
            methods,
            path_prefixes,
        })
    }
}

/// What is being asked for, with the host already normalized.
#[derive(Debug, Clone, Copy)]
pub struct RequestTarget<'a> {
    /// Normalized host ([`normalize_host`]).
    pub host: &'a str,
    /// Destination port.
    pub port: u16,
    /// HTTP method, any case.
    pub method: &'a str,
    /// Path and query, the path normalised ([`crate::path`]).
    pub path: &'a NormalizedTarget,
}

/// Which check refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    /// No rule covers the host.
    Host,
    /// A rule covers the host but not the port.
    Port,
    /// Method not allowed by the host's rules.
    Method,
    /// Path not allowed by the host's rules.
    Path,
    /// DLP found a secret.
    Dlp,
    /// A placeholder would have left the proxy ([`crate::placeholder`]).
    Placeholder,
    /// The destination resolves to an internal address.
    Ssrf,
    /// The request itself is malformed or inconsistent.
    BadRequest,
}

impl DenyKind {
    /// Short name for the audit log.
    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host-not-allowed",
            Self::Port => "port-not-allowed",
            Self::Method => "method-not-allowed",
            Self::Path => "path-not-allowed",
            Self::Dlp => "dlp",
            Self::Placeholder => crate::placeholder::RULE_PREFIX,
            Self::Ssrf => "ssrf",
            Self::BadRequest => "bad-request",
        }
    }
}

/// A refusal: which check, which rule, a human reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Which check refused.
    pub kind: DenyKind,
    /// The rule involved (`default-deny`, `allow[2] *.example.com`, a DLP rule).
    pub rule: String,
    /// One sentence for the human.
    pub reason: String,
    /// The destination host.
    pub host: String,
    /// The destination port.
    pub port: u16,
}

impl Denial {
    /// The 400 for a path servers could read in more than one way.
    pub fn refused_path(refusal: &PathRefusal, host: &str, port: u16) -> Self {
        Self::new(
            DenyKind::BadRequest,
            refusal.rule(),
            format!(
                "{refusal}; send the path with `.` and `..` segments resolved and without \
                 encoded `.`, `/` or `\\` in them"
            ),
            host,
            port,
        )
    }

    /// Builds a denial.
    pub fn new(
        kind: DenyKind,
        rule: impl Into<String>,
        reason: impl Into<String>,
        host: &str,
        port: u16,
    ) -> Self {
        Self {
            kind,
            rule: rule.into(),
            reason: reason.into(),
            host: host.to_owned(),
            port,
        }
    }

    /// The plain-text 403 body: what, why, and what to do about it.
    pub fn response_body(&self, bottle_slug: &str, what: &str) -> String {
        let mut body = format!(
            "bot-bottle egress: blocked {what}\nreason: {}\nrule: {}\n",
            self.reason, self.rule
        );
        let target = if DEFAULT_PORTS.contains(&self.port) {
            self.host.clone()
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        match self.kind {
            DenyKind::Host | DenyKind::Port => body.push_str(&format!(
                "to allow it, run on the host:\n  bottle egress allow {bottle_slug} {target}\n"
            )),
            DenyKind::Method | DenyKind::Path => body.push_str(&format!(
                "the allow rule for {} restricts methods or paths; widen it in the bottle's egress \
                 manifest, or run on the host:\n  bottle egress allow {bottle_slug} {target}\n",
                self.host
            )),
            DenyKind::Dlp => body.push_str(
                "the request carried a credential; remove it from the request (DLP findings are \
                 not overridden by the allowlist)\n",
            ),
            DenyKind::Placeholder => body.push_str(
                "the agent holds a placeholder, not the credential: the proxy puts the real value \
                 only in the route's header, on https requests to the route's host (and path \
                 prefix), and never lets a placeholder leave; send it only where the route \
                 expects it, or change the route in the bottle's egress manifest\n",
            ),
            DenyKind::Ssrf => body.push_str(
                "internal addresses are blocked; exempt a range with ssrf.exempt_cidrs in the \
                 bottle's egress manifest if this is intended\n",
            ),
            DenyKind::BadRequest => {}
        }
        body
    }
}

/// The outcome of a policy check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the named rule.
    Allow {
        /// The rule's label.
        rule: String,
    },
    /// Refused.
    Deny(Denial),
}

/// The compiled allowlist of one policy version.
#[derive(Debug, Clone)]
pub struct AllowPolicy {
    bottle_slug: String,
    rules: Vec<CompiledRule>,
}

impl AllowPolicy {
    /// Compiles the allow rules of a config; fails with a readable reason.
    pub fn from_config(config: &EgressConfig) -> Result<Self, String> {
        let rules = config
            .allow
            .iter()
            .enumerate()
            .map(|(i, rule)| CompiledRule::compile(i, rule))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            bottle_slug: config.bottle_slug.clone(),
            rules,
        })
    }

    /// The slug for denial hints.
    pub fn bottle_slug(&self) -> &str {
        &self.bottle_slug
    }

    /// The CONNECT-time check: is any request to `host:port` possible?
    pub fn check_connect(&self, host: &str, port: u16) -> Decision {
        let mut host_rule = None;
        for rule in self.rules.iter().filter(|r| r.host.matches(host)) {
            if rule.ports.contains(&port) {
                return Decision::Allow {
                    rule: rule.label.clone(),
                };
            }
            host_rule.get_or_insert(rule);
        }
        Decision::Deny(match host_rule {
            Some(rule) => Denial::new(
                DenyKind::Port,
                &rule.label,
                format!(
                    "port {port} is not allowed for {host} (allowed: {:?})",
                    rule.ports
                ),
                host,
                port,
            ),
            None => Denial::new(
                DenyKind::Host,
                "default-deny",
                format!("{host} is not in the bottle's egress allowlist"),
                host,
                port,
            ),
        })
    }

    /// The full per-request check. Allowed if any rule for the host permits
    /// port, method and path; otherwise the first failing aspect is reported.
    pub fn check_request(&self, target: &RequestTarget<'_>) -> Decision {
        if let Decision::Deny(denial) = self.check_connect(target.host, target.port) {
            return Decision::Deny(denial);
        }
        let method = target.method.to_ascii_uppercase();
        let path = target.path.path();
        let mut first_failure: Option<Denial> = None;
        for rule in self
            .rules
            .iter()
            .filter(|r| r.host.matches(target.host) && r.ports.contains(&target.port))
        {
            let failure = if rule
                .methods
                .as_ref()
                .is_some_and(|ms| !ms.contains(&method))
            {
                Some(Denial::new(
                    DenyKind::Method,
                    &rule.label,
                    format!("method {method} is not allowed for {}", target.host),
                    target.host,
                    target.port,
                ))
            } else if let Some(prefixes) = &rule.path_prefixes
                && !prefixes.iter().any(|p| path.starts_with(p.as_str()))
            {
                Some(Denial::new(
                    DenyKind::Path,
                    &rule.label,
                    format!("path {path} is outside the allowed prefixes {prefixes:?}"),
                    target.host,
                    target.port,
                ))
            } else {
                None
            };
            match failure {
                None => {
                    return Decision::Allow {
                        rule: rule.label.clone(),
                    };
                }
                Some(denial) => {
                    first_failure.get_or_insert(denial);
                }
            }
        }
        Decision::Deny(first_failure.unwrap_or_else(|| {
            Denial::new(
                DenyKind::Host,
                "default-deny",
                "no rule matched",
                target.host,
                target.port,
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: serde_json::Value) -> AllowPolicy {
        let cfg: EgressConfig =
            serde_json::from_value(serde_json::json!({"bottle_slug": "b1", "allow": rules}))
                .unwrap();
        AllowPolicy::from_config(&cfg).unwrap()
    }

    /// What the proxy does: normalise the target (400 if ambiguous), then check.
    fn request(policy: &AllowPolicy, host: &str, port: u16, method: &str, path: &str) -> Decision {
        let host = normalize_host(host);
        match NormalizedTarget::parse(path) {
            Ok(path) => policy.check_request(&RequestTarget {
                host: &host,
                port,
                method,
                path: &path,
            }),
            Err(refusal) => Decision::Deny(Denial::refused_path(&refusal, &host, port)),
        }
    }

    fn denied_kind(decision: Decision) -> Option<DenyKind> {
        match decision {
            Decision::Allow { .. } => None,
            Decision::Deny(d) => Some(d.kind),
        }
    }

    #[test]
    fn empty_policy_denies_everything() {
        let p = policy(serde_json::json!([]));
        assert_eq!(
            denied_kind(request(&p, "example.com", 443, "GET", "/")),
            Some(DenyKind::Host)
        );
        assert_eq!(
            denied_kind(p.check_connect("example.com", 443)),
            Some(DenyKind::Host)
        );
    }

    #[test]
    fn exact_host_matching_is_case_insensitive_and_ignores_trailing_dot() {
        let p = policy(serde_json::json!([{"host": "API.Example.com"}]));
        assert_eq!(
            denied_kind(request(&p, "api.example.com", 443, "GET", "/")),
            None
        );
        assert_eq!(
            denied_kind(request(&p, "API.EXAMPLE.COM.", 443, "GET", "/")),
            None
        );
        assert_eq!(
            denied_kind(request(&p, "x.api.example.com", 443, "GET", "/")),
            Some(DenyKind::Host)
        );
        assert_eq!(
            denied_kind(request(&p, "api.example.com.evil.test", 443, "GET", "/")),
            Some(DenyKind::Host)
        );
    }

    #[test]
    fn suffix_matches_subdomains_but_not_the_apex() {
        let p = policy(serde_json::json!([{"host": "*.example.com"}]));
        assert_eq!(
            denied_kind(request(&p, "a.example.com", 443, "GET", "/")),
            None
        );
        assert_eq!(
            denied_kind(request(&p, "a.b.example.com", 80, "GET", "/")),
            None
        );
        assert_eq!(
            denied_kind(request(&p, "example.com", 443, "GET", "/")),
            Some(DenyKind::Host)
        );
        assert_eq!(
            denied_kind(request(&p, "badexample.com", 443, "GET", "/")),
            Some(DenyKind::Host)
        );
        let with_apex =
            policy(serde_json::json!([{"host": "*.example.com"}, {"host": "example.com"}]));
        assert_eq!(
            denied_kind(request(&with_apex, "example.com", 443, "GET", "/")),
            None
        );
    }

    #[test]
    fn ports_default_to_443_and_80() {
        let p =
            policy(serde_json::json!([{"host": "a.test"}, {"host": "b.test", "ports": [8443]}]));
        assert_eq!(denied_kind(request(&p, "a.test", 443, "GET", "/")), None);
        assert_eq!(denied_kind(request(&p, "a.test", 80, "GET", "/")), None);
        assert_eq!(
            denied_kind(request(&p, "a.test", 22, "GET", "/")),
            Some(DenyKind::Port)
        );
        assert_eq!(denied_kind(request(&p, "b.test", 8443, "GET", "/")), None);
        assert_eq!(
            denied_kind(request(&p, "b.test", 443, "GET", "/")),
            Some(DenyKind::Port)
        );
    }

    #[test]
    fn methods_and_path_prefixes_restrict() {
        let p = policy(serde_json::json!([
            {"host": "api.test", "methods": ["get", "HEAD"], "path_prefixes": ["/v1/", "/health"]}
        ]));
        assert_eq!(
            denied_kind(request(&p, "api.test", 443, "GET", "/v1/users?x=1")),
            None
        );
        assert_eq!(
            denied_kind(request(&p, "api.test", 443, "head", "/health")),
            None
        );
        assert_eq!(
            denied_kind(request(&p, "api.test", 443, "POST", "/v1/users")),
            Some(DenyKind::Method)
        );
        assert_eq!(
            denied_kind(request(&p, "api.test", 443, "GET", "/v2/users")),
            Some(DenyKind::Path)
        );
        // Literal dot segments are resolved first: `/v1/../admin` is `/admin`.
        assert_eq!(
            denied_kind(request(&p, "api.test", 443, "GET", "/v1/../admin")),
            Some(DenyKind::Path)
        );
        assert_eq!(
            denied_kind(request(&p, "api.test", 443, "GET", "/v2/../v1/users")),
            None
        );
        // Ambiguous spellings never reach the rules (400).
        assert_eq!(
            denied_kind(request(&p, "api.test", 443, "GET", "/v1/%2e%2e/admin")),
            Some(DenyKind::BadRequest)
        );
        assert_eq!(
            denied_kind(request(&p, "api.test", 443, "GET", "/v1/..%2Fadmin")),
            Some(DenyKind::BadRequest)
        );
        // An encoded slash away from dot segments is data inside the prefix.
        assert_eq!(
            denied_kind(request(&p, "api.test", 443, "GET", "/v1/a%2Fb")),
            None
        );
        // The query does not count as path.
        assert_eq!(
            denied_kind(request(&p, "api.test", 443, "GET", "/v2?/v1/")),
            Some(DenyKind::Path)
        );
    }

    /// W2: servlet servers read `/public/..;/private` as `/private`.
    #[test]
    fn path_prefixes_see_one_spelling_of_the_path() {
        let p = policy(serde_json::json!([
            {"host": "ro.test", "path_prefixes": ["/public/", "/%7Eme/"]}
        ]));
        let mut failures = Vec::new();
        for (path, expected) in [
            ("/public/x", None),
            ("/public/a/../b", None),
            ("/public/%78", None),
            ("/~me/x", None),
            ("/%7eme/x", None),
            ("/public/../private", Some(DenyKind::Path)),
            ("/public/./../private", Some(DenyKind::Path)),
            ("/public/..;/private", Some(DenyKind::BadRequest)),
            (
                "/public/..;jsessionid=x/private",
                Some(DenyKind::BadRequest),
            ),
            ("/public/.;/../private", Some(DenyKind::BadRequest)),
            ("/public/..%3B/private", Some(DenyKind::BadRequest)),
            ("/public/%2e%2e/private", Some(DenyKind::BadRequest)),
            ("/public/%2e%2e;/private", Some(DenyKind::BadRequest)),
            ("/public/..%2fprivate", Some(DenyKind::BadRequest)),
            ("/public/..%5cprivate", Some(DenyKind::BadRequest)),
            ("/public/..\\private", Some(DenyKind::BadRequest)),
            ("/public/;x/../../private", Some(DenyKind::BadRequest)),
            ("/public//../private", Some(DenyKind::BadRequest)),
            ("/public/%C0%AE%C0%AE/private", Some(DenyKind::BadRequest)),
            (
                "/public/%EF%BC%8E%EF%BC%8E/private",
                Some(DenyKind::BadRequest),
            ),
            ("/public/../../private", Some(DenyKind::BadRequest)),
            ("/public%2f..%2fprivate", Some(DenyKind::BadRequest)),
            ("/private?/public/", Some(DenyKind::Path)),
        ] {
            let got = denied_kind(request(&p, "ro.test", 443, "GET", path));
            if got != expected {
                failures.push(format!("{path}: expected {expected:?}, got {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn ambiguous_paths_are_refused_with_the_reason_and_the_rule() {
        let p = policy(serde_json::json!([{"host": "ro.test"}]));
        let Decision::Deny(denial) = request(&p, "ro.test", 443, "GET", "/public/..;/private")
        else {
            panic!("expected a refusal");
        };
        assert_eq!(denial.kind, DenyKind::BadRequest);
        assert_eq!(denial.rule, "path-refused:dot-segment-parameter");
        assert!(denial.reason.contains("`..;`"), "{}", denial.reason);
        assert!(denial.reason.contains("resolved"), "{}", denial.reason);
    }

    #[test]
    fn any_matching_rule_can_allow() {
        let p = policy(serde_json::json!([
            {"host": "api.test", "methods": ["GET"]},
            {"host": "api.test", "methods": ["POST"], "path_prefixes": ["/upload"]}
        ]));
        assert_eq!(
            denied_kind(request(&p, "api.test", 443, "POST", "/upload/x")),
            None
        );
        assert_eq!(
            denied_kind(request(&p, "api.test", 443, "POST", "/other")),
            Some(DenyKind::Method)
        );
    }

    #[test]
    fn numeric_hosts_are_matched_in_canonical_form() {
        let p = policy(serde_json::json!([{"host": "127.0.0.1"}]));
        assert_eq!(denied_kind(request(&p, "2130706433", 80, "GET", "/")), None);
        assert_eq!(denied_kind(request(&p, "0x7f.1", 80, "GET", "/")), None);
        assert_eq!(
            denied_kind(request(&p, "127.0.0.2", 80, "GET", "/")),
            Some(DenyKind::Host)
        );
    }

    #[test]
    fn invalid_rules_are_rejected() {
        for rules in [
            serde_json::json!([{"host": ""}]),
            serde_json::json!([{"host": "*"}]),
            serde_json::json!([{"host": "a.*.test"}]),
            serde_json::json!([{"host": "a.test", "ports": []}]),
            serde_json::json!([{"host": "a.test", "path_prefixes": ["v1"]}]),
            serde_json::json!([{"host": "a.test", "path_prefixes": ["/v1/../"]}]),
            serde_json::json!([{"host": "a.test", "path_prefixes": ["/v1/%2e%2e/"]}]),
        ] {
            let cfg: EgressConfig = serde_json::from_value(
                serde_json::json!({"bottle_slug": "b", "allow": rules.clone()}),
            )
            .unwrap();
            assert!(AllowPolicy::from_config(&cfg).is_err(), "{rules}");
        }
    }

    #[test]
    fn denial_body_names_the_block_and_the_allow_command() {
        let p = policy(serde_json::json!([]));
        let Decision::Deny(denial) = request(&p, "evil.test", 443, "GET", "/") else {
            panic!("expected deny");
        };
        let body = denial.response_body(p.bottle_slug(), "GET https://evil.test/");
        assert!(body.contains("blocked GET https://evil.test/"), "{body}");
        assert!(
            body.contains("not in the bottle's egress allowlist"),
            "{body}"
        );
        assert!(
            body.contains("bottle egress allow b1 evil.test\n"),
            "{body}"
        );
        let Decision::Deny(denial) = request(&p, "evil.test", 8443, "GET", "/") else {
            panic!("expected deny");
        };
        assert!(
            denial
                .response_body("b1", "x")
                .contains("bottle egress allow b1 evil.test:8443\n")
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A DNS label; the top-level label is alphabetic (as real TLDs are),
        /// otherwise a name like `0.0.0` is an IP address, not a name.
        fn label() -> impl Strategy<Value = String> {
            "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
        }

        proptest! {
            #[test]
            fn normalization_is_idempotent(host in "\\PC{0,40}") {
                let once = normalize_host(&host);
                prop_assert_eq!(normalize_host(&once), once);
            }

            #[test]
            fn suffix_rules_match_subdomains_never_the_apex(
                sub in label(), a in label(), b in "[a-z]{2,6}", upper in any::<bool>()
            ) {
                let apex = format!("{a}.{b}");
                let pattern = HostPattern::parse(&format!("*.{apex}")).unwrap();
                let host = format!("{sub}.{apex}");
                let host = if upper { host.to_ascii_uppercase() } else { host };
                prop_assert!(pattern.matches(&normalize_host(&host)));
                prop_assert!(!pattern.matches(&normalize_host(&apex)));
                let glued = normalize_host(&format!("{sub}{apex}"));
                prop_assert!(!pattern.matches(&glued));
            }

            #[test]
            fn decisions_never_panic_and_request_allow_implies_connect_allow(
                host in "\\PC{0,30}",
                port in any::<u16>(),
                method in "[A-Za-z]{0,8}",
                path in "\\PC{0,60}",
            ) {
                let p = policy(serde_json::json!([
                    {"host": "*.example.com", "methods": ["GET"], "path_prefixes": ["/v1/"]},
                    {"host": "api.test", "ports": [443, 8443]},
                    {"host": "127.0.0.1"}
                ]));
                let host = normalize_host(&host);
                let Ok(path) = NormalizedTarget::parse(&path) else { return Ok(()) };
                let target = RequestTarget { host: &host, port, method: &method, path: &path };
                if let Decision::Allow { .. } = p.check_request(&target) {
                    let connect_allowed = matches!(p.check_connect(&host, port), Decision::Allow { .. });
                    prop_assert!(connect_allowed);
                }
            }

            #[test]
            fn unknown_hosts_are_denied_whatever_the_request(
                sub in label(), method in "[A-Z]{1,7}", path in "/\\PC{0,40}", port in any::<u16>()
            ) {
                let p = policy(serde_json::json!([{"host": "*.example.com"}, {"host": "api.test"}]));
                let host = normalize_host(&format!("{sub}.example.org"));
                let Ok(path) = NormalizedTarget::parse(&path) else { return Ok(()) };
                let target = RequestTarget { host: &host, port, method: &method, path: &path };
                prop_assert!(matches!(p.check_request(&target), Decision::Deny(_)));
            }
        }
    }
}
