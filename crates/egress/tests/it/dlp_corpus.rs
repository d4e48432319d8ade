//! The DLP corpus (`fixtures/dlp/corpus.jsonl`, written by
//! `fixtures/dlp/generate.py`) replayed as real requests through the proxy
//! on loopback, every host allowed so that only DLP decides: prints
//! containment per attack kind and the false-positive rate per benign kind,
//! and holds them to the thresholds (containment at least 0.95 per
//! kind, false positives at most 2 %).

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::{EchoUpstream, ProxyDir, SLUG, TestCa, plain_request};

#[derive(serde::Deserialize)]
struct Case {
    id: String,
    kind: String,
    expect: String,
    method: String,
    host: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

const MIN_CONTAINMENT: f64 = 0.95;
const MAX_FALSE_POSITIVES: f64 = 0.02;

fn corpus() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/dlp/corpus.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_containment_and_false_positives() {
    let cases = corpus();
    let upstream = EchoUpstream::plain().await;
    let port = upstream.port();
    let mut hosts: Vec<&str> = cases.iter().map(|c| c.host.as_str()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    let policy = serde_json::json!({
        "bottle_slug": SLUG,
        "listen": "127.0.0.1:0",
        "static_hosts": hosts.iter().map(|h| (h.to_string(), "127.0.0.1")).collect::<BTreeMap<_, _>>(),
        "allow": hosts.iter().map(|h| serde_json::json!({"host": h, "ports": [port]})).collect::<Vec<_>>(),
        "dlp": {"enabled": true},
        "ssrf": {"enabled": true, "exempt_cidrs": ["127.0.0.1/32"]}
    });
    let dir = ProxyDir::new(&TestCa::new("corpus upstream CA"), policy);
    let proxy = dir.start().await;

    // kind -> (expected to be blocked?, cases, blocked, ids that went the wrong way)
    let mut table: BTreeMap<(bool, String), (usize, usize, Vec<String>)> = BTreeMap::new();
    for case in &cases {
        let mut request = format!(
            "{} http://{}:{port}{} HTTP/1.1\r\nHost: {}:{port}\r\n",
            case.method, case.host, case.path, case.host
        );
        for (name, value) in &case.headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
            case.body.len(),
            case.body
        ));
        let response = plain_request(proxy.local_addr(), &request).await;
        let attack = case.expect == "block";
        let blocked = response.status != 200;
        if blocked {
            // A refusal names a rule and never echoes the request's bytes.
            assert!(
                response.body.contains("rule: "),
                "{}: {response:?}",
                case.id
            );
        }
        let row = table.entry((attack, case.kind.clone())).or_default();
        row.0 += 1;
        if blocked {
            row.1 += 1;
        }
        if blocked != attack {
            row.2.push(case.id.clone());
        }
    }

    let mut out = String::from(
        "\n| kind | traffic | cases | blocked | containment | false positives |\n|---|---|---:|---:|---:|---:|\n",
    );
    let (mut benign, mut benign_blocked) = (0, 0);
    let mut failures = Vec::new();
    for ((attack, kind), (count, blocked, wrong)) in &table {
        let rate = *blocked as f64 / *count as f64;
        if *attack {
            out.push_str(&format!(
                "| {kind} | attack | {count} | {blocked} | {rate:.2} | – |\n"
            ));
            if !wrong.is_empty() {
                eprintln!("attack {kind}: passed {wrong:?}");
            }
            if rate < MIN_CONTAINMENT {
                failures.push(format!(
                    "{kind}: containment {rate:.2} < {MIN_CONTAINMENT} (passed: {wrong:?})"
                ));
            }
        } else {
            out.push_str(&format!(
                "| {kind} | benign | {count} | {blocked} | – | {:.1} % |\n",
                rate * 100.0
            ));
            benign += count;
            benign_blocked += blocked;
            if !wrong.is_empty() {
                eprintln!("benign {kind}: blocked {wrong:?}");
            }
        }
    }
    let fp = benign_blocked as f64 / benign.max(1) as f64;
    out.push_str(&format!(
        "| all benign | benign | {benign} | {benign_blocked} | – | {:.1} % |\n",
        fp * 100.0
    ));
    println!("{out}");
    if fp > MAX_FALSE_POSITIVES {
        failures.push(format!(
            "false positives {:.1} % > {} %",
            fp * 100.0,
            MAX_FALSE_POSITIVES * 100.0
        ));
    }
    assert!(failures.is_empty(), "{out}\n{}", failures.join("\n"));
}
