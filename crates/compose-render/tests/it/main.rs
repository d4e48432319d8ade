//! Renderer tests over every valid fixture: snapshots, the security shape of a bottle,
//! and acceptance by real `docker-compose` (v1) and `docker compose` (v2).

// Tests are the caller: they read fixtures and run compose.
#![allow(clippy::disallowed_methods)]

mod compose_cli;
mod shape;

use compose_render::{ComposeFile, LaunchFacts, render};
use plan::BottlePlan;

pub use fixtures::{ENV_FILE_SECRET, SENTINELS, valid_plans};

/// Every (fixture, agent, rendered file) with preview facts.
pub fn rendered() -> Vec<(String, BottlePlan, ComposeFile)> {
    valid_plans()
        .into_iter()
        .flat_map(|(name, plans)| {
            plans.into_iter().map(move |plan| {
                let file = render(&plan, &LaunchFacts::preview(&plan));
                (format!("{name}-{}", plan.agent.name), plan, file)
            })
        })
        .collect()
}

#[test]
fn snapshots_of_every_valid_fixture() {
    let all = rendered();
    assert!(all.len() >= 10);
    for (name, _, file) in all {
        insta::assert_snapshot!(name, compose_render::to_yaml(&file));
    }
}

#[test]
fn rendering_is_deterministic() {
    for ((_, _, a), (_, _, b)) in rendered().into_iter().zip(rendered()) {
        assert_eq!(compose_render::to_yaml(&a), compose_render::to_yaml(&b));
    }
}
