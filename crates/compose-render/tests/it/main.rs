//! Renderer tests over every valid fixture: snapshots, the security shape of a bottle,
//! and acceptance by real `docker-compose` (v1) and `docker compose` (v2).

// Tests are the caller: they read fixtures and run compose.
#![allow(clippy::disallowed_methods)]

mod compose_cli;
mod shape;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use compose_render::{ComposeFile, LaunchFacts, render};
use plan::{BottlePlan, HostFacts, MissingEnv};

/// Planted host secrets: none may appear in any rendered file.
pub const SENTINELS: &[(&str, &str)] = &[
    (
        "TEST_ANTHROPIC_KEY",
        "sk-ant-api03-SENTINEL0anthropic0000000000",
    ),
    (
        "ANTHROPIC_API_KEY",
        "sk-ant-api03-SENTINEL1apikey11111111111111",
    ),
    (
        "CLAUDE_CODE_OAUTH_TOKEN",
        "sk-ant-oat01-SENTINEL2oauth2222222222222",
    ),
    ("TEST_NPM_TOKEN", "npm_SENTINEL4npm4444444444444444444444"),
];

/// The env file value in `fixtures/files/app.env`: secret by definition.
pub const ENV_FILE_SECRET: &str = "fixture-db-password";

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Every valid fixture: (file stem, plans of its agents with a fixed slug).
pub fn valid_plans() -> Vec<(String, Vec<BottlePlan>)> {
    let dir = fixtures_dir().join("valid");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let source = std::fs::read_to_string(&path).unwrap();
            let manifest = plan::parse_manifest(&source).unwrap();
            let mut facts = HostFacts {
                env: SENTINELS
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                manifest_dir: "/fixtures/valid".into(),
                project_dir: "/home/tester/project".into(),
                env_files: BTreeMap::new(),
                missing_env: MissingEnv::Error,
            };
            facts.env.insert("HOME".into(), "/home/tester".into());
            for env_file in plan::env_file_paths(&manifest, &facts) {
                let on_disk = dir.join(env_file.strip_prefix("/fixtures/valid").unwrap());
                facts
                    .env_files
                    .insert(env_file, std::fs::read_to_string(on_disk).unwrap());
            }
            let planned = plan::plan_manifest(&manifest, &facts);
            assert!(
                !planned.problems.has_errors(),
                "{}: {:?}",
                path.display(),
                planned.problems
            );
            let plans = planned
                .agent_names()
                .map(|agent| planned.bottle_plan(agent, 0).unwrap())
                .collect();
            (
                path.file_stem().unwrap().to_string_lossy().into_owned(),
                plans,
            )
        })
        .collect()
}

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
