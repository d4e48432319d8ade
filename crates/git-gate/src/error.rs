//! Errors of the gate, one variant per operation, each naming the path or
//! command involved so an operator can act on the message alone.

use std::path::PathBuf;

/// Everything that can stop the gate or fail one of its git operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("reading git-gate config {path}: {source}")]
    ReadConfig {
        /// The config file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid JSON for [`crate::config::GateConfig`].
    #[error("parsing git-gate config {path}: {source}")]
    ParseConfig {
        /// The config file.
        path: PathBuf,
        /// The JSON error, with line and column.
        source: serde_json::Error,
    },
    /// The config parsed but breaks a rule serde cannot express.
    #[error("invalid git-gate config {path}: {reason}")]
    InvalidConfig {
        /// The config file.
        path: PathBuf,
        /// Which rule was broken.
        reason: String,
    },
    /// A mirror directory or its hook could not be written.
    #[error("preparing mirror {path}: {source}")]
    PrepareMirror {
        /// The mirror (or file inside it) being written.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The audit log could not be opened or written.
    #[error("writing audit log {path}: {source}")]
    AuditLog {
        /// The audit log file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A child process (git, mkfifo) could not be started.
    #[error("starting `{command}`: {source}")]
    Spawn {
        /// The command line, without secrets (the gate never passes any).
        command: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A git command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    GitCommand {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr (ssh and git never print key contents).
        stderr: String,
    },
    /// The per-push pipes between the pre-receive hook and the gate failed.
    #[error("exchanging with the pre-receive hook through {path}: {source}")]
    HookExchange {
        /// The hook pipe directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
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
