//! Agent profiles: what a bottle provisions for the agent program it runs, as data.
//!
//! The launcher knows no agent by name: it merges the profile's JSON into the files the
//! image already has, copies the prompt and skills where the profile says, links the
//! persisted directories and sets the environment. Claude Code is one profile; a
//! generic CLI agent is the other.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Which agent program runs in the bottle.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum AgentKind {
    /// Anthropic's Claude Code CLI: first-run state, settings, MCP entry, sessions kept.
    #[default]
    ClaudeCode,
    /// Any other CLI agent: the prompt and skills under `~/.bot-bottle/`, nothing else.
    Generic,
}

impl AgentKind {
    /// The kind a command implies when the manifest does not say: `claude` (by its file
    /// name, wherever it lives) is Claude Code, anything else is generic.
    pub fn from_command(command: &[String]) -> Self {
        let program = command.first().map(String::as_str).unwrap_or_default();
        match Path::new(program).file_name().and_then(|n| n.to_str()) {
            Some("claude") => Self::ClaudeCode,
            _ => Self::Generic,
        }
    }

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClaudeCode => "claude-code",
            Self::Generic => "generic",
        }
    }
}

/// JSON merged into one file under the agent's home.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JsonMerge {
    /// Path relative to the agent's home, e.g. `.claude.json`.
    pub path: String,
    /// What to merge in (see [`merge_json`]).
    pub value: Value,
}

/// A home directory that outlives the bottle: kept per agent under the state root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PersistDir {
    /// Name of the host directory under the agent's state (`[a-z-]`).
    pub name: String,
    /// Path relative to the agent's home, e.g. `.claude/projects`.
    pub home_path: String,
}

/// A host the program contacts on its own, and why: the planner warns when the
/// allowlist does not let it through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NeededHost {
    /// Exact host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// What the program uses it for.
    pub why: String,
}

/// Where MCP servers are declared for the program: a top-level key of a JSON file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct McpTarget {
    /// Path relative to the agent's home.
    pub path: String,
    /// The object key holding servers by name.
    pub key: String,
}

/// What provisioning does for one agent program.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentProfile {
    /// The program.
    pub kind: AgentKind,
    /// JSON merged into files the image may already have.
    pub home_json: Vec<JsonMerge>,
    /// Environment the program needs (the manifest's `env` wins on a clash).
    pub env: BTreeMap<String, String>,
    /// Where the prompt file is copied, relative to home, besides `~/.bot-bottle/prompt.md`.
    pub prompt_path: Option<String>,
    /// Where skills directories are copied (one subdirectory each), relative to home.
    pub skills_dir: String,
    /// Where the program reads MCP servers from (`~/.bot-bottle/mcp.json` always has them).
    pub mcp: Option<McpTarget>,
    /// Home directories kept across bottles of this agent.
    pub persist: Vec<PersistDir>,
    /// Hosts the program needs.
    pub needs_hosts: Vec<NeededHost>,
    /// Arguments that resume the program's last session (kept in `persist`).
    pub resume_args: Option<String>,
}

/// What the profile is built from: the parts of the plan it depends on.
#[derive(Clone, Copy, Debug)]
pub struct ProfileInputs<'a> {
    /// The agent's working directory (Claude Code trusts folders by path).
    pub workdir: &'a Path,
    /// The value the agent holds in `ANTHROPIC_API_KEY`, if any (a placeholder when a
    /// route injects the key): Claude Code asks once per key whether to use it.
    pub api_key: Option<&'a str>,
    /// Whether the supervise channel is on (MCP tools can block for minutes).
    pub supervise: bool,
}

/// Claude Code remembers approved keys by their last 20 characters.
const API_KEY_SUFFIX_LEN: usize = 20;

/// How long Claude Code waits for an MCP tool: a supervise request waits for a human
/// (its own limit is 600 s).
pub const MCP_TOOL_TIMEOUT_MS: u32 = 660_000;

impl AgentProfile {
    /// The profile of `kind` for this agent.
    pub fn new(kind: AgentKind, inputs: ProfileInputs<'_>) -> Self {
        match kind {
            AgentKind::ClaudeCode => claude_code(inputs),
            AgentKind::Generic => Self {
                kind,
                home_json: Vec::new(),
                env: BTreeMap::new(),
                prompt_path: None,
                skills_dir: ".bot-bottle/skills".into(),
                mcp: None,
                persist: Vec::new(),
                needs_hosts: Vec::new(),
                resume_args: None,
            },
        }
    }
}

