//! Data-loss prevention, pure: find this bottle's own secrets (raw and in
//! every spelling of [`encoded_form_list`]), well-known credential formats
//! ([`rules`], with vendor checksums in [`checksum`]), financial and crypto
//! identifiers, credential assignments, and operator patterns in request
//! URLs, host names, headers and bodies; wrapped secrets are unwrapped
//! first ([`layers`]: base64, hex, base32, percent, quoted-printable,
//! escapes and look-alike characters, UTF-16, gzip, several layers deep,
//! within a per-request budget), and URL parts and sub-domain labels
//! that carry encoded or random data are caught by their shape
//! ([`entropy`]). gzip and deflate request bodies are decoded and scanned
//! too, see [`crate::body`]. Findings carry a rule NAME only, never the
//! matched bytes. Placeholders are not DLP's business: they never leave the
//! proxy, whatever the DLP setting ([`crate::placeholder`]); DLP only keeps a
//! credential-format match inside a placeholder from firing.
//!
//! What a finding does depends on the destination's mode ([`DlpMode`]):
//! `block` refuses the request, `audit` lets it through and logs the rule,
//! `off` skips the rules. The bottle's own secrets are refused everywhere
//! but their own hosts, whatever the mode.
//!
//! Bodies are scanned as a stream ([`BodyScanner`]): each chunk is scanned
//! together with the last [`DlpEngine::overlap_window`] bytes of what came
//! before, so a secret split across chunks is still found, and nothing is
//! buffered beyond that window. A chunk is released upstream only after it
//! was scanned, so a complete secret never leaves; when a finding comes in
//! mid-body the transport aborts the upstream request (the upstream sees a
//! truncated request and a reset) and the client gets a 403.

pub mod checksum;
pub mod entropy;
mod forms;
mod index;
pub mod layers;
pub mod rules;
pub mod shapes;

use std::collections::BTreeMap;

use regex::bytes::{Regex, RegexBuilder};

use crate::config::DlpConfig;
pub use crate::config::DlpMode;
use crate::policy::HostPattern;
use crate::secret::SecretValue;
pub use forms::{base32_no_pad, encoded_form_list, encoded_forms, percent_encoded_forms};
pub use layers::Budget;
pub use rules::Severity;
use rules::{BUILTIN_RULES, Parts, Rule};

/// Bytes of context kept between body chunks for pattern rules; a
/// credential-format match longer than this that straddles a chunk boundary
/// can be missed (the known-secret window is sized to the secrets).
pub const PATTERN_WINDOW: usize = 2048;

/// Secrets shorter than this are only matched raw: their encodings are too
/// short to be told apart from ordinary data.
pub const MIN_ENCODED_SECRET_LEN: usize = 8;

/// What a finding does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The request is refused.
    Block,
    /// The request goes on; the finding is logged.
    Audit,
}

/// A DLP hit: which rule fired. Never the matched value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// E.g. `github-pat`, `bottle-secret:GITHUB_TOKEN`, `extra:acme-id`.
    pub rule: String,
    /// How bad it is.
    pub severity: Severity,
    /// What the destination's mode makes of it.
    pub action: Action,
}

impl Finding {
    fn blocking(rule: impl Into<String>, severity: Severity) -> Self {
        Self {
            rule: rule.into(),
            severity,
            action: Action::Block,
        }
    }
}

/// One of this bottle's credentials, as the engine needs it.
#[derive(Debug, Clone)]
pub struct KnownSecret {
    /// The env var name, used in the rule name (not secret).
    pub name: String,
    /// The real value.
    pub value: SecretValue,
    /// The placeholder the agent holds, if declared: a credential-format
    /// match inside it is not a finding (the placeholder guard refuses it).
    pub placeholder: Option<String>,
    /// The normalized host the credential belongs to.
    pub host: String,
}

struct KnownForm {
    name: String,
    allowed_hosts: Vec<String>,
}

struct ExtraRule {
    name: String,
    regex: Regex,
    allowed_hosts: Vec<HostPattern>,
}

/// What one pass of the index found in a piece of data.
struct IndexHits {
    /// Rules whose keywords are present (bit `i`: built-in rule `i`).
    rules: RuleSet,
    /// (rule, keyword start, keyword end) for rules matched after their keyword.
    anchored: Vec<(usize, usize, usize)>,
    /// (form, start) where a bottle secret's form may start (case-insensitive).
    forms: Vec<(usize, usize)>,
    /// Whether a string escape ([`layers::ESCAPES`]) may be in it: if not,
    /// the unescaping pass is skipped.
    escapes: bool,
}

/// A set of built-in rules, bit `i` for rule `i`: the rules that can fire
/// on some data are walked in order without looking at the rest.
type RuleSet = u128;

const _: () = assert!(BUILTIN_RULES.len() <= RuleSet::BITS as usize);

struct CompiledRule {
    rule: &'static Rule,
    regex: Regex,
    captures: bool,
    anchor: Option<Regex>,
}

/// Where in a request the bytes come from; some rules apply to some parts only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanPart {
    /// Path and query (raw or decoded), or the host name.
    Url,
    /// A header value.
    Header,
    /// Body bytes.
    Body,
}

/// The compiled DLP rules of one policy version.
pub struct DlpEngine {
    enabled: bool,
    default_mode: DlpMode,
    host_modes: Vec<(HostPattern, DlpMode)>,
    /// The bottle's secrets' forms, matched exactly after the index hits them.
    known_forms: Vec<(Vec<u8>, KnownForm)>,
    longest_known_form: usize,
    placeholders: Vec<Vec<u8>>,
    /// One case-insensitive automaton over the rules' keywords and the
    /// bottle's secrets' forms: a single pass per piece of data.
    index: index::Index,
    /// Index pattern -> rule, for the keywords (the escapes and then the
    /// forms come after them).
    prefilter_rule: Vec<usize>,
    builtin: Vec<CompiledRule>,
    /// The built-in rules run on shapes rather than after keywords.
    shape_rules: RuleSet,
    extra: Vec<ExtraRule>,
}

impl std::fmt::Debug for DlpEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlpEngine")
            .field("enabled", &self.enabled)
            .field("default_mode", &self.default_mode)
            .field("host_modes", &self.host_modes.len())
            .field("known_forms", &self.known_forms.len())
            .field("extra", &self.extra.len())
            .finish_non_exhaustive()
    }
}

impl DlpEngine {
    /// Compiles the rules for one policy: this bottle's secrets, the
    /// built-in credential formats, the configured extra patterns and the
    /// per-host modes.
    pub fn new(config: &DlpConfig, secrets: &[KnownSecret]) -> Result<Self, String> {
        // Group by value so a token shared by several routes is allowed on
        // each of their hosts.
        let mut by_form: BTreeMap<Vec<u8>, KnownForm> = BTreeMap::new();
        let mut placeholders = Vec::new();
        for secret in secrets {
            // Placeholders are found by the placeholder guard on every host;
            // here they only keep pattern rules from firing on them.
            if let Some(placeholder) = secret.placeholder.as_deref().filter(|p| p.len() >= 4) {
                placeholders.push(placeholder.as_bytes().to_vec());
            }
            if secret.value.expose().is_empty() {
                continue;
            }
            for form in encoded_forms(secret.value.expose()) {
                let entry = by_form.entry(form).or_insert_with(|| KnownForm {
                    name: format!("bottle-secret:{}", secret.name),
                    allowed_hosts: Vec::new(),
                });
                entry.allowed_hosts.push(secret.host.clone());
            }
        }
        let longest_known_form = by_form.keys().map(Vec::len).max().unwrap_or(0);
        let known_forms: Vec<(Vec<u8>, KnownForm)> = by_form.into_iter().collect();

        let mut keywords = Vec::new();
        let mut prefilter_rule = Vec::new();
        let mut builtin = Vec::new();
        for (index, rule) in BUILTIN_RULES.iter().enumerate() {
            let regex = RegexBuilder::new(rule.regex)
                .size_limit(1 << 22)
                .build()
                .map_err(|e| format!("dlp: built-in rule {} does not compile: {e}", rule.name))?;
            let captures = regex.captures_len() > 1;
            let anchor = rule
                .anchor
                .map(|a| {
                    Regex::new(a).map_err(|e| {
                        format!(
                            "dlp: built-in rule {} anchor does not compile: {e}",
                            rule.name
                        )
                    })
                })
                .transpose()?;
            builtin.push(CompiledRule {
                rule,
                regex,
                captures,
                anchor,
            });
            for keyword in rule.keywords {
                keywords.push(*keyword);
                prefilter_rule.push(index);
            }
        }
        let shape_rules = BUILTIN_RULES
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.anchor.is_none() && rule.shape.is_some())
            .fold(0, |set: RuleSet, (index, _)| set | 1 << index);
        let mut patterns: Vec<&[u8]> = keywords.iter().map(|k| k.as_bytes()).collect();
        patterns.extend(layers::ESCAPES);
        patterns.extend(known_forms.iter().map(|(form, _)| form.as_slice()));
        let index = index::Index::new(&patterns)
            .map_err(|e| format!("dlp: cannot build the keyword and secret index: {e}"))?;

