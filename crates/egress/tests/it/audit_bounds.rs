//! The audit log stays bounded under floods from the agent (issue 12, W4): denials
//! with huge paths collapse into counted summaries and are cut to a bounded line,
//! DNS queries are logged at a limited rate and counted, and the proxy keeps
//! answering throughout.

use std::time::{Duration, Instant};

use crate::support::*;

const DENIALS_PER_TASK: usize = 60;
const TASKS: usize = 8;

fn audit_lines(dir: &ProxyDir) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Records for `host` counted the way a reader must: a summary stands for `repeated`.
fn accounted(lines: &[serde_json::Value], host: &str) -> u64 {
    lines
        .iter()
        .filter(|line| line["host"] == host)
        .map(|line| line["repeated"].as_u64().unwrap_or(1))
        .sum()
}

/// Waits (the repeat window is 5 s) until every record of `event` is accounted for.
async fn wait_accounted(
    dir: &ProxyDir,
    what: &str,
    mut count: impl FnMut(&[serde_json::Value]) -> u64,
    expected: u64,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = audit_lines(dir);
        let seen = count(&lines);
        if seen == expected {
            return lines;
        }
        assert!(
            seen < expected && Instant::now() < deadline,
            "{what}: {seen} of {expected} accounted for in {} lines",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_flood_of_long_denied_requests_is_bounded_and_the_proxy_keeps_answering() {
    let Standard {
        upstream,
        dir,
        proxy,
    } = Standard::start().await;
    let addr = proxy.local_addr();
    let started = Instant::now();
    let flood: Vec<_> = (0..TASKS)
        .map(|task| {
            tokio::spawn(async move {
                let mut refused = 0;
                for i in 0..DENIALS_PER_TASK {
                    // 60 KB paths, each one different.
                    let path = format!("/{task}-{i}-{}", "a".repeat(60_000));
                    let response = plain_request(
                        addr,
                        &format!(
                            "GET http://denied.test{path} HTTP/1.1\r\nHost: denied.test\r\n\
                             Connection: close\r\n\r\n"
                        ),
                    )
                    .await;
                    assert_eq!(response.status, 403, "{:?}", response.head);
                    refused += 1;
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for task in flood {
        refused += task.await.unwrap();
    }
    assert_eq!(refused, TASKS * DENIALS_PER_TASK);
    let windows = started.elapsed().as_secs() / egress::audit::DEFAULT_REPEAT_WINDOW.as_secs() + 1;
    // The proxy still answers an allowed request.
    let port = upstream.port();
    let response = https_via_proxy(
        addr,
        "other.test",
        port,
        &dir.bottle_ca.cert_pem,
        &format!(
            "GET /after-the-flood HTTP/1.1\r\nHost: other.test:{port}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    // Every denial is accounted for, in a handful of bounded lines.
    let lines = wait_accounted(
        &dir,
        "denials",
        |lines| accounted(lines, "denied.test"),
        refused as u64,
    )
    .await;
    let denied: Vec<_> = lines
        .iter()
        .filter(|l| l["host"] == "denied.test")
        .collect();
    // Per window: the first few in full, then one summary.
    let most = windows * (u64::from(egress::audit::DEFAULT_REPEAT_BURST) + 1);
    assert!(
        denied.len() as u64 <= most,
        "{} lines for one repeated denial in {windows} windows",
        denied.len()
    );
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    // 16 KiB a window: a few lines each (a loaded machine takes more windows; one
    // line per denial would be hundreds of KiB whatever the windows).
    let budget = 16 * 1024 * windows.max(4);
    assert!(
        (text.len() as u64) < budget,
        "{} bytes of audit for {refused} denials in {windows} windows",
        text.len()
    );
    for line in text.lines() {
        assert!(
            line.len() < audit_lines::DEFAULT_MAX_RECORD_BYTES,
            "{}",
            line.len()
        );
    }
    let first = denied[0];
    assert_eq!(first["rule"], "default-deny");
    let path = first["path"].as_str().unwrap();
    assert!(
        path.ends_with("bytes truncated]"),
        "{}",
        &path[path.len() - 40..]
    );
    let summary = denied
        .iter()
        .find(|l| l.get("repeated").is_some())
        .expect("a summary line");
    assert!(
        summary["reason"]
            .as_str()
            .unwrap()
            .contains("more like this in"),
        "{summary}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["path"] == "/after-the-flood" && l["action"] == "allow")
    );
}

#[tokio::test]
async fn a_dns_flood_is_logged_at_a_bounded_rate_and_counted() {
    let upstream_ca = TestCa::new("it upstream CA");
    let mut policy = standard_policy(&[443], true);
    policy["dns_sink"] = serde_json::json!({"listen": "127.0.0.1:0"});
    let dir = ProxyDir::new(&upstream_ca, policy);
    let proxy = dir.start().await;
    let sink = proxy.dns_sink().expect("dns sink configured").udp_addr;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let queries: u16 = 3000;
    let started = Instant::now();
    let mut buf = [0u8; 512];
    for id in 0..queries {
        // Distinct names, as an exfiltration over DNS would use.
        let name = format!("chunk{id:05}.exfil.example");
        socket.send_to(&dns_query(id, &name), sink).await.unwrap();
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("every query is answered")
            .unwrap();
        assert_eq!(&buf[0..2], &id.to_be_bytes());
        assert!(len > 12);
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let dns = |lines: &[serde_json::Value]| -> u64 {
        lines
            .iter()
            .filter(|l| l["event"] == "dns")
            .map(|l| l["repeated"].as_u64().unwrap_or(1))
            .sum()
    };
    let lines = wait_accounted(&dir, "dns queries", dns, u64::from(queries)).await;
    let one_by_one = lines
        .iter()
        .filter(|l| l["event"] == "dns" && l.get("repeated").is_none())
        .count();
    let allowed = egress::dns_sink::DNS_LOG_BURST as f64
        + egress::dns_sink::DNS_LOG_PER_SEC as f64 * (flood_secs + 1.0);
    assert!(
        (one_by_one as f64) <= allowed,
        "{one_by_one} queries logged one by one in {flood_secs:.1} s"
    );
    assert!(one_by_one >= egress::dns_sink::DNS_LOG_BURST as usize);
    let summary = lines
        .iter()
        .find(|l| l["event"] == "dns" && l.get("repeated").is_some())
        .expect("a summary line");
    assert!(
        summary["reason"]
            .as_str()
            .unwrap()
            .contains("not logged one by one"),
        "{summary}"
    );
}
