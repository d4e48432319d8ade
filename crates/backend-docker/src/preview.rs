//! `bottle render`'s Docker half: the compose file a bottle would run, with stand-in
//! launch facts. Pure: no engine, no state dir, the same bytes for the same plan.

use compose_render::{LaunchFacts, render, to_yaml};
use plan::BottlePlan;

/// The compose file of `plan`'s bottle as YAML, with [`LaunchFacts::preview`]'s
/// deterministic names and addresses.
pub fn compose_yaml(plan: &BottlePlan) -> String {
    to_yaml(&render(plan, &LaunchFacts::preview(plan)))
}
