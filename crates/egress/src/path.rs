//! One spelling per request path, pure (no IO). The allowlist's path
//! prefixes, the credential routes' path prefixes, the placeholder guard, DLP
//! and the upstream all see the path this module produces, so what the proxy
//! decides on is what the upstream is sent.
//!
//! What is normalised ([`normalize_path`]):
//! - percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded (`%7E` → `~`, `%41` → `A`);
//! - every other escape is kept, its hex upper-cased (`%3b` → `%3B`), and raw
//!   non-ASCII bytes are percent-encoded (`é` → `%C3%A9`);
//! - literal `.` and `..` segments are removed (RFC 3986 §5.2.4).
//!
//! What is refused (the proxy answers 400 with the reason), because servers
//! read it in more than one way:
//! - a path that is not absolute (`*`, `v1/x`), holds a literal `\` (read as
//!   `/` by Windows servers) or a character not allowed in a path;
//! - a `%` not followed by two hex digits; an encoded control character
//!   (`%00`, `%0A`, `%7F`, C1 controls such as `%C2%85`); escapes whose
//!   bytes are not UTF-8, overlong forms included (`%C0%AE` is an overlong
//!   `.`, `%C0%AF` an overlong `/`);
//! - a dot segment spelled in any other way than a literal `.` or `..`: encoded
//!   (`%2e%2e`, `.%2E`), with a `;` parameter (`..;`, `.;x`, `..%3B`: servlet
//!   servers read `/public/..;/private` as `/private`), beside an encoded
//!   separator (`..%2Fadmin`, `%5C..`), in Unicode lookalikes (`．．`, `‥`),
//!   with trailing spaces (`..%20`) or three and more dots (`...`);
//! - `..` that climbs above the root (`/..`, `/a/../..`); RFC 3986 clamps it,
//!   servers do not all agree;
//! - `..` that removes an empty segment or one emptied by `;` parameters
//!   (`/v1//../x`, `/v1/;x/../x`): a server that merges slashes or drops
//!   parameters removes `v1` instead;
//! - `..` that removes a segment holding an encoded `/` or `\` (`/v1/a%2Fb/../x`):
//!   a server that decodes it removes a different segment.
//!
//! An encoded `/` or `\` (`%2F`, `%5C`) elsewhere is kept as it is: npm asks
//! for scoped packages as `/@scope%2fname` and GitLab names projects as
//! `group%2Fproject`. It is safe because no spelling that passes can change
//! which segments a decoding server sees as dot segments: a piece between
//! encoded separators that looks like a dot segment is refused, and so is
//! `..` removing a segment that holds one.
//!
//! Double encoding is data: `%252e%252e` is the literal text `%2e%2e` (the
//! escape `%25` is `%`), not a dot segment, and it is forwarded unchanged.
//! A server that decodes twice before resolving dot segments would read it
//! as `..`; such servers are out of reach of any proxy-side check and are
//! not bot-bottle's to protect.
//!
//! The query is never touched: it is not part of the path any rule or route
//! matches.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

/// Why a dot segment's spelling is ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DotSpelling {
    /// A `.` percent-encoded as `%2E`.
    Encoded,
    /// A `;` path parameter (`..;`, `.;x`, `..%3B`).
    Parameter,
    /// Beside an encoded `/` or `\` (`..%2Fadmin`).
    EncodedSeparator,
    /// A Unicode lookalike of `.` (`．`, `‥`) or of `/`.
    Lookalike,
    /// Dots followed by spaces (`..%20`), which Windows trims away.
    TrailingSpace,
    /// Three or more dots (`...`).
    ManyDots,
}

impl DotSpelling {
    fn name(self) -> &'static str {
        match self {
            Self::Encoded => "encoded-dot-segment",
            Self::Parameter => "dot-segment-parameter",
            Self::EncodedSeparator => "dot-segment-encoded-separator",
            Self::Lookalike => "dot-segment-lookalike",
            Self::TrailingSpace => "dot-segment-trailing-space",
            Self::ManyDots => "dot-segment-many-dots",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Self::Encoded => {
                "a dot segment with a percent-encoded `.` (`%2e%2e`): servers disagree on whether \
                 it means `..`"
            }
            Self::Parameter => {
                "a dot segment with a `;` parameter (`..;`): servlet servers drop the parameter \
                 and read it as `..`"
            }
            Self::EncodedSeparator => {
                "a dot segment beside an encoded `/` or `\\` (`..%2F`): servers that decode it \
                 read a `..` segment"
            }
            Self::Lookalike => {
                "a Unicode lookalike of a dot segment (`．．`, `‥`): servers that normalise \
                 Unicode read it as `..`"
            }
            Self::TrailingSpace => {
                "a dot segment followed by spaces (`..%20`): Windows servers trim them and read \
                 `..`"
            }
            Self::ManyDots => {
                "a segment of three or more dots (`...`): some servers read it as climbing more \
                 than one level"
            }
        }
    }
}