/// Claude Code 2.1.x, measured: with this state it starts straight at its prompt (no
/// theme, key, trust or bypass-permissions screen) and, with non-essential traffic off,
/// talks only to api.anthropic.com.
fn claude_code(inputs: ProfileInputs<'_>) -> AgentProfile {
    let workdir = inputs.workdir.display().to_string();
    let mut state = json!({
        "hasCompletedOnboarding": true,
        "projects": { workdir: { "hasTrustDialogAccepted": true } },
    });
    if let Some(key) = inputs.api_key {
        let start = key
            .char_indices()
            .rev()
            .nth(API_KEY_SUFFIX_LEN - 1)
            .map_or(0, |(i, _)| i);
        state["customApiKeyResponses"] = json!({ "approved": [&key[start..]], "rejected": [] });
    }
    let mut env: BTreeMap<String, String> = [
        ("DISABLE_AUTOUPDATER", "1"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if inputs.supervise {
        env.insert("MCP_TOOL_TIMEOUT".into(), MCP_TOOL_TIMEOUT_MS.to_string());
    }
    AgentProfile {
        kind: AgentKind::ClaudeCode,
        home_json: vec![
            JsonMerge {
                path: ".claude.json".into(),
                value: state,
            },
            JsonMerge {
                path: ".claude/settings.json".into(),
                value: json!({ "skipDangerousModePermissionPrompt": true }),
            },
        ],
        env,
        prompt_path: Some(".claude/CLAUDE.md".into()),
        skills_dir: ".claude/skills".into(),
        mcp: Some(McpTarget {
            path: ".claude.json".into(),
            key: "mcpServers".into(),
        }),
        persist: vec![PersistDir {
            name: "claude-projects".into(),
            home_path: ".claude/projects".into(),
        }],
        needs_hosts: vec![NeededHost {
            host: "api.anthropic.com".into(),
            port: 443,
            why: "the Messages API".into(),
        }],
        resume_args: Some("--continue".into()),
    }
}

/// Merges `patch` into `base`, keeping what `base` has: objects merge key by key, arrays
/// gain the patch's items they lack, and any other value of the patch wins.
pub fn merge_json(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                match base.get_mut(key) {
                    Some(existing) => merge_json(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(base), Value::Array(patch)) => {
            for item in patch {
                if !base.contains(item) {
                    base.push(item.clone());
                }
            }
        }
        (base, patch) => *base = patch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(api_key: Option<&str>) -> ProfileInputs<'_> {
        ProfileInputs {
            workdir: Path::new("/work/project"),
            api_key,
            supervise: true,
        }
    }

    #[test]
    fn the_kind_follows_the_program_name() {
        let kind = |c: &[&str]| {
            AgentKind::from_command(&c.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            kind(&["claude", "--dangerously-skip-permissions"]),
            AgentKind::ClaudeCode
        );
        assert_eq!(kind(&["/usr/local/bin/claude"]), AgentKind::ClaudeCode);
        assert_eq!(kind(&["aider"]), AgentKind::Generic);
        assert_eq!(kind(&["claude-wrapper"]), AgentKind::Generic);
        assert_eq!(kind(&[]), AgentKind::Generic);
    }

    #[test]
    fn claude_code_skips_every_first_run_screen() {
        let key = "sk-ant-api03-bottle-placeholderxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx0123456789";
        let profile = AgentProfile::new(AgentKind::ClaudeCode, inputs(Some(key)));
        let state = &profile.home_json[0];
        assert_eq!(state.path, ".claude.json");
        assert_eq!(state.value["hasCompletedOnboarding"], true);
        assert_eq!(
            state.value["projects"]["/work/project"]["hasTrustDialogAccepted"],
            true
        );
        assert_eq!(
            state.value["customApiKeyResponses"]["approved"],
            json!(["xxxxxxxxxx0123456789"])
        );
        assert_eq!(
            profile.home_json[1].value["skipDangerousModePermissionPrompt"],
            true
        );
        assert_eq!(profile.env["DISABLE_AUTOUPDATER"], "1");
        assert_eq!(profile.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"], "1");
        assert_eq!(profile.env["MCP_TOOL_TIMEOUT"], "660000");
        assert_eq!(profile.persist[0].home_path, ".claude/projects");
    }

    #[test]
    fn without_a_key_nothing_is_pre_approved() {
        let profile = AgentProfile::new(AgentKind::ClaudeCode, inputs(None));
        assert!(
            profile.home_json[0]
                .value
                .get("customApiKeyResponses")
                .is_none()
        );
        let short = AgentProfile::new(AgentKind::ClaudeCode, inputs(Some("short")));
        assert_eq!(
            short.home_json[0].value["customApiKeyResponses"]["approved"],
            json!(["short"])
        );
    }

    #[test]
    fn generic_provisions_nothing_program_specific() {
        let profile = AgentProfile::new(AgentKind::Generic, inputs(Some("k")));
        assert!(profile.home_json.is_empty() && profile.env.is_empty());
        assert!(profile.mcp.is_none() && profile.persist.is_empty());
        assert_eq!(profile.skills_dir, ".bot-bottle/skills");
    }

    #[test]
    fn merging_keeps_what_the_image_has() {
        let mut base = json!({
            "userID": "abc",
            "projects": {"/other": {"hasTrustDialogAccepted": false}},
            "customApiKeyResponses": {"approved": ["old"], "rejected": ["bad"]},
            "mcpServers": {"theirs": {"type": "stdio", "command": "x"}},
            "hasCompletedOnboarding": false,
        });
        merge_json(
            &mut base,
            &json!({
                "hasCompletedOnboarding": true,
                "projects": {"/work": {"hasTrustDialogAccepted": true}},
                "customApiKeyResponses": {"approved": ["new", "old"], "rejected": []},
                "mcpServers": {"bot-bottle": {"type": "http", "url": "http://s/mcp"}},
            }),
        );
        assert_eq!(
            base,
            json!({
                "userID": "abc",
                "projects": {
                    "/other": {"hasTrustDialogAccepted": false},
                    "/work": {"hasTrustDialogAccepted": true},
                },
                "customApiKeyResponses": {"approved": ["old", "new"], "rejected": ["bad"]},
                "mcpServers": {
                    "theirs": {"type": "stdio", "command": "x"},
                    "bot-bottle": {"type": "http", "url": "http://s/mcp"},
                },
                "hasCompletedOnboarding": true,
            })
        );
    }

    #[test]
    fn merging_into_nothing_or_a_scalar_gives_the_patch() {
        let patch = json!({"a": [1], "b": {"c": true}});
        let mut base = Value::Null;
        merge_json(&mut base, &patch);
        assert_eq!(base, patch);
    }
}
