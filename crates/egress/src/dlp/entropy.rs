//! Shape heuristics for data hidden in URLs and host names, where no
//! credential format has to be involved: a path segment, query key or value,
//! or a sub-domain label that is encoded text (hex, base32, base64 of
//! something readable: DNS-style exfiltration to a host the allowlist
//! permits) or a long random token (several character classes, high Shannon
//! entropy, frequent class changes).
//!
//! Guards learned from real tools' traffic keep them quiet on content
//! hashes (lower-case hex of any length: git SHAs, PyPI's hashed paths,
//! crate and image digests; `sha256-`/`sha512-` integrity strings), UUIDs,
//! file names and versions (split at dots), word-like names joined with
//! hyphens, and signed-URL parameters of object stores.

use super::layers::{base32_decode, is_texty};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Finding name: a URL segment or query part that is encoded text.
pub const ENCODED_URL: &str = "encoded-data-in-url";
/// Finding name: a URL segment or query part that is a long random token.
pub const RANDOM_URL: &str = "high-entropy-url-token";
/// Finding name: a host name whose sub-domain labels carry encoded data.
pub const ENCODED_HOST: &str = "encoded-data-in-hostname";
/// Finding name: a sub-domain label that is a long random token.
pub const RANDOM_HOST: &str = "high-entropy-hostname-label";

/// Shortest piece looked at.
const MIN_TOKEN: usize = 20;

/// Query parameters that carry signatures of object-store and CDN URLs
/// (S3, GCS, Azure SAS, CloudFront): random by design and sent back to the
/// host that issued them.
const SIGNED_URL_PARAMETERS: &[&str] = &[
    "x-amz-signature",
    "x-amz-security-token",
    "x-amz-credential",
    "x-goog-signature",
    "x-goog-credential",
    "signature",
    "sig",
    "key-pair-id",
    "policy",
    // Docker Hub's CDN: `verify=<expiry>-<signature>`.
    "verify",
];

/// Whether a query parameter named `key` is exempt from the shape checks
/// (not from the credential rules).
pub fn is_signed_url_parameter(key: &[u8]) -> bool {
    SIGNED_URL_PARAMETERS
        .iter()
        .any(|p| key.eq_ignore_ascii_case(p.as_bytes()))
}

/// The request target with the values a host issued for its own signed
/// URLs blanked out (to `-`), so that the credential rules do not take them
/// for leaks: an object store's SigV4 credential scope (`X-Amz-Credential=
/// AKIA…/20240101/us-east-1/s3/aws4_request`: an access key's id, never
/// its secret) and the `jwt` of GitHub's release-asset downloads. Only a
/// value of exactly that shape is blanked: nothing else fits in it.
pub fn without_issued_values<'a>(
    path_and_query: &'a str,
    dest_host: &str,
) -> std::borrow::Cow<'a, str> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.into();
    };
    let github =
        dest_host == "githubusercontent.com" || dest_host.ends_with(".githubusercontent.com");
    let is_scope = |key: &str, value: &str| {
        (key.eq_ignore_ascii_case("x-amz-credential")
            || key.eq_ignore_ascii_case("x-goog-credential"))
            && is_credential_scope(&percent_decode(value.as_bytes()))
    };
    // A session token goes with the temporary key of the scope (`ASIA…`).
    let scoped = query
        .split('&')
        .any(|pair| pair.split_once('=').is_some_and(|(k, v)| is_scope(k, v)));
    let issued = |key: &str, value: &str| {
        is_scope(key, value)
            || (scoped && key.eq_ignore_ascii_case("x-amz-security-token"))
            || (github && key == "jwt" && is_jwt_shape(&percent_decode(value.as_bytes())))
    };
    if !query
        .split('&')
        .any(|pair| pair.split_once('=').is_some_and(|(k, v)| issued(k, v)))
    {
        return path_and_query.into();
    }
    let query: Vec<&str> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if issued(key, value) => &pair[..key.len() + 1],
            _ => pair,
        })
        .collect();
    let blanked: Vec<String> = query
        .iter()
        .map(|pair| {
            if pair.ends_with('=') {
                format!("{pair}-")
            } else {
                (*pair).to_owned()
            }
        })
        .collect();
    format!("{path}?{}", blanked.join("&")).into()
}

