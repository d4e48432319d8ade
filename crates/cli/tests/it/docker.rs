//! The lifecycle on a real Docker engine, through the real binary. Gated at run time:
//! without an engine or the images (`cargo xtask images`: the e2e test agent) it
//! skips with a message,
//! except under CI, where it must run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command as Std;
use std::time::{Duration, Instant};

use assert_cmd::Command;

use crate::fixtures::{all_file_contents, bottle};

const AGENT_IMAGE: &str = "bot-bottle/test-agent:dev";
const SENTINEL: &str = "sentinel-docker-secret-7f3a9c";
const TOKEN: &str = "sentinel-docker-token-51be0d";

/// The sidecar these tests run: the test binary is a debug build, whose hash names no
/// image; `cargo xtask images` tags its release build of the same tree `dev` too.
const SIDECAR_DEV: &str = "bot-bottle/sidecar:dev";

fn docker_ready() -> bool {
    let works = |args: &[&str]| {
        Std::new("docker")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let ready = works(&["info"])
        && works(&["image", "inspect", AGENT_IMAGE])
        && works(&["image", "inspect", SIDECAR_DEV]);
    if !ready {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the Docker tests: start the engine and run `cargo xtask images`"
        );
        eprintln!("SKIPPED: no Docker engine or no images (run `cargo xtask images`)");
    }
    ready
}

struct Bottles {
    dir: tempfile::TempDir,
}

impl Bottles {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn manifest(&self) -> PathBuf {
        self.manifest_with("")
    }
    /// The test manifest, with extra bottle-level YAML (e.g. `    supervise: true\n`).
    fn manifest_with(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("bottle.yaml");
        std::fs::write(
            &path,
            format!(
                "bottles:\n  box:\n    image: {{ref: {AGENT_IMAGE}}}\n    env:\n      MODE: test\n      SECRET_THING: {{value: \"${{DOCKER_TEST_SECRET}}\", secret: true}}\n    egress:\n      allow:\n        - host: api.example.com\n      routes:\n        - host: api.example.com\n          header: x-api-key\n          token_env: DOCKER_TEST_TOKEN\n{extra}agents:\n  box:\n    bottle: box\n    command: [bash]\n"
            ),
        )
        .unwrap();
        path
    }
    fn bottle(&self) -> Command {
        let mut cmd = bottle();
        cmd.env("BOT_BOTTLE_STATE_DIR", self.state())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DOCKER_TEST_SECRET", SENTINEL)
            .env("DOCKER_TEST_TOKEN", TOKEN)
            .env("BOT_BOTTLE_SIDECAR_IMAGE", SIDECAR_DEV);
        cmd
    }
    fn start(&self, extra: &[&str]) -> String {
        self.start_manifest(&self.manifest(), extra)
    }
    fn start_manifest(&self, manifest: &Path, extra: &[&str]) -> String {
        let output = self
            .bottle()
            .args(["start", "box", "-d", "-f", manifest.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "start failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }
    fn exec(&self, slug: &str, script: &str) -> (i32, String) {
        let output = self
            .bottle()
            .args(["exec", slug, "--", "sh", "-c", script])
            .output()
            .unwrap();
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status.code().unwrap_or(-1), text)
    }
}

fn labelled(kind: &str, slug: &str) -> Vec<String> {
    let filter = format!("label=dev.bot-bottle.slug={slug}");
    let args: Vec<&str> = match kind {
        "container" => vec!["ps", "-a", "-q", "--filter", &filter],
        _ => vec!["network", "ls", "-q", "--filter", &filter],
    };
    let out = Std::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Removes the bottle even when an assertion fails half way.
struct DownOnDrop<'a>(&'a Bottles, String);
impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.bottle().args(["down", &self.1]).output();
    }
}

