//! Issue 17: the egress sidecar behind a corporate proxy. A CONNECT proxy
//! (`fixtures/e2e/connect_proxy.py`, credential required) runs on the fake internet;
//! a bottle whose manifest sets `egress.upstream_proxy` to it reaches an allowed host
//! through it (with the route's credential still injected in front of it, and the
//! proxy's credential accepted), a `no_proxy` host directly, and nothing around it:
//! the agent cannot reach the proxy itself, and once the proxy stops listening the
//! same kind of request fails with the sidecar's 502 instead of going direct.

use std::time::Duration;

use super::Run;
use super::bottle::Bottle;
use super::fake_internet::{self, header};
use super::scenarios::{Ctx, curl, expect_status, first_chars, random_chars};
use super::sh::{self, cmd};
use crate::images::BASE;

/// Host part of the proxy's address on the fake internet (echo .10, sshd .11,
/// anthropic .12).
const PROXY_HOST: u8 = 13;
/// The port the proxy listens on.
const PROXY_PORT: u16 = 3128;

/// The scenario.
pub fn upstream_proxy(ctx: &mut Ctx) -> Result<(), String> {
    let run = ctx.run;
    let net = run.net();
    let prefix = net
        .echo_ip
        .rsplit_once('.')
        .map(|(prefix, _)| prefix.to_owned())
        .ok_or_else(|| format!("odd echo address {}", net.echo_ip))?;
    let proxy_ip = format!("{prefix}.{PROXY_HOST}");
    let credential = format!(
        "corp-svc:{}",
        random_chars(24, b"abcdefghijklmnopqrstuvwxyz0123456789")
    );
    let container = format!("bot-bottle-{}-corp-proxy", run.id);
    let log_dir = fake_internet::create_log_dir(&run.dir.join("corp-proxy-log"))?;

    // The proxy: on the fake internet only, labelled with the run (cleanup finds it).
    let script = run.fixtures.join("connect_proxy.py");
    let mut docker = fake_internet::run_container(run, &container, &net.network, &proxy_ip);
    docker
        .args(["-e", &format!("CORP_PROXY_AUTH={credential}")])
        .arg("-v")
        .arg(fake_internet::mount(&script, "/e2e/connect_proxy.py", true))
        .arg("-v")
        .arg(fake_internet::mount(&log_dir, "/e2e/log", false))
        .args([BASE, "python3", "-u", "/e2e/connect_proxy.py"])
        .args(["--port", &PROXY_PORT.to_string()])
        .args(["--log", "/e2e/log/connects.jsonl"])
        .args(["--stop-file", "/e2e/log/stop"]);
    for name in fake_internet::ECHO_NAMES {
        docker.args(["--map", &format!("{name}={}", net.echo_ip)]);
    }
    sh::ok(docker, &run.interrupted)?;
    fake_internet::wait_listening(run, &container, PROXY_PORT)?;

    let template = std::fs::read_to_string(run.fixtures.join("upstream-proxy.yaml.in"))
        .map_err(|e| format!("reading fixtures/e2e/upstream-proxy.yaml.in: {e}"))?;
    let manifest = run.dir.join("upstream-proxy.yaml");
    std::fs::write(
        &manifest,
        run.fill_template(&template)
            .replace("@PROXY_IP@", &proxy_ip),
    )
    .map_err(|e| format!("writing {}: {e}", manifest.display()))?;
    let mut start = run.bottle_cmd(&run.start_args_for(&manifest));
    start.env("E2E_PROXY_AUTH", &credential);
    let (bottle, _) = run.start_detached(start)?;
    let result = checks(run, &bottle, &container, &log_dir, &proxy_ip);
    let down = sh::run_with(
        run.bottle_cmd(&["down", &bottle.slug]),
        Duration::from_secs(120),
        &run.interrupted,
    )
    .and_then(sh::Out::ok)
    .map(drop);
    let _ = sh::run(cmd("docker", &["rm", "-f", &container]), &run.interrupted);
    result.and(down)
}

