//! `bottle start AGENT [-d] [-- ARGS...]`: launch, provision, attach; tear down on
//! every way out (the agent exits, Ctrl-C, SIGTERM, the terminal closes).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backend_api::{Progress as _, TestingKnobs, UpRequest};
use backend_docker::state;

use crate::args::TestingArgs;
use crate::commands::lifecycle::{now_unix, state_root, user_error};
use crate::commands::plan_cmd::unknown_agent;
use crate::loaded::Overrides;
use crate::progress::TerminalProgress;
use crate::{CliError, engine, host, loaded, output};

/// The signals that end a launch or an attached session and tear the bottle down:
/// Ctrl-C, `kill`, and the terminal going away (SIGHUP would otherwise kill the
/// launcher before teardown and leave the bottle running).
pub(crate) const TEARDOWN_SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
];

/// Runs `bottle start`.
pub fn run(
    path: &Path,
    agent: &str,
    detach: bool,
    testing: &TestingArgs,
    agent_args: Vec<String>,
) -> Result<(), CliError> {
    run_with(
        path,
        agent,
        detach,
        testing,
        agent_args,
        &Overrides::default(),
    )
}

/// [`run`], with `overrides` on top of the host's facts (`bottle demo`).
pub fn run_with(
    path: &Path,
    agent: &str,
    detach: bool,
    testing: &TestingArgs,
    agent_args: Vec<String>,
    overrides: &Overrides,
) -> Result<(), CliError> {
    // From here on these signals set a flag instead of killing the launcher: the
    // launch stops at its next step and tears down; while attached, the agent (in the
    // docker CLI) gets the terminal's signals, and when it is gone we tear down.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in TEARDOWN_SIGNALS {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .map_err(|e| CliError::Internal(format!("installing a signal handler: {e}")))?;
    }
    let loaded = loaded::load_with(path, false, overrides)?;
    let mut plan = loaded
        .plan
        .bottle_plan(agent, host::slug_entropy())
        .ok_or_else(|| unknown_agent(agent, &loaded))?;
    plan.agent.command.extend(agent_args);
    let backend = engine::backend()?;
    let state_root = state_root()?;
    state::create_private_dir(&state_root).map_err(user_error)?;
    let manifest_bytes = std::fs::read(path)
        .map_err(|e| CliError::User(format!("reading {}: {e}", path.display())))?;
    let mut static_hosts = BTreeMap::new();
    for entry in &testing.egress_static_host {
        let (name, ip) = entry
            .split_once('=')
            .and_then(|(n, ip)| Some((n.to_owned(), ip.parse().ok()?)))
            .ok_or_else(|| {
                CliError::User(format!("--egress-static-host `{entry}`: expected NAME=IP"))
            })?;
        static_hosts.insert(name, ip);
    }
    let mut progress = TerminalProgress::new();
    let sidecar_image = backend.prepare(&mut progress).map_err(user_error)?;
    let request = UpRequest {
        manifest: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
        manifest_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&manifest_bytes)),
        sidecar_image,
        sidecar_user: host::owner_of(&state_root),
        ready_timeout: Duration::from_secs(testing.health_timeout),
        now_unix: now_unix(),
        launcher_pid: std::process::id(),
        testing: TestingKnobs {
            egress_network_internal: testing.egress_network_internal,
            egress_network: testing.egress_network.clone(),
            extra_ca_bundle: testing.egress_extra_ca.clone(),
            static_hosts,
        },
        plan,
    };
    let plan = &request.plan;
    for route in &plan.egress.routes {
        progress.note(&format!(
            "{} gets {} from ${} (the agent holds a placeholder in ${})",
            route.host, route.header, route.token_env, route.agent_env
        ));
    }
    for needed in plan.missing_profile_hosts() {
        progress.warn(&format!(
            "{} needs {}:{} ({}), which egress.allow does not allow; add it, or set `kind: generic`",
            plan.agent.profile.kind.as_str(),
            needed.host,
            needed.port,
            needed.why
        ));
    }
    let check = || interrupted.load(Ordering::SeqCst);
    let bottle = backend
        .up(&request, &mut progress, &check)
        .map_err(user_error)?;
    let slug = bottle.slug;
    if detach {
        output::print(&format!("{slug}\n"));
        return Ok(());
    }
    progress.note(&format!(
        "attached to {slug}; exit the agent to tear the bottle down"
    ));
    let result = if check() {
        // A signal came during the last step: do not attach at all.
        Ok(130)
    } else {
        let workdir = plan.agent.workdir.display().to_string();
        backend.attach(&slug, &plan.agent.command, Some(&workdir))
    };
    progress.note(&format!("tearing down {slug}"));
    let problems = backend.down(&slug).map_err(user_error)?;
    for problem in &problems {
        output::error(&format!("teardown: {problem}"));
    }
    if let Some(resume) = &plan.agent.profile.resume_args {
        progress.note(&format!(
            "{agent}'s sessions are kept: `bottle start {agent} -- {resume}` resumes the last one"
        ));
    }
    match result {
        Ok(0) => Ok(()),
        Ok(code) => Err(CliError::Exit(code)),
        Err(error) => Err(user_error(error)),
    }
}