/// Why a path was refused: it could be read in more than one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    /// Not an absolute path (`*`, `v1/x`, empty).
    NotAbsolute,
    /// A byte that may not appear in a path (space, `#`, a raw control byte).
    InvalidCharacter,
    /// A literal `\`.
    Backslash,
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// An encoded control character (`%00`, `%0A`, `%7F`, `%C2%85`).
    ControlCharacter,
    /// Escapes whose bytes are not UTF-8 (overlong forms included).
    InvalidUtf8,
    /// Segment `segment` (1-based) is an ambiguously spelled dot segment.
    AmbiguousDotSegment {
        /// 1-based segment number.
        segment: usize,
        /// What makes it ambiguous.
        spelling: DotSpelling,
    },
    /// `..` climbs above the root.
    AboveRoot,
    /// `..` at `segment` removes an empty segment (or one emptied by `;` parameters).
    DotDotAfterEmptySegment {
        /// 1-based segment number of the `..`.
        segment: usize,
    },
    /// `..` at `segment` removes a segment holding an encoded `/` or `\`.
    DotDotAfterEncodedSeparator {
        /// 1-based segment number of the `..`.
        segment: usize,
    },
}

impl PathRefusal {
    /// The audit rule: `path-refused:<kind>`.
    pub fn rule(&self) -> String {
        let kind = match self {
            Self::NotAbsolute => "not-absolute",
            Self::InvalidCharacter => "invalid-character",
            Self::Backslash => "backslash",
            Self::BadPercentEncoding => "bad-percent-encoding",
            Self::ControlCharacter => "control-character",
            Self::InvalidUtf8 => "invalid-utf8",
            Self::AmbiguousDotSegment { spelling, .. } => spelling.name(),
            Self::AboveRoot => "above-root",
            Self::DotDotAfterEmptySegment { .. } => "dotdot-after-empty-segment",
            Self::DotDotAfterEncodedSeparator { .. } => "dotdot-after-encoded-separator",
        };
        format!("path-refused:{kind}")
    }
}

impl fmt::Display for PathRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAbsolute => f.write_str("the request target is not an absolute path (`/...`)"),
            Self::InvalidCharacter => {
                f.write_str("the path holds a character that is not allowed in a URL path")
            }
            Self::Backslash => f.write_str("the path holds a `\\`, which some servers read as `/`"),
            Self::BadPercentEncoding => {
                f.write_str("the path holds a `%` that is not followed by two hex digits")
            }
            Self::ControlCharacter => f.write_str(
                "the path holds an encoded control character (`%00`, `%0A`, `%7F`, ...)",
            ),
            Self::InvalidUtf8 => f.write_str(
                "the path's percent-escapes are not UTF-8 (overlong forms such as `%C0%AE` \
                 included), which servers decode differently",
            ),
            Self::AmbiguousDotSegment { segment, spelling } => {
                write!(f, "path segment {segment} is {}", spelling.explain())
            }
            Self::AboveRoot => f.write_str("the path's `..` segments climb above the root"),
            Self::DotDotAfterEmptySegment { segment } => write!(
                f,
                "path segment {segment} (`..`) would remove an empty segment (`//..` or `;x/..`), \
                 and servers that merge slashes or drop `;` parameters remove a different one"
            ),
            Self::DotDotAfterEncodedSeparator { segment } => write!(
                f,
                "path segment {segment} (`..`) would remove a segment holding an encoded `/` or \
                 `\\`, which servers that decode it count as several"
            ),
        }
    }
}

impl std::error::Error for PathRefusal {}

/// A request target (path and optional `?query`) whose path is normalised
/// ([`normalize_path`]); the query is kept as sent. Derefs to the whole
/// target, which is what is forwarded upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedTarget {
    text: String,
    path_len: usize,
}

