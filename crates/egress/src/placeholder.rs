//! Placeholders never leave the proxy. Pure: no IO, no clock.
//!
//! The agent holds a placeholder instead of each real credential; a route
//! (host, optional path prefix, header) makes the proxy set the real value in
//! its header on https requests to its host. The rule, whatever the DLP
//! setting: once the route that applies (if any) has set its header, a request
//! that still carries any of the bottle's placeholders anywhere is refused —
//! in its host, path or query (as sent and percent-decoded), in any header name
//! or value the proxy would forward, in a trailer, or in the body. Placeholders
//! are matched as declared, lower-cased (as host names are), and
//! percent-encoded with upper- or lower-case hex.
//!
//! Bodies go through the DLP body scanner ([`crate::dlp::BodyScanner`]) with a
//! hold-back window at least as long as the longest placeholder form, so not
//! even part of a placeholder leaves; a hit mid-body aborts the upstream
//! request like a DLP finding.
//!
//! A refusal ([`Unreplaced`]) names the agent's variable, where the
//! placeholder was found (never the value, never the request's path) and why
//! the route did not replace it: the route sets another header, the path is
//! outside the route's path prefix, the request is plain http, or the host has
//! no route for it. Its audit rule is `placeholder-not-replaced:VAR`.
//!
//! One small aho-corasick automaton per policy version, built from the routes
//! ([`crate::live`]); clean traffic costs one automaton pass over the URL, each
//! header and each body chunk.

use std::fmt;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use hyper::header::{HeaderMap, HeaderName};
use percent_encoding::percent_decode;

use crate::dlp::percent_encoded_forms;

/// Placeholders shorter than this would match ordinary traffic; a policy
/// with one is refused.
pub const MIN_PLACEHOLDER_LEN: usize = 8;

/// The rule name prefix of a refusal, in denials and the audit log.
pub const RULE_PREFIX: &str = "placeholder-not-replaced";

/// What the guard needs of one credential route, in the policy's route order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardedRoute {
    /// The agent's variable holding the placeholder (named in refusals).
    pub var: String,
    /// The placeholder, if the route declares one.
    pub placeholder: Option<String>,
    /// The normalized host the route applies to.
    pub host: String,
    /// The route's path prefix, if any.
    pub path_prefix: Option<String>,
    /// The header the route sets (lower case).
    pub header: String,
}

/// Which placeholder was found (an index into the guard's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaceholderId(usize);

/// Where in a request a placeholder was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The destination host name.
    Host,
    /// The path or query.
    Url,
    /// A header's value (the header name is not secret).
    Header(String),
    /// A header's name.
    HeaderName,
    /// A trailer's value (sent after a chunked body).
    Trailer(String),
    /// The body.
    Body,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host => f.write_str("the host name"),
            Self::Url => f.write_str("the URL"),
            Self::Header(name) => write!(f, "header `{name}`"),
            Self::HeaderName => f.write_str("a header name"),
            Self::Trailer(name) => write!(f, "trailer `{name}`"),
            Self::Body => f.write_str("the body"),
        }
    }
}

/// The request as far as explaining a refusal needs it.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// Normalized destination host.
    pub host: &'a str,
    /// Whether the request is TLS-protected (routes only apply then).
    pub https: bool,
    /// Index (in the policy's route order) of the route that set its header
    /// on this request, if one did.
    pub applied_route: Option<usize>,
}

/// A refusal: a placeholder would have left the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreplaced {
    /// The agent's variable whose placeholder was found.
    pub var: String,
    /// Where it was found.
    pub location: Location,
    /// Why no route replaced it (never quotes the request).
    pub why: String,
}

impl Unreplaced {
    /// The rule name for denials and the audit log.
    pub fn rule(&self) -> String {
        format!("{RULE_PREFIX}:{}", self.var)
    }

    /// One sentence for the agent and the audit log.
    pub fn reason(&self) -> String {
        format!("placeholder of {} not replaced: {}", self.var, self.why)
    }
}

struct Entry {
    /// Variable name(s) holding this placeholder.
    var: String,
    /// Indexes of the routes that replace it.
    routes: Vec<usize>,
}