/// `key-id/yyyymmdd/region/service/aws4_request` (or `goog4_request`), the
/// key id an AWS access key id, a short name (R2, MinIO, other S3-compatible
/// stores) or a Google service account's address.
fn is_credential_scope(value: &[u8]) -> bool {
    let parts: Vec<&[u8]> = value.split(|&b| b == b'/').collect();
    let [key, date, region, service, terminal] = parts.as_slice() else {
        return false;
    };
    let name = |p: &[u8], max: usize| {
        (2..=max).contains(&p.len())
            && p.iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let aws_key = key.len() == 20
        && (key.starts_with(b"AKIA") || key.starts_with(b"ASIA"))
        && key
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit());
    // (GitHub's release assets sign as `releaseassetproduction`.)
    let short_key = (1..=32).contains(&key.len())
        && key
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let google_key = key.ends_with(b".iam.gserviceaccount.com") && key.len() <= 100;
    (aws_key || short_key || google_key)
        && date.len() == 8
        && date.iter().all(u8::is_ascii_digit)
        && name(region, 25)
        && name(service, 20)
        && matches!(*terminal, b"aws4_request" | b"goog4_request")
}

/// Three base64url parts joined by dots, the first a JSON header (`eyJ`).
fn is_jwt_shape(value: &[u8]) -> bool {
    let parts: Vec<&[u8]> = value.split(|&b| b == b'.').collect();
    parts.len() == 3
        && value.starts_with(b"eyJ")
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Shannon entropy in bits per byte.
pub fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let len = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

/// What a URL component (a path segment, query key or value, already
/// percent-decoded) carries, if it looks like exfiltrated data.
pub fn url_component_finding(component: &[u8]) -> Option<&'static str> {
    if component.len() < MIN_TOKEN || is_uuid(component) || is_integrity(component) {
        return None;
    }
    let wheel = component.ends_with(b".whl");
    for piece in component.split(|b| matches!(b, b'.' | b'~' | b',' | b':' | b';' | b'@' | b' ')) {
        if piece.len() < MIN_TOKEN || is_issued_id(piece) || (wheel && is_wheel_tags(piece)) {
            continue;
        }
        if decodes_to_text(piece) {
            return Some(ENCODED_URL);
        }
        if is_random_token(piece) {
            return Some(RANDOM_URL);
        }
    }
    None
}

/// A piece of a wheel's file name holding its compatibility tags
/// (`1-cp311-cp311-manylinux_2_17_x86_64`, PEP 425): names pip downloads.
fn is_wheel_tags(piece: &[u8]) -> bool {
    const TAGS: &[&[u8]] = &[
        b"cp3",
        b"py3",
        b"py2",
        b"abi3",
        b"none",
        b"any",
        b"manylinux",
        b"musllinux",
        b"macosx",
        b"win_",
        b"win32",
        b"linux_",
        b"pp3",
    ];
    TAGS.iter().any(|t| piece.windows(t.len()).any(|w| w == *t))
}

