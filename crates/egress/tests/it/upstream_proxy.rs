//! `upstream_proxy`: the sidecar reaches its upstreams through a corporate CONNECT
//! proxy (a tiny one written here, on loopback, that records every tunnel), with the
//! proxy's credential; `no_proxy` hosts go direct; a refusing or dead proxy is a 502
//! and never a direct connection.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const PROXY_AUTH_ENV: &str = "IT_PROXY_AUTH";
const PROXY_AUTH: &str = "svc-bot:corp-proxy-password-0123456789";

/// One tunnel the corporate proxy was asked for.
#[derive(Clone, Debug)]
struct Tunnelled {
    target: String,
    authorization: Option<String>,
}

/// A CONNECT proxy on 127.0.0.1: every target name is taken to mean 127.0.0.1 (the
/// echo upstreams live there). With `required`, a request without that
/// `user:password` gets a 407 and no tunnel.
struct CorpProxy {
    port: u16,
    seen: Arc<Mutex<Vec<Tunnelled>>>,
}

impl CorpProxy {
    async fn start(required: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let expected = required.map(|credential| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credential)
            )
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                let expected = expected.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, record, expected).await;
                });
            }
        });
        Self { port, seen }
    }

    fn tunnels(&self) -> Vec<Tunnelled> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    mut client: TcpStream,
    record: Arc<Mutex<Vec<Tunnelled>>>,
    expected: Option<String>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let authorization = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });
    let mut words = request_line.split(' ');
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    record.lock().unwrap().push(Tunnelled {
        target: target.to_owned(),
        authorization: authorization.clone(),
    });
    if expected.is_some() && authorization != expected {
        client
            .write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                  Proxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n",
            )
            .await?;
        return Ok(());
    }
    let port: u16 = target.rsplit_once(':').unwrap().1.parse().unwrap();
    let mut upstream = TcpStream::connect(("127.0.0.1", port)).await?;
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// The standard policy for `ports` with `upstream_proxy` at 127.0.0.1:`proxy_port`.
/// Loopback is exempt from SSRF for the echo upstream; the proxy's address needs
/// no exemption.
fn policy_via(ports: &[u16], proxy_port: u16, no_proxy: &[&str]) -> serde_json::Value {
    let mut policy = standard_policy(ports, true);
    policy["upstream_proxy"] = serde_json::json!({
        "host": "127.0.0.1",
        "port": proxy_port,
        "credential_env": PROXY_AUTH_ENV,
        "no_proxy": no_proxy,
    });
    policy
}

fn get(host: &str, port: u16, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n")
}

fn audit_text(dir: &ProxyDir) -> String {
    std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap_or_default()
}

fn assert_no_credential(text: &str) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(PROXY_AUTH);
    for needle in [PROXY_AUTH, "corp-proxy-password", encoded.as_str()] {
        assert!(
            !text.contains(needle),
            "the proxy credential leaked: {text}"
        );
    }
}

/// A sidecar whose `upstream_proxy` is 127.0.0.1:`proxy_port` (with the credential
/// in its environment), in front of `upstream`.
struct Through {
    upstream: EchoUpstream,
    port: u16,
    dir: ProxyDir,
    proxy: egress::Proxy,
}

impl Through {
    async fn start(
        upstream_ca: &TestCa,
        upstream: EchoUpstream,
        proxy_port: u16,
        no_proxy: &[&str],
    ) -> Self {
        let port = upstream.port();
        let dir = ProxyDir::new(upstream_ca, policy_via(&[port], proxy_port, no_proxy));
        let proxy = dir
            .start_with_secrets(&[(PROXY_AUTH_ENV, PROXY_AUTH)])
            .await;
        Self {
            upstream,
            port,
            dir,
            proxy,
        }
    }

    /// `GET path` from `host`, over HTTPS through the sidecar.
    async fn get(&self, host: &str, path: &str) -> RawResponse {
        https_via_proxy(
            self.proxy.local_addr(),
            host,
            self.port,
            &self.dir.bottle_ca.cert_pem,
            &get(host, self.port, path),
        )
        .await
    }
}

#[tokio::test]
async fn https_goes_through_the_upstream_proxy_with_its_credential() {
    let upstream_ca = TestCa::new("it upstream CA");
    let corp = CorpProxy::start(Some(PROXY_AUTH)).await;
    let upstream = EchoUpstream::https(&upstream_ca).await;
    let through = Through::start(&upstream_ca, upstream, corp.port, &[]).await;
    let (port, upstream) = (through.port, &through.upstream);

    let response = through.get("other.test", "/through").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["path"], "/through");
    // The route still applies in front of the proxy: the upstream gets the real token.
    let routed = https_via_proxy(
        through.proxy.local_addr(),
        "upstream.test",
        port,
        &through.dir.bottle_ca.cert_pem,
        &format!(
            "GET /r HTTP/1.1\r\nHost: upstream.test:{port}\r\nAuthorization: Bearer {PLACEHOLDER}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(routed.status, 200, "{routed:?}");
    assert_eq!(
        upstream.last_header("authorization").as_deref(),
        Some(format!("Bearer {REAL_TOKEN}").as_str())
    );

    let tunnels = corp.tunnels();
    let targets: Vec<&str> = tunnels.iter().map(|t| t.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            format!("other.test:{port}"),
            format!("upstream.test:{port}")
        ],
        "the proxy is asked by name, once per upstream connection"
    );
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(PROXY_AUTH)
    );
    assert!(
        tunnels
            .iter()
            .all(|t| t.authorization.as_deref() == Some(expected.as_str())),
        "{tunnels:?}"
    );
    // Nothing reached the upstream but through a tunnel.
    assert_eq!(upstream.connections(), tunnels.len());
    assert_no_credential(&audit_text(&through.dir));
}

