//! The supervise channel's files: the sidecar's config and policy view, the request
//! and decision formats, and the queue the sidecar writes and the host reads.

pub mod config;
mod error;
pub mod host;
pub mod request;
pub mod store;

pub use config::{AllowView, CONFIG_FILE, CredentialView, PolicyView, SuperviseConfig};
pub use error::Error;
pub use request::{Decision, Outcome, Request, RequestKind};

/// Path of the MCP endpoint the agent's client is pointed at.
pub const MCP_PATH: &str = "/mcp";
