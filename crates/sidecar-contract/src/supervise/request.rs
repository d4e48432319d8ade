//! The two file formats the sidecar and the host CLI exchange, and their
//! rules: [`Request`] (`queue/<id>.json`, written by the sidecar) and
//! [`Decision`] (`decisions/<id>.json`, written by the host CLI).
//!
//! Everything here is pure validation; reading and writing lives in
//! `store` and `host`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Longest `reason` of an egress request, in characters.
pub const MAX_REASON_CHARS: usize = 2_000;
/// Longest `question` of an `ask_human` request, in characters.
pub const MAX_QUESTION_CHARS: usize = 4_000;
/// Longest `note` of a decision, in characters.
pub const MAX_NOTE_CHARS: usize = 8_000;
/// Most methods one egress request may name.
pub const MAX_METHODS: usize = 16;

/// What the agent asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    /// Reach a host the egress policy does not allow yet.
    Egress,
    /// A free-form question for the human.
    Question,
}

impl RequestKind {
    /// The wire name (`egress`, `question`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Egress => "egress",
            Self::Question => "question",
        }
    }
}

/// One request from the agent: `queue_dir/<id>.json`.
///
/// ```json
/// {"id":"0f1e…","bottle_slug":"implementer-3fa2","created":1764000000,
///  "kind":"egress","host":"docs.rs","port":443,"methods":["GET"],
///  "reason":"read the tokio docs"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// 32 lowercase hex digits (16 random bytes); also the file name.
    pub id: String,
    /// The bottle that asked.
    pub bottle_slug: String,
    /// Unix seconds when the request was queued.
    pub created: u64,
    /// Egress or question.
    pub kind: RequestKind,
    /// Egress: the host (`name` or `*.suffix`, lowercase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Egress: the port, if the agent named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Egress: the HTTP methods, if the agent named any (uppercase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Egress: why the agent needs the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Question: the question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
}

impl Request {
    /// Checks the rules serde cannot express: id syntax, the fields each
    /// kind needs and only those, host and method syntax, text limits.
    pub fn validate(&self) -> Result<(), String> {
        if !is_valid_id(&self.id) {
            return Err(format!("`{}` is not a request id", self.id));
        }
        if self.bottle_slug.is_empty() {
            return Err("bottle_slug is empty".into());
        }
        match self.kind {
            RequestKind::Egress => {
                let host = self
                    .host
                    .as_deref()
                    .ok_or("an egress request needs `host`")?;
                if validate_host(host)? != host {
                    return Err(format!("host `{host}` is not in lowercase"));
                }
                if self.port == Some(0) {
                    return Err("port 0 is not a port".into());
                }
                if let Some(methods) = &self.methods
                    && &validate_methods(methods)? != methods
                {
                    return Err("methods must be uppercase and unique".into());
                }
                let reason = self
                    .reason
                    .as_deref()
                    .ok_or("an egress request needs `reason`")?;
                validate_text("reason", reason, MAX_REASON_CHARS)?;
                if self.question.is_some() {
                    return Err("an egress request has no `question`".into());
                }
            }
            RequestKind::Question => {
                let question = self
                    .question
                    .as_deref()
                    .ok_or("a question request needs `question`")?;
                validate_text("question", question, MAX_QUESTION_CHARS)?;
                if self.host.is_some()
                    || self.port.is_some()
                    || self.methods.is_some()
                    || self.reason.is_some()
                {
                    return Err("a question request has only `question`".into());
                }
            }
        }
        Ok(())
    }

    /// One-line summary for audit lines and listings, e.g.
    /// `egress docs.rs:443 GET` or `question "Which branch…"`.
    pub fn summary(&self) -> String {
        match self.kind {
            RequestKind::Egress => {
                let mut out = format!("egress {}", self.host.as_deref().unwrap_or("?"));
                if let Some(port) = self.port {
                    out.push_str(&format!(":{port}"));
                }
                if let Some(methods) = &self.methods {
                    out.push(' ');
                    out.push_str(&methods.join(","));
                }
                out
            }
            RequestKind::Question => format!(
                "question {:?}",
                truncate(self.question.as_deref().unwrap_or(""), 80)
            ),
        }
    }

