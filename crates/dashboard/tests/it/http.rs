//! A small HTTP/1.1 client over a raw socket: every header, Host included, is the
//! test's to choose.

use std::sync::Arc;
use std::time::Duration;

use dashboard::{Dashboard, Options};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fake::Fake;

const WAIT: Duration = Duration::from_secs(10);

pub struct Client {
    pub port: u16,
    pub token: String,
    csrf: tokio::sync::OnceCell<String>,
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub fn assert_secure_headers(&self) {
        assert_eq!(
            self.header("content-security-policy")
                .map(|c| c.starts_with("default-src 'self'")),
            Some(true)
        );
        assert_eq!(self.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(self.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(self.header("cache-control"), Some("no-store"));
        assert_eq!(self.header("x-frame-options"), Some("DENY"));
    }
}

fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..at]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&rest[at + 2..at + 2 + size]);
        rest = &rest[at + 2 + size + 2..];
    }
    out
}

fn parse(bytes: &[u8]) -> Response {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let raw = &bytes[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

impl Client {
    /// A dashboard on a free loopback port over `fake`, polling every 20 ms.
    pub async fn start(fake: Fake) -> (Fake, Client) {
        let handle = fake.clone();
        let factory: dashboard::BackendFactory =
            Arc::new(move || Ok(Box::new(handle.clone()) as Box<dyn backend_api::Backend>));
        let dashboard = Dashboard::bind(
            Options {
                port: 0,
                poll_interval: Duration::from_millis(20),
            },
            factory,
        )
        .await
        .unwrap();
        let port = dashboard.port();
        let url = dashboard.url();
        assert!(url.starts_with(&format!("http://127.0.0.1:{port}/?token=")));
        let token = url.rsplit('=').next().unwrap().to_owned();
        tokio::spawn(dashboard.serve(std::future::pending()));
        (
            fake,
            Client {
                port,
                token,
                csrf: tokio::sync::OnceCell::new(),
            },
        )
    }

    pub fn cookie_with(&self, value: String) -> String {
        format!("bottle_dashboard_{}={value}", self.port)
    }

    pub fn cookie(&self) -> String {
        self.cookie_with(self.token.clone())
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port)).await.unwrap()
    }

    pub async fn raw_with_host(
        &self,
        method: &str,
        path: &str,
        host: Option<&str>,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        let mut request = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
        if let Some(host) = host {
            request.push_str(&format!("host: {host}\r\n"));
        }
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
        let mut stream = self.connect().await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut bytes = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut bytes))
            .await
            .expect("a whole response in time")
            .unwrap();
        parse(&bytes)
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        let host = format!("127.0.0.1:{}", self.port);
        self.raw_with_host(method, path, Some(&host), headers, body)
            .await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.raw("GET", path, &[("cookie", &self.cookie())], "")
            .await
    }

    /// The CSRF token, as the page carries it.
    pub async fn csrf(&self) -> String {
        self.csrf
            .get_or_init(|| async {
                let page = self.get("/").await.body;
                let start = page.find("name=\"csrf-token\" content=\"").unwrap() + 27;
                page[start..start + 64].to_owned()
            })
            .await
            .clone()
    }

    pub async fn post(&self, path: &str, body: &str) -> Response {
        let csrf = self.csrf().await;
        self.raw(
            "POST",
            path,
            &[
                ("cookie", &self.cookie()),
                ("x-csrf-token", &csrf),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    pub async fn state(&self) -> Value {
        self.get("/api/state").await.json()
    }

    /// The state once `ready` holds (the poller runs every 20 ms).
    pub async fn wait_state(&self, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let state = self.state().await;
            if ready(&state) {
                return state;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never ready: {state}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn events(&self) -> Events {
        let mut stream = self.connect().await;
        let request = format!(
            "GET /api/events HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncookie: {}\r\naccept: text/event-stream\r\n\r\n",
            self.port,
            self.cookie()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        Events {
            stream,
            seen: String::new(),
        }
    }
}

/// A server-sent event stream, read as text.
pub struct Events {
    stream: TcpStream,
    seen: String,
}

impl Events {
    /// Reads until `needle` shows up; returns what was read up to and including it,
    /// and drops that from the buffer.
    pub async fn read_until(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(at) = self.seen.find(needle) {
                let end = at + needle.len();
                let read = self.seen[..end].to_owned();
                self.seen.drain(..end);
                return read;
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {needle} in time; read: {}", self.seen))
                .unwrap();
            assert!(n > 0, "stream closed before {needle}");
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}