/// The compiled placeholders of one policy version.
pub struct PlaceholderGuard {
    automaton: Option<AhoCorasick>,
    /// Pattern index -> entry index.
    form_entry: Vec<usize>,
    entries: Vec<Entry>,
    routes: Vec<GuardedRoute>,
    longest_form: usize,
}

impl fmt::Debug for PlaceholderGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlaceholderGuard")
            .field("placeholders", &self.entries.len())
            .field("forms", &self.form_entry.len())
            .finish_non_exhaustive()
    }
}

impl PlaceholderGuard {
    /// Compiles the placeholders of `routes` (in the policy's route order).
    pub fn new(routes: Vec<GuardedRoute>) -> Result<Self, String> {
        let mut keys: Vec<String> = Vec::new();
        let mut entries: Vec<Entry> = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            let Some(placeholder) = route.placeholder.as_deref() else {
                continue;
            };
            if placeholder.len() < MIN_PLACEHOLDER_LEN {
                return Err(format!(
                    "routes[{index}]: the placeholder must be at least {MIN_PLACEHOLDER_LEN} characters"
                ));
            }
            let key = placeholder.to_owned();
            match keys.iter().position(|k| *k == key) {
                Some(existing) => {
                    let entry = &mut entries[existing];
                    entry.routes.push(index);
                    if !entry.var.split('/').any(|v| v == route.var) {
                        entry.var = format!("{}/{}", entry.var, route.var);
                    }
                }
                None => {
                    keys.push(key);
                    entries.push(Entry {
                        var: route.var.clone(),
                        routes: vec![index],
                    });
                }
            }
        }
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut form_entry = Vec::new();
        for (entry, key) in keys.iter().enumerate() {
            let mut forms = vec![
                key.as_bytes().to_vec(),
                key.to_ascii_lowercase().into_bytes(),
            ];
            for encoded in percent_encoded_forms(key) {
                forms.push(lower_hex_escapes(&encoded));
                forms.push(encoded);
            }
            forms.sort();
            forms.dedup();
            for form in forms {
                patterns.push(form);
                form_entry.push(entry);
            }
        }
        let longest_form = patterns.iter().map(Vec::len).max().unwrap_or(0);
        // Case-sensitive on purpose: the explicit forms above cover what
        // matters, and this keeps the automaton's fast prefilter.
        let automaton = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(&patterns)
                    .map_err(|e| format!("cannot index the placeholders: {e}"))?,
            )
        };
        Ok(Self {
            automaton,
            form_entry,
            entries,
            routes,
            longest_form,
        })
    }

    /// Whether there is any placeholder to look for.
    pub fn is_empty(&self) -> bool {
        self.automaton.is_none()
    }

    /// Bytes a streaming scan must keep (and hold back) between chunks.
    pub fn window(&self) -> usize {
        self.longest_form
    }

    /// The first placeholder in `data`, if any.
    pub fn find(&self, data: &[u8]) -> Option<PlaceholderId> {
        let hit = self.automaton.as_ref()?.find(data)?;
        Some(PlaceholderId(self.form_entry[hit.pattern().as_usize()]))
    }

    /// The request line: the host, and the path and query as sent and
    /// percent-decoded (so `%2D`, `%252D` and friends do not hide one).
    pub fn check_url(&self, ctx: &RequestContext<'_>, path_and_query: &str) -> Option<Unreplaced> {
        if self.is_empty() {
            return None;
        }
        if let Some(id) = self.find(ctx.host.as_bytes()) {
            return Some(self.explain(id, Location::Host, ctx));
        }
        let raw = path_and_query.as_bytes();
        let found = self.find(raw).or_else(|| {
            raw.contains(&b'%')
                .then(|| self.find(&percent_decode(raw).collect::<Vec<u8>>()))
                .flatten()
        });
        found.map(|id| self.explain(id, Location::Url, ctx))
    }

    /// The headers as they would be forwarded (after the route set its
    /// header, which is `injected` and holds the real value: not scanned).
    pub fn check_headers(
        &self,
        ctx: &RequestContext<'_>,
        headers: &HeaderMap,
        injected: Option<&HeaderName>,
    ) -> Option<Unreplaced> {
        if self.is_empty() {
            return None;
        }
        for (name, value) in headers {
            if injected == Some(name) {
                continue;
            }
            if let Some(id) = self.find(name.as_str().as_bytes()) {
                return Some(self.explain(id, Location::HeaderName, ctx));
            }
            if let Some(id) = self.find(value.as_bytes()) {
                return Some(self.explain(id, Location::Header(name.to_string()), ctx));
            }
        }
        None
    }

    /// Trailers of a chunked body: any placeholder in them.
    pub fn find_in_trailers(&self, trailers: &HeaderMap) -> Option<(PlaceholderId, Location)> {
        if self.is_empty() {
            return None;
        }
        trailers.iter().find_map(|(name, value)| {
            if let Some(id) = self.find(name.as_str().as_bytes()) {
                return Some((id, Location::HeaderName));
            }
            self.find(value.as_bytes())
                .map(|id| (id, Location::Trailer(name.to_string())))
        })
    }

    /// Why the placeholder `id`, found at `location`, was not replaced.
    pub fn explain(
        &self,
        id: PlaceholderId,
        location: Location,
        ctx: &RequestContext<'_>,
    ) -> Unreplaced {
        let entry = &self.entries[id.0];
        let carries = format!("this request carries the placeholder in {location}");
        let own_routes = || entry.routes.iter().map(|&i| &self.routes[i]);
        let on_this_host: Vec<&GuardedRoute> =
            own_routes().filter(|r| r.host == ctx.host).collect();
        let applied = ctx.applied_route.and_then(|i| self.routes.get(i));
        let why = if let Some(route) = ctx
            .applied_route
            .filter(|i| entry.routes.contains(i))
            .and_then(|i| self.routes.get(i))
        {
            format!(
                "the route for {} sets `{}`; {carries}",
                route.host, route.header
            )
        } else if on_this_host.is_empty() {
            let mut hosts: Vec<&str> = own_routes().map(|r| r.host.as_str()).collect();
            hosts.sort_unstable();
            hosts.dedup();
            format!(
                "this host has no route for it (it is replaced only in https requests to {}); \
                 {carries}",
                hosts.join(", ")
            )
        } else if !ctx.https {
            format!(
                "the route for {} sets `{}` in https requests only, and this one is plain http; \
                 {carries}",
                ctx.host, on_this_host[0].header
            )
        } else if let Some(other) = applied {
            format!(
                "the route for {} that applies to this path sets `{}` for {}, not for {}; {carries}",
                other.host, other.header, other.var, entry.var
            )
        } else {
            let mut prefixes: Vec<&str> = on_this_host
                .iter()
                .filter_map(|r| r.path_prefix.as_deref())
                .collect();
            prefixes.sort_unstable();
            prefixes.dedup();
            format!(
                "the request's path is outside the route's path prefix {} (the route for {} \
                 sets `{}` only there); {carries}",
                prefixes.join(", "),
                ctx.host,
                on_this_host[0].header
            )
        };
        Unreplaced {
            var: entry.var.clone(),
            location,
            why,
        }
    }
}

