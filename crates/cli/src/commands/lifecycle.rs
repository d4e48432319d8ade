//! `start`, `ls`, `exec`, `logs`, `down`, `gc` and `egress allow|deny`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backend_docker::BackendError;
use backend_docker::backend::{ComposeCall, ExecSpec};
use backend_docker::launch::{LaunchOptions, launch, redact};
use backend_docker::ops::{self, PolicyChange};
use backend_docker::sidecar_config::EgressExtras;
use backend_docker::state::{self, COMPOSE_FILE};
use compose_render::{AGENT_SERVICE, LABEL_ROLE};

use crate::args::{EgressCommand, TestingArgs};
use crate::commands::plan_cmd::unknown_agent;
use crate::progress::TerminalProgress;
use crate::{CliError, engine, host, loaded, output};

pub(crate) fn user_error(error: BackendError) -> CliError {
    CliError::User(error.to_string())
}

/// The state root, absolute: it is also a label value that `ls` and `gc` match.
pub(crate) fn state_root() -> Result<std::path::PathBuf, CliError> {
    let root = state::state_root(&host::environment()).map_err(user_error)?;
    Ok(std::path::absolute(&root).unwrap_or(root))
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `bottle start AGENT [-d]`.
pub fn start(
    path: &Path,
    agent: &str,
    detach: bool,
    testing: &TestingArgs,
) -> Result<(), CliError> {
    let loaded = loaded::load(path, false)?;
    let plan = loaded
        .plan
        .bottle_plan(agent, host::slug_entropy())
        .ok_or_else(|| unknown_agent(agent, &loaded))?;
    let backend = engine::backend()?;
    let state_root = state_root()?;
    state::create_private_dir(&state_root).map_err(user_error)?;
    let manifest_bytes = std::fs::read(path)
        .map_err(|e| CliError::User(format!("reading {}: {e}", path.display())))?;
    let mut extras = EgressExtras {
        extra_ca_bundle: testing.egress_extra_ca.clone(),
        ..EgressExtras::default()
    };
    for entry in &testing.egress_static_host {
        let (name, ip) = entry
            .split_once('=')
            .and_then(|(n, ip)| Some((n.to_owned(), ip.parse().ok()?)))
            .ok_or_else(|| {
                CliError::User(format!("--egress-static-host `{entry}`: expected NAME=IP"))
            })?;
        extras.static_hosts.insert(name, ip);
    }
    let options = LaunchOptions {
        state_root: state_root.clone(),
        manifest: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
        manifest_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&manifest_bytes)),
        sidecar_image: engine::sidecar_image(),
        sidecar_user: host::owner_of(&state_root),
        egress_network_internal: testing.egress_network_internal,
        egress_network: testing.egress_network.clone(),
        egress_extras: extras,
        health_timeout: Duration::from_secs(testing.health_timeout),
        now_unix: now_unix(),
        launcher_pid: std::process::id(),
    };
    // Ctrl-C and SIGTERM set a flag: the launch stops at the next step and tears
    // down; while attached, the agent (in the docker CLI) gets the terminal's signals.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .map_err(|e| CliError::Internal(format!("installing a signal handler: {e}")))?;
    }
    let mut progress = TerminalProgress::new();
    let check = || interrupted.load(Ordering::SeqCst);
    let handle =
        launch(backend.as_ref(), &plan, &options, &mut progress, &check).map_err(user_error)?;
    let slug = handle.metadata.slug.clone();
    if detach {
        output::print(&format!("{slug}\n"));
        return Ok(());
    }
    progress.note(&format!(
        "attached to {slug}; exit the agent to tear the bottle down"
    ));
    let result = backend.exec_interactive(&ExecSpec {
        container: handle.metadata.agent_container.clone(),
        user: None,
        workdir: Some(plan.agent.workdir.display().to_string()),
        command: plan.agent.command.clone(),
        stdin: None,
    });
    progress.note(&format!("tearing down {slug}"));
    let problems = ops::down(backend.as_ref(), &state_root, &slug).map_err(user_error)?;
    for problem in &problems {
        output::error(&format!("teardown: {problem}"));
    }
    match result {
        Ok(0) => Ok(()),
        Ok(code) => Err(CliError::User(format!(
            "the agent exited with status {code}"
        ))),
        Err(error) => Err(user_error(error)),
    }
}

