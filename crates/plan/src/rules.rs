//! Syntax rules for the values a manifest holds: each returns the normalized value or
//! the reason it is refused. Pure string work, unit-tested here.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// A destination host pattern: an exact name (or IP) or every subdomain of a suffix.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum HostPattern {
    /// `api.example.com`: that host only.
    Exact(String),
    /// `*.example.com`: any subdomain of `example.com`, not `example.com` itself.
    Suffix(String),
}

impl HostPattern {
    /// Parses and lowercases a pattern.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.contains("://") {
            return Err("write the bare host name, without a scheme".into());
        }
        if raw.contains('/') {
            return Err("write the host only; paths go in `paths`".into());
        }
        if raw.parse::<IpAddr>().is_ok() {
            return Ok(Self::Exact(raw.to_ascii_lowercase()));
        }
        if raw.contains(':') {
            return Err("write the host only; ports go in `ports`".into());
        }
        let lower = raw.to_ascii_lowercase();
        let (suffix, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, lower),
        };
        if name.contains('*') {
            return Err("`*` is allowed only as a leading `*.` label".into());
        }
        check_dns_name(&name)?;
        if looks_like_numeric_address(&name) {
            return Err("this spells an IP address (resolvers read `0x7f.1` or `127.1` as one); write addresses in dotted decimal".into());
        }
        if suffix && !name.contains('.') {
            return Err(
                "a wildcard must sit under a domain with at least two labels (`*.example.com`)"
                    .into(),
            );
        }
        Ok(if suffix {
            Self::Suffix(name)
        } else {
            Self::Exact(name)
        })
    }

    /// Whether this pattern admits `host` (already lowercase, no trailing dot).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => name == host,
            Self::Suffix(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Suffix(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

impl From<HostPattern> for String {
    fn from(pattern: HostPattern) -> String {
        pattern.to_string()
    }
}

impl TryFrom<String> for HostPattern {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

fn check_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the host name is empty".into());
    }
    if name.ends_with('.') {
        return Err("drop the trailing dot".into());
    }
    if name.len() > 253 {
        return Err("a host name has at most 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row)".into());
        }
        if label.len() > 63 {
            return Err("a label has at most 63 characters".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("a host name has only letters, digits, `-` and `.`".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label cannot start or end with `-`".into());
        }
    }
    Ok(())
}

/// Whether every label of `name` is a number (decimal, `0x` hex or octal): resolvers
/// and proxies read such a name as an IPv4 address (`0x7f.1`, `127.1`, `2130706433`),
/// so it must not pass as a host name that hides an internal address.
pub fn looks_like_numeric_address(name: &str) -> bool {
    name.split('.').all(|label| {
        let digits = label
            .strip_prefix("0x")
            .or_else(|| label.strip_prefix("0X"));
        match digits {
            Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
            None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
        }
    })
}

/// Names of bottles and agents: they end up in compose project and container names.
pub fn check_resource_name(name: &str) -> Result<(), &'static str> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.as_bytes()[0].is_ascii_lowercase() | name.as_bytes()[0].is_ascii_digit()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err("use 1 to 40 lowercase letters, digits and `-`, starting with a letter or digit")
    }
}

/// Upstream names: they appear in the gate URL `/<name>.git`.
pub fn check_upstream_name(name: &str) -> Result<(), &'static str> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.ends_with(".git");
    if ok {
        Ok(())
    } else {
        Err(
            "use letters, digits, `-`, `_` and `.`, starting with a letter or digit, without a `.git` suffix",
        )
    }
}

/// Docker container names.
pub fn check_container_name(name: &str) -> Result<(), &'static str> {
    let ok = name.len() >= 2
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err("Docker accepts letters, digits, `_`, `.` and `-`, starting with a letter or digit")
    }
}

/// Environment variable names.
pub fn check_env_name(name: &str) -> Result<(), &'static str> {
    let mut bytes = name.bytes();
    let ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err("use letters, digits and `_`, not starting with a digit")
    }
}

/// HTTP methods the allowlist understands.
pub const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

/// Normalizes a method to upper case and checks it is a known one.
pub fn parse_method(raw: &str) -> Result<String, String> {
    let upper = raw.to_ascii_uppercase();
    if METHODS.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!(
            "not an HTTP method; use one of {}",
            METHODS.join(", ")
        ))
    }
}

