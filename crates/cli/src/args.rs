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
    /// Dry run: print what one agent's bottle would run (a compose file, or Kubernetes
    /// objects); touch nothing.
    Render {
        /// Agent name from the manifest.
        agent: String,
        #[command(flatten)]
        manifest: ManifestArg,
        /// Which engine's objects to print.
        #[arg(long, value_enum, default_value_t = RenderBackend::Docker)]
        backend: RenderBackend,
    },
    /// Launch an agent's bottle, provision it, attach to the agent; tear down on exit.
    Start {
        /// Agent name from the manifest.
        agent: String,
        #[command(flatten)]
        manifest: ManifestArg,
        /// Launch and print the slug instead of attaching; `bottle down` removes it.
        #[arg(short = 'd', long)]
        detach: bool,
        #[command(flatten)]
        testing: TestingArgs,
        /// Extra arguments for the agent's command, after `--` (e.g. `-- --resume ID`).
        #[arg(last = true)]
        agent_args: Vec<String>,
    },
    /// List bottles: running ones and leftovers.
    Ls {
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a bottle's agent container.
    Exec {
        /// The bottle's slug (`bottle ls`).
        slug: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show a bottle's merged compose logs and its egress audit log (secrets redacted).
    Logs {
        /// The bottle's slug.
        slug: String,
        /// Follow the compose logs.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Tear a bottle down: dump logs, compose down, remove its networks and state.
    Down {
        /// The bottle's slug.
        slug: String,
        /// Also remove what the agent keeps across bottles (its sessions and memory).
        #[arg(long)]
        purge: bool,
    },
    /// Remove what bottles whose launcher died left behind.
    Gc {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Change a running bottle's egress policy (atomic apply + reload, confirmed).
    #[command(subcommand)]
    Egress(EgressCommand),
    /// List the agents' pending requests (egress, questions) across bottles.
    Requests {
        /// Only this bottle's requests.
        slug: Option<String>,
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
        /// Keep watching and print new requests as they come (a bell on a terminal).
        #[arg(long, conflicts_with = "json")]
        watch: bool,
    },
    /// Approve a request: egress is applied (atomically, confirmed) before the agent hears.
    Approve {
        /// Request id (or an unambiguous prefix of 4+ hex digits).
        id: String,
        /// A note for the agent; the answer, for a question.
        #[arg(long)]
        note: Option<String>,
    },
    /// Deny a request.
    Deny {
        /// Request id (or an unambiguous prefix).
        id: String,
        /// A note for the agent.
        #[arg(long)]
        note: Option<String>,
    },
    /// Serve a local web page with every bottle, its live traffic and its agents'
    /// requests (approve, allow, tear down); 127.0.0.1 only, behind a random token.
    Dashboard {
        /// The loopback port (default 7878; 0 picks a free one).
        #[arg(long)]
        port: Option<u16>,
        /// Open the page in a browser (`xdg-open`).
        #[arg(long)]
        open: bool,
    },
    /// Print the JSON Schema of the manifest (for editors).
    Schema,
    /// List, build or prune bot-bottle's images (the sidecar image is built from this
    /// very `bottle` on first use).
    Images {
        #[command(subcommand)]
        action: Option<ImagesCommand>,
    },
    /// Check whether this machine can run bottles: one line per check, with the fix.
    Doctor {
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the manual page (roff), for `man`.
    Man,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// A real bottle with a scripted agent, no API key needed: one allowed request,
    /// one denied, a credential injected, a DNS lookup sunk, teardown.
    Demo {
        /// Print the demo's compose file instead (what runs without Docker).
        #[arg(long)]
        dry_run: bool,
    },
    /// Run a sidecar inside a bottle (used by the rendered compose file).
    #[command(subcommand, hide = true)]
    Sidecar(SidecarCommand),
}

/// Launch options for tests: e2e runs its fake internet on networks it controls.
#[derive(Debug, Args)]
pub struct TestingArgs {
    /// Create the bottle's egress network `--internal` too, so nothing can leave.
    #[arg(long, hide = true)]
    pub egress_network_internal: bool,
    /// Use this existing network as the bottle's egress network (never removed).
    #[arg(long, hide = true, value_name = "NETWORK")]
    pub egress_network: Option<String>,
    /// PEM bundle the egress proxy trusts for upstreams, beside the system roots.
    #[arg(long, hide = true, value_name = "FILE")]
    pub egress_extra_ca: Option<PathBuf>,
    /// `NAME=IP` the egress proxy resolves without DNS (repeatable).
    #[arg(long, hide = true, value_name = "NAME=IP")]
    pub egress_static_host: Vec<String>,
    /// Seconds to wait for the sidecars to be healthy.
    #[arg(long, hide = true, default_value_t = 120)]
    pub health_timeout: u64,
}

/// `bottle images ...`
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// List bot-bottle's images and what each is (the default).
    Ls,
    /// Build what is missing: the base (from a registry, else debootstrap as root)
    /// and this `bottle`'s sidecar image.
    Build,
    /// Remove the sidecar images of other `bottle` builds and unused derived agent
    /// images.
    Prune,
}

/// `bottle egress ...`
#[derive(Debug, Subcommand)]
pub enum EgressCommand {
    /// Let HOST[:PORT] through (`*.suffix` for subdomains).
    Allow {
        /// The bottle's slug.
        slug: String,
        /// `host`, `host:port` or `*.suffix`.
        host: String,
    },
    /// Stop letting HOST[:PORT] through.
    Deny {
        /// The bottle's slug.
        slug: String,
        /// `host` or `host:port`.
        host: String,
    },
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
    /// The egress proxy: allowlist, TLS interception, credentials, DLP, SSRF, audit.
    Egress {
        /// Directory holding `policy.json` and the bottle CA (mounted read-only).
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
    },
    /// The approval channel: an MCP server the agent asks, decisions from the host.
    Supervise {
        /// Directory holding `supervise.json` and the policy view (mounted read-only).
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
    },
    /// Healthcheck: exit 0 if `GET URL` answers 200 within two seconds.
    Probe {
        /// `http://HOST:PORT/PATH`
        url: String,
        /// Print the response body.
        #[arg(long)]
        print: bool,
    },
}

/// The engines `bottle render` can print a bottle for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RenderBackend {
    /// A compose file, as `bottle start` runs it on Docker.
    Docker,
    /// Kubernetes objects: a namespace, sidecar Pods and Services, NetworkPolicies.
    K8s,
}
