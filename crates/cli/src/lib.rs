//! The `bottle` command line: clap front end, miette diagnostics.
//!
//! This is the only crate that prints for humans, and it prints through
//! [`output`]. Exit codes mean something: 0 success, 1 a user error (bad manifest,
//! unknown agent), 2 a usage error (clap), 255 an internal error.

mod args;
mod commands;
mod diagnostics;
mod engine;
mod host;
mod loaded;
mod output;
mod progress;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;
pub use diagnostics::render_problems;

/// Failures that end a command, mapped to exit codes in one place.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Something the user can fix (already reported on stderr).
    #[error("{0}")]
    User(String),
    /// The user's problem was already printed in full (diagnostics).
    #[error("reported")]
    Reported,
    /// No Docker engine answers (already worded for the user).
    #[error("{0}")]
    NoEngine(String),
    /// A bug or an environment failure.
    #[error("{0}")]
    Internal(String),
    /// The command ran a program that failed: exit with its status (nothing to print).
    #[error("exit status {0}")]
    Exit(i32),
}

/// Runs the CLI with `args` and returns the process exit code.
pub fn run(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (2).
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    match commands::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Reported) => ExitCode::from(1),
        Err(CliError::Exit(code)) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(CliError::User(message) | CliError::NoEngine(message)) => {
            output::error(&message);
            ExitCode::from(1)
        }
        Err(CliError::Internal(message)) => {
            output::error(&format!("internal error: {message}"));
            ExitCode::from(255)
        }
    }
}
