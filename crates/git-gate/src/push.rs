//! Deciding one push and forwarding it: the policy is checked for every
//! ref before anything leaves the gate; only a push whose every ref passes
//! is sent upstream, with a lease on each ref's old id, and the agent gets
//! the upstream's own answer.

use std::path::{Path, PathBuf};

use crate::audit::{AuditEntry, Operation, RefChange};
use crate::git;
use crate::hook::HookRequest;
use crate::mirror::Mirror;
use crate::policy::{self, MirrorFacts, RefUpdate, Refusal};

/// The verdict for the hook plus what the gate must remember.
#[derive(Debug)]
pub struct PushOutcome {
    /// Lines for the agent (shown as `remote:` lines).
    pub messages: Vec<String>,
    /// Whether receive-pack may update the mirror's refs.
    pub accept: bool,
    /// The upstream was contacted and did not accept: the mirror must be
    /// refreshed so it keeps matching the upstream.
    pub upstream_failed: bool,
    /// The audit line for this push.
    pub audit: AuditEntry,
}

/// Checks every update against the policy, then pushes upstream if all pass.
pub async fn decide_and_forward(mirror: &Mirror, request: &HookRequest) -> PushOutcome {
    let name = &mirror.upstream.name;
    let requested = |result: &str| -> Vec<RefChange> {
        request
            .updates
            .iter()
            .map(|update| ref_change(update, result))
            .collect()
    };
    if !request.malformed.is_empty() {
        let detail = format!("unreadable hook input {:?}", request.malformed);
        return refused(name, requested("refused"), vec![detail]);
    }
    let quarantine = match request
        .quarantine
        .as_deref()
        .map(|q| checked_quarantine(mirror, q))
    {
        Some(Err(detail)) => return refused(name, requested("refused"), vec![detail]),
        Some(Ok(path)) => Some(path),
        None => None,
    };

    let mut verdicts = Vec::with_capacity(request.updates.len());
    for update in &request.updates {
        match gather_facts(mirror, quarantine.as_deref(), update).await {
            Ok(facts) => verdicts.push(policy::check(&mirror.upstream, update, &facts)),
            Err(error) => {
                let detail = format!("{}: checking the push failed: {error}", update.refname);
                return refused(name, requested("error"), vec![detail]);
            }
        }
    }
    if verdicts.iter().any(Result::is_err) {
        return refuse_by_policy(name, &request.updates, &verdicts);
    }
    forward(mirror, quarantine.as_deref(), &request.updates).await
}

/// The quarantine directory must lie inside this mirror's object store.
fn checked_quarantine(mirror: &Mirror, quarantine: &Path) -> Result<PathBuf, String> {
    let path = mirror.path.join(quarantine);
    let objects = mirror.path.join("objects");
    let inside = path.starts_with(&objects)
        && path
            .components()
            .all(|c| !matches!(c, std::path::Component::ParentDir));
    if inside {
        Ok(path)
    } else {
        Err(format!(
            "quarantine {} is outside the mirror",
            quarantine.display()
        ))
    }
}

async fn gather_facts(
    mirror: &Mirror,
    quarantine: Option<&Path>,
    update: &RefUpdate,
) -> Result<MirrorFacts, crate::Error> {
    let current = git::ref_id(&mirror.path, &update.refname).await?;
    let fast_forward = if update.is_create() || update.is_delete() {
        false
    } else {
        git::is_fast_forward(&mirror.path, quarantine, &update.old, &update.new).await?
    };
    Ok(MirrorFacts {
        current,
        fast_forward,
    })
}

fn refuse_by_policy(
    name: &str,
    updates: &[RefUpdate],
    verdicts: &[Result<(), Refusal>],
) -> PushOutcome {
    let mut messages = Vec::new();
    let mut refs = Vec::new();
    for (update, verdict) in updates.iter().zip(verdicts) {
        match verdict {
            Err(refusal) => {
                messages.push(format!("git-gate: {}: {refusal}", update.refname));
                refs.push(ref_change(update, &format!("refused: {refusal}")));
            }
            Ok(()) => {
                messages.push(format!(
                    "git-gate: {}: allowed, but not pushed because other refs were refused",
                    update.refname
                ));
                refs.push(ref_change(update, "not pushed"));
            }
        }
    }
    messages.push("git-gate: push refused; nothing was sent upstream".into());
    let detail = messages.join("\n");
    PushOutcome {
        messages,
        accept: false,
        upstream_failed: false,
        audit: AuditEntry::now(name, Operation::Push, refs, "refused").with_detail(detail),
    }
}

