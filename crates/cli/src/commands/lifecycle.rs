//! `ls`, `exec`, `logs`, `down`, `gc` and `egress allow|deny`.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backend_docker::BackendError;
use backend_docker::backend::{ComposeCall, ExecSpec};
use backend_docker::launch::redact;
use backend_docker::ops::{self, PolicyChange};
use backend_docker::state::{self, COMPOSE_FILE};
use compose_render::{AGENT_SERVICE, LABEL_ROLE};

use crate::args::EgressCommand;
use crate::{CliError, engine, host, output};

pub(crate) fn user_error(error: BackendError) -> CliError {
    CliError::User(error.to_string())
}

/// The state root, absolute: it is also a label value that `ls` and `gc` match.
pub(crate) fn state_root() -> Result<std::path::PathBuf, CliError> {
    let root = state::state_root(&host::environment()).map_err(user_error)?;
    Ok(std::path::absolute(&root).unwrap_or(root))
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
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
        Err(CliError::Exit(code))
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
pub fn down(slug: &str, purge: bool) -> Result<(), CliError> {
    let backend = engine::backend()?;
    let root = state_root()?;
    let agent = if purge {
        let bottle = ops::find(backend.as_ref(), &root, slug).map_err(user_error)?;
        Some(bottle.metadata.map(|m| m.agent).ok_or_else(|| {
            CliError::User(format!(
                "{slug} has no metadata, so its agent is unknown: nothing to purge"
            ))
        })?)
    } else {
        None
    };
    let problems = ops::down(backend.as_ref(), &root, slug).map_err(user_error)?;
    report_problems(&problems)?;
    output::print(&format!(
        "{slug}: removed (log kept in {})\n",
        root.join("logs").display()
    ));
    if let Some(agent) = agent {
        let removed = ops::purge_agent_state(&root, &agent).map_err(user_error)?;
        output::print(&if removed {
            format!("{agent}: sessions and memory removed\n")
        } else {
            format!("{agent}: nothing kept to remove\n")
        });
    }
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
