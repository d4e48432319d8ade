//! Errors of the sidecar and of the host-side file API, each naming the
//! path or id involved so an operator can act on the message alone.

use std::path::PathBuf;

/// Everything that can stop the sidecar or fail a host-side operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("reading supervise config {path}: {source}")]
    ReadConfig {
        /// The config file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid JSON for [`crate::supervise::SuperviseConfig`].
    #[error("parsing supervise config {path}: {source}")]
    ParseConfig {
        /// The config file.
        path: PathBuf,
        /// The JSON error, with line and column.
        source: serde_json::Error,
    },
    /// The config parsed but breaks a rule serde cannot express.
    #[error("invalid supervise config {path}: {reason}")]
    InvalidConfig {
        /// The config file.
        path: PathBuf,
        /// Which rule was broken.
        reason: String,
    },
    /// A file or directory could not be read, written or listed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`reading`, `writing`, `listing`, …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A request, decision or policy-view file is not valid JSON for its type.
    #[error("parsing {path}: {source}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The JSON error, with line and column.
        source: serde_json::Error,
    },
    /// A request or decision file parsed but breaks a rule of its format.
    #[error("invalid {path}: {reason}")]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// Which rule was broken.
        reason: String,
    },
    /// A request id is not 32 lowercase hex digits.
    #[error("`{0}` is not a request id (32 lowercase hex digits)")]
    BadId(String),
    /// No request with this id (or id prefix) is queued.
    #[error("no supervise request `{0}`")]
    NoSuchRequest(String),
    /// An id prefix matches more than one request.
    #[error("request id prefix `{prefix}` matches {count} requests; give more digits")]
    AmbiguousId {
        /// The prefix given.
        prefix: String,
        /// How many requests it matches.
        count: usize,
    },
    /// The request has been decided already; decisions are final.
    #[error("request {0} already has a decision")]
    DecisionExists(String),
    /// The decision does not fit its request (wrong outcome for the kind, …).
    #[error("invalid decision for request {id}: {reason}")]
    InvalidDecision {
        /// The request id.
        id: String,
        /// Which rule was broken.
        reason: String,
    },
    /// The audit log could not be opened.
    #[error("opening audit log {path}: {source}")]
    AuditLog {
        /// The audit log file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The agent has as many requests pending as the bottle allows.
    #[error(
        "too many pending requests ({pending} of at most {max}): wait for the human to answer \
         the ones you asked; asking again for something already pending joins it"
    )]
    TooManyPending {
        /// Requests pending now.
        pending: usize,
        /// The cap (`max_pending`).
        max: usize,
    },
    /// The agent queued as many new requests in the last minute as the bottle allows.
    #[error(
        "slow down: {count} requests in the last minute (at most {max} a minute); \
         try again in {retry_after_secs} s"
    )]
    TooManyRequests {
        /// New requests queued in the last 60 s.
        count: usize,
        /// The limit (`max_requests_per_minute`).
        max: usize,
        /// When the oldest of them leaves the window.
        retry_after_secs: u64,
    },
    /// `/dev/urandom` could not be read.
    #[error("reading /dev/urandom: {0}")]
    Random(std::io::Error),
    /// The tokio runtime could not be built.
    #[error("building the tokio runtime: {0}")]
    Runtime(std::io::Error),
    /// The listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The configured listen address.
        addr: std::net::SocketAddr,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// SIGTERM/SIGINT handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signal(std::io::Error),
}

impl Error {
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
