//! Scenarios with the real Claude Code CLI (issue 11): the agent image carries the CLI
//! from the pinned `claude-agent-sdk` wheel, and the fake internet plays
//! api.anthropic.com (`fixtures/e2e/anthropic_api.py`). Each scenario starts its own
//! bottle from `fixtures/e2e/claude.yaml.in` and tears it down.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Run;
use super::bottle::Bottle;
use super::scenarios::{Ctx, first_chars, random_chars, walk};
use super::sh::{self, cmd};

/// The agent name in `fixtures/e2e/claude.yaml.in`.
const AGENT: &str = "claude";
/// What the stand-in API answers every ordinary prompt with.
const CANNED: &str = "BOTTLE-E2E-CANNED-REPLY";
/// A prompt that makes the stand-in call the supervise tool.
const USE_TOOL: &str = "BOTTLE-E2E-USE-TOOL";
/// What the stand-in answers once it has the tool's result.
const TOOL_RESULT_SEEN: &str = "TOOL-RESULT-SEEN";
/// Claude Code's input box is up: its footer.
const PROMPT_READY: &[&str] = &["bypass permissions on", "? for shortcuts"];
/// Text of the first-run screens a bottle must never show (theme, key, security notes,
/// folder trust, the bypass-permissions warning, a login).
const FIRST_RUN_SCREENS: &[&str] = &[
    "Choose the text style",
    "Detected a custom API key",
    "Do you want to use this API key",
    "Security notes",
    "Do you trust the files in this folder",
    "trust this folder",
    "WARNING: Claude Code running in Bypass Permissions mode",
    "Select login method",
    "Yes, I accept",
];

/// The two credentials of this run, and what the agent must see instead.
struct Credentials {
    api_key: String,
    oauth_token: String,
}

fn credentials() -> Credentials {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    Credentials {
        api_key: format!("sk-ant-api03-{}-AA", random_chars(86, ALPHABET)),
        oauth_token: format!("sk-ant-oat01-{}-AA", random_chars(86, ALPHABET)),
    }
}

/// This run's copy of the Claude manifest (written on first use).
fn manifest(run: &Run) -> Result<PathBuf, String> {
    let path = run.dir.join("claude.yaml");
    if !path.is_file() {
        let template = std::fs::read_to_string(run.fixtures.join("claude.yaml.in"))
            .map_err(|e| format!("reading fixtures/e2e/claude.yaml.in: {e}"))?;
        std::fs::write(&path, run.fill_template(&template))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(path)
}

/// `bottle start claude` with the fake internet's settings, `extra` after it.
fn start_args(run: &Run, detach: bool, extra: &[&str]) -> Result<Vec<String>, String> {
    let mut args = run.start_args_for(&manifest(run)?);
    args[1] = AGENT.into();
    if !detach {
        args.retain(|a| a != "-d");
    }
    if !extra.is_empty() {
        args.push("--".into());
        args.extend(extra.iter().map(|a| a.to_string()));
    }
    Ok(args)
}

/// A `bottle` command whose environment holds exactly the credentials in `env`.
fn bottle_with(run: &Run, args: &[String], env: &[(&str, &str)]) -> std::process::Command {
    let mut c = run.bottle_cmd(args);
    c.env_remove("ANTHROPIC_API_KEY")
        .env_remove("CLAUDE_CODE_OAUTH_TOKEN");
    for (name, value) in env {
        c.env(name, value);
    }
    c
}

/// Starts a detached Claude bottle; its handle and the launcher's stderr.
fn start(run: &Run, env: &[(&str, &str)]) -> Result<(Bottle, String), String> {
    let (bottle, out) = run.start_detached(bottle_with(run, &start_args(run, true, &[])?, env))?;
    Ok((bottle, out.stderr))
}

fn down(run: &Run, bottle: &Bottle) -> Result<(), String> {
    sh::run_with(
        run.bottle_cmd(&["down", &bottle.slug]),
        Duration::from_secs(120),
        &run.interrupted,
    )?
    .ok()
    .map(drop)
}

/// Runs `check` against a fresh bottle and always tears the bottle down.
fn with_bottle(
    run: &Run,
    env: &[(&str, &str)],
    check: impl FnOnce(&Bottle, &str) -> Result<(), String>,
) -> Result<(), String> {
    let (bottle, stderr) = start(run, env)?;
    let result = check(&bottle, &stderr);
    let teardown = down(run, &bottle);
    result.and(teardown)
}

/// `bottle exec SLUG -- claude ARGS` (stdin closed, not a terminal).
fn claude(run: &Run, bottle: &Bottle, args: &[&str]) -> Result<sh::Out, String> {
    let mut argv = vec!["exec", bottle.slug.as_str(), "--", "claude"];
    argv.extend(args);
    sh::run_with(
        run.bottle_cmd(&argv),
        Duration::from_secs(180),
        &run.interrupted,
    )
}

/// The stand-in's log of Messages API calls since `from` records.
fn messages_calls(run: &Run, from: usize) -> Vec<serde_json::Value> {
    run.net()
        .anthropic_requests()
        .into_iter()
        .skip(from)
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/v1/messages"))
        })
        .collect()
}

