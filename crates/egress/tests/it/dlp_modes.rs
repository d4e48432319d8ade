//! Per-host DLP modes through the real proxy: `audit` lets a finding through
//! and logs its rule, `off` skips the rules, and the bottle's own secrets are
//! refused on both.

use crate::support::*;

fn audit_lines(dir: &ProxyDir) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn post(
    proxy: &egress::Proxy,
    dir: &ProxyDir,
    host: &str,
    port: u16,
    body: &str,
) -> RawResponse {
    https_via_proxy(
        proxy.local_addr(),
        host,
        port,
        &dir.bottle_ca.cert_pem,
        &format!(
            "POST /upload HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

#[tokio::test]
async fn audit_lets_findings_through_and_off_skips_rules_but_not_bottle_secrets() {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::https(&upstream_ca).await;
    let port = upstream.port();
    let mut policy = standard_policy(&[port], true);
    policy["dlp"] = serde_json::json!({
        "enabled": true,
        "mode": "block",
        "hosts": [{"host": "other.test", "mode": "audit"}, {"host": "127.0.0.1", "mode": "off"}]
    });
    let dir = ProxyDir::new(&upstream_ca, policy);
    let proxy = dir.start().await;
    let pat = format!("token ghp_{}", "Ab3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5");

    // block (the default): refused, nothing sent.
    let blocked = post(&proxy, &dir, "upstream.test", port, &pat).await;
    assert_eq!(blocked.status, 403, "{blocked:?}");
    assert!(
        blocked.body.contains("rule: github-pat"),
        "{}",
        blocked.body
    );

    // audit: through, and the audit line names the rule, not the token.
    let audited = post(&proxy, &dir, "other.test", port, &pat).await;
    assert_eq!(audited.status, 200, "{audited:?}");
    assert!(upstream.received(pat.as_bytes()));
    let lines = audit_lines(&dir);
    let line = lines
        .iter()
        .find(|l| l["host"] == "other.test" && l["method"] == "POST" && l["action"] == "allow")
        .expect("an allow line for the audited request");
    assert_eq!(line["dlp"], "github-pat", "{line}");
    assert!(!line.to_string().contains("ghp_"), "{line}");

    // off: the rules do not run.
    let off = post(&proxy, &dir, "127.0.0.1", port, &pat).await;
    assert_eq!(off.status, 200, "{off:?}");

    // The route's credential is refused on audit and off hosts alike, even wrapped.
    use base64::Engine as _;
    let wrapped = base64::engine::general_purpose::STANDARD
        .encode(base64::engine::general_purpose::STANDARD.encode(REAL_TOKEN));
    for host in ["other.test", "127.0.0.1"] {
        for body in [REAL_TOKEN.to_owned(), format!("data={wrapped}")] {
            let response = post(&proxy, &dir, host, port, &body).await;
            assert_eq!(response.status, 403, "{host} {body}: {response:?}");
            assert!(
                response
                    .body
                    .contains("rule: bottle-secret:IT_UPSTREAM_TOKEN"),
                "{}",
                response.body
            );
        }
    }
}

#[tokio::test]
async fn data_in_a_host_name_is_refused_before_the_tunnel_opens() {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::https(&upstream_ca).await;
    let port = upstream.port();
    let mut policy = standard_policy(&[port], true);
    let exfil = "6768705f736563726574746f6b656e.upstream.test";
    policy["allow"] = serde_json::json!([{"host": "*.upstream.test", "ports": [port]}]);
    policy["static_hosts"] = serde_json::json!({ exfil: "127.0.0.1" });
    let dir = ProxyDir::new(&upstream_ca, policy);
    let proxy = dir.start().await;
    let target = format!("{exfil}:{port}");
    match connect_tunnel(proxy.local_addr(), &target, exfil, &dir.bottle_ca.cert_pem).await {
        Tunnel::Refused(response) => {
            assert_eq!(response.status, 403, "{response:?}");
            assert!(
                response.body.contains("rule: encoded-data-in-hostname"),
                "{}",
                response.body
            );
        }
        Tunnel::Open(_) => panic!("the tunnel to {exfil} must be refused"),
    }
    assert_eq!(upstream.seen.lock().unwrap().requests, 0);
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(
        !audit.contains("6768705f"),
        "the audit log withholds the name: {audit}"
    );
}
