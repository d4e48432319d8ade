//! `bottle demo`: a real bottle with a scripted agent and no API key. The agent
//! (`demo/agent.sh`) makes one allowed request with a placeholder credential (the
//! stand-in upstream reports that the real one arrived), one to a host the manifest
//! does not allow, one carrying a credential-shaped string, and one DNS lookup; then
//! it exits and the bottle is torn down. The stand-in internet is an `--internal`
//! network of the demo's own ([`backend_docker::demo`]): nothing leaves the machine.
//! Without a Docker engine it prints the demo bottle's dry run and says why.

use std::path::{Path, PathBuf};
use std::time::Instant;

use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use backend_docker::progress::Progress as _;
use backend_docker::{BackendError, Engine, ca, demo, state};

use crate::args::TestingArgs;
use crate::commands::lifecycle::{state_root, user_error};
use crate::commands::{render, start};
use crate::loaded::Overrides;
use crate::progress::TerminalProgress;
use crate::{CliError, engine, host, output};

/// The demo manifest; `@IMAGE@`, `@STAND_IN_IP@` and `@AGENT_SCRIPT@` are filled in
/// per run ([`manifest_text`]).
const MANIFEST: &str = include_str!("demo/bottle.yaml");
/// The scripted agent: the agent's command is `sh -c` with this text.
const AGENT_SCRIPT: &str = include_str!("demo/agent.sh");
/// The agent in [`MANIFEST`].
const AGENT: &str = "demo";
/// The route's variable in [`MANIFEST`]: the real credential, made up per run.
const TOKEN_ENV: &str = "DEMO_API_TOKEN";
/// The names the stand-in answers for: the allowed host and one the manifest does not
/// allow (so the denial comes from the allowlist, not from a failed lookup).
const STAND_IN_NAMES: [&str; 2] = ["api.demo.test", "elsewhere.demo.test"];
/// The agent's working directory (made in its image; nothing is mounted there): fixed,
/// so the derived agent image is built once and reused by every demo.
const PROJECT_DIR: &str = "/demo";
/// The credential a dry run plans with (it never appears in the output).
const DRY_RUN_CREDENTIAL: &str = "dry-run-credential-not-shown";
/// The address a dry run shows for the stand-in.
const DRY_RUN_IP: &str = "10.213.0.254";

/// Runs `bottle demo`.
pub fn run(dry_run: bool) -> Result<(), CliError> {
    if dry_run {
        return show_dry_run(None);
    }
    let engine = match engine::engine().and_then(|e| {
        e.engine_version().map(|_| e).map_err(|error| match error {
            BackendError::NoEngine { .. } => CliError::NoEngine(error.to_string()),
            other => user_error(other),
        })
    }) {
        Ok(engine) => engine,
        Err(CliError::NoEngine(why)) => {
            show_dry_run(Some(&why))?;
            // The demo did not run: say so to scripts too.
            return Err(CliError::Exit(1));
        }
        Err(other) => return Err(other),
    };
    // From here a signal sets a flag: each step checks it, and the stand-in and the
    // demo's directory go whichever way the demo ends.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in start::TEARDOWN_SIGNALS {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .map_err(|e| CliError::Internal(format!("installing a signal handler: {e}")))?;
    }
    let check = || {
        if interrupted.load(Ordering::SeqCst) {
            Err(CliError::Exit(130))
        } else {
            Ok(())
        }
    };
    let mut progress = TerminalProgress::new();
    let started = Instant::now();
    progress.note(
        "demo: a real bottle with a scripted agent; its internet is a stand-in on an \
         internal network, so nothing leaves this machine",
    );
    let image = engine::backend()?
        .prepare(&mut progress)
        .map_err(user_error)?;
    check()?;
    let root = state_root()?;
    remove_leftovers(engine.as_ref(), &root)?;
    let workspace =
        Workspace::create(&root.join(demo::DEMOS_DIR), &std::process::id().to_string())?;
    let credential = format!(
        "demo-{}",
        hex::encode(ca::random_bytes::<16>().map_err(user_error)?)
    );
    let stand_in_started = Instant::now();
    progress.step("starting the stand-in internet (api.demo.test, elsewhere.demo.test)");
    let stand_in = StandInGuard {
        engine: engine.as_ref(),
        stand_in: demo::start(
            engine.as_ref(),
            &image,
            &workspace.dir,
            &STAND_IN_NAMES,
            &credential,
        )
        .map_err(user_error)?,
    };
    progress.done("stand-in internet up", stand_in_started.elapsed());
    check()?;
    let manifest = workspace.write_manifest(&image, &stand_in.stand_in.ip)?;
    let testing = TestingArgs {
        egress_network_internal: false,
        egress_network: Some(stand_in.stand_in.network.clone()),
        egress_extra_ca: Some(stand_in.stand_in.ca_pem.clone()),
        egress_static_host: STAND_IN_NAMES
            .iter()
            .map(|name| format!("{name}={}", stand_in.stand_in.ip))
            .collect(),
        health_timeout: 120,
    };
    let overrides = Overrides {
        env: [(TOKEN_ENV.to_owned(), credential)].into(),
        project_dir: Some(PROJECT_DIR.into()),
    };
    start::run_with(&manifest, AGENT, false, &testing, Vec::new(), &overrides)?;
    drop(stand_in);
    drop(workspace);
    progress.done(
        "demo finished: the agent held a placeholder while the real credential reached \
         api.demo.test; elsewhere.demo.test, the key-shaped upload and the DNS lookup \
         were refused. Next: README's \"Run Claude Code\"",
        started.elapsed(),
    );
    Ok(())
}

