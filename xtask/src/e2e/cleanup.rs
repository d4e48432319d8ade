//! Cleanup: everything a run created is found again by label (`dev.bot-bottle.e2e=<run>`
//! on the fake internet, `dev.bot-bottle.slug=<slug>` on bottles) or by its run
//! directory, and removed: at the end of a run, on SIGINT/SIGTERM, and at the start of
//! the next run for runs that died without cleaning up.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::sh::{self, Interrupted, cmd};
use super::{LABEL, Run};

/// The file in a run directory listing the slugs the run created.
const SLUGS_FILE: &str = "slugs";
/// Run directories are `<tmp>/<RUN_DIR_PREFIX><pid>`.
pub const RUN_DIR_PREFIX: &str = "bot-bottle-e2e-";

/// The run directory of run `id` (`e2e-<pid>`).
pub fn run_dir(id: &str) -> PathBuf {
    let pid = id.trim_start_matches("e2e-");
    std::env::temp_dir().join(format!("{RUN_DIR_PREFIX}{pid}"))
}

/// The project directory bottles of run `id` are started from (their agent's
/// working directory): outside /tmp, which a bottle's disk limit turns into an empty
/// tmpfs inside the agent.
pub fn project_dir(id: &str) -> PathBuf {
    let pid = id.trim_start_matches("e2e-");
    Path::new("/var/tmp").join(format!("{RUN_DIR_PREFIX}{pid}"))
}

/// Adds every slug in the run's state root to the run's slug list.
pub fn record_slugs(run: &Run) {
    let mut slugs = slugs_of(&run.dir);
    slugs.extend(state_dirs(&run.state_root));
    let text: String = slugs.iter().map(|s| format!("{s}\n")).collect();
    let _ = fs::write(run.dir.join(SLUGS_FILE), text);
}

pub fn state_dirs(state_root: &Path) -> BTreeSet<String> {
    fs::read_dir(state_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // Logs and the agents' kept sessions are not bottles.
        .filter(|n| n != "logs" && n != "agents")
        .collect()
}

fn slugs_of(dir: &Path) -> BTreeSet<String> {
    let mut slugs: BTreeSet<String> = fs::read_to_string(dir.join(SLUGS_FILE))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    slugs.extend(state_dirs(&dir.join("state")));
    slugs
}

/// Removes everything of run `id`: its bottles (`bottle down`, then by label), its
/// fake internet (by label), its derived images, its run directory. Never fails;
/// returns what it could not remove.
pub fn clean_run(id: &str, bottle_bin: &Path) -> Vec<String> {
    // A fresh flag: cleanup runs to the end even after an interrupt.
    let never: Interrupted = Arc::new(AtomicBool::new(false));
    let dir = run_dir(id);
    let mut problems = Vec::new();
    for slug in slugs_of(&dir) {
        if dir.join("state").join(&slug).exists() {
            let mut down = cmd(bottle_bin.to_str().unwrap_or("bottle"), &["down", &slug]);
            down.env("BOT_BOTTLE_STATE_DIR", dir.join("state"));
            let _ = sh::run_with(down, Duration::from_secs(120), &never);
        }
        let label = format!("{}={slug}", "dev.bot-bottle.slug");
        problems.extend(remove_labelled(&label, &never));
        let _ = sh::run(
            cmd("docker", &["rmi", &format!("bot-bottle/derived:{slug}")]),
            &never,
        );
    }
    problems.extend(remove_labelled(&format!("{LABEL}={id}"), &never));
    // Images tagged for the run (and any derived from them).
    let images = sh::run(
        cmd(
            "docker",
            &["images", "-q", "--filter", &format!("label={LABEL}={id}")],
        ),
        &never,
    )
    .map(|o| {
        o.stdout
            .split_whitespace()
            .map(str::to_string)
            .collect::<BTreeSet<_>>()
    })
    .unwrap_or_default();
    // Children (derived images) before parents: retry what failed, a few rounds.
    let mut pending: Vec<String> = images.into_iter().collect();
    for _ in 0..4 {
        pending.retain(|image| {
            !sh::run(cmd("docker", &["rmi", "-f", image]), &never).is_ok_and(|o| o.success())
        });
    }
    if !pending.is_empty() {
        problems.push(format!("images left: {}", pending.join(" ")));
    }
    for dir in [dir, project_dir(id)] {
        if dir.exists()
            && let Err(e) = fs::remove_dir_all(&dir)
        {
            problems.push(format!("removing {}: {e}", dir.display()));
        }
    }
    problems
}

/// `docker rm -f` the containers and `docker network rm` the networks with `label`.
fn remove_labelled(label: &str, never: &Interrupted) -> Vec<String> {
    let mut problems = Vec::new();
    let filter = format!("label={label}");
    let list = |args: &[&str]| {
        sh::run(cmd("docker", args), never)
            .map(|o| {
                o.stdout
                    .lines()
                    .map(str::to_string)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let containers = list(&["ps", "-aq", "--filter", &filter]);
    if !containers.is_empty() {
        let mut rm = cmd("docker", &["rm", "-f", "-v"]);
        rm.args(&containers);
        if let Err(e) = sh::ok(rm, never) {
            problems.push(e);
        }
    }
    let networks = list(&["network", "ls", "-q", "--filter", &filter]);
    if !networks.is_empty() {
        let mut rm = cmd("docker", &["network", "rm"]);
        rm.args(&networks);
        if let Err(e) = sh::ok(rm, never) {
            problems.push(e);
        }
    }
    problems
}

/// Runs of dead e2e processes: ids found on labelled containers and networks and on
/// run directories, whose process is gone.
pub fn stale_runs(own: &str) -> Vec<String> {
    let never: Interrupted = Arc::new(AtomicBool::new(false));
    let mut ids = BTreeSet::new();
    let filter = format!("label={LABEL}");
    let format = format!("{{{{.Label \"{LABEL}\"}}}}");
    for args in [
        vec!["ps", "-a", "--filter", &filter, "--format", &format],
        vec!["network", "ls", "--filter", &filter, "--format", &format],
    ] {
        if let Ok(out) = sh::run(cmd("docker", &args), &never) {
            ids.extend(out.stdout.lines().map(str::trim).map(str::to_string));
        }
    }
    // `docker images --format` has no `.Label`: inspect the labelled images instead.
    let images = sh::run(
        cmd("docker", &["images", "-q", "--filter", &filter]),
        &never,
    )
    .map(|o| {
        o.stdout
            .split_whitespace()
            .map(str::to_string)
            .collect::<BTreeSet<_>>()
    })
    .unwrap_or_default();
    if !images.is_empty() {
        let mut inspect = cmd(
            "docker",
            &[
                "image",
                "inspect",
                "--format",
                &format!("{{{{index .Config.Labels \"{LABEL}\"}}}}"),
            ],
        );
        inspect.args(&images);
        if let Ok(out) = sh::run(inspect, &never) {
            ids.extend(out.stdout.lines().map(str::trim).map(str::to_string));
        }
    }
    for entry in fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(RUN_DIR_PREFIX) {
            ids.insert(format!("e2e-{pid}"));
        }
    }
    ids.into_iter()
        .filter(|id| id.starts_with("e2e-") && id != own && !alive(id))
        .collect()
}

/// Whether the xtask process of run `id` still runs.
fn alive(id: &str) -> bool {
    let pid = id.trim_start_matches("e2e-");
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "xtask")
}
