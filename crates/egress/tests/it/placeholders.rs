//! Placeholders never leave the proxy: the route's header is replaced, and a
//! placeholder anywhere else is refused with the variable, the place and the
//! reason, DLP on or off.

use std::net::SocketAddr;

use crate::support::*;

const RULE: &str = "placeholder-not-replaced:IT_UPSTREAM_TOKEN";

/// A proxy on the standard policy changed by `edit`, with its HTTPS upstream.
async fn start_with(edit: impl FnOnce(&mut serde_json::Value)) -> Standard {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::https(&upstream_ca).await;
    let mut policy = standard_policy(&[upstream.port()], true);
    edit(&mut policy);
    let dir = ProxyDir::new(&upstream_ca, policy);
    let proxy = dir.start().await;
    Standard {
        upstream,
        dir,
        proxy,
    }
}

fn dlp_off(policy: &mut serde_json::Value) {
    policy["dlp"]["enabled"] = false.into();
}

/// One HTTPS request with `extra` head lines (each ending in CRLF) and `body`.
async fn send(
    setup: &Standard,
    host: &str,
    request_line: &str,
    extra: &str,
    body: &str,
) -> RawResponse {
    let port = setup.upstream.port();
    let raw = format!(
        "{request_line} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    https_via_proxy(
        setup.proxy.local_addr(),
        host,
        port,
        &setup.dir.bottle_ca.cert_pem,
        &raw,
    )
    .await
}

/// The audit lines, checked never to carry the placeholder or the secret.
fn audit_lines(setup: &Standard) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(setup.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        !text.contains(PLACEHOLDER) && !text.contains(REAL_TOKEN),
        "the audit log carries a credential or placeholder: {text}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Asserts a refusal that names the variable, the place and the reason.
fn assert_refused(response: &RawResponse, place: &str, why: &str) {
    assert_eq!(response.status, 403, "{response:?}");
    let body = &response.body;
    assert!(
        body.contains("placeholder of IT_UPSTREAM_TOKEN not replaced"),
        "{body}"
    );
    assert!(body.contains(place), "{place}: {body}");
    assert!(body.contains(why), "{why}: {body}");
    assert!(body.contains(&format!("rule: {RULE}")), "{body}");
    assert!(
        !body.contains(PLACEHOLDER),
        "the 403 echoes the placeholder: {body}"
    );
    assert!(
        !body.contains(REAL_TOKEN),
        "the 403 echoes the secret: {body}"
    );
}

fn assert_last_audit_is_a_placeholder_denial(setup: &Standard) {
    let lines = audit_lines(setup);
    let last = lines.last().unwrap();
    assert_eq!(last["action"], "deny", "{last}");
    assert_eq!(last["rule"], RULE, "{last}");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .starts_with("placeholder of IT_UPSTREAM_TOKEN not replaced:"),
        "{last}"
    );
    assert!(last.get("dlp").is_none(), "not a DLP finding: {last}");
}

#[tokio::test]
async fn placeholder_in_the_route_header_is_replaced_and_passes() {
    for dlp_enabled in [true, false] {
        let setup = start_with(|p| p["dlp"]["enabled"] = dlp_enabled.into()).await;
        let response = send(
            &setup,
            "upstream.test",
            "POST /v1/messages?beta=true",
            &format!("Authorization: Bearer {PLACEHOLDER}\r\nX-Other: fine\r\n"),
            "{\"prompt\": \"hello\"}",
        )
        .await;
        assert_eq!(response.status, 200, "dlp {dlp_enabled}: {response:?}");
        assert_eq!(
            setup.upstream.last_header("authorization"),
            Some(format!("Bearer {REAL_TOKEN}"))
        );
        let echo = response.json();
        assert!(!response.body.contains(REAL_TOKEN));
        assert_eq!(echo["body"], "{\"prompt\": \"hello\"}");
        // The placeholder did not go upstream (the echo shows it again only
        // because the real token is scrubbed back to it: see scrubbing.rs).
        let seen = setup.upstream.seen.lock().unwrap();
        assert!(
            !format!("{:?}", seen.headers.last()).contains(PLACEHOLDER),
            "{:?}",
            seen.headers.last()
        );
    }
}

