//! The lifecycle commands through the real binary, against the fake engine
//! (`BOT_BOTTLE_BACKEND=fake:PATH`): every command, every failure path of the launch.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

use crate::fixtures::{SENTINELS, all_file_contents, bottle, workspace_root};

/// A fake engine and a state root in a temp dir.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn engine(&self) -> PathBuf {
        self.dir.path().join("engine.json")
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn bottle(&self) -> Command {
        let mut cmd = bottle();
        cmd.env(
            "BOT_BOTTLE_BACKEND",
            format!("fake:{}", self.engine().display()),
        )
        .env("BOT_BOTTLE_STATE_DIR", self.state());
        cmd
    }
    fn engine_state(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.engine()).unwrap_or_else(|_| b"{}".to_vec()))
            .unwrap()
    }
    fn start(&self, manifest: &str, agent: &str) -> String {
        let output = self
            .bottle()
            .args(["start", agent, "-d", "-f", manifest])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "start failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }
    /// Slug directories in the state root (the `logs` archive is not a bottle).
    fn bottle_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.state())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    // Logs and what agents keep across bottles (sessions) stay by design.
                    .filter(|n| n != "logs" && n != "agents")
                    .collect()
            })
            .unwrap_or_default()
    }
    fn assert_nothing_left(&self, context: &str) {
        let engine = self.engine_state();
        // A launch refused before touching the engine leaves no engine file at all.
        assert!(
            engine["containers"].as_array().is_none_or(Vec::is_empty),
            "{context}: containers left"
        );
        assert!(
            engine["networks"].as_object().is_none_or(|n| n.is_empty()),
            "{context}: networks left"
        );
        assert!(
            self.bottle_dirs().is_empty(),
            "{context}: state left: {:?}",
            self.bottle_dirs()
        );
    }
}

#[test]
fn start_ls_exec_egress_down() {
    let world = World::new();
    let slug = world.start("fixtures/valid/minimal.yaml", "dev");
    assert!(slug.starts_with("dev-"), "{slug}");

    let ls = world.bottle().args(["ls", "--json"]).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(listed[0]["slug"], slug.as_str());
    assert_eq!(listed[0]["running"], true);
    assert_eq!(listed[0]["ready"], true);
    let human = world.bottle().arg("ls").output().unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains(&slug));

    world
        .bottle()
        .args(["exec", &slug, "--", "true"])
        .assert()
        .success();
    world
        .bottle()
        .args(["exec", "nope-000000", "--", "true"])
        .assert()
        .code(1);

    let policy = world.state().join(&slug).join("egress/config/policy.json");
    let before = std::fs::read(&policy).unwrap();
    let allow = world
        .bottle()
        .args(["egress", "allow", &slug, "example.com:8443"])
        .output()
        .unwrap();
    assert!(
        allow.status.success(),
        "{}",
        String::from_utf8_lossy(&allow.stderr)
    );
    assert!(String::from_utf8_lossy(&allow.stdout).contains("is live"));
    let after = std::fs::read_to_string(&policy).unwrap();
    assert!(after.contains("example.com") && after.contains("8443"));
    assert_eq!(
        std::fs::metadata(&policy).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let calls = world.engine_state()["calls"].to_string();
    assert!(
        calls.contains("signal:HUP"),
        "the sidecar was not signalled: {calls}"
    );

    // Bad input changes nothing.
    for bad in ["https://x.com", "x.com:0", "*.com"] {
        let out = world
            .bottle()
            .args(["egress", "allow", &slug, bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad} was accepted");
    }
    world
        .bottle()
        .args(["egress", "deny", &slug, "not-allowed.example"])
        .assert()
        .code(1);
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), after);
    world
        .bottle()
        .args(["egress", "deny", &slug, "example.com"])
        .assert()
        .success();
    assert_eq!(
        std::fs::read(&policy).unwrap(),
        before,
        "deny restores the original rules"
    );

    let logs = world.bottle().args(["logs", &slug]).output().unwrap();
    assert!(logs.status.success());
    assert!(String::from_utf8_lossy(&logs.stdout).contains("HTTPS_PROXY"));

    // The egress sidecar prints only notable lines on Docker: `logs` reads the audit
    // file for the rest, following it with `-f`.
    let policy_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&policy).unwrap()).unwrap();
    assert_eq!(policy_json["audit_stdout"], "notable");
    let audit = world.state().join(&slug).join("audit/egress.jsonl");
    std::fs::create_dir_all(audit.parent().unwrap()).unwrap();
    let allowed = r#"{"event":"http","action":"allow","host":"routine.example"}"#;
    std::fs::write(&audit, format!("{allowed}\n")).unwrap();
    for args in [vec!["logs", &slug], vec!["logs", "-f", &slug]] {
        let logs = world.bottle().args(&args).output().unwrap();
        let printed = String::from_utf8_lossy(&logs.stdout);
        assert!(logs.status.success(), "{args:?}");
        assert!(printed.contains(allowed), "{args:?}:\n{printed}");
        assert!(printed.contains("HTTPS_PROXY"), "{args:?}:\n{printed}");
    }

    world.bottle().args(["down", &slug]).assert().success();
    world.assert_nothing_left("after down");
    assert!(
        world
            .state()
            .join("logs")
            .join(format!("{slug}.compose.log"))
            .exists()
    );
    world.bottle().args(["down", &slug]).assert().code(1);
}