#[test]
fn real_bottle_start_ls_exec_egress_down() {
    if !docker_ready() {
        return;
    }
    let bottles = Bottles::new();
    let slug = bottles.start(&["--egress-static-host", "later.test=127.0.0.1"]);
    let guard = DownOnDrop(&bottles, slug.clone());
    let state_dir = bottles.state().join(&slug);

    let ls = bottles.bottle().args(["ls", "--json"]).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(listed[0]["slug"], slug.as_str());
    assert_eq!(listed[0]["running"], true, "{listed}");

    // The agent runs as its image's user, in the project dir, with placeholders only.
    let (code, out) = bottles.exec(&slug, "id -u; env");
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("1000\n"), "{out}");
    assert!(
        out.contains("MODE=test") && out.contains("SECRET_THING=") && !out.contains(TOKEN),
        "{out}"
    );
    assert!(
        out.contains("DOCKER_TEST_TOKEN=") && out.contains("bottle-placeholder"),
        "{out}"
    );

    // Denied by the allowlist, with the hint.
    let (_, out) = bottles.exec(&slug, "curl -sS -m 10 http://later.test/x");
    assert!(
        out.contains("not in the bottle's egress allowlist"),
        "{out}"
    );
    assert!(
        out.contains(&format!("bottle egress allow {slug} later.test")),
        "{out}"
    );

    // Allowed after `egress allow` without a restart: now SSRF (127.0.0.1) stops it.
    let policy = state_dir.join("egress/config/policy.json");
    let before = std::fs::read(&policy).unwrap();
    bottles
        .bottle()
        .args(["egress", "allow", &slug, "later.test"])
        .assert()
        .success();
    assert_ne!(std::fs::read(&policy).unwrap(), before);
    assert_eq!(
        std::fs::metadata(&policy).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (_, out) = bottles.exec(&slug, "curl -sS -m 10 http://later.test/x");
    assert!(
        out.contains("an internal address") && !out.contains("allowlist"),
        "{out}"
    );
    // A bad change is refused and changes nothing.
    let after = std::fs::read(&policy).unwrap();
    bottles
        .bottle()
        .args(["egress", "allow", &slug, "bad host"])
        .assert()
        .code(1);
    assert_eq!(std::fs::read(&policy).unwrap(), after);

    // The host has no address on the agent's network: a host service listening on
    // every interface is not reachable from the agent at the subnet's first address.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("metadata.json")).unwrap()).unwrap();
    let internal = metadata["networks"][0].as_str().unwrap().to_owned();
    let subnet = Std::new("docker")
        .args([
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Subnet}}",
            &internal,
        ])
        .output()
        .unwrap();
    let first = String::from_utf8_lossy(&subnet.stdout)
        .trim()
        .replace(".0/24", ".1");
    let probe = format!(
        "python3 -c 'import socket; socket.create_connection((\"{first}\", {port}), timeout=3)' && echo CONNECTED"
    );
    let (_, out) = bottles.exec(&slug, &probe);
    assert!(
        !out.contains("CONNECTED"),
        "the agent reached a host listener at {first}:{port}: {out}"
    );
    drop(listener);

    // Outside names do not resolve inside the bottle.
    let (code, _) = bottles.exec(&slug, "getent hosts example.com");
    assert_ne!(code, 0, "an outside name resolved");

    // Modes and secrets on disk.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state_dir), 0o700);
    assert_eq!(mode(&state_dir.join("egress/config/ca-key.pem")), 0o600);
    let on_disk = all_file_contents(&state_dir);
    assert!(
        !on_disk.contains(SENTINEL) && !on_disk.contains(TOKEN),
        "a secret is in the state dir"
    );

    drop(guard);
    assert!(
        labelled("container", &slug).is_empty(),
        "containers left after down"
    );
    assert!(
        labelled("network", &slug).is_empty(),
        "networks left after down"
    );
    assert!(!state_dir.exists(), "state left after down");
    let log = std::fs::read_to_string(
        bottles
            .state()
            .join("logs")
            .join(format!("{slug}.compose.log")),
    )
    .unwrap();
    assert!(
        !log.contains(SENTINEL) && !log.contains(TOKEN),
        "a secret is in compose.log"
    );
}

#[test]
fn real_launcher_killed_mid_start_is_collected_by_gc() {
    if !docker_ready() {
        return;
    }
    let bottles = Bottles::new();
    let manifest = bottles.manifest();
    let mut child = Std::new(assert_cmd::cargo::cargo_bin("bottle"))
        .env("BOT_BOTTLE_STATE_DIR", bottles.state())
        .env("DOCKER_TEST_SECRET", SENTINEL)
        .env("DOCKER_TEST_TOKEN", TOKEN)
        .env("BOT_BOTTLE_SIDECAR_IMAGE", SIDECAR_DEV)
        .args(["start", "box", "-d", "-f", manifest.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has created its networks (before compose up finishes).
    let deadline = Instant::now() + Duration::from_secs(120);
    let slug = loop {
        assert!(
            Instant::now() < deadline,
            "the launch never created its networks"
        );
        let dirs: Vec<String> = std::fs::read_dir(bottles.state())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "logs")
            .collect();
        if let Some(slug) = dirs.first()
            && !labelled("network", slug).is_empty()
        {
            break slug.clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let dry = bottles.bottle().args(["gc", "--dry-run"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains(&slug),
        "{}",
        String::from_utf8_lossy(&dry.stdout)
    );
    // Whatever compose may still be creating settles within a few seconds.
    std::thread::sleep(Duration::from_secs(3));
    bottles.bottle().arg("gc").assert().success();
    assert!(
        labelled("container", &slug).is_empty(),
        "containers left after gc"
    );
    assert!(
        labelled("network", &slug).is_empty(),
        "networks left after gc"
    );
    assert!(!bottles.state().join(&slug).exists(), "state left after gc");
}

#[test]
fn real_supervise_request_is_approved_and_applied() {
    if !docker_ready() {
        return;
    }
    let bottles = Bottles::new();
    let manifest = bottles.manifest_with("    supervise: true\n");
    let slug = bottles.start_manifest(&manifest, &["--egress-static-host", "later.test=127.0.0.1"]);
    let _guard = DownOnDrop(&bottles, slug.clone());
    // The agent asks over MCP (in the background: the call waits for the human).
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"request_egress","arguments":{"host":"later.test","reason":"e2e","timeout_secs":90}}}"#;
    let script = format!(
        "curl -sS -m 100 http://supervise:8765/mcp -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' -d '{call}' > /tmp/answer 2>&1 &"
    );
    let (code, out) = bottles.exec(&slug, &script);
    assert_eq!(code, 0, "{out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        assert!(
            Instant::now() < deadline,
            "the request never reached the host"
        );
        let listed = bottles
            .bottle()
            .args(["requests", &slug, "--json"])
            .output()
            .unwrap();
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
        if let Some(id) = listed[0]["request"]["id"].as_str() {
            assert_eq!(listed[0]["request"]["host"], "later.test");
            break id.to_owned();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    bottles
        .bottle()
        .args(["approve", &id, "--note", "granted"])
        .assert()
        .success();
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let (_, out) = bottles.exec(&slug, "cat /tmp/answer");
        if out.contains("jsonrpc") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        answer.contains("approved") && answer.contains("granted"),
        "{answer}"
    );
    // The host is allowed now: the proxy's allowlist passes it (SSRF then stops 127.0.0.1).
    let (_, out) = bottles.exec(&slug, "curl -sS -m 10 http://later.test/x");
    assert!(out.contains("an internal address"), "{out}");
    // The policy tool shows the new rule, never a credential.
    let policy = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"policy","arguments":{}}}"#;
    let (_, out) = bottles.exec(
        &slug,
        &format!("curl -sS -m 10 http://supervise:8765/mcp -H 'content-type: application/json' -H 'accept: application/json' -d '{policy}'"),
    );
    assert!(
        out.contains("later.test") && out.contains("x-api-key") && !out.contains(TOKEN),
        "{out}"
    );
}