#[tokio::test]
async fn placeholder_in_another_header_to_the_route_host_is_refused() {
    let setup = Standard::start().await;
    let response = send(
        &setup,
        "upstream.test",
        "GET /v1/models",
        &format!("Authorization: Bearer {PLACEHOLDER}\r\nX-Api-Key: {PLACEHOLDER}\r\n"),
        "",
    )
    .await;
    assert_refused(
        &response,
        "this request carries the placeholder in header `x-api-key`",
        "the route for upstream.test sets `authorization`",
    );
    assert_eq!(setup.requests_seen(), 0, "the request reached the upstream");
    assert_last_audit_is_a_placeholder_denial(&setup);
}

#[tokio::test]
async fn placeholder_in_the_url_query_is_refused() {
    let setup = Standard::start().await;
    let encoded = PLACEHOLDER.replace('-', "%2D");
    for url in [
        format!("/v1/models?key={PLACEHOLDER}"),
        format!("/v1/models?key={encoded}"),
        format!("/v1/{PLACEHOLDER}/x"),
    ] {
        let response = send(
            &setup,
            "upstream.test",
            &format!("GET {url}"),
            &format!("Authorization: Bearer {PLACEHOLDER}\r\n"),
            "",
        )
        .await;
        assert_refused(
            &response,
            "this request carries the placeholder in the URL",
            "the route for upstream.test sets `authorization`",
        );
        let lines = audit_lines(&setup);
        assert_eq!(
            lines.last().unwrap()["path"],
            "[withheld: placeholder in url]"
        );
    }
    assert_eq!(setup.requests_seen(), 0, "the request reached the upstream");
    assert_last_audit_is_a_placeholder_denial(&setup);
}

/// Posts `first`, waits so the proxy forwards what it may, then `second`;
/// returns the raw response text.
async fn post_in_two_writes(
    proxy: SocketAddr,
    ca_pem: &str,
    host: &str,
    port: u16,
    first: Vec<u8>,
    second: Vec<u8>,
) -> String {
    let head = format!(
        "POST /v1/upload HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {PLACEHOLDER}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        first.len() + second.len()
    );
    let pause = std::time::Duration::from_millis(300);
    send_in_writes(proxy, ca_pem, host, port, head, vec![first, second], pause).await
}

/// A placeholder in the body, split across two writes: refused, and not even
/// its first half reaches the upstream.
async fn body_placeholder_is_refused(setup: &Standard) {
    let (first_half, second_half) = PLACEHOLDER.split_at(PLACEHOLDER.len() / 2);
    let mut first = vec![b'a'; 64 * 1024];
    first.extend_from_slice(first_half.as_bytes());
    let second = format!("{second_half}{}", "b".repeat(1024)).into_bytes();
    let text = post_in_two_writes(
        setup.proxy.local_addr(),
        &setup.dir.bottle_ca.cert_pem,
        "upstream.test",
        setup.upstream.port(),
        first,
        second,
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(
        text.contains("placeholder of IT_UPSTREAM_TOKEN not replaced")
            && text.contains("this request carries the placeholder in the body")
            && text.contains("the route for upstream.test sets `authorization`")
            && text.contains(&format!("rule: {RULE}")),
        "{text}"
    );
    assert!(
        !setup.upstream.received(first_half.as_bytes()),
        "part of the placeholder reached the upstream"
    );
    assert_last_audit_is_a_placeholder_denial(setup);
}

#[tokio::test]
async fn placeholder_in_the_body_to_the_route_host_is_refused_and_never_arrives() {
    body_placeholder_is_refused(&Standard::start().await).await;
}

#[tokio::test]
async fn placeholder_outside_the_route_path_prefix_is_refused() {
    let setup = start_with(|p| p["routes"][0]["path_prefix"] = "/v1/".into()).await;
    let auth = format!("Authorization: Bearer {PLACEHOLDER}\r\n");
    let response = send(&setup, "upstream.test", "GET /v2/models", &auth, "").await;
    assert_refused(
        &response,
        "this request carries the placeholder in header `authorization`",
        "outside the route's path prefix /v1/",
    );
    assert_eq!(setup.requests_seen(), 0, "the request reached the upstream");
    assert_last_audit_is_a_placeholder_denial(&setup);
    // Inside the prefix the route replaces it.
    let response = send(&setup, "upstream.test", "GET /v1/models", &auth, "").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        setup.upstream.last_header("authorization"),
        Some(format!("Bearer {REAL_TOKEN}"))
    );
}

