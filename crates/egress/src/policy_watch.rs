//! The policy file is polled as well as reloaded on SIGHUP: on Kubernetes
//! no signal crosses pods, and a ConfigMap mount changes `policy.json` by
//! swapping the `..data` symlink it points through (a new inode, never
//! written in place: inotify on the file and its mtime cannot be trusted).
//! So every tick reads the file's bytes through the links and hashes them as
//! the version is hashed; content that is neither the running version nor
//! the one last refused is reloaded exactly as SIGHUP does. A bad file is
//! reported once, and a file missing mid-swap is simply retried.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::error::Error;
use crate::live::{policy_version, read_policy};
use crate::proxy::ProxyState;

/// How often the sidecar looks at its policy file: well inside the
/// launcher's confirmation timeout, cheap for a file of a few KiB.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

impl ProxyState {
    /// Reloads if the policy file's content is neither the running version
    /// nor the version last refused. `None` when there is nothing to do,
    /// also when the file cannot be read (kubelet mid-swap): the next call
    /// retries, and the running policy stays.
    pub fn reload_if_changed(&self) -> Option<Result<String, Error>> {
        let mut refused = self.reloads.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = read_policy(&self.config_dir).ok()?;
        let version = policy_version(&bytes);
        if version == self.policy.load().version {
            // Back to the running file: a bad file after it is news again.
            *refused = None;
            return None;
        }
        if refused.as_deref() == Some(version.as_str()) {
            return None;
        }
        Some(self.swap_in(&bytes, &mut refused))
    }
}

/// Calls [`ProxyState::reload_if_changed`] every `every` until `shutdown`
/// flips (or its sender is gone); refusals go to stderr as SIGHUP's do.
pub async fn poll_policy(
    state: Arc<ProxyState>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticks.tick() => {}
        }
        if let Some(Err(e)) = state.reload_if_changed() {
            eprintln!("egress: changed policy file refused: {e}");
        }
    }
}
