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
    /// Dry run: print the compose file of one agent's bottle; touch nothing.
    Render {
        /// Agent name from the manifest.
        agent: String,
        #[command(flatten)]
        manifest: ManifestArg,
    },
    /// Print the JSON Schema of the manifest (for editors).
    Schema,
    /// Run a sidecar inside a bottle (used by the rendered compose file).
    #[command(subcommand, hide = true)]
    Sidecar(SidecarCommand),
}

/// Sidecar entry points: they ship inside the `bottle` binary so a sidecar always
/// speaks the config format of the CLI that wrote its config.
#[derive(Debug, Subcommand)]
pub enum SidecarCommand {
    /// The git gate: smart-HTTP git for the agent, SSH to the upstreams.
    GitGate {
        /// Directory holding `git-gate.json` (mounted read-only).
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
    },
    /// Healthcheck: exit 0 if `GET URL` answers 200 within two seconds.
    Probe {
        /// `http://HOST:PORT/PATH`
        url: String,
    },
}
