//! The Kubernetes renderer over every valid fixture: snapshots, and the security
//! shape of a bottle (each test fails if its rule breaks).

mod backend;
mod fake_api;
mod lifecycle;
mod shape;

use backend_k8s::{ClusterFacts, Manifests, Materials, Reveal, render};
use plan::BottlePlan;

pub use fixtures::{ENV_FILE_SECRET, SENTINELS, valid_plans};

/// Every (fixture-agent, plan, objects) as `bottle render --backend k8s` makes them.
pub fn rendered() -> Vec<(String, BottlePlan, Manifests)> {
    valid_plans()
        .into_iter()
        .flat_map(|(name, plans)| {
            plans.into_iter().map(move |plan| {
                let objects = render(
                    &plan,
                    &ClusterFacts::preview(&plan),
                    &Materials::preview(&plan),
                    Reveal::Never,
                );
                (format!("{name}-{}", plan.agent.name), plan, objects)
            })
        })
        .collect()
}

#[test]
fn snapshots_of_every_valid_fixture() {
    let all = rendered();
    assert!(all.len() >= 10);
    for (name, plan, objects) in all {
        let yaml = objects.to_yaml();
        assert_eq!(yaml, backend_k8s::render::preview_yaml(&plan));
        insta::assert_snapshot!(name, yaml);
    }
}

#[test]
fn rendering_is_deterministic() {
    for ((_, _, a), (_, _, b)) in rendered().into_iter().zip(rendered()) {
        assert_eq!(a.to_yaml(), b.to_yaml());
    }
}
