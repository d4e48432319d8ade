//! The real credential never comes back (issue 12, E1): a route host that
//! reflects the request gets the real token, the agent reads the placeholder,
//! in headers and bodies, split across chunks or gzip-compressed; what the
//! proxy cannot scan is refused. And the known-secret encodings and
//! compressed request bodies of E2.

use std::io::Write;
use std::time::Duration;

use crate::support::*;

const SCRUB_RULE: &str = "credential-scrubbed:IT_UPSTREAM_TOKEN";

/// One HTTPS request to `host` on the standard setup, with `extra` head lines
/// (each ending in CRLF) and `body`; returns the response and its raw text.
async fn send(
    setup: &Standard,
    host: &str,
    request_line: &str,
    extra: &str,
    body: &[u8],
) -> (RawResponse, String) {
    let port = setup.upstream.port();
    let head = format!(
        "{request_line} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let raw = send_in_writes(
        setup.proxy.local_addr(),
        &setup.dir.bottle_ca.cert_pem,
        host,
        port,
        head,
        vec![body.to_vec()],
        Duration::ZERO,
    )
    .await;
    (parse_raw(&raw), raw)
}

/// A response as text (bodies here are text), chunked bodies joined.
fn parse_raw(raw: &str) -> RawResponse {
    let (head, rest) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {raw:?}"));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut body = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 || after.len() < size {
                break;
            }
            body.push_str(&after[..size]);
            rest = after[size..].trim_start_matches("\r\n");
        }
        body
    } else {
        rest.to_owned()
    };
    RawResponse {
        status,
        head: head.to_owned(),
        body,
    }
}

