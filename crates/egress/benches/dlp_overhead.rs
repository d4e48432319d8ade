//! What DLP costs, side by side in one run: the real proxy (in this
//! process, on 127.0.0.1) with DLP on and with DLP off, driven by keep-alive
//! HTTP/1.1 clients through CONNECT and TLS interception (as agents use it:
//! the proxy's CA verifies the interception certificate) POSTing small
//! (~100 byte) and 1 MiB request bodies to a local HTTPS upstream that reads
//! them whole; plus the per-request DLP time of a 1 MiB clean body scanned
//! alone (the body scanner in 16 KiB chunks).
//!
//! Run with `cargo bench -p egress --bench dlp_overhead`. DLP off and on are
//! measured in `BENCH_ROUNDS` (default 5) interleaved rounds of `BENCH_SECS`
//! (default 2) seconds each, the order flipped every round, so a burst of
//! other load on the machine hits both alike; the table gives the pooled rates
//! and the range of the rounds' ratios. The proxies run as the sidecar runs
//! them, on their own shard threads, with DLP on sharing a large chunk's scan
//! with the helper thread when it is free (`egress::assist`); the client and
//! the upstream run on the same machine, so they compete with both. The targets of issue 13 are
//! printed with the table: small-request throughput within 15 % of DLP off,
//! 1 MiB bodies at least 50 % of it. Nothing leaves loopback; no name is
//! resolved (the bench host is a static host of the policy).
//!
//! `BENCH_SCAN_ONLY=1` prints the per-request scan time alone (no proxies;
//! `BENCH_SCAN_ITERS`, default 30, sets how many scans): a quick loop for
//! profilers (`valgrind --tool=callgrind`, `perf`).
//!
//! Under `cargo test --benches` (no `--bench` argument) it does nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use egress::config::DlpConfig;
use egress::dlp::{BodyScanner, DlpEngine, KnownSecret};
use egress::secret::SecretValue;
use egress::{Proxy, SecretSource};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const SMALL: usize = 100;
const LARGE: usize = 1 << 20;
const TOKEN: &str = "bench-route-token-0123456789abcdef";