        let extra = config
            .extra_patterns
            .iter()
            .map(|p| {
                let regex = RegexBuilder::new(&p.regex)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("dlp: extra pattern {:?}: {e}", p.name))?;
                let allowed_hosts = p
                    .allowed_hosts
                    .iter()
                    .map(|h| HostPattern::parse(h))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("dlp: extra pattern {:?}: {e}", p.name))?;
                Ok(ExtraRule {
                    name: format!("extra:{}", p.name),
                    regex,
                    allowed_hosts,
                })
            })
            .collect::<Result<_, String>>()?;
        let host_modes = config
            .hosts
            .iter()
            .map(|h| {
                HostPattern::parse(&h.host)
                    .map(|pattern| (pattern, h.mode))
                    .map_err(|e| format!("dlp: host mode {:?}: {e}", h.host))
            })
            .collect::<Result<_, String>>()?;

        Ok(Self {
            enabled: config.enabled,
            default_mode: config.mode,
            host_modes,
            known_forms,
            longest_known_form,
            placeholders,
            index,
            prefilter_rule,
            builtin,
            shape_rules,
            extra,
        })
    }

    /// Whether scanning is on at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How many bytes of a body stream are kept between chunks.
    pub fn overlap_window(&self) -> usize {
        PATTERN_WINDOW.max(self.longest_known_form)
    }

    /// The mode for `dest_host` (normalized): an exact host entry wins over
    /// a wildcard, a longer wildcard over a shorter one, then the default.
    pub fn mode_for(&self, dest_host: &str) -> DlpMode {
        self.host_modes
            .iter()
            .filter(|(pattern, _)| pattern.matches(dest_host))
            .max_by_key(|(pattern, _)| pattern.specificity())
            .map_or(self.default_mode, |(_, mode)| *mode)
    }

    /// Scans one piece of a request going to `dest_host` (normalized), with
    /// a fresh decoding budget.
    pub fn scan(&self, data: &[u8], part: ScanPart, dest_host: &str) -> Option<Finding> {
        self.scan_budgeted(data, part, dest_host, &mut Budget::per_request())
    }

    /// Scans `data` and the layers decoded out of it: the bottle's secrets
    /// first (they block whatever the host's mode), then the rules (unless
    /// the host's mode is `off`), with the action the mode gives.
    pub fn scan_budgeted(
        &self,
        data: &[u8],
        part: ScanPart,
        dest_host: &str,
        budget: &mut Budget,
    ) -> Option<Finding> {
        if !self.enabled || data.is_empty() {
            return None;
        }
        let mode = self.mode_for(dest_host);
        if self.known_forms.is_empty() && mode == DlpMode::Off {
            return None;
        }
        let raw = self.index_of(data);
        if let Some(finding) = self.known_finding(data, &raw, dest_host) {
            return Some(finding);
        }
        let mut shape_scanner = shapes::ShapeScanner::default();
        let decoded =
            layers::decode_layers_with_shapes(data, budget, &mut shape_scanner, raw.escapes);
        let raw_shapes = shape_scanner.finish(data);
        let mut indexed = Vec::with_capacity(decoded.len());
        for layer in &decoded {
            let hits = self.index_of(layer);
            if let Some(finding) = self.known_finding(layer, &hits, dest_host) {
                return Some(finding);
            }
            indexed.push(hits);
        }
        let action = rule_action(mode)?;
        self.rule_finding(data, &raw, Some(raw_shapes), part, dest_host)
            .or_else(|| {
                decoded
                    .iter()
                    .zip(&indexed)
                    .find_map(|(layer, hits)| self.rule_finding(layer, hits, None, part, dest_host))
            })
            .map(|(rule, severity)| Finding {
                rule,
                severity,
                action,
            })
    }

    /// One pass of the index over `data`: which rules' keywords are in it,
    /// where the anchored rules' keywords are, where the bottle's secrets'
    /// forms may be, and whether it may have string escapes.
    fn index_of(&self, data: &[u8]) -> IndexHits {
        let mut hits = IndexHits {
            rules: 0,
            anchored: Vec::new(),
            forms: Vec::new(),
            escapes: false,
        };
        let keywords = self.prefilter_rule.len();
        let forms = keywords + layers::ESCAPES.len();
        self.index.for_each_match(data, |pattern, start, end| {
            if pattern >= forms {
                hits.forms.push((pattern - forms, start));
                return;
            }
            if pattern >= keywords {
                hits.escapes = true;
                return;
            }
            let rule = self.prefilter_rule[pattern];
            hits.rules |= 1 << rule;
            if self.builtin[rule].anchor.is_some() {
                hits.anchored.push((rule, start, end));
            }
        });
        hits
    }

    /// A form of a bottle secret, byte for byte, going to a host it does
    /// not belong to.
    fn known_finding(&self, data: &[u8], hits: &IndexHits, dest_host: &str) -> Option<Finding> {
        hits.forms.iter().find_map(|&(form, start)| {
            let (bytes, known) = &self.known_forms[form];
            (data.get(start..start + bytes.len()) == Some(bytes.as_slice())
                && !known.allowed_hosts.iter().any(|h| h == dest_host))
            .then(|| Finding::blocking(known.name.clone(), Severity::Critical))
        })
    }

    fn rule_finding(
        &self,
        data: &[u8],
        hits: &IndexHits,
        shaped: Option<Vec<(shapes::Shape, std::ops::Range<usize>)>>,
        part: ScanPart,
        dest_host: &str,
    ) -> Option<(String, Severity)> {
        let anchored_hits = &hits.anchored;
        let mut shaped = shaped;
        // Only a rule with a keyword in the data or one run on shapes can
        // fire; the others are not looked at.
        let mut can_fire = hits.rules | self.shape_rules;
        while can_fire != 0 {
            let index = can_fire.trailing_zeros() as usize;
            can_fire &= can_fire - 1;
            let compiled = &self.builtin[index];
            if compiled.rule.parts == Parts::Header && part != ScanPart::Header {
                continue;
            }
            let severity = match (&compiled.anchor, compiled.rule.shape) {
                (Some(anchor), _) => anchored_hits
                    .iter()
                    .filter(|&&(i, start, end)| {
                        // A long credential word may be glued to what it
                        // qualifies (`PGPASSWORD`, `clientsecret`).
                        i == index
                            && (word_starts_at(data, start)
                                || (end - start >= 6
                                    && compiled.rule.check == rules::Check::AssignedValue))
                            && !rules::names_no_secret(compiled.rule, || {
                                qualifier_before(data, start)
                            })
                    })
                    .find_map(|&(_, _, end)| self.anchored_match(compiled, anchor, data, end)),
                (None, Some(shape)) => shaped
                    .get_or_insert_with(|| shapes::candidates(data))
                    .iter()
                    .filter(|(s, _)| *s == shape)
                    .find_map(|(_, span)| self.builtin_match(compiled, &data[span.clone()])),
                (None, None) => self.builtin_match(compiled, data),
            };
            if let Some(severity) = severity {
                return Some((compiled.rule.name.to_owned(), severity));
            }
        }
        for rule in &self.extra {
            if rule.allowed_hosts.iter().any(|h| h.matches(dest_host)) {
                continue;
            }
            if rule.regex.is_match(data) {
                return Some((rule.name.clone(), Severity::High));
            }
        }
        None
    }

    /// `anchor` right after a keyword ending at `end`, on a bounded slice.
    fn anchored_match(
        &self,
        compiled: &CompiledRule,
        anchor: &Regex,
        data: &[u8],
        end: usize,
    ) -> Option<Severity> {
        let slice = &data[end..(end + 400).min(data.len())];
        // Most keyword hits are ordinary words: turned down without the
        // regex where the rule has a gate, else without the captures.
        if compiled.rule.anchor_gate.is_some_and(|gate| !gate(slice)) || !anchor.is_match(slice) {
            return None;
        }
        let caps = anchor.captures(slice)?;
        let whole = caps.get(0)?.as_bytes();
        let value = caps.get(1).map(|m| m.as_bytes());
        // An assigned call, generic, index or struct (`= Token::new(`,
        // `= bin2hex(`, `= std::array<`, `:= oauth2.Token{`): code, not a
        // literal.
        if matches!(
            compiled.rule.check,
            rules::Check::AssignedValue | rules::Check::RandomAssignedValue
        ) && let Some(m) = caps.get(1)
            && match slice.get(m.end()..).unwrap_or_default() {
                [b'(' | b'[' | b'{', ..] => true,
                // Not a closing tag (`<password>x</password>`).
                [b'<', next, ..] => *next != b'/',
                _ => false,
            }
        {
            return None;
        }
        if value.is_some_and(|v| self.is_placeholder_fragment(v)) {
            return None;
        }
        rules::check(compiled.rule, whole, value)
    }

    fn builtin_match(&self, compiled: &CompiledRule, data: &[u8]) -> Option<Severity> {
        if compiled.captures {
            if !compiled.regex.is_match(data) {
                return None;
            }
            compiled.regex.captures_iter(data).find_map(|caps| {
                let whole = caps.get(0)?.as_bytes();
                let group = caps.get(1).or_else(|| caps.get(2)).map(|m| m.as_bytes());
                if self.is_placeholder_fragment(whole)
                    || group.is_some_and(|g| self.is_placeholder_fragment(g))
                {
                    return None;
                }
                rules::check(compiled.rule, whole, group)
            })
        } else {
            compiled.regex.find_iter(data).find_map(|m| {
                if self.is_placeholder_fragment(m.as_bytes()) {
                    return None;
                }
                rules::check(compiled.rule, m.as_bytes(), None)
            })
        }
    }

    /// Scans a header value; a header whose name says it carries a
    /// credential (`x-api-key`, `x-auth-token`, `x-secret`) is scanned as
    /// `name: value`, so the assignment rule sees the name.
    pub fn scan_header(&self, name: &str, value: &[u8], dest_host: &str) -> Option<Finding> {
        const NAMED: &[&str] = &["key", "token", "secret", "pass", "cred", "auth"];
        let lower = name.to_ascii_lowercase();
        // Anti-forgery tokens are the site's own, echoed back to it.
        let anti_forgery = lower.contains("csrf") || lower.contains("xsrf");
        // `x-auth-request-id`, `x-oauth-client-id`: about a credential, not one.
        let about = ["-id", "-user", "-email", "-mode"]
            .iter()
            .any(|suffix| lower.ends_with(suffix));
        if !anti_forgery && !about && NAMED.iter().any(|n| lower.contains(n)) {
            let mut line = Vec::with_capacity(name.len() + 2 + value.len());
            line.extend_from_slice(name.as_bytes());
            line.extend_from_slice(b": ");
            line.extend_from_slice(value);
            return self.scan(&line, ScanPart::Header, dest_host);
        }
        self.scan(value, ScanPart::Header, dest_host)
    }

    /// Scans a request target (path + query): as sent, with `+` read as a
    /// space, and decoded layer by layer; then each path segment and query
    /// key and value, percent-decoded, by its shape ([`entropy`]).
    pub fn scan_url(&self, path_and_query: &str, dest_host: &str) -> Option<Finding> {
        let issued_blanked = entropy::without_issued_values(path_and_query, dest_host);
        let path_and_query = issued_blanked.as_ref();
        let mut budget = Budget::per_request();
        let raw = path_and_query.as_bytes();
        if let Some(finding) = self.scan_budgeted(raw, ScanPart::Url, dest_host, &mut budget) {
            return Some(finding);
        }
        // Decoded whole as well: a run of encoding bytes stops at a `.` or
        // `,`, so the candidates' own decoding can cut a token in pieces.
        if raw.contains(&b'+') || raw.contains(&b'%') {
            let plus_as_space: Vec<u8> = raw
                .iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect();
            if let Some(decoded) = layers::percent_decode_strict(&plus_as_space)
                && let Some(finding) =
                    self.scan_budgeted(&decoded, ScanPart::Url, dest_host, &mut budget)
            {
                return Some(finding);
            }
        }
        if !self.enabled {
            return None;
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let path = path.split('#').next().unwrap_or("");
        // A token (or its encoding) cut into pieces, one per path segment or
        // per query value (`/x/6768705f/52387851/…`, `?p0=6768&p1=705f…`):
        // the pieces joined, decoded and matched like the rest.
        let values = query
            .map(|q| q.split('#').next().unwrap_or(""))
            .into_iter()
            .flat_map(|q| q.split(['&', ';']))
            .map(|pair| pair.split_once('=').map_or("", |(_, value)| value));
        for pieces in [path.split('/').collect::<Vec<_>>(), values.collect()] {
            for joined in joined_stretches(&pieces) {
                if let Some(finding) =
                    self.scan_budgeted(joined.as_bytes(), ScanPart::Url, dest_host, &mut budget)
                {
                    return Some(finding);
                }
            }
        }
        let action = rule_action(self.mode_for(dest_host))?;
        let shape = |component: &[u8]| {
            // Nothing shorter than this can be flagged (`%XX` decodes to one byte).
            if component.len() < 20 {
                return None;
            }
            let decoded = percent_decode_repeatedly(component);
            entropy::url_component_finding(&decoded).map(|rule| Finding {
                rule: rule.to_owned(),
                severity: Severity::High,
                action,
            })
        };
        for segment in path.split('/') {
            if let Some(finding) = shape(segment.as_bytes()) {
                return Some(finding);
            }
        }
        let query = query.map(|q| q.split('#').next().unwrap_or(""));
        for pair in query.into_iter().flat_map(|q| q.split(['&', ';'])) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if let Some(finding) = shape(key.as_bytes()) {
                return Some(finding);
            }
            if value.len() < 20
                || entropy::is_signed_url_parameter(&percent_decode_repeatedly(key.as_bytes()))
            {
                continue;
            }
            if let Some(finding) = shape(value.as_bytes()) {
                return Some(finding);
            }
        }
        None
    }

    /// Scans the destination host name: the bottle's secrets and the rules
    /// on the name, and the shape of its sub-domain labels (DNS-style
    /// exfiltration to a host the allowlist permits by wildcard).
    pub fn scan_host(&self, dest_host: &str) -> Option<Finding> {
        if let Some(finding) = self.scan(dest_host.as_bytes(), ScanPart::Url, dest_host) {
            return Some(finding);
        }
        if !self.enabled {
            return None;
        }
        // A token's encoding cut into labels (`6768705f.52387851.….x.test`).
        let labels: Vec<&str> = dest_host.split('.').collect();
        for joined in joined_stretches(&labels) {
            if let Some(finding) = self.scan(joined.as_bytes(), ScanPart::Url, dest_host) {
                return Some(finding);
            }
        }
        let action = rule_action(self.mode_for(dest_host))?;
        entropy::host_finding(dest_host).map(|rule| Finding {
            rule: rule.to_owned(),
            severity: Severity::High,
            action,
        })
    }

    /// A placeholder may look like a real token (that is the point): a
    /// pattern match that is part of a declared placeholder is not a leak.
    fn is_placeholder_fragment(&self, matched: &[u8]) -> bool {
        self.placeholders
            .iter()
            .any(|p| p.windows(matched.len()).any(|w| w == matched))
    }
}

