//! Data-loss prevention, pure: find this bottle's own secrets (raw, base64,
//! hex, percent-encoded, base32, reversed and rot13: [`encoded_form_list`];
//! gzip and deflate request bodies are decoded and scanned too, see
//! [`crate::body`]), well-known credential formats, and operator
//! patterns in request URLs, headers and bodies. Findings carry a rule NAME
//! only, never the matched bytes. Placeholders are not DLP's business: they
//! never leave the proxy, whatever the DLP setting ([`crate::placeholder`]);
//! DLP only keeps a credential-format match inside a placeholder from firing.
//!
//! Bodies are scanned as a stream ([`BodyScanner`]): each chunk is scanned
//! together with the last [`DlpEngine::overlap_window`] bytes of what came
//! before, so a secret split across chunks is still found, and nothing is
//! buffered beyond that window. A chunk is released upstream only after it
//! was scanned, so a complete secret never leaves; when a finding comes in
//! mid-body the transport aborts the upstream request (the upstream sees a
//! truncated request and a reset) and the client gets a 403.

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};
use regex::bytes::{Regex, RegexBuilder};

use crate::config::DlpConfig;
use crate::policy::HostPattern;
use crate::secret::SecretValue;

/// Bytes of context kept between body chunks for pattern rules; a
/// credential-format match longer than this that straddles a chunk boundary
/// can be missed (the known-secret window is sized to the secrets).
pub const PATTERN_WINDOW: usize = 4096;

/// Secrets shorter than this are only matched raw: their encodings are too
/// short to be told apart from ordinary data.
pub const MIN_ENCODED_SECRET_LEN: usize = 8;

/// A DLP hit: which rule fired. Never the matched value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// E.g. `github-pat`, `bottle-secret:GITHUB_TOKEN`, `extra:acme-id`.
    pub rule: String,
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

struct BuiltinRule {
    name: &'static str,
    keywords: &'static [&'static str],
    regex: &'static str,
    url_only: bool,
}

/// Credential formats, written from the issuers' documented token shapes
/// (gitleaks' MIT rules used as a cross-check). `(?-u)` keeps `\b` ASCII so
/// the regexes run on raw bytes.
const BUILTIN_RULES: &[BuiltinRule] = &[
    BuiltinRule {
        name: "aws-access-key-id",
        keywords: &["akia", "asia", "abia", "acca", "a3t"],
        regex: r"(?-u)\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b",
        url_only: false,
    },
    BuiltinRule {
        name: "github-pat",
        keywords: &["ghp_"],
        regex: r"(?-u)\bghp_[0-9A-Za-z]{36}\b",
        url_only: false,
    },
    BuiltinRule {
        name: "github-oauth-token",
        keywords: &["gho_"],
        regex: r"(?-u)\bgho_[0-9A-Za-z]{36}\b",
        url_only: false,
    },
    BuiltinRule {
        name: "github-user-to-server-token",
        keywords: &["ghu_"],
        regex: r"(?-u)\bghu_[0-9A-Za-z]{36}\b",
        url_only: false,
    },
    BuiltinRule {
        name: "github-server-to-server-token",
        keywords: &["ghs_"],
        regex: r"(?-u)\bghs_[0-9A-Za-z]{36}\b",
        url_only: false,
    },
    BuiltinRule {
        name: "github-refresh-token",
        keywords: &["ghr_"],
        regex: r"(?-u)\bghr_[0-9A-Za-z]{36}\b",
        url_only: false,
    },
    BuiltinRule {
        name: "github-fine-grained-pat",
        keywords: &["github_pat_"],
        regex: r"(?-u)\bgithub_pat_[0-9A-Za-z_]{82}\b",
        url_only: false,
    },
    BuiltinRule {
        name: "gitlab-pat",
        keywords: &["glpat-"],
        regex: r"(?-u)\bglpat-[0-9A-Za-z_\-]{20,}",
        url_only: false,
    },
    BuiltinRule {
        name: "anthropic-api-key",
        keywords: &["sk-ant-"],
        regex: r"(?-u)\bsk-ant-[a-z]{3,8}[0-9]{2}-[A-Za-z0-9_\-]{32,}",
        url_only: false,
    },
    BuiltinRule {
        name: "openai-api-key",
        keywords: &["sk-"],
        regex: r"(?-u)\bsk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{40,}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}|[A-Za-z0-9]{48})\b",
        url_only: false,
    },
    BuiltinRule {
        name: "slack-token",
        keywords: &["xox"],
        regex: r"(?-u)\bxox[abposr]-[0-9A-Za-z\-]{10,}",
        url_only: false,
    },
    BuiltinRule {
        name: "stripe-secret-key",
        keywords: &["sk_live_", "rk_live_"],
        regex: r"(?-u)\b[sr]k_live_[0-9A-Za-z]{20,}",
        url_only: false,
    },
    BuiltinRule {
        name: "google-api-key",
        keywords: &["aiza"],
        regex: r"(?-u)\bAIza[0-9A-Za-z_\-]{35}(?:[^0-9A-Za-z_\-]|$)",
        url_only: false,
    },
    BuiltinRule {
        name: "private-key",
        keywords: &["private key"],
        regex: r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----",
        url_only: false,
    },
    BuiltinRule {
        name: "jwt",
        keywords: &["eyj"],
        regex: r"(?-u)\beyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}",
        url_only: false,
    },
    BuiltinRule {
        name: "credential-in-query",
        keywords: &[
            "password=",
            "passwd=",
            "pwd=",
            "token=",
            "secret=",
            "api_key=",
            "apikey=",
        ],
        regex: r"(?i-u)[?&](?:password|passwd|pwd|token|secret|api_key|apikey|access_token|client_secret)=[^&#\s]{6,}",
        url_only: true,
    },
];