#[tokio::test]
async fn plain_http_is_tunnelled_too() {
    let upstream_ca = TestCa::new("it upstream CA");
    let upstream = EchoUpstream::plain().await;
    let corp = CorpProxy::start(Some(PROXY_AUTH)).await;
    let port = upstream.port();
    let dir = ProxyDir::new(&upstream_ca, policy_via(&[port], corp.port, &[]));
    let proxy = dir
        .start_with_secrets(&[(PROXY_AUTH_ENV, PROXY_AUTH)])
        .await;
    let response = plain_request(
        proxy.local_addr(),
        &format!(
            "GET http://other.test:{port}/plain HTTP/1.1\r\nHost: other.test:{port}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["path"], "/plain");
    let targets: Vec<String> = corp.tunnels().into_iter().map(|t| t.target).collect();
    assert_eq!(targets, [format!("other.test:{port}")]);
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn no_proxy_hosts_go_direct_and_the_rest_through_the_proxy() {
    let upstream_ca = TestCa::new("it upstream CA");
    let corp = CorpProxy::start(Some(PROXY_AUTH)).await;
    let upstream = EchoUpstream::https(&upstream_ca).await;
    let no_proxy = ["other.test", ".internal.test"];
    let through = Through::start(&upstream_ca, upstream, corp.port, &no_proxy).await;
    for host in ["other.test", "upstream.test"] {
        let response = through.get(host, "/").await;
        assert_eq!(response.status, 200, "{host}: {response:?}");
    }
    let targets: Vec<String> = corp.tunnels().into_iter().map(|t| t.target).collect();
    assert_eq!(targets, [format!("upstream.test:{}", through.port)]);
    assert_eq!(through.upstream.connections(), 2);
}

#[tokio::test]
async fn a_refused_tunnel_is_a_502_and_never_a_direct_connection() {
    let upstream_ca = TestCa::new("it upstream CA");
    // The proxy wants another password than the sidecar has.
    let corp = CorpProxy::start(Some("svc-bot:the-right-one")).await;
    let upstream = EchoUpstream::https(&upstream_ca).await;
    let through = Through::start(&upstream_ca, upstream, corp.port, &[]).await;
    let response = through.get("other.test", "/refused").await;
    assert_eq!(response.status, 502, "{response:?}");
    assert!(
        response.body.contains("upstream proxy")
            && response.body.contains("407 Proxy Authentication Required"),
        "{}",
        response.body
    );
    assert_eq!(corp.tunnels().len(), 1);
    assert_eq!(
        through.upstream.connections(),
        0,
        "the sidecar went around its proxy"
    );
    let audit = audit_text(&through.dir);
    assert!(audit.contains("407"), "{audit}");
    assert_no_credential(&audit);
    assert_no_credential(&response.body);
}

#[tokio::test]
async fn a_dead_proxy_is_a_502_and_never_a_direct_connection() {
    let upstream_ca = TestCa::new("it upstream CA");
    let dead_port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let upstream = EchoUpstream::https(&upstream_ca).await;
    let through = Through::start(&upstream_ca, upstream, dead_port, &[]).await;
    let response = through.get("other.test", "/dead").await;
    assert_eq!(response.status, 502, "{response:?}");
    assert!(
        response.body.contains(&format!(
            "cannot connect to the upstream proxy 127.0.0.1:{dead_port}"
        )),
        "{}",
        response.body
    );
    assert_eq!(
        through.upstream.connections(),
        0,
        "the sidecar went around its proxy"
    );
}

#[tokio::test]
async fn a_missing_proxy_credential_stops_the_policy_from_loading() {
    let upstream_ca = TestCa::new("it upstream CA");
    let dir = ProxyDir::new(&upstream_ca, policy_via(&[443], 3128, &[]));
    let error = egress::Proxy::start_with_stdout_audit(
        dir.path(),
        egress::SecretSource::Map([(TOKEN_ENV.to_owned(), REAL_TOKEN.to_owned())].into()),
        false,
    )
    .await
    .err()
    .expect("a policy whose proxy credential is missing must not load");
    assert!(
        matches!(error, egress::Error::MissingSecretEnv { ref var, .. } if var == PROXY_AUTH_ENV),
        "{error}"
    );
}
