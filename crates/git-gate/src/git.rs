//! Running `git` for the gate: one place that fixes the environment every
//! git child gets (no user or system config, no prompts, strict SSH).

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use tokio::process::Command;

use crate::Error;
use crate::config::UpstreamConfig;

/// The `GIT_SSH_COMMAND` for one upstream: its key only, its known_hosts
/// only, never a prompt, never a new host key. `-F /dev/null` keeps any
/// ssh_config of the gate's user out of the picture.
pub fn ssh_command(upstream: &UpstreamConfig) -> String {
    format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes \
         -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=30",
        shell_quote(&upstream.key_path),
        shell_quote(&upstream.known_hosts_path),
    )
}

/// Quotes a path for `sh` (git runs `GIT_SSH_COMMAND` through the shell).
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

/// A `git --git-dir=REPO` command with the gate's fixed environment.
pub fn git(repo: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .arg("--git-dir")
        .arg(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        // Only ssh reaches an upstream: no ext::, file:// or http transports.
        .env("GIT_ALLOW_PROTOCOL", "ssh")
        .env_remove("GIT_DIR")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .env_remove("GIT_QUARANTINE_PATH")
        .env_remove("GIT_SSH")
        .env_remove("GIT_SSH_COMMAND")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Points a git command at a push's quarantined objects, so it sees the
/// objects the agent just sent before receive-pack has accepted them.
pub fn with_quarantine(command: &mut Command, repo: &Path, quarantine: Option<&Path>) {
    if let Some(quarantine) = quarantine {
        command
            .env("GIT_OBJECT_DIRECTORY", quarantine)
            .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", repo.join("objects"));
    }
}

/// Renders a command for messages: program and arguments, never the environment.
pub fn describe(command: &Command) -> String {
    let command = command.as_std();
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command to completion, capturing stdout and stderr.
pub async fn output(mut command: Command) -> Result<Output, Error> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command.output().await.map_err(|source| Error::Spawn {
        command: describe(&command),
        source,
    })
}

/// Runs a command and turns a non-zero exit into [`Error::GitCommand`].
pub async fn checked(command: Command) -> Result<Output, Error> {
    let description = describe(&command);
    let output = output(command).await?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::GitCommand {
            command: description,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Every ref of a repository with its id, sorted by name.
pub async fn list_refs(repo: &Path) -> Result<Vec<(String, String)>, Error> {
    let mut command = git(repo);
    command.args(["for-each-ref", "--format=%(refname) %(objectname)"]);
    let output = checked(command).await?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(name, id)| (name.to_owned(), id.to_owned()))
        .collect())
}

/// The id a ref points at right now, or None when it does not exist.
pub async fn ref_id(repo: &Path, refname: &str) -> Result<Option<String>, Error> {
    let mut command = git(repo);
    command.args([
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        refname,
    ]);
    let output = output(command).await?;
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok((output.status.success() && !id.is_empty()).then_some(id))
}

/// Whether `new` descends from `old` (a fast-forward). Anything git cannot
/// decide (missing objects, non-commits) counts as not a fast-forward.
pub async fn is_fast_forward(
    repo: &Path,
    quarantine: Option<&Path>,
    old: &str,
    new: &str,
) -> Result<bool, Error> {
    let mut command = git(repo);
    with_quarantine(&mut command, repo, quarantine);
    command.args(["merge-base", "--is-ancestor", old, new]);
    Ok(output(command).await?.status.success())
}

/// Absolute form of a path, for paths handed to hooks and child processes.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_command_is_strict_and_quotes_paths() {
        let upstream = UpstreamConfig {
            name: "p".into(),
            url: "git@h:p.git".into(),
            key_path: "/keys/it's".into(),
            known_hosts_path: "/kh/known_hosts".into(),
            push_refs: vec![],
            allow_force_push: false,
            allow_delete: false,
            read_only: false,
        };
        let command = ssh_command(&upstream);
        assert!(command.contains(r"-i '/keys/it'\''s'"), "{command}");
        assert!(command.contains("UserKnownHostsFile='/kh/known_hosts'"));
        for option in [
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
            "IdentitiesOnly=yes",
            "GlobalKnownHostsFile=/dev/null",
        ] {
            assert!(command.contains(option), "{option} missing in {command}");
        }
    }
}