/// `bottle ls [--json]`.
pub fn ls(json: bool) -> Result<(), CliError> {
    let backend = engine::backend()?;
    let bottles = ops::list(backend.as_ref(), &state_root()?).map_err(user_error)?;
    let now = now_unix().max(0) as u64;
    if json {
        let items: Vec<serde_json::Value> = bottles
            .iter()
            .map(|b| {
                serde_json::json!({
                    "slug": b.slug,
                    "agent": b.metadata.as_ref().map(|m| m.agent.clone()),
                    "created": b.metadata.as_ref().map(|m| m.created),
                    "ready": b.metadata.as_ref().is_some_and(|m| m.ready),
                    "running": b.running(),
                    "manifest_changed": manifest_changed(b),
                    "state_dir": b.state_dir,
                    "services": b.containers.iter().map(|c| serde_json::json!({
                        "name": c.name,
                        "role": c.labels.get(LABEL_ROLE),
                        "state": c.state,
                        "health": c.health,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let mut text =
            serde_json::to_string_pretty(&items).map_err(|e| CliError::Internal(e.to_string()))?;
        text.push('\n');
        output::print(&text);
        return Ok(());
    }
    if bottles.is_empty() {
        output::print("no bottles\n");
        return Ok(());
    }
    let mut text = format!(
        "{:<24} {:<16} {:>6} {:<10} {:<34} {}\n",
        "SLUG", "AGENT", "AGE", "STATE", "SERVICES", "STATE DIR"
    );
    for b in &bottles {
        let agent = b.metadata.as_ref().map_or("?", |m| m.agent.as_str());
        let age = b.metadata.as_ref().map_or_else(
            || "?".to_owned(),
            |m| human_age(now.saturating_sub(m.created)),
        );
        let state = match (&b.metadata, b.running()) {
            (_, true) if manifest_changed(b) => "running*",
            (_, true) => "running",
            (Some(m), false) if !m.ready => "starting",
            (None, _) => "orphaned",
            _ => "stopped",
        };
        let mut services: Vec<String> = b
            .containers
            .iter()
            .map(|c| {
                let role = c
                    .labels
                    .get(LABEL_ROLE)
                    .cloned()
                    .unwrap_or_else(|| c.name.clone());
                match c.health.as_deref() {
                    Some("healthy") | None if c.state == "running" => role,
                    _ => format!(
                        "{role}({})",
                        c.health.clone().unwrap_or_else(|| c.state.clone())
                    ),
                }
            })
            .collect();
        services.sort();
        let _ = writeln!(
            text,
            "{:<24} {agent:<16} {age:>6} {state:<10} {:<34} {}",
            b.slug,
            services.join(","),
            b.state_dir.display()
        );
    }
    if bottles.iter().any(manifest_changed) {
        text.push_str(
            "* the manifest changed since the bottle started: restart it to apply the changes\n",
        );
    }
    output::print(&text);
    Ok(())
}

/// Whether the manifest a bottle started from changed since (or is gone).
fn manifest_changed(bottle: &ops::BottleStatus) -> bool {
    bottle.metadata.as_ref().is_some_and(|m| {
        std::fs::read(&m.manifest)
            .map(|bytes| {
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)) != m.manifest_sha256
            })
            .unwrap_or(true)
    })
}

fn human_age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `bottle exec SLUG -- CMD...`: exits with the command's status.
pub fn exec(slug: &str, command: Vec<String>) -> Result<(), CliError> {
    let backend = engine::backend()?;
    let bottle = ops::find(backend.as_ref(), &state_root()?, slug).map_err(user_error)?;
    let agent = bottle
        .containers
        .iter()
        .find(|c| {
            c.labels.get(LABEL_ROLE).is_some_and(|r| r == AGENT_SERVICE) && c.state == "running"
        })
        .ok_or_else(|| CliError::User(format!("the agent container of {slug} is not running")))?;
    let code = backend
        .exec_interactive(&ExecSpec {
            container: agent.name.clone(),
            user: None,
            workdir: None,
            command,
            stdin: None,
        })
        .map_err(user_error)?;
    if code == 0 {
        Ok(())
    } else {
        std::process::exit(code)
    }
}

/// `bottle logs SLUG [-f]`: compose logs and the egress audit log, secrets redacted.
pub fn logs(slug: &str, follow: bool) -> Result<(), CliError> {
    let backend = engine::backend()?;
    let bottle = ops::find(backend.as_ref(), &state_root()?, slug).map_err(user_error)?;
    let secrets = ops::running_secrets(&bottle);
    let compose_file = bottle.state_dir.join(COMPOSE_FILE);
    if !compose_file.exists() {
        return Err(CliError::User(format!(
            "{slug} has no compose file (its launch did not get that far)"
        )));
    }
    let project = bottle.metadata.as_ref().map_or_else(
        || format!("bot-bottle-{slug}"),
        |m| m.compose_project.clone(),
    );
    let mut args = vec![
        "logs".to_owned(),
        "--no-color".to_owned(),
        "--timestamps".to_owned(),
    ];
    if follow {
        args.push("--follow".to_owned());
    }
    let call = ComposeCall {
        project,
        file: compose_file,
        args,
        env: Vec::new(),
    };
    if !follow {
        for audit in ["egress.jsonl", "git-gate.jsonl"] {
            if let Ok(text) = std::fs::read_to_string(bottle.state_dir.join("audit").join(audit)) {
                let text = output::escape_controls(&redact(&text, &secrets));
                output::print(&format!("== {audit} ==\n{text}"));
            }
        }
        output::print("== compose logs ==\n");
    }
    backend
        .compose_follow(&call, &mut |line| {
            output::print(&format!(
                "{}\n",
                output::escape_controls(&redact(line, &secrets))
            ))
        })
        .map_err(user_error)?;
    Ok(())
}

/// `bottle down SLUG`.
pub fn down(slug: &str) -> Result<(), CliError> {
    let backend = engine::backend()?;
    let root = state_root()?;
    let problems = ops::down(backend.as_ref(), &root, slug).map_err(user_error)?;
    report_problems(&problems)?;
    output::print(&format!(
        "{slug}: removed (log kept in {})\n",
        root.join("logs").display()
    ));
    Ok(())
}

fn report_problems(problems: &[BackendError]) -> Result<(), CliError> {
    for problem in problems {
        output::error(&problem.to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::User(format!("{} step(s) failed", problems.len())))
    }
}

/// `bottle gc [--dry-run]`.
pub fn gc(dry_run: bool) -> Result<(), CliError> {
    let backend = engine::backend()?;
    let (garbage, problems) =
        ops::gc(backend.as_ref(), &state_root()?, dry_run, &host::pid_alive).map_err(user_error)?;
    let mut text = String::new();
    for item in &garbage {
        let _ = writeln!(
            text,
            "{} {} ({:?})",
            if dry_run { "would remove" } else { "removed" },
            item.slug,
            item.reason
        );
        for resource in &item.resources {
            let _ = writeln!(text, "  {resource}");
        }
    }
    if garbage.is_empty() {
        text.push_str("nothing to collect\n");
    }
    output::print(&text);
    report_problems(&problems)
}

/// `bottle egress allow|deny SLUG HOST[:PORT]`.
pub fn egress(command: EgressCommand) -> Result<(), CliError> {
    let (slug, host, allow) = match command {
        EgressCommand::Allow { slug, host } => (slug, host, true),
        EgressCommand::Deny { slug, host } => (slug, host, false),
    };
    let (host, port) = ops::parse_host_port(&host).map_err(user_error)?;
    let change = if allow {
        PolicyChange::Allow {
            host,
            port,
            methods: None,
        }
    } else {
        PolicyChange::Deny { host, port }
    };
    let backend = engine::backend()?;
    let version = ops::change_egress(
        backend.as_ref(),
        &state_root()?,
        &slug,
        &change,
        Duration::from_secs(15),
    )
    .map_err(user_error)?;
    output::print(&format!(
        "{slug}: egress policy {} is live\n",
        &version[..12.min(version.len())]
    ));
    Ok(())
}
