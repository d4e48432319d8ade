//! The seam a bottle engine plugs into, at the level of bottles rather than engine
//! commands (DESIGN.md, "Backends"): [`Backend`] is what the CLI (and the dashboard) calls to start, attach to, list, change and tear down bottles, whatever
//! runs them. `backend-docker` is one implementation; a Kubernetes backend is the
//! next. Everything here is data and decisions: no files, processes or clock.

mod backend;
mod error;
pub mod needs;
pub mod policy_edit;
mod progress;
pub mod redact;
mod types;

pub use backend::{Backend, LogSource};
pub use error::{Error, Result};
pub use progress::{Progress, RecordedProgress};
pub use types::{
    Attached, AuditChunk, AuditCursor, AuditLog, BottleStatus, Decided, Garbage, GarbageReason,
    GcReport, PendingRequest, PolicyChange, RequestKind, ServiceStatus, TestingKnobs, UpRequest,
    parse_host_port,
};
