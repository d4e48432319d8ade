//! `bottle render AGENT`: the dry run. Prints the compose file; touches nothing (no
//! Docker, no state dir) and prints the same bytes for the same manifest.

use std::path::Path;

use crate::commands::plan_cmd::unknown_agent;
use crate::loaded::Overrides;
use crate::{CliError, loaded, output};

/// Fixed slug entropy: a dry run is deterministic.
const DRY_RUN_ENTROPY: u64 = 0;

pub fn run(path: &Path, agent: &str) -> Result<(), CliError> {
    run_with(path, agent, &Overrides::default())
}

/// [`run`], with `overrides` on top of the host's facts (`bottle demo --dry-run`).
pub fn run_with(path: &Path, agent: &str, overrides: &Overrides) -> Result<(), CliError> {
    // Missing host variables and files are warnings here: a dry run should work on a
    // machine that does not hold the user's secrets and keys.
    let loaded = loaded::load_with(path, true, overrides)?;
    let plan = loaded
        .plan
        .bottle_plan(agent, DRY_RUN_ENTROPY)
        .ok_or_else(|| unknown_agent(agent, &loaded))?;
    output::print(&backend_docker::preview::compose_yaml(&plan));
    Ok(())
}