/// Whether a keyword at `start` begins a word: after a non-letter, or at a
/// camel-case boundary (`apiToken`), not inside one (`bypass`).
fn word_starts_at(data: &[u8], start: usize) -> bool {
    let Some(&before) = start.checked_sub(1).and_then(|i| data.get(i)) else {
        return true;
    };
    // The letter of a line break or tab escaped in a string (`\npassword`).
    let escaped = matches!(before, b'n' | b'r' | b't')
        && start.checked_sub(2).and_then(|i| data.get(i)) == Some(&b'\\');
    escaped
        || !data.get(start).is_some_and(u8::is_ascii_alphabetic)
        || !before.is_ascii_alphabetic()
        || (before.is_ascii_lowercase() && data.get(start).is_some_and(u8::is_ascii_uppercase))
}

/// The word that qualifies a keyword at `start` (`Next` in `NextToken`,
/// `next` in `next_token`, `cache` in `cache_key`, `Page` in
/// `nextPageToken`): letters and digits, as written.
fn qualifier_before(data: &[u8], start: usize) -> &[u8] {
    let mut end = start;
    // The keyword may start with its own separator (`_key`); else one
    // separator may come before it.
    if !data.get(start).is_some_and(|b| matches!(b, b'_' | b'-'))
        && end > 0
        && matches!(data[end - 1], b'_' | b'-' | b'.')
    {
        end -= 1;
    }
    let from = data[..end]
        .iter()
        .rposition(|b| !b.is_ascii_alphanumeric())
        .map_or(0, |p| p + 1);
    let word = &data[from..end];
    // camelCase: only the last word.
    let last = word
        .iter()
        .rposition(u8::is_ascii_uppercase)
        .filter(|&p| p > 0 && word[..p].iter().any(u8::is_ascii_lowercase))
        .unwrap_or(0);
    &word[last..]
}

/// Percent-decodes up to three times (double and triple encoding).
fn percent_decode_repeatedly(component: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut current = std::borrow::Cow::Borrowed(component);
    for _ in 0..3 {
        if !current.contains(&b'%') {
            break;
        }
        match layers::percent_decode_strict(&current) {
            Some(decoded) => current = std::borrow::Cow::Owned(decoded),
            None => break,
        }
    }
    current
}

/// Fewest pieces in a row that [`joined_stretches`] joins.
const MIN_JOINED_PIECES: usize = 3;

/// Each stretch of at least [`MIN_JOINED_PIECES`] consecutive pieces (path
/// segments, query values, host labels) that could each be a piece of an
/// encoding (four bytes or more, letters, digits and `+/=_-%` only),
/// joined: ordinary URLs have words and numbers there, a few at most in a
/// row, and joining them costs a short scan.
fn joined_stretches(pieces: &[&str]) -> Vec<String> {
    let chunk_like = |p: &&str| {
        p.len() >= 4
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=_-%".contains(&b))
    };
    pieces
        .split(|p| !chunk_like(p))
        .filter(|stretch| stretch.len() >= MIN_JOINED_PIECES)
        .map(<[&str]>::concat)
        .collect()
}

/// Streaming body scan state for one request.
#[derive(Debug)]
pub struct BodyScanner {
    tail: Vec<u8>,
    window: usize,
    dest_host: String,
    budget: Budget,
}

impl BodyScanner {
    /// Starts scanning a body going to `dest_host`.
    pub fn new(engine: &DlpEngine, dest_host: &str) -> Self {
        Self::with_window(engine.overlap_window(), dest_host)
    }

    /// Starts a scan that keeps `window` bytes between chunks (for scans
    /// beyond DLP's own, see [`BodyScanner::push_with`]).
    pub fn with_window(window: usize, dest_host: &str) -> Self {
        Self {
            tail: Vec::new(),
            window,
            dest_host: dest_host.to_owned(),
            budget: Budget::per_request(),
        }
    }

    /// The host the scanned body goes to.
    pub fn dest_host(&self) -> &str {
        &self.dest_host
    }

    /// Scans the next chunk (with the overlap kept from earlier chunks).
    pub fn push(&mut self, engine: &DlpEngine, chunk: &[u8]) -> Option<Finding> {
        if !engine.enabled() {
            return None;
        }
        self.push_with(chunk, |buffer, dest_host, budget| {
            engine.scan_budgeted(buffer, ScanPart::Body, dest_host, budget)
        })
    }

