//! The corporate proxy in front of the internet (`upstream_proxy` in the policy).
//!
//! Every decision stays in this sidecar: the allowlist, credential routes, DLP and
//! the SSRF check run first, and only then does [`crate::upstream`] open the
//! connection, through a `CONNECT host:port` tunnel to the configured proxy instead
//! of a direct TCP connect. `https://` targets get their TLS handshake inside the
//! tunnel, verified against the upstream roots as always; `http://` targets are
//! tunnelled the same way (one code path, and the proxy never sees the plain
//! request). A refused or failed tunnel is an error: nothing falls back to a direct
//! connection. Destinations `no_proxy` names are the only ones reached directly.
//!
//! The proxy's own address is reached without the SSRF check (a corporate proxy
//! usually has a private address), at the configured host and port only. Its
//! credential (`user:password` from the sidecar's environment) goes out as
//! `Proxy-Authorization: Basic ...` and is never formatted into an error or log.

use std::io;
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::UpstreamProxyConfig;
use crate::live::SecretSource;
use crate::policy::normalize_host;
use crate::secret::SecretValue;
use crate::ssrf::{Cidr, parse_numeric_host};

/// The most a proxy's reply head to `CONNECT` may take.
pub const MAX_REPLY_HEAD: usize = 8 * 1024;

/// Why the tunnel through the upstream proxy could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The proxy could not be reached.
    #[error("cannot connect to the upstream proxy {proxy}: {source}")]
    Connect {
        /// `host:port` of the proxy.
        proxy: String,
        /// The last connect or resolve error.
        source: io::Error,
    },
    /// The connection broke while the tunnel was being set up.
    #[error("the upstream proxy {proxy} broke the connection: {source}")]
    Io {
        /// `host:port` of the proxy.
        proxy: String,
        /// The IO error.
        source: io::Error,
    },
    /// The proxy answered `CONNECT` with something other than 2xx.
    #[error("the upstream proxy {proxy} refused the tunnel: {status} {reason}")]
    Refused {
        /// `host:port` of the proxy.
        proxy: String,
        /// Its status code (407: it wants, or did not accept, credentials).
        status: u16,
        /// Its reason phrase (printable ASCII, at most 80 characters).
        reason: String,
    },
    /// The proxy's reply is not an HTTP/1 response head within [`MAX_REPLY_HEAD`].
    #[error("the upstream proxy {proxy} sent a bad reply to CONNECT: {problem}")]
    BadReply {
        /// `host:port` of the proxy.
        proxy: String,
        /// What is wrong with it.
        problem: ReplyProblem,
    },
}

/// What is wrong with a proxy's reply head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyProblem {
    /// Longer than [`MAX_REPLY_HEAD`] without an end.
    #[error("the reply head is longer than {MAX_REPLY_HEAD} bytes")]
    TooLong,
    /// The connection closed before the head ended.
    #[error("the connection closed before the reply head ended")]
    Truncated,
    /// The status line is not `HTTP/1.x NNN ...`.
    #[error("the status line is not HTTP/1.x")]
    NotHttp,
}

/// One parsed reply to `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The reason phrase, sanitized for logs.
    pub reason: String,
}

/// The compiled `upstream_proxy` of a policy version.
#[derive(Debug, Clone)]
pub struct UpstreamProxy {
    host: String,
    port: u16,
    /// `Basic base64(user:password)`.
    authorization: Option<SecretValue>,
    no_proxy: NoProxy,
}

/// Why an `upstream_proxy` section cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    /// The credential variable is not set (or empty) in the sidecar.
    #[error("upstream proxy credential variable {var} is not set")]
    MissingCredential {
        /// The variable's name.
        var: String,
    },
    /// The credential is not `user:password` on one line.
    #[error("the value of {var} is not `user:password` on one line")]
    BadCredential {
        /// The variable's name.
        var: String,
    },
    /// The host is empty or the port zero.
    #[error("upstream_proxy needs a host and a port from 1 to 65535")]
    BadAddress,
    /// A `no_proxy` entry does not parse.
    #[error("upstream_proxy.no_proxy: {0}")]
    BadNoProxy(String),
}

