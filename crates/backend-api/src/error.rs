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
