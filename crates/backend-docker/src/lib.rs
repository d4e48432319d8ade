//! Every side effect of running a bottle, behind the [`Engine`] trait.
//!
//! [`launch::launch`] runs DESIGN.md's launch sequence against any backend and tears
//! down in reverse on failure; [`ops`] holds the lifecycle commands (`ls`, `down`,
//! `gc`, `egress allow|deny`); [`images`] builds the base and sidecar images from the
//! running executable; [`docker::DockerEngine`] drives the docker CLI;
//! `fake::FakeEngine` is the in-memory engine the CLI tests use (feature `fake`:
//! never in a release build; [`fake_engine`] says whether this build has it).

mod attach;
pub mod audit_feed;
pub mod bottles;
pub mod ca;
pub mod demo;
pub mod docker;
pub mod doctor;
pub mod engine;
pub mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod images;
pub mod launch;
pub mod ops;
pub mod preview;
pub mod progress;
pub mod provision;
pub mod requests;
pub mod sidecar_config;
pub mod state;
pub mod teardown;

pub use engine::Engine;
pub use error::{BackendError, Result};

/// The fake engine persisted at `path` with `images` present, failing at `fail_at`
/// (see `fake::FakeEngine::fail_at`), playing compose v1 if `compose_v1`; None when
/// this build has no fake engine (the `fake` feature is for tests).
pub fn fake_engine(
    path: &std::path::Path,
    images: &[&str],
    fail_at: Option<String>,
    compose_v1: bool,
) -> Option<Result<Box<dyn Engine>>> {
    #[cfg(any(test, feature = "fake"))]
    {
        Some(
            fake::FakeEngine::open(path, images).map(|fake| {
                Box::new(fake.fail_at(fail_at).compose_v1(compose_v1)) as Box<dyn Engine>
            }),
        )
    }
    #[cfg(not(any(test, feature = "fake")))]
    {
        let _ = (path, images, fail_at, compose_v1);
        None
    }
}