impl UpstreamProxy {
    /// Compiles the config, reading the credential from `secrets`.
    pub fn from_config(
        config: &UpstreamProxyConfig,
        secrets: &SecretSource,
    ) -> Result<Self, ProxyConfigError> {
        let host = normalize_host(config.host.trim_start_matches('[').trim_end_matches(']'));
        if host.is_empty() || config.port == 0 {
            return Err(ProxyConfigError::BadAddress);
        }
        let authorization = match &config.credential_env {
            None => None,
            Some(var) => {
                let value = secrets
                    .get(var)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| ProxyConfigError::MissingCredential { var: var.clone() })?;
                if !value.contains(':') || value.contains(['\r', '\n']) {
                    return Err(ProxyConfigError::BadCredential { var: var.clone() });
                }
                Some(SecretValue::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
                )))
            }
        };
        Ok(Self {
            host,
            port: config.port,
            authorization,
            no_proxy: NoProxy::parse(&config.no_proxy).map_err(ProxyConfigError::BadNoProxy)?,
        })
    }

    /// `host:port` of the proxy, for messages.
    pub fn address(&self) -> String {
        authority(&self.host, self.port)
    }

    /// Whether a connection to `host` (normalized), which resolved locally to
    /// `addrs` (empty: it did not), goes direct rather than through the proxy.
    pub fn bypasses(&self, host: &str, addrs: &[IpAddr]) -> bool {
        self.no_proxy.matches(host, addrs)
    }

    /// The request that opens a tunnel to `host:port`.
    pub fn connect_request(&self, host: &str, port: u16) -> Vec<u8> {
        let target = authority(host, port);
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(authorization) = &self.authorization {
            request.push_str("Proxy-Authorization: ");
            request.push_str(authorization.expose());
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request.into_bytes()
    }

    /// Connects to the proxy (its configured address only, static hosts honoured)
    /// and opens a tunnel to `host:port`; the stream then carries the target's bytes.
    pub async fn tunnel(
        &self,
        host: &str,
        port: u16,
        static_hosts: &std::collections::BTreeMap<String, IpAddr>,
    ) -> Result<TcpStream, TunnelError> {
        let proxy = self.address();
        let addrs = crate::upstream::resolve(&self.host, self.port, static_hosts)
            .await
            .map_err(|source| TunnelError::Connect {
                proxy: proxy.clone(),
                source,
            })?;
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no addresses");
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect(SocketAddr::new(addr, self.port)).await {
                Ok(tcp) => {
                    stream = Some(tcp);
                    break;
                }
                Err(e) => last_error = e,
            }
        }
        let mut stream = stream.ok_or_else(|| TunnelError::Connect {
            proxy: proxy.clone(),
            source: last_error,
        })?;
        let _ = stream.set_nodelay(true);
        let io_error = |source| TunnelError::Io {
            proxy: proxy.clone(),
            source,
        };
        stream
            .write_all(&self.connect_request(host, port))
            .await
            .map_err(io_error)?;
        let head = read_reply_head(&mut stream).await.map_err(|e| match e {
            HeadError::Io(source) => io_error(source),
            HeadError::Problem(problem) => TunnelError::BadReply {
                proxy: proxy.clone(),
                problem,
            },
        })?;
        let reply = parse_reply(&head).map_err(|problem| TunnelError::BadReply {
            proxy: proxy.clone(),
            problem,
        })?;
        if !(200..300).contains(&reply.status) {
            return Err(TunnelError::Refused {
                proxy,
                status: reply.status,
                reason: reply.reason,
            });
        }
        Ok(stream)
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

enum HeadError {
    Io(io::Error),
    Problem(ReplyProblem),
}

/// Reads the reply head byte by byte, so not one byte of the tunnel is consumed.
async fn read_reply_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(128);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_REPLY_HEAD {
            return Err(HeadError::Problem(ReplyProblem::TooLong));
        }
        match stream.read(&mut byte).await {
            Ok(0) => return Err(HeadError::Problem(ReplyProblem::Truncated)),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
    Ok(head)
}

/// Parses a reply head (through its blank line) to `CONNECT`.
pub fn parse_reply(head: &[u8]) -> Result<Reply, ReplyProblem> {
    if head.len() > MAX_REPLY_HEAD {
        return Err(ReplyProblem::TooLong);
    }
    if !head.ends_with(b"\r\n\r\n") {
        return Err(ReplyProblem::Truncated);
    }
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let line = &head[..line_end];
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))
        .ok_or(ReplyProblem::NotHttp)?;
    let (code, reason) = match rest.iter().position(|b| *b == b' ') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &b""[..]),
    };
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(ReplyProblem::NotHttp);
    }
    let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if status < 100 {
        return Err(ReplyProblem::NotHttp);
    }
    let reason = reason
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .take(80)
        .map(|b| char::from(*b))
        .collect();
    Ok(Reply { status, reason })
}