/// Characters `encodeURIComponent` leaves alone, so the other percent form.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

struct KnownForm {
    name: String,
    allowed_hosts: Vec<String>,
}

struct ExtraRule {
    name: String,
    regex: Regex,
    allowed_hosts: Vec<HostPattern>,
}

/// Where in a request the bytes come from; some rules apply to URLs only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanPart {
    /// Path and query (raw or decoded).
    Url,
    /// A header value.
    Header,
    /// Body bytes.
    Body,
}

/// The compiled DLP rules of one policy version.
pub struct DlpEngine {
    enabled: bool,
    known: Option<AhoCorasick>,
    known_forms: Vec<KnownForm>,
    longest_known_form: usize,
    placeholders: Vec<Vec<u8>>,
    prefilter: AhoCorasick,
    prefilter_rule: Vec<usize>,
    builtin: Vec<(&'static BuiltinRule, Regex)>,
    extra: Vec<ExtraRule>,
}

impl std::fmt::Debug for DlpEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlpEngine")
            .field("enabled", &self.enabled)
            .field("known_forms", &self.known_forms.len())
            .field("extra", &self.extra.len())
            .finish_non_exhaustive()
    }
}

/// Every spelling of `secret` that should be caught, sorted and without
/// duplicates: see [`encoded_form_list`].
pub fn encoded_forms(secret: &str) -> Vec<Vec<u8>> {
    let mut forms = encoded_form_list(secret);
    forms.sort();
    forms.dedup();
    forms
}

/// Every spelling of `secret` that should be caught, in a fixed order (raw
/// first) so the forms of two strings of the same shape line up one to one
/// (the response scrubber replaces a secret's form by its placeholder's form
/// of the same kind): raw; base64, standard and URL-safe, at the three byte
/// alignments (so padding and a secret inside a longer blob are both covered);
/// hex, lower and upper case; percent-encoded (two ways); base32 (RFC 4648, at
/// the five byte alignments, so with or without padding and inside a longer
/// blob), upper and lower case; reversed; rot13. Secrets shorter than
/// [`MIN_ENCODED_SECRET_LEN`] only get their raw form.
///
/// An agent can always pick an encoding not on this list (xor with a key,
/// every other byte, one character per request): DLP is a tripwire for
/// mistakes and lazy exfiltration, not containment.
pub fn encoded_form_list(secret: &str) -> Vec<Vec<u8>> {
    let raw = secret.as_bytes();
    let mut forms = vec![raw.to_vec()];
    if raw.len() < MIN_ENCODED_SECRET_LEN {
        return forms;
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3usize {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(raw);
            let encoded = engine.encode(&shifted);
            // Characters touched by the prefix bytes, and the last
            // partial character, depend on neighbouring data: drop them.
            let skip = (offset * 8).div_ceil(6);
            let end = (shifted.len() * 8) / 6;
            forms.push(encoded.as_bytes()[skip..end].to_vec());
        }
    }
    forms.push(hex::encode(raw).into_bytes());
    forms.push(hex::encode_upper(raw).into_bytes());
    forms.extend(percent_encoded_forms(secret));
    for offset in 0..5usize {
        let mut shifted = vec![0u8; offset];
        shifted.extend_from_slice(raw);
        let encoded = base32_no_pad(&shifted);
        // As for base64: keep only the characters made of the secret's bits
        // alone (the padding, if any, comes after the last partial one).
        let skip = (offset * 8).div_ceil(5);
        let end = (shifted.len() * 8) / 5;
        let fragment = encoded.as_bytes()[skip..end].to_vec();
        forms.push(fragment.to_ascii_lowercase());
        forms.push(fragment);
    }
    forms.push(raw.iter().rev().copied().collect());
    forms.push(raw.iter().map(|&b| rot13(b)).collect());
    forms
}

