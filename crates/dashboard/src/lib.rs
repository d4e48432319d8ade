//! `bottle dashboard`: every bottle, its traffic and its agents' questions on one
//! local web page, with live updates over server-sent events.
//!
//! The page is a thin view over [`backend_api::Backend`]: it lists, follows the audit
//! logs, approves, allows and tears down with the same calls the CLI makes; nothing
//! here re-implements them. The backend is blocking (docker CLI, its own runtime on
//! Kubernetes), so it runs on two threads of its own ([`lanes`]): one that polls, one
//! that acts, so a slow `down` never stalls the live view.
//!
//! Security (`auth`): the server binds 127.0.0.1 only; every request needs the random
//! access token (in the URL once, then an HttpOnly SameSite=Strict cookie); the Host
//! header must name this loopback port (DNS rebinding); state-changing requests need
//! the per-process CSRF token from the page and a matching Origin when one is sent;
//! the page renders agent text with `textContent` only, under a strict CSP.

pub mod always;
pub mod assets;
pub mod auth;
pub mod events;
pub mod lanes;
pub mod routes;
pub mod views;

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use lanes::BackendFactory;

/// The port `bottle dashboard` uses when none is given.
pub const DEFAULT_PORT: u16 = 7878;

/// Why the dashboard could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The loopback port is taken (or not ours to bind).
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    /// The tokens could not be drawn from the OS's random source.
    #[error("reading random bytes for the access token: {0}")]
    Random(#[source] std::io::Error),
    /// The async runtime could not start.
    #[error("starting the dashboard's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The backend could not be opened (for the poller or for actions).
    #[error("opening the backend: {0}")]
    Backend(String),
    /// A backend thread is gone (it panicked): the dashboard cannot go on.
    #[error("the backend thread stopped")]
    BackendGone,
}

/// How the dashboard runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The loopback port (0: any free one).
    pub port: u16,
    /// How often bottles, requests and audit logs are polled.
    pub poll_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// A dashboard bound to its port, not yet serving.
pub struct Dashboard {
    listener: TcpListener,
    app: Arc<routes::App>,
    poll_interval: Duration,
}

impl Dashboard {
    /// Binds 127.0.0.1:`options.port`, draws the tokens and opens the backend twice
    /// (poll and act lanes) with `backend`.
    pub async fn bind(options: Options, backend: BackendFactory) -> Result<Self, Error> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, options.port)))
            .await
            .map_err(|source| Error::Bind {
                port: options.port,
                source,
            })?;
        let port = listener
            .local_addr()
            .map_err(|source| Error::Bind {
                port: options.port,
                source,
            })?
            .port();
        let tokens = auth::Tokens::generate(port).map_err(Error::Random)?;
        let lanes = lanes::Lanes::open(backend)?;
        let app = Arc::new(routes::App::new(tokens, lanes));
        Ok(Self {
            listener,
            app,
            poll_interval: options.poll_interval,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.app.tokens.port()
    }

    /// The URL to open: loopback, this port, with the access token.
    pub fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/?token={}",
            self.port(),
            self.app.tokens.access()
        )
    }

    /// Polls the backend and serves the page until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let poller = tokio::spawn(events::poll(Arc::clone(&self.app), self.poll_interval));
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while connections.try_join_next().is_some() {}
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => {
                    let Ok((stream, _peer)) = accepted else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let app = Arc::clone(&self.app);
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let app = Arc::clone(&app);
                            async move { Ok::<_, Infallible>(routes::handle(&app, request).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(Duration::from_secs(30))
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        }
        poller.abort();
        connections.abort_all();
        Ok(())
    }
}

/// Runs the dashboard on a runtime of its own until Ctrl-C: binds, calls `ready`
/// with the URL (the CLI prints it and may open a browser), then serves.
pub fn run(
    options: Options,
    backend: BackendFactory,
    ready: impl FnOnce(&str),
) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async move {
        let dashboard = Dashboard::bind(options, backend).await?;
        ready(&dashboard.url());
        dashboard
            .serve(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })
}
