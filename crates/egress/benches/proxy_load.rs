//! Load benchmark of the egress proxy against a direct connection and
//! mitmproxy, all on 127.0.0.1.
//!
//! Run with `cargo bench -p egress --bench proxy_load` after
//! `cargo build --release -p cli --bin bottle`. It needs on this machine:
//!
//! - the release `bottle` binary (`BOTTLE_BIN`, default `target/release/bottle`),
//!   run as a separate process (`bottle sidecar egress --config DIR`) so its
//!   RSS can be read from `/proc/PID/status`;
//! - `oha` (`OHA`, default from `PATH`, then `~/.cargo/bin/oha`), the load
//!   generator: `cargo install oha --locked`;
//! - `mitmdump` (`MITMDUMP`, default from `PATH`): `pip install mitmproxy`.
//!   Without it the mitmproxy rows are left out.
//!
//! The bench starts a local HTTPS upstream (hyper, HTTP/1.1 keep-alive, its
//! own CA; `/small` ~100 bytes, `/large` 1 MiB), the egress proxy (DLP on, as
//! in production; the upstream CA as `extra_ca_bundle`, 127.0.0.1 exempt from
//! SSRF) and plain `mitmdump` with no addon, then runs oha against
//! {direct, egress, mitmdump} x {small, 1 MiB} x {1, 64 clients}, each run
//! `BENCH_SECS` seconds (default 10). Proxied runs verify the interception
//! certificate with the proxy's CA (`--cacert`, never `--insecure`). The
//! egress proxy's RSS is read at idle and sampled every 100 ms during the
//! 64-client runs. It prints a Markdown table and the targets of issue 5.
//!
//! Besides rps and latency, each row shows the proxy's CPU, the machine's
//! busy share, the CPU used by anything else on the machine (other builds
//! skew a 2-core box) and how many TLS connections the upstream accepted (a
//! proxy that reuses its upstream connections opens about one per client).
//! `BENCH_ROUTES=direct,egress` and `BENCH_BODIES=small|large` narrow the
//! matrix for diagnostics. `BOTTLE_BIN_BASELINE=PATH` adds a `baseline` row: the
//! same proxy from another `bottle` build (e.g. the last release), measured in
//! the same run, and a target line for the change's small-request cost.
//!
//! Every target URL is `https://127.0.0.1:PORT/...` (an IP SAN in the upstream
//! certificate), so no name is ever resolved; nothing leaves loopback. Every
//! child process is killed when the bench ends or panics.
//!
//! Under `cargo test --benches` (no `--bench` argument) it does nothing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const SMALL_BYTES: usize = 100;
const LARGE_BYTES: usize = 1024 * 1024;
const CLIENTS: [u32; 2] = [1, 64];

/// Kills and reaps every child it holds when dropped (normal end or panic).
#[derive(Default)]
struct Children(Vec<(String, Child)>);

impl Children {
    fn add(&mut self, name: &str, child: Child) -> u32 {
        let pid = child.id();
        self.0.push((name.to_owned(), child));
        pid
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (name, child) in &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            match child.wait() {
                Ok(_) => eprintln!("bench: stopped {name} (pid {})", child.id()),
                Err(e) => eprintln!("bench: could not reap {name}: {e}"),
            }
        }
    }
}

/// A CA minted for the bench.
struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for the names (DNS names or IPs).
    fn leaf(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(names)
            .expect("leaf params")
            .signed_by(&key, &self.issuer)
            .expect("leaf");
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key");
        (vec![cert.der().clone()], key)
    }
}