/// Identifiers that well-known services issue and clients send back in
/// paths: Anthropic's object ids (`msg_01…`, `file_011…`, `msgbatch_01…`),
/// GitHub's GraphQL node ids (`PRRC_kwDO…`) and the time-and-commit tail
/// of Go's pseudo-versions (`…-20240318143956-a85f2c67cd81`).
fn is_issued_id(piece: &[u8]) -> bool {
    let text = |p: &[u8], ok: fn(&u8) -> bool| !p.is_empty() && p.iter().all(ok);
    let anthropic = [
        "msg_01",
        "msgbatch_01",
        "file_01",
        "toolu_01",
        "srvtoolu_01",
        "req_01",
    ]
    .iter()
    .any(|prefix| {
        piece.strip_prefix(prefix.as_bytes()).is_some_and(|rest| {
            (18..=32).contains(&rest.len()) && text(rest, u8::is_ascii_alphanumeric)
        })
    });
    let github_node = piece.iter().position(|&b| b == b'_').is_some_and(|u| {
        (1..=5).contains(&u)
            && text(&piece[..u], u8::is_ascii_uppercase)
            && piece[u + 1..].starts_with(b"kw")
            && (8..=40).contains(&(piece.len() - u - 3))
            && piece[u + 3..]
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    let go_pseudo = {
        let parts: Vec<&[u8]> = piece.split(|&b| b == b'-').collect();
        let tail = |time: &[u8], commit: &[u8]| {
            time.len() == 14
                && text(time, u8::is_ascii_digit)
                && commit.len() == 12
                && commit
                    .iter()
                    .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        match parts.as_slice() {
            [time, commit] => tail(time, commit),
            [n, time, commit] => text(n, u8::is_ascii_digit) && tail(time, commit),
            _ => false,
        }
    };
    anthropic || github_node || go_pseudo
}

/// What a host name's sub-domain labels carry, if they look like
/// exfiltrated data. The last two labels (the registrable name) are not
/// looked at; IP addresses are not host names.
pub fn host_finding(host: &str) -> Option<&'static str> {
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return None;
    }
    // Nothing to look at below three labels or with short labels only.
    if host.len() < 21 || host.bytes().filter(|&b| b == b'.').count() < 2 {
        return None;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let sub = &labels[..labels.len() - 2];
    for label in sub {
        let label = label.as_bytes();
        if label.len() >= 16 && decodes_to_text(label) {
            return Some(ENCODED_HOST);
        }
        if label.len() >= MIN_TOKEN && !is_uuid(label) && is_random_token(label) {
            return Some(RANDOM_HOST);
        }
    }
    // Data split across labels: `aGVsbG8g.d29ybGQ.exfil.example`.
    if sub.len() > 1 {
        let joined: Vec<u8> = sub.iter().flat_map(|l| l.bytes()).collect();
        if joined.len() >= 24 && decodes_to_text(&joined) {
            return Some(ENCODED_HOST);
        }
        if joined.len() >= 32 && sub.iter().all(|l| l.len() >= 8) && is_random_token(&joined) {
            return Some(RANDOM_HOST);
        }
    }
    None
}

/// Hex, base32 or base64 (either alphabet) of at least 12 bytes of text.
fn decodes_to_text(piece: &[u8]) -> bool {
    let trimmed = piece
        .iter()
        .rposition(|&b| b != b'=')
        .map_or(&piece[..0], |p| &piece[..=p]);
    if trimmed.len() >= 24
        && trimmed.len().is_multiple_of(2)
        && trimmed.iter().all(u8::is_ascii_hexdigit)
        && hex::decode(trimmed).is_ok_and(|d| is_texty(&d) && d.len() >= 12)
    {
        return true;
    }
    let base32_alphabet = |b: &u8| b.is_ascii_alphabetic() || (b'2'..=b'7').contains(b);
    if trimmed.len() >= 20
        && trimmed.iter().all(base32_alphabet)
        && (trimmed.iter().all(|b| !b.is_ascii_lowercase())
            || trimmed.iter().all(|b| !b.is_ascii_uppercase()))
        && base32_decode(trimmed).is_some_and(|d| is_texty(&d) && d.len() >= 12)
    {
        return true;
    }
    if trimmed.len() >= 16 {
        let normalized: Vec<u8> = trimmed
            .iter()
            .map(|&b| match b {
                b'+' => b'-',
                b'/' => b'_',
                other => other,
            })
            .collect();
        let usable = normalized.len() - usize::from(normalized.len() % 4 == 1);
        if let Ok(decoded) = URL_SAFE_NO_PAD.decode(&normalized[..usable])
            && decoded.len() >= 12
            && is_texty(&decoded)
            // Base64 that decodes to plain words is more likely a name.
            && !decoded.iter().all(|b| b.is_ascii_alphanumeric())
        {
            return true;
        }
    }
    false
}

/// A long run of mixed character classes with high entropy and frequent
/// class changes: what generated tokens look like, and names do not.
fn is_random_token(piece: &[u8]) -> bool {
    if !piece
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'/' | b'='))
    {
        return false;
    }
    // Lower-case hex is what content hashes look like (git SHAs, PyPI and
    // crate digests), whatever their length.
    if piece
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        || piece
            .iter()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
    {
        return false;
    }
    // Judge the letters and digits, hyphens and underscores left out: random
    // base64url keeps them, hyphenated names are told apart by their vowels.
    let alnum: Vec<u8> = piece
        .iter()
        .copied()
        .filter(u8::is_ascii_alphanumeric)
        .collect();
    if alnum.len() < 16 {
        return false;
    }
    let upper = alnum.iter().filter(|b| b.is_ascii_uppercase()).count();
    let lower = alnum.iter().filter(|b| b.is_ascii_lowercase()).count();
    let digits = alnum.iter().filter(|b| b.is_ascii_digit()).count();
    let classes = [upper, lower, digits].iter().filter(|&&c| c > 0).count();
    let switches = alnum
        .windows(2)
        .filter(|w| class_of(w[0]) != class_of(w[1]))
        .count();
    let switch_rate = switches as f64 / alnum.len() as f64;
    let entropy = shannon_entropy(&alnum);
    let vowels = alnum
        .iter()
        .filter(|b| matches!(b.to_ascii_lowercase(), b'a' | b'e' | b'i' | b'o' | b'u'))
        .count();
    // Random letters have about one vowel in five, words two in five.
    let vowel_share = vowels as f64 / (upper + lower).max(1) as f64;
    // Words leave long lower-case runs (`Feature`, `Branch`); random
    // mixed-case text rarely has four lower-case letters in a row.
    let mut in_long_lower_runs = 0;
    let mut run = 0;
    for &b in alnum.iter().chain(std::iter::once(&b'0')) {
        if b.is_ascii_lowercase() {
            run += 1;
        } else {
            if run >= 4 {
                in_long_lower_runs += run;
            }
            run = 0;
        }
    }
    let long_lower_share = in_long_lower_runs as f64 / alnum.len() as f64;
    match classes {
        3 => entropy >= 3.7 && switch_rate >= 0.3 && long_lower_share < 0.3,
        2 => {
            // One case and digits (host labels, base36 ids): random text
            // changes class often; names and versions (`ubuntu2204jammy`,
            // `staging01eu`) do not.
            let digit_share = digits as f64 / alnum.len() as f64;
            alnum.len() >= 20
                && entropy >= 3.6
                && switch_rate >= 0.18
                && (0.08..=0.9).contains(&digit_share)
                && vowel_share < 0.3
        }
        _ => false,
    }
}

