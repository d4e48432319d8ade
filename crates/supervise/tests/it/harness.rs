//! A sidecar on 127.0.0.1 with its state in a temp dir, and a small HTTP/1.1
//! JSON-RPC client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use supervise::{AllowView, CredentialView, Decision, PolicyView, SuperviseConfig, host};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Bottle {
    state: tempfile::TempDir,
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), supervise::Error>>,
}

impl Bottle {
    /// Lays out `STATE/it-bottle/supervise/{config,queue,decisions}` as the
    /// launcher does and serves on an ephemeral loopback port.
    pub async fn start(decision_timeout_secs: u64) -> Self {
        Self::start_with(decision_timeout_secs, |_| {}).await
    }

    /// [`Bottle::start`] with the config adjusted by `adjust` before it is written.
    pub async fn start_with(
        decision_timeout_secs: u64,
        adjust: impl FnOnce(&mut SuperviseConfig),
    ) -> Self {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("it-bottle/supervise");
        for sub in ["config", "queue", "decisions"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let mut config = SuperviseConfig::new("it-bottle");
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.queue_dir = host::queue_dir(&dir);
        config.decisions_dir = host::decisions_dir(&dir);
        config.audit_log = Some(state.path().join("supervise.jsonl"));
        config.decision_timeout_secs = decision_timeout_secs;
        adjust(&mut config);
        config.write(&dir.join("config")).unwrap();
        let (stop, stopped) = oneshot::channel();
        let bottle_config = SuperviseConfig::load(&dir.join("config")).unwrap();
        let listener = TcpListener::bind(bottle_config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        let task = tokio::spawn(supervise::serve(bottle_config, listener, async move {
            let _ = stopped.await;
        }));
        let bottle = Self {
            state,
            addr,
            stop,
            task,
        };
        bottle.write_view("v1", "api.anthropic.com");
        bottle
    }

    /// `STATE/<slug>/supervise`, as the host CLI sees it.
    pub fn dir(&self) -> PathBuf {
        self.state.path().join("it-bottle/supervise")
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir().join("config")
    }

    pub fn write_view(&self, version: &str, host: &str) {
        let view = PolicyView {
            allow: vec![AllowView {
                host: host.into(),
                ports: Some(vec![443]),
                methods: None,
                paths: None,
            }],
            credentials: vec![CredentialView {
                host: host.into(),
                header: "x-api-key".into(),
            }],
            dlp: true,
            ssrf: true,
            version: version.into(),
        };
        view.write(&self.config_dir().join("policy-view.json"))
            .unwrap();
    }

    pub fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state.path().join("supervise.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    pub async fn post(&self, message: &Value) -> (StatusCode, HeaderMap, Bytes) {
        http(
            self.addr,
            "POST",
            "/mcp",
            message.to_string().into_bytes(),
            &[],
        )
        .await
    }

    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        rpc_at(self.addr, method, params).await
    }

    /// `tools/call`; returns the result (panics on a JSON-RPC error).
    pub async fn call(&self, tool: &str, arguments: Value) -> Value {
        call_at(self.addr, tool, arguments).await
    }

    /// Stops the server and checks it shut down cleanly.
    pub async fn stop(self) {
        self.stop_and_read_audit().await;
    }

    /// [`Bottle::stop`], then the audit lines as the stopped sidecar left them.
    pub async fn stop_and_read_audit(self) -> Vec<Value> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
        std::fs::read_to_string(self.state.path().join("supervise.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub async fn rpc_at(addr: SocketAddr, method: &str, params: Value) -> Value {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let (status, headers, body) =
        http(addr, "POST", "/mcp", message.to_string().into_bytes(), &[]).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json");
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["jsonrpc"], "2.0");
    assert_eq!(reply["id"], id);
    reply
}

pub async fn call_at(addr: SocketAddr, tool: &str, arguments: Value) -> Value {
    let reply = rpc_at(
        addr,
        "tools/call",
        json!({"name": tool, "arguments": arguments}),
    )
    .await;
    assert!(reply.get("error").is_none(), "{reply}");
    reply["result"].clone()
}

/// One HTTP/1.1 request on a fresh loopback connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    assert!(addr.ip().is_loopback(), "tests talk to loopback only");
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "supervise:8765")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

/// Polls the host API until exactly one request is pending.
pub async fn wait_for_pending(dir: &std::path::Path) -> supervise::Request {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pending = host::pending_requests(dir).unwrap();
        if let [request] = pending.as_slice() {
            return request.clone();
        }
        assert!(
            pending.is_empty(),
            "more than one pending request: {pending:?}"
        );
        assert!(Instant::now() < deadline, "no request was queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Plays the human: waits for the pending request, waits `delay`, then
/// writes `decide(request)` through `host::write_decision`.
pub fn approve_when_pending(
    dir: PathBuf,
    delay: Duration,
    decide: impl FnOnce(&supervise::Request) -> Decision + Send + 'static,
) -> JoinHandle<supervise::Request> {
    tokio::spawn(async move {
        let request = wait_for_pending(&dir).await;
        assert_eq!(
            host::find_request(&dir, &request.id).unwrap().as_ref(),
            Some(&request)
        );
        tokio::time::sleep(delay).await;
        host::write_decision(&dir, &decide(&request)).unwrap();
        request
    })
}

/// Writes `value` as JSON to `path` by rename, so the sidecar never reads
/// half a file.
pub fn write_atomic(path: &std::path::Path, value: &impl serde::Serialize) {
    let temp = path.with_extension("tmp-it");
    std::fs::write(&temp, serde_json::to_vec(value).unwrap()).unwrap();
    std::fs::rename(&temp, path).unwrap();
}
