//! Provisioning inside the agent container, driven by the plan's agent profile: trust
//! the bottle CA, copy the prompt and skills, point git remotes at the gate, link the
//! persisted directories, and merge the profile's JSON (first-run state, settings, the
//! supervise MCP entry) into what the image already has. Nothing here knows an agent
//! by name; it never replaces a file the image ships.

use std::collections::BTreeMap;
use std::path::Path;

use compose_render::{AGENT_PERSIST_DIR, GIT_GATE_PORT, GIT_GATE_SERVICE, LaunchFacts};
use plan::{BottlePlan, merge_json};
use serde_json::Value;

use crate::engine::{Engine, ExecSpec};
use crate::error::{BackendError, Result};

/// The agent's own directory in its home: the prompt, the MCP config for any client.
const BOTTLE_HOME_DIR: &str = ".bot-bottle";
/// Name of the supervise server in every MCP config.
pub const MCP_SERVER_NAME: &str = "bot-bottle";

/// Runs every provisioning step in the agent container of `plan`.
pub fn provision(backend: &dyn Engine, plan: &BottlePlan, facts: &LaunchFacts) -> Result<()> {
    let agent = Exec {
        backend,
        container: &plan.agent.container_name,
    };
    let profile = &plan.agent.profile;
    agent.run(
        Some("root"),
        "mkdir -p /usr/local/share/ca-certificates && cp /etc/bot-bottle/ca/ca.crt /usr/local/share/ca-certificates/bot-bottle.crt && if command -v update-ca-certificates >/dev/null; then update-ca-certificates >/dev/null 2>&1; fi",
        &[],
        None,
    )?;
    if let Some(prompt) = &plan.agent.prompt_file {
        let text =
            std::fs::read(prompt).map_err(BackendError::io("reading prompt file", prompt))?;
        let copy = profile.prompt_path.as_deref().unwrap_or_default();
        agent.run(
            None,
            "mkdir -p \"$HOME/$1\" && cat > \"$HOME/$1/prompt.md\" && if [ -n \"$2\" ]; then mkdir -p \"$(dirname \"$HOME/$2\")\" && cp \"$HOME/$1/prompt.md\" \"$HOME/$2\"; fi",
            &[BOTTLE_HOME_DIR, copy],
            Some(text),
        )?;
    }
    for skills in &plan.agent.skills_dirs {
        let name = skills
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "skills".into());
        let tar = duct::cmd!("tar", "-C", skills, "-cf", "-", ".")
            .stdout_capture()
            .stderr_null()
            .run()
            .map_err(BackendError::io("archiving skills directory", skills))?;
        let target = format!("{}/{name}", profile.skills_dir);
        agent.run(
            None,
            "mkdir -p \"$HOME/$1\" && tar -C \"$HOME/$1\" -xf -",
            &[&target],
            Some(tar.stdout),
        )?;
    }
    if plan.git_gate.enabled() {
        let mut script = String::from("git init -q . 2>/dev/null || true\n");
        let mut args = Vec::new();
        for (i, upstream) in plan.git_gate.upstreams.iter().enumerate() {
            let url = format!(
                "http://{GIT_GATE_SERVICE}:{GIT_GATE_PORT}/{}.git",
                upstream.name
            );
            let (name, url_arg) = (2 * i + 1, 2 * i + 2);
            script.push_str(&format!(
                "git remote add \"${name}\" \"${url_arg}\" 2>/dev/null || git remote set-url \"${name}\" \"${url_arg}\"\n"
            ));
            args.push(upstream.name.clone());
            args.push(url);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        agent.run(None, &script, &args, None)?;
    }
    if !profile.persist.is_empty() {
        // The mounts are host directories the launcher made: hand each to the image's
        // user (root in the container has no capability to do it there), then link it
        // where the program looks, keeping whatever the image had there.
        let ids = agent.output(None, "printf '%s:%s' \"$(id -u)\" \"$(id -g)\"", &[])?;
        let (uid, gid) = ids
            .trim()
            .split_once(':')
            .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
            .ok_or_else(|| BackendError::AgentFile {
                path: "id -u".into(),
                detail: format!("cannot tell the agent's uid from `{}`", ids.trim()),
            })?;
        for dir in &profile.persist {
            hand_over(&facts.persist_dir(&plan.agent.name, &dir.name), uid, gid)?;
            let mount = format!("{AGENT_PERSIST_DIR}/{}", dir.name);
            agent.run(
                None,
                "p=\"$HOME/$1\"; if [ -d \"$p\" ] && [ ! -L \"$p\" ]; then cp -a \"$p/.\" \"$2/\" && rm -rf \"$p\"; fi; mkdir -p \"$(dirname \"$p\")\" && ln -sfn \"$2\" \"$p\"",
                &[&dir.home_path, &mount],
                None,
            )?;
        }
    }
    for (path, patch) in home_json(plan) {
        merge_home_file(&agent, &path, &patch)?;
    }
    Ok(())
}

/// Makes a persisted host directory writable by the agent's `uid`: chown when the
/// launcher may (root), else open its mode. Its parents stay 0700 to the launcher's
/// user, so only that user and the container (which sees the directory alone) reach it.
fn hand_over(path: &Path, uid: u32, gid: u32) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path).map_err(BackendError::io("inspecting", path))?;
    if meta.uid() == uid {
        return Ok(());
    }
    match std::os::unix::fs::chown(path, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
                .map_err(BackendError::io("opening the mode of", path))
        }
        Err(error) => Err(BackendError::io("handing over", path)(error)),
    }
}

