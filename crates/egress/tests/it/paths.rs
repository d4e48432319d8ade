//! One spelling per path (issue 12, W1 and W2): a route limited to a path
//! prefix never injects its credential into a spelling that leaves the
//! prefix, an allow rule's path prefix cannot be stepped out of with `..;`,
//! and the upstream receives the normalised path (query as sent).

use crate::support::*;

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

/// `GET target` over an intercepted tunnel to `host`, no credential of the agent's own.
async fn get(setup: &Standard, host: &str, target: &str) -> RawResponse {
    let port = setup.upstream.port();
    let raw = format!("GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
    https_via_proxy(
        setup.proxy.local_addr(),
        host,
        port,
        &setup.dir.bottle_ca.cert_pem,
        &raw,
    )
    .await
}

/// Spellings of "`/admin`, reached through `/v1/`" (W1 and what else was found).
const W1_SPELLINGS: &[&str] = &[
    "/v1/../admin",
    "/v1/./../admin",
    "/v1/%2e%2e/admin",
    "/v1/%2E%2E/admin",
    "/v1/.%2e/admin",
    "/v1/..%2fadmin",
    "/v1/..%2Fadmin",
    "/v1/%2e%2e%2fadmin",
    "/v1/..%5cadmin",
    "/v1/..\\admin",
    "/v1/..;/admin",
    "/v1/..;x=1/admin",
    "/v1/%2e%2e;/admin",
    "/v1/..%3b/admin",
    "/v1//../admin",
    "/v1/;x/../admin",
    "/v1/a%2Fb/../../admin",
    "/v1/..%20/admin",
    "/v1/.../admin",
    "/v1/%C0%AE%C0%AE/admin",
    "/v1/..%C0%AFadmin",
    "/v1/%EF%BC%8E%EF%BC%8E/admin",
    "/v1/%E2%80%A5/admin",
    "/v1/..%00/admin",
    "/v1/../../admin",
    "/v1%2F..%2Fadmin",
];

/// W1: the route for upstream.test limited to `/v1/` injects into no spelling
/// that leaves `/v1/`: each is refused with a 400 (and never reaches the
/// upstream) or forwarded normalised, outside the prefix, without the credential.
#[tokio::test]
async fn a_route_path_prefix_injects_into_no_bypass_spelling() {
    let setup = start_with(|p| p["routes"][0]["path_prefix"] = "/v1/".into()).await;
    let mut failures = Vec::new();
    for spelling in W1_SPELLINGS {
        let before = setup.requests_seen();
        let response = get(&setup, "upstream.test", spelling).await;
        match response.status {
            400 => {
                if setup.requests_seen() != before {
                    failures.push(format!("{spelling}: 400 but the upstream saw it"));
                }
                if !response.body.contains("rule: path-refused:") {
                    failures.push(format!(
                        "{spelling}: 400 without the rule: {}",
                        response.body
                    ));
                }
            }
            200 => {
                let echo = response.json();
                let path = echo["path"].as_str().unwrap_or_default().to_owned();
                if echo["headers"].get("authorization").is_some() {
                    failures.push(format!(
                        "{spelling}: the credential was injected (upstream saw {path})"
                    ));
                }
                if path.starts_with("/v1/") || path.contains("..") || path.contains('%') {
                    failures.push(format!("{spelling}: forwarded as {path}, not normalised"));
                }
            }
            _ => failures.push(format!("{spelling}: {response:?}")),
        }
        if response.body.contains(REAL_TOKEN) {
            failures.push(format!("{spelling}: the credential came back to the agent"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Inside the prefix the route injects, also after normalisation.
    let inside = get(&setup, "upstream.test", "/v1/./models/%7Eme").await;
    assert_eq!(inside.status, 200, "{inside:?}");
    let echo = inside.json();
    assert_eq!(echo["path"], "/v1/models/~me");
    // The agent sent no Authorization: one the upstream saw is the route's
    // (what the response shows of it may be redacted on the way back).
    assert!(
        echo["headers"].get("authorization").is_some(),
        "no credential inside the prefix: {echo}"
    );
    // The literal `..` is forwarded resolved, without the credential.
    let response = get(&setup, "upstream.test", "/v1/../admin").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["path"], "/admin");
    // An encoded one is refused, and says why.
    let response = get(&setup, "upstream.test", "/v1/%2e%2e/admin").await;
    assert_eq!(response.status, 400, "{response:?}");
    assert!(
        response.body.contains("percent-encoded `.`"),
        "{}",
        response.body
    );
    let audit = std::fs::read_to_string(setup.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("path-refused:encoded-dot-segment"),
        "{audit}"
    );
    assert!(!audit.contains(REAL_TOKEN));
}

/// The finding as it was reported: `curl --path-as-is` through the proxy.
#[tokio::test]
async fn curl_path_as_is_spellings_get_no_credential() {
    let setup = start_with(|p| p["routes"][0]["path_prefix"] = "/v1/".into()).await;
    let port = setup.upstream.port();
    let cacert = setup.dir.bottle_ca_path();
    for (spelling, expected) in [
        ("/v1/../admin", 200),
        ("/v1/%2e%2e/admin", 400),
        ("/v1/..%2fadmin", 400),
    ] {
        let url = format!("https://upstream.test:{port}{spelling}");
        let (status, body) = curl(setup.proxy.local_addr(), &cacert, &["--path-as-is", &url]).await;
        assert_eq!(status, expected, "{spelling}: {body}");
        assert!(
            !body.contains(REAL_TOKEN),
            "{spelling}: credential injected: {body}"
        );
        if status == 200 {
            let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(echo["path"], "/admin", "{spelling}");
            assert!(
                echo["headers"].get("authorization").is_none(),
                "{spelling}: credential injected: {echo}"
            );
        }
    }
}

/// The upstream gets the normalised path; the query is forwarded as sent.
#[tokio::test]
async fn the_upstream_receives_the_normalised_path() {
    let setup = Standard::start().await;
    for (sent, forwarded) in [
        (
            "/a/./b/../c/%7Euser/%3bx/%41?q=../%2e%2e&r=%2F",
            "/a/c/~user/%3Bx/A?q=../%2e%2e&r=%2F",
        ),
        ("/@types%2fnode", "/@types%2Fnode"),
        ("/v1/%252e%252e/admin", "/v1/%252e%252e/admin"),
        ("/x/..", "/"),
        ("/caf%c3%a9/.", "/caf%C3%A9/"),
    ] {
        let response = get(&setup, "other.test", sent).await;
        assert_eq!(response.status, 200, "{sent}: {response:?}");
        assert_eq!(response.json()["path"], forwarded, "{sent}");
    }
    // Plain http (absolute form) too.
    let port = setup.upstream.port();
    let response = plain_request(
        setup.proxy.local_addr(),
        &format!(
            "GET http://other.test:{port}/v1/%2e%2e/admin HTTP/1.1\r\nHost: other.test:{port}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(response.status, 400, "{response:?}");
}

/// W2: with `path_prefixes: ["/public/"]`, `/public/..;/private` (servlet
/// servers read `/private`) is refused; dot segments are resolved before the
/// prefix is matched.
#[tokio::test]
async fn an_allow_rule_path_prefix_cannot_be_left_with_dot_segments() {
    let setup = start_with(|p| {
        p["allow"][1]["path_prefixes"] = serde_json::json!(["/public/"]);
    })
    .await;
    let mut failures = Vec::new();
    for (target, expected) in [
        ("/public/x", 200),
        ("/public/a/../x", 200),
        ("/public/..;/private", 400),
        ("/public/..;jsessionid=1/private", 400),
        ("/public/.;/../private", 400),
        ("/public/..%3B/private", 400),
        ("/public/%2e%2e;/private", 400),
        ("/public/%2e%2e/private", 400),
        ("/public/..%2fprivate", 400),
        ("/public/..\\private", 400),
        ("/public//../private", 400),
        ("/public/;/../private", 400),
        ("/public/../private", 403),
        ("/private?/public/", 403),
    ] {
        let before = setup.requests_seen();
        let response = get(&setup, "other.test", target).await;
        if response.status != expected {
            failures.push(format!("{target}: expected {expected}, got {response:?}"));
        }
        let reached = setup.requests_seen() != before;
        if reached != (expected == 200) {
            failures.push(format!("{target}: reached the upstream: {reached}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let response = get(&setup, "other.test", "/public/..;/private").await;
    assert!(
        response
            .body
            .contains("rule: path-refused:dot-segment-parameter"),
        "{}",
        response.body
    );
    assert!(response.body.contains("servlet"), "{}", response.body);
    // Plain http is held to the same rule.
    let port = setup.upstream.port();
    let response = plain_request(
        setup.proxy.local_addr(),
        &format!(
            "GET http://other.test:{port}/public/..;/private HTTP/1.1\r\nHost: other.test:{port}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(response.status, 400, "{response:?}");
}