#[test]
fn every_launch_failure_leaves_nothing_behind() {
    for step in [
        "engine",
        "build:bot-bottle/derived",
        "network:internal",
        "network:egress",
        "compose:up",
        "health",
        "exec",
    ] {
        let world = World::new();
        let output = world
            .bottle()
            .env("BOT_BOTTLE_FAKE_FAIL", step)
            .args(["start", "dev", "-d", "-f", "fixtures/valid/minimal.yaml"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{step}: start did not fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("error:"), "{step}: {stderr}");
        world.assert_nothing_left(step);
    }
}

#[test]
fn secrets_stay_out_of_every_file_and_modes_are_private() {
    let world = World::new();
    let slug = world.start("fixtures/valid/credential-routes.yaml", "claude");
    let state_dir = world.state().join(&slug);
    let everything = all_file_contents(&state_dir);
    for (name, secret) in SENTINELS {
        assert!(
            !everything.contains(secret),
            "{name} is in a file of the state dir"
        );
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&world.state()), 0o700);
    assert_eq!(mode(&state_dir), 0o700);
    assert_eq!(mode(&state_dir.join("egress/config")), 0o700);
    assert_eq!(mode(&state_dir.join("egress/config/ca-key.pem")), 0o600);
    assert_eq!(mode(&state_dir.join("egress/config/policy.json")), 0o600);
    assert_eq!(mode(&state_dir.join("metadata.json")), 0o600);
    // The fake engine's containers print their environment into the logs: the dump
    // must redact every secret the compose process handed them.
    world.bottle().args(["down", &slug]).assert().success();
    let log = std::fs::read_to_string(
        world
            .state()
            .join("logs")
            .join(format!("{slug}.compose.log")),
    )
    .unwrap();
    assert!(log.contains("BOT_BOTTLE_ROUTE_0=<redacted>"), "{log}");
    for (name, secret) in SENTINELS {
        assert!(!log.contains(secret), "{name} leaked into compose.log");
    }
}

#[test]
fn a_pinned_container_name_conflict_fails_clearly_and_cleans_up() {
    let world = World::new();
    let manifest = world.dir.path().join("pinned.yaml");
    std::fs::write(
        &manifest,
        "bottles:\n  dev:\n    image: {ref: bot-bottle/agent:latest}\nagents:\n  dev:\n    bottle: dev\n    container_name: my-agent\n",
    )
    .unwrap();
    let manifest = manifest.to_str().unwrap();
    let first = world.start(manifest, "dev");
    let output = world
        .bottle()
        .args(["start", "dev", "-d", "-f", manifest])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("`my-agent` is already in use"));
    assert_eq!(
        world.bottle_dirs(),
        std::slice::from_ref(&first),
        "the failed launch left state"
    );
    world.bottle().args(["down", &first]).assert().success();
    world.assert_nothing_left("after the conflict");
}