fn class_of(b: u8) -> u8 {
    if b.is_ascii_uppercase() {
        0
    } else if b.is_ascii_lowercase() {
        1
    } else if b.is_ascii_digit() {
        2
    } else {
        3
    }
}

fn is_uuid(text: &[u8]) -> bool {
    text.len() == 36
        && text.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn is_integrity(text: &[u8]) -> bool {
    [
        "sha1-", "sha256-", "sha384-", "sha512-", "sha256:", "sha512:",
    ]
    .iter()
    .any(|p| text.starts_with(p.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_known_strings() {
        assert_eq!(shannon_entropy(b""), 0.0);
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert!((shannon_entropy(b"abcd") - 2.0).abs() < 1e-9);
    }

    #[test]
    fn exfiltration_in_urls_is_seen() {
        for (component, rule) in [
            (&b"8fKq2LmZ9xTb4NcR7vWd1YpE3sGh6JuA"[..], RANDOM_URL),
            (b"-A96jjzP-E0nFAKEeYPGbGUOF_HniJ4r3pVb", RANDOM_URL),
            (
                b"Zm9yIHRoZSBsb3ZlIG9mIGRhdGE6IGFkbWluOmh1bnRlcjI=",
                ENCODED_URL,
            ),
            (b"726f6f743a783a303a303a726f6f743a2f726f6f74", ENCODED_URL),
            (b"ONSWG4TFOQQHIZLYOQQGQZLSMU", ENCODED_URL),
        ] {
            assert_eq!(
                url_component_finding(component),
                Some(rule),
                "{}",
                String::from_utf8_lossy(component)
            );
        }
    }

    #[test]
    fn ordinary_url_parts_are_left_alone() {
        for component in [
            &b"5b8a3a7765dfe001261dde915589e782f8c94d1e"[..],
            b"335f9764261e915ed497fcdeb11df5dfd6f7bf257d4a6a2a686d80da4d54",
            b"requests-2.32.3-py3-none-any.whl",
            b"550e8400-e29b-41d4-a716-446655440000",
            b"sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQ9lJBuQRHBqgs9EFWXvVJD+ewSjIfhgWzPvnLb+FPfNNS1A==",
            b"github-production-release-asset-2e65be",
            b"serde_derive-1.0.200.crate",
            b"how to rotate an api token",
            b"git-upload-pack",
            b"getting-started-with-typescript-generics",
            b"ThisIsALongCamelCaseIdentifierName",
            b"v1.2.3-beta.4+build.567",
            b"2024-01-01T00:00:00Z",
            b"my-Feature-Branch-2024-v3",
            b"myFeatureBranch2024v3release",
            b"Release-Candidate-2024-11-Final",
        ] {
            assert_eq!(
                url_component_finding(component),
                None,
                "{}",
                String::from_utf8_lossy(component)
            );
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host_finding("6768705f736563726574746f6b656e.exfil.example.com"),
            Some(ENCODED_HOST)
        );
        assert_eq!(
            host_finding("onswg4tfoqqhizlyoqqgqzlsmu.attacker.test"),
            Some(ENCODED_HOST)
        );
        assert_eq!(
            host_finding("k3j5h2l9m8n7b6v5c4x3z1q0w9e8.sink.example.com"),
            Some(RANDOM_HOST)
        );
        assert_eq!(
            host_finding("aGVsbG8gdGhlcmUs.IHRoaXMgaXMgYSBz.ZWNyZXQ.exfil.test"),
            Some(ENCODED_HOST)
        );
        // Base64 in labels arrives lower-cased: it still looks random.
        assert_eq!(
            host_finding("dghlihf1awnrigv4zmls.ig9mic9ldgmvc2hhzg93.x.example.org"),
            Some(RANDOM_HOST)
        );
        assert_eq!(
            host_finding("z2tn84yuwyt7puw6mxzchitjbyts3l.exfil.example.com"),
            Some(RANDOM_HOST)
        );
        for host in [
            "api.anthropic.com",
            "registry.npmjs.org",
            "files.pythonhosted.org",
            "objects.githubusercontent.com",
            "github-production-release-asset-2e65be.s3.amazonaws.com",
            "d1a2b3c4d5e6f7.cloudfront.net",
            "0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com",
            "127.0.0.1",
            "index.crates.io",
            "ubuntu2204jammyamd64.mirror.example.com",
            "mycompanystaging01eu.example.com",
            "npmregistrymirror01.example.com",
            "us-east-1.console.aws.amazon.com",
        ] {
            assert_eq!(host_finding(host), None, "{host}");
        }
    }

    #[test]
    fn signed_url_parameters_are_known() {
        assert!(is_signed_url_parameter(b"X-Amz-Signature"));
        assert!(!is_signed_url_parameter(b"data"));
    }
}
