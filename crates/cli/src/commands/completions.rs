//! `bottle completions SHELL`: the shell's completion script for every command and
//! flag, generated from the same clap definition the parser uses.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::args::Cli;
use crate::{CliError, output};

/// Prints the completion script for `shell`.
pub fn run(shell: Shell) -> Result<(), CliError> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "bottle", &mut script);
    output::print(&String::from_utf8_lossy(&script));
    Ok(())
}