/// TLS connections the upstream accepted (how well proxies reuse them).
static UPSTREAM_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// Starts the HTTPS upstream on the runtime; returns its address.
fn start_upstream(runtime: &tokio::runtime::Runtime, ca: &Ca) -> SocketAddr {
    let (chain, key) = ca.leaf(&["bench.test", "127.0.0.1"]);
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("upstream cert");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let small = Bytes::from(vec![b's'; SMALL_BYTES]);
    let large = Bytes::from(vec![b'L'; LARGE_BYTES]);
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            UPSTREAM_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
            let acceptor = acceptor.clone();
            let (small, large) = (small.clone(), large.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |req: Request<Incoming>| {
                    let body = match req.uri().path() {
                        "/small" => Some(small.clone()),
                        "/large" => Some(large.clone()),
                        _ => None,
                    };
                    async move {
                        let response = match body {
                            Some(body) => Response::new(Full::new(body)),
                            None => {
                                let mut r = Response::new(Full::new(Bytes::from_static(b"no\n")));
                                *r.status_mut() = StatusCode::NOT_FOUND;
                                r
                            }
                        };
                        Ok::<_, hyper::Error>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn wait_for_port(addr: SocketAddr, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while StdStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// A program from an env var, else `PATH`, else the fallbacks.
fn find_program(env: &str, name: &str, fallbacks: &[PathBuf]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .map(|dir| dir.join(name))
        .chain(fallbacks.iter().cloned())
        .find(|p| p.is_file())
}

fn version_of(program: &Path) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Warns if the release binary is older than the egress sources.
fn warn_if_stale(bin: &Path) {
    fn newest(dir: &Path, best: &mut Option<std::time::SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                newest(&path, best);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                *best = Some(best.map_or(modified, |b| b.max(modified)));
            }
        }
    }
    let mut src = None;
    newest(&workspace_root().join("crates/egress/src"), &mut src);
    let built = std::fs::metadata(bin).and_then(|m| m.modified()).ok();
    if let (Some(src), Some(built)) = (src, built)
        && src > built
    {
        eprintln!(
            "bench: WARNING {} is older than crates/egress/src; rebuild with \
             `cargo build --release -p cli --bin bottle`",
            bin.display()
        );
    }
}

/// One kB figure from /proc/PID/status (`VmRSS`, `VmHWM`), in KiB.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU seconds of this process (upstream, sampler) plus its reaped children (oha).
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14 to 17.
    let ticks: u64 = fields[11..15]
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Some(ticks as f64 / 100.0)
}

/// (busy, total) jiffies of all CPUs from /proc/stat.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    // idle + iowait are not busy.
    let idle = values.get(3)? + values.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// Samples VmRSS every 100 ms until stopped; returns the peak in KiB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(proc_status_kib(pid, "VmRSS").unwrap_or(0));
                thread::sleep(Duration::from_millis(100));
            }
            peak.max(proc_status_kib(pid, "VmRSS").unwrap_or(0))
        });
        Self { stop, handle }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}

/// The egress proxy as a child process; returns (pid, listen address).
fn start_egress(
    children: &mut Children,
    bin: &Path,
    dir: &Path,
    upstream_ca: &Ca,
    upstream_port: u16,
) -> (u32, SocketAddr, PathBuf) {
    let bottle_ca = Ca::new("bench bottle CA");
    std::fs::write(dir.join("ca-cert.pem"), &bottle_ca.cert_pem).unwrap();
    std::fs::write(dir.join("ca-key.pem"), &bottle_ca.key_pem).unwrap();
    std::fs::write(dir.join("upstream-ca.pem"), &upstream_ca.cert_pem).unwrap();
    let client_ca = dir.join("bottle-ca-for-clients.pem");
    std::fs::write(&client_ca, &bottle_ca.cert_pem).unwrap();
    let policy = serde_json::json!({
        "bottle_slug": "bench",
        "listen": "127.0.0.1:0",
        "extra_ca_bundle": "upstream-ca.pem",
        "audit_log": "audit.jsonl",
        // As Docker bottles run it: every request in the audit file, notable ones on
        // stdout too.
        "audit_stdout": "notable",
        "static_hosts": {"bench.test": "127.0.0.1"},
        "allow": [
            {"host": "bench.test", "ports": [upstream_port]},
            {"host": "127.0.0.1", "ports": [upstream_port]}
        ],
        "ssrf": {"enabled": true, "exempt_cidrs": ["127.0.0.1/32"]}
    });
    std::fs::write(
        dir.join("policy.json"),
        serde_json::to_vec_pretty(&policy).unwrap(),
    )
    .unwrap();
    let mut child = Command::new(bin)
        .args(["sidecar", "egress", "--config"])
        .arg(dir)
        .stdin(Stdio::null())
        // Notable audit lines go to stdout; every request's to audit.jsonl.
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let stderr = child.stderr.take().expect("stderr");
    let pid = children.add("egress proxy", child);
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        let mut tx = Some(tx);
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("egress: listening on ") {
                let addr = addr.split_whitespace().next().unwrap_or("").to_owned();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr);
                }
            } else {
                eprintln!("egress stderr: {line}");
            }
        }
    });
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the egress proxy did not report its address")
        .parse()
        .expect("egress listen address");
    (pid, addr, client_ca)
}

