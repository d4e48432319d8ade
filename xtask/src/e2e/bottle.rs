//! Bottles driven through the real `bottle` CLI, with this run's state root.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::Run;
use super::sh::{self, Out, cmd};

/// The agent name in `fixtures/e2e/bottle.yaml.in`.
pub const AGENT: &str = "e2e";

/// One running bottle.
#[derive(Clone, Debug)]
pub struct Bottle {
    pub slug: String,
    /// The agent container's name (from metadata.json).
    pub agent: String,
    pub state_dir: PathBuf,
}

impl Run {
    /// `bottle ARGS` with this run's state root and the route token in its environment.
    pub fn bottle_cmd<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(&self.bottle_bin);
        c.args(args)
            .current_dir(&self.project)
            .env("BOT_BOTTLE_STATE_DIR", &self.state_root)
            .env("E2E_ECHO_TOKEN", &self.token)
            .env("E2E_APP_SECRET", &self.app_secret)
            .env_remove("BOT_BOTTLE_SIDECAR_IMAGE");
        c
    }

    /// `bottle start e2e -d` with the fake internet's settings; its arguments.
    pub fn start_args(&self) -> Vec<String> {
        self.start_args_for(&self.manifest)
    }

    /// [`Run::start_args`] with another manifest.
    pub fn start_args_for(&self, manifest: &std::path::Path) -> Vec<String> {
        let net = self.net();
        let mut args: Vec<String> = vec![
            "start".into(),
            AGENT.into(),
            "-d".into(),
            "-f".into(),
            manifest.display().to_string(),
            "--egress-network".into(),
            net.network.clone(),
            "--egress-extra-ca".into(),
            net.ca_pem.display().to_string(),
            "--health-timeout".into(),
            "90".into(),
        ];
        for host in net.static_hosts() {
            args.push("--egress-static-host".into());
            args.push(host);
        }
        args
    }

    /// Starts a bottle and reads its metadata.
    pub fn start_bottle(&self) -> Result<Bottle, String> {
        self.start_bottle_from(&self.manifest)
    }

    /// [`Run::start_bottle`] from another manifest.
    pub fn start_bottle_from(&self, manifest: &std::path::Path) -> Result<Bottle, String> {
        self.start_detached(self.bottle_cmd(&self.start_args_for(manifest)))
            .map(|(bottle, _)| bottle)
    }

    /// Runs `start`, a `bottle start -d` command, and reads the bottle it printed;
    /// also the launcher's output.
    pub fn start_detached(&self, start: Command) -> Result<(Bottle, Out), String> {
        let out = sh::run_with(start, Duration::from_secs(240), &self.interrupted)?;
        // Remember every slug this run created, even half-started ones, for cleanup.
        super::cleanup::record_slugs(self);
        let out = out.ok()?;
        let slug = out
            .stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(|| format!("`bottle start` printed no slug\n{}", out.explain()))?
            .to_string();
        Ok((self.bottle(&slug)?, out))
    }

    /// A started bottle by slug, from its metadata.json.
    pub fn bottle(&self, slug: &str) -> Result<Bottle, String> {
        let state_dir = self.state_root.join(slug);
        let path = state_dir.join("metadata.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let meta: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
        let agent = meta["agent_container"]
            .as_str()
            .ok_or_else(|| format!("{} has no agent_container", path.display()))?
            .to_string();
        Ok(Bottle {
            slug: slug.to_string(),
            agent,
            state_dir,
        })
    }

    /// Runs `script` with `sh -c` in the agent container as the agent's user.
    pub fn agent_sh(&self, bottle: &Bottle, script: &str) -> Result<Out, String> {
        sh::run_with(
            cmd("docker", &["exec", &bottle.agent, "sh", "-c", script]),
            Duration::from_secs(60),
            &self.interrupted,
        )
    }

    /// Runs `script` as root in the agent container (inspection only).
    pub fn agent_root_sh(&self, bottle: &Bottle, script: &str) -> Result<Out, String> {
        sh::run_with(
            cmd(
                "docker",
                &["exec", "-u", "root", &bottle.agent, "sh", "-c", script],
            ),
            Duration::from_secs(60),
            &self.interrupted,
        )
    }

    /// The name of `bottle`'s container with `role` (agent, egress, git-gate).
    pub fn container(&self, bottle: &Bottle, role: &str) -> Result<String, String> {
        let out = sh::ok(
            cmd(
                "docker",
                &[
                    "ps",
                    "-a",
                    "--filter",
                    &format!("label=dev.bot-bottle.slug={}", bottle.slug),
                    "--filter",
                    &format!("label=dev.bot-bottle.role={role}"),
                    "--format",
                    "{{.Names}}",
                ],
            ),
            &self.interrupted,
        )?;
        out.stdout
            .lines()
            .next()
            .map(str::to_string)
            .ok_or_else(|| format!("{} has no {role} container", bottle.slug))
    }

    /// The IPv4 addresses of `container`, by network name.
    pub fn addresses(&self, container: &str) -> Result<Vec<(String, String)>, String> {
        let out = sh::ok(
            cmd(
                "docker",
                &[
                    "inspect",
                    "--format",
                    "{{range $n, $e := .NetworkSettings.Networks}}{{$n}} {{$e.IPAddress}}\n{{end}}",
                    container,
                ],
            ),
            &self.interrupted,
        )?;
        Ok(out
            .stdout
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, ip)| (n.to_string(), ip.to_string()))
            .collect())
    }

    /// What the engine still holds for `slug`: containers and networks by label, and
    /// the state dir.
    pub fn leftovers(&self, slug: &str) -> Result<Vec<String>, String> {
        let label = format!("label=dev.bot-bottle.slug={slug}");
        let mut left = Vec::new();
        let containers = sh::ok(
            cmd(
                "docker",
                &["ps", "-a", "--filter", &label, "--format", "{{.Names}}"],
            ),
            &self.interrupted,
        )?;
        left.extend(containers.stdout.lines().map(|n| format!("container {n}")));
        let networks = sh::ok(
            cmd(
                "docker",
                &["network", "ls", "--filter", &label, "--format", "{{.Name}}"],
            ),
            &self.interrupted,
        )?;
        left.extend(networks.stdout.lines().map(|n| format!("network {n}")));
        let dir = self.state_root.join(slug);
        if dir.exists() {
            left.push(format!("state dir {}", dir.display()));
        }
        Ok(left)
    }
}