/// A path prefix for the allowlist or a route.
pub fn check_path_prefix(raw: &str) -> Result<(), &'static str> {
    if !raw.starts_with('/') {
        return Err("a path prefix starts with `/`");
    }
    if raw.contains(['?', '#']) || raw.chars().any(char::is_whitespace) {
        return Err("a path prefix has no query, fragment or whitespace");
    }
    // The proxy matches normalised paths: a prefix with dot segments (however
    // spelled) or a backslash would never match, or would match more than it says.
    let lower = raw.to_ascii_lowercase();
    if lower.contains('\\')
        || lower.contains("%5c")
        || lower.contains("%2e")
        || raw.split('/').any(|segment| {
            segment
                .split(';')
                .next()
                .is_some_and(|s| s == "." || s == "..")
        })
    {
        return Err(
            "a path prefix has no `.` or `..` segments and no backslash; write the path as the server sees it",
        );
    }
    Ok(())
}

/// Header names a route may set. Framing and routing headers are refused: setting
/// them would let a route break or redirect the request.
pub fn parse_header_name(raw: &str) -> Result<String, &'static str> {
    const TCHAR_EXTRA: &[u8] = b"!#$%&'*+-.^_`|~";
    let lower = raw.to_ascii_lowercase();
    if lower.is_empty()
        || !lower
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || TCHAR_EXTRA.contains(&b))
    {
        return Err("a header name has only letters, digits and `-` (RFC 9110 token)");
    }
    if matches!(
        lower.as_str(),
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "upgrade"
            | "te"
            | "trailer"
    ) {
        return Err("framing and routing headers cannot carry a credential");
    }
    Ok(lower)
}

/// An address range in CIDR notation; a bare address means a single host.
pub fn parse_cidr(raw: &str) -> Result<String, String> {
    let (addr, len) = match raw.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (raw, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| "not an IP address (e.g. `10.1.2.3/32` or `fd00::1/128`)".to_string())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(text) => text
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("the prefix length must be 0 to {max}"))?,
    };
    Ok(format!("{ip}/{len}"))
}

/// An upstream proxy URL, `http://host:port`: its lowercase host (an IPv6
/// address without brackets) and port. No credentials in the URL (they would sit in
/// the manifest and the sidecar's config file), no path, no other scheme.
pub fn parse_proxy_url(raw: &str) -> Result<(String, u16), String> {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Err("write the proxy as `http://host:port`".into());
    };
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!(
            "the sidecar speaks plain HTTP to its proxy (CONNECT for TLS targets); write `http://`, not `{scheme}://`"
        ));
    }
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(
            "no credentials in the URL: put `user:password` in a host variable and name it in `credentials_env`"
                .into(),
        );
    }
    if !path.is_empty() && path != "/" {
        return Err("a proxy URL has no path, query or fragment".into());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| "an IPv6 address needs its closing `]`".to_string())?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not an IPv6 address between `[` and `]`".into());
        }
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = port.filter(|p| !p.is_empty()).ok_or_else(|| {
        "give the proxy's port, e.g. `http://proxy.corp.example:3128`".to_string()
    })?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| "the port is a number from 1 to 65535".to_string())?;
    let host = host.to_ascii_lowercase();
    if host.parse::<IpAddr>().is_err() {
        check_dns_name(&host)?;
        if looks_like_numeric_address(&host) {
            return Err("write the proxy's address in dotted decimal".into());
        }
    }
    Ok((host, port))
}

/// A `no_proxy` entry, normalized: `.example.com` (that domain and its subdomains;
/// `*.example.com` is read the same), an exact host or address, or a CIDR
/// (`10.0.0.0/8`).
pub fn parse_no_proxy(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw == "*" {
        return Err(
            "`*` would bypass the proxy for everything; remove `upstream_proxy` instead".into(),
        );
    }
    if raw.contains('/') {
        return parse_cidr(raw);
    }
    if let Ok(ip) = raw
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(ip.to_string());
    }
    if raw.contains(':') {
        return Err("write the host only: `no_proxy` has no ports".into());
    }
    let lower = raw.to_ascii_lowercase();
    let (suffix, name) = match lower.strip_prefix("*.").or_else(|| lower.strip_prefix('.')) {
        Some(rest) => (true, rest.to_owned()),
        None => (false, lower),
    };
    if name.contains('*') {
        return Err("`*` is allowed only as a leading `*.` label".into());
    }
    check_dns_name(&name)?;
    if looks_like_numeric_address(&name) {
        return Err("write addresses in dotted decimal".into());
    }
    Ok(if suffix { format!(".{name}") } else { name })
}

