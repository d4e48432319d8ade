//! The supervise sidecar: the approval channel of a bottle.
//!
//! The agent (Claude Code) talks MCP to `http://supervise:8765/mcp` and
//! asks: `request_egress` for a host the egress policy blocks, `ask_human`
//! for a question, `policy` to read what is allowed. Each ask becomes a
//! request file in `queue_dir`; the human decides on the host with the CLI,
//! which (for an approved egress) changes the running egress policy
//! atomically and then writes a decision file into `decisions_dir`. The
//! waiting tool call returns the decision to the agent.
//!
//! # What the launcher must know
//!
//! - Config: `DIR/supervise.json` ([`SuperviseConfig`]); bind-mount the
//!   directory read-only. The policy view ([`PolicyView`],
//!   `DIR/policy-view.json` by default) sits in the same directory and is
//!   rewritten atomically by the launcher whenever the policy changes.
//! - `queue_dir` (default `/var/lib/supervise/queue`) is mounted writable
//!   from `STATE/<slug>/supervise/queue`; `decisions_dir` (default
//!   `/var/lib/supervise/decisions`) read-only from
//!   `STATE/<slug>/supervise/decisions`. Decisions are taken from
//!   `decisions_dir` only, so the sidecar itself cannot approve anything.
//! - Listens on `0.0.0.0:8765`; `GET /healthz` answers 200 `ok`.
//! - Audit lines (JSON) go to stdout and, if configured, to `audit_log`.
//!
//! # What the host CLI must know
//!
//! See [`host`]: list with [`host::pending_requests`], decide with
//! [`host::write_decision`] — after applying an approved egress change.

pub mod audit;
mod mcp;
mod server;
mod supervisor;

pub use sidecar_contract::supervise::{MCP_PATH, config, host, request, store};

use std::path::Path;

pub use config::{AllowView, CONFIG_FILE, CredentialView, PolicyView, SuperviseConfig};
pub use mcp::{SERVER_NAME, SUPPORTED_PROTOCOL_VERSIONS};
pub use request::{Decision, Outcome, Request, RequestKind};
pub use server::{MAX_BODY_BYTES, serve};
pub use sidecar_contract::supervise::Error;

/// Entry point of `bottle sidecar supervise --config DIR`: reads
/// `DIR/supervise.json` and serves on its own tokio runtime until SIGTERM
/// or SIGINT.
pub fn run(config_dir: &Path) -> Result<(), Error> {
    let config = SuperviseConfig::load(config_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).map_err(Error::Signal)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        eprintln!(
            "supervise: bottle {} on http://{}{MCP_PATH} (queue {}, decisions {})",
            config.bottle_slug,
            config.listen,
            config.queue_dir.display(),
            config.decisions_dir.display()
        );
        serve(config, listener, async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
        .await
    })
}
