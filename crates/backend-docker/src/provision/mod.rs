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

mod archive;

use archive::Archive;

/// Trusts the bottle CA system-wide, as root: appended to the system bundle where
/// there is one (Debian, Ubuntu, Alpine, Fedora) with its OpenSSL hash link, and kept
/// in `/usr/local/share/ca-certificates` so a later `update-ca-certificates` keeps it.
/// Only without a known bundle does it run the distribution's tool, which rebuilds
/// every hash link (over a second). Tools that read their own bundle get the CA
/// through the agent's environment (`SSL_CERT_FILE`, `NODE_EXTRA_CA_CERTS`, ...).
const TRUST_CA: &str = r#"ca=/etc/bot-bottle/ca/ca.crt
mkdir -p /usr/local/share/ca-certificates && cp "$ca" /usr/local/share/ca-certificates/bot-bottle.crt
done=
for bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
  if [ -f "$bundle" ] && [ ! -L "$bundle" ]; then cat "$ca" >> "$bundle"; done=1; break; fi
done
if [ -n "$done" ]; then
  if command -v openssl >/dev/null && [ -d /etc/ssl/certs ]; then
    h=$(openssl x509 -hash -noout -in "$ca") && ln -sf /usr/local/share/ca-certificates/bot-bottle.crt "/etc/ssl/certs/$h.0"
  fi
elif command -v update-ca-certificates >/dev/null; then update-ca-certificates >/dev/null 2>&1
elif command -v update-ca-trust >/dev/null; then cp "$ca" /etc/pki/ca-trust/source/anchors/bot-bottle.crt && update-ca-trust
fi
true"#;

/// Prints `uid:gid`, then for each JSON file given (relative to `$HOME`) its size
/// in bytes and its bytes, or `-1` when it does not exist.
const READ_HOME: &str = "printf '%s:%s\\n' \"$(id -u)\" \"$(id -g)\"; for f in \"$@\"; do if [ -e \"$HOME/$f\" ]; then wc -c < \"$HOME/$f\" | tr -d ' '; cat \"$HOME/$f\"; else echo -1; fi; done";

/// Unpacks the archive on stdin into `$HOME`, then, from its arguments (each list
/// preceded by its length): moves each merged JSON file over the old one (a reader
/// never sees half a file), links each persisted directory where the program looks
/// (keeping what the image had there), and points the git remotes at the gate.
const WRITE_HOME: &str = r#"set -e
tar -C "$HOME" -xf -
n=$1; shift
while [ "$n" -gt 0 ]; do mv -f "$HOME/$1.bot-bottle-new" "$HOME/$1"; shift; n=$((n-1)); done
n=$1; shift
while [ "$n" -gt 0 ]; do
  p="$HOME/$1"
  if [ -d "$p" ] && [ ! -L "$p" ]; then cp -a "$p/." "$2/" && rm -rf "$p"; fi
  mkdir -p "$(dirname "$p")" && ln -sfn "$2" "$p"
  shift 2; n=$((n-1))
done
n=$1; shift
if [ "$n" -gt 0 ]; then git init -q . 2>/dev/null || true; fi
while [ "$n" -gt 0 ]; do
  git remote add "$1" "$2" 2>/dev/null || git remote set-url "$1" "$2"
  shift 2; n=$((n-1))
done"#;

/// Runs every provisioning step in the agent container of `plan`, in three `docker
/// exec`s whatever the profile asks for: one read as the image's user (its ids and
/// the JSON files to merge into), the CA as root, one write as the image's user (an
/// archive of the prompt, skills and merged JSON, then links and git remotes).
pub fn provision(backend: &dyn Engine, plan: &BottlePlan, facts: &LaunchFacts) -> Result<()> {
    let agent = Exec {
        backend,
        container: &plan.agent.container_name,
    };
    let profile = &plan.agent.profile;
    let json = home_json(plan);
    let json_paths: Vec<&str> = json.keys().map(String::as_str).collect();
    let read = agent.output(None, READ_HOME, &json_paths)?;
    let Home {
        ids,
        files: current,
    } = parse_home(&read, &json_paths)?;

    agent.run(Some("root"), TRUST_CA, &[], None)?;

    let mut archive = Archive::default();
    if let Some(prompt) = &plan.agent.prompt_file {
        let text =
            std::fs::read(prompt).map_err(BackendError::io("reading prompt file", prompt))?;
        archive.add(&format!("{BOTTLE_HOME_DIR}/prompt.md"), &text, 0o644)?;
        if let Some(copy) = profile.prompt_path.as_deref().filter(|c| !c.is_empty()) {
            archive.add(copy, &text, 0o644)?;
        }
    }
    for skills in &plan.agent.skills_dirs {
        let name = skills
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "skills".into());
        add_tree(
            &mut archive,
            skills,
            &format!("{}/{name}", profile.skills_dir),
        )?;
    }
    let mut args: Vec<String> = vec![json.len().to_string()];
    for ((path, patch), current) in json.iter().zip(current) {
        let merged = merged_json(path, current.as_deref(), patch)?;
        archive.add(&format!("{path}.bot-bottle-new"), &merged, 0o600)?;
        args.push(path.clone());
    }
    args.push(profile.persist.len().to_string());
    if !profile.persist.is_empty() {
        // The mounts are host directories the launcher made: hand each to the image's
        // user (root in the container has no capability to do it there).
        let (uid, gid) = ids;
        for dir in &profile.persist {
            hand_over(&facts.persist_dir(&plan.agent.name, &dir.name), uid, gid)?;
            args.push(dir.home_path.clone());
            args.push(format!("{AGENT_PERSIST_DIR}/{}", dir.name));
        }
    }
    args.push(plan.git_gate.upstreams.len().to_string());
    for upstream in &plan.git_gate.upstreams {
        args.push(upstream.name.clone());
        args.push(format!(
            "http://{GIT_GATE_SERVICE}:{GIT_GATE_PORT}/{}.git",
            upstream.name
        ));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    agent.run(None, WRITE_HOME, &args, Some(archive.finish()))
}