/// A ref pattern for pushes: `refs/...` with `*` as the only wildcard.
pub fn check_ref_pattern(raw: &str) -> Result<(), &'static str> {
    if !raw.starts_with("refs/") {
        return Err("a ref pattern starts with `refs/` (e.g. `refs/heads/agent/*`)");
    }
    if raw.contains("..")
        || raw.contains("//")
        || raw.ends_with('/')
        || raw
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?[\\".contains(c))
    {
        return Err("not a valid git ref name; only `*` may be used as a wildcard");
    }
    Ok(())
}

/// An SSH URL for an upstream: `ssh://[user@]host[:port]/path` or `user@host:path`.
pub fn check_ssh_url(raw: &str) -> Result<(), &'static str> {
    const ONLY_SSH: &str = "the git gate reaches upstreams over SSH: use `ssh://git@host/path.git` or `git@host:path.git`";
    if let Some(rest) = raw.strip_prefix("ssh://") {
        let (authority, path) = rest.split_once('/').ok_or(ONLY_SSH)?;
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = match host_port.rsplit_once(':') {
            Some((host, port)) if !host_port.ends_with(']') => {
                port.parse::<u16>()
                    .map_err(|_| "the port is not a number")?;
                host
            }
            _ => host_port,
        };
        if host.is_empty() || path.is_empty() {
            return Err(ONLY_SSH);
        }
        return Ok(());
    }
    if raw.contains("://") {
        return Err(ONLY_SSH);
    }
    match raw.split_once(':') {
        Some((user_host, path))
            if !user_host.is_empty() && !path.is_empty() && !user_host.contains('/') =>
        {
            Ok(())
        }
        _ => Err(ONLY_SSH),
    }
}

/// Docker memory sizes: a number of bytes with an optional `b`, `k`, `m` or `g` unit.
pub fn parse_memory(raw: &str) -> Result<u64, &'static str> {
    const FORMAT: &str = "write a size like `512m`, `4g` or a number of bytes";
    let lower = raw.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower).to_owned();
    let (digits, unit) = match lower.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let number: u64 = digits.parse().map_err(|_| FORMAT)?;
    let scale: u64 = match unit.trim_end_matches('i') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(FORMAT),
    };
    let bytes = number.checked_mul(scale).ok_or("too large")?;
    if bytes < 6 << 20 {
        return Err("Docker needs at least 6m");
    }
    Ok(bytes)
}

