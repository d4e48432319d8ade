//! The manifest and the planner: `bottle.yaml` text in, validated typed plans out.
//!
//! This crate never does IO: it reads no environment, no files, no clock and spawns
//! nothing. The host environment, file contents and randomness are arguments
//! ([`HostFacts`], the slug entropy), which is what makes `bottle render` an honest
//! dry run and every test deterministic. `clippy.toml` at the workspace root enforces it.

pub mod bottle_plan;
mod dotenv;
mod interpolate;
pub mod manifest;
mod parse;
mod placeholder;
pub mod planner;
pub mod problem;
pub mod profile;
pub mod rules;
pub mod schema;
mod secret;
mod spanned;

pub use bottle_plan::*;
pub use manifest::Manifest;
pub use parse::parse_manifest;
pub use placeholder::{PLACEHOLDER_MARKER, placeholder_for};
pub use planner::{
    FileRef, HostFacts, MISSING_VALUE, ManifestPlan, MissingEnv, env_file_paths, plan_manifest,
};
pub use problem::{Problem, ProblemKind, Problems, Severity};
pub use profile::{
    AgentKind, AgentProfile, JsonMerge, McpTarget, NeededHost, PersistDir, merge_json,
};
pub use secret::{REDACTED, Secret};
pub use spanned::{SourceSpan, Spanned};
