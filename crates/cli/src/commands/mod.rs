//! One module per subcommand.

mod plan_cmd;
mod render;
mod schema;
mod sidecar;
mod validate;

use crate::CliError;
use crate::args::{Cli, Command};

/// Runs the parsed command.
pub fn dispatch(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Validate { manifest } => validate::run(&manifest.file),
        Command::Plan {
            agent,
            manifest,
            json,
        } => plan_cmd::run(&manifest.file, &agent, json),
        Command::Render { agent, manifest } => render::run(&manifest.file, &agent),
        Command::Schema => schema::run(),
        Command::Sidecar(command) => sidecar::run(command),
    }
}
