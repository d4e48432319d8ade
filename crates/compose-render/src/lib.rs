//! Pure rendering of a bottle: [`BottlePlan`](plan::BottlePlan) + [`LaunchFacts`] ->
//! typed [`ComposeFile`] -> YAML.
//!
//! This crate never does IO (`clippy.toml` bans it): `bottle render` is an honest dry
//! run and the snapshots are stable. The security shape of a bottle lives here, and
//! the tests pin it: the agent only on the internal network, secrets only as bare
//! names, every service labelled and hardened.

pub mod compose;
mod facts;
pub mod names;
mod render;

pub use compose::ComposeFile;
pub use facts::{AGENTS_STATE_DIR, LaunchFacts, SIDECAR_REPO, agent_state_dir, sidecar_image_tag};
pub use render::*;

/// The compose file as YAML (serde-saphyr quotes `yes`/`no`/`on` so v1 reads strings).
pub fn to_yaml(file: &ComposeFile) -> String {
    serde_saphyr::to_string(file).expect("compose types always serialize")
}