impl NormalizedTarget {
    /// Normalises the path of an origin-form target (`/a/b?c`); the query
    /// (from the first `?`) is kept as it is.
    pub fn parse(raw: &str) -> Result<Self, PathRefusal> {
        let (path, query) = raw.split_at(raw.find('?').unwrap_or(raw.len()));
        let text = match normalize_path(path)? {
            Cow::Borrowed(_) => raw.to_owned(),
            Cow::Owned(mut normal) => {
                normal.push_str(query);
                normal
            }
        };
        Ok(Self {
            path_len: text.len() - query.len(),
            text,
        })
    }

    /// The whole target, path and query.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The normalised path, without the query.
    pub fn path(&self) -> &str {
        &self.text[..self.path_len]
    }

    /// The query as sent, without its `?`.
    pub fn query(&self) -> Option<&str> {
        self.text[self.path_len..].strip_prefix('?')
    }
}

impl Deref for NormalizedTarget {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for NormalizedTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Normalises an absolute path (no query) or says why it is ambiguous; see
/// the module docs for the rules. Idempotent: a normalised path comes back
/// unchanged. A path with nothing to normalise is returned borrowed.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathRefusal> {
    if !path.starts_with('/') {
        return Err(PathRefusal::NotAbsolute);
    }
    if is_plain(path) {
        return Ok(Cow::Borrowed(path));
    }
    normalize_slow(path).map(Cow::Owned)
}

/// An allow rule's path prefix in normal form: it must be absolute, hold no
/// dot segments (a prefix with `..` would silently widen) and pass
/// [`normalize_path`].
pub fn normalize_prefix(prefix: &str) -> Result<String, String> {
    if !prefix.starts_with('/') {
        return Err("path prefixes must start with `/`".to_owned());
    }
    if prefix.split('/').any(|s| s == "." || s == "..") {
        return Err(format!("path prefix {prefix:?} has a `.` or `..` segment"));
    }
    normalize_path(prefix)
        .map(Cow::into_owned)
        .map_err(|e| format!("path prefix {prefix:?} is ambiguous: {e}"))
}

/// True when the path is already normal: visible ASCII only, no `%`, `\`, `#` or `?`,
/// and no segment starting with `.` (so no dot segment of any spelling).
fn is_plain(path: &str) -> bool {
    path.bytes()
        .all(|b| matches!(b, 0x21..=0x7E) && !matches!(b, b'%' | b'\\' | b'#' | b'?'))
        && !path.contains("/.")
}

/// One segment after decoding.
enum Segment {
    /// A literal `.`.
    Dot,
    /// A literal `..`.
    DotDot,
    /// Anything else, in canonical spelling.
    Plain {
        text: String,
        /// Empty, or empty once `;` parameters and trailing spaces are dropped.
        hollow: bool,
        /// Holds an encoded `/` or `\` (or a lookalike).
        separator: bool,
    },
}

/// What removing an output segment with `..` would mean to other servers.
#[derive(Clone, Copy)]
enum Removal {
    /// The same as here.
    Plain,
    /// Empty or emptied by `;` parameters: merged or dropped elsewhere.
    Hollow,
    /// Holds an encoded separator: several segments elsewhere.
    Separator,
}

fn normalize_slow(path: &str) -> Result<String, PathRefusal> {
    let raw_segments: Vec<&str> = path[1..].split('/').collect();
    let last = raw_segments.len() - 1;
    let mut out: Vec<(String, Removal)> = Vec::new();
    for (index, raw) in raw_segments.iter().enumerate() {
        let number = index + 1;
        match decode_segment(raw, number)? {
            Segment::Dot => {
                if index == last {
                    out.push((String::new(), Removal::Plain));
                }
            }
            Segment::DotDot => {
                match out.pop() {
                    None => return Err(PathRefusal::AboveRoot),
                    Some((_, Removal::Hollow)) => {
                        return Err(PathRefusal::DotDotAfterEmptySegment { segment: number });
                    }
                    Some((_, Removal::Separator)) => {
                        return Err(PathRefusal::DotDotAfterEncodedSeparator { segment: number });
                    }
                    Some((_, Removal::Plain)) => {}
                }
                if index == last {
                    out.push((String::new(), Removal::Plain));
                }
            }
            Segment::Plain {
                text,
                hollow,
                separator,
            } => {
                let removal = if separator {
                    Removal::Separator
                } else if hollow {
                    Removal::Hollow
                } else {
                    Removal::Plain
                };
                out.push((text, removal));
            }
        }
    }
    let mut normal = String::with_capacity(path.len());
    for (text, _) in &out {
        normal.push('/');
        normal.push_str(text);
    }
    if normal.is_empty() {
        normal.push('/');
    }
    Ok(normal)
}

const fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn push_escape(text: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    text.push('%');
    text.push(HEX[usize::from(b >> 4)] as char);
    text.push(HEX[usize::from(b & 0xF)] as char);
}

/// Characters that Unicode normalisation (NFKC) or Windows best-fit turn
/// into `/` or `\`.
fn is_slash_lookalike(c: char) -> bool {
    matches!(
        c,
        '\u{FF0F}' | '\u{FF3C}' | '\u{FE68}' | '\u{2215}' | '\u{2044}' | '\u{29F5}'
    )
}

/// How many dots a character stands for after NFKC (`．` is `.`, `‥` is `..`).
fn dot_lookalike(c: char) -> Option<usize> {
    match c {
        '\u{FF0E}' | '\u{FE52}' | '\u{2024}' => Some(1),
        '\u{2025}' => Some(2),
        '\u{2026}' => Some(3),
        _ => None,
    }
}

/// If a piece (a segment, or a part of one between encoded separators) reads
/// as a dot segment to some server, what its spelling has beyond plain dots.
struct DotShape {
    dots: usize,
    parameter: bool,
    spaces: bool,
    lookalike: bool,
}

fn dot_shape(piece: &str) -> Option<DotShape> {
    let (core, parameter) = match piece.split_once(';') {
        Some((core, _)) => (core, true),
        None => (piece, false),
    };
    let trimmed = core.trim_end_matches(' ');
    if trimmed.is_empty() {
        return None;
    }
    let mut dots = 0;
    let mut lookalike = false;
    for c in trimmed.chars() {
        if c == '.' {
            dots += 1;
        } else if let Some(n) = dot_lookalike(c) {
            dots += n;
            lookalike = true;
        } else {
            return None;
        }
    }
    Some(DotShape {
        dots,
        parameter,
        spaces: trimmed.len() != core.len(),
        lookalike,
    })
}