#[tokio::test]
async fn placeholders_are_refused_with_dlp_disabled() {
    let setup = start_with(dlp_off).await;
    let response = send(
        &setup,
        "upstream.test",
        "GET /v1/models",
        &format!("X-Api-Key: {PLACEHOLDER}\r\n"),
        "",
    )
    .await;
    assert_refused(
        &response,
        "header `x-api-key`",
        "the route for upstream.test sets `authorization`",
    );
    let response = send(
        &setup,
        "upstream.test",
        &format!("GET /v1/models?key={PLACEHOLDER}"),
        "",
        "",
    )
    .await;
    assert_refused(&response, "the URL", "the route for upstream.test sets");
    let response = send(
        &setup,
        "upstream.test",
        "POST /v1/messages",
        "",
        &format!("{{\"key\": \"{PLACEHOLDER}\"}}"),
    )
    .await;
    assert_refused(&response, "the body", "the route for upstream.test sets");
    assert!(
        !setup.upstream.received(PLACEHOLDER.as_bytes()),
        "the placeholder reached the upstream"
    );
    // Split across writes: the placeholder window alone holds back enough.
    body_placeholder_is_refused(&setup).await;
    // A real secret in the body is not this guard's business: with DLP off it passes.
    let response = send(&setup, "other.test", "POST /x", "", REAL_TOKEN).await;
    assert_eq!(response.status, 200, "{response:?}");
}

#[tokio::test]
async fn placeholder_to_a_host_without_a_route_is_refused() {
    for dlp_enabled in [true, false] {
        let setup = start_with(|p| p["dlp"]["enabled"] = dlp_enabled.into()).await;
        for (extra, body, place) in [
            (
                format!("Authorization: Bearer {PLACEHOLDER}\r\n"),
                String::new(),
                "header `authorization`",
            ),
            (String::new(), format!("k={PLACEHOLDER}"), "the body"),
        ] {
            let response = send(&setup, "other.test", "POST /p", &extra, &body).await;
            assert_refused(
                &response,
                place,
                "this host has no route for it (it is replaced only in https requests to upstream.test)",
            );
        }
        assert_eq!(
            setup.requests_seen(),
            0,
            "dlp {dlp_enabled}: a request reached the upstream"
        );
        assert_last_audit_is_a_placeholder_denial(&setup);
    }
}

#[tokio::test]
async fn placeholder_in_plain_http_to_the_route_host_is_refused() {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::plain().await;
    let port = upstream.port();
    let mut policy = standard_policy(&[port], true);
    dlp_off(&mut policy);
    let dir = ProxyDir::new(&upstream_ca, policy);
    let proxy = dir.start().await;
    let response = plain_request(
        proxy.local_addr(),
        &format!(
            "GET http://upstream.test:{port}/v1 HTTP/1.1\r\nHost: upstream.test:{port}\r\n\
             Authorization: Bearer {PLACEHOLDER}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_refused(
        &response,
        "header `authorization`",
        "in https requests only, and this one is plain http",
    );
    assert_eq!(upstream.seen.lock().unwrap().requests, 0);
}
