//! Allowed traffic: interception, forwarding, credential injection, local
//! endpoints.

use crate::support::*;

#[tokio::test]
async fn curl_through_interception_reaches_the_upstream() {
    let Standard {
        upstream,
        dir,
        proxy,
        ..
    } = Standard::start().await;
    let url = format!("https://other.test:{}/hello?x=1", upstream.port());
    let (status, body) = curl(proxy.local_addr(), &dir.bottle_ca_path(), &[&url]).await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/hello?x=1");
    assert_eq!(
        echo["headers"]["host"],
        format!("other.test:{}", upstream.port())
    );
}

#[tokio::test]
async fn curl_is_rejected_without_the_bottle_ca() {
    let Standard {
        upstream,
        dir,
        proxy,
        ..
    } = Standard::start().await;
    let wrong_ca = dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong_ca, TestCa::new("unrelated").cert_pem).unwrap();
    let url = format!("https://other.test:{}/", upstream.port());
    let (status, _) = curl(proxy.local_addr(), &wrong_ca, &[&url]).await;
    assert_eq!(
        status, 0,
        "TLS must fail when the client does not trust the bottle CA"
    );
}

#[tokio::test]
async fn rust_client_posts_a_body_through_the_tunnel() {
    let Standard {
        upstream,
        dir,
        proxy,
        ..
    } = Standard::start().await;
    let port = upstream.port();
    let body = "{\"hello\": \"world\"}";
    let request = format!(
        "POST /submit HTTP/1.1\r\nHost: other.test:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = https_via_proxy(
        proxy.local_addr(),
        "other.test",
        port,
        &dir.bottle_ca.cert_pem,
        &request,
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    let echo = response.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/submit");
    assert_eq!(echo["body"], body);
}

#[tokio::test]
async fn plain_http_absolute_form_is_forwarded() {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::plain().await;
    let dir = ProxyDir::new(&upstream_ca, standard_policy(&[upstream.port()], true));
    let proxy = dir.start().await;
    let port = upstream.port();
    let response = plain_request(
        proxy.local_addr(),
        &format!("GET http://other.test:{port}/plain HTTP/1.1\r\nHost: other.test:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["path"], "/plain");
}

#[tokio::test]
async fn credential_is_injected_in_place_of_the_placeholder() {
    let Standard {
        upstream,
        dir,
        proxy,
        ..
    } = Standard::start().await;
    let url = format!("https://upstream.test:{}/v1/messages", upstream.port());
    let auth = format!("Authorization: Bearer {PLACEHOLDER}");
    let (status, body) = curl(
        proxy.local_addr(),
        &dir.bottle_ca_path(),
        &["-H", &auth, &url],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        upstream.last_header("authorization"),
        Some(format!("Bearer {REAL_TOKEN}"))
    );
    // The echo of the route's host comes back scrubbed (see scrubbing.rs).
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    let shown = echo["headers"]["authorization"].as_str().unwrap();
    assert!(
        shown.starts_with(&format!("Bearer {PLACEHOLDER}")),
        "{shown}"
    );
    // Even with no header at all, the route adds it.
    let (status, body) = curl(proxy.local_addr(), &dir.bottle_ca_path(), &[&url]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        upstream.last_header("authorization"),
        Some(format!("Bearer {REAL_TOKEN}"))
    );
    assert!(!body.contains(REAL_TOKEN));
    // The audit log names the injection but never the value.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("credential injected into authorization"),
        "{audit}"
    );
    assert!(!audit.contains(REAL_TOKEN));
}

#[tokio::test]
async fn health_and_status_endpoints_answer_locally() {
    let upstream_ca = TestCa::new("it upstream CA");
    let dir = ProxyDir::new(&upstream_ca, standard_policy(&[443], true));
    let proxy = dir.start().await;
    let health = plain_request(
        proxy.local_addr(),
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let status = plain_request(
        proxy.local_addr(),
        "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["policy_version"], proxy.policy_version());
    assert_eq!(proxy.policy_version().len(), 64);
    let other = plain_request(
        proxy.local_addr(),
        "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(other.status, 400);
}

#[tokio::test]
async fn upstream_http2_is_negotiated_and_connections_are_reused() {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::https_h2(&upstream_ca).await;
    let dir = ProxyDir::new(&upstream_ca, standard_policy(&[upstream.port()], true));
    let proxy = dir.start().await;
    let port = upstream.port();
    for i in 0..6 {
        let request =
            format!("GET /h2/{i} HTTP/1.1\r\nHost: other.test:{port}\r\nConnection: close\r\n\r\n");
        let response = https_via_proxy(
            proxy.local_addr(),
            "other.test",
            port,
            &dir.bottle_ca.cert_pem,
            &request,
        )
        .await;
        assert_eq!(response.status, 200, "{response:?}");
        let echo = response.json();
        assert_eq!(echo["version"], "HTTP/2.0");
        assert_eq!(echo["path"], format!("/h2/{i}"));
        assert_eq!(
            echo["headers"]["host"],
            serde_json::Value::Null,
            "h2 carries :authority, not Host"
        );
    }
    // Six client connections, spread over the proxy's two shards, each shard
    // with its own pool: one h2 connection per shard at most.
    assert!(
        (1..=2).contains(&upstream.connections()),
        "the pooled h2 connections are reused: {} for 6 requests",
        upstream.connections()
    );
}

#[tokio::test]
async fn credentials_are_never_injected_into_plain_http() {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::plain().await;
    let dir = ProxyDir::new(&upstream_ca, standard_policy(&[upstream.port()], true));
    let proxy = dir.start().await;
    let port = upstream.port();
    let response = plain_request(
        proxy.local_addr(),
        &format!(
            "GET http://upstream.test:{port}/v1 HTTP/1.1\r\nHost: upstream.test:{port}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.json()["headers"]["authorization"],
        serde_json::Value::Null
    );
    assert!(!response.body.contains(REAL_TOKEN));
    // And the placeholder is not passed on either (see placeholders.rs).
    let response = plain_request(
        proxy.local_addr(),
        &format!(
            "GET http://upstream.test:{port}/v1 HTTP/1.1\r\nHost: upstream.test:{port}\r\n\
             Authorization: Bearer {PLACEHOLDER}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(response.status, 403, "{response:?}");
    assert!(!response.body.contains(REAL_TOKEN));
    assert_eq!(upstream.seen.lock().unwrap().requests, 1);
}