/// The sidecar image runs `bottle` with the C runtime bundled from the host, not the
/// base's: with the base's libc deleted, the bundled loader still runs it. This is
/// what lets a `bottle` built on any glibc run on the bookworm base.
#[test]
fn the_sidecar_runs_bottle_without_the_bases_libc() {
    if !docker_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("bot-bottle/test-no-libc:{}", std::process::id());
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {SIDECAR_DEV}\nRUN rm -f /lib/x86_64-linux-gnu/libc.so.6 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
        ),
    )
    .unwrap();
    let built = Std::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(dir.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let run = |entrypoint: &str, args: &[&str]| {
        Std::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--entrypoint",
                entrypoint,
                &tag,
            ])
            .args(args)
            .output()
            .unwrap()
    };
    // The base's own programs are gone with its libc: the deletion took.
    assert!(!run("/bin/sh", &["-c", "true"]).status.success());
    let loader = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter_map(|p| p.rsplit('/').next())
        .find(|n| n.starts_with("ld-"))
        .unwrap()
        .to_owned();
    let version = run(
        &format!("/opt/bot-bottle/lib/{loader}"),
        &[
            "--library-path",
            "/opt/bot-bottle/lib",
            "/opt/bot-bottle/bin/bottle",
            "--version",
        ],
    );
    let _ = Std::new("docker")
        .args(["image", "rm", "-f", &tag])
        .output();
    assert!(
        version.status.success(),
        "{}",
        String::from_utf8_lossy(&version.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("bottle {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Whether a compose flavour is installed: `v1` (`docker-compose`) or `v2`.
fn compose_installed(flavor: &str) -> bool {
    let (program, args): (&str, &[&str]) = match flavor {
        "v1" => ("docker-compose", &["version"]),
        _ => ("docker", &["compose", "version"]),
    };
    Std::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn under_either_compose_the_sidecars_are_on_all_their_networks() {
    if !docker_ready() {
        return;
    }
    // v1 attaches a container's first network at creation and the rest only at its
    // own start: a bottle started the fast way there would have an egress proxy the
    // agent cannot reach.
    for flavor in ["v1", "v2"] {
        if !compose_installed(flavor) {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI installs both compose flavours"
            );
            continue;
        }
        let bottles = Bottles::new();
        let output = bottles
            .bottle()
            .env("BOT_BOTTLE_COMPOSE", flavor)
            .args(["start", "box", "-d", "-f"])
            .arg(bottles.manifest())
            .args(["--egress-static-host", "later.test=127.0.0.1"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{flavor}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let slug = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        let _guard = DownOnDrop(&bottles, slug.clone());
        let (_, out) = bottles.exec(&slug, "curl -sS -m 10 http://later.test/x");
        assert!(
            out.contains("not in the bottle's egress allowlist"),
            "{flavor}: the agent did not reach its proxy: {out}"
        );
        let egress = Std::new("docker")
            .args(["ps", "-q", "--filter"])
            .arg(format!("label=dev.bot-bottle.slug={slug}"))
            .args(["--filter", "label=dev.bot-bottle.role=egress"])
            .output()
            .unwrap();
        let id = String::from_utf8_lossy(&egress.stdout).trim().to_owned();
        let networks = Std::new("docker")
            .args(["inspect", "-f", "{{len .NetworkSettings.Networks}}", &id])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&networks.stdout).trim(),
            "2",
            "{flavor}: the egress proxy is not on both its networks"
        );
    }
}