/// NO_PROXY-style exceptions: `.suffix` (the domain and its subdomains), exact hosts
/// and addresses, CIDRs (matched against a numeric target and against every address
/// a name resolved to locally).
#[derive(Debug, Clone, Default)]
pub struct NoProxy {
    suffixes: Vec<String>,
    exact: Vec<String>,
    cidrs: Vec<Cidr>,
}

impl NoProxy {
    /// Parses normalized entries (as the planner writes them; `*.suffix` is read as
    /// `.suffix`).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut this = Self::default();
        for entry in entries {
            let entry = entry.trim().to_ascii_lowercase();
            if entry.is_empty() || entry == "*" {
                return Err(format!("{entry:?} is not a host, suffix or CIDR"));
            }
            if entry.contains('/') {
                this.cidrs.push(entry.parse()?);
            } else if let Some(suffix) =
                entry.strip_prefix("*.").or_else(|| entry.strip_prefix('.'))
            {
                this.suffixes.push(suffix.to_owned());
            } else {
                this.exact.push(normalize_host(
                    entry.trim_start_matches('[').trim_end_matches(']'),
                ));
            }
        }
        Ok(this)
    }

    /// Whether `host` (normalized), resolved locally to `addrs` (maybe none), is
    /// an exception.
    pub fn matches(&self, host: &str, addrs: &[IpAddr]) -> bool {
        if self.exact.iter().any(|e| e == host) {
            return true;
        }
        if self.suffixes.iter().any(|suffix| {
            host == suffix
                || host
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|head| head.ends_with('.'))
        }) {
            return true;
        }
        if self.cidrs.is_empty() {
            return false;
        }
        match parse_numeric_host(host) {
            Some(ip) => self.cidrs.iter().any(|c| c.contains(ip)),
            None => {
                !addrs.is_empty()
                    && addrs
                        .iter()
                        .all(|ip| self.cidrs.iter().any(|c| c.contains(*ip)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn proxy(credential: Option<&str>, no_proxy: &[&str]) -> UpstreamProxy {
        let config = UpstreamProxyConfig {
            host: "proxy.corp.test".into(),
            port: 3128,
            credential_env: credential.map(|_| "PROXY_AUTH".to_owned()),
            no_proxy: no_proxy.iter().map(|s| s.to_string()).collect(),
        };
        let secrets = SecretSource::Map(
            credential
                .map(|c| BTreeMap::from([("PROXY_AUTH".to_owned(), c.to_owned())]))
                .unwrap_or_default(),
        );
        UpstreamProxy::from_config(&config, &secrets).unwrap()
    }

    #[test]
    fn connect_request_without_credentials() {
        let p = proxy(None, &[]);
        assert_eq!(
            String::from_utf8(p.connect_request("api.example.test", 443)).unwrap(),
            "CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n"
        );
        assert_eq!(
            String::from_utf8(p.connect_request("fd00::1", 8443)).unwrap(),
            "CONNECT [fd00::1]:8443 HTTP/1.1\r\nHost: [fd00::1]:8443\r\n\r\n"
        );
    }

    #[test]
    fn connect_request_with_credentials() {
        let p = proxy(Some("svc:s3cret pass"), &[]);
        let request = String::from_utf8(p.connect_request("api.example.test", 443)).unwrap();
        assert_eq!(
            request,
            "CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\n\
             Proxy-Authorization: Basic c3ZjOnMzY3JldCBwYXNz\r\n\r\n"
        );
        // The compiled proxy never shows its credential.
        let debug = format!("{p:?}");
        assert!(!debug.contains("c3ZjOnMzY3JldCBwYXNz"), "{debug}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn credentials_must_be_set_and_user_colon_password() {
        let config = UpstreamProxyConfig {
            host: "proxy.corp.test".into(),
            port: 3128,
            credential_env: Some("PROXY_AUTH".into()),
            no_proxy: Vec::new(),
        };
        let missing = UpstreamProxy::from_config(&config, &SecretSource::Map(BTreeMap::new()));
        assert!(matches!(
            missing,
            Err(ProxyConfigError::MissingCredential { .. })
        ));
        for bad in ["no-colon-here", "user:hunter2\r\nX-Evil: 1"] {
            let secrets =
                SecretSource::Map(BTreeMap::from([("PROXY_AUTH".to_owned(), bad.to_owned())]));
            let err = UpstreamProxy::from_config(&config, &secrets).unwrap_err();
            assert!(matches!(err, ProxyConfigError::BadCredential { .. }));
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!err.to_string().contains("no-colon"), "{err}");
        }
    }

    #[test]
    fn replies_parse() {
        assert_eq!(
            parse_reply(b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap(),
            Reply {
                status: 200,
                reason: "Connection established".into()
            }
        );
        assert_eq!(
            parse_reply(b"HTTP/1.0 200\r\nVia: squid\r\n\r\n")
                .unwrap()
                .status,
            200
        );
        let refused = parse_reply(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\n\r\n",
        )
        .unwrap();
        assert_eq!(refused.status, 407);
        assert_eq!(refused.reason, "Proxy Authentication Required");
        // Control bytes in the reason never reach a log line.
        assert_eq!(
            parse_reply(b"HTTP/1.1 403 bad\x1b[31m red\r\n\r\n")
                .unwrap()
                .reason,
            "bad[31m red"
        );
    }

    #[test]
    fn garbage_and_oversized_replies_are_refused() {
        for garbage in [
            &b"SSH-2.0-OpenSSH_9.6\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 OK\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 099 x\r\n\r\n",
        ] {
            assert_eq!(
                parse_reply(garbage),
                Err(ReplyProblem::NotHttp),
                "{garbage:?}"
            );
        }
        assert_eq!(
            parse_reply(b"HTTP/1.1 200 OK\r\n"),
            Err(ReplyProblem::Truncated)
        );
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'x', MAX_REPLY_HEAD));
        huge.extend(b"\r\n\r\n");
        assert_eq!(parse_reply(&huge), Err(ReplyProblem::TooLong));
    }

    #[tokio::test]
    async fn oversized_and_truncated_heads_stop_reading() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            // First: an endless head; second: a head cut short.
            let (mut a, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 256];
            let _ = a.read(&mut request).await;
            let _ = a.write_all(b"HTTP/1.1 200 OK\r\n").await;
            let _ = a.write_all(&vec![b'x'; MAX_REPLY_HEAD * 2]).await;
            let (mut b, _) = listener.accept().await.unwrap();
            let _ = b.read(&mut request).await;
            let _ = b.write_all(b"HTTP/1.1 200 OK\r\n").await;
            drop(b);
            drop(a);
        });
        let p = UpstreamProxy {
            host: "127.0.0.1".into(),
            port: addr.port(),
            authorization: None,
            no_proxy: NoProxy::default(),
        };
        let none = BTreeMap::new();
        let first = p.tunnel("a.test", 443, &none).await.unwrap_err();
        assert!(
            matches!(
                first,
                TunnelError::BadReply {
                    problem: ReplyProblem::TooLong,
                    ..
                }
            ),
            "{first}"
        );
        let second = p.tunnel("a.test", 443, &none).await.unwrap_err();
        assert!(
            matches!(
                second,
                TunnelError::BadReply {
                    problem: ReplyProblem::Truncated,
                    ..
                }
            ),
            "{second}"
        );
        server.await.unwrap();
    }

    #[test]
    fn no_proxy_matching() {
        let p = proxy(
            None,
            &[
                ".internal.test",
                "*.corp.test",
                "localhost",
                "10.0.0.0/8",
                "fd00::/8",
                "192.0.2.7",
            ],
        );
        let none: &[IpAddr] = &[];
        // Suffixes: the domain itself and its subdomains, never a longer label.
        assert!(p.bypasses("internal.test", none));
        assert!(p.bypasses("git.internal.test", none));
        assert!(p.bypasses("a.b.internal.test", none));
        assert!(!p.bypasses("notinternal.test", none));
        assert!(p.bypasses("wiki.corp.test", none));
        // Exact names and addresses.
        assert!(p.bypasses("localhost", none));
        assert!(!p.bypasses("localhost.evil.test", none));
        assert!(p.bypasses("192.0.2.7", none));
        assert!(!p.bypasses("192.0.2.8", none));
        // CIDRs: a numeric target, or every address a name resolved to.
        assert!(p.bypasses("10.1.2.3", none));
        assert!(p.bypasses("fd00::1", none));
        let internal: IpAddr = "10.9.9.9".parse().unwrap();
        let public: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(p.bypasses("build.lan.test", &[internal]));
        assert!(!p.bypasses("build.lan.test", &[internal, public]));
        assert!(!p.bypasses("build.lan.test", none));
        // Everything else goes through the proxy.
        assert!(!p.bypasses("api.example.test", &[public]));
        assert!(!proxy(None, &[]).bypasses("localhost", none));
    }

    #[test]
    fn no_proxy_refuses_a_wildcard_for_everything() {
        assert!(NoProxy::parse(&["*".to_owned()]).is_err());
        assert!(NoProxy::parse(&["10.0.0.0/99".to_owned()]).is_err());
    }
}
