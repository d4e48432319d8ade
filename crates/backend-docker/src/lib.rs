//! Every side effect of running a bottle, behind the [`Engine`] trait.
//!
//! [`launch::launch`] runs DESIGN.md's launch sequence against any backend and tears
//! down in reverse on failure; [`ops`] holds the lifecycle commands (`ls`, `down`,
//! `gc`, `egress allow|deny`); [`images`] builds the base and sidecar images from the
//! running executable; [`docker::DockerEngine`] drives the docker CLI;
//! [`fake::FakeEngine`] is the in-memory engine the CLI tests use.

pub mod bottles;
pub mod ca;
pub mod demo;
pub mod docker;
pub mod engine;
pub mod error;
pub mod fake;
pub mod images;
pub mod launch;
pub mod ops;
pub mod progress;
pub mod provision;
pub mod requests;
pub mod sidecar_config;
pub mod state;
pub mod teardown;

pub use engine::Engine;
pub use error::{BackendError, Result};