/// Adds every file under `dir` to `archive` below `into`, with its mode.
fn add_tree(archive: &mut Archive, dir: &Path, into: &str) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(BackendError::io("reading skills directory", dir))?
        .collect::<std::io::Result<_>>()
        .map_err(BackendError::io("reading skills directory", dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = std::fs::metadata(&path).map_err(BackendError::io("inspecting", &path))?;
        if meta.is_dir() {
            add_tree(archive, &path, &format!("{into}/{name}"))?;
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let bytes = std::fs::read(&path).map_err(BackendError::io("reading", &path))?;
            archive.add(&format!("{into}/{name}"), &bytes, meta.permissions().mode())?;
        }
    }
    Ok(())
}

/// What [`READ_HOME`] found: the image user's ids and each JSON file (absent: None).
struct Home {
    ids: (u32, u32),
    files: Vec<Option<String>>,
}

/// The ids and the current JSON files out of [`READ_HOME`]'s output.
fn parse_home(output: &str, paths: &[&str]) -> Result<Home> {
    let unreadable = |detail: String| BackendError::AgentFile {
        path: "$HOME".into(),
        detail,
    };
    let (first, mut rest) = output
        .split_once('\n')
        .ok_or_else(|| unreadable(format!("no ids in `{}`", output.trim())))?;
    let ids = first
        .trim()
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .ok_or_else(|| unreadable(format!("cannot tell the agent's uid from `{first}`")))?;
    let mut files = Vec::new();
    for path in paths {
        let (size, after) = rest
            .split_once('\n')
            .ok_or_else(|| unreadable(format!("no size for ~/{path}")))?;
        let size: i64 = size
            .trim()
            .parse()
            .map_err(|_| unreadable(format!("`{size}` is not the size of ~/{path}")))?;
        if size < 0 {
            files.push(None);
            rest = after;
            continue;
        }
        let size = size as usize;
        if after.len() < size || !after.is_char_boundary(size) {
            return Err(unreadable(format!("~/{path} was cut short")));
        }
        files.push(Some(after[..size].to_owned()));
        rest = &after[size..];
    }
    Ok(Home { ids, files })
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

/// The file `~/<path>` should become: `current` (absent: nothing) with `patch`
/// merged in. A file that is not a JSON object stops the launch: replacing it would
/// lose what the image put there.
fn merged_json(path: &str, current: Option<&str>, patch: &Value) -> Result<Vec<u8>> {
    let mut value = match current.map(str::trim) {
        None | Some("") => Value::Null,
        Some(text) => serde_json::from_str(text).map_err(|error| BackendError::AgentFile {
            path: format!("~/{path}"),
            detail: format!(
                "it is not JSON ({error}); fix the agent image, bot-bottle only merges into it"
            ),
        })?,
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
    Ok(text)
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
    fn the_home_read_gives_ids_and_each_file_or_its_absence() {
        let out = "1000:1001\n2\n{}-1\n12\n{\"a\":\n  \"b\"}";
        let Home { ids, files } = parse_home(out, &["x.json", "y.json", "z.json"]).unwrap();
        assert_eq!(ids, (1000, 1001));
        assert_eq!(files[0].as_deref(), Some("{}"));
        assert_eq!(files[1], None);
        assert_eq!(files[2].as_deref(), Some("{\"a\":\n  \"b\"}"));
        // Cut short, or no ids at all: an error, never a guess.
        assert!(parse_home("1000:1000\n50\n{}", &["x.json"]).is_err());
        assert!(parse_home("1000:1000\n", &["x.json"]).is_err());
        assert!(parse_home("root\n", &[]).is_err());
    }

    #[test]
    fn merging_keeps_what_the_image_has_and_refuses_what_is_not_an_object() {
        let patch = serde_json::json!({"a": {"b": true}});
        let merged =
            merged_json("f.json", Some("{\"keep\": 1, \"a\": {\"c\": 2}}"), &patch).unwrap();
        let merged: Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(
            merged,
            serde_json::json!({"keep": 1, "a": {"b": true, "c": 2}})
        );
        assert!(merged_json("f.json", None, &patch).is_ok());
        assert!(matches!(
            merged_json("f.json", Some("not json"), &patch),
            Err(BackendError::AgentFile { .. })
        ));
        assert!(merged_json("f.json", Some("[1]"), &patch).is_err());
    }

    #[test]
    fn no_profile_merges_json_inside_a_directory_it_persists() {
        // The home is read before the persisted directories are linked: a merged
        // file inside one would be read from the image, not from what was kept.
        for supervise in [true, false] {
            let plan = claude_plan(supervise);
            for path in home_json(&plan).keys() {
                for dir in &plan.agent.profile.persist {
                    assert!(!path.starts_with(&format!("{}/", dir.home_path)), "{path}");
                }
            }
        }
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
