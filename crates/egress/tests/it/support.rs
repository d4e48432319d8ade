//! Test fixtures: CAs minted with rcgen, an echo upstream (HTTPS and plain
//! HTTP) on 127.0.0.1, a proxy in a temp config dir, and raw clients.
//! Everything listens and connects on loopback only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use egress::{Proxy, SecretSource};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub const SLUG: &str = "it-bottle";
pub const REAL_TOKEN: &str = "real-upstream-token-0123456789abcdef";
pub const PLACEHOLDER: &str = "placeholder-token-for-the-agent-000";
pub const TOKEN_ENV: &str = "IT_UPSTREAM_TOKEN";

/// A CA for tests: its PEMs and an issuer for leaves.
pub struct TestCa {
    pub cert_pem: String,
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for the names (DNS or IP) as (chain, key).
    pub fn leaf(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
    }
}

/// What the echo upstream has seen.
#[derive(Default)]
pub struct Seen {
    /// Every body byte received, across requests (streamed as it arrives).
    pub body_bytes: Vec<u8>,
    /// Each request's headers, in order (lower-case names; repeated names joined with ", ").
    pub headers: Vec<BTreeMap<String, String>>,
    /// Request count.
    pub requests: usize,
    /// TCP connections accepted.
    pub connections: usize,
}

/// An echo server: answers JSON {method, path, headers, body}.
///
/// Paths starting with `/reflect` reflect the request verbatim the way a debug
/// endpoint would (see [`reflect`]): the JSON echo, plus the `authorization`
/// header's value in the response header `x-reflected-authorization`.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
}

/// The echo upstream's response body: whole, or in timed pieces.
pub type EchoBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// A body sent in pieces, each after its pause (a server that flushes as it goes).
struct TimedPieces {
    pieces: std::collections::VecDeque<(std::time::Duration, Bytes)>,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for TimedPieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some((pause, _)) = this.pieces.front() else {
            return std::task::Poll::Ready(None);
        };
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(*pause)));
        if sleep.as_mut().poll(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        this.sleep = None;
        let (_, piece) = this.pieces.pop_front().unwrap();
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(piece))))
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A reflecting endpoint, by path:
///
/// - `/reflect`: the JSON echo with `Content-Length`;
/// - `/reflect-split`: the same, chunked, cut in two pieces in the middle of
///   the `authorization` value, the second sent 300 ms after the first;
/// - `/reflect-gzip`: gzip-compressed (`Content-Encoding: gzip`);
/// - `/reflect-br`: claims `Content-Encoding: br` (the bytes are the gzip ones:
///   the proxy must refuse it unread either way).
///
/// Every one also sets `x-reflected-authorization` to the request's
/// `authorization` value.
fn reflect(path: &str, json: &serde_json::Value, authorization: &str) -> Response<EchoBody> {
    let text = json.to_string();
    let mut builder = Response::builder()
        .header("content-type", "application/json")
        .header("x-reflected-authorization", authorization);
    let body: EchoBody = match path {
        "/reflect-split" => {
            let cut = text
                .find(authorization)
                .filter(|_| !authorization.is_empty())
                .map_or(text.len() / 2, |at| at + authorization.len() / 2);
            let (first, second) = text.split_at(cut);
            TimedPieces {
                pieces: [
                    (std::time::Duration::ZERO, Bytes::from(first.to_owned())),
                    (
                        std::time::Duration::from_millis(300),
                        Bytes::from(second.to_owned()),
                    ),
                ]
                .into(),
                sleep: None,
            }
            .boxed()
        }
        "/reflect-gzip" | "/reflect-br" => {
            let coding = if path == "/reflect-gzip" {
                "gzip"
            } else {
                "br"
            };
            let compressed = gzip(text.as_bytes());
            builder = builder
                .header("content-encoding", coding)
                .header("content-length", compressed.len());
            Full::new(Bytes::from(compressed)).boxed()
        }
        _ => {
            builder = builder.header("content-length", text.len());
            Full::new(Bytes::from(text)).boxed()
        }
    };
    builder.body(body).unwrap()
}