/// RFC 4648 base32 (upper case), without padding.
pub fn base32_no_pad(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity((data.len() * 8).div_ceil(5));
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// ROT13 of one byte: ASCII letters rotated by 13, everything else as is.
fn rot13(byte: u8) -> u8 {
    match byte {
        b'a'..=b'z' => (byte - b'a' + 13) % 26 + b'a',
        b'A'..=b'Z' => (byte - b'A' + 13) % 26 + b'A',
        _ => byte,
    }
}

/// `text` percent-encoded as every byte but alphanumerics, and as
/// `encodeURIComponent` does (upper-case hex).
pub fn percent_encoded_forms(text: &str) -> [Vec<u8>; 2] {
    [
        utf8_percent_encode(text, NON_ALPHANUMERIC)
            .to_string()
            .into_bytes(),
        utf8_percent_encode(text, URI_COMPONENT)
            .to_string()
            .into_bytes(),
    ]
}

impl DlpEngine {
    /// Compiles the rules for one policy: this bottle's secrets, the
    /// built-in credential formats and the configured extra patterns.
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
        let (patterns, known_forms): (Vec<Vec<u8>>, Vec<KnownForm>) = by_form.into_iter().unzip();
        let known = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::Standard)
                    .build(&patterns)
                    .map_err(|e| format!("dlp: cannot index bottle secrets: {e}"))?,
            )
        };

        let mut keywords = Vec::new();
        let mut prefilter_rule = Vec::new();
        let mut builtin = Vec::new();
        for (index, rule) in BUILTIN_RULES.iter().enumerate() {
            let regex = Regex::new(rule.regex)
                .map_err(|e| format!("dlp: built-in rule {} does not compile: {e}", rule.name))?;
            builtin.push((rule, regex));
            for keyword in rule.keywords {
                keywords.push(*keyword);
                prefilter_rule.push(index);
            }
        }
        let prefilter = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&keywords)
            .map_err(|e| format!("dlp: cannot build keyword prefilter: {e}"))?;

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

        Ok(Self {
            enabled: config.enabled,
            known,
            known_forms,
            longest_known_form,
            placeholders,
            prefilter,
            prefilter_rule,
            builtin,
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

    /// Scans one piece of a request going to `dest_host` (normalized).
    pub fn scan(&self, data: &[u8], part: ScanPart, dest_host: &str) -> Option<Finding> {
        if !self.enabled || data.is_empty() {
            return None;
        }
        if let Some(known) = &self.known {
            for hit in known.find_overlapping_iter(data) {
                let form = &self.known_forms[hit.pattern().as_usize()];
                if !form.allowed_hosts.iter().any(|h| h == dest_host) {
                    return Some(Finding {
                        rule: form.name.clone(),
                    });
                }
            }
        }
        let mut rules_to_run = [false; BUILTIN_RULES.len()];
        for hit in self.prefilter.find_overlapping_iter(data) {
            rules_to_run[self.prefilter_rule[hit.pattern().as_usize()]] = true;
        }
        for (index, (rule, regex)) in self.builtin.iter().enumerate() {
            if !rules_to_run[index] || (rule.url_only && part != ScanPart::Url) {
                continue;
            }
            if regex
                .find_iter(data)
                .any(|m| !self.is_placeholder_fragment(m.as_bytes()))
            {
                return Some(Finding {
                    rule: rule.name.to_owned(),
                });
            }
        }
        for rule in &self.extra {
            if rule.allowed_hosts.iter().any(|h| h.matches(dest_host)) {
                continue;
            }
            if rule.regex.is_match(data) {
                return Some(Finding {
                    rule: rule.name.clone(),
                });
            }
        }
        None
    }

    /// Scans a request target (path + query) both as sent and
    /// percent-decoded (with `+` as space), so encoding does not hide it.
    pub fn scan_url(&self, path_and_query: &str, dest_host: &str) -> Option<Finding> {
        let raw = path_and_query.as_bytes();
        if let Some(finding) = self.scan(raw, ScanPart::Url, dest_host) {
            return Some(finding);
        }
        let plus_as_space: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        for candidate in [raw, plus_as_space.as_slice()] {
            let decoded: Vec<u8> = percent_decode(candidate).collect();
            if decoded != raw
                && let Some(finding) = self.scan(&decoded, ScanPart::Url, dest_host)
            {
                return Some(finding);
            }
        }
        None
    }

    /// A placeholder may look like a real token (that is the point): a
    /// pattern match that is part of a declared placeholder is not a leak.
    fn is_placeholder_fragment(&self, matched: &[u8]) -> bool {
        self.placeholders
            .iter()
            .any(|p| p.windows(matched.len()).any(|w| w == matched))
    }
}

/// Streaming body scan state for one request.
#[derive(Debug)]
pub struct BodyScanner {
    tail: Vec<u8>,
    window: usize,
    dest_host: String,
}

impl BodyScanner {
    /// Starts scanning a body going to `dest_host`.
    pub fn new(engine: &DlpEngine, dest_host: &str) -> Self {
        Self {
            tail: Vec::new(),
            window: engine.overlap_window(),
            dest_host: dest_host.to_owned(),
        }
    }

    /// Starts a scan that keeps `window` bytes between chunks (for scans
    /// beyond DLP's own, see [`BodyScanner::push_with`]).
    pub fn with_window(window: usize, dest_host: &str) -> Self {
        Self {
            tail: Vec::new(),
            window,
            dest_host: dest_host.to_owned(),
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
        self.push_with(chunk, |buffer, dest_host| {
            engine.scan(buffer, ScanPart::Body, dest_host)
        })
    }

    /// Runs `scan(buffer, dest_host)` on the next chunk with the overlap
    /// kept from earlier chunks in front of it.
    pub fn push_with<T>(
        &mut self,
        chunk: &[u8],
        scan: impl FnOnce(&[u8], &str) -> Option<T>,
    ) -> Option<T> {
        if chunk.is_empty() {
            return None;
        }
        let mut buffer = std::mem::take(&mut self.tail);
        buffer.extend_from_slice(chunk);
        let finding = scan(&buffer, &self.dest_host);
        let keep_from = buffer.len().saturating_sub(self.window);
        buffer.drain(..keep_from);
        self.tail = buffer;
        finding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExtraPattern;

    const SECRET: &str = "s3cr3t-Token_value-0123456789abcdef";
    const PLACEHOLDER: &str = "placeholder-for-the-agent-0000";

    fn engine_with(extra: Vec<ExtraPattern>) -> DlpEngine {
        DlpEngine::new(
            &DlpConfig {
                enabled: true,
                extra_patterns: extra,
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
    fn credentials_in_query_strings_are_caught_in_urls_only() {
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
                Some("credential-in-query"),
                "{url}"
            );
        }
        assert_eq!(body_finding(&e, b"password=hunter22", "any.test"), None);
        assert_eq!(e.scan_url("/search?q=token&page=2", "any.test"), None);
        assert_eq!(e.scan_url("/x?token=", "any.test"), None);
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
                enabled: true,
                extra_patterns: vec![ExtraPattern {
                    name: "bad".to_owned(),
                    regex: "(".to_owned(),
                    allowed_hosts: vec![],
                }],
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
                extra_patterns: vec![],
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