    /// Runs `scan(buffer, dest_host, budget)` on the next chunk with the
    /// overlap kept from earlier chunks in front of it; the decoding budget
    /// is the whole body's.
    pub fn push_with<T>(
        &mut self,
        chunk: &[u8],
        scan: impl FnOnce(&[u8], &str, &mut Budget) -> Option<T>,
    ) -> Option<T> {
        if chunk.is_empty() {
            return None;
        }
        let mut buffer = std::mem::take(&mut self.tail);
        buffer.extend_from_slice(chunk);
        let finding = scan(&buffer, &self.dest_host, &mut self.budget);
        let keep_from = buffer.len().saturating_sub(self.window);
        buffer.drain(..keep_from);
        self.tail = buffer;
        finding
    }

    /// [`BodyScanner::push_with`], with `chunk` scanned as two chunks (its
    /// halves) side by side if the helper thread is free: the first half on
    /// it ([`crate::assist::Claim::join`]). What is scanned, and so what is
    /// found, is what two [`BodyScanner::push_with`] calls with the halves
    /// scan (each half with the overlap in front of it); the budget is split
    /// between them in proportion. The first half's finding wins if both
    /// have one. If the helper is busy, the chunk is scanned whole, as
    /// [`BodyScanner::push_with`] does: halves on one thread would only
    /// read the overlap once more.
    pub fn push_split<T, S>(&mut self, chunk: &[u8], scan: S) -> Option<T>
    where
        T: Send + 'static,
        S: Fn(&[u8], &str, &mut Budget) -> Option<T> + Clone + Send + Sync + 'static,
    {
        match crate::assist::claim() {
            Some(claim) if !chunk.is_empty() => self.push_halves(chunk, scan, claim),
            _ => self.push_with(chunk, scan),
        }
    }

    fn push_halves<T, S>(&mut self, chunk: &[u8], scan: S, claim: crate::assist::Claim) -> Option<T>
    where
        T: Send + 'static,
        S: Fn(&[u8], &str, &mut Budget) -> Option<T> + Clone + Send + Sync + 'static,
    {
        let mid = chunk.len() / 2;
        let mut first = std::mem::take(&mut self.tail);
        first.extend_from_slice(&chunk[..mid]);
        let overlap = &first[first.len().saturating_sub(self.window)..];
        let mut second = Vec::with_capacity(overlap.len() + chunk.len() - mid);
        second.extend_from_slice(overlap);
        second.extend_from_slice(&chunk[mid..]);
        let (budget_first, mut budget_second) = self.budget.split(first.len(), second.len());
        let dest_host = self.dest_host.clone();
        let scan_first = scan.clone();
        let ((found_first, budget_first), found_second) = claim.join(
            // Each run (the helper's, or this thread's if it falls behind)
            // spends its own copy of the first half's budget.
            move || {
                let mut budget = budget_first.clone();
                let found = if first.is_empty() {
                    None
                } else {
                    scan_first(&first, &dest_host, &mut budget)
                };
                (found, budget)
            },
            || {
                if second.is_empty() {
                    None
                } else {
                    scan(&second, &self.dest_host, &mut budget_second)
                }
            },
        );
        self.budget = Budget::merge(budget_first, budget_second);
        let keep_from = second.len().saturating_sub(self.window);
        second.drain(..keep_from);
        self.tail = second;
        found_first.or(found_second)
    }
}