    /// Whether `other` asks for the same thing (same bottle, kind, host,
    /// port, methods or question); reasons may differ.
    pub fn same_ask(&self, other: &Request) -> bool {
        self.bottle_slug == other.bottle_slug
            && self.kind == other.kind
            && self.host == other.host
            && self.port == other.port
            && self.methods == other.methods
            && self.question == other.question
    }
}

/// What the human decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Egress allowed (the host CLI has changed the policy).
    Approved,
    /// Refused (egress or question).
    Denied,
    /// A question answered; the answer is the note.
    Answered,
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Answered => "answered",
        }
    }

    /// Whether this outcome can decide a request of `kind`: egress →
    /// approved or denied; question → answered or denied.
    pub fn fits(self, kind: RequestKind) -> bool {
        matches!(
            (kind, self),
            (_, Self::Denied)
                | (RequestKind::Egress, Self::Approved)
                | (RequestKind::Question, Self::Answered)
        )
    }
}

/// The human's decision on one request: `decisions_dir/<id>.json`.
///
/// ```json
/// {"id":"0f1e…","outcome":"approved","note":"read-only, please",
///  "decided_at":1764000042,"policy_version":"9c1b…"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// The request's id; must equal the file name's.
    pub id: String,
    /// What the human decided.
    pub outcome: Outcome,
    /// The human's note; for `answered`, the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Unix seconds of the decision.
    pub decided_at: u64,
    /// SHA-256 (hex) of the egress policy that carries an approval, as the
    /// egress sidecar reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
}

impl Decision {
    /// A decision stamped with the current time.
    pub fn now(id: impl Into<String>, outcome: Outcome, note: Option<String>) -> Self {
        Self {
            id: id.into(),
            outcome,
            note,
            decided_at: unix_now(),
            policy_version: None,
        }
    }

    /// Records the policy version that carries an approval.
    pub fn with_policy_version(mut self, version: impl Into<String>) -> Self {
        self.policy_version = Some(version.into());
        self
    }

    /// Checks this decision, read from `decisions/<file_id>.json`, against
    /// the pending `request`: ids match, the outcome fits the kind, an
    /// answer has text, the note and version are well formed.
    pub fn validate_for(&self, request: &Request, file_id: &str) -> Result<(), String> {
        if self.id != file_id {
            return Err(format!(
                "the decision names request {} but sits in {file_id}.json",
                self.id
            ));
        }
        if self.id != request.id {
            return Err(format!(
                "the decision names request {}, not {}",
                self.id, request.id
            ));
        }
        if !self.outcome.fits(request.kind) {
            return Err(format!(
                "`{}` cannot decide a{} {} request (use {})",
                self.outcome.as_str(),
                if request.kind == RequestKind::Egress {
                    "n"
                } else {
                    ""
                },
                request.kind.as_str(),
                match request.kind {
                    RequestKind::Egress => "approved or denied",
                    RequestKind::Question => "answered or denied",
                }
            ));
        }
        if let Some(note) = &self.note {
            validate_text("note", note, MAX_NOTE_CHARS)?;
        } else if self.outcome == Outcome::Answered {
            return Err("an answer needs its text in `note`".into());
        }
        if let Some(version) = &self.policy_version
            && (version.len() != 64
                || !version
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        {
            return Err("policy_version must be 64 lowercase hex digits (SHA-256)".into());
        }
        Ok(())
    }
}

/// Whether `id` is 32 lowercase hex digits.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Validates an egress host as the agent wrote it and returns it in
/// lowercase: a DNS name or `*.suffix` (suffix with two labels or more);
/// no scheme, port, path, IP address or trailing dot.
pub fn validate_host(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.parse::<IpAddr>().is_ok() || raw.starts_with('[') {
        return Err("ask for a host name, not an IP address".into());
    }
    if raw.contains(':') && !raw.contains("://") {
        return Err("write the host only; give the port in `port`".into());
    }
    if raw.contains('/') && !raw.contains("://") {
        return Err("write the host only, without a path".into());
    }
    // The same rules as the manifest's hosts (numeric spellings of addresses refused).
    plan::rules::HostPattern::parse(raw).map(|pattern| pattern.to_string())
}

/// Validates HTTP methods (tokens of letters) and returns them uppercase,
/// in the order given, without duplicates.
pub fn validate_methods(methods: &[String]) -> Result<Vec<String>, String> {
    if methods.is_empty() {
        return Err("`methods` is empty; omit it to ask for any method".into());
    }
    if methods.len() > MAX_METHODS {
        return Err(format!("at most {MAX_METHODS} methods"));
    }
    let mut out: Vec<String> = Vec::with_capacity(methods.len());
    for method in methods {
        let upper = method.trim().to_ascii_uppercase();
        if upper.is_empty() || upper.len() > 20 || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!("`{method}` is not an HTTP method"));
        }
        if !out.contains(&upper) {
            out.push(upper);
        }
    }
    Ok(out)
}

