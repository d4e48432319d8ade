//! Why a backend operation failed: one typed variant per kind of failure, each naming
//! what it acted on, so callers branch on variants, never on message text.

use std::path::PathBuf;

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The docker CLI is missing or the engine does not answer.
    #[error("no Docker engine: {detail}")]
    NoEngine { detail: String },
    /// Neither `docker compose` nor `docker-compose` works.
    #[error("neither `docker compose` (v2) nor `docker-compose` (v1) is installed")]
    NoCompose,
    /// The compose tool asked for (`BOT_BOTTLE_COMPOSE`) is not installed.
    #[error(
        "`{command}` is not installed, and BOT_BOTTLE_COMPOSE asks for it; unset it to use what is installed"
    )]
    ComposeMissing { command: &'static str },
    /// The engine is older than bot-bottle supports.
    #[error(
        "the engine ({found}) speaks Engine API {api}; bot-bottle needs {needed} or newer (Docker 20.10+)"
    )]
    EngineTooOld {
        found: String,
        api: String,
        needed: &'static str,
    },
    /// A network's subnet overlaps one the engine already has.
    #[error("subnet {subnet} overlaps a network the engine already has")]
    SubnetOverlap { subnet: String },
    /// A docker or compose command failed.
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    /// A container name is taken and the agent pinned it.
    #[error(
        "container name `{name}` is already in use, and the manifest pins it (`container_name`); remove the other container or unpin the name"
    )]
    NameConflict { name: String },
    /// A file system operation failed.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bottle CA could not be minted.
    #[error("minting the bottle CA: {0}")]
    Ca(String),
    /// A bottle the command names does not exist.
    #[error("no bottle `{slug}`; `bottle ls` lists the running ones")]
    UnknownBottle { slug: String },
    /// A policy change was refused.
    #[error("policy change refused: {0}")]
    BadPolicyChange(String),
    /// The host an allow names is already allowed (an approval that raced a manual
    /// `bottle egress allow`, say): nothing to change.
    #[error("policy change refused: {target} is already allowed")]
    AlreadyAllowed { target: String },
    /// A wait ran out of time.
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout { what: String, seconds: u64 },
    /// Data on disk did not have the expected shape.
    #[error("reading `{}`: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    /// A file the agent image ships cannot be merged into (provisioning never replaces
    /// one).
    #[error("cannot provision `{path}` in the agent container: {detail}")]
    AgentFile { path: String, detail: String },
    /// No base image can be had: no registry answered, and debootstrap is missing
    /// (`needs_root: false`) or this user is not root (`needs_root: true`).
    #[error("no registry is reachable to pull the base image from, and {}: {fix}", if *needs_root { "building it with debootstrap needs root" } else { "debootstrap is not installed to build it" })]
    NoBaseSource { needs_root: bool, fix: String },
    /// Something is still mounted inside a directory that must be removed.
    #[error(
        "{mount} is still mounted inside a root file system left by an interrupted run: `umount` it, then rerun"
    )]
    StaleMount { mount: String },
    /// The executable changed while it was being copied into an image.
    #[error("{path} changed while it was copied (reinstalled?): run the command again")]
    BinaryChanged { path: String },
    /// A service of a bottle that must run for this does not.
    #[error("the {role} container of {slug} is not running")]
    ServiceNotRunning { slug: String, role: String },
    /// A bottle whose launch stopped before this was there.
    #[error("{slug} has no {what} (its launch did not get that far)")]
    Incomplete { slug: String, what: &'static str },
    /// The Kubernetes API server refused a request (status code and reason as it
    /// gave them: `AlreadyExists`, `Forbidden`, `NotFound`, ...).
    #[error("the Kubernetes API refused {action}: {code} {reason}: {message}")]
    ClusterApi {
        action: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// The Kubernetes API server could not be reached or answered nonsense.
    #[error("the Kubernetes API is unreachable ({action}): {detail}")]
    ClusterUnreachable { action: String, detail: String },
    /// The manifest asks for something this version cannot run yet.
    #[error("{0}")]
    Unsupported(String),
    /// The launch was interrupted (Ctrl-C, SIGTERM).
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    /// Wraps an IO error with what was being done to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// Result of backend operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