fn auth_header<'a>(record: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    record["headers"][name].as_str()
}

/// Everything the agent could read: its processes' environments and its files (home,
/// /tmp, /etc, the persisted directories), copied out so no secret is typed inside.
fn agent_view(run: &Run, bottle: &Bottle) -> Result<String, String> {
    let env = run.agent_root_sh(
        bottle,
        "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \"$f\"; done 2>/dev/null; true",
    )?;
    let files = run.agent_root_sh(
        bottle,
        "tar -cf - /home /root /tmp /etc /var/lib/bot-bottle 2>/dev/null; true",
    )?;
    Ok(format!("{}\n{}", env.stdout, files.stdout))
}

/// The text of every file under `dirs` on the host.
fn host_files(dirs: &[&Path]) -> String {
    dirs.iter()
        .flat_map(|d| walk(d))
        .filter_map(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `claude -p` answers through the bottle with the API key; the stand-in saw the real
/// key on every call, the agent and the state dir hold only the placeholder. Both
/// credentials are exported: the key's route wins, the launch says so, and the
/// subscription token goes nowhere.
pub fn print_api_key(ctx: &mut Ctx) -> Result<(), String> {
    let run = ctx.run;
    let creds = credentials();
    let env = [
        ("ANTHROPIC_API_KEY", creds.api_key.as_str()),
        ("CLAUDE_CODE_OAUTH_TOKEN", creds.oauth_token.as_str()),
    ];
    with_bottle(run, &env, |bottle, stderr| {
        if !stderr.contains("`CLAUDE_CODE_OAUTH_TOKEN` is set but not used") {
            return Err(format!(
                "the launch did not say which credential it uses:\n{}",
                first_chars(stderr, 2000)
            ));
        }
        let calls = say_hi(run, bottle)?;
        for call in &calls {
            if auth_header(call, "x-api-key") != Some(creds.api_key.as_str()) {
                return Err(format!(
                    "a Messages call did not carry the real key: {}",
                    first_chars(&call.to_string(), 300)
                ));
            }
            if auth_header(call, "authorization").is_some() {
                return Err("a Messages call carried an authorization header too".into());
            }
        }
        check_agent_holds_placeholders(run, bottle, &creds, "ANTHROPIC_API_KEY")?;
        check_provisioned(run, bottle)
    })
}

/// The same with the subscription token, sent as `authorization: Bearer`.
pub fn print_oauth_token(ctx: &mut Ctx) -> Result<(), String> {
    let run = ctx.run;
    let creds = credentials();
    let env = [("CLAUDE_CODE_OAUTH_TOKEN", creds.oauth_token.as_str())];
    with_bottle(run, &env, |bottle, _| {
        let calls = say_hi(run, bottle)?;
        let bearer = format!("Bearer {}", creds.oauth_token);
        for call in &calls {
            if auth_header(call, "authorization") != Some(bearer.as_str()) {
                return Err(format!(
                    "a Messages call did not carry the real token as a bearer: {}",
                    first_chars(&call.to_string(), 300)
                ));
            }
        }
        check_agent_holds_placeholders(run, bottle, &creds, "CLAUDE_CODE_OAUTH_TOKEN")
    })
}

/// `claude -p "say hi"` prints the stand-in's canned reply; the Messages API calls it
/// made.
fn say_hi(run: &Run, bottle: &Bottle) -> Result<Vec<serde_json::Value>, String> {
    let before = run.net().anthropic_requests().len();
    let out = claude(run, bottle, &["-p", "say hi"])?.ok()?;
    if !out.stdout.contains(CANNED) {
        return Err(format!(
            "no canned reply from the stand-in:\n{}",
            out.explain()
        ));
    }
    let calls = messages_calls(run, before);
    if calls.is_empty() {
        return Err("the stand-in saw no Messages API call".into());
    }
    Ok(calls)
}

/// The real credentials appear nowhere the agent can read nor in the bottle's state;
/// `var` holds a placeholder.
fn check_agent_holds_placeholders(
    run: &Run,
    bottle: &Bottle,
    creds: &Credentials,
    var: &str,
) -> Result<(), String> {
    let view = agent_view(run, bottle)?;
    let state = host_files(&[&bottle.state_dir, &run.state_root.join("agents")]);
    for (what, text) in [("the agent", &view), ("the state root", &state)] {
        for (name, secret) in [
            ("API key", &creds.api_key),
            ("subscription token", &creds.oauth_token),
        ] {
            if text.contains(secret.as_str()) {
                return Err(format!("{what} holds the real {name}"));
            }
        }
    }
    let placeholder = format!("{var}=sk-ant-");
    if !view
        .lines()
        .any(|l| l.starts_with(&placeholder) && l.contains("bottle-placeholder"))
    {
        return Err(format!(
            "the agent's environment has no placeholder in {var}"
        ));
    }
    Ok(())
}

/// Provisioning merged into the image's own `~/.claude.json` instead of replacing it.
fn check_provisioned(run: &Run, bottle: &Bottle) -> Result<(), String> {
    let out = run.agent_sh(bottle, "cat \"$HOME/.claude.json\"")?.ok()?;
    let state: serde_json::Value = serde_json::from_str(&out.stdout).map_err(|e| {
        format!(
            "~/.claude.json is not JSON ({e}): {}",
            first_chars(&out.stdout, 300)
        )
    })?;
    for (what, ok) in [
        (
            "the image's own key",
            state["e2eImageMarker"] == "kept-by-provisioning",
        ),
        ("onboarding done", state["hasCompletedOnboarding"] == true),
        (
            "the supervise MCP server",
            state["mcpServers"]["bot-bottle"]["type"] == "http",
        ),
    ] {
        if !ok {
            return Err(format!(
                "~/.claude.json lacks {what}: {}",
                first_chars(&out.stdout, 600)
            ));
        }
    }
    Ok(())
}

/// Claude Code's own MCP client lists the supervise server, and a tool call the model
/// makes reaches it: the request shows up in `bottle requests`, the approval reaches
/// the model, and the approved host passes.
pub fn mcp_supervise(ctx: &mut Ctx) -> Result<(), String> {
    let run = ctx.run;
    let creds = credentials();
    let env = [("ANTHROPIC_API_KEY", creds.api_key.as_str())];
    with_bottle(run, &env, |bottle, _| {
        let list = claude(run, bottle, &["mcp", "list"])?.ok()?;
        if !list.stdout.contains("bot-bottle") || !list.stdout.contains("Connected") {
            return Err(format!(
                "`claude mcp list` does not show the supervise server connected:\n{}",
                list.explain()
            ));
        }
        let argv: Vec<String> = [
            "exec",
            &bottle.slug,
            "--",
            "claude",
            "--dangerously-skip-permissions",
            "-p",
            &format!("{USE_TOOL}: ask for asked.fake.test"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut asking = run.bottle_cmd(&argv);
        asking
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = asking
            .spawn()
            .map_err(|e| format!("cannot run claude -p: {e}"))?;
        let id = sh::poll(
            Duration::from_secs(120),
            Duration::from_millis(250),
            &run.interrupted,
            || {
                let listed = sh::run(
                    run.bottle_cmd(&["requests", &bottle.slug, "--json"]),
                    &run.interrupted,
                )
                .ok()?;
                let listed: serde_json::Value = serde_json::from_str(&listed.stdout).ok()?;
                listed.as_array()?.iter().find_map(|r| {
                    (r["request"]["host"] == "asked.fake.test")
                        .then(|| r["request"]["id"].as_str().map(str::to_owned))
                        .flatten()
                })
            },
        );
        let Some(id) = id else {
            let _ = child.kill();
            let out = child.wait_with_output().ok();
            return Err(format!(
                "Claude Code's tool call never reached `bottle requests`; claude printed: {}",
                out.map(|o| first_chars(&String::from_utf8_lossy(&o.stdout), 600)
                    + &first_chars(&String::from_utf8_lossy(&o.stderr), 600))
                    .unwrap_or_default()
            ));
        };
        sh::run(
            run.bottle_cmd(&["approve", &id, "--note", "approved by e2e"]),
            &run.interrupted,
        )?
        .ok()?;
        let line = "claude -p (tool use)";
        sh::wait(&mut child, line, Duration::from_secs(120), &run.interrupted)?;
        let mut stdout = String::new();
        if let Some(mut out) = child.stdout.take() {
            use std::io::Read;
            let _ = out.read_to_string(&mut stdout);
        }
        if !stdout.contains(TOOL_RESULT_SEEN) || !stdout.contains("approved") {
            return Err(format!(
                "the approval did not reach the model: {}",
                first_chars(&stdout, 600)
            ));
        }
        let probe = run.agent_sh(
            bottle,
            "curl -sS -o /dev/null -w '%{http_code}' --max-time 20 https://asked.fake.test/after-approval",
        )?;
        if probe.stdout.trim() != "200" {
            return Err(format!(
                "the approved host does not pass: {}",
                probe.explain()
            ));
        }
        Ok(())
    })
}

/// A terminal of our own (tmux on a private socket) running `bottle start` attached.
struct Terminal<'a> {
    run: &'a Run,
    socket: String,
}

impl<'a> Terminal<'a> {
    /// Starts `script` (a shell script file) in a fresh 200x50 terminal.
    fn open(run: &'a Run, script: &Path) -> Result<Self, String> {
        let socket = format!("bot-bottle-{}", run.id);
        sh::ok(
            cmd(
                "tmux",
                &[
                    "-L",
                    &socket,
                    "new-session",
                    "-d",
                    "-s",
                    "claude",
                    "-x",
                    "200",
                    "-y",
                    "50",
                    &format!("sh {}", script.display()),
                ],
            ),
            &run.interrupted,
        )?;
        Ok(Terminal { run, socket })
    }

    fn screen(&self) -> String {
        sh::run(
            cmd(
                "tmux",
                &["-L", &self.socket, "capture-pane", "-p", "-t", "claude"],
            ),
            &self.run.interrupted,
        )
        .map(|o| o.stdout)
        .unwrap_or_default()
    }

    fn keys(&self, keys: &[&str]) -> Result<(), String> {
        let mut args = vec!["-L", &self.socket, "send-keys", "-t", "claude"];
        args.extend(keys);
        sh::ok(cmd("tmux", &args), &self.run.interrupted).map(drop)
    }

    /// Types `text` as a person would, then Enter.
    fn type_line(&self, text: &str) -> Result<(), String> {
        self.keys(&["-l", text])?;
        std::thread::sleep(Duration::from_millis(300));
        self.keys(&["Enter"])
    }

    /// Waits until the screen shows one of `wanted`; fails at once on a first-run
    /// screen. The screen on failure is part of the message.
    fn wait_for(&self, wanted: &[&str], limit: Duration) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if let Some(first_run) = FIRST_RUN_SCREENS.iter().find(|s| screen.contains(**s)) {
                return Err(format!(
                    "a first-run screen appeared ({first_run}):\n{screen}"
                ));
            }
            if wanted.iter().any(|w| screen.contains(w)) {
                return Ok(screen);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "after {}s the screen shows none of {wanted:?}:\n{screen}",
                    limit.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Closes the terminal as a person closing the window would: the session's
    /// processes get SIGHUP.
    fn close(&self) {
        let _ = sh::run(
            cmd("tmux", &["-L", &self.socket, "kill-server"]),
            &self.run.interrupted,
        );
    }
}

impl Drop for Terminal<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

/// A script that runs `bottle start claude` attached with `env`; with `status`, the
/// launcher's exit status is written there (else the launcher replaces the shell).
fn start_script(
    run: &Run,
    name: &str,
    env: &[(&str, &str)],
    status: Option<&Path>,
) -> Result<PathBuf, String> {
    let q = |w: &str| format!("'{}'", w.replace('\'', r"'\''"));
    let mut script = format!(
        "unset ANTHROPIC_API_KEY CLAUDE_CODE_OAUTH_TOKEN\ncd {}\n",
        q(&run.project.display().to_string())
    );
    script.push_str(&format!(
        "export BOT_BOTTLE_STATE_DIR={} TERM=xterm-256color\n",
        q(&run.state_root.display().to_string())
    ));
    for (var, value) in env {
        script.push_str(&format!("export {var}={}\n", q(value)));
    }
    let args: Vec<String> = start_args(run, false, &[])?.iter().map(|a| q(a)).collect();
    let bottle = q(&run.bottle_bin.display().to_string());
    match status {
        Some(file) => script.push_str(&format!(
            "{bottle} {}\necho $? > {}\n",
            args.join(" "),
            q(&file.display().to_string())
        )),
        None => script.push_str(&format!("exec {bottle} {}\n", args.join(" "))),
    }
    let path = run.dir.join(name);
    std::fs::write(&path, script).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

/// The slug of the bottle that appeared in the state root since `known`.
fn new_slug(run: &Run, known: &std::collections::BTreeSet<String>) -> Option<String> {
    super::cleanup::state_dirs(&run.state_root)
        .into_iter()
        .find(|s| !known.contains(s))
}

/// `bottle start` in a terminal goes straight to Claude Code's prompt (no first-run
/// screen), answers a typed prompt, and `/exit` ends the launcher with status 0 and
/// nothing left. The session is kept: the next start resumes it with `--continue`.
pub fn interactive(ctx: &mut Ctx) -> Result<(), String> {
    let run = ctx.run;
    let creds = credentials();
    let env = [("ANTHROPIC_API_KEY", creds.api_key.as_str())];
    let status = run.dir.join("claude-interactive.status");
    let _ = std::fs::remove_file(&status);
    let script = start_script(run, "claude-interactive.sh", &env, Some(&status))?;
    let known = super::cleanup::state_dirs(&run.state_root);
    let started = Instant::now();
    let terminal = Terminal::open(run, &script)?;
    let ready = terminal.wait_for(PROMPT_READY, Duration::from_secs(240));
    super::cleanup::record_slugs(run);
    ready?;
    let to_prompt = started.elapsed();
    let slug = new_slug(run, &known).ok_or("no bottle appeared in the state root")?;
    terminal.type_line("say hi")?;
    terminal.wait_for(&[CANNED], Duration::from_secs(120))?;
    terminal.type_line("/exit")?;
    let code = sh::poll(
        Duration::from_secs(120),
        Duration::from_millis(250),
        &run.interrupted,
        || {
            std::fs::read_to_string(&status)
                .ok()
                .filter(|s| !s.trim().is_empty())
        },
    )
    .ok_or_else(|| {
        format!(
            "`bottle start` did not exit after /exit:\n{}",
            terminal.screen()
        )
    })?;
    if code.trim() != "0" {
        return Err(format!(
            "`bottle start` exited {} after /exit:\n{}",
            code.trim(),
            terminal.screen()
        ));
    }
    let left = run.leftovers(&slug)?;
    if !left.is_empty() {
        return Err(format!("after /exit, {slug} left: {}", left.join(", ")));
    }
    let sessions = walk(&run.state_root.join("agents").join(AGENT));
    if !sessions
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "jsonl"))
    {
        return Err("no session transcript was kept under the state root".into());
    }
    println!(
        "  claude-interactive: `bottle start` to Claude Code's prompt in {:.1}s",
        to_prompt.as_secs_f64()
    );
    // The next bottle of this agent resumes the conversation.
    let before = run.net().anthropic_requests().len();
    let out = sh::run_with(
        bottle_with(
            run,
            &start_args(run, false, &["--continue", "-p", "and again"])?,
            &env,
        ),
        Duration::from_secs(240),
        &run.interrupted,
    )?;
    super::cleanup::record_slugs(run);
    let out = out.ok()?;
    if !out.stdout.contains(CANNED) {
        return Err(format!(
            "the resumed run printed no reply:\n{}",
            out.explain()
        ));
    }
    let resumed = messages_calls(run, before).into_iter().any(|call| {
        call["all_user_text"]
            .as_str()
            .is_some_and(|t| t.contains("say hi") && t.contains("and again"))
    });
    if !resumed {
        return Err("the next start did not resume the kept session (`--continue`)".into());
    }
    Ok(())
}

/// Closing the terminal (SIGHUP to the launcher) tears the bottle down.
pub fn sighup(ctx: &mut Ctx) -> Result<(), String> {
    let run = ctx.run;
    let creds = credentials();
    let env = [("ANTHROPIC_API_KEY", creds.api_key.as_str())];
    let script = start_script(run, "claude-sighup.sh", &env, None)?;
    let known = super::cleanup::state_dirs(&run.state_root);
    let terminal = Terminal::open(run, &script)?;
    let ready = terminal.wait_for(PROMPT_READY, Duration::from_secs(240));
    super::cleanup::record_slugs(run);
    ready?;
    let slug = new_slug(run, &known).ok_or("no bottle appeared in the state root")?;
    terminal.close();
    let gone = sh::poll(
        Duration::from_secs(90),
        Duration::from_millis(500),
        &run.interrupted,
        || run.leftovers(&slug).ok().filter(Vec::is_empty),
    );
    if gone.is_none() {
        return Err(format!(
            "90s after the terminal closed, {slug} left: {}",
            run.leftovers(&slug)?.join(", ")
        ));
    }
    Ok(())
}