async fn echo(
    req: Request<Incoming>,
    seen: Arc<Mutex<Seen>>,
) -> Result<Response<EchoBody>, hyper::Error> {
    seen.lock().unwrap().requests += 1;
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes());
        joined
            .entry(name.to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    seen.lock().unwrap().headers.push(joined);
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let mut body = req.into_body();
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            seen.lock().unwrap().body_bytes.extend_from_slice(data);
            collected.extend_from_slice(data);
        }
    }
    let json = serde_json::json!({
        "method": method,
        "version": version,
        "path": path,
        "headers": headers,
        "body": String::from_utf8_lossy(&collected),
    });
    let path_only = path.split('?').next().unwrap_or("");
    if path_only.starts_with("/reflect") {
        return Ok(reflect(path_only, &json, &authorization));
    }
    Ok(Response::new(
        Full::new(Bytes::from(json.to_string())).boxed(),
    ))
}

impl EchoUpstream {
    /// Whether `needle` arrived in any request body so far.
    pub fn received(&self, needle: &[u8]) -> bool {
        self.seen
            .lock()
            .unwrap()
            .body_bytes
            .windows(needle.len())
            .any(|w| w == needle)
    }

    /// HTTPS echo with a leaf from `ca` for upstream.test, other.test and 127.0.0.1.
    pub async fn https(ca: &TestCa) -> Self {
        Self::https_with_alpn(ca, b"http/1.1").await
    }

    /// HTTPS echo that speaks only HTTP/2 (ALPN h2).
    pub async fn https_h2(ca: &TestCa) -> Self {
        Self::https_with_alpn(ca, b"h2").await
    }

