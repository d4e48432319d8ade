//! The git gate: the bottle's git sidecar.
//!
//! The agent speaks plain smart HTTP to the gate
//! (`http://GATE:9418/NAME.git`); the gate holds the SSH keys, keeps a bare
//! mirror per upstream, refreshes it from the upstream before every fetch,
//! and forwards pushes only after checking each ref update against the
//! upstream's policy (`push_refs`, `allow_force_push`, `allow_delete`,
//! `read_only`). Every fetch and push leaves one JSON line in the audit log.
//!
//! # What the launcher must know
//!
//! - Config: `DIR/git-gate.json` ([`GateConfig`]); bind-mount the directory.
//! - Listens on `0.0.0.0:9418` by default (plain HTTP, internal network
//!   only). The agent's remote for upstream `NAME` is
//!   `http://<gate-host>:9418/NAME.git`. `GET /healthz` answers 200.
//! - Each `key_path` must be readable by the gate's user and mode 0600 (ssh
//!   refuses group/world-readable keys); `known_hosts_path` must list the
//!   upstream's host key (`[host]:port KEY` for non-22 ports). Unknown host
//!   keys are refused, never learned.
//! - `mirrors_dir` (default `/var/lib/git-gate`) must be writable and may be
//!   a volume: mirrors are adopted on restart. The temp dir (`$TMPDIR` or
//!   `/tmp`) must be writable: each push gets a private pipe directory.
//! - The image needs `git`, `ssh` (openssh-client), `sh`, `cat` and
//!   `mkfifo` on `PATH`.
//! - Audit lines go to stdout and, if configured, to `audit_log`.
//!
//! # How a push is checked
//!
//! `git receive-pack` receives into the mirror under the upstream's lock;
//! its pre-receive hook (see `hook.rs`) hands the ref updates to this
//! process, which applies the policy to every ref, pushes the whole update
//! to the upstream with `--force-with-lease=REF:OLD` per ref, and only then
//! lets receive-pack move the mirror's refs. A refusal names the rule and
//! the ref (`remote: git-gate: refs/heads/main: push refused: not in
//! push_refs [refs/heads/agent/*]`); one refused ref refuses the whole push.

pub mod audit;
pub mod config;
mod error;
mod git;
mod hook;
mod mirror;
pub mod policy;
mod push;
mod server;
mod service;

use std::path::Path;

pub use config::{GateConfig, UpstreamConfig};
pub use error::Error;
pub use server::serve;

/// Entry point of `bottle sidecar git-gate --config DIR`: reads
/// `DIR/git-gate.json`, prepares the mirrors and serves on its own tokio
/// runtime until SIGTERM or SIGINT.
pub fn run(config_dir: &Path) -> Result<(), Error> {
    let config = config::load(config_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
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
            "git-gate: serving {} upstream(s) on http://{}",
            config.upstreams.len(),
            config.listen
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