/// What a rule finding does under `mode`; None: rules are off there.
fn rule_action(mode: DlpMode) -> Option<Action> {
    match mode {
        DlpMode::Off => None,
        DlpMode::Audit => Some(Action::Audit),
        DlpMode::Block => Some(Action::Block),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DlpHostMode, ExtraPattern};
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    use forms::rot13;
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

    const SECRET: &str = "s3cr3t-Token_value-0123456789abcdef";
    const PLACEHOLDER: &str = "placeholder-for-the-agent-0000";

    fn engine_with(extra: Vec<ExtraPattern>) -> DlpEngine {
        DlpEngine::new(
            &DlpConfig {
                extra_patterns: extra,
                ..DlpConfig::default()
            },
            &[KnownSecret {
                name: "API_TOKEN".to_owned(),
                value: SecretValue::new(SECRET),
                placeholder: Some(PLACEHOLDER.to_owned()),
                host: "api.test".to_owned(),
            }],
        )
        .unwrap()
    }

    fn engine() -> DlpEngine {
        engine_with(Vec::new())
    }

    fn body_finding(engine: &DlpEngine, body: &[u8], host: &str) -> Option<String> {
        engine.scan(body, ScanPart::Body, host).map(|f| f.rule)
    }

    #[test]
    fn secret_in_string_escapes_is_caught() {
        let e = engine();
        let bytes = SECRET.as_bytes();
        let escaped: Vec<String> = vec![
            bytes.iter().map(|b| format!("\\x{b:02x}")).collect(),
            bytes.iter().map(|b| format!("\\X{b:02X}")).collect(),
            bytes.iter().map(|b| format!("\\u00{b:02x}")).collect(),
            base64::engine::general_purpose::STANDARD
                .encode(format!("{SECRET}??>>"))
                .replace('/', "\\/"),
        ];
        for text in escaped {
            assert!(text.contains('\\'), "{text}");
            let body = format!("{{\"note\": \"{text}\"}}");
            assert_eq!(
                body_finding(&e, body.as_bytes(), "evil.test").as_deref(),
                Some("bottle-secret:API_TOKEN"),
                "{body}"
            );
        }
    }

    #[test]
    fn raw_secret_is_caught_off_its_host_only() {
        let e = engine();
        let body = format!("{{\"k\": \"{SECRET}\"}}");
        assert_eq!(
            body_finding(&e, body.as_bytes(), "evil.test").as_deref(),
            Some("bottle-secret:API_TOKEN")
        );
        assert_eq!(body_finding(&e, body.as_bytes(), "api.test"), None);
    }

    #[test]
    fn every_encoding_of_the_secret_is_caught() {
        let e = engine();
        let mut bodies = vec![
            hex::encode(SECRET),
            hex::encode_upper(SECRET),
            utf8_percent_encode(SECRET, NON_ALPHANUMERIC).to_string(),
            base64::engine::general_purpose::STANDARD.encode(SECRET),
            base64::engine::general_purpose::URL_SAFE.encode(SECRET),
            STANDARD_NO_PAD.encode(SECRET),
            URL_SAFE_NO_PAD.encode(SECRET),
        ];
        // Embedded inside a longer base64 blob at every alignment.
        for prefix in ["", "a", "ab", "abc", "{\"x\":1}"] {
            let blob = format!("{prefix}{SECRET} and some trailing text");
            bodies.push(base64::engine::general_purpose::STANDARD.encode(&blob));
            bodies.push(URL_SAFE_NO_PAD.encode(&blob));
        }
        for body in bodies {
            assert_eq!(
                body_finding(&e, body.as_bytes(), "evil.test").as_deref(),
                Some("bottle-secret:API_TOKEN"),
                "{body}"
            );
        }
    }

    /// RFC 4648 base32 with `=` padding, for the tests.
    fn base32_padded(data: &[u8]) -> String {
        let mut encoded = base32_no_pad(data);
        while !encoded.len().is_multiple_of(8) {
            encoded.push('=');
        }
        encoded
    }

    #[test]
    fn base32_follows_rfc_4648() {
        // The test vectors of RFC 4648, section 10.
        for (input, expected) in [
            ("", ""),
            ("f", "MY======"),
            ("fo", "MZXQ===="),
            ("foo", "MZXW6==="),
            ("foob", "MZXW6YQ="),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI======"),
        ] {
            assert_eq!(base32_padded(input.as_bytes()), expected, "{input}");
        }
    }

    #[test]
    fn base32_of_the_secret_is_caught_padded_or_not_in_either_case() {
        let e = engine();
        let mut bodies = Vec::new();
        for prefix in ["", "a", "ab", "abc", "abcd", "{\"x\":1}"] {
            for suffix in ["", " and some trailing text"] {
                let blob = format!("{prefix}{SECRET}{suffix}");
                let padded = base32_padded(blob.as_bytes());
                let unpadded = base32_no_pad(blob.as_bytes());
                bodies.push(padded.to_ascii_lowercase());
                bodies.push(unpadded.to_ascii_lowercase());
                bodies.push(padded);
                bodies.push(unpadded);
            }
        }
        for body in bodies {
            assert_eq!(
                body_finding(&e, format!("data={body}").as_bytes(), "evil.test").as_deref(),
                Some("bottle-secret:API_TOKEN"),
                "{body}"
            );
            assert_eq!(body_finding(&e, body.as_bytes(), "api.test"), None);
        }
    }

    #[test]
    fn reversed_secret_is_caught() {
        let e = engine();
        let reversed: String = SECRET.chars().rev().collect();
        for body in [reversed.clone(), format!("x={reversed}&y=1")] {
            assert_eq!(
                body_finding(&e, body.as_bytes(), "evil.test").as_deref(),
                Some("bottle-secret:API_TOKEN"),
                "{body}"
            );
        }
        let header = format!("note {reversed}");
        assert!(
            e.scan(header.as_bytes(), ScanPart::Header, "evil.test")
                .is_some()
        );
        assert!(e.scan_url(&format!("/r/{reversed}"), "evil.test").is_some());
    }

    #[test]
    fn rot13_secret_is_caught() {
        let e = engine();
        let rotated: String = SECRET.bytes().map(|b| char::from(rot13(b))).collect();
        assert_ne!(rotated, SECRET);
        assert_eq!(
            rotated
                .bytes()
                .map(|b| char::from(rot13(b)))
                .collect::<String>(),
            SECRET,
            "rot13 is its own inverse"
        );
        assert_eq!(rot13(b'a'), b'n');
        assert_eq!(rot13(b'Z'), b'M');
        assert_eq!(rot13(b'5'), b'5');
        for body in [rotated.clone(), format!("{{\"v\": \"{rotated}\"}}")] {
            assert_eq!(
                body_finding(&e, body.as_bytes(), "evil.test").as_deref(),
                Some("bottle-secret:API_TOKEN"),
                "{body}"
            );
        }
        assert!(
            e.scan_url(&format!("/q?d={rotated}"), "evil.test")
                .is_some()
        );
    }

    #[test]
    fn vendor_tokens_turned_rot13_or_backwards_are_caught() {
        let e = engine();
        let rot = |t: &str| {
            t.bytes()
                .map(forms::rot13)
                .map(char::from)
                .collect::<String>()
        };
        let back = |t: &str| t.chars().rev().collect::<String>();
        for token in [
            token("ghp_", ALNUM, 36),
            token("glpat-", ALNUM, 20),
            format!("sk-ant-api03-{}", token("", ALNUM, 93)),
            format!("xoxb-1234567890-{}", token("", ALNUM, 24)),
            token("AKIA", "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16),
            format!("hf_{}", token("", ALNUM, 34)),
        ] {
            for turned in [rot(&token), back(&token)] {
                for body in [
                    turned.clone(),
                    format!("{{\"note\": \"{turned}\"}}"),
                    format!("q={turned}&x=1"),
                    format!("Authorization: Bearer {turned}"),
                ] {
                    assert!(
                        body_finding(&e, body.as_bytes(), "evil.test").is_some(),
                        "{body}"
                    );
                }
            }
        }
        // Words and identifiers that start or end like a keyword turned.
        for body in [
            "us_east_1_availability_zone_b and tuc_is_not_a_prefix_anyone_uses",
            "the_big_one_named_patxox and a_long_identifier_ending_in_phg",
        ] {
            assert_eq!(
                body_finding(&e, body.as_bytes(), "evil.test"),
                None,
                "{body}"
            );
        }
    }

    #[test]
    fn form_lists_of_equal_length_strings_line_up() {
        // The response scrubber pairs a secret's forms with its placeholder's.
        let a = encoded_form_list(SECRET);
        let b = encoded_form_list(&"p".repeat(SECRET.len()));
        assert_eq!(a.len(), b.len());
        assert_eq!(a[0], SECRET.as_bytes());
        for (x, y) in a.iter().zip(&b).skip(1) {
            // Percent-encoding depends on the characters; every other form
            // depends on the length only.
            if !x.contains(&b'%') {
                assert_eq!(x.len(), y.len());
            }
        }
        // Short secrets are only matched raw.
        assert_eq!(encoded_form_list("short"), vec![b"short".to_vec()]);
    }

    #[test]
    fn placeholders_are_left_to_the_placeholder_guard() {
        // The guard refuses them on every host, DLP on or off; DLP has no rule for them.
        let e = engine();
        let header = format!("Bearer {PLACEHOLDER}");
        for host in ["evil.test", "api.test"] {
            assert_eq!(e.scan(header.as_bytes(), ScanPart::Header, host), None);
        }
    }

    #[test]
    fn secret_in_url_is_caught_raw_and_decoded() {
        let e = engine();
        let encoded = utf8_percent_encode(SECRET, NON_ALPHANUMERIC).to_string();
        for url in [format!("/upload?d={SECRET}"), format!("/x/{encoded}")] {
            assert!(e.scan_url(&url, "evil.test").is_some(), "{url}");
        }
        // A secret spelled with %-escapes of single letters.
        let sneaky = format!("/q?d=%{:02X}{}", SECRET.as_bytes()[0], &SECRET[1..]);
        assert!(e.scan_url(&sneaky, "evil.test").is_some());
    }

    #[test]
    fn a_url_is_also_scanned_percent_decoded_whole() {
        let e = engine();
        // A `.` or `,` ends a run of encoding bytes: decoded run by run, the
        // token below comes out in pieces.
        let key = format!("{}.{}", token("SG.", ALNUM, 22), token("", ALNUM, 43));
        let spelled: Vec<String> = key.chars().map(String::from).collect();
        // What URL encoders leave alone: the unreserved characters.
        const RESERVED: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        for value in [spelled.join(","), spelled.join(";")] {
            let url = format!("/s?c={}", utf8_percent_encode(&value, RESERVED));
            assert_eq!(
                e.scan_url(&url, "evil.test").map(|f| f.rule).as_deref(),
                Some("sendgrid-api-key"),
                "{url}"
            );
        }
    }

    fn token(prefix: &str, alphabet: &str, len: usize) -> String {
        let chars: Vec<char> = alphabet.chars().collect();
        let mut s = prefix.to_owned();
        for i in 0..len {
            s.push(chars[(i * 7 + 3) % chars.len()]);
        }
        s
    }

    const ALNUM: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

    #[test]
    fn every_builtin_pattern_fires_on_its_token_format() {
        let e = engine();
        let cases = [
            (
                "aws-access-key-id",
                token("AKIA", "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16),
            ),
            (
                "aws-access-key-id",
                token("ASIA", "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16),
            ),
            ("github-pat", token("ghp_", ALNUM, 36)),
            ("github-oauth-token", token("gho_", ALNUM, 36)),
            ("github-user-to-server-token", token("ghu_", ALNUM, 36)),
            ("github-server-to-server-token", token("ghs_", ALNUM, 36)),
            ("github-refresh-token", token("ghr_", ALNUM, 36)),
            ("github-fine-grained-pat", token("github_pat_", ALNUM, 82)),
            ("gitlab-pat", token("glpat-", ALNUM, 20)),
            ("anthropic-api-key", token("sk-ant-api03-", ALNUM, 93)),
            ("anthropic-api-key", token("sk-ant-oat01-", ALNUM, 60)),
            ("openai-api-key", token("sk-proj-", ALNUM, 120)),
            ("openai-api-key", token("sk-", ALNUM, 48)),
            ("slack-token", token("xoxb-", "0123456789", 24)),
            ("slack-token", token("xoxp-", ALNUM, 30)),
            ("stripe-secret-key", token("sk_live_", ALNUM, 24)),
            ("stripe-secret-key", token("rk_live_", ALNUM, 24)),
            ("google-api-key", token("AIza", ALNUM, 35)),
            (
                "private-key",
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE".to_owned(),
            ),
            (
                "private-key",
                "-----BEGIN OPENSSH PRIVATE KEY-----".to_owned(),
            ),
            ("private-key", "-----BEGIN PRIVATE KEY-----".to_owned()),
            (
                "jwt",
                format!(
                    "{}.{}.{}",
                    token("eyJ", ALNUM, 20),
                    token("eyJ", ALNUM, 40),
                    token("", ALNUM, 43)
                ),
            ),
        ];
        for (rule, tok) in cases {
            let body = format!("{{\"value\": \"{tok}\"}}");
            assert_eq!(
                body_finding(&e, body.as_bytes(), "any.test").as_deref(),
                Some(rule),
                "{rule}"
            );
        }
    }

    #[test]
    fn credential_assignments_are_caught_in_urls_and_bodies() {
        let e = engine();
        for url in [
            "/login?user=bob&password=hunter22",
            "/cb?access_token=abcdef123456",
            "/x?TOKEN=abcdef123456",
            "/x?client_secret=abcdef123456",
            "/x?a=1&secret%3Dabcdef123456",
        ] {
            assert_eq!(
                e.scan_url(url, "any.test").map(|f| f.rule).as_deref(),
                Some("credential-assignment"),
                "{url}"
            );
        }
        for body in [
            &b"password=hunter22"[..],
            b"db:\n  password: S3cure!Pass\n",
            br#"{"api_key": "Zx81kLmq2PzQ"}"#,
        ] {
            assert_eq!(
                body_finding(&e, body, "any.test").as_deref(),
                Some("credential-assignment"),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(e.scan_url("/search?q=token&page=2", "any.test"), None);
        assert_eq!(e.scan_url("/x?token=", "any.test"), None);
        assert_eq!(
            body_finding(&e, br#"{"password": "${DB_PASSWORD}"}"#, "any.test"),
            None
        );
    }

    /// Files and commands an agent sends inside JSON strings: their quotes
    /// escaped, their line breaks and tabs `\n` and `\t`.
    #[test]
    fn assignments_inside_json_strings_are_caught() {
        let e = engine();
        assert_rules(
            &e,
            &[
                (
                    r#"{"file":"{\"password\": \"Wint3r-Sky-42!\"}"}"#,
                    "credential-assignment",
                ),
                (
                    r#"{"content":"DB_HOST=\"db\"\nDB_PASSWORD=\"Wint3r-Sky-42!\"\n"}"#,
                    "credential-assignment",
                ),
                (
                    r#"{"content":"host: db.internal\npassword: Wint3r-Sky-42!\n"}"#,
                    "credential-assignment",
                ),
                (
                    r#"{"content":"user=admin\tpassword=Wint3r-Sky-42!"}"#,
                    "credential-assignment",
                ),
                (
                    r#"{"query":"mutation { login(email: \"a@b\", password: \"Wint3r-Sky-42!\") {id}}"}"#,
                    "credential-assignment",
                ),
                (
                    r#"{"content":"machine api.acme.io\nlogin deploy\npassword Wint3r-Sky-42!\n"}"#,
                    "netrc-credentials",
                ),
                (
                    r#"{"content":"{\"auths\": {\"registry.acme.io\": {\"auth\": \"ZGVwbG95OkZha2UtUGFzc3cwcmQtNDI=\"}}}"}"#,
                    "docker-config-auth",
                ),
                (
                    r#"{"content":"{\"type\": \"service_account\", \"project_id\": \"x\"}"}"#,
                    "gcp-service-account",
                ),
            ],
        );
    }

    /// Names that qualify a credential word by gluing to it, or that name
    /// a key of any kind (then only a generated value counts).
    #[test]
    fn glued_and_key_names_are_caught() {
        let e = engine();
        assert_rules(
            &e,
            &[
                (
                    "PGPASSWORD=Wint3r-Sky-42! psql -h db",
                    "credential-assignment",
                ),
                (
                    r#"{"clientsecret": "q8Zt3Lw0rkX2mVb7k9LpYd4R"}"#,
                    "credential-assignment",
                ),
                (
                    "NGROK_AUTHTOKEN=2aBcD3eFgH4iJkL5mNoP6qRsT7uVwX8yZ9",
                    "credential-assignment",
                ),
                ("ADMIN_PW=Wint3r-Sky-42!", "credential-assignment"),
                (
                    "ENCRYPTION_KEY=Zx81kQp0LmN3vB7tR2sY9wE4uI6oP1aS",
                    "key-assignment",
                ),
            ],
        );
        for body in ["bypass=Wint3r-Sky-42!", "cache_key = user_profile_1234"] {
            assert_eq!(
                body_finding(&e, body.as_bytes(), "any.test"),
                None,
                "{body}"
            );
        }
    }

    /// Addresses and keys of other chains and test networks, and card
    /// brands beyond the four big ones, through the whole scan (shapes
    /// first, then the rule).
    #[test]
    fn other_chains_and_card_brands_are_caught() {
        let e = engine();
        assert_rules(
            &e,
            &[
                (
                    r#"{"a":"LM4939hJVNaRLJA6EwAFtWh9CfUSGJoi7M"}"#,
                    "crypto-private-key-or-address",
                ),
                (
                    r#"{"a":"D6yHKCL7i8EecVeXoPAXAFnysaqTYiWKy4"}"#,
                    "crypto-private-key-or-address",
                ),
                (
                    r#"{"a":"TBoPmzmCZSTKEfXZf4pg8eKWuErURgieqN"}"#,
                    "crypto-private-key-or-address",
                ),
                (
                    r#"{"k":"cMcfH8sRgBgDMfpBNG6H3haaxLkaYXgqMRef8Nev6tWyBSNr6c3n"}"#,
                    "crypto-private-key-or-address",
                ),
                (
                    r#"{"a":"ltc1qw508d6qejxtdg4y5r3zarvary0c5xw7kgmn4n9"}"#,
                    "bitcoin-bech32-address",
                ),
                (r#"{"card":"6759 1234 5678 0006"}"#, "payment-card-number"),
                (r#"{"card":"2200123456780000"}"#, "payment-card-number"),
            ],
        );
        // One character off: the checksum fails.
        assert_eq!(
            body_finding(
                &e,
                br#"{"a":"LM4939hJVNaRLJA6EwAFtWh9CfUSGJoi7N"}"#,
                "any.test"
            ),
            None
        );
    }

    /// A token printed in groups, backwards, as bits, or with a dash every
    /// few characters.
    #[test]
    fn grouped_reversed_and_bit_spellings_are_caught() {
        let e = engine();
        let tok = token("ghp_", ALNUM, 36);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&tok);
        let hex = hex::encode(&tok);
        let bits: Vec<String> = tok.bytes().map(|b| format!("{b:08b}")).collect();
        let groups = |text: &str, n: usize, sep: &str| {
            text.as_bytes()
                .chunks(n)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(sep)
        };
        for body in [
            groups(&b64, 4, " "),
            groups(&b64, 8, " "),
            groups(&hex, 8, " "),
            bits.join(" "),
            bits.concat(),
            groups(&tok, 4, "-"),
            groups(&tok, 4, " "),
            format!(r#"{{"parts":["{}"]}}"#, groups(&tok, 4, r#"",""#)),
            format!(r#"{{"d":"{}"}}"#, b64.chars().rev().collect::<String>()),
        ] {
            assert!(
                body_finding(&e, body.as_bytes(), "any.test").is_some(),
                "{body}"
            );
        }
        // Ordinary groups of four: nothing.
        for body in [
            "this test will pass when both side effects stay away from main",
            "dead beef cafe f00d 1234 5678 90ab cdef",
            "550e8400-e29b-41d4-a716-446655440000",
        ] {
            assert_eq!(
                body_finding(&e, body.as_bytes(), "any.test"),
                None,
                "{body}"
            );
        }
    }

    /// Any scheme in a header named for authentication carries a token.
    #[test]
    fn authorization_headers_of_any_scheme_are_checked() {
        let e = engine();
        for (name, value) in [
            (
                "authorization",
                "Token 3f9c2a7d81e64b05c9d2f1a8e7b3c6400a1b2c3d",
            ),
            (
                "Authorization",
                "SSWS 00q8Zt3Lw0rkX2mVb7k9LpYd4Rf6Hs1Jn5TcWq2Ea",
            ),
            ("x-auth", "Zx81kQp0LmN3vB7tR2sY9wE4uI6oP1aS"),
        ] {
            assert!(
                e.scan_header(name, value.as_bytes(), "any.test").is_some(),
                "{name}: {value}"
            );
        }
        assert_eq!(
            e.scan_header("authorization", b"Negotiate", "any.test"),
            None
        );
    }

    /// Code that assigns a call, a path or a template to a variable named
    /// like a credential is not a credential.
    #[test]
    fn code_assigning_calls_and_paths_is_not_a_credential() {
        let e = engine();
        for body in [
            r#"{"content":"let token = Uuid::new_v4();"}"#,
            r#"{"content":"    token: String::new(),\n    password: Vec::new(),"}"#,
            r#"{"content":"let secret = Hmac::<Sha256>::new_from_slice(k)?;"}"#,
            r#"{"content":"let password = rpassword::read_password()?;"}"#,
            r#"{"content":"auto secret = std::array<uint8_t, 32>{};"}"#,
            r#"{"content":"'password' => Hash::make($r->password),"}"#,
            r#"{"content":"$token = bin2hex(random_bytes(32));"}"#,
            r#"{"content":"api_key = base64.b64encode(raw).decode()"}"#,
            r#"{"content":"password=hashlib.sha256(pw).hexdigest()"}"#,
            "inputs:\n  token:\n    description: GitHub token\n",
            "Resources:\n  Secret: !GetAtt Rotation.Arn\n",
            "existingSecret: api-token-v3",
            r#"{"command":"docker build --secret id=npmrc,src=$HOME/.npmrc -t app ."}"#,
            r#"{"env":"GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
        ] {
            assert_eq!(
                body_finding(&e, body.as_bytes(), "any.test"),
                None,
                "{body}"
            );
        }
        // The value itself is a literal: still caught.
        assert_eq!(
            body_finding(
                &e,
                b"<config><password>Winter@1599x</password></config>",
                "a.test"
            )
            .as_deref(),
            Some("credential-assignment")
        );
        assert_eq!(
            e.scan_header(
                "x-csrf-token",
                b"Xk3jd8Qm2LpZ7vB1nR5tY9wE4uI6oP0aSdFgHjKlZx",
                "a.test"
            ),
            None
        );
    }

    /// What a review of today's rules found firing on ordinary traffic.
    #[test]
    fn names_ids_and_placeholders_are_not_credentials() {
        let e = engine();
        for body in [
            r#"{"content":"DB_PASSWORD=\nDB_PORT=5432\nAWS_SECRET_ACCESS_KEY=\nAWS_DEFAULT_REGION=us-east-1"}"#,
            r#"{"content":"signing_key = ed25519.Ed25519PrivateKey.generate()"}"#,
            r#"{"idempotency_key": "3f1c2b7a-9d4e-4c1b-8a2f-6e5d4c3b2a19"}"#,
            "cache_key=sha256:5b8a3a7765dfe001261dde915589e7825b8a3a7765dfe001261dde915589e782",
            "NEXT_PUBLIC_STRIPE_PUBLISHABLE_KEY=pk_test_51HqLyjWDarjtT1zdp7dcFAKEfakeFAKE",
            "mysql -u [username] -p[password] [database]",
            "go test ./internal/store/mysql -parallel=8",
            "Never share your recovery phrase with anyone. Support staff will never ask for these words, even over email.",
            r#"{"guild_id": "503812402344834782", "channel_id": "675965444463478612"}"#,
            r#"{"content":"echo \"$SSH_PRIVATE_KEY\" > ~/.ssh/id_ed25519"}"#,
            r#"{"token": "***REDACTED***", "api_key": "sk-proj-...Q2xA"}"#,
            r#"{"NextToken": "eyJOZXh0VG9rZW4iOiBudWxsfQ=="}"#,
            "use crate::token::Claims;",
            "'password' => 'required|string|min:12|confirmed',",
            "NEXTAUTH_SECRET=generate-with-openssl-rand-base64-32",
        ] {
            assert_eq!(
                body_finding(&e, body.as_bytes(), "any.test"),
                None,
                "{body}"
            );
        }
        assert_eq!(
            e.scan_header(
                "x-sentry-auth",
                b"Sentry sentry_version=7, sentry_key=5b8a3a7765dfe001261dde915589e782",
                "o1.ingest.sentry.io"
            ),
            None
        );
        assert_eq!(
            e.scan_header("x-auth-request-id", b"01HX9Z3K7Q8R2M4N6P8S0T2V4W", "a.test"),
            None
        );
        for (host, url) in [
            (
                "files.pythonhosted.org",
                "/packages/2e/43/5b8a3a7765dfe001261dde915589e7825b8a3a7765dfe001261dde915589/torch-2.4.1-cp311-cp311-manylinux1_x86_64.whl",
            ),
            (
                "objects.githubusercontent.com",
                "/asset/1/x?X-Amz-Credential=releaseassetproduction%2F20241004%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=5b8a3a7765dfe001261dde915589e7825b8a3a7765dfe001261dde915589e782",
            ),
        ] {
            assert_eq!(e.scan_url(url, host), None, "{url}");
        }
        // The same names with a real value still count.
        assert!(body_finding(&e, b"mysql -h db -uroot -pDragonx8243 prod", "any.test").is_some());
        assert!(
            body_finding(&e, b"DB_PASSWORD=Wint3r-Sky-42!\nDB_PORT=5432", "any.test").is_some()
        );
    }

    /// Signed download URLs carry what their host issued: a SigV4
    /// credential scope (an access key's id) and GitHub's `jwt`.
    #[test]
    fn signed_download_urls_are_not_leaks() {
        let e = engine();
        let sig = "0123456789abcdef".repeat(4);
        for (host, url) in [
            (
                "objects.githubusercontent.com",
                format!("/release-asset/1/abc?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIWNJYAX4CSVEH53A%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-Signature={sig}"),
            ),
            (
                "cas-bridge.xethub.hf.co",
                format!("/xet/abc?X-Amz-Credential=cas%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature={sig}"),
            ),
            (
                "release-assets.githubusercontent.com",
                "/asset/1/x?sp=r&sig=Qk3jd8Qm2LpZ7vB1nR5tY9wE4uI6oP0aSdFgHjKlZx0%3D&jwt=eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJnaXRodWIuY29tIiwiZXhwIjoxNzM1Njg5NjAwfQ.Xk3jd8Qm2LpZ7vB1nR5tY9wE4uI6oP0aSdFgHjKlZx0".to_owned(),
            ),
        ] {
            assert_eq!(e.scan_url(&url, host), None, "{url}");
        }
        // Elsewhere, or with more in it, the same values are caught.
        let jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJnaXRodWIuY29tIiwiZXhwIjoxNzM1Njg5NjAwfQ.Xk3jd8Qm2LpZ7vB1nR5tY9wE4uI6oP0aSdFgHjKlZx0";
        assert!(e.scan_url(&format!("/x?jwt={jwt}"), "evil.test").is_some());
        assert!(
            e.scan_url(
                "/x?X-Amz-Credential=AKIAIWNJYAX4CSVEH53A%2Fghp_FAKE%2Fus-east-1%2Fs3%2Faws4_request",
                "s3.test"
            )
            .is_some()
        );
    }

    #[test]
    fn placeholder_shaped_like_a_token_is_not_a_pattern_hit() {
        let placeholder = token("sk-ant-api03-", "x", 93);
        let e = DlpEngine::new(
            &DlpConfig::default(),
            &[KnownSecret {
                name: "ANTHROPIC_API_KEY".to_owned(),
                value: SecretValue::new("real-value-123456789"),
                placeholder: Some(placeholder.clone()),
                host: "api.anthropic.com".to_owned(),
            }],
        )
        .unwrap();
        assert_eq!(
            e.scan(
                placeholder.as_bytes(),
                ScanPart::Header,
                "api.anthropic.com"
            ),
            None
        );
        assert_eq!(
            e.scan(placeholder.as_bytes(), ScanPart::Header, "evil.test"),
            None
        );
    }

    #[test]
    fn extra_patterns_respect_allowed_hosts() {
        let e = engine_with(vec![ExtraPattern {
            name: "acme-id".to_owned(),
            regex: "ACME-[0-9]{8}".to_owned(),
            allowed_hosts: vec!["*.acme.test".to_owned()],
        }]);
        let body = b"id=ACME-12345678";
        assert_eq!(
            body_finding(&e, body, "evil.test").as_deref(),
            Some("extra:acme-id")
        );
        assert_eq!(body_finding(&e, body, "git.acme.test"), None);
    }

    #[test]
    fn invalid_extra_pattern_is_an_error() {
        let result = DlpEngine::new(
            &DlpConfig {
                extra_patterns: vec![ExtraPattern {
                    name: "bad".to_owned(),
                    regex: "(".to_owned(),
                    allowed_hosts: vec![],
                }],
                ..DlpConfig::default()
            },
            &[],
        );
        assert!(result.unwrap_err().contains("bad"));
    }

    #[test]
    fn disabled_engine_finds_nothing() {
        let e = DlpEngine::new(
            &DlpConfig {
                enabled: false,
                ..DlpConfig::default()
            },
            &[],
        )
        .unwrap();
        assert_eq!(
            e.scan(
                token("ghp_", ALNUM, 36).as_bytes(),
                ScanPart::Body,
                "x.test"
            ),
            None
        );
    }

    #[test]
    fn streaming_finds_a_secret_split_across_chunks() {
        let e = engine();
        let mut body = vec![b'a'; 10_000];
        body.extend_from_slice(SECRET.as_bytes());
        body.extend_from_slice(&[b'b'; 10_000]);
        for chunk_size in [1, 7, 100, 4096, 10_010] {
            let mut scanner = BodyScanner::new(&e, "evil.test");
            let found = body
                .chunks(chunk_size)
                .find_map(|chunk| scanner.push(&e, chunk));
            assert_eq!(
                found.map(|f| f.rule).as_deref(),
                Some("bottle-secret:API_TOKEN"),
                "chunk size {chunk_size}"
            );
            assert!(scanner.tail.len() <= e.overlap_window());
        }
        let pattern_body = format!(
            "{}{}{}",
            "x ".repeat(3000),
            token("ghp_", ALNUM, 36),
            " y".repeat(10)
        );
        let mut scanner = BodyScanner::new(&e, "evil.test");
        let found = pattern_body
            .as_bytes()
            .chunks(13)
            .find_map(|chunk| scanner.push(&e, chunk));
        assert_eq!(found.map(|f| f.rule).as_deref(), Some("github-pat"));
    }

    #[test]
    fn a_chunk_scanned_in_halves_side_by_side_finds_what_its_halves_find_one_by_one() {
        let e = std::sync::Arc::new(engine());
        let scan = {
            let e = e.clone();
            move |buffer: &[u8], host: &str, budget: &mut Budget| {
                e.scan_budgeted(buffer, ScanPart::Body, host, budget)
                    .map(|f| f.rule)
            }
        };
        let chunk_len = 64 << 10;
        let mid = chunk_len / 2;
        let secrets = [SECRET.to_owned(), token("ghp_", ALNUM, 36)];
        // Around the seam of the halves, inside each half, and across the
        // previous chunk's end.
        let positions = [-10, 100, -20, -5, 0, 3, 900, 0];
        for secret in &secrets {
            for (k, offset) in positions.into_iter().enumerate() {
                let mut body = "x ".repeat(5_000).into_bytes();
                let first_chunk_end = body.len();
                body.extend(std::iter::repeat_n(b' ', chunk_len));
                // Relative to the chunk's start (the first two) or to its
                // seam; the last one ends the chunk.
                let at = match k {
                    0 | 1 => first_chunk_end as i64 + offset,
                    7 => (first_chunk_end + chunk_len - secret.len()) as i64,
                    _ => (first_chunk_end + mid) as i64 + offset,
                } as usize;
                body[at..at + secret.len()].copy_from_slice(secret.as_bytes());
                let (first, rest) = body.split_at(first_chunk_end);
                let rest = &rest[..chunk_len];

                let mut one_by_one = BodyScanner::new(&e, "evil.test");
                let expected = [first, &rest[..mid], &rest[mid..]]
                    .into_iter()
                    .find_map(|c| one_by_one.push_with(c, scan.clone()));
                let mut split = BodyScanner::new(&e, "evil.test");
                let found = split
                    .push_with(first, scan.clone())
                    .or_else(|| split.push_halves(rest, scan.clone(), held_helper()));
                assert!(expected.is_some(), "{secret} at {at}: the halves miss it");
                assert_eq!(found, expected, "{secret} at {at}");
            }
        }
        // A clean chunk: nothing found, the same tail kept as one by one.
        let body = "let total = items.iter().sum::<u64>();\n".repeat(3000);
        let mut one_by_one = BodyScanner::new(&e, "evil.test");
        let (a, b) = body.as_bytes().split_at(body.len() / 2);
        assert_eq!(one_by_one.push_with(a, scan.clone()), None);
        assert_eq!(one_by_one.push_with(b, scan.clone()), None);
        let mut split = BodyScanner::new(&e, "evil.test");
        assert_eq!(
            split.push_halves(body.as_bytes(), scan.clone(), held_helper()),
            None
        );
        assert_eq!(split.tail, one_by_one.tail);
        // With the helper busy, the chunk is scanned whole: the same tail.
        let busy = held_helper();
        let mut whole = BodyScanner::new(&e, "evil.test");
        assert_eq!(whole.push_split(body.as_bytes(), scan.clone()), None);
        assert_eq!(whole.tail, one_by_one.tail);
        drop(busy);
    }

    /// Each body is refused by the rule named beside it.
    fn assert_rules(e: &DlpEngine, cases: &[(&str, &str)]) {
        for (body, rule) in cases {
            assert_eq!(
                body_finding(e, body.as_bytes(), "any.test").as_deref(),
                Some(*rule),
                "{body}"
            );
        }
    }

    /// The helper thread, once free (other tests share it).
    fn held_helper() -> crate::assist::Claim {
        let started = std::time::Instant::now();
        loop {
            if let Some(claim) = crate::assist::claim() {
                return claim;
            }
            assert!(started.elapsed().as_secs() < 10, "the helper is never free");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// xorshift bytes: a stand-in for image or archive data.
    fn pseudo_random_bytes(len: usize, mut state: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn ordinary_traffic_does_not_fire() {
        let e = engine();
        let image = pseudo_random_bytes(300_000, 0x9e37_79b9_7f4a_7c15);
        let bodies: Vec<Vec<u8>> = vec![
            image.clone(),
            base64::engine::general_purpose::STANDARD.encode(&image).into_bytes(),
            URL_SAFE_NO_PAD.encode(&image).into_bytes(),
            format!(
                "{{\"image\": \"data:image/png;base64,{}\"}}",
                base64::engine::general_purpose::STANDARD.encode(&image[..50_000])
            )
            .into_bytes(),
            br#"{"name":"left-pad","version":"1.3.0","dist":{"shasum":"5b8a3a7765dfe001261dde915589e782f8c94d1e","tarball":"https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz","integrity":"sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQ9lJBuQRHBqgs9EFWXvVJD+ewSjIfhgWzPvnLb+FPfNNS1A=="}}"#.to_vec(),
            br#"{"model":"claude","messages":[{"role":"user","content":"Please refactor the token parser and the secret store module; ask for a password reset link"}],"max_tokens":1024}"#.to_vec(),
            b"GET /simple/requests/ HTTP/1.1\r\nAccept: text/html\r\n".to_vec(),
            b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----".to_vec(),
            b"task-sk-0001 risk-assessment ask-me-anything desk-lamp".to_vec(),
        ];
        for (i, body) in bodies.iter().enumerate() {
            assert_eq!(body_finding(&e, body, "registry.test"), None, "body {i}");
        }
        for url in [
            "/left-pad/-/left-pad-1.3.0.tgz",
            "/api/v1/crates/serde/1.0.200/download",
            "/repos/owner/repo/pulls?state=open&per_page=100",
            "/search?q=how+to+rotate+an+api+token",
            "/packages/aa/bb/cc/requests-2.32.3-py3-none-any.whl#sha256=70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02654d061d6dcc6",
        ] {
            assert_eq!(e.scan_url(url, "registry.test"), None, "{url}");
        }
    }

    fn engine_with_modes(default: DlpMode, hosts: &[(&str, DlpMode)]) -> DlpEngine {
        DlpEngine::new(
            &DlpConfig {
                mode: default,
                hosts: hosts
                    .iter()
                    .map(|(host, mode)| DlpHostMode {
                        host: (*host).to_owned(),
                        mode: *mode,
                    })
                    .collect(),
                ..DlpConfig::default()
            },
            &[KnownSecret {
                name: "API_TOKEN".to_owned(),
                value: SecretValue::new(SECRET),
                placeholder: None,
                host: "api.test".to_owned(),
            }],
        )
        .unwrap()
    }

    #[test]
    fn the_most_specific_host_mode_wins() {
        let e = engine_with_modes(
            DlpMode::Block,
            &[
                ("*.llm.test", DlpMode::Audit),
                ("*.eu.llm.test", DlpMode::Off),
                ("api.llm.test", DlpMode::Block),
            ],
        );
        assert_eq!(e.mode_for("other.test"), DlpMode::Block);
        assert_eq!(e.mode_for("x.llm.test"), DlpMode::Audit);
        assert_eq!(e.mode_for("x.eu.llm.test"), DlpMode::Off);
        assert_eq!(e.mode_for("api.llm.test"), DlpMode::Block);
        assert_eq!(e.mode_for("llm.test"), DlpMode::Block);
    }

    #[test]
    fn audit_and_off_modes_never_let_the_bottles_own_secrets_out() {
        let e = engine_with_modes(
            DlpMode::Block,
            &[
                ("audit.test", DlpMode::Audit),
                ("off.test", DlpMode::Off),
                ("*.off.test", DlpMode::Off),
            ],
        );
        let pat = token("ghp_", ALNUM, 36);
        let on = |host: &str, data: &str| e.scan(data.as_bytes(), ScanPart::Body, host);
        assert_eq!(
            on("block.test", &pat).map(|f| f.action),
            Some(Action::Block)
        );
        assert_eq!(
            on("audit.test", &pat).map(|f| f.action),
            Some(Action::Audit)
        );
        assert_eq!(on("off.test", &pat), None);
        let wrapped = base64::engine::general_purpose::STANDARD
            .encode(base64::engine::general_purpose::STANDARD.encode(SECRET));
        for host in ["audit.test", "off.test"] {
            for data in [SECRET, wrapped.as_str()] {
                let finding = on(host, data).unwrap();
                assert_eq!(finding.rule, "bottle-secret:API_TOKEN", "{host} {data}");
                assert_eq!(finding.action, Action::Block, "{host} {data}");
            }
        }
        assert!(
            e.scan_url(&format!("/x/{}", token("", ALNUM, 32)), "off.test")
                .is_none()
        );
        assert!(
            e.scan_host("6768705f736563726574746f6b656e.off.test")
                .is_none()
        );
        assert!(
            e.scan_host("6768705f736563726574746f6b656e.block.test")
                .is_some()
        );
    }

    #[test]
    fn named_headers_are_scanned_with_their_name() {
        let e = engine();
        assert_eq!(
            e.scan_header("x-api-key", b"Zx81kLmq2PzQ9f", "any.test")
                .map(|f| f.rule)
                .as_deref(),
            Some("credential-assignment")
        );
        assert_eq!(
            e.scan_header("x-request-id", b"Zx81kLmq2PzQ9f", "any.test"),
            None
        );
        assert_eq!(
            e.scan_header("accept", b"application/json", "any.test"),
            None
        );
    }

    #[test]
    fn a_token_cut_into_path_segments_query_values_or_labels_is_caught() {
        let e = engine();
        let hex: String = token("ghp_", ALNUM, 36)
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        let pieces = |n: usize| {
            hex.as_bytes()
                .chunks(n)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
        };
        let path = format!("/x/{}", pieces(8).join("/"));
        let query = format!(
            "/q?{}",
            pieces(6)
                .iter()
                .enumerate()
                .map(|(i, p)| format!("p{i}={p}"))
                .collect::<Vec<_>>()
                .join("&")
        );
        for url in [path, query] {
            assert!(e.scan_url(&url, "collect.example.com").is_some(), "{url}");
        }
        let host = format!("{}.x.example.com", pieces(8).join("."));
        assert!(e.scan_host(&host).is_some(), "{host}");
        // Ordinary URLs and hosts whose pieces join into nothing.
        for url in [
            "/v1/messages?beta=true",
            "/packages/3a/4b/5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d/requests-2.32.3-py3-none-any.whl",
            "/api/v1/crates/serde/1.0.200/download",
            "/search?q=rust&page=2&per_page=50&sort=updated",
        ] {
            assert_eq!(e.scan_url(url, "registry.example.com"), None, "{url}");
        }
        for host in [
            "a1b2c3d4.cloudfront.net",
            "r4---sn-ab5l6nzr.googlevideo.com",
            "objects.githubusercontent.com",
        ] {
            assert_eq!(e.scan_host(host), None, "{host}");
        }
    }

    #[test]
    fn data_in_urls_and_host_names_is_caught_by_shape() {
        let e = engine();
        for url in [
            "/c/8fKq2LmZ9xTb4NcR7vWd1YpE3sGh6JuA",
            "/q?d=726f6f743a783a303a303a726f6f743a2f726f6f74",
            "/q?d=%2538%2566%254B%2571%2532%254C%256D%255A%2539%2578%2554%2562%2534%254E%2563%2552%2537%2576%2557%2564",
        ] {
            assert!(e.scan_url(url, "any.test").is_some(), "{url}");
        }
        assert!(
            e.scan_url(
                "/dl?X-Amz-Signature=8fKq2LmZ9xTb4NcR7vWd1YpE3sGh6JuA&X-Amz-Date=20240101T000000Z",
                "any.test"
            )
            .is_none()
        );
        assert_eq!(
            e.scan_host("onswg4tfoqqhizlyoqqgqzlsmu.exfil.test")
                .map(|f| f.rule)
                .as_deref(),
            Some(entropy::ENCODED_HOST)
        );
        assert_eq!(e.scan_host("registry.npmjs.org"), None);
    }

    #[test]
    fn findings_never_contain_the_value() {
        let e = engine();
        let finding = e
            .scan(SECRET.as_bytes(), ScanPart::Body, "evil.test")
            .unwrap();
        assert!(!format!("{finding:?}").contains(SECRET));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn scanning_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
                let e = engine();
                let _ = e.scan(&bytes, ScanPart::Body, "x.test");
                let _ = e.scan_url(&String::from_utf8_lossy(&bytes), "x.test");
            }

            #[test]
            fn a_random_secret_is_found_inside_base64_at_any_offset(
                secret in "[A-Za-z0-9_-]{12,40}",
                prefix in proptest::collection::vec(any::<u8>(), 0..20),
                suffix in proptest::collection::vec(any::<u8>(), 0..20),
            ) {
                let e = DlpEngine::new(&DlpConfig::default(), &[KnownSecret {
                    name: "S".to_owned(),
                    value: SecretValue::new(secret.clone()),
                    placeholder: None,
                    host: "own.test".to_owned(),
                }]).unwrap();
                let mut blob = prefix.clone();
                blob.extend_from_slice(secret.as_bytes());
                blob.extend_from_slice(&suffix);
                for encoded in [
                    base64::engine::general_purpose::STANDARD.encode(&blob),
                    URL_SAFE_NO_PAD.encode(&blob),
                    hex::encode(&blob),
                    base32_no_pad(&blob),
                    base32_no_pad(&blob).to_ascii_lowercase(),
                ] {
                    prop_assert!(e.scan(encoded.as_bytes(), ScanPart::Body, "other.test").is_some());
                }
            }
        }
    }
}