    async fn https_with_alpn(ca: &TestCa, alpn: &[u8]) -> Self {
        let (chain, key) = ca.leaf(&["upstream.test", "other.test", "127.0.0.1"]);
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![alpn.to_vec()];
        Self::serve(Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    /// Plain HTTP echo.
    pub async fn plain() -> Self {
        Self::serve(None).await
    }

    async fn serve(tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let seen_for_server = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                seen_for_server.lock().unwrap().connections += 1;
                let seen = seen_for_server.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| echo(req, seen.clone()));
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                                let _ =
                                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                            } else {
                                let _ = http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Self { addr, seen }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The value of header `name` in the last request the upstream received.
    pub fn last_header(&self, name: &str) -> Option<String> {
        self.seen
            .lock()
            .unwrap()
            .headers
            .last()
            .and_then(|h| h.get(name).cloned())
    }

    pub fn connections(&self) -> usize {
        self.seen.lock().unwrap().connections
    }
}

/// A config directory with the bottle CA, the upstream CA bundle and a policy.
/// The setup most tests share: an HTTPS echo upstream with its own CA, and a proxy
/// on [`standard_policy`] (loopback exempt from SSRF) that trusts that CA.
pub struct Standard {
    pub upstream: EchoUpstream,
    pub dir: ProxyDir,
    pub proxy: Proxy,
}

impl Standard {
    /// How many requests the upstream has received.
    pub fn requests_seen(&self) -> usize {
        self.upstream.seen.lock().unwrap().requests
    }

    pub async fn start() -> Self {
        let upstream_ca = TestCa::new("it upstream CA");
        let upstream = EchoUpstream::https(&upstream_ca).await;
        let dir = ProxyDir::new(&upstream_ca, standard_policy(&[upstream.port()], true));
        let proxy = dir.start().await;
        Self {
            upstream,
            dir,
            proxy,
        }
    }
}

pub struct ProxyDir {
    pub dir: tempfile::TempDir,
    pub bottle_ca: TestCa,
}

impl ProxyDir {
    pub fn new(upstream_ca: &TestCa, policy: serde_json::Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bottle_ca = TestCa::new("it bottle CA");
        std::fs::write(dir.path().join("ca-cert.pem"), &bottle_ca.cert_pem).unwrap();
        std::fs::write(dir.path().join("ca-key.pem"), &bottle_ca.key_pem).unwrap();
        std::fs::write(dir.path().join("upstream-ca.pem"), &upstream_ca.cert_pem).unwrap();
        let this = Self { dir, bottle_ca };
        this.write_policy(&policy);
        this
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.json")
    }

    pub fn write_policy(&self, policy: &serde_json::Value) {
        std::fs::write(
            self.policy_path(),
            serde_json::to_vec_pretty(policy).unwrap(),
        )
        .unwrap();
    }

    /// Lays the policy out as kubelet mounts a ConfigMap: `policy.json ->
    /// ..data/policy.json`, `..data -> ..2026_11_30_a`.
    pub fn mount_as_configmap(&self) {
        let first = self.path().join("..2026_11_30_a");
        std::fs::create_dir(&first).unwrap();
        std::fs::rename(self.policy_path(), first.join("policy.json")).unwrap();
        std::os::unix::fs::symlink("..2026_11_30_a", self.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/policy.json", self.policy_path()).unwrap();
    }

    /// Updates a [`ProxyDir::mount_as_configmap`] layout as kubelet does:
    /// a new timestamped dir, `..data_tmp` pointing at it renamed over
    /// `..data`, the old dir removed. Returns the new file's SHA-256.
    pub fn configmap_update(&self, stamp: &str, bytes: &[u8]) -> String {
        let dir = self.path();
        std::fs::create_dir(dir.join(stamp)).unwrap();
        std::fs::write(dir.join(stamp).join("policy.json"), bytes).unwrap();
        std::os::unix::fs::symlink(stamp, dir.join("..data_tmp")).unwrap();
        let old = std::fs::read_link(dir.join("..data")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        std::fs::remove_dir_all(dir.join(old)).unwrap();
        hex::encode(Sha256::digest(bytes))
    }

    pub fn bottle_ca_path(&self) -> PathBuf {
        let path = self.dir.path().join("bottle-ca-for-clients.pem");
        std::fs::write(&path, &self.bottle_ca.cert_pem).unwrap();
        path
    }

    pub async fn start(&self) -> Proxy {
        self.start_with_secrets(&[]).await
    }

    /// [`ProxyDir::start`] with more variables in the sidecar's environment.
    pub async fn start_with_secrets(&self, extra: &[(&str, &str)]) -> Proxy {
        let mut secrets = BTreeMap::from([(TOKEN_ENV.to_owned(), REAL_TOKEN.to_owned())]);
        secrets.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        // As the sidecar serves: on shard threads (two, whatever the CPU count),
        // each with its own upstream pool.
        Proxy::start_sharded(self.path(), SecretSource::Map(secrets), false, 2)
            .await
            .unwrap()
    }
}

/// The standard test policy: upstream.test and other.test (both 127.0.0.1)
/// on the given ports, a credential route for upstream.test.
pub fn standard_policy(ports: &[u16], ssrf_exempt_loopback: bool) -> serde_json::Value {
    serde_json::json!({
        "bottle_slug": SLUG,
        "listen": "127.0.0.1:0",
        "extra_ca_bundle": "upstream-ca.pem",
        "audit_log": "audit.jsonl",
        "static_hosts": {"upstream.test": "127.0.0.1", "other.test": "127.0.0.1"},
        "allow": [
            {"host": "upstream.test", "ports": ports},
            {"host": "other.test", "ports": ports},
            {"host": "127.0.0.1", "ports": ports},
            {"host": "::ffff:127.0.0.1", "ports": ports},
            {"host": "readonly.test", "ports": ports, "methods": ["GET"], "path_prefixes": ["/public/"]}
        ],
        "routes": [
            {"host": "upstream.test", "header": "authorization", "format": "Bearer {token}",
             "secret_env": TOKEN_ENV, "placeholder": PLACEHOLDER}
        ],
        "dlp": {"enabled": true},
        "ssrf": {"enabled": true, "exempt_cidrs": if ssrf_exempt_loopback { vec!["127.0.0.1/32"] } else { vec![] }}
    })
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

fn decode_chunked(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        data = &data[line_end + 2..];
        if size == 0 || data.len() < size {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
}

fn parse_response(raw: &[u8]) -> RawResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body_bytes = &raw[split + 4..];
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        decode_chunked(body_bytes)
    } else {
        body_bytes.to_vec()
    };
    RawResponse {
        status,
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn read_all<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut buf),
    )
    .await;
    buf
}

/// Sends raw bytes to the proxy (plain) and reads the reply until close.
pub async fn plain_request(proxy: SocketAddr, request: &str) -> RawResponse {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    parse_response(&read_all(&mut stream).await)
}

/// Reads one response head (CONNECT replies have no body).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Either a TLS stream through the tunnel, or the refusal the proxy sent.
pub enum Tunnel {
    Open(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Refused(RawResponse),
}

/// CONNECTs through the proxy and does TLS trusting only `ca_pem`.
pub async fn connect_tunnel(proxy: SocketAddr, target: &str, sni: &str, ca_pem: &str) -> Tunnel {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    if status != 200 {
        let mut rest = head.into_bytes();
        rest.extend(read_all(&mut stream).await);
        return Tunnel::Refused(parse_response(&rest));
    }
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), stream)
        .await
        .expect("TLS through the proxy with the bottle CA");
    Tunnel::Open(Box::new(tls))
}

/// Opens a tunnel to `host:port`, sends `head` and then each of `writes`, flushing and
/// pausing `pause` after each (so the proxy forwards what it may before the rest
/// arrives), and returns the raw response text. Writing stops when the proxy closes.
pub async fn send_in_writes(
    proxy: SocketAddr,
    ca_pem: &str,
    host: &str,
    port: u16,
    head: String,
    writes: Vec<Vec<u8>>,
    pause: std::time::Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Tunnel::Open(tls) = connect_tunnel(proxy, &format!("{host}:{port}"), host, ca_pem).await
    else {
        panic!("tunnel refused")
    };
    let (mut reader, mut writer) = tokio::io::split(tls);
    let writer_task = tokio::spawn(async move {
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for write in writes {
            if writer.write_all(&write).await.is_err() || writer.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    });
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        reader.read_to_end(&mut raw),
    )
    .await;
    writer_task.abort();
    String::from_utf8_lossy(&raw).into_owned()
}

/// One request over an open tunnel (the request should say `Connection: close`).
pub async fn tunnel_request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
) -> RawResponse {
    stream.write_all(request).await.unwrap();
    parse_response(&read_all(stream).await)
}

/// HTTPS request through CONNECT; panics if the tunnel is refused.
pub async fn https_via_proxy(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    ca_pem: &str,
    request: &str,
) -> RawResponse {
    match connect_tunnel(proxy, &format!("{host}:{port}"), host, ca_pem).await {
        Tunnel::Open(mut tls) => tunnel_request(&mut tls, request.as_bytes()).await,
        Tunnel::Refused(response) => panic!("tunnel refused: {response:?}"),
    }
}

/// Runs curl through the proxy; returns (status, body).
pub async fn curl(proxy: SocketAddr, cacert: &Path, extra: &[&str]) -> (u16, String) {
    let output = tokio::process::Command::new("curl")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-x",
            &format!("http://{proxy}"),
            "--cacert",
        ])
        .arg(cacert)
        .args(["-w", "\n%{http_code}"])
        .args(extra)
        .output()
        .await
        .expect("curl must be installed");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (
        code.trim().parse().unwrap_or(0),
        format!("{body}{}", String::from_utf8_lossy(&output.stderr)),
    )
}

/// A DNS query for `name` (A record, recursion desired) with transaction `id`.
pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}
