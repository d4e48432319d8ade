//! `ls`, `exec`, `logs`, `down`, `gc` and `egress allow|deny`.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backend_api::{BottleStatus, Error as BackendError, LogSource, PolicyChange};
use backend_docker::state;

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
    let bottles = backend.list().map_err(user_error)?;
    let now = now_unix().max(0) as u64;
    if json {
        let items: Vec<serde_json::Value> = bottles
            .iter()
            .map(|b| {
                serde_json::json!({
                    "slug": b.slug,
                    "agent": b.agent,
                    "created": b.created,
                    "ready": b.ready,
                    "running": b.running(),
                    "manifest_changed": manifest_changed(b),
                    "state_dir": b.state_dir,
                    "services": b.services.iter().map(|s| serde_json::json!({
                        "name": s.name,
                        "role": s.role,
                        "state": s.state,
                        "health": s.health,
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
        let agent = b.agent.as_deref().unwrap_or("?");
        let age = b
            .created
            .map_or_else(|| "?".to_owned(), |c| human_age(now.saturating_sub(c)));
        let state = match (b.known(), b.running()) {
            (_, true) if manifest_changed(b) => "running*",
            (_, true) => "running",
            (true, false) if !b.ready => "starting",
            (false, _) => "orphaned",
            _ => "stopped",
        };
        let mut services: Vec<String> = b
            .services
            .iter()
            .map(|s| match s.health.as_deref() {
                Some("healthy") | None if s.state == "running" => s.role.clone(),
                _ => format!(
                    "{}({})",
                    s.role,
                    s.health.clone().unwrap_or_else(|| s.state.clone())
                ),
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

/// Whether the manifest a bottle started from changed since (or is gone): the
/// dashboard's answer, so `ls` and the page never disagree.
fn manifest_changed(bottle: &BottleStatus) -> bool {
    dashboard::views::manifest_changed(bottle)
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
    let code = engine::backend()?
        .attach(slug, &command, None)
        .map_err(user_error)?;
    if code == 0 {
        Ok(())
    } else {
        Err(CliError::Exit(code))
    }
}

/// `bottle logs SLUG [-f]`: the audit logs and the services' logs, secrets redacted.
pub fn logs(slug: &str, follow: bool) -> Result<(), CliError> {
    let backend = engine::backend()?;
    let mut heading = None;
    backend
        .logs(slug, follow, &mut |source, line| {
            let name = match source {
                LogSource::Audit(name) => name,
                LogSource::Services => "compose logs",
            };
            if !follow && heading != Some(name) {
                heading = Some(name);
                output::print(&format!("== {name} ==\n"));
            }
            output::print(&format!("{}\n", output::escape_controls(line)));
        })
        .map_err(user_error)
}

/// `bottle down SLUG`.
pub fn down(slug: &str, purge: bool) -> Result<(), CliError> {
    let backend = engine::backend()?;
    let root = state_root()?;
    let agent = if purge {
        let bottle = backend.find(slug).map_err(user_error)?;
        Some(bottle.agent.ok_or_else(|| {
            CliError::User(format!(
                "{slug} has no metadata, so its agent is unknown: nothing to purge"
            ))
        })?)
    } else {
        None
    };
    let problems = backend.down(slug).map_err(user_error)?;
    report_problems(&problems)?;
    output::print(&format!(
        "{slug}: removed (log kept in {})\n",
        root.join("logs").display()
    ));
    if let Some(agent) = agent {
        let removed = backend.purge_agent(&agent).map_err(user_error)?;
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
    let report = engine::backend()?.gc(dry_run).map_err(user_error)?;
    let (garbage, problems) = (report.garbage, report.problems);
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
    let (host, port) = backend_api::parse_host_port(&host).map_err(user_error)?;
    let change = if allow {
        PolicyChange::Allow {
            host,
            port,
            methods: None,
        }
    } else {
        PolicyChange::Deny { host, port }
    };
    let version = engine::backend()?
        .apply_egress(&slug, &change, Duration::from_secs(15))
        .map_err(user_error)?;
    output::print(&format!(
        "{slug}: egress policy {} is live\n",
        &version[..12.min(version.len())]
    ));
    Ok(())
}