/// Removes what demos whose launcher is gone left: the stand-ins on the engine and
/// their directories under the state root.
fn remove_leftovers(engine: &dyn Engine, root: &Path) -> Result<(), CliError> {
    demo::remove_leftovers(engine, &host::pid_alive).map_err(user_error)?;
    let Ok(entries) = std::fs::read_dir(root.join(demo::DEMOS_DIR)) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let dead = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
            .is_some_and(|pid| !host::pid_alive(pid));
        if dead {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// The running stand-in: removed when dropped, whichever way the demo ends.
struct StandInGuard<'a> {
    engine: &'a dyn Engine,
    stand_in: demo::StandIn,
}

impl Drop for StandInGuard<'_> {
    fn drop(&mut self) {
        for problem in demo::stop(self.engine, &self.stand_in) {
            output::error(&format!("removing the demo's stand-in internet: {problem}"));
        }
    }
}

/// The dry run: the demo bottle's compose file, and why there is no real one.
fn show_dry_run(why: Option<&str>) -> Result<(), CliError> {
    if let Some(why) = why {
        TerminalProgress::new().warn(&format!(
            "{why}\nbottle demo needs a Docker engine to run a bottle; here is the compose \
             file it would run instead (`bottle demo --dry-run` prints it anywhere)"
        ));
    }
    // A fresh directory of a random name (create_dir refuses what exists, a symlink
    // planted there included).
    let name = format!(
        "bot-bottle-demo-dry-run-{}",
        hex::encode(ca::random_bytes::<8>().map_err(user_error)?)
    );
    let workspace = Workspace::create(&std::env::temp_dir(), &name)?;
    let manifest = workspace.write_manifest(&engine::sidecar_image()?, DRY_RUN_IP)?;
    let overrides = Overrides {
        env: [(TOKEN_ENV.to_owned(), DRY_RUN_CREDENTIAL.to_owned())].into(),
        project_dir: Some(PROJECT_DIR.into()),
    };
    render::run_with(&manifest, AGENT, &overrides)
}

/// The demo manifest for this run: the agent's script goes in as a YAML block
/// scalar, indented under its `- |`.
fn manifest_text(image: &str, stand_in_ip: &str) -> String {
    let script: String = AGENT_SCRIPT
        .lines()
        .map(|line| {
            if line.is_empty() {
                "\n".to_owned()
            } else {
                format!("        {line}\n")
            }
        })
        .collect();
    MANIFEST
        .replace("@IMAGE@", image)
        .replace("@STAND_IN_IP@", stand_in_ip)
        .replace("@AGENT_SCRIPT@\n", &script)
}

/// The demo's directory: the manifest and the stand-in's files (nothing of it is
/// mounted into the agent). Removed when dropped, whichever way the demo ends.
struct Workspace {
    dir: PathBuf,
}

impl Workspace {
    /// Makes `parent` (0700) and in it the new directory `name`: it must not exist.
    fn create(parent: &Path, name: &str) -> Result<Workspace, CliError> {
        state::create_private_dir(parent).map_err(user_error)?;
        let dir = parent.join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| CliError::User(format!("creating {}: {e}", dir.display())))?;
        Ok(Workspace { dir })
    }

    fn write_manifest(&self, image: &str, stand_in_ip: &str) -> Result<PathBuf, CliError> {
        let path = self.dir.join("bottle.yaml");
        state::write_atomic(&path, manifest_text(image, stand_in_ip).as_bytes(), 0o644)
            .map_err(user_error)?;
        Ok(path)
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_template_is_filled_in_and_plans() {
        let filled = manifest_text("bot-bottle/sidecar:x", DRY_RUN_IP);
        assert!(!filled.contains("@IMAGE@") && !filled.contains("@STAND_IN_IP@"));
        let manifest = plan::parse_manifest(&filled).unwrap();
        let facts = plan::HostFacts {
            env: [(TOKEN_ENV.to_owned(), "demo-x".to_owned())].into(),
            project_dir: "/demo/project".into(),
            manifest_dir: "/demo/project".into(),
            env_files: Default::default(),
            missing_env: plan::MissingEnv::Error,
        };
        let planned = plan::plan_manifest(&manifest, &facts);
        assert!(!planned.problems.has_errors(), "{:?}", planned.problems);
        let bottle = planned.bottle_plan(AGENT, 0).unwrap();
        assert_eq!(bottle.egress.routes.len(), 1);
        assert_eq!(bottle.egress.routes[0].token_env, TOKEN_ENV);
        // The script arrives whole, as `sh -c SCRIPT`.
        assert_eq!(bottle.agent.command[..2], ["sh", "-c"]);
        assert_eq!(bottle.agent.command[2], AGENT_SCRIPT);
    }

    #[test]
    fn the_agent_script_tries_each_thing_the_demo_shows() {
        for name in STAND_IN_NAMES {
            assert!(AGENT_SCRIPT.contains(name), "{name}");
        }
        assert!(AGENT_SCRIPT.contains(&format!("${TOKEN_ENV}")));
        assert!(AGENT_SCRIPT.contains("getent hosts"));
    }
}