#[test]
fn gc_collects_a_launcher_killed_mid_start() {
    let world = World::new();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("bottle"))
        .current_dir(workspace_root())
        .env(
            "BOT_BOTTLE_BACKEND",
            format!("fake:{}", world.engine().display()),
        )
        .env("BOT_BOTTLE_STATE_DIR", world.state())
        .env("BOT_BOTTLE_FAKE_FAIL", "hang:compose:up")
        .args(["start", "dev", "-d", "-f", "fixtures/valid/minimal.yaml"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !world.engine_state()["calls"].to_string().contains("hang:") {
        assert!(
            std::time::Instant::now() < deadline,
            "the launch never reached compose up"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL: no teardown runs.
    child.wait().unwrap();
    assert_eq!(world.bottle_dirs().len(), 1);
    assert!(
        !world.engine_state()["networks"]
            .as_object()
            .unwrap()
            .is_empty()
    );

    let dry = world.bottle().args(["gc", "--dry-run"]).output().unwrap();
    let listed = String::from_utf8_lossy(&dry.stdout);
    assert!(
        listed.contains("would remove") && listed.contains("LauncherDied"),
        "{listed}"
    );
    assert_eq!(world.bottle_dirs().len(), 1, "--dry-run removed something");

    world.bottle().arg("gc").assert().success();
    world.assert_nothing_left("after gc");
    let again = world.bottle().arg("gc").output().unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to collect"));
}

#[test]
fn gc_leaves_live_bottles_alone() {
    let world = World::new();
    let slug = world.start("fixtures/valid/minimal.yaml", "dev");
    let out = world.bottle().arg("gc").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to collect"));
    assert_eq!(world.bottle_dirs(), [slug]);
}

#[test]
fn supervise_requests_are_listed_approved_and_applied() {
    let world = World::new();
    let slug = world.start("fixtures/valid/every-field.yaml", "implementer");
    let dir = world.state().join(&slug).join("supervise");
    assert!(dir.join("config/supervise.json").exists());
    let view = std::fs::read_to_string(dir.join("config/policy-view.json")).unwrap();
    assert!(
        view.contains("api.anthropic.com") && view.contains("x-api-key"),
        "{view}"
    );
    for (name, secret) in SENTINELS {
        assert!(!view.contains(secret), "{name} is in the policy view");
    }
    // What the sidecar writes when the agent calls request_egress / ask_human.
    let file_request = |id: &str, body: serde_json::Value| {
        let mut request =
            serde_json::json!({"id": id, "bottle_slug": slug, "created": 1_800_000_000u64});
        request
            .as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        std::fs::write(
            dir.join("queue").join(format!("{id}.json")),
            request.to_string(),
        )
        .unwrap();
    };
    let egress_id = "a1".repeat(16);
    let question_id = "b2".repeat(16);
    let denied_id = "c3".repeat(16);
    file_request(
        &egress_id,
        serde_json::json!({"kind": "egress", "host": "docs.rs", "port": 443, "reason": "read the docs"}),
    );
    file_request(
        &question_id,
        serde_json::json!({"kind": "question", "question": "which branch?"}),
    );
    file_request(
        &denied_id,
        serde_json::json!({"kind": "egress", "host": "evil.example", "reason": "trust me"}),
    );

    let listed = world
        .bottle()
        .args(["requests", "--json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    let human = world.bottle().arg("requests").output().unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("egress docs.rs:443"));

    world
        .bottle()
        .args(["approve", &egress_id[..8], "--note", "go ahead"])
        .assert()
        .success();
    let policy_path = world.state().join(&slug).join("egress/config/policy.json");
    let policy = std::fs::read(&policy_path).unwrap();
    assert!(String::from_utf8_lossy(&policy).contains("docs.rs"));
    let decision: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("decisions").join(format!("{egress_id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(decision["outcome"], "approved");
    assert_eq!(decision["note"], "go ahead");
    let version = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&policy));
    assert_eq!(
        decision["policy_version"],
        version.as_str(),
        "the decision names the applied policy"
    );
    let view = std::fs::read_to_string(dir.join("config/policy-view.json")).unwrap();
    assert!(
        view.contains("docs.rs") && view.contains(&version),
        "the policy view was not refreshed"
    );

    world
        .bottle()
        .args(["approve", &question_id])
        .assert()
        .code(1); // an answer is required
    world
        .bottle()
        .args(["approve", &question_id, "--note", "main"])
        .assert()
        .success();
    world
        .bottle()
        .args(["deny", &denied_id, "--note", "no"])
        .assert()
        .success();
    assert!(
        !String::from_utf8_lossy(&std::fs::read(&policy_path).unwrap()).contains("evil.example")
    );
    world
        .bottle()
        .args(["approve", &denied_id])
        .assert()
        .code(1); // decided already
    let left = world.bottle().arg("requests").output().unwrap();
    assert!(String::from_utf8_lossy(&left.stdout).contains("no pending requests"));
    world.bottle().args(["down", &slug]).assert().success();
    world.assert_nothing_left("after supervise");
}

#[test]
fn the_derived_image_is_built_once_and_reused() {
    let world = World::new();
    let first = world.start("fixtures/valid/minimal.yaml", "dev");
    world.bottle().args(["down", &first]).assert().success();
    let second = world.start("fixtures/valid/minimal.yaml", "dev");
    let calls = world.engine_state()["calls"].to_string();
    assert_eq!(
        calls.matches("build:bot-bottle/derived").count(),
        1,
        "{calls}"
    );
    world.bottle().args(["down", &second]).assert().success();
    world.assert_nothing_left("after two bottles");
}

#[test]
fn attached_start_runs_the_agent_then_tears_down() {
    let world = World::new();
    let output = world
        .bottle()
        .args(["start", "dev", "-f", "fixtures/valid/minimal.yaml"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let calls = world.engine_state()["calls"].to_string();
    assert!(
        calls.contains("exec-it:") && calls.contains(":claude"),
        "the agent command did not run: {calls}"
    );
    assert!(
        calls.find("exec-it:").unwrap() < calls.rfind("stop:").unwrap(),
        "teardown before the agent ran"
    );
    world.assert_nothing_left("after the attached session");
}

#[test]
fn start_exits_with_the_agents_status_after_teardown() {
    let world = World::new();
    let output = world
        .bottle()
        .env("BOT_BOTTLE_FAKE_FAIL", "agent-exit:7")
        .args([
            "start",
            "dev",
            "-f",
            "fixtures/valid/minimal.yaml",
            "--",
            "--continue",
        ])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let calls = world.engine_state()["calls"].to_string();
    assert!(
        calls.contains(":claude --continue"),
        "the extra arguments did not reach the agent: {calls}"
    );
    world.assert_nothing_left("after the agent failed");
}

#[test]
fn ls_flags_a_changed_manifest() {
    let world = World::new();
    let manifest = world.dir.path().join("bottle.yaml");
    std::fs::copy(
        workspace_root().join("fixtures/valid/minimal.yaml"),
        &manifest,
    )
    .unwrap();
    let slug = world.start(manifest.to_str().unwrap(), "dev");
    let listed = |w: &World| -> serde_json::Value {
        serde_json::from_slice(&w.bottle().args(["ls", "--json"]).output().unwrap().stdout).unwrap()
    };
    assert_eq!(listed(&world)[0]["manifest_changed"], false);
    std::fs::write(
        &manifest,
        std::fs::read_to_string(&manifest).unwrap() + "# edited\n",
    )
    .unwrap();
    assert_eq!(listed(&world)[0]["manifest_changed"], true);
    let human = world.bottle().arg("ls").output().unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("manifest changed"));
    world.bottle().args(["down", &slug]).assert().success();
}

#[test]
fn an_unpinned_container_name_conflict_is_retried_with_a_suffix() {
    let world = World::new();
    let output = world
        .bottle()
        .env("BOT_BOTTLE_FAKE_FAIL", "name-taken")
        .args(["start", "dev", "-d", "-f", "fixtures/valid/minimal.yaml"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("retrying as"));
    let slug = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let names = world.engine_state()["containers"].to_string();
    assert!(names.contains(&format!("{slug}-agent-2")), "{names}");
    let metadata: serde_json::Value = serde_json::from_slice(
        &std::fs::read(world.state().join(&slug).join("metadata.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metadata["agent_container"], format!("{slug}-agent-2"));
    world
        .bottle()
        .args(["exec", &slug, "--", "true"])
        .assert()
        .success();
    world.bottle().args(["down", &slug]).assert().success();
    world.assert_nothing_left("after the retried start");
}

#[test]
fn dashboard_serves_the_bottles_of_the_backend_behind_its_token() {
    use std::io::{BufRead, Read, Write};
    let world = World::new();
    let slug = world.start("fixtures/valid/minimal.yaml", "dev");
    let root = workspace_root();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("bottle"))
        .args(["dashboard", "--port", "0"])
        .current_dir(&root)
        .env_clear()
        .env("NO_COLOR", "1")
        .env("HOME", root.join("fixtures/files/home"))
        .env(
            "BOT_BOTTLE_BACKEND",
            format!("fake:{}", world.engine().display()),
        )
        .env("BOT_BOTTLE_STATE_DIR", world.state())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first
        .trim()
        .strip_prefix("bottle dashboard: ")
        .unwrap_or_else(|| panic!("no URL: {first:?}"))
        .to_owned();
    let rest = url.strip_prefix("http://127.0.0.1:").unwrap();
    let (port, token) = rest.split_once("/?token=").unwrap();
    assert_eq!(token.len(), 64);
    let get = |path: &str| {
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncookie: bottle_dashboard_{port}={token}\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let state = loop {
        let response = get("/api/state");
        if response.contains(&slug) || std::time::Instant::now() > deadline {
            break response;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(state.starts_with("HTTP/1.1 200"), "{state}");
    assert!(state.contains(&format!("\"slug\":\"{slug}\"")), "{state}");
}

/// `start` creates the containers and starts them itself. Compose v1 creates each on
/// its first network only: the others are attached before the start, with the
/// service's name for DNS (the fake refuses to start a container off a network its
/// service asks for); compose v2 attaches them all at creation.
#[test]
fn containers_are_on_all_their_networks_under_either_compose() {
    for (flavor, connects) in [("v1", true), ("v2", false)] {
        let world = World::new();
        let output = world
            .bottle()
            .env("BOT_BOTTLE_COMPOSE", flavor)
            .args([
                "start",
                "coder",
                "-d",
                "-f",
                "fixtures/valid/git-upstreams.yaml",
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{flavor}: start failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let calls: Vec<String> = world.engine_state()["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        let connected: Vec<&String> = calls.iter().filter(|c| c.starts_with("connect:")).collect();
        assert_eq!(!connected.is_empty(), connects, "{flavor}: {calls:?}");
        if connects {
            // The egress and git-gate sidecars are on two networks each.
            assert_eq!(connected.len(), 2, "{flavor}: {calls:?}");
            let start = calls.iter().position(|c| c.starts_with("start:")).unwrap();
            let last_connect = calls
                .iter()
                .rposition(|c| c.starts_with("connect:"))
                .unwrap();
            assert!(last_connect < start, "{flavor}: {calls:?}");
        }
    }
}