/// Whether an address is one the SSRF exemption list should never need to widen to.
pub(crate) fn is_unspecified_cidr(cidr: &str) -> bool {
    cidr.ends_with("/0") || cidr.starts_with(&Ipv4Addr::UNSPECIFIED.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert_eq!(
            HostPattern::parse("API.Example.com"),
            Ok(HostPattern::Exact("api.example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("*.github.com"),
            Ok(HostPattern::Suffix("github.com".into()))
        );
        assert_eq!(
            HostPattern::parse("10.0.0.1"),
            Ok(HostPattern::Exact("10.0.0.1".into()))
        );
        for bad in [
            "https://x.com",
            "x.com/a",
            "x.com:443",
            "*",
            "*.com",
            "a.*.com",
            "a..com",
            "-a.com",
            "a.com.",
            "a_b.com",
            "",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn suffix_matches_subdomains_only() {
        let p = HostPattern::parse("*.github.com").unwrap();
        assert!(p.matches("api.github.com"));
        assert!(p.matches("a.b.github.com"));
        assert!(!p.matches("github.com"));
        assert!(!p.matches("evilgithub.com"));
        assert!(!p.matches(".github.com"));
        let e = HostPattern::parse("github.com").unwrap();
        assert!(e.matches("github.com") && !e.matches("api.github.com"));
    }

    #[test]
    fn names() {
        assert!(check_resource_name("implementer-2").is_ok());
        for bad in ["", "Impl", "-x", "a_b", "a.b", &"x".repeat(41)] {
            assert!(check_resource_name(bad).is_err(), "{bad}");
        }
        assert!(check_upstream_name("origin").is_ok());
        assert!(check_upstream_name("my.repo_2").is_ok());
        assert!(check_upstream_name("repo.git").is_err());
        assert!(check_upstream_name("a/b").is_err());
        assert!(check_env_name("_A1").is_ok());
        assert!(check_env_name("1A").is_err());
        assert!(check_env_name("A-B").is_err());
        assert!(check_container_name("my-agent_1.x").is_ok());
        assert!(check_container_name("-x").is_err());
    }

    #[test]
    fn methods_paths_headers() {
        assert_eq!(parse_method("get").unwrap(), "GET");
        assert!(parse_method("FETCH").is_err());
        assert!(check_path_prefix("/v1/").is_ok());
        assert!(check_path_prefix("v1").is_err());
        assert!(check_path_prefix("/a?b").is_err());
        for dotted in [
            "/v1/../",
            "/v1/./x",
            "/v1/..;/",
            "/v1/%2e%2E/",
            "/v1\\x",
            "/v1%5Cx",
        ] {
            assert!(check_path_prefix(dotted).is_err(), "{dotted}");
        }
        assert!(check_path_prefix("/v1.2/a..b/").is_ok());
        assert_eq!(parse_header_name("X-Api-Key").unwrap(), "x-api-key");
        assert!(parse_header_name("Host").is_err());
        assert!(parse_header_name("bad header").is_err());
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.1.2.3").unwrap(), "10.1.2.3/32");
        assert_eq!(parse_cidr("fd00::1").unwrap(), "fd00::1/128");
        assert_eq!(parse_cidr("172.16.0.0/12").unwrap(), "172.16.0.0/12");
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
        assert!(is_unspecified_cidr("0.0.0.0/0"));
    }

    #[test]
    fn refs_and_urls() {
        assert!(check_ref_pattern("refs/heads/agent/*").is_ok());
        for bad in [
            "heads/x",
            "refs/heads/a..b",
            "refs/heads/a b",
            "refs/heads/",
            "refs/heads/x:y",
        ] {
            assert!(check_ref_pattern(bad).is_err(), "{bad}");
        }
        for good in [
            "ssh://git@host/p.git",
            "ssh://git@host:2222/p.git",
            "git@github.com:org/r.git",
            "ssh://[::1]/r",
        ] {
            assert!(check_ssh_url(good).is_ok(), "{good}");
        }
        for bad in [
            "https://github.com/o/r.git",
            "file:///tmp/r",
            "/tmp/r",
            "ssh://host",
            "ssh://h:xx/p",
        ] {
            assert!(check_ssh_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("4g").unwrap(), 4 << 30);
        assert_eq!(parse_memory("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_memory("1073741824").unwrap(), 1 << 30);
        assert!(parse_memory("1k").is_err());
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("99999999999999g").is_err());
    }

    #[test]
    fn proxy_urls() {
        for (raw, host, port) in [
            ("http://proxy.corp.example:3128", "proxy.corp.example", 3128),
            (
                "HTTP://Proxy.Corp.Example:8080/",
                "proxy.corp.example",
                8080,
            ),
            ("http://10.0.0.5:3128", "10.0.0.5", 3128),
            ("http://[fd00::5]:3128", "fd00::5", 3128),
        ] {
            assert_eq!(
                parse_proxy_url(raw).unwrap(),
                (host.to_owned(), port),
                "{raw}"
            );
        }
        for (bad, why) in [
            ("https://proxy:3128", "plain HTTP"),
            ("proxy:3128", "http://host:port"),
            ("http://user:pw@proxy:3128", "credentials_env"),
            ("http://proxy", "port"),
            ("http://proxy:", "port"),
            ("http://proxy:0", "1 to 65535"),
            ("http://proxy:99999", "1 to 65535"),
            ("http://proxy:3128/path", "no path"),
            ("http://proxy:3128?x", "no path"),
            ("http://pro xy:3128", "letters"),
            ("http://0x7f.1:3128", "dotted decimal"),
            ("http://[zz]:3128", "IPv6"),
        ] {
            let err = parse_proxy_url(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn no_proxy_entries() {
        for (raw, normal) in [
            (".Internal.Example", ".internal.example"),
            ("*.internal.example", ".internal.example"),
            ("localhost", "localhost"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3", "10.1.2.3"),
            ("[::1]", "::1"),
        ] {
            assert_eq!(parse_no_proxy(raw).unwrap(), normal, "{raw}");
        }
        for bad in ["*", "host:80", "a*.b", "10.0.0.0/99", "..x", "127.1"] {
            assert!(parse_no_proxy(bad).is_err(), "{bad}");
        }
    }
}