/// A clean 1 MiB request body shaped like an agent's LLM request: JSON with
/// source code and prose, tool results, and a base64 image.
fn clean_body(len: usize) -> Vec<u8> {
    let code = [
        "fn parse(input: &str) -> Result<Ast, Error> {\\n    let tokens = lex(input)?;\\n    Parser::new(&tokens).parse()\\n}\\n",
        "def handler(event, context):\\n    body = json.loads(event['body'])\\n    return {'statusCode': 200, 'body': json.dumps(body)}\\n",
        "The retry loop backs off exponentially; max_tokens bounds the reply and the cache key is the SHA of the prompt.\\n",
        "commit 5b8a3a7765dfe001261dde915589e782f8c94d1e\\nAuthor: Dev <dev@example.com>\\n\\n    Fix the flaky test\\n",
        "SELECT id, email FROM users WHERE created_at > $1 ORDER BY id LIMIT 100; -- page 42 of 1000\\n",
    ];
    let mut out = String::from(r#"{"model":"claude-sonnet-4-5","max_tokens":32000,"messages":["#);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut image = Vec::new();
    for _ in 0..96 * 1024 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        image.push((state >> 24) as u8);
    }
    {
        use base64::Engine as _;
        out.push_str(
            r#"{"role":"user","content":[{"type":"image","source":{"type":"base64","data":""#,
        );
        out.push_str(&base64::engine::general_purpose::STANDARD.encode(&image));
        out.push_str(r#""}}]},"#);
    }
    let mut i = 0;
    while out.len() < len - 200 {
        out.push_str(&format!(
            r#"{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_01{i:020}","content":"{}"}}]}},"#,
            code[i % code.len()]
        ));
        i += 1;
    }
    out.push_str(r#"{"role":"user","content":"done"}]}"#);
    let mut bytes = out.into_bytes();
    bytes.resize(len, b' ');
    bytes
}

/// A CA: its certificate PEM, its key PEM, and an issuer for leaves.
fn new_ca(name: &str) -> (String, String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    (cert_pem, key_pem, Issuer::new(params, key))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn write_config(dir: &Path, upstream_port: u16, upstream_ca_pem: &str, dlp: bool) -> String {
    let (cert_pem, key_pem, _) = new_ca("bench bottle CA");
    std::fs::write(dir.join("ca-cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("ca-key.pem"), key_pem).unwrap();
    std::fs::write(dir.join("upstream-ca.pem"), upstream_ca_pem).unwrap();
    let policy = serde_json::json!({
        "bottle_slug": "bench",
        "listen": "127.0.0.1:0",
        "extra_ca_bundle": "upstream-ca.pem",
        "static_hosts": {"bench.test": "127.0.0.1"},
        "allow": [{"host": "bench.test", "ports": [upstream_port]}],
        "routes": [{"host": "api.bench.test", "header": "x-api-key", "secret_env": "BENCH_TOKEN",
                    "placeholder": "bench-placeholder-000000000000000"}],
        "dlp": {"enabled": dlp},
        "ssrf": {"enabled": true, "exempt_cidrs": ["127.0.0.1/32"]}
    });
    std::fs::write(
        dir.join("policy.json"),
        serde_json::to_vec_pretty(&policy).unwrap(),
    )
    .unwrap();
    cert_pem
}

/// An HTTPS upstream for bench.test that reads each body whole and answers
/// with its length; returns its address and its CA.
async fn start_upstream() -> (SocketAddr, String) {
    let (ca_pem, _, issuer) = new_ca("bench upstream CA");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["bench.test".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(|req: Request<Incoming>| async move {
                    let body = req.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(format!(
                        "{}\n",
                        body.len()
                    )))))
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca_pem)
}

/// A TLS stream to `authority` through the proxy's CONNECT, verified with
/// the proxy's CA.
async fn tunnel(
    proxy: SocketAddr,
    authority: &str,
    connector: &TlsConnector,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "CONNECT refused");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    connector
        .connect(ServerName::try_from("bench.test").unwrap(), stream)
        .await
        .unwrap()
}

/// Requests per second over `secs` with `clients` keep-alive connections.
async fn measure(
    proxy: SocketAddr,
    authority: &str,
    connector: &TlsConnector,
    body: Bytes,
    clients: usize,
    secs: u64,
) -> (u64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (stop, done, body) = (stop.clone(), done.clone(), body.clone());
        let tls = tunnel(proxy, authority, connector).await;
        let authority = authority.to_owned();
        tasks.push(tokio::spawn(async move {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let request = Request::post("/upload")
                    .header("host", &authority)
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200, "the bench body must pass DLP");
                response.into_body().collect().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let count_at_stop = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for task in tasks {
        task.await.unwrap();
    }
    (count_at_stop, elapsed)
}

/// Median time to scan `body` whole through the body scanner in 16 KiB
/// chunks (`BENCH_SCAN_CHUNK` bytes if set), over `iterations` scans.
fn dlp_time_per_request(body: &[u8], iterations: usize) -> Duration {
    let chunk_size = std::env::var("BENCH_SCAN_CHUNK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16 * 1024);
    let engine = DlpEngine::new(
        &DlpConfig::default(),
        &[KnownSecret {
            name: "BENCH_TOKEN".to_owned(),
            value: SecretValue::new(TOKEN),
            placeholder: Some("bench-placeholder-000000000000000".to_owned()),
            host: "api.bench.test".to_owned(),
        }],
    )
    .unwrap();
    let mut times: Vec<Duration> = (0..iterations.max(1))
        .map(|_| {
            let started = Instant::now();
            let mut scanner = BodyScanner::new(&engine, "bench.test");
            for chunk in body.chunks(chunk_size) {
                assert!(
                    scanner.push(&engine, chunk).is_none(),
                    "the clean body fired"
                );
            }
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("dlp_overhead: run with `cargo bench -p egress --bench dlp_overhead`; skipped");
        return;
    }
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    // `BENCH_SHARDS=0` serves the proxies on the bench's own runtime instead.
    let shards: usize = std::env::var("BENCH_SHARDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(egress::shard::count);
    let large_body = Bytes::from(clean_body(LARGE));
    let small_body = Bytes::from(
        r#"{"event":"build","status":"ok","duration_ms":1234,"target":"x86_64-unknown-linux"}"#
            .to_owned()
            + &" ".repeat(SMALL - 84),
    );
    let iterations = std::env::var("BENCH_SCAN_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dlp_time = dlp_time_per_request(&large_body, iterations);
    if std::env::var_os("BENCH_SCAN_ONLY").is_some() {
        println!(
            "per-request DLP time, 1 MiB clean body (body scanner alone, median of {iterations}): {:.2} ms",
            dlp_time.as_secs_f64() * 1000.0
        );
        return;
    }

    // `BENCH_ONLY=small` or `BENCH_ONLY="1 MiB"`: that body size alone.
    let only = std::env::var("BENCH_ONLY").ok();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // (requests, seconds) pooled over the rounds, and each round's on/off ratio.
    let mut rows: BTreeMap<(&str, usize, bool), (u64, f64)> = BTreeMap::new();
    let mut ratios: BTreeMap<(&str, usize), Vec<f64>> = BTreeMap::new();
    runtime.block_on(async {
        let (upstream, upstream_ca) = start_upstream().await;
        let authority = format!("bench.test:{}", upstream.port());
        let mut proxies = Vec::new();
        let mut dirs = Vec::new();
        for dlp in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let bottle_ca = write_config(dir.path(), upstream.port(), &upstream_ca, dlp);
            let secrets = SecretSource::Map(BTreeMap::from([(
                "BENCH_TOKEN".to_owned(),
                TOKEN.to_owned(),
            )]));
            let proxy = match shards {
                0 => Proxy::start_with_stdout_audit(dir.path(), secrets, false).await,
                n => Proxy::start_sharded(dir.path(), secrets, false, n).await,
            }
            .unwrap();
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(bottle_ca.as_bytes()).unwrap())
                .unwrap();
            let mut config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let connector = TlsConnector::from(Arc::new(config));
            proxies.push((dlp, proxy, connector));
            dirs.push(dir);
        }
        for (name, body) in [("small", &small_body), ("1 MiB", &large_body)] {
            if only.as_deref().is_some_and(|only| only != name) {
                continue;
            }
            for clients in [1usize, 8] {
                for (_, proxy, connector) in &proxies {
                    // Warm-up: leaf certificate, upstream pools.
                    let addr = proxy.local_addr();
                    let _ = measure(addr, &authority, connector, body.clone(), clients, 1).await;
                }
                for round in 0..rounds {
                    let mut rates = [0.0; 2];
                    let order: Vec<usize> = if round % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
                    for i in order {
                        let (dlp, proxy, connector) = &proxies[i];
                        let (n, elapsed) = measure(
                            proxy.local_addr(),
                            &authority,
                            connector,
                            body.clone(),
                            clients,
                            secs,
                        )
                        .await;
                        let pooled = rows.entry((name, clients, *dlp)).or_insert((0, 0.0));
                        pooled.0 += n;
                        pooled.1 += elapsed;
                        rates[i] = n as f64 / elapsed;
                    }
                    eprintln!(
                        "bench: {name:<5} c={clients:<2} round {round}: dlp off {:>9.1} req/s, on {:>9.1} req/s",
                        rates[0], rates[1]
                    );
                    ratios
                        .entry((name, clients))
                        .or_default()
                        .push(rates[1] / rates[0]);
                }
            }
        }
    });

    let mut out = format!(
        "\n## DLP overhead ({rounds} interleaved rounds of {secs}s each for off and on, HTTP/1.1 keep-alive, CONNECT + TLS interception, TLS upstream, 127.0.0.1)\n\n\
         | body | clients | DLP off req/s | DLP on req/s | on / off | rounds' on / off | target |\n|---|---:|---:|---:|---:|---|---|\n"
    );
    let rate = |(n, secs): (u64, f64)| n as f64 / secs;
    for (name, target) in [("small", 0.85), ("1 MiB", 0.50)] {
        for clients in [1usize, 8] {
            let (Some(&off), Some(&on)) = (
                rows.get(&(name, clients, false)),
                rows.get(&(name, clients, true)),
            ) else {
                continue;
            };
            let (off, on) = (rate(off), rate(on));
            let ratio = on / off;
            let each = &ratios[&(name, clients)];
            let low = each.iter().copied().fold(f64::INFINITY, f64::min);
            let high = each.iter().copied().fold(0.0, f64::max);
            out.push_str(&format!(
                "| {name} | {clients} | {off:.0} | {on:.0} | {ratio:.2} | {low:.2}-{high:.2} | >= {target:.2}: {} |\n",
                if ratio >= target { "MET" } else { "MISSED" }
            ));
        }
    }
    out.push_str(&format!(
        "\nper-request DLP time, 1 MiB clean body (body scanner alone, median of {iterations}): {:.2} ms ({:.0} MiB/s)\n",
        dlp_time.as_secs_f64() * 1000.0,
        1.0 / dlp_time.as_secs_f64()
    ));
    println!("{out}");
}
