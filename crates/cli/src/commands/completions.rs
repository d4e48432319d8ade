//! `bottle completions SHELL` and `bottle man`: the shell's completion script and
//! the manual page, generated from the same clap definition the parser uses.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::args::Cli;
use crate::{CliError, output};

/// Prints the manual page (its SUBCOMMANDS section lists every command).
pub fn man() -> Result<(), CliError> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(|e| CliError::Internal(format!("rendering the manual page: {e}")))?;
    output::print(&String::from_utf8_lossy(&page));
    Ok(())
}

/// Prints the completion script for `shell`.
pub fn run(shell: Shell) -> Result<(), CliError> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "bottle", &mut script);
    output::print(&String::from_utf8_lossy(&script));
    Ok(())
}
