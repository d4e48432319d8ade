//! The [`Backend`] trait: bottles, not engine commands.

use std::time::Duration;

use crate::error::Result;
use crate::progress::Progress;
use crate::types::{
    Attached, AuditChunk, AuditCursor, AuditLog, BottleStatus, Decided, GcReport, PendingRequest,
    PolicyChange, UpRequest,
};

/// Where a line of `logs` comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSource {
    /// An audit log (egress decisions, git-gate pushes), by its name.
    Audit(&'static str),
    /// The services' own output.
    Services,
}

/// A place bottles run: what the CLI and the dashboard call. Implementations own
/// everything engine-specific (networks, CAs, images, config files and how a running
/// bottle picks up a change); the caller only ever names bottles by slug.
pub trait Backend {
    /// Which engine this is (`docker`, `fake`), for messages.
    fn name(&self) -> &'static str;

    /// Makes sure what this launcher's bottles run on is there (the sidecar image,
    /// built on first use), with progress; returns the sidecar reference for
    /// [`UpRequest::sidecar_image`].
    fn prepare(&self, progress: &mut dyn Progress) -> Result<String>;

    /// Starts a bottle and provisions it; returns when it is ready. On failure or
    /// when `interrupted` turns true, whatever was made is removed again.
    fn up(
        &self,
        request: &UpRequest,
        progress: &mut dyn Progress,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Attached>;

    /// Runs `command` in the bottle's agent, attached to this terminal (in `workdir`
    /// when given); returns its exit status.
    fn attach(&self, slug: &str, command: &[String], workdir: Option<&str>) -> Result<i32>;

    /// Every bottle this backend knows, sorted by slug.
    fn list(&self) -> Result<Vec<BottleStatus>>;

    /// One bottle, or [`crate::Error::UnknownBottle`].
    fn find(&self, slug: &str) -> Result<BottleStatus> {
        self.list()?
            .into_iter()
            .find(|b| b.slug == slug)
            .ok_or_else(|| crate::Error::UnknownBottle {
                slug: slug.to_owned(),
            })
    }

    /// The bottle's audit logs, then its services' output (followed when `follow`),
    /// line by line, with its secrets redacted.
    fn logs(&self, slug: &str, follow: bool, sink: &mut dyn FnMut(LogSource, &str)) -> Result<()>;

    /// Reads `log` of bottle `slug` on from `from` (the default cursor: the start of
    /// its current file): whole lines only, its secrets redacted, at most a bounded
    /// amount per call ([`AuditChunk::more`] says there is more). Copes with the log
    /// being rotated or truncated between calls. Polling this is how the dashboard
    /// follows a bottle's traffic on any backend.
    fn audit(&self, slug: &str, log: AuditLog, from: AuditCursor) -> Result<AuditChunk>;

    /// Tears the bottle down; goes on past failures and returns them all.
    fn down(&self, slug: &str) -> Result<Vec<crate::Error>>;

    /// Forgets what `agent` keeps across bottles (sessions, memory); whether there
    /// was anything.
    fn purge_agent(&self, agent: &str) -> Result<bool>;

    /// Removes (or with `dry_run` lists) what no live bottle owns.
    fn gc(&self, dry_run: bool) -> Result<GcReport>;

    /// Changes a running bottle's egress policy atomically; returns the policy
    /// version the proxy confirmed it runs, within `timeout`.
    fn apply_egress(&self, slug: &str, change: &PolicyChange, timeout: Duration) -> Result<String>;

    /// The agents' pending requests (of one bottle, or all), oldest first.
    fn requests(&self, slug: Option<&str>) -> Result<Vec<PendingRequest>>;

    /// Decides request `id` (a unique prefix will do): an approved egress request is
    /// applied and confirmed before the agent hears; a question is answered by `note`.
    fn decide(&self, id: &str, approve: bool, note: Option<String>) -> Result<Decided>;
}