/// Checks free text the human will read: not blank, bounded, and free of
/// control characters other than newline and tab (no terminal escapes).
pub fn validate_text(field: &str, text: &str, max_chars: usize) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    if text.chars().count() > max_chars {
        return Err(format!("`{field}` has more than {max_chars} characters"));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(format!(
            "`{field}` contains control characters (only newlines and tabs are allowed)"
        ));
    }
    Ok(())
}

/// The first `max` characters of `text`, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A fresh request id: 16 bytes from `/dev/urandom`, hex.
pub fn new_id() -> Result<String, std::io::Error> {
    random_hex::<16>()
}

/// `N` random bytes from `/dev/urandom`, hex.
pub fn random_hex<const N: usize>() -> Result<String, std::io::Error> {
    use std::io::Read;
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn egress() -> Request {
        Request {
            id: ID.into(),
            bottle_slug: "impl-1".into(),
            created: 1,
            kind: RequestKind::Egress,
            host: Some("docs.rs".into()),
            port: Some(443),
            methods: Some(vec!["GET".into()]),
            reason: Some("docs".into()),
            question: None,
        }
    }

    fn question() -> Request {
        Request {
            id: ID.into(),
            bottle_slug: "impl-1".into(),
            created: 1,
            kind: RequestKind::Question,
            host: None,
            port: None,
            methods: None,
            reason: None,
            question: Some("Which branch?".into()),
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(validate_host("Docs.RS").unwrap(), "docs.rs");
        assert_eq!(validate_host("*.example.com").unwrap(), "*.example.com");
        assert_eq!(validate_host("localhost").unwrap(), "localhost");
        for bad in [
            "https://docs.rs",
            "docs.rs/path",
            "docs.rs:443",
            "10.0.0.1",
            "::1",
            "[::1]",
            "0x7f.1",
            "*.com",
            "a.*.com",
            "*",
            "",
            "docs.rs.",
            "a..b",
            "-a.com",
            "a_b.com",
            "exa mple.com",
        ] {
            assert!(validate_host(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(validate_host(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn methods() {
        let got = validate_methods(&["get".into(), "POST".into(), "GET".into()]).unwrap();
        assert_eq!(got, ["GET", "POST"]);
        assert!(validate_methods(&[]).is_err());
        assert!(validate_methods(&["GE T".into()]).is_err());
        assert!(validate_methods(&["".into()]).is_err());
    }

    #[test]
    fn text_refuses_terminal_escapes() {
        assert!(validate_text("reason", "line one\n\tline two", 100).is_ok());
        assert!(validate_text("reason", "\u{1b}[2Japproved", 100).is_err());
        assert!(validate_text("reason", "   ", 100).is_err());
        assert!(validate_text("reason", &"x".repeat(101), 100).is_err());
    }

    #[test]
    fn requests_validate_per_kind() {
        egress().validate().unwrap();
        question().validate().unwrap();
        let mut r = egress();
        r.question = Some("x".into());
        assert!(r.validate().is_err());
        let mut r = egress();
        r.host = Some("Docs.rs".into());
        assert!(r.validate().is_err());
        let mut r = egress();
        r.reason = None;
        assert!(r.validate().is_err());
        let mut r = question();
        r.host = Some("docs.rs".into());
        assert!(r.validate().is_err());
        let mut r = question();
        r.id = "ABC".into();
        assert!(r.validate().is_err());
    }

    #[test]
    fn request_files_refuse_unknown_fields() {
        let mut value = serde_json::to_value(egress()).unwrap();
        value["outcome"] = "approved".into();
        assert!(serde_json::from_value::<Request>(value).is_err());
    }

    #[test]
    fn outcomes_fit_kinds() {
        let cases = [
            (RequestKind::Egress, Outcome::Approved, true),
            (RequestKind::Egress, Outcome::Denied, true),
            (RequestKind::Egress, Outcome::Answered, false),
            (RequestKind::Question, Outcome::Approved, false),
            (RequestKind::Question, Outcome::Denied, true),
            (RequestKind::Question, Outcome::Answered, true),
        ];
        for (kind, outcome, fits) in cases {
            assert_eq!(outcome.fits(kind), fits, "{kind:?} {outcome:?}");
        }
    }

    #[test]
    fn decisions_validate_against_their_request() {
        let ok = Decision::now(ID, Outcome::Approved, Some("fine".into()));
        ok.validate_for(&egress(), ID).unwrap();
        // Wrong file name.
        let other = "ffffffffffffffffffffffffffffffff";
        assert!(ok.validate_for(&egress(), other).is_err());
        // Wrong request.
        let mut r = egress();
        r.id = other.into();
        assert!(ok.validate_for(&r, ID).is_err());
        // Wrong outcome for the kind.
        assert!(ok.validate_for(&question(), ID).is_err());
        let answered = Decision::now(ID, Outcome::Answered, Some("main".into()));
        assert!(answered.validate_for(&egress(), ID).is_err());
        answered.validate_for(&question(), ID).unwrap();
        // An answer needs text.
        assert!(
            Decision::now(ID, Outcome::Answered, None)
                .validate_for(&question(), ID)
                .is_err()
        );
        // Policy version shape.
        let versioned = Decision::now(ID, Outcome::Approved, None).with_policy_version("abc");
        assert!(versioned.validate_for(&egress(), ID).is_err());
        let versioned =
            Decision::now(ID, Outcome::Approved, None).with_policy_version("a".repeat(64));
        versioned.validate_for(&egress(), ID).unwrap();
    }

    #[test]
    fn decision_json_shape() {
        let d: Decision = serde_json::from_str(&format!(
            r#"{{"id":"{ID}","outcome":"denied","note":"no","decided_at":5}}"#
        ))
        .unwrap();
        assert_eq!(d.outcome, Outcome::Denied);
        assert!(
            serde_json::from_str::<Decision>(&format!(
                r#"{{"id":"{ID}","outcome":"maybe","decided_at":5}}"#
            ))
            .is_err()
        );
        assert!(
            serde_json::from_str::<Decision>(&format!(
                r#"{{"id":"{ID}","outcome":"denied","decided_at":5,"extra":1}}"#
            ))
            .is_err()
        );
    }

    #[test]
    fn ids() {
        let id = new_id().unwrap();
        assert!(is_valid_id(&id));
        assert_ne!(id, new_id().unwrap());
        assert!(!is_valid_id("0123456789ABCDEF0123456789ABCDEF"));
        assert!(!is_valid_id("../../etc/passwd"));
    }

    #[test]
    fn summaries() {
        assert_eq!(egress().summary(), "egress docs.rs:443 GET");
        assert_eq!(question().summary(), "question \"Which branch?\"");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }
}