/// mitmdump as a child process; returns (pid, listen address, its CA).
fn start_mitmdump(
    children: &mut Children,
    bin: &Path,
    dir: &Path,
    upstream_ca: &Ca,
) -> (u32, SocketAddr, PathBuf) {
    let confdir = dir.join("mitmproxy");
    std::fs::create_dir_all(&confdir).unwrap();
    let upstream_ca_path = dir.join("upstream-ca.pem");
    std::fs::write(&upstream_ca_path, &upstream_ca.cert_pem).unwrap();
    let port = free_port();
    let mut child = Command::new(bin)
        .args(["-q", "--listen-host", "127.0.0.1", "--listen-port"])
        .arg(port.to_string())
        .arg("--set")
        .arg(format!("confdir={}", confdir.display()))
        .arg("--set")
        .arg(format!(
            "ssl_verify_upstream_trusted_ca={}",
            upstream_ca_path.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_port(addr, "mitmdump", &mut child);
    let pid = children.add("mitmdump", child);
    let ca = confdir.join("mitmproxy-ca-cert.pem");
    assert!(ca.is_file(), "mitmdump wrote no CA at {}", ca.display());
    (pid, addr, ca)
}

/// The environment variable that makes this bench binary run as the tunnel floor.
const TUNNEL_ROLE: &str = "PROXY_LOAD_ROLE";

/// The floor under any proxy on this machine: a CONNECT tunnel that relays
/// bytes and intercepts nothing (no TLS, no HTTP after the CONNECT line),
/// run as its own process (this bench binary again, with [`TUNNEL_ROLE`]) on a
/// multi-threaded tokio runtime like the egress proxy's. It pays only for the
/// two extra loopback hops a proxy adds, so no proxy here can beat it: what
/// separates egress from it is the cost of interception. Prints its address
/// and serves until killed; it connects only to 127.0.0.1.
fn run_tunnel_floor() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tunnel");
        println!("{}", listener.local_addr().expect("tunnel address"));
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                let end = loop {
                    if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    match client.read(&mut buf).await {
                        Ok(n) if n > 0 && head.len() < 8192 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                };
                let line = String::from_utf8_lossy(&head[..end]);
                let port = line
                    .strip_prefix("CONNECT 127.0.0.1:")
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|p| p.parse::<u16>().ok());
                let Some(port) = port else {
                    let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
                    return;
                };
                let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)).await else {
                    return;
                };
                let _ = upstream.set_nodelay(true);
                if client.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.is_err()
                    || upstream.write_all(&head[end..]).await.is_err()
                {
                    return;
                }
                let _ = tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut upstream,
                    64 * 1024,
                    64 * 1024,
                )
                .await;
            });
        }
    });
}