/// `%2D` -> `%2d`: the same percent-encoding with lower-case hex digits.
fn lower_hex_escapes(encoded: &[u8]) -> Vec<u8> {
    let mut out = encoded.to_vec();
    let mut i = 0;
    while i < out.len() {
        if out[i] == b'%' {
            for digit in out.iter_mut().skip(i + 1).take(2) {
                digit.make_ascii_lowercase();
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    const ANTHROPIC: &str = "sk-ant-api03-bottle-placeholderxxxxxxxxxxxxxxxx";
    const GITHUB: &str = "ghp_bottle-placeholderxxxxxxxxxxxxxxxxxx";

    fn guard() -> PlaceholderGuard {
        PlaceholderGuard::new(vec![
            GuardedRoute {
                var: "ANTHROPIC_API_KEY".to_owned(),
                placeholder: Some(ANTHROPIC.to_owned()),
                host: "api.anthropic.com".to_owned(),
                path_prefix: None,
                header: "x-api-key".to_owned(),
            },
            GuardedRoute {
                var: "GITHUB_TOKEN".to_owned(),
                placeholder: Some(GITHUB.to_owned()),
                host: "api.github.com".to_owned(),
                path_prefix: Some("/repos/".to_owned()),
                header: "authorization".to_owned(),
            },
        ])
        .unwrap()
    }

    fn https<'a>(host: &'a str, applied_route: Option<usize>) -> RequestContext<'a> {
        RequestContext {
            host,
            https: true,
            applied_route,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_replaced_route_header_passes() {
        let g = guard();
        let ctx = https("api.anthropic.com", Some(0));
        let sent = headers(&[("x-api-key", "the-real-value"), ("accept", "*/*")]);
        let injected = HeaderName::from_static("x-api-key");
        assert_eq!(g.check_headers(&ctx, &sent, Some(&injected)), None);
        assert_eq!(g.check_url(&ctx, "/v1/messages?beta=true"), None);
    }

    #[test]
    fn another_header_on_the_route_host_is_refused_and_says_which() {
        let g = guard();
        let ctx = https("api.anthropic.com", Some(0));
        let sent = headers(&[
            ("x-api-key", "the-real-value"),
            ("authorization", &format!("Bearer {ANTHROPIC}")),
        ]);
        let injected = HeaderName::from_static("x-api-key");
        let refusal = g.check_headers(&ctx, &sent, Some(&injected)).unwrap();
        assert_eq!(refusal.var, "ANTHROPIC_API_KEY");
        assert_eq!(refusal.rule(), "placeholder-not-replaced:ANTHROPIC_API_KEY");
        assert_eq!(
            refusal.location,
            Location::Header("authorization".to_owned())
        );
        assert!(
            refusal
                .why
                .contains("the route for api.anthropic.com sets `x-api-key`"),
            "{}",
            refusal.why
        );
        assert!(
            refusal.reason().contains("header `authorization`"),
            "{}",
            refusal.reason()
        );
    }

    #[test]
    fn url_placeholders_are_found_raw_encoded_and_in_the_host() {
        let g = guard();
        let ctx = https("api.anthropic.com", Some(0));
        let encoded: String = ANTHROPIC
            .bytes()
            .map(|b| {
                if b == b'-' {
                    "%2d".to_owned()
                } else {
                    (b as char).to_string()
                }
            })
            .collect();
        let double = ANTHROPIC.replace('-', "%252D");
        for url in [
            format!("/v1/messages?key={ANTHROPIC}"),
            format!("/v1/{encoded}"),
            format!("/v1/x?k={double}"),
        ] {
            let refusal = g.check_url(&ctx, &url).unwrap_or_else(|| panic!("{url}"));
            assert_eq!(refusal.location, Location::Url, "{url}");
            assert!(
                !refusal.reason().contains(ANTHROPIC),
                "{}",
                refusal.reason()
            );
        }
        let short = "AKIAbottle-placeholderxxxx";
        let g2 = PlaceholderGuard::new(vec![GuardedRoute {
            var: "T".to_owned(),
            placeholder: Some(short.to_owned()),
            host: "api.github.com".to_owned(),
            path_prefix: None,
            header: "authorization".to_owned(),
        }])
        .unwrap();
        let host = format!("{}.example.com", short.to_ascii_lowercase());
        let refusal = g2.check_url(&https(&host, None), "/").unwrap();
        assert_eq!(refusal.location, Location::Host);
        // As declared (upper case kept) in a body or header.
        assert!(g2.find(format!("key={short}").as_bytes()).is_some());
    }

    #[test]
    fn outside_the_path_prefix_the_route_header_is_not_replaced() {
        let g = guard();
        // No route applied: /user is outside /repos/.
        let ctx = https("api.github.com", None);
        let sent = headers(&[("authorization", &format!("token {GITHUB}"))]);
        let refusal = g.check_headers(&ctx, &sent, None).unwrap();
        assert_eq!(refusal.var, "GITHUB_TOKEN");
        assert!(
            refusal
                .why
                .contains("outside the route's path prefix /repos/"),
            "{}",
            refusal.why
        );
    }

    #[test]
    fn a_host_without_a_route_for_it_is_named_as_such() {
        let g = guard();
        let ctx = https("evil.test", None);
        let refusal = g
            .check_headers(&ctx, &headers(&[("x-data", ANTHROPIC)]), None)
            .unwrap();
        assert!(
            refusal.why.contains("this host has no route for it")
                && refusal.why.contains("api.anthropic.com"),
            "{}",
            refusal.why
        );
        // The route for GITHUB_TOKEN applies, but the placeholder is ANTHROPIC_API_KEY's.
        let ctx = https("api.github.com", Some(1));
        let refusal = g
            .check_headers(&ctx, &headers(&[("x-api-key", ANTHROPIC)]), None)
            .unwrap();
        assert_eq!(refusal.var, "ANTHROPIC_API_KEY");
        assert!(refusal.why.contains("no route for it"), "{}", refusal.why);
    }

    #[test]
    fn plain_http_is_never_replaced() {
        let g = guard();
        let ctx = RequestContext {
            host: "api.anthropic.com",
            https: false,
            applied_route: None,
        };
        let refusal = g
            .check_headers(&ctx, &headers(&[("x-api-key", ANTHROPIC)]), None)
            .unwrap();
        assert!(refusal.why.contains("plain http"), "{}", refusal.why);
    }

    #[test]
    fn body_chunks_and_trailers_are_found_percent_encoded_too() {
        let g = guard();
        let body = format!("{{\"k\": \"{}\"}}", ANTHROPIC.replace('-', "%2D"));
        assert!(g.find(body.as_bytes()).is_some());
        assert!(g.find(ANTHROPIC.replace('-', "%2d").as_bytes()).is_some());
        assert!(g.find(format!("a={ANTHROPIC}&b=1").as_bytes()).is_some());
        let refusal = g.explain(
            g.find(body.as_bytes()).unwrap(),
            Location::Body,
            &https("api.anthropic.com", Some(0)),
        );
        assert!(
            refusal.reason().contains("in the body"),
            "{}",
            refusal.reason()
        );
        let (_, location) = g
            .find_in_trailers(&headers(&[("x-checksum", GITHUB)]))
            .unwrap();
        assert_eq!(location, Location::Trailer("x-checksum".to_owned()));
        assert!(g.window() >= ANTHROPIC.len());
    }

    #[test]
    fn clean_requests_pass_and_findings_never_quote_the_value() {
        let g = guard();
        let ctx = https("registry.npmjs.org", None);
        assert_eq!(g.check_url(&ctx, "/left-pad/-/left-pad-1.3.0.tgz"), None);
        assert_eq!(
            g.check_headers(
                &ctx,
                &headers(&[("authorization", "Bearer ghp_bottle"), ("accept", "*/*")]),
                None
            ),
            None
        );
        assert_eq!(g.find(b"bottle-placeholder"), None);
        let refusal = g
            .check_headers(&ctx, &headers(&[("x", GITHUB)]), None)
            .unwrap();
        assert!(!format!("{refusal:?}").contains(GITHUB));
        assert!(!refusal.reason().contains(GITHUB));
    }

    #[test]
    fn short_placeholders_are_refused_and_none_means_nothing_to_do() {
        let short = PlaceholderGuard::new(vec![GuardedRoute {
            var: "T".to_owned(),
            placeholder: Some("abc".to_owned()),
            host: "a.test".to_owned(),
            path_prefix: None,
            header: "x".to_owned(),
        }]);
        assert!(short.unwrap_err().contains("at least 8"));
        let none = PlaceholderGuard::new(Vec::new()).unwrap();
        assert!(none.is_empty());
        assert_eq!(none.find(ANTHROPIC.as_bytes()), None);
    }

    #[test]
    fn a_placeholder_shared_by_two_routes_is_replaced_by_either() {
        let shared = "shared-bottle-placeholderxxxx";
        let g = PlaceholderGuard::new(
            ["a.test", "b.test"]
                .iter()
                .map(|host| GuardedRoute {
                    var: "TOKEN".to_owned(),
                    placeholder: Some(shared.to_owned()),
                    host: (*host).to_owned(),
                    path_prefix: None,
                    header: "authorization".to_owned(),
                })
                .collect(),
        )
        .unwrap();
        let refusal = g
            .check_headers(&https("c.test", None), &headers(&[("x", shared)]), None)
            .unwrap();
        assert_eq!(refusal.var, "TOKEN");
        assert!(refusal.why.contains("a.test, b.test"), "{}", refusal.why);
        let refusal = g
            .check_headers(&https("b.test", Some(1)), &headers(&[("x", shared)]), None)
            .unwrap();
        assert!(
            refusal.why.contains("the route for b.test sets"),
            "{}",
            refusal.why
        );
    }
}
