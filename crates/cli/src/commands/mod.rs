//! One module per subcommand.

mod completions;
mod dashboard;
mod demo;
mod doctor;
mod images;
mod lifecycle;
mod plan_cmd;
mod render;
mod requests;
mod schema;
mod sidecar;
mod start;
mod validate;

pub(crate) use lifecycle::state_root;

use crate::CliError;
use crate::args::{Cli, Command, ImagesCommand};

/// Runs the parsed command.
pub fn dispatch(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Validate { manifest } => validate::run(&manifest.file),
        Command::Plan {
            agent,
            manifest,
            json,
        } => plan_cmd::run(&manifest.file, &agent, json),
        Command::Render {
            agent,
            manifest,
            backend,
        } => render::run(&manifest.file, &agent, backend),
        Command::Start {
            agent,
            manifest,
            detach,
            testing,
            agent_args,
        } => start::run(&manifest.file, &agent, detach, &testing, agent_args),
        Command::Ls { json } => lifecycle::ls(json),
        Command::Exec { slug, command } => lifecycle::exec(&slug, command),
        Command::Logs { slug, follow } => lifecycle::logs(&slug, follow),
        Command::Down { slug, purge } => lifecycle::down(&slug, purge),
        Command::Gc { dry_run } => lifecycle::gc(dry_run),
        Command::Egress(command) => lifecycle::egress(command),
        Command::Requests { slug, json, watch } => requests::list(slug.as_deref(), json, watch),
        Command::Approve { id, note } => requests::decide(&id, note, true),
        Command::Deny { id, note } => requests::decide(&id, note, false),
        Command::Dashboard { port, open } => dashboard::run(port, open),
        Command::Schema => schema::run(),
        Command::Images { action } => images::run(action.unwrap_or(ImagesCommand::Ls)),
        Command::Demo { dry_run } => demo::run(dry_run),
        Command::Completions { shell } => completions::run(shell),
        Command::Man => completions::man(),
        Command::Doctor { json } => doctor::run(json),
        Command::Sidecar(command) => sidecar::run(command),
    }
}