/// The tunnel floor as a child process; returns (pid, listen address).
fn start_tunnel_floor(children: &mut Children) -> (u32, SocketAddr) {
    let exe = std::env::current_exe().expect("this bench's path");
    let mut child = Command::new(exe)
        .env(TUNNEL_ROLE, "tunnel")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the tunnel floor");
    let stdout = child.stdout.take().expect("stdout");
    let pid = children.add("tunnel floor", child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("tunnel address");
    let addr = line.trim().parse().expect("tunnel listen address");
    (pid, addr)
}

/// How a run reaches the upstream.
struct Route {
    name: &'static str,
    proxy: Option<SocketAddr>,
    cacert: PathBuf,
    pid: Option<u32>,
}

/// What one oha run measured.
#[derive(Clone, Copy)]
struct Measured {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    ok: u64,
    failed: u64,
    proxy_cpu: Option<f64>,
    /// Busy share of all CPUs of the machine (load generator, upstream, proxy).
    machine_cpu: Option<f64>,
    /// CPU used by anything else on the machine, in cores.
    other_cpu: Option<f64>,
    /// Upstream TLS connections opened during the run.
    upstream_connections: u64,
    peak_rss_kib: Option<u64>,
}

fn oha(oha_bin: &Path, route: &Route, url: &str, clients: u32, load: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(oha_bin);
    cmd.args(["--no-tui", "--output-format", "json", "-c"])
        .arg(clients.to_string())
        .args(load)
        .arg("--cacert")
        .arg(&route.cacert);
    if let Some(proxy) = route.proxy {
        cmd.arg("-x").arg(format!("http://{proxy}"));
    }
    // Nothing from the environment may redirect the traffic off loopback.
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    let output = cmd.arg(url).stdin(Stdio::null()).output().expect("run oha");
    assert!(
        output.status.success(),
        "oha failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "oha output is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn status_counts(report: &serde_json::Value) -> (u64, u64) {
    let mut ok = 0;
    let mut failed = 0;
    if let Some(codes) = report["statusCodeDistribution"].as_object() {
        for (code, n) in codes {
            let n = n.as_u64().unwrap_or(0);
            if code == "200" { ok += n } else { failed += n }
        }
    }
    if let Some(errors) = report["errorDistribution"].as_object() {
        for (error, n) in errors {
            // Requests cut off by the end of a timed run are not failures.
            if !error.contains("deadline") {
                failed += n.as_u64().unwrap_or(0);
            }
        }
    }
    (ok, failed)
}

/// One request through the route; panics unless it is a 200 of `bytes`.
fn check_route(oha_bin: &Path, route: &Route, url: &str, bytes: usize) {
    let report = oha(oha_bin, route, url, 1, &["-n", "1"]);
    let (ok, failed) = status_counts(&report);
    let size = report["summary"]["sizePerRequest"].as_f64().unwrap_or(0.0) as usize;
    assert!(
        ok == 1 && failed == 0 && size == bytes,
        "{} {url}: expected one 200 of {bytes} bytes, got {report}",
        route.name
    );
}

fn measure(oha_bin: &Path, route: &Route, url: &str, clients: u32, secs: u64) -> Measured {
    let sampler = match (route.pid, clients > 1) {
        (Some(pid), true) => Some(RssSampler::start(pid)),
        _ => None,
    };
    let cpu_before = route.pid.and_then(cpu_seconds);
    let machine_before = machine_jiffies();
    let own_before = own_cpu_seconds();
    let connections_before = UPSTREAM_CONNECTIONS.load(Ordering::Relaxed);
    let started = Instant::now();
    let duration = format!("{secs}s");
    let report = oha(oha_bin, route, url, clients, &["-z", &duration]);
    let wall = started.elapsed().as_secs_f64();
    let peak_rss_kib = sampler.map(RssSampler::finish);
    let proxy_cpu = match (cpu_before, route.pid.and_then(cpu_seconds)) {
        (Some(before), Some(after)) => Some((after - before) / wall),
        _ => None,
    };
    let machine = machine_jiffies();
    let own = own_cpu_seconds();
    let cores = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let machine_cpu = match (machine_before, machine) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => Some((b1 - b0) as f64 / (t1 - t0) as f64),
        _ => None,
    };
    // Cores busy with something other than this bench (other builds...).
    let other_cpu = match (machine_cpu, own_before, own) {
        (Some(busy), Some(o0), Some(o1)) => {
            let proxy = proxy_cpu.unwrap_or(0.0);
            Some((busy * cores - (o1 - o0) / wall - proxy).max(0.0))
        }
        _ => None,
    };
    let (ok, failed) = status_counts(&report);
    let pct = |key: &str| {
        report["latencyPercentiles"][key]
            .as_f64()
            .unwrap_or(f64::NAN)
            * 1e3
    };
    Measured {
        rps: report["summary"]["requestsPerSec"]
            .as_f64()
            .unwrap_or(f64::NAN),
        p50_ms: pct("p50"),
        p99_ms: pct("p99"),
        ok,
        failed,
        proxy_cpu,
        machine_cpu,
        other_cpu,
        upstream_connections: UPSTREAM_CONNECTIONS.load(Ordering::Relaxed) - connections_before,
        peak_rss_kib,
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn main() {
    if std::env::var_os(TUNNEL_ROLE).is_some() {
        run_tunnel_floor();
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("proxy_load: run with `cargo bench -p egress --bench proxy_load`; skipped");
        return;
    }
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let root = workspace_root();
    let bottle_bin = std::env::var_os("BOTTLE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/bottle"));
    assert!(
        bottle_bin.is_file(),
        "no {}: run `cargo build --release -p cli --bin bottle` first (or set BOTTLE_BIN)",
        bottle_bin.display()
    );
    warn_if_stale(&bottle_bin);
    let home_cargo_bin = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin/oha"))
        .into_iter()
        .collect::<Vec<_>>();
    let oha_bin = find_program("OHA", "oha", &home_cargo_bin)
        .expect("no oha: `cargo install oha --locked` (or set OHA)");
    let mitmdump_bin = find_program("MITMDUMP", "mitmdump", &[]);
    let oha_version = version_of(&oha_bin);
    let mitm_version = mitmdump_bin
        .as_deref()
        .map(version_of)
        .unwrap_or_else(|| "not found (rows skipped)".to_owned());
    eprintln!("bench: {oha_version}; {mitm_version}; {secs}s per run");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let work = tempfile::tempdir().expect("temp dir");
    let upstream_ca = Ca::new("bench upstream CA");
    let upstream = start_upstream(&runtime, &upstream_ca);
    let upstream_ca_path = work.path().join("upstream-ca.pem");
    std::fs::write(&upstream_ca_path, &upstream_ca.cert_pem).unwrap();

    let mut children = Children::default();
    let egress_dir = work.path().join("egress");
    std::fs::create_dir_all(&egress_dir).unwrap();
    let (egress_pid, egress_addr, egress_ca) = start_egress(
        &mut children,
        &bottle_bin,
        &egress_dir,
        &upstream_ca,
        upstream.port(),
    );
    thread::sleep(Duration::from_millis(500));
    let idle_rss = proc_status_kib(egress_pid, "VmRSS").unwrap_or(0);
    eprintln!(
        "bench: upstream {upstream}, egress {egress_addr} (pid {egress_pid}, idle RSS {})",
        mib(idle_rss)
    );

    let mut routes = vec![
        Route {
            name: "direct",
            proxy: None,
            cacert: upstream_ca_path.clone(),
            pid: None,
        },
        Route {
            name: "egress",
            proxy: Some(egress_addr),
            cacert: egress_ca,
            pid: Some(egress_pid),
        },
    ];
    let (tunnel_pid, tunnel_addr) = start_tunnel_floor(&mut children);
    eprintln!("bench: tunnel floor {tunnel_addr} (pid {tunnel_pid})");
    routes.push(Route {
        name: "tunnel",
        proxy: Some(tunnel_addr),
        cacert: upstream_ca_path.clone(),
        pid: Some(tunnel_pid),
    });
    if let Some(bin) = std::env::var_os("BOTTLE_BIN_BASELINE").map(PathBuf::from) {
        let dir = work.path().join("baseline");
        std::fs::create_dir_all(&dir).unwrap();
        let (pid, addr, ca) =
            start_egress(&mut children, &bin, &dir, &upstream_ca, upstream.port());
        eprintln!(
            "bench: baseline egress {addr} (pid {pid}, {})",
            bin.display()
        );
        routes.push(Route {
            name: "baseline",
            proxy: Some(addr),
            cacert: ca,
            pid: Some(pid),
        });
    }
    if let Some(bin) = &mitmdump_bin {
        let mitm_dir = work.path().join("mitm");
        std::fs::create_dir_all(&mitm_dir).unwrap();
        let (pid, addr, ca) = start_mitmdump(&mut children, bin, &mitm_dir, &upstream_ca);
        eprintln!("bench: mitmdump {addr} (pid {pid})");
        routes.push(Route {
            name: "mitmdump",
            proxy: Some(addr),
            cacert: ca,
            pid: Some(pid),
        });
    }

    // Diagnostics: BENCH_ROUTES=egress,direct and BENCH_BODIES=small or large
    // narrow the matrix (the targets then say what they could check).
    let wanted = |var: &str, name: &str| {
        std::env::var(var)
            .map(|v| v.split(',').any(|w| w.trim() == name))
            .unwrap_or(true)
    };
    routes.retain(|r| wanted("BENCH_ROUTES", r.name));
    let bodies: Vec<(&str, usize)> = [("small", SMALL_BYTES), ("1 MiB", LARGE_BYTES)]
        .into_iter()
        .filter(|(b, _)| {
            wanted(
                "BENCH_BODIES",
                if *b == "small" { "small" } else { "large" },
            )
        })
        .collect();
    let url_for = |body: &str| {
        let path = if body == "small" { "small" } else { "large" };
        format!("https://127.0.0.1:{}/{path}", upstream.port())
    };
    for route in &routes {
        for &(body, bytes) in &bodies {
            check_route(&oha_bin, route, &url_for(body), bytes);
        }
        // Warm-up: leaf cache, upstream pool, mitmproxy's imports.
        let _ = oha(&oha_bin, route, &url_for("small"), 8, &["-n", "400"]);
    }

    let mut results: BTreeMap<(&str, &str, u32), Measured> = BTreeMap::new();
    for &(body, _) in &bodies {
        for clients in CLIENTS {
            for route in &routes {
                let m = measure(&oha_bin, route, &url_for(body), clients, secs);
                eprintln!(
                    "bench: {:<8} {:<5} c={:<2} {:>9.1} rps p50 {:.3} ms p99 {:.3} ms ({} ok, {} failed, peak RSS {})",
                    route.name,
                    body,
                    clients,
                    m.rps,
                    m.p50_ms,
                    m.p99_ms,
                    m.ok,
                    m.failed,
                    m.peak_rss_kib.map(mib).unwrap_or_default()
                );
                results.insert((route.name, body, clients), m);
            }
        }
    }
    let egress_hwm = proc_status_kib(egress_pid, "VmHWM").unwrap_or(0);
    let after_rss = proc_status_kib(egress_pid, "VmRSS").unwrap_or(0);
    drop(children);

    let mut out = String::new();
    out.push_str(&format!(
        "\n## egress proxy load benchmark ({secs}s per run, HTTP/1.1 keep-alive, TLS both hops, 127.0.0.1)\n\n"
    ));
    out.push_str(
        "| route | body | clients | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | proxy CPU (1 core = 100%) | machine CPU (all cores) | other load (cores) | upstream TLS conns | proxy peak RSS | non-200/errors |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for &(body, _) in &bodies {
        for clients in CLIENTS {
            let direct = results.get(&("direct", body, clients)).copied();
            for route in &routes {
                let Some(m) = results.get(&(route.name, body, clients)) else {
                    continue;
                };
                let added = |f: fn(&Measured) -> f64| match (route.proxy, direct) {
                    (Some(_), Some(d)) => format!("{:.3}", f(m) - f(&d)),
                    _ => "–".to_owned(),
                };
                out.push_str(&format!(
                    "| {} | {} | {} | {:.0} | {:.3} | {:.3} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    route.name,
                    body,
                    clients,
                    m.rps,
                    m.p50_ms,
                    m.p99_ms,
                    added(|m| m.p50_ms),
                    added(|m| m.p99_ms),
                    m.proxy_cpu
                        .map(|c| format!("{:.0}%", c * 100.0))
                        .unwrap_or_else(|| "–".to_owned()),
                    m.machine_cpu
                        .map(|c| format!("{:.0}%", c * 100.0))
                        .unwrap_or_else(|| "–".to_owned()),
                    m.other_cpu
                        .map(|c| format!("{c:.2}"))
                        .unwrap_or_else(|| "–".to_owned()),
                    m.upstream_connections,
                    m.peak_rss_kib.map(mib).unwrap_or_else(|| "–".to_owned()),
                    m.failed,
                ));
            }
        }
    }
    let peak_64 = CLIENTS
        .iter()
        .filter(|&&c| c > 1)
        .flat_map(|&c| bodies.iter().map(move |(b, _)| ("egress", *b, c)))
        .filter_map(|k| results.get(&k).and_then(|m| m.peak_rss_kib))
        .max()
        .unwrap_or(0);
    out.push_str(&format!(
        "\negress RSS: idle after start {}, peak sampled during the 64-client runs {}, \
         VmHWM {}, after the runs {}\n",
        mib(idle_rss),
        mib(peak_64),
        mib(egress_hwm),
        mib(after_rss)
    ));
    out.push_str(&format!("\ntools: {oha_version}; {mitm_version}\n"));

    out.push_str("\ntargets:\n");
    // Issue 15: throughput as a share of direct, beside the share the bare tunnel
    // (two extra loopback hops, no interception) reaches in the same run.
    let share = |route: &str, body: &str, clients: u32| match (
        results.get(&(route, body, clients)),
        results.get(&("direct", body, clients)),
    ) {
        (Some(r), Some(d)) => Some(r.rps / d.rps),
        _ => None,
    };
    for (body, clients, goal) in [("small", 64, 0.50), ("small", 1, 0.75), ("1 MiB", 1, 0.75)] {
        if let Some(egress) = share("egress", body, clients) {
            let floor = share("tunnel", body, clients)
                .map(|t| format!("; the bare tunnel: {:.0}%", t * 100.0))
                .unwrap_or_default();
            out.push_str(&format!(
                "- {body}, {clients} client(s): egress at {:.0}% of direct, target >= {:.0}%: {}{floor}\n",
                egress * 100.0,
                goal * 100.0,
                if egress >= goal { "MET" } else { "MISSED" },
            ));
        }
    }
    for route in ["egress", "tunnel"] {
        if let (Some(r), Some(d)) = (
            results.get(&(route, "small", 1)),
            results.get(&("direct", "small", 1)),
        ) {
            let added = r.p50_ms - d.p50_ms;
            let verdict = match route {
                "egress" if added <= 0.1 => "MET",
                "egress" => "MISSED",
                _ => "the floor",
            };
            out.push_str(&format!(
                "- added p50 at 1 client, small, {route}: {added:.3} ms (target <= 0.1 ms: {verdict})\n"
            ));
        }
    }
    if mitmdump_bin.is_some() {
        let mut worst = f64::INFINITY;
        for &(body, _) in &bodies {
            for clients in CLIENTS {
                if let (Some(e), Some(m)) = (
                    results.get(&("egress", body, clients)),
                    results.get(&("mitmdump", body, clients)),
                ) {
                    let ratio = e.rps / m.rps;
                    worst = worst.min(ratio);
                    out.push_str(&format!(
                        "- throughput vs mitmdump, {body}, {clients} clients: {ratio:.1}x\n"
                    ));
                }
            }
        }
        out.push_str(&format!(
            "- >= 5x mitmdump throughput everywhere: {} (worst {worst:.1}x)\n",
            if worst >= 5.0 { "MET" } else { "MISSED" }
        ));
    }
    for &(body, _) in &bodies {
        if let (Some(e), Some(d)) = (
            results.get(&("egress", body, 1)),
            results.get(&("direct", body, 1)),
        ) {
            let added = e.p50_ms - d.p50_ms;
            out.push_str(&format!(
                "- added p50 at 1 client < 1 ms, {body}: {} ({added:.3} ms)\n",
                if added < 1.0 { "MET" } else { "MISSED" }
            ));
        }
    }
    for clients in CLIENTS {
        if let (Some(e), Some(b)) = (
            results.get(&("egress", "small", clients)),
            results.get(&("baseline", "small", clients)),
        ) {
            let loss = 1.0 - e.rps / b.rps;
            out.push_str(&format!(
                "- small-request throughput vs baseline, {clients} clients: {:+.1}% ({}: at most 10% loss)\n",
                -loss * 100.0,
                if loss <= 0.10 { "MET" } else { "MISSED" }
            ));
        }
    }
    let worst_rss = peak_64.max(idle_rss).max(egress_hwm);
    out.push_str(&format!(
        "- RSS < 30 MiB: {} (highest {})\n",
        if worst_rss < 30 * 1024 {
            "MET"
        } else {
            "MISSED"
        },
        mib(worst_rss)
    ));
    println!("{out}");
}