/// The JSON each home file receives, by path: the profile's patches and, with
/// supervise on, the MCP entry (in `~/.bot-bottle/mcp.json` for any client, and where
/// the profile says its program reads servers).
fn home_json(plan: &BottlePlan) -> BTreeMap<String, Value> {
    let profile = &plan.agent.profile;
    let mut files: BTreeMap<String, Value> = BTreeMap::new();
    let mut add = |path: &str, value: &Value| {
        merge_json(files.entry(path.to_owned()).or_insert(Value::Null), value);
    };
    for merge in &profile.home_json {
        add(&merge.path, &merge.value);
    }
    if plan.supervise.enabled {
        let url = format!(
            "http://{}:{}{}",
            compose_render::SUPERVISE_SERVICE,
            compose_render::SUPERVISE_PORT,
            sidecar_contract::supervise::MCP_PATH
        );
        let server = serde_json::json!({ MCP_SERVER_NAME: { "type": "http", "url": url } });
        add(
            &format!("{BOTTLE_HOME_DIR}/mcp.json"),
            &serde_json::json!({ "mcpServers": server }),
        );
        if let Some(mcp) = &profile.mcp {
            add(&mcp.path, &serde_json::json!({ mcp.key.clone(): server }));
        }
    }
    files
}

/// Reads `~/<path>` (absent: nothing), merges `patch` in and writes it back through a
/// temporary file, so a reader never sees half a file. A file that is not JSON stops
/// the launch: replacing it would lose what the image put there.
fn merge_home_file(agent: &Exec<'_>, path: &str, patch: &Value) -> Result<()> {
    let current = agent.output(
        None,
        "if [ -e \"$HOME/$1\" ]; then cat \"$HOME/$1\"; fi",
        &[path],
    )?;
    let mut value = if current.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&current).map_err(|error| BackendError::AgentFile {
            path: format!("~/{path}"),
            detail: format!(
                "it is not JSON ({error}); fix the agent image, bot-bottle only merges into it"
            ),
        })?
    };
    if !value.is_object() && !value.is_null() {
        return Err(BackendError::AgentFile {
            path: format!("~/{path}"),
            detail: "it is JSON but not an object; fix the agent image".into(),
        });
    }
    merge_json(&mut value, patch);
    let mut text = serde_json::to_vec_pretty(&value).map_err(|e| BackendError::AgentFile {
        path: format!("~/{path}"),
        detail: e.to_string(),
    })?;
    text.push(b'\n');
    agent.run(
        None,
        "f=\"$HOME/$1\"; mkdir -p \"$(dirname \"$f\")\" && cat > \"$f.bot-bottle-new\" && mv -f \"$f.bot-bottle-new\" \"$f\"",
        &[path],
        Some(text),
    )
}

/// `docker exec` of a shell script in the agent container, with positional arguments
/// (never spliced into the script).
struct Exec<'a> {
    backend: &'a dyn Engine,
    container: &'a str,
}

impl Exec<'_> {
    fn output(&self, user: Option<&str>, script: &str, args: &[&str]) -> Result<String> {
        self.call(user, script, args, None)
    }

    fn run(
        &self,
        user: Option<&str>,
        script: &str,
        args: &[&str],
        stdin: Option<Vec<u8>>,
    ) -> Result<()> {
        self.call(user, script, args, stdin).map(drop)
    }

    fn call(
        &self,
        user: Option<&str>,
        script: &str,
        args: &[&str],
        stdin: Option<Vec<u8>>,
    ) -> Result<String> {
        let command: Vec<String> = ["sh", "-c", script, "sh"]
            .into_iter()
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect();
        let out = self.backend.exec(&ExecSpec {
            container: self.container.to_owned(),
            user: user.map(str::to_owned),
            workdir: None,
            command,
            stdin,
        })?;
        if out.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().collect();
            Err(BackendError::Command {
                command: format!("docker exec {} sh -c {script:?}", self.container),
                detail: lines[lines.len().saturating_sub(10)..].join("\n"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claude_plan(supervise: bool) -> BottlePlan {
        let yaml = format!(
            "bottles:\n  b:\n    image: {{ref: img}}\n    supervise: {supervise}\n    egress:\n      allow: [{{host: api.anthropic.com, ports: [443]}}]\nagents:\n  a:\n    bottle: b\n"
        );
        let manifest = plan::parse_manifest(&yaml).unwrap();
        let facts = plan::HostFacts {
            project_dir: "/work/project".into(),
            ..plan::HostFacts::default()
        };
        let planned = plan::plan_manifest(&manifest, &facts);
        assert!(!planned.problems.has_errors(), "{:?}", planned.problems);
        planned.bottle_plan("a", 1).unwrap()
    }

    #[test]
    fn the_mcp_entry_goes_to_both_configs_beside_the_profile_state() {
        let plan = claude_plan(true);
        let files = home_json(&plan);
        let claude = &files[".claude.json"];
        assert_eq!(claude["hasCompletedOnboarding"], true);
        assert_eq!(claude["mcpServers"][MCP_SERVER_NAME]["type"], "http");
        assert_eq!(
            files[".bot-bottle/mcp.json"]["mcpServers"][MCP_SERVER_NAME]["url"],
            claude["mcpServers"][MCP_SERVER_NAME]["url"]
        );
        assert_eq!(
            files[".claude/settings.json"]["skipDangerousModePermissionPrompt"],
            true
        );
        let without = home_json(&claude_plan(false));
        assert!(without[".claude.json"].get("mcpServers").is_none());
        assert!(!without.contains_key(".bot-bottle/mcp.json"));
    }
}
