//! Denials: allowlist, CONNECT before TLS, DLP, SSRF, hostile input.

use crate::support::*;

#[tokio::test]
async fn denied_host_gets_403_with_the_allow_hint() {
    let upstream_ca = TestCa::new("it upstream CA");
    let dir = ProxyDir::new(&upstream_ca, standard_policy(&[443], true));
    let proxy = dir.start().await;
    let (status, body) = curl(
        proxy.local_addr(),
        &dir.bottle_ca_path(),
        &["http://denied.test/x"],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("blocked GET http://denied.test:80/x"),
        "{body}"
    );
    let raw = plain_request(
        proxy.local_addr(),
        "GET http://denied.test/x HTTP/1.1\r\nHost: denied.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw.status, 403);
    assert!(
        raw.head
            .to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{raw:?}"
    );
    assert!(
        body.contains("not in the bottle's egress allowlist"),
        "{body}"
    );
    assert!(
        body.contains(&format!("bottle egress allow {SLUG} denied.test")),
        "{body}"
    );
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(line["action"], "deny");
    assert_eq!(line["host"], "denied.test");
    assert_eq!(line["rule"], "default-deny");
}

#[tokio::test]
async fn connect_to_a_denied_host_is_refused_before_tls() {
    let upstream_ca = TestCa::new("it upstream CA");
    let dir = ProxyDir::new(&upstream_ca, standard_policy(&[443], true));
    let proxy = dir.start().await;
    match connect_tunnel(
        proxy.local_addr(),
        "denied.test:443",
        "denied.test",
        &dir.bottle_ca.cert_pem,
    )
    .await
    {
        Tunnel::Open(_) => panic!("tunnel to a denied host was opened"),
        Tunnel::Refused(response) => {
            assert_eq!(response.status, 403);
            assert!(
                response
                    .body
                    .contains(&format!("bottle egress allow {SLUG} denied.test")),
                "{response:?}"
            );
        }
    }
    // An allowed host on a port not in its rule: refused with the port hint.
    match connect_tunnel(
        proxy.local_addr(),
        "other.test:8443",
        "other.test",
        &dir.bottle_ca.cert_pem,
    )
    .await
    {
        Tunnel::Open(_) => panic!("tunnel to a denied port was opened"),
        Tunnel::Refused(response) => {
            assert_eq!(response.status, 403);
            assert!(
                response
                    .body
                    .contains(&format!("bottle egress allow {SLUG} other.test:8443")),
                "{response:?}"
            );
        }
    }
}

#[tokio::test]
async fn method_and_path_rules_apply_inside_the_tunnel() {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::https(&upstream_ca).await;
    let mut policy = standard_policy(&[upstream.port()], true);
    policy["static_hosts"]["readonly.test"] = "127.0.0.1".into();
    let dir = ProxyDir::new(&upstream_ca, policy);
    let proxy = dir.start().await;
    let port = upstream.port();
    // The upstream's leaf has no SAN for readonly.test, so an allowed request
    // fails upstream (502); denied ones never get that far (403).
    for (request, expected) in [
        ("POST /public/x HTTP/1.1", 403),
        ("GET /private HTTP/1.1", 403),
        ("GET /public/../private HTTP/1.1", 403),
        ("GET /public/x HTTP/1.1", 502),
    ] {
        let raw = format!(
            "{request}\r\nHost: readonly.test:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let response = https_via_proxy(
            proxy.local_addr(),
            "readonly.test",
            port,
            &dir.bottle_ca.cert_pem,
            &raw,
        )
        .await;
        assert_eq!(response.status, expected, "{request}: {response:?}");
    }
}

#[tokio::test]
async fn host_header_must_match_the_connect_target() {
    let Standard {
        upstream,
        dir,
        proxy,
        ..
    } = Standard::start().await;
    let port = upstream.port();
    let raw = format!("GET / HTTP/1.1\r\nHost: denied.test:{port}\r\nConnection: close\r\n\r\n");
    let response = https_via_proxy(
        proxy.local_addr(),
        "other.test",
        port,
        &dir.bottle_ca.cert_pem,
        &raw,
    )
    .await;
    assert_eq!(response.status, 400, "{response:?}");
    assert_eq!(upstream.seen.lock().unwrap().requests, 0);
}

#[tokio::test]
async fn secrets_in_url_header_and_body_are_blocked() {
    let Standard {
        upstream,
        dir,
        proxy,
        ..
    } = Standard::start().await;
    let port = upstream.port();
    let ca = dir.bottle_ca_path();
    let base = format!("https://other.test:{port}");
    let github_token = format!("ghp_{}", "aB3dE6gH9".repeat(4));

    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![format!("{base}/leak?d={REAL_TOKEN}")],
            "bottle-secret:IT_UPSTREAM_TOKEN",
        ),
        (
            vec![
                "-H".into(),
                format!("X-Data: {REAL_TOKEN}"),
                format!("{base}/h"),
            ],
            "bottle-secret:IT_UPSTREAM_TOKEN",
        ),
        (
            vec![
                "--data".into(),
                hex::encode(REAL_TOKEN),
                format!("{base}/b"),
            ],
            "bottle-secret:IT_UPSTREAM_TOKEN",
        ),
        (
            vec![
                "-H".into(),
                format!("Authorization: Bearer {PLACEHOLDER}"),
                format!("{base}/p"),
            ],
            "placeholder-not-replaced:IT_UPSTREAM_TOKEN",
        ),
        (
            vec![
                "--data".into(),
                format!("token: {github_token}"),
                format!("{base}/g"),
            ],
            "github-pat",
        ),
        (
            vec![format!("{base}/login?password=hunter2222")],
            "credential-assignment",
        ),
    ];
    for (args, rule) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, body) = curl(proxy.local_addr(), &ca, &args).await;
        assert_eq!(status, 403, "{args:?}: {body}");
        assert!(body.contains(&format!("rule: {rule}")), "{args:?}: {body}");
        assert!(
            !body.contains(REAL_TOKEN),
            "the 403 must not echo the secret: {body}"
        );
    }
    let requests_seen = upstream.seen.lock().unwrap().requests;
    assert_eq!(
        requests_seen, 0,
        "no blocked request may reach the upstream"
    );
    // The same secret to its own route host is fine (it is the injected credential's home).
    let (status, body) = curl(
        proxy.local_addr(),
        &ca,
        &[
            "--data",
            REAL_TOKEN,
            &format!("https://upstream.test:{port}/own"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(
        !audit.contains(REAL_TOKEN),
        "audit log must never carry the secret"
    );
    assert!(audit.contains("\"dlp\":\"github-pat\""), "{audit}");
}

#[tokio::test]
async fn secret_mid_body_aborts_the_streamed_upstream_request() {
    let Standard {
        upstream,
        dir,
        proxy,
        ..
    } = Standard::start().await;
    let port = upstream.port();
    let mut body = vec![b'a'; 256 * 1024];
    body.extend_from_slice(REAL_TOKEN.as_bytes());
    body.extend_from_slice(&vec![b'b'; 256 * 1024]);
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: other.test:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let writes = body.chunks(16 * 1024).map(<[u8]>::to_vec).collect();
    let text = send_in_writes(
        proxy.local_addr(),
        &dir.bottle_ca.cert_pem,
        "other.test",
        port,
        head,
        writes,
        std::time::Duration::ZERO,
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(
        text.contains("rule: bottle-secret:IT_UPSTREAM_TOKEN"),
        "{text}"
    );
    assert!(
        !upstream.received(REAL_TOKEN.as_bytes()),
        "the secret reached the upstream"
    );
}

/// A body of `len` bytes of code-like text sent in 64 KiB writes (so the
/// proxy reads it in chunks large enough to be scanned in halves side by
/// side), with `secret` at `at` if given; the proxy's response.
async fn send_large_body(setup: &Standard, len: usize, secret: Option<(&str, usize)>) -> String {
    let mut body = "let total = items.iter().map(|i| i.price).sum::<u64>();\n"
        .repeat(len / 50 + 1)
        .into_bytes();
    body.truncate(len);
    if let Some((secret, at)) = secret {
        body[at..at + secret.len()].copy_from_slice(secret.as_bytes());
    }
    let writes = body.chunks(64 << 10).map(<[u8]>::to_vec).collect();
    post_in_writes(setup, "/large", len, writes, std::time::Duration::ZERO).await
}

#[tokio::test]
async fn a_secret_anywhere_in_a_large_body_is_blocked_and_a_clean_one_arrives_whole() {
    // Around where chunks and their halves meet, whatever sizes the reads
    // come in: every spot must be caught before any of the secret leaves.
    let half = 32 << 10;
    for at in [
        half - 17,
        2 * half - 9,
        3 * half - 1,
        5 * half + 12_345,
        11 * half - 30,
    ] {
        let setup = Standard::start().await;
        let text = send_large_body(&setup, 512 << 10, Some((REAL_TOKEN, at))).await;
        assert!(text.starts_with("HTTP/1.1 403"), "at {at}: {text}");
        assert!(
            text.contains("rule: bottle-secret:IT_UPSTREAM_TOKEN"),
            "at {at}: {text}"
        );
        assert!(
            !setup
                .upstream
                .received(&REAL_TOKEN.as_bytes()[..REAL_TOKEN.len() / 2 + 1]),
            "at {at}: (most of) the secret reached the upstream"
        );
    }
    let setup = Standard::start().await;
    let text = send_large_body(&setup, 1 << 20, None).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let seen = setup.upstream.seen.lock().unwrap().body_bytes.clone();
    assert_eq!(seen.len(), 1 << 20, "the clean body arrived cut");
    assert!(seen.starts_with(b"let total = items"));
}

#[tokio::test]
async fn ssrf_blocks_every_spelling_of_loopback_without_an_exemption() {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::plain().await;
    let port = upstream.port();
    let blocked_dir = ProxyDir::new(&upstream_ca, standard_policy(&[port], false));
    let blocked = blocked_dir.start().await;
    for host in [
        "127.0.0.1",
        "2130706433",
        "0x7f.1",
        "[::ffff:127.0.0.1]",
        "upstream.test",
    ] {
        let response = plain_request(
            blocked.local_addr(),
            &format!("GET http://{host}:{port}/ssrf HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(response.status, 403, "{host}: {response:?}");
        assert!(
            response.body.contains("rule: ssrf:loopback"),
            "{host}: {response:?}"
        );
    }
    // Through CONNECT too: the tunnel opens (policy allows the canonical
    // 127.0.0.1), the inner request is refused at connect time.
    let https_upstream = EchoUpstream::https(&upstream_ca).await;
    let https_port = https_upstream.port();
    let dir = ProxyDir::new(&upstream_ca, standard_policy(&[https_port], false));
    let proxy = dir.start().await;
    let raw =
        format!("GET / HTTP/1.1\r\nHost: 2130706433:{https_port}\r\nConnection: close\r\n\r\n");
    // The leaf is minted for the canonical address, so TLS verifies 127.0.0.1.
    let Tunnel::Open(mut tls) = connect_tunnel(
        proxy.local_addr(),
        &format!("2130706433:{https_port}"),
        "127.0.0.1",
        &dir.bottle_ca.cert_pem,
    )
    .await
    else {
        panic!("tunnel to an allowed (canonical) host was refused")
    };
    let response = tunnel_request(&mut tls, raw.as_bytes()).await;
    assert_eq!(response.status, 403, "{response:?}");
    assert!(response.body.contains("ssrf:loopback"));
    assert_eq!(upstream.seen.lock().unwrap().requests, 0);
    assert_eq!(https_upstream.seen.lock().unwrap().requests, 0);

    // The same request with the loopback exemption goes through.
    let exempt_dir = ProxyDir::new(&upstream_ca, standard_policy(&[port], true));
    let exempt = exempt_dir.start().await;
    let response = plain_request(
        exempt.local_addr(),
        &format!("GET http://2130706433:{port}/ok HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
}

#[tokio::test]
async fn hostile_input_gets_a_clean_error() {
    let upstream_ca = TestCa::new("it upstream CA");
    let dir = ProxyDir::new(&upstream_ca, standard_policy(&[443], true));
    let proxy = dir.start().await;
    let huge_header = format!(
        "GET http://other.test/ HTTP/1.1\r\nHost: other.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let response = plain_request(proxy.local_addr(), &huge_header).await;
    assert_eq!(response.status, 431, "{response:?}");
    let garbage = plain_request(proxy.local_addr(), "\x16\x03\x01garbage\r\n\r\n").await;
    assert_eq!(garbage.status, 400, "{garbage:?}");
    // The proxy is still serving.
    let health = plain_request(
        proxy.local_addr(),
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn websocket_upgrades_are_refused_not_passed_unscanned() {
    let Standard {
        upstream,
        dir,
        proxy,
        ..
    } = Standard::start().await;
    let port = upstream.port();
    let raw = format!(
        "GET /chat HTTP/1.1\r\nHost: upstream.test:{port}\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let response = https_via_proxy(
        proxy.local_addr(),
        "upstream.test",
        port,
        &dir.bottle_ca.cert_pem,
        &raw,
    )
    .await;
    assert_eq!(response.status, 400, "{response:?}");
    assert!(response.body.contains("WebSocket"), "{response:?}");
    assert_eq!(
        upstream.seen.lock().unwrap().requests,
        0,
        "the upgrade reached the upstream"
    );
}

#[tokio::test]
async fn trace_is_refused_so_credentials_cannot_echo_back() {
    let Standard {
        upstream,
        dir,
        proxy,
        ..
    } = Standard::start().await;
    let port = upstream.port();
    let raw =
        format!("TRACE / HTTP/1.1\r\nHost: upstream.test:{port}\r\nConnection: close\r\n\r\n");
    let response = https_via_proxy(
        proxy.local_addr(),
        "upstream.test",
        port,
        &dir.bottle_ca.cert_pem,
        &raw,
    )
    .await;
    assert_eq!(response.status, 400, "{response:?}");
    assert_eq!(
        upstream.seen.lock().unwrap().requests,
        0,
        "TRACE reached the upstream"
    );
}

#[tokio::test]
async fn a_secret_split_across_two_writes_never_partly_leaves() {
    let Standard {
        upstream,
        dir,
        proxy,
        ..
    } = Standard::start().await;
    let port = upstream.port();
    let (first_half, second_half) = REAL_TOKEN.split_at(REAL_TOKEN.len() / 2);
    let mut first = vec![b'a'; 64 * 1024];
    first.extend_from_slice(first_half.as_bytes());
    let second = format!("{second_half}{}", "b".repeat(1024));
    let length = first.len() + second.len();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: other.test:{port}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    // Let the proxy forward what it has before the rest of the secret arrives.
    let text = send_in_writes(
        proxy.local_addr(),
        &dir.bottle_ca.cert_pem,
        "other.test",
        port,
        head,
        vec![first, second.into_bytes()],
        std::time::Duration::from_millis(300),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(
        !upstream.received(first_half.as_bytes()),
        "the first half of the secret reached the upstream before the second half was scanned"
    );
}

/// The head of a request and then, a while later, its body (one write each).
async fn send_body_late(setup: &Standard, path: &str, body: &[u8]) -> String {
    let writes = vec![Vec::new(), body.to_vec()];
    let delay = std::time::Duration::from_millis(300);
    post_in_writes(setup, path, body.len(), writes, delay).await
}

/// A POST of `len` body bytes to `other.test` through the proxy, its head
/// and then `writes` with `delay` between them; the proxy's response.
async fn post_in_writes(
    setup: &Standard,
    path: &str,
    len: usize,
    writes: Vec<Vec<u8>>,
    delay: std::time::Duration,
) -> String {
    let port = setup.upstream.port();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: other.test:{port}\r\nContent-Length: {len}\r\n\
         Connection: close\r\n\r\n"
    );
    send_in_writes(
        setup.proxy.local_addr(),
        &setup.dir.bottle_ca.cert_pem,
        "other.test",
        port,
        head,
        writes,
        delay,
    )
    .await
}

#[tokio::test]
async fn a_body_refused_before_any_of_it_is_released_never_reaches_the_upstream() {
    let setup = Standard::start().await;
    // The body comes 300 ms after the head: the proxy reads it ahead and scans
    // it before it contacts the upstream, so the upstream learns nothing, not
    // even that a request was tried.
    let body = format!("{{\"note\": \"{REAL_TOKEN}\"}}");
    let text = send_body_late(&setup, "/late", body.as_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(
        text.contains("rule: bottle-secret:IT_UPSTREAM_TOKEN"),
        "{text}"
    );
    assert!(text.contains("nothing was sent upstream"), "{text}");
    assert_eq!(
        setup.requests_seen(),
        0,
        "the upstream saw the request's head"
    );
    assert_eq!(
        setup.upstream.connections(),
        0,
        "the upstream was contacted"
    );
}

#[tokio::test]
async fn a_clean_body_read_ahead_reaches_the_upstream_whole_with_its_length() {
    let setup = Standard::start().await;
    let body = b"{\"note\": \"nothing to see\"}";
    let text = send_body_late(&setup, "/late-clean", body).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(setup.upstream.seen.lock().unwrap().body_bytes, body);
    assert_eq!(
        setup.upstream.last_header("content-length").as_deref(),
        Some(body.len().to_string().as_str())
    );
}

#[tokio::test]
async fn no_more_client_connections_are_served_than_the_limit() {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::plain().await;
    let port = upstream.port();
    let mut policy = standard_policy(&[port], true);
    policy["limits"] = serde_json::json!({"max_connections": 2});
    let dir = ProxyDir::new(&upstream_ca, policy);
    let proxy = dir.start().await;
    // Two idle connections take both slots, whichever shards serve them.
    let idle = [
        tokio::net::TcpStream::connect(proxy.local_addr())
            .await
            .unwrap(),
        tokio::net::TcpStream::connect(proxy.local_addr())
            .await
            .unwrap(),
    ];
    let addr = proxy.local_addr();
    let third = tokio::spawn(async move {
        plain_request(
            addr,
            &format!(
                "GET http://upstream.test:{port}/third HTTP/1.1\r\nHost: upstream.test:{port}\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served past the limit of 2"
    );
    // A slot frees when a connection ends: the third is served.
    let [first, second] = idle;
    drop(first);
    let response = tokio::time::timeout(std::time::Duration::from_secs(5), third)
        .await
        .expect("the third connection got no answer after a slot freed")
        .unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    drop(second);
}