fn refused(name: &str, refs: Vec<RefChange>, details: Vec<String>) -> PushOutcome {
    let mut messages: Vec<String> = details.iter().map(|d| format!("git-gate: {d}")).collect();
    messages.push("git-gate: push refused; nothing was sent upstream".into());
    PushOutcome {
        messages,
        accept: false,
        upstream_failed: false,
        audit: AuditEntry::now(name, Operation::Push, refs, "refused")
            .with_detail(details.join("\n")),
    }
}

/// Pushes the accepted updates to the upstream by URL (never through the
/// mirror's `origin` remote, whose mirror setting would push every ref).
async fn forward(mirror: &Mirror, quarantine: Option<&Path>, updates: &[RefUpdate]) -> PushOutcome {
    let name = &mirror.upstream.name;
    let mut command = git::git(&mirror.path);
    git::with_quarantine(&mut command, &mirror.path, quarantine);
    command
        .env("GIT_SSH_COMMAND", git::ssh_command(&mirror.upstream))
        .args(["push", "--porcelain", "--no-verify"]);
    if updates.len() > 1 {
        command.arg("--atomic");
    }
    for update in updates {
        let expect = if update.is_create() { "" } else { &update.old };
        command.arg(format!("--force-with-lease={}:{expect}", update.refname));
    }
    command.arg("--").arg(&mirror.upstream.url);
    for update in updates {
        if update.is_delete() {
            command.arg(format!(":{}", update.refname));
        } else {
            command.arg(format!("{}:{}", update.new, update.refname));
        }
    }

    let output = match git::output(command).await {
        Ok(output) => output,
        Err(error) => {
            let detail = format!("starting the upstream push failed: {error}");
            let refs = updates.iter().map(|u| ref_change(u, "error")).collect();
            return refused(name, refs, vec![detail]);
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let statuses = porcelain_statuses(&stdout);
    let succeeded = output.status.success();

    let mut messages = Vec::new();
    let mut refs = Vec::new();
    for update in updates {
        let status = statuses.get(update.refname.as_str());
        let result = match (succeeded, status) {
            (true, _) => "pushed".to_owned(),
            (false, Some((flag, summary))) if *flag == '!' => {
                format!("upstream rejected: {summary}")
            }
            (false, Some((_, summary))) => format!("not pushed: {summary}"),
            (false, None) => "not pushed".to_owned(),
        };
        messages.push(format!("git-gate: {}: {result}", update.refname));
        refs.push(ref_change(update, &result));
    }
    if succeeded {
        PushOutcome {
            messages,
            accept: true,
            upstream_failed: false,
            audit: AuditEntry::now(name, Operation::Push, refs, "ok"),
        }
    } else {
        for line in stderr.lines().filter(|line| !line.trim().is_empty()) {
            messages.push(format!("git-gate: upstream: {line}"));
        }
        messages.push(
            "git-gate: the upstream did not accept the push; the mirror keeps the upstream's refs"
                .into(),
        );
        PushOutcome {
            messages,
            accept: false,
            upstream_failed: true,
            audit: AuditEntry::now(name, Operation::Push, refs, "error")
                .with_detail(stderr.trim().to_owned()),
        }
    }
}

/// Per-ref `(flag, summary)` from `git push --porcelain` output lines
/// `FLAG \t FROM:TO \t SUMMARY`.
fn porcelain_statuses(stdout: &str) -> std::collections::HashMap<&str, (char, &str)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let flag = fields.next()?.chars().next()?;
            let (_, to) = fields.next()?.split_once(':')?;
            let summary = fields.next().unwrap_or("");
            Some((to, (flag, summary)))
        })
        .collect()
}

fn ref_change(update: &RefUpdate, result: &str) -> RefChange {
    let id = |id: &str| (!policy::is_zero_id(id)).then(|| id.to_owned());
    RefChange {
        refname: update.refname.clone(),
        old: id(&update.old),
        new: id(&update.new),
        result: result.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_porcelain_push_output() {
        let out = concat!(
            "To ssh://h/r.git\n",
            "!\t1111:refs/heads/a\t[rejected] (stale info)\n",
            " \t2222:refs/heads/b\t[up to date]\n",
            "*\t3333:refs/heads/c\t[new branch]\n",
            "Done\n",
        );
        let statuses = porcelain_statuses(out);
        assert_eq!(statuses["refs/heads/a"], ('!', "[rejected] (stale info)"));
        assert_eq!(statuses["refs/heads/c"], ('*', "[new branch]"));
        assert_eq!(statuses.len(), 3);
    }
}