fn header<'a>(response: &'a RawResponse, name: &str) -> Option<&'a str> {
    response.head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn audit_lines(setup: &Standard) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(setup.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        !text.contains(REAL_TOKEN),
        "the audit log carries the credential: {text}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits for the audit line of `rule` (a scrub line is written when the body ends).
async fn audit_line(setup: &Standard, rule: &str) -> serde_json::Value {
    for _ in 0..50 {
        if let Some(line) = audit_lines(setup).into_iter().find(|l| l["rule"] == rule) {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no audit line {rule}: {:?}", audit_lines(setup));
}

fn bearer_placeholder() -> String {
    format!("Authorization: Bearer {PLACEHOLDER}\r\n")
}

/// What the agent reads where the token was: the placeholder, cut or padded
/// with `x` to the token's length (lengths are kept; generated placeholders
/// have the token's length, the test's is one shorter).
fn shown() -> String {
    let mut shown: String = PLACEHOLDER.chars().take(REAL_TOKEN.len()).collect();
    while shown.len() < REAL_TOKEN.len() {
        shown.push('x');
    }
    assert!(shown.starts_with(PLACEHOLDER));
    format!("Bearer {shown}")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// The agent never reads the real token: checks the raw response and that the
/// upstream did get it.
fn assert_no_token(setup: &Standard, raw: &str) {
    assert!(!raw.contains(REAL_TOKEN), "the agent read the token: {raw}");
    assert_eq!(
        setup.upstream.last_header("authorization").as_deref(),
        Some(format!("Bearer {REAL_TOKEN}").as_str()),
        "the upstream did not get the real token"
    );
}

#[tokio::test]
async fn a_reflected_credential_is_replaced_in_header_and_body() {
    let setup = Standard::start().await;
    let (response, raw) = send(
        &setup,
        "upstream.test",
        "GET /reflect",
        &bearer_placeholder(),
        b"",
    )
    .await;
    assert_eq!(response.status, 200, "{raw}");
    assert_no_token(&setup, &raw);
    let expected = shown();
    assert_eq!(
        header(&response, "x-reflected-authorization"),
        Some(expected.as_str())
    );
    assert_eq!(response.json()["headers"]["authorization"], expected);
    // Same-length replacement: the upstream's Content-Length still holds.
    assert_eq!(
        header(&response, "content-length"),
        Some(response.body.len().to_string().as_str()),
        "{raw}"
    );
    let line = audit_line(&setup, SCRUB_RULE).await;
    let reason = line["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("credential scrubbed from response"),
        "{reason}"
    );
    assert!(
        reason.contains("header `x-reflected-authorization`"),
        "{reason}"
    );
    assert!(reason.contains("1 time(s) in the body"), "{reason}");
    assert_eq!(line["host"], "upstream.test");
    assert_eq!(line["path"], "/reflect");
}

#[tokio::test]
async fn a_credential_split_across_two_response_chunks_is_replaced() {
    let setup = Standard::start().await;
    let (response, raw) = send(
        &setup,
        "upstream.test",
        "GET /reflect-split",
        &bearer_placeholder(),
        b"",
    )
    .await;
    assert_eq!(response.status, 200, "{raw}");
    assert!(
        header(&response, "transfer-encoding").is_some(),
        "the upstream's body should be chunked: {raw}"
    );
    assert_no_token(&setup, &raw);
    // Neither half of the token leaves on its own either.
    let (first_half, second_half) = REAL_TOKEN.split_at(REAL_TOKEN.len() / 2);
    assert!(!raw.contains(&format!("Bearer {first_half}")), "{raw}");
    assert!(!raw.contains(&format!("{second_half}\"")), "{raw}");
    assert_eq!(response.json()["headers"]["authorization"], shown());
    audit_line(&setup, SCRUB_RULE).await;
}

#[tokio::test]
async fn a_gzip_response_is_decoded_scrubbed_and_passed_uncompressed() {
    let setup = Standard::start().await;
    let extra = format!("{}Accept-Encoding: br, gzip\r\n", bearer_placeholder());
    let (response, raw) = send(&setup, "upstream.test", "GET /reflect-gzip", &extra, b"").await;
    assert_eq!(response.status, 200, "{raw}");
    assert_no_token(&setup, &raw);
    assert_eq!(header(&response, "content-encoding"), None, "{raw}");
    assert_eq!(response.json()["headers"]["authorization"], shown());
    // The upstream was only offered what the proxy can decode.
    assert_eq!(
        setup.upstream.last_header("accept-encoding").as_deref(),
        Some("gzip")
    );
    audit_line(&setup, SCRUB_RULE).await;
}

#[tokio::test]
async fn requests_to_a_route_host_ask_for_whole_decodable_answers() {
    let setup = Standard::start().await;
    let extra = "Range: bytes=7-20\r\nIf-Range: \"v1\"\r\nAccept-Encoding: br;q=1, deflate\r\n";
    let (response, raw) = send(&setup, "upstream.test", "GET /reflect", extra, b"").await;
    assert_eq!(response.status, 200, "{raw}");
    assert_no_token(&setup, &raw);
    assert_eq!(setup.upstream.last_header("range"), None);
    assert_eq!(setup.upstream.last_header("if-range"), None);
    assert_eq!(
        setup.upstream.last_header("accept-encoding").as_deref(),
        Some("deflate")
    );
    // Other hosts get the request as sent.
    let (response, raw) = send(&setup, "other.test", "GET /reflect", extra, b"").await;
    assert_eq!(response.status, 200, "{raw}");
    assert_eq!(
        setup.upstream.last_header("range").as_deref(),
        Some("bytes=7-20")
    );
    assert_eq!(
        setup.upstream.last_header("accept-encoding").as_deref(),
        Some("br;q=1, deflate")
    );
}

#[tokio::test]
async fn a_response_in_an_unknown_coding_is_refused() {
    let setup = Standard::start().await;
    let (response, raw) = send(
        &setup,
        "upstream.test",
        "GET /reflect-br",
        &bearer_placeholder(),
        b"",
    )
    .await;
    assert_eq!(response.status, 502, "{raw}");
    assert!(!raw.contains(REAL_TOKEN));
    assert!(
        response.body.contains("encoded with `br`") && response.body.contains("refused"),
        "{}",
        response.body
    );
    assert!(
        response.body.contains("rule: response-unscannable"),
        "{}",
        response.body
    );
    let line = audit_line(&setup, "response-unscannable").await;
    assert_eq!(line["action"], "deny");
}

#[tokio::test]
async fn responses_from_hosts_without_a_route_are_passed_as_sent() {
    let setup = Standard::start().await;
    let (response, raw) = send(
        &setup,
        "other.test",
        "GET /reflect-br",
        "Accept-Encoding: br\r\n",
        b"",
    )
    .await;
    assert_eq!(response.status, 200, "{raw}");
    assert_eq!(header(&response, "content-encoding"), Some("br"));
    assert_eq!(
        setup.upstream.last_header("accept-encoding").as_deref(),
        Some("br")
    );
    let (response, _) = send(&setup, "other.test", "GET /reflect-gzip", "", b"").await;
    assert_eq!(header(&response, "content-encoding"), Some("gzip"));
    assert!(!audit_lines(&setup).iter().any(|l| {
        l["rule"]
            .as_str()
            .unwrap_or("")
            .starts_with("credential-scrubbed")
    }),);
}

#[tokio::test]
async fn new_encodings_of_a_known_secret_are_blocked_in_requests() {
    let setup = Standard::start().await;
    let reversed: String = REAL_TOKEN.chars().rev().collect();
    let rot13: String = REAL_TOKEN
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' => char::from((b - b'a' + 13) % 26 + b'a'),
            b'A'..=b'Z' => char::from((b - b'A' + 13) % 26 + b'A'),
            _ => char::from(b),
        })
        .collect();
    let base32 = egress::dlp::base32_no_pad(format!("v={REAL_TOKEN}").as_bytes());
    let base32_lower_padded = {
        let mut b = egress::dlp::base32_no_pad(REAL_TOKEN.as_bytes()).to_ascii_lowercase();
        while !b.len().is_multiple_of(8) {
            b.push('=');
        }
        b
    };
    for (what, value) in [
        ("reversed", reversed),
        ("rot13", rot13),
        ("base32", base32),
        ("base32 lower case padded", base32_lower_padded),
    ] {
        for (place, line, extra, body) in [
            ("body", "POST /e2".to_owned(), String::new(), value.clone()),
            (
                "url",
                format!("GET /e2?d={value}"),
                String::new(),
                String::new(),
            ),
            (
                "header",
                "GET /e2".to_owned(),
                format!("X-Note: {value}\r\n"),
                String::new(),
            ),
        ] {
            let (response, raw) = send(&setup, "other.test", &line, &extra, body.as_bytes()).await;
            assert_eq!(response.status, 403, "{what} in the {place}: {raw}");
            assert!(
                response.body.contains("bottle-secret:IT_UPSTREAM_TOKEN"),
                "{what} in the {place}: {raw}"
            );
        }
    }
    assert!(!setup.upstream.received(REAL_TOKEN.as_bytes()));
    assert_eq!(setup.upstream.seen.lock().unwrap().requests, 0);
}

#[tokio::test]
async fn a_secret_in_a_gzip_request_body_is_blocked() {
    let setup = Standard::start().await;
    for (coding, body) in [
        ("gzip", gzip(format!("token={REAL_TOKEN}").as_bytes())),
        ("deflate", {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(format!("{{\"k\":\"{REAL_TOKEN}\"}}").as_bytes())
                .unwrap();
            e.finish().unwrap()
        }),
    ] {
        let extra = format!("Content-Encoding: {coding}\r\n");
        let (response, raw) = send(&setup, "other.test", "POST /up", &extra, &body).await;
        assert_eq!(response.status, 403, "{coding}: {raw}");
        assert!(
            response.body.contains("bottle-secret:IT_UPSTREAM_TOKEN"),
            "{coding}: {raw}"
        );
    }
    // A large body, the secret far past the first chunks.
    let mut plain = vec![b'a'; 3 << 20];
    plain.extend_from_slice(REAL_TOKEN.as_bytes());
    plain.extend_from_slice(&[b'b'; 1000]);
    let (response, raw) = send(
        &setup,
        "other.test",
        "POST /up",
        "Content-Encoding: gzip\r\n",
        &gzip(&plain),
    )
    .await;
    assert_eq!(response.status, 403, "{raw}");
    // A clean compressed body passes, as sent.
    let clean = gzip(b"{\"hello\": \"world\"}");
    let (response, raw) = send(
        &setup,
        "other.test",
        "POST /up",
        "Content-Encoding: gzip\r\n",
        &clean,
    )
    .await;
    assert_eq!(response.status, 200, "{raw}");
    assert!(setup.upstream.received(&clean));
}

#[tokio::test]
async fn a_request_body_that_cannot_be_scanned_is_refused() {
    let setup = Standard::start().await;
    let (response, raw) = send(
        &setup,
        "other.test",
        "POST /up",
        "Content-Encoding: br\r\n",
        b"\x1b\x00\x00compressed-ish",
    )
    .await;
    assert_eq!(response.status, 400, "{raw}");
    assert!(
        response.body.contains("encoded with `br`")
            && response.body.contains("dlp-unscannable-body"),
        "{raw}"
    );
    assert_eq!(setup.upstream.seen.lock().unwrap().requests, 0);
    // A bomb: past 8 MiB it decodes at more than 200x its size.
    let bomb = gzip(&vec![0u8; 40 << 20]);
    let (response, raw) = send(
        &setup,
        "other.test",
        "POST /up",
        "Content-Encoding: gzip\r\n",
        &bomb,
    )
    .await;
    assert_eq!(response.status, 400, "{raw}");
    assert!(response.body.contains("exceeds the scan bound"), "{raw}");
    // Corrupt gzip.
    let (response, raw) = send(
        &setup,
        "other.test",
        "POST /up",
        "Content-Encoding: gzip\r\n",
        b"not gzip at all",
    )
    .await;
    assert_eq!(response.status, 400, "{raw}");
    assert!(response.body.contains("corrupt"), "{raw}");
}

#[tokio::test]
async fn scrubbing_does_not_depend_on_dlp() {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::https(&upstream_ca).await;
    let mut policy = standard_policy(&[upstream.port()], true);
    policy["dlp"]["enabled"] = false.into();
    let dir = ProxyDir::new(&upstream_ca, policy);
    let proxy = dir.start().await;
    let setup = Standard {
        upstream,
        dir,
        proxy,
    };
    for path in ["/reflect", "/reflect-split", "/reflect-gzip"] {
        let (response, raw) = send(
            &setup,
            "upstream.test",
            &format!("GET {path}"),
            &bearer_placeholder(),
            b"",
        )
        .await;
        assert_eq!(response.status, 200, "{path}: {raw}");
        assert_no_token(&setup, &raw);
        assert_eq!(
            response.json()["headers"]["authorization"],
            shown(),
            "{path}"
        );
    }
}
