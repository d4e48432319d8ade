//! The egress sidecar: an HTTP forward proxy (absolute-form HTTP and CONNECT)
//! that intercepts TLS with the bottle's CA, enforces the allowlist, injects
//! real credentials, blocks secret exfiltration (DLP) and internal
//! destinations (SSRF), and writes a JSON-lines audit log.
//!
//! The CLI calls [`run`]; tests and embedders use [`Proxy`].
//!
//! The config directory holds `policy.json` ([`config::EgressConfig`]), the
//! bottle CA (`ca-cert.pem`, `ca-key.pem` by default) and optionally an
//! extra upstream CA bundle. Route secrets are read from the sidecar's own
//! environment (the variable named by each route's `secret_env`). An example:
//!
//! ```json
//! {
//!   "bottle_slug": "implementer-1a2b",
//!   "listen": "0.0.0.0:3128",
//!   "audit_log": "audit.jsonl",
//!   "allow": [
//!     {"host": "api.anthropic.com"},
//!     {"host": "registry.npmjs.org", "methods": ["GET", "HEAD"]},
//!     {"host": "*.githubusercontent.com", "ports": [443]},
//!     {"host": "api.github.com", "methods": ["GET"], "path_prefixes": ["/repos/"]}
//!   ],
//!   "routes": [
//!     {"host": "api.anthropic.com", "header": "x-api-key", "format": "{token}",
//!      "secret_env": "BOT_BOTTLE_ROUTE_0", "agent_env": "ANTHROPIC_API_KEY",
//!      "placeholder": "sk-ant-api03-bottle-placeholderxxxx"}
//!   ],
//!   "dlp": {"enabled": true, "extra_patterns": []},
//!   "ssrf": {"enabled": true, "exempt_cidrs": ["172.30.0.0/24"]},
//!   "dns_sink": {"listen": "0.0.0.0:53"}
//! }
//! ```
//!
//! Body DLP streams: a chunk goes upstream only after it was scanned with the
//! overlap kept from earlier chunks, so a complete secret never leaves. A
//! finding mid-body aborts the upstream request (the upstream sees a
//! truncated request and a reset) and the client gets a 403 naming the rule.
//! If the upstream already answered before the rest of the body was sent,
//! the abort still cuts the upload, but the client keeps the answer.
//!
//! Placeholders never leave the proxy, whatever the DLP setting
//! ([`placeholder`]): after the route that applies (if any) has set its
//! header, a placeholder anywhere else in the request (host, path, query,
//! headers, trailers, body; raw or percent-encoded) refuses it with a 403
//! that names the agent's variable, where it was found and why the route did
//! not replace it (audit rule `placeholder-not-replaced:VAR`). Bodies are
//! scanned for them with the same hold-back window as DLP.
//!
//! The real credential never comes back either ([`scrub`]): responses from a
//! host that has a route are scrubbed of every route's secret (every spelling
//! DLP knows, in the status line, headers, streamed body and trailers; gzip and
//! deflate bodies decoded within a bound), each occurrence replaced by the
//! route's placeholder at the same length, whatever the DLP setting, and
//! audited (rule `credential-scrubbed:VAR`). A response from a route host that
//! cannot be scanned (another content coding) is refused with a 502, not passed.

pub mod assist;
pub mod audit;
pub mod body;
pub mod ca;
pub use sidecar_contract::egress as config;
pub mod decode;
pub mod dlp;
pub mod dns_sink;
pub mod error;
pub mod live;
pub mod path;
pub mod placeholder;
pub mod policy;
pub mod policy_watch;
pub mod proxy;
pub mod scrub;
pub mod secret;
pub mod shard;
pub mod ssrf;
pub mod upstream;
pub mod upstream_proxy;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::EgressConfig;
pub use error::Error;
pub use live::SecretSource;
pub use secret::SecretValue;

use crate::audit::AuditLog;
use crate::ca::LeafMinter;
use crate::live::load_policy;
use crate::proxy::{ProxyState, accept_loop};

/// A running proxy: its address, reload hook and shutdown.
pub struct Proxy {
    state: Arc<ProxyState>,
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    shards: Vec<std::thread::JoinHandle<()>>,
    dns_sink: Option<dns_sink::DnsSink>,
}

/// Where a proxy's accept loops run.
enum Serving {
    /// One accept loop on the caller's runtime.
    Here,
    /// This many shard threads ([`shard`]).
    Shards(usize),
}

impl Proxy {
    /// Loads `config_dir/policy.json`, the CA and the audit log, binds the
    /// listen address and starts serving on the current tokio runtime.
    pub async fn start(config_dir: &Path, secrets: SecretSource) -> Result<Self, Error> {
        Self::start_with_stdout_audit(config_dir, secrets, true).await
    }

    /// Like [`Proxy::start`]; `audit_to_stdout` off keeps test output quiet.
    pub async fn start_with_stdout_audit(
        config_dir: &Path,
        secrets: SecretSource,
        audit_to_stdout: bool,
    ) -> Result<Self, Error> {
        Self::launch(config_dir, secrets, audit_to_stdout, Serving::Here).await
    }

    /// Like [`Proxy::start`], but serves on `shards` threads of their own
    /// ([`shard`], at least one); the caller's runtime keeps the control tasks
    /// (reloads, the DNS sink). The sidecar runs [`shard::count`] of them.
    pub async fn start_sharded(
        config_dir: &Path,
        secrets: SecretSource,
        audit_to_stdout: bool,
        shards: usize,
    ) -> Result<Self, Error> {
        let shards = shards.clamp(1, shard::MAX_SHARDS);
        Self::launch(
            config_dir,
            secrets,
            audit_to_stdout,
            Serving::Shards(shards),
        )
        .await
    }