/// The proxy's log records.
fn proxied(log: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn targets(log: &std::path::Path) -> Vec<String> {
    proxied(log)
        .iter()
        .filter_map(|r| r["target"].as_str().map(str::to_owned))
        .collect()
}

fn echo_saw(run: &Run, path: &str) -> Vec<serde_json::Value> {
    run.net()
        .echo_requests()
        .into_iter()
        .filter(|r| r["path"].as_str() == Some(path))
        .collect()
}

fn checks(
    run: &Run,
    bottle: &Bottle,
    container: &str,
    log_dir: &std::path::Path,
    proxy_ip: &str,
) -> Result<(), String> {
    let log = &log_dir.join("connects.jsonl");
    // 1. An allowed host, through the proxy, with its credential; the route's
    // credential is still injected by the sidecar in front of it.
    let via = curl(run, bottle, &["https://api.fake.test/via-corp-proxy"])?;
    expect_status(&via, 200, "api.fake.test through the corporate proxy")?;
    let records = proxied(log);
    let tunnel = records
        .iter()
        .find(|r| r["method"] == "CONNECT" && r["target"] == "api.fake.test:443")
        .ok_or_else(|| {
            format!(
                "the corporate proxy never saw CONNECT api.fake.test:443: {}",
                first_chars(&serde_json::Value::from(records.clone()).to_string(), 400)
            )
        })?;
    if tunnel["auth_ok"] != true {
        return Err(format!(
            "the sidecar's Proxy-Authorization was not accepted: {tunnel}"
        ));
    }
    let seen = echo_saw(run, "/via-corp-proxy");
    let record = seen
        .first()
        .ok_or("the echo server has no record of /via-corp-proxy")?;
    if header(record, "authorization") != Some(format!("Bearer {}", run.token).as_str()) {
        return Err("the route's credential was not injected in front of the proxy".into());
    }
    if header(record, "proxy-authorization").is_some() {
        return Err("the proxy credential reached the upstream".into());
    }

    // 2. A no_proxy host goes direct: the proxy never hears of it.
    let direct = curl(run, bottle, &["https://data.fake.test/no-proxy"])?;
    expect_status(&direct, 200, "data.fake.test (no_proxy)")?;
    if targets(log).iter().any(|t| t.starts_with("data.fake.test")) {
        return Err("a no_proxy host went through the proxy".into());
    }

    // 3. The agent cannot reach the proxy itself: neither directly (its network is
    // internal) nor through the sidecar (not allowed).
    let before = proxied(log).len();
    let around = format!(
        "curl -sS --max-time 5 -x http://{proxy_ip}:{PROXY_PORT} \
         https://api.fake.test/around-corp-proxy"
    );
    if run.agent_sh(bottle, &around)?.success() {
        return Err("the agent used the corporate proxy directly".into());
    }
    let through = curl(run, bottle, &[&format!("http://{proxy_ip}:{PROXY_PORT}/")])?;
    if through.status == 200 {
        return Err(format!(
            "the sidecar let the agent talk to the proxy: {}",
            through.describe()
        ));
    }
    if proxied(log).len() != before || !echo_saw(run, "/around-corp-proxy").is_empty() {
        return Err("the agent's own request reached the corporate proxy".into());
    }

    // 4. Without the proxy nothing gets out: once it stops listening, a host the
    // sidecar never connected to (no pooled connection) fails with the sidecar's 502,
    // and never arrives.
    std::fs::write(log_dir.join("stop"), b"")
        .map_err(|e| format!("stopping the corporate proxy: {e}"))?;
    let stopped = sh::poll(
        Duration::from_secs(10),
        Duration::from_millis(100),
        &run.interrupted,
        || {
            let probe = format!(
                "import socket; socket.create_connection(('127.0.0.1', {PROXY_PORT}), timeout=1)"
            );
            sh::run(
                cmd("docker", &["exec", container, "python3", "-c", &probe]),
                &run.interrupted,
            )
            .ok()
            .filter(|o| !o.success())
        },
    );
    if stopped.is_none() {
        return Err("the corporate proxy still listens after its stop file".into());
    }
    let after = curl(run, bottle, &["https://later.fake.test/after-proxy-gone"])?;
    expect_status(&after, 502, "later.fake.test with the proxy gone")?;
    if !after.body.contains("upstream proxy") {
        return Err(format!(
            "the 502 does not name the upstream proxy: {}",
            after.describe()
        ));
    }
    if !echo_saw(run, "/after-proxy-gone").is_empty() {
        return Err("with the proxy gone, the request went direct".into());
    }
    Ok(())
}
