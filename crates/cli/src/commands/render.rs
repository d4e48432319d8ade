//! `bottle render AGENT`: the dry run. Prints the compose file (or, with `--backend
//! k8s`, the Kubernetes objects); touches nothing (no engine, no cluster, no state
//! dir) and prints the same bytes for the same manifest. Secret values never print.

use std::path::Path;

use crate::args::RenderBackend;
use crate::commands::plan_cmd::unknown_agent;
use crate::loaded::Overrides;
use crate::{CliError, loaded, output};

/// Fixed slug entropy: a dry run is deterministic.
const DRY_RUN_ENTROPY: u64 = 0;

pub fn run(path: &Path, agent: &str, backend: RenderBackend) -> Result<(), CliError> {
    let plan = dry_run_plan(path, agent, &Overrides::default())?;
    output::print(&match backend {
        RenderBackend::Docker => backend_docker::preview::compose_yaml(&plan),
        RenderBackend::K8s => backend_k8s::render::preview_yaml(&plan),
    });
    Ok(())
}

/// [`run`], with `overrides` on top of the host's facts (`bottle demo --dry-run`).
pub fn run_with(path: &Path, agent: &str, overrides: &Overrides) -> Result<(), CliError> {
    let plan = dry_run_plan(path, agent, overrides)?;
    output::print(&backend_docker::preview::compose_yaml(&plan));
    Ok(())
}

/// The plan a dry run prints: host variables and files that are missing are warnings.
fn dry_run_plan(
    path: &Path,
    agent: &str,
    overrides: &Overrides,
) -> Result<plan::BottlePlan, CliError> {
    // Missing host variables and files are warnings here: a dry run should work on a
    // machine that does not hold the user's secrets and keys.
    let loaded = loaded::load_with(path, true, overrides)?;
    let plan = loaded
        .plan
        .bottle_plan(agent, DRY_RUN_ENTROPY)
        .ok_or_else(|| unknown_agent(agent, &loaded))?;
    Ok(plan)
}