fn decode_segment(raw: &str, number: usize) -> Result<Segment, PathRefusal> {
    let bytes = raw.as_bytes();
    let mut text = String::with_capacity(raw.len());
    let mut decoded = Vec::with_capacity(raw.len());
    let mut encoded_dot = false;
    let mut separator = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(high), Some(low)) = (
                    bytes.get(i + 1).copied().and_then(hex_value),
                    bytes.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(PathRefusal::BadPercentEncoding);
                };
                let value = (high << 4) | low;
                if value < 0x20 || value == 0x7F {
                    return Err(PathRefusal::ControlCharacter);
                }
                if is_unreserved(value) {
                    text.push(char::from(value));
                    encoded_dot |= value == b'.';
                } else {
                    push_escape(&mut text, value);
                    separator |= matches!(value, b'/' | b'\\');
                }
                decoded.push(value);
                i += 3;
            }
            b'\\' => return Err(PathRefusal::Backslash),
            0x00..=0x20 | 0x7F | b'#' | b'?' => return Err(PathRefusal::InvalidCharacter),
            0x80..=0xFF => {
                push_escape(&mut text, b);
                decoded.push(b);
                i += 1;
            }
            _ => {
                text.push(char::from(b));
                decoded.push(b);
                i += 1;
            }
        }
    }
    let decoded = std::str::from_utf8(&decoded).map_err(|_| PathRefusal::InvalidUtf8)?;
    if decoded.chars().any(char::is_control) {
        return Err(PathRefusal::ControlCharacter);
    }
    separator |= decoded.chars().any(is_slash_lookalike);
    match raw {
        "." => return Ok(Segment::Dot),
        ".." => return Ok(Segment::DotDot),
        _ => {}
    }
    let mut pieces = decoded.split(|c| c == '/' || c == '\\' || is_slash_lookalike(c));
    if let Some(shape) = pieces.clone().find_map(dot_shape) {
        let whole = pieces.nth(1).is_none();
        let spelling = if !whole {
            DotSpelling::EncodedSeparator
        } else if shape.lookalike {
            DotSpelling::Lookalike
        } else if shape.parameter {
            DotSpelling::Parameter
        } else if shape.spaces {
            DotSpelling::TrailingSpace
        } else if shape.dots > 2 {
            DotSpelling::ManyDots
        } else {
            debug_assert!(encoded_dot, "{raw}");
            DotSpelling::Encoded
        };
        return Err(PathRefusal::AmbiguousDotSegment {
            segment: number,
            spelling,
        });
    }
    let core = decoded.split(';').next().unwrap_or("");
    Ok(Segment::Plain {
        text,
        hollow: core.trim_end_matches(' ').is_empty(),
        separator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use DotSpelling as S;
    use PathRefusal as R;

    const fn dot(segment: usize, spelling: DotSpelling) -> PathRefusal {
        R::AmbiguousDotSegment { segment, spelling }
    }

    /// Spellings that normalise, with what is forwarded.
    const NORMALISED: &[(&str, &str)] = &[
        ("/", "/"),
        ("/v1/users", "/v1/users"),
        // RFC 3986 §5.2.4, literal dot segments.
        ("/v1/../admin", "/admin"),
        ("/v1/./x", "/v1/x"),
        ("/v1/x/.", "/v1/x/"),
        ("/v1/x/..", "/v1/"),
        ("/v1/x/./", "/v1/x/"),
        ("/a/b/../../c", "/c"),
        ("/a/./b/./../c", "/a/c"),
        ("/a/./..", "/"),
        ("/.", "/"),
        ("/a/..", "/"),
        ("/./a", "/a"),
        // Unreserved characters are decoded, any case.
        ("/%7Euser/%41%62c", "/~user/Abc"),
        ("/a%2d_%2E%7e", "/a-_.~"),
        ("/file%2ejson", "/file.json"),
        // An encoded dot inside a name is not a dot segment.
        ("/a%2e%2e", "/a.."),
        // Other escapes stay, upper-cased.
        ("/a%3bb", "/a%3Bb"),
        ("/a%3Bb", "/a%3Bb"),
        ("/%e2%82%ac", "/%E2%82%AC"),
        // Encoded separators away from dot segments stay (npm, GitLab).
        ("/@types%2fnode", "/@types%2Fnode"),
        (
            "/api/v4/projects/group%2Fproject/issues",
            "/api/v4/projects/group%2Fproject/issues",
        ),
        ("/a%5Cb", "/a%5Cb"),
        ("/v1/%2F/x", "/v1/%2F/x"),
        // Double encoding is data: `%25` is `%`, the rest is literal text.
        ("/v1/%252e%252e/admin", "/v1/%252e%252e/admin"),
        ("/v1/%252E%252E%252Fadmin", "/v1/%252E%252E%252Fadmin"),
        // Raw non-ASCII is encoded.
        ("/caf\u{e9}", "/caf%C3%A9"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        // Parameters on other segments, empty segments, names with dots.
        ("/a;b/c", "/a;b/c"),
        ("/a//b", "/a//b"),
        ("/a//b/../c", "/a//c"),
        ("/v1/a...b", "/v1/a...b"),
        ("/a/.hidden/..b/b..", "/a/.hidden/..b/b.."),
        ("/a/..a/../b", "/a/b"),
        ("/v1/a;x/../b", "/v1/b"),
        ("/a/%20/x", "/a/%20/x"),
    ];

    /// Spellings that are refused, with why.
    const REFUSED: &[(&str, PathRefusal)] = &[
        ("", R::NotAbsolute),
        ("*", R::NotAbsolute),
        ("v1/x", R::NotAbsolute),
        // W1: encoded dot segments, any case, partly encoded.
        ("/v1/%2e%2e/admin", dot(2, S::Encoded)),
        ("/v1/%2E%2E/admin", dot(2, S::Encoded)),
        ("/v1/.%2e/admin", dot(2, S::Encoded)),
        ("/v1/%2e./admin", dot(2, S::Encoded)),
        ("/v1/%2e/admin", dot(2, S::Encoded)),
        ("/v1/%2e%2e", dot(2, S::Encoded)),
        // W1: a dot segment glued to an encoded separator.
        ("/v1/..%2fadmin", dot(2, S::EncodedSeparator)),
        ("/v1/..%2Fadmin", dot(2, S::EncodedSeparator)),
        ("/v1/%2e%2e%2fadmin", dot(2, S::EncodedSeparator)),
        ("/v1/%2f..%2fadmin", dot(2, S::EncodedSeparator)),
        ("/v1/..%5cadmin", dot(2, S::EncodedSeparator)),
        ("/v1/x%2F..", dot(2, S::EncodedSeparator)),
        ("/v1%2F..%2Fadmin", dot(1, S::EncodedSeparator)),
        // W2: dot segments with path parameters (servlet servers).
        ("/public/..;/private", dot(2, S::Parameter)),
        ("/public/..;jsessionid=1/private", dot(2, S::Parameter)),
        ("/public/.;/x", dot(2, S::Parameter)),
        ("/public/.;x/x", dot(2, S::Parameter)),
        ("/public/..%3b/private", dot(2, S::Parameter)),
        ("/public/%2e%2e;/private", dot(2, S::Parameter)),
        // Windows: trailing spaces, three dots.
        ("/v1/..%20/admin", dot(2, S::TrailingSpace)),
        ("/v1/.../admin", dot(2, S::ManyDots)),
        ("/v1/%2e%2e%2e/admin", dot(2, S::ManyDots)),
        // Unicode lookalikes of `.` and `/`.
        ("/v1/%EF%BC%8E%EF%BC%8E/admin", dot(2, S::Lookalike)),
        ("/v1/\u{FF0E}\u{FF0E}/admin", dot(2, S::Lookalike)),
        ("/v1/%E2%80%A5/admin", dot(2, S::Lookalike)),
        ("/v1/.%EF%B9%92/admin", dot(2, S::Lookalike)),
        ("/v1/..%EF%BC%8Fadmin", dot(2, S::EncodedSeparator)),
        ("/v1/..\u{2215}admin", dot(2, S::EncodedSeparator)),
        // Climbing above the root.
        ("/..", R::AboveRoot),
        ("/../etc/passwd", R::AboveRoot),
        ("/a/../..", R::AboveRoot),
        ("/a/./../../b", R::AboveRoot),
        // `..` removing an empty, emptied or encoded-separator segment.
        ("/v1//../admin", R::DotDotAfterEmptySegment { segment: 3 }),
        ("/v1/;x/../admin", R::DotDotAfterEmptySegment { segment: 3 }),
        ("/v1/;/../admin", R::DotDotAfterEmptySegment { segment: 3 }),
        (
            "/v1/%3Bx/../admin",
            R::DotDotAfterEmptySegment { segment: 3 },
        ),
        (
            "/v1/%20/../admin",
            R::DotDotAfterEmptySegment { segment: 3 },
        ),
        (
            "/v1/a/b//../../../x",
            R::DotDotAfterEmptySegment { segment: 5 },
        ),
        (
            "/v1/a%2Fb/../admin",
            R::DotDotAfterEncodedSeparator { segment: 3 },
        ),
        (
            "/v1/%5C/../admin",
            R::DotDotAfterEncodedSeparator { segment: 3 },
        ),
        (
            "/v1/a%EF%BC%8Fb/../admin",
            R::DotDotAfterEncodedSeparator { segment: 3 },
        ),
        // Backslashes.
        ("/v1/..\\admin", R::Backslash),
        ("/v1\\..\\admin", R::Backslash),
        ("/a\\b", R::Backslash),
        // Control characters, raw or encoded.
        ("/a%00b", R::ControlCharacter),
        ("/v1/..%00/admin", R::ControlCharacter),
        ("/a%0ab", R::ControlCharacter),
        ("/a%0D%0Ab", R::ControlCharacter),
        ("/a%09", R::ControlCharacter),
        ("/a%7f", R::ControlCharacter),
        ("/a%C2%85", R::ControlCharacter),
        ("/a\u{85}", R::ControlCharacter),
        ("/a b", R::InvalidCharacter),
        ("/a#b", R::InvalidCharacter),
        ("/a\tb", R::InvalidCharacter),
        // Invalid percent-encoding.
        ("/a%zz", R::BadPercentEncoding),
        ("/a%2", R::BadPercentEncoding),
        ("/a%", R::BadPercentEncoding),
        ("/a%%41", R::BadPercentEncoding),
        ("/a%g0", R::BadPercentEncoding),
        ("/v1/%%32%65%%32%65/admin", R::BadPercentEncoding),
        // Not UTF-8: overlong `.` and `/`, surrogates, beyond U+10FFFF, stray bytes.
        ("/v1/%C0%AE%C0%AE/admin", R::InvalidUtf8),
        ("/v1/..%C0%AFadmin", R::InvalidUtf8),
        ("/v1/%E0%80%AE%E0%80%AE/admin", R::InvalidUtf8),
        ("/v1/%F0%80%80%AE/admin", R::InvalidUtf8),
        ("/a%ED%A0%80", R::InvalidUtf8),
        ("/a%F4%90%80%80", R::InvalidUtf8),
        ("/a%FF", R::InvalidUtf8),
        ("/a%C3", R::InvalidUtf8),
        ("/caf%E9", R::InvalidUtf8),
    ];

    #[test]
    fn spellings_that_normalise() {
        let mut failures = Vec::new();
        for (raw, expected) in NORMALISED {
            match normalize_path(raw) {
                Ok(normal) if normal == *expected => {
                    // Idempotent: the normal form is its own normal form.
                    let again = normalize_path(&normal);
                    if again.as_deref() != Ok(*expected) {
                        failures.push(format!("{raw:?}: not idempotent: {again:?}"));
                    }
                }
                other => failures.push(format!("{raw:?}: expected {expected:?}, got {other:?}")),
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn spellings_that_are_refused() {
        let mut failures = Vec::new();
        for (raw, expected) in REFUSED {
            match normalize_path(raw) {
                Err(refusal) if refusal == *expected => {}
                other => failures.push(format!("{raw:?}: expected {expected:?}, got {other:?}")),
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn plain_paths_are_borrowed() {
        assert!(matches!(
            normalize_path("/v1/users/42"),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(normalize_path("/a/.b"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn refusals_name_the_rule_and_the_reason() {
        let refusal = normalize_path("/public/..;/private").unwrap_err();
        assert_eq!(refusal.rule(), "path-refused:dot-segment-parameter");
        let text = refusal.to_string();
        assert!(text.contains("segment 2"), "{text}");
        assert!(text.contains("servlet"), "{text}");
        let refusal = normalize_path("/v1/%2e%2e/admin").unwrap_err();
        assert_eq!(refusal.rule(), "path-refused:encoded-dot-segment");
        assert!(refusal.to_string().contains("`%2e%2e`"), "{refusal}");
    }

    #[test]
    fn targets_keep_the_query_as_sent() {
        let target = NormalizedTarget::parse("/v1/../admin?x=../..&y=%2e%2e&z=%2F").unwrap();
        assert_eq!(target.as_str(), "/admin?x=../..&y=%2e%2e&z=%2F");
        assert_eq!(target.path(), "/admin");
        assert_eq!(target.query(), Some("x=../..&y=%2e%2e&z=%2F"));
        let plain = NormalizedTarget::parse("/a/b?c").unwrap();
        assert_eq!((plain.path(), plain.query()), ("/a/b", Some("c")));
        assert_eq!(&*plain, "/a/b?c");
        let bare = NormalizedTarget::parse("/a/%7e").unwrap();
        assert_eq!((bare.path(), bare.query()), ("/a/~", None));
        assert_eq!(
            NormalizedTarget::parse("/public/..;/private?x").unwrap_err(),
            dot(2, S::Parameter)
        );
        // A `?` ends the path: what follows is query, whatever it looks like.
        assert_eq!(
            NormalizedTarget::parse("/v1/?/../admin").unwrap().path(),
            "/v1/"
        );
    }

    #[test]
    fn prefixes_must_be_normal_and_free_of_dot_segments() {
        assert_eq!(normalize_prefix("/v1/").unwrap(), "/v1/");
        assert_eq!(normalize_prefix("/%7Euser/").unwrap(), "/~user/");
        assert!(normalize_prefix("v1/").is_err());
        assert!(normalize_prefix("/v1/../admin").is_err());
        assert!(normalize_prefix("/v1/.").is_err());
        assert!(normalize_prefix("/v1/%2e%2e/").is_err());
        assert!(normalize_prefix("/v1/%zz").is_err());
    }

    /// How one kind of server could read a raw path: which decoding and
    /// clean-up steps it applies before resolving dot segments.
    #[derive(Debug, Clone, Copy)]
    struct Server {
        /// Percent-decodes everything (`%2F` becomes a separator).
        decode: bool,
        /// Drops `;` parameters from each segment (servlet containers).
        strip_parameters: bool,
        /// Merges runs of `/` (nginx `merge_slashes`, Tomcat).
        merge_slashes: bool,
        /// Reads `\` as `/` (Windows, IIS).
        backslash_is_slash: bool,
        /// Maps Unicode lookalikes to ASCII (NFKC, best-fit).
        unicode_folding: bool,
        /// Trims trailing spaces from segments (Windows).
        trim_spaces: bool,
    }

    impl Server {
        fn all() -> Vec<Server> {
            (0..64u8)
                .map(|bits| Server {
                    decode: bits & 1 != 0,
                    strip_parameters: bits & 2 != 0,
                    merge_slashes: bits & 4 != 0,
                    backslash_is_slash: bits & 8 != 0,
                    unicode_folding: bits & 16 != 0,
                    trim_spaces: bits & 32 != 0,
                })
                .collect()
        }

        /// The path this server resolves `raw` to (RFC 3986 clamping at the root).
        fn resolve(&self, raw: &str) -> String {
            let mut text = if self.decode {
                let bytes = raw.as_bytes();
                let mut out = Vec::new();
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'%'
                        && let (Some(h), Some(l)) = (
                            bytes.get(i + 1).copied().and_then(hex_value),
                            bytes.get(i + 2).copied().and_then(hex_value),
                        )
                    {
                        out.push((h << 4) | l);
                        i += 3;
                    } else {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
                String::from_utf8_lossy(&out).into_owned()
            } else {
                raw.to_owned()
            };
            if self.unicode_folding {
                text = text
                    .replace(['\u{FF0E}', '\u{FE52}', '\u{2024}'], ".")
                    .replace('\u{2025}', "..")
                    .replace('\u{2026}', "...")
                    .replace(['\u{FF0F}', '\u{2215}', '\u{2044}'], "/")
                    .replace(['\u{FF3C}', '\u{FE68}', '\u{29F5}'], "\\");
            }
            if self.backslash_is_slash {
                text = text.replace('\\', "/");
            }
            let mut segments: Vec<String> = text[1..]
                .split('/')
                .map(|s| {
                    let mut s = s.to_owned();
                    if self.strip_parameters
                        && let Some(at) = s.find(';')
                    {
                        s.truncate(at);
                    }
                    if self.trim_spaces {
                        s = s.trim_end_matches(' ').to_owned();
                    }
                    s
                })
                .collect();
            if self.merge_slashes {
                let last_empty = segments.last().is_some_and(String::is_empty);
                segments.retain(|s| !s.is_empty());
                if last_empty {
                    segments.push(String::new());
                }
            }
            let mut out: Vec<String> = Vec::new();
            let count = segments.len();
            for (i, segment) in segments.into_iter().enumerate() {
                let is_last = i + 1 == count;
                match segment.as_str() {
                    "." => {}
                    ".." => {
                        out.pop();
                    }
                    _ => {
                        out.push(segment);
                        continue;
                    }
                }
                if is_last {
                    out.push(String::new());
                }
            }
            format!("/{}", out.join("/"))
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn token() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "/",
                "/",
                "/",
                "v1",
                "admin",
                "a",
                ".",
                "..",
                "...",
                "%2e",
                "%2E",
                "%2f",
                "%2F",
                "%5c",
                "%5C",
                ";",
                ";x",
                "%3b",
                "%20",
                "%25",
                "%252e",
                "%41",
                "%7e",
                "~",
                "\\",
                "%00",
                "%C0%AE",
                "%EF%BC%8E",
                "%EF%BC%8F",
                "%E2%80%A5",
                "\u{FF0E}",
                "%zz",
                "%",
                "%C3%A9",
                "\u{e9}",
            ])
        }

        fn raw_path() -> impl Strategy<Value = String> {
            (any::<bool>(), prop::collection::vec(token(), 0..14)).prop_map(|(v1, tokens)| {
                let start = if v1 { "/v1/" } else { "/" };
                format!("{start}{}", tokens.concat())
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            /// The point of the normaliser: when the proxy decides a path
            /// is under `/v1/` (and injects the credential), no server model
            /// resolves the raw path to somewhere outside `/v1/`, and the
            /// normal form is its own normal form.
            #[test]
            fn an_accepted_path_stays_under_its_prefix_for_every_server(raw in raw_path()) {
                if let Ok(normal) = normalize_path(&raw) {
                    let again = normalize_path(&normal);
                    prop_assert_eq!(again.as_deref(), Ok(&*normal));
                    if normal.starts_with("/v1/") {
                        for server in Server::all() {
                            let seen = server.resolve(&raw);
                            prop_assert!(
                                seen.starts_with("/v1/"),
                                "{raw:?} normalised to {normal:?}, but {server:?} reads {seen:?}"
                            );
                        }
                    }
                }
            }

            #[test]
            fn the_fast_path_agrees_with_the_slow_one(raw in "/[ -~]{0,40}") {
                if is_plain(&raw) {
                    prop_assert_eq!(normalize_slow(&raw), Ok(raw.clone()));
                }
            }

            #[test]
            fn never_panics(raw in "\\PC{0,60}") {
                let _ = normalize_path(&raw);
                let _ = NormalizedTarget::parse(&raw);
            }
        }
    }
}
