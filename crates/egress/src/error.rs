//! The crate's error type: one variant per operation that can fail, carrying
//! the path, address or host involved so the operator can act on it.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can stop the sidecar from starting or reloading.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy file could not be read.
    #[error("cannot read egress policy {path}: {source}")]
    ReadPolicy {
        /// The file that failed.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The policy file is not valid JSON for the policy schema.
    #[error("cannot parse egress policy {path}: {source}")]
    ParsePolicy {
        /// The file that failed.
        path: PathBuf,
        /// The serde error (line and column included).
        source: serde_json::Error,
    },
    /// The policy parsed but is semantically invalid.
    #[error("invalid egress policy {path}: {reason}")]
    InvalidPolicy {
        /// The file that failed.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A route names an environment variable that is not set in the sidecar.
    #[error("route for host {host} needs environment variable {var}, which is not set")]
    MissingSecretEnv {
        /// The route's host.
        host: String,
        /// The missing variable name.
        var: String,
    },
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadPem {
        /// The file that failed.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A certificate or key file did not contain what was expected.
    #[error("cannot use {path}: {reason}")]
    ParsePem {
        /// The file that failed.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A leaf certificate could not be minted for an intercepted host.
    #[error("cannot mint a leaf certificate for {host}: {reason}")]
    MintLeaf {
        /// The host the leaf was for.
        host: String,
        /// The rcgen or rustls error.
        reason: String,
    },
    /// The upstream TLS client configuration could not be built.
    #[error("cannot build the upstream TLS configuration: {reason}")]
    UpstreamTls {
        /// The rustls error.
        reason: String,
    },
    /// The audit log file could not be opened.
    #[error("cannot open audit log {path}: {source}")]
    OpenAuditLog {
        /// The file that failed.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// The tokio runtime could not be built.
    #[error("cannot start the async runtime: {source}")]
    Runtime {
        /// The IO error.
        source: std::io::Error,
    },
    /// A signal handler could not be installed.
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        /// Which signal.
        signal: &'static str,
        /// The IO error.
        source: std::io::Error,
    },
}
