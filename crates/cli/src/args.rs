//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// bot-bottle: run AI coding agents in Docker bottles they cannot leave.
#[derive(Debug, Parser)]
#[command(name = "bottle", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The manifest to read.
#[derive(Debug, Args)]
pub struct ManifestArg {
    /// Manifest file.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "bottle.yaml"
    )]
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the manifest and report every problem with its line.
    Validate {
        #[command(flatten)]
        manifest: ManifestArg,
    },
    /// Show the validated plan of one agent's bottle (secrets redacted).
    Plan {
        /// Agent name from the manifest.
        agent: String,
        #[command(flatten)]
        manifest: ManifestArg,
        /// Machine-readable JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the manifest (for editors).
    Schema,
}