    async fn launch(
        config_dir: &Path,
        secrets: SecretSource,
        audit_to_stdout: bool,
        serving: Serving,
    ) -> Result<Self, Error> {
        let shard_count = match serving {
            Serving::Here => 1,
            Serving::Shards(n) => n,
        };
        let policy = load_policy(config_dir, &secrets, shard_count)?;
        let config = policy.config.clone();
        let resolve = |p: &Path| EgressConfig::resolve_path(config_dir, p);
        let minter = LeafMinter::load(&resolve(&config.ca_cert), &resolve(&config.ca_key))?;
        let stdout = if audit_to_stdout {
            audit::Stdout::from(config.audit_stdout)
        } else {
            audit::Stdout::Off
        };
        let audit = Arc::new(AuditLog::open_with(
            config.audit_log.as_deref().map(resolve).as_deref(),
            stdout,
            audit::AuditLimits::default(),
        )?);
        let bind_error = |source| Error::Bind {
            addr: config.listen,
            source,
        };
        let listener = std::net::TcpListener::bind(config.listen).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let state = Arc::new(ProxyState {
            config_dir: config_dir.to_path_buf(),
            policy: ArcSwap::from_pointee(policy),
            minter,
            audit: audit.clone(),
            limits: config.limits.clone(),
            secrets,
            shards: shard_count,
            connection_slots: Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_connections.max(1),
            )),
            reloads: Mutex::new(None),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut inboxes = Vec::new();
        let mut shards = Vec::new();
        if let Serving::Shards(n) = serving {
            for index in 0..n {
                match shard::spawn(index, state.clone()) {
                    Ok((inbox, thread)) => {
                        inboxes.push(inbox);
                        shards.push(thread);
                    }
                    Err(e) => {
                        // Dropping the inboxes stops the shards already started.
                        drop(inboxes);
                        join_shards(shards).await;
                        return Err(e);
                    }
                }
            }
        }
        let listener = TcpListener::from_std(listener).map_err(bind_error)?;
        let mut tasks = vec![tokio::spawn(accept_loop(
            state.clone(),
            listener,
            shutdown_rx.clone(),
            inboxes,
        ))];
        let dns_sink = match &config.dns_sink {
            Some(sink) => {
                let (sink, sink_tasks) = dns_sink::start(sink.listen, audit, shutdown_rx).await?;
                tasks.extend(sink_tasks);
                Some(sink)
            }
            None => None,
        };
        Ok(Self {
            state,
            local_addr,
            shutdown,
            tasks,
            shards,
            dns_sink,
        })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The DNS sink's bound addresses, if the config asked for one.
    pub fn dns_sink(&self) -> Option<&dns_sink::DnsSink> {
        self.dns_sink.as_ref()
    }

    /// Re-reads the policy file; returns the new version, or the error
    /// while the previous policy stays in force.
    pub fn reload(&self) -> Result<String, Error> {
        self.state.reload()
    }

    /// The running policy's version (hex SHA-256 of the file).
    pub fn policy_version(&self) -> String {
        self.state.policy.load().version.clone()
    }

    /// Reloads the policy whenever the process receives SIGHUP.
    pub fn reload_on_sighup(&self) -> Result<(), Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).map_err(|source| Error::Signal {
            signal: "SIGHUP",
            source,
        })?;
        let state = self.state.clone();
        let mut shutdown = self.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    received = hangups.recv() => {
                        if received.is_none() {
                            return;
                        }
                        if let Err(e) = state.reload() {
                            eprintln!("egress: reload refused: {e}");
                        }
                    }
                }
            }
        });
        Ok(())
    }

    /// Polls the policy file every `every` and reloads it when its content
    /// changed ([`policy_watch`]): Kubernetes swaps a ConfigMap's files and
    /// sends no SIGHUP. The sidecar uses [`policy_watch::POLL_INTERVAL`].
    pub fn watch_policy_file(&self, every: Duration) {
        tokio::spawn(policy_watch::poll_policy(
            self.state.clone(),
            every,
            self.shutdown.subscribe(),
        ));
    }

    /// Stops accepting; in-flight tunnels end with the runtime.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        join_shards(self.shards).await;
    }
}

/// Waits for shard threads to end (off the async threads).
async fn join_shards(shards: Vec<std::thread::JoinHandle<()>>) {
    if shards.is_empty() {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || {
        for thread in shards {
            let _ = thread.join();
        }
    })
    .await;
}

/// The sidecar entry point: builds a tokio runtime, serves the policy in
/// `config_dir` (secrets from the process environment), reloads on SIGHUP and
/// when the policy file's content changes, and returns on SIGTERM or SIGINT.
pub fn run(config_dir: &Path) -> Result<(), Error> {
    // The control runtime (signals, the policy watch, the DNS sink); traffic is
    // served by the shards' own threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Runtime { source })?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).map_err(|source| Error::Signal {
            signal: "SIGTERM",
            source,
        })?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(|source| Error::Signal {
            signal: "SIGINT",
            source,
        })?;
        let proxy =
            Proxy::start_sharded(config_dir, SecretSource::ProcessEnv, true, shard::count())
                .await?;
        proxy.reload_on_sighup()?;
        proxy.watch_policy_file(policy_watch::POLL_INTERVAL);
        eprintln!(
            "egress: listening on {} with policy version {}",
            proxy.local_addr(),
            proxy.policy_version()
        );
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        proxy.shutdown().await;
        Ok(())
    })
}
