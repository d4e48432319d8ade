//! `cargo xtask e2e`: real bottles on real Docker against a fake internet.
//!
//! 1. removes what dead e2e runs left behind (by label and run directory);
//! 2. builds the images (`cargo xtask images`: base, sidecar from a fresh `bottle`,
//!    test agent, the real Claude Code agent);
//! 3. starts the fake internet ([`fake_internet`]) on an `--internal` network of its
//!    own, and writes this run's copy of `fixtures/e2e/bottle.yaml.in`;
//! 4. runs the [`scenarios`] against bottles started with the real `bottle` CLI,
//!    printing `ok <name> (<secs>)` or `FAIL <name>: <why>` for each and
//!    `N passed, M failed` at the end;
//! 5. cleans up ([`cleanup`]) whatever happened, SIGINT/SIGTERM included.
//!
//! Traffic never leaves the containers and networks the run created: the agent's
//! network and the fake internet's network are both `--internal`, and every name the
//! proxy is asked for is mapped to an address on them (`--egress-static-host`).

mod bottle;
mod claude;
mod cleanup;
mod dashboard;
mod fake_internet;
mod redteam_bottle;
mod redteam_credentials;
mod redteam_limits;
mod redteam_paths;
mod scenarios;
mod sh;
mod upstream_proxy;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::images;
use fake_internet::FakeInternet;
use sh::Interrupted;

/// The label on everything the run creates itself (value: the run id).
pub const LABEL: &str = "dev.bot-bottle.e2e";

/// The usage text.
pub const USAGE: &str = "cargo xtask e2e [--only NAME[,NAME...]] [--list]\n\n\
  Builds the images, starts a fake internet and runs every scenario against real\n\
  bottles. Needs a Docker engine (no registry), compose, ssh-keygen; root for the\n\
  first debootstrap of the base image.\n\n\
  --only NAMES  run only these scenarios (comma-separated; see --list)\n\
  --list        list the scenarios";

/// One e2e run: where its files live and what it passes to `bottle`.
pub struct Run {
    /// `e2e-<pid>`: the value of [`LABEL`] on what the run creates.
    pub id: String,
    /// The run directory (0700): state root, keys, certificates, the echo log.
    pub dir: PathBuf,
    /// `BOT_BOTTLE_STATE_DIR` for every `bottle` call.
    pub state_root: PathBuf,
    /// Where `bottle` runs (the agents' working directory): [`cleanup::project_dir`].
    pub project: PathBuf,
    pub bottle_bin: PathBuf,
    /// `fixtures/e2e` in the workspace.
    pub fixtures: PathBuf,
    /// This run's manifest (the template, filled in), on the plain test agent image.
    pub manifest: PathBuf,
    /// The real credential of the e2e route (`E2E_ECHO_TOKEN` on the host).
    pub token: String,
    /// The agent's own secret (`APP_SECRET`, `E2E_APP_SECRET` on the host): DLP lets
    /// it go to data.fake.test only.
    pub app_secret: String,
    pub interrupted: Interrupted,
    internet: Option<FakeInternet>,
}

impl Run {
    /// `dev.bot-bottle.e2e=<run id>`.
    pub fn label(&self) -> String {
        format!("{LABEL}={}", self.id)
    }

    /// The fake internet (started before any scenario runs).
    pub fn net(&self) -> &FakeInternet {
        self.internet
            .as_ref()
            .expect("the fake internet starts before the scenarios")
    }

    /// A manifest template (`fixtures/e2e/*.in`) with this run's values filled in:
    /// `@ECHO_IP@`, `@ANTHROPIC_IP@`, `@SSH_IP@`, `@SSH_KEY@`, `@KNOWN_HOSTS@`,
    /// `@CLAUDE_AGENT_IMAGE@` (the real Claude Code) and `@AGENT_IMAGE@` (the test agent).
    pub fn fill_template(&self, template: &str) -> String {
        let net = self.net();
        template
            .replace("@ECHO_IP@", &net.echo_ip)
            .replace("@ANTHROPIC_IP@", &net.anthropic_ip)
            .replace("@SSH_IP@", &net.ssh_ip)
            .replace("@SSH_KEY@", &net.ssh_key.display().to_string())
            .replace("@KNOWN_HOSTS@", &net.known_hosts.display().to_string())
            .replace("@CLAUDE_AGENT_IMAGE@", images::CLAUDE_AGENT)
            .replace("@AGENT_IMAGE@", images::TEST_AGENT)
    }
}

