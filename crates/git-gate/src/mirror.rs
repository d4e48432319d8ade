//! The bare mirror the gate keeps for each upstream: created on start,
//! refreshed from the upstream before the agent fetches, and guarded by a
//! lock so pushes and refreshes of one upstream never interleave.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::config::UpstreamConfig;
use crate::git;
use crate::hook;
use crate::{Error, audit::RefChange};

/// One upstream's mirror and its serialization lock.
#[derive(Debug)]
pub struct Mirror {
    /// The upstream as configured.
    pub upstream: UpstreamConfig,
    /// Absolute path of the bare repository (`MIRRORS_DIR/NAME.git`).
    pub path: PathBuf,
    lock: Arc<Mutex<()>>,
}

impl Mirror {
    /// Creates (or adopts) the bare mirror and (re)installs the gate's hook
    /// and remote, so a changed config takes effect on restart.
    pub async fn prepare(mirrors_dir: &Path, upstream: UpstreamConfig) -> Result<Self, Error> {
        let path = git::absolute(&mirrors_dir.join(format!("{}.git", upstream.name)));
        if !path.join("HEAD").exists() {
            let mut command = tokio::process::Command::new("git");
            command
                .args(["init", "--bare", "--quiet"])
                .arg(&path)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env_remove("GIT_DIR");
            git::checked(command).await?;
        }
        for (key, value) in [
            ("remote.origin.url", upstream.url.as_str()),
            ("remote.origin.fetch", "+refs/*:refs/*"),
            ("remote.origin.mirror", "true"),
            ("gc.auto", "0"),
            ("core.logAllRefUpdates", "false"),
            ("receive.fsckObjects", "true"),
            // Partial clones (`--filter=blob:none`) of big upstreams.
            ("uploadpack.allowFilter", "true"),
        ] {
            let mut command = git::git(&path);
            command.args(["config", key, value]);
            git::checked(command).await?;
        }
        hook::install(&path)?;
        Ok(Self {
            upstream,
            path,
            lock: Arc::new(Mutex::new(())),
        })
    }

    /// Waits for exclusive use of this upstream (pushes, refreshes).
    pub async fn lock(&self) -> OwnedMutexGuard<()> {
        Arc::clone(&self.lock).lock_owned().await
    }

    /// Fetches everything from the upstream into the mirror (pruning refs
    /// the upstream no longer has) and reports which refs changed. The
    /// caller holds the lock.
    pub async fn refresh(&self) -> Result<Vec<RefChange>, Error> {
        let before = git::list_refs(&self.path).await?;
        let mut command = git::git(&self.path);
        command
            .env("GIT_SSH_COMMAND", git::ssh_command(&self.upstream))
            .args([
                "fetch",
                "--prune",
                "--quiet",
                "--no-write-fetch-head",
                "origin",
            ]);
        git::checked(command).await?;
        let after = git::list_refs(&self.path).await?;
        self.follow_upstream_head().await?;
        Ok(diff_refs(&before, &after))
    }

    /// Points the mirror's HEAD at the upstream's default branch when HEAD
    /// dangles (fresh mirror, renamed branch), so clones check out the
    /// branch the upstream would give them.
    async fn follow_upstream_head(&self) -> Result<(), Error> {
        let mut command = git::git(&self.path);
        command.args(["symbolic-ref", "--quiet", "HEAD"]);
        let current = git::output(command).await?;
        let current = String::from_utf8_lossy(&current.stdout).trim().to_owned();
        if !current.is_empty() && git::ref_id(&self.path, &current).await?.is_some() {
            return Ok(());
        }
        let mut command = git::git(&self.path);
        command
            .env("GIT_SSH_COMMAND", git::ssh_command(&self.upstream))
            .args(["ls-remote", "--symref", "origin", "HEAD"]);
        let output = git::checked(command).await?;
        let listing = String::from_utf8_lossy(&output.stdout);
        let target = listing.lines().find_map(|line| {
            line.strip_prefix("ref: ")
                .and_then(|rest| rest.strip_suffix("\tHEAD"))
                .map(str::to_owned)
        });
        if let Some(target) = target.filter(|target| target.starts_with("refs/heads/")) {
            let mut command = git::git(&self.path);
            command.args(["symbolic-ref", "HEAD", &target]);
            git::checked(command).await?;
        }
        Ok(())
    }
}

/// Ref-by-ref difference between two sorted listings (old/new ids; an
/// absent side is None).
fn diff_refs(before: &[(String, String)], after: &[(String, String)]) -> Vec<RefChange> {
    let before: std::collections::BTreeMap<_, _> = before.iter().cloned().collect();
    let after: std::collections::BTreeMap<_, _> = after.iter().cloned().collect();
    let names: std::collections::BTreeSet<_> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|name| before.get(*name) != after.get(*name))
        .map(|name| RefChange {
            refname: name.clone(),
            old: before.get(name).cloned(),
            new: after.get(name).cloned(),
            result: "updated".into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_reports_created_moved_and_deleted_refs() {
        let before = vec![
            ("refs/heads/a".to_owned(), "1".to_owned()),
            ("refs/heads/b".to_owned(), "2".to_owned()),
            ("refs/heads/same".to_owned(), "3".to_owned()),
        ];
        let after = vec![
            ("refs/heads/b".to_owned(), "4".to_owned()),
            ("refs/heads/c".to_owned(), "5".to_owned()),
            ("refs/heads/same".to_owned(), "3".to_owned()),
        ];
        let changes = diff_refs(&before, &after);
        let summary: Vec<_> = changes
            .iter()
            .map(|c| (c.refname.as_str(), c.old.as_deref(), c.new.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("refs/heads/a", Some("1"), None),
                ("refs/heads/b", Some("2"), Some("4")),
                ("refs/heads/c", None, Some("5")),
            ]
        );
    }
}
