//! One module per subcommand.

mod plan_cmd;
mod schema;
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
        Command::Schema => schema::run(),
    }
}