/// `count` bytes from the kernel's random source.
pub fn random_bytes(count: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; count];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom is readable");
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `e2e` task.
pub fn main(args: &[String]) -> ExitCode {
    let mut only: Option<Vec<String>> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--list" => {
                for (name, _) in scenarios::ALL {
                    println!("{name}");
                }
                return ExitCode::SUCCESS;
            }
            "--only" => match it.next() {
                Some(names) => only = Some(names.split(',').map(str::to_string).collect()),
                None => return usage("--only needs NAMES"),
            },
            other => return usage(&format!("unexpected argument `{other}`")),
        }
    }
    if let Some(names) = &only
        && let Some(bad) = names
            .iter()
            .find(|n| !scenarios::ALL.iter().any(|(s, _)| s == n))
    {
        return usage(&format!("no scenario `{bad}` (see --list)"));
    }

    let interrupted: Interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&interrupted)) {
            eprintln!("error: cargo xtask e2e: installing a signal handler: {e}");
            return ExitCode::from(1);
        }
    }
    let started = Instant::now();
    let id = format!("e2e-{}", std::process::id());
    println!("e2e: run {id}; compose: {}", compose_in_use());

    // Build first: the bottle binary also cleans up stale runs.
    if let Err(failure) = images::build(&images::Options::default()) {
        eprintln!("error: cargo xtask e2e: images: {failure}");
        return ExitCode::from(1);
    }
    let bottle_bin = match images::release_bottle() {
        Ok(path) => path,
        Err(failure) => {
            eprintln!("error: cargo xtask e2e: {failure}");
            return ExitCode::from(1);
        }
    };
    for stale in cleanup::stale_runs(&id) {
        let problems = cleanup::clean_run(&stale, &bottle_bin);
        println!(
            "e2e: removed the leftovers of dead run {stale}{}",
            if problems.is_empty() {
                String::new()
            } else {
                format!(" (some remain: {})", problems.join("; "))
            }
        );
    }

    let dir = cleanup::run_dir(&id);
    let mut run = Run {
        id: id.clone(),
        state_root: dir.join("state"),
        project: cleanup::project_dir(&id),
        dir,
        bottle_bin: bottle_bin.clone(),
        fixtures: workspace_root().join("fixtures/e2e"),
        manifest: PathBuf::new(),
        // 39 characters: its base64 has no padding.
        token: format!("e2e-{}", &hex(&random_bytes(18))[..35]),
        app_secret: format!("app-{}", hex(&random_bytes(16))),
        interrupted: Arc::clone(&interrupted),
        internet: None,
    };
    run.manifest = run.dir.join("bottle.yaml");

    let outcome = run_all(&mut run, only.as_deref());
    let step = Instant::now();
    let problems = cleanup::clean_run(&id, &bottle_bin);
    if problems.is_empty() {
        println!("e2e: cleaned up ({:.1}s)", step.elapsed().as_secs_f64());
    } else {
        println!("e2e: cleanup could not remove everything:");
        for problem in &problems {
            println!("  {problem}");
        }
    }
    println!("e2e: total {:.0}s", started.elapsed().as_secs_f64());
    if interrupted.load(Ordering::SeqCst) {
        eprintln!("e2e: interrupted");
        return ExitCode::from(130);
    }
    match outcome {
        Ok(0) if problems.is_empty() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(message) => {
            eprintln!("error: cargo xtask e2e: {message}");
            ExitCode::from(1)
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("cargo xtask e2e: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Sets up the run and runs the scenarios; the number that failed.
fn run_all(run: &mut Run, only: Option<&[String]>) -> Result<usize, String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&run.state_root)
        .map_err(|e| format!("creating {}: {e}", run.state_root.display()))?;
    std::fs::create_dir_all(&run.project)
        .map_err(|e| format!("creating {}: {e}", run.project.display()))?;
    let step = Instant::now();
    let internet = fake_internet::start(run)?;
    println!(
        "e2e: fake internet on {} (echo {}, anthropic {}, sshd {}) ({:.1}s)",
        internet.network,
        internet.echo_ip,
        internet.anthropic_ip,
        internet.ssh_ip,
        step.elapsed().as_secs_f64()
    );
    run.internet = Some(internet);
    let template = std::fs::read_to_string(run.fixtures.join("bottle.yaml.in"))
        .map_err(|e| format!("reading fixtures/e2e/bottle.yaml.in: {e}"))?;
    std::fs::write(&run.manifest, run.fill_template(&template))
        .map_err(|e| format!("writing {}: {e}", run.manifest.display()))?;

    let run: &Run = run;
    let mut ctx = scenarios::Ctx::new(run);
    let (mut passed, mut failed) = (0, 0);
    for (name, check) in scenarios::ALL {
        if only.is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        if run.interrupted.load(Ordering::SeqCst) {
            break;
        }
        let step = Instant::now();
        match check(&mut ctx) {
            Ok(()) => {
                passed += 1;
                println!("ok {name} ({:.1}s)", step.elapsed().as_secs_f64());
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed)
}

/// Which compose tool the bottles of this run use: what `bottle` picks (v2 where
/// installed unless `BOT_BOTTLE_COMPOSE` says otherwise), with its version.
fn compose_in_use() -> String {
    let version = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let v2 = || version("docker", &["compose", "version", "--short"]);
    let v1 = || version("docker-compose", &["version", "--short"]);
    match std::env::var("BOT_BOTTLE_COMPOSE").ok().as_deref() {
        Some("v1") => v1().map(|v| format!("docker-compose {v} (v1, BOT_BOTTLE_COMPOSE)")),
        Some("v2") => v2().map(|v| format!("docker compose {v} (v2, BOT_BOTTLE_COMPOSE)")),
        _ => v2()
            .map(|v| format!("docker compose {v} (v2)"))
            .or_else(|| v1().map(|v| format!("docker-compose {v} (v1)"))),
    }
    .unwrap_or_else(|| "none found".to_owned())
}
