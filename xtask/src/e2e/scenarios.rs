//! The scenarios of issues 7 and 11: each checks one invariant and fails when it breaks.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;

use super::Run;
use super::bottle::Bottle;
use super::fake_internet::header;
use super::sh::{self, cmd};
use super::{
    claude, dashboard, redteam_bottle, redteam_credentials, redteam_limits, redteam_paths,
    upstream_proxy,
};

/// A scenario: its name and its check.
pub type Check = fn(&mut Ctx) -> Result<(), String>;

/// Every scenario, in the order they run (10 and 9 tear bottles down, so they come last).
pub const ALL: &[(&str, Check)] = &[
    ("provisioned", provisioned),
    ("allowed-https", allowed_https),
    ("not-allowed-403", not_allowed),
    ("credential-injection", credential_injection),
    ("dlp", dlp),
    ("ssrf", ssrf),
    ("no-way-around-proxy", no_way_around),
    ("egress-allow-live", egress_allow_live),
    ("git-gate", git_gate),
    ("supervise-approval", supervise_approval),
    // Issue 12, the red team's findings.
    (
        "sidecars-do-not-forward",
        redteam_bottle::sidecars_do_not_forward,
    ),
    ("agent-secret-guarded", redteam_bottle::agent_secret_guarded),
    ("disk-capped", redteam_bottle::disk_capped),
    ("response-scrubbed", redteam_credentials::scrubbed),
    ("path-bypass", redteam_paths::path_bypass),
    ("supervise-cap", redteam_limits::supervise_cap),
    ("audit-bounded", redteam_limits::audit_bounded),
    // Issue 17: the egress sidecar behind a corporate proxy, on a bottle of its own.
    ("upstream-proxy", upstream_proxy::upstream_proxy),
    // Issue 16: the dashboard in headless Chromium, on a bottle of its own.
    ("dashboard", dashboard::in_browser),
    ("bottles-isolated", bottles_isolated),
    ("no-secrets-on-disk", no_secrets_on_disk),
    ("down-and-gc", down_and_gc),
    // The real Claude Code CLI (issue 11); each starts and removes its own bottle.
    ("claude-print-api-key", claude::print_api_key),
    ("claude-print-oauth-token", claude::print_oauth_token),
    ("claude-mcp-supervise", claude::mcp_supervise),
    ("claude-interactive", claude::interactive),
    ("claude-sighup", claude::sighup),
];

/// What scenarios share: the run and its two bottles, started on first use.
pub struct Ctx<'a> {
    pub run: &'a Run,
    a: Option<Result<Bottle, String>>,
    b: Option<Result<Bottle, String>>,
}

impl<'a> Ctx<'a> {
    pub fn new(run: &'a Run) -> Self {
        Ctx {
            run,
            a: None,
            b: None,
        }
    }

    /// Bottle A (started on first use; a failed start fails every scenario using it).
    pub(super) fn a(&mut self) -> Result<Bottle, String> {
        let run = self.run;
        self.a
            .get_or_insert_with(|| run.start_bottle())
            .clone()
            .map_err(|e| format!("bottle A did not start: {e}"))
    }

    fn b(&mut self) -> Result<Bottle, String> {
        let run = self.run;
        self.b
            .get_or_insert_with(|| run.start_bottle())
            .clone()
            .map_err(|e| format!("bottle B did not start: {e}"))
    }
}

/// Quotes `word` for `sh`.
fn q(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// One curl in the agent: exit code, HTTP status (the CONNECT status when the tunnel
/// was refused), body.
pub(super) struct Curl {
    rc: i32,
    pub(super) status: u16,
    pub(super) body: String,
    stderr: String,
}

impl Curl {
    pub(super) fn describe(&self) -> String {
        format!(
            "curl exit {}, HTTP {}, body: {}, stderr: {}",
            self.rc,
            self.status,
            first_chars(&self.body, 400),
            first_chars(self.stderr.trim(), 300)
        )
    }
}

pub(super) fn first_chars(text: &str, n: usize) -> String {
    let mut s: String = text.chars().take(n).collect();
    if text.chars().count() > n {
        s.push('…');
    }
    s
}

pub(super) fn curl(run: &Run, bottle: &Bottle, args: &[&str]) -> Result<Curl, String> {
    let words: Vec<String> = args.iter().map(|a| q(a)).collect();
    let script = format!(
        "curl -sS --max-time 20 -o /tmp/e2e.body -w '%{{http_code}} %{{http_connect}}' {} \
         > /tmp/e2e.code; rc=$?; echo \"$rc $(cat /tmp/e2e.code)\"; cat /tmp/e2e.body 2>/dev/null; \
         rm -f /tmp/e2e.body /tmp/e2e.code",
        words.join(" ")
    );
    let out = run.agent_sh(bottle, &script)?;
    let (first, body) = out.stdout.split_once('\n').unwrap_or((&out.stdout, ""));
    let nums: Vec<i64> = first
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (rc, code, connect) = match nums.as_slice() {
        [rc, code, connect] => (*rc, *code, *connect),
        _ => {
            return Err(format!(
                "unexpected output of curl in the agent:\n{}",
                out.explain()
            ));
        }
    };
    Ok(Curl {
        rc: rc as i32,
        status: if code != 0 { code } else { connect } as u16,
        body: body.to_string(),
        stderr: out.stderr,
    })
}

pub(super) fn expect_status(curl: &Curl, status: u16, what: &str) -> Result<(), String> {
    if curl.status == status {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected HTTP {status}; {}",
            curl.describe()
        ))
    }
}

/// The echo log records whose path starts with `path`.
fn seen(run: &Run, path: &str) -> Vec<serde_json::Value> {
    run.net()
        .echo_requests()
        .into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with(path)))
        .collect()
}

/// Prints the proxy's raw answer to `CONNECT target`.
fn connect_probe(target: &str) -> String {
    const PROBE: &str = r#"
import socket, sys
s = socket.create_connection(("egress", 3128), timeout=10)
s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (sys.argv[1], sys.argv[1])).encode())
data = b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data and len(data) > 200:
            s.settimeout(1)
except socket.timeout:
    pass
sys.stdout.write(data.decode("utf-8", "replace"))
"#;
    format!("python3 -c {} {}", q(PROBE), q(target))
}

/// Exits 0 iff a TCP connection to `host:port` opens within 3 seconds.
fn tcp_probe(host: &str, port: u16) -> String {
    format!(
        "python3 -c 'import socket; socket.create_connection(({}, {port}), timeout=3).close()'",
        q(host).replace('\'', "\"")
    )
}

// 0: the agent (a non-root image user) is provisioned: its workdir is a git repository
// whose remote is the gate, and the supervise MCP server is registered.
fn provisioned(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    let out = run
        .agent_sh(
            &a,
            "id -u; git remote get-url project; cat \"$HOME/.claude.json\"",
        )?
        .ok()?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    if lines.first() != Some(&"1000") {
        return Err(format!(
            "the agent does not run as its image's user: {}",
            out.explain()
        ));
    }
    if lines.get(1) != Some(&"http://git-gate:9418/project.git") {
        return Err(format!("the workdir's remote is wrong: {}", out.explain()));
    }
    if !out.stdout.contains("http://supervise:8765/mcp") {
        return Err(format!(
            "the MCP client config is missing: {}",
            out.explain()
        ));
    }
    Ok(())
}

// 1
fn allowed_https(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    // Through `bottle exec`, plain curl: no -k, no --cacert, no proxy flag.
    let out = sh::run(
        run.bottle_cmd(&[
            "exec",
            &a.slug,
            "--",
            "curl",
            "-sS",
            "--max-time",
            "20",
            "https://api.fake.test/hello?from=e2e",
        ]),
        &run.interrupted,
    )?
    .ok()?;
    let echo: serde_json::Value = serde_json::from_str(&out.stdout).map_err(|e| {
        format!(
            "the echo reply is not JSON ({e}): {}",
            first_chars(&out.stdout, 300)
        )
    })?;
    if echo["method"] != "GET" || echo["path"] != "/hello?from=e2e" {
        return Err(format!("unexpected echo: {echo}"));
    }
    if seen(run, "/hello?from=e2e").is_empty() {
        return Err("the echo server has no record of the request".into());
    }
    // A large download streams through intact.
    let check = "curl -sS --max-time 60 https://api.fake.test/large | python3 -c '\
import sys; d = sys.stdin.buffer.read(); p = b\"bot-bottle-e2e-\"; \
e = (p * (len(d) // len(p) + 1))[:len(d)]; print(len(d), d == e)'";
    let out = run.agent_sh(&a, check)?.ok()?;
    if out.stdout.trim() != "8388608 True" {
        return Err(format!(
            "the 8 MiB download arrived as `{}` (length, intact)",
            out.stdout.trim()
        ));
    }
    Ok(())
}

// 2
fn not_allowed(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    let hint = format!("bottle egress allow {} other.fake.test", a.slug);
    let https = curl(run, &a, &["https://other.fake.test/secret-https"])?;
    expect_status(&https, 403, "HTTPS to a host not on the allowlist")?;
    // curl does not show a refused CONNECT's body: read it off the socket.
    let connect = run
        .agent_sh(&a, &connect_probe("other.fake.test:443"))?
        .ok()?
        .stdout;
    if !connect.starts_with("HTTP/1.1 403") || !connect.contains(&hint) {
        return Err(format!(
            "the refused CONNECT is not a 403 carrying the hint `{hint}`: {}",
            first_chars(&connect, 400)
        ));
    }
    let http = curl(run, &a, &["http://other.fake.test/secret-http"])?;
    expect_status(&http, 403, "plain HTTP to a host not on the allowlist")?;
    if !http.body.contains(&hint) {
        return Err(format!(
            "the HTTP 403 does not carry the hint `{hint}`; {}",
            http.describe()
        ));
    }
    // Allowed host, plain HTTP: refused too (api.fake.test is allowed on 443 only).
    let plain = curl(run, &a, &["http://api.fake.test/secret-plain"])?;
    expect_status(&plain, 403, "plain HTTP to an HTTPS-only host")?;
    for path in ["/secret-https", "/secret-http", "/secret-plain"] {
        if !seen(run, path).is_empty() {
            return Err(format!("the echo server received {path}"));
        }
    }
    Ok(())
}

// 3
fn credential_injection(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    let token = &run.token;
    let reply = curl(run, &a, &["https://api.fake.test/credential"])?;
    expect_status(&reply, 200, "request on the credential route")?;
    let records = seen(run, "/credential");
    let Some(record) = records.last() else {
        return Err("the echo server has no record of /credential".into());
    };
    let expected = format!("Bearer {token}");
    if header(record, "authorization") != Some(expected.as_str()) {
        return Err(format!(
            "the upstream did not get the real token: authorization is {}",
            match header(record, "authorization") {
                None => "absent".to_string(),
                Some(v) if v.contains(token.as_str()) => "the token in another format".into(),
                Some(v) => format!("`{}`", first_chars(v, 60)),
            }
        ));
    }
    // The agent's environment holds the placeholder, never the token.
    let env = run.agent_sh(&a, "env")?.ok()?;
    let placeholder = env
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("E2E_ECHO_TOKEN="))
        .ok_or("the agent's environment has no E2E_ECHO_TOKEN placeholder")?
        .to_string();
    if placeholder.is_empty() || placeholder == *token || env.stdout.contains(token.as_str()) {
        return Err("the agent's environment holds the real token".into());
    }
    // Every process's command line and environment, read as root.
    let procs = run.agent_root_sh(
        &a,
        "for p in /proc/[0-9]*; do cat $p/cmdline $p/environ; echo; done 2>/dev/null; true",
    )?;
    if procs.stdout.contains(token.as_str()) {
        return Err("a process in the agent container holds the real token".into());
    }
    if !procs.stdout.contains(&placeholder) {
        return Err(
            "no process environment in the agent holds the placeholder (probe broken?)".into(),
        );
    }
    if reply.body.contains(token.as_str()) {
        return Err("the agent read the real token in a response".into());
    }
    // Every file in the agent container (its filesystem, tmpfs and mounts included).
    let mut tar = cmd(
        "docker",
        &[
            "exec",
            "-u",
            "root",
            &a.agent,
            "tar",
            "-C",
            "/",
            "--exclude=./proc",
            "--exclude=./sys",
            "--exclude=./dev",
            "-cf",
            "-",
            ".",
        ],
    );
    let (found, bytes) = stream_contains(&mut tar, &[token.as_bytes(), placeholder.as_bytes()])?;
    if found[0] {
        return Err("a file in the agent container holds the real token".into());
    }
    if bytes < 10_000_000 {
        return Err(format!(
            "the agent's filesystem archive is only {bytes} bytes (probe broken?)"
        ));
    }
    Ok(())
}

/// Runs `command` and searches its stdout for each needle; which were found, and how
/// many bytes were read.
fn stream_contains(
    command: &mut std::process::Command,
    needles: &[&[u8]],
) -> Result<(Vec<bool>, usize), String> {
    let line = crate::proc::describe(command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start `{line}`: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let keep = needles.iter().map(|n| n.len()).max().unwrap_or(1);
    let mut found = vec![false; needles.len()];
    let mut window: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = stdout
            .read(&mut buf)
            .map_err(|e| format!("reading `{line}`: {e}"))?;
        if n == 0 {
            break;
        }
        total += n;
        window.extend_from_slice(&buf[..n]);
        for (i, needle) in needles.iter().enumerate() {
            found[i] |= window.windows(needle.len()).any(|w| w == *needle);
        }
        let cut = window.len().saturating_sub(keep);
        window.drain(..cut);
    }
    let _ = child.wait();
    Ok((found, total))
}

/// `count` random characters from `alphabet`.
pub(super) fn random_chars(count: usize, alphabet: &[u8]) -> String {
    let bytes = super::random_bytes(count);
    bytes
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect()
}

// 4
fn dlp(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    // To an allowed host that is not the route's: the bottle's secret is legitimate
    // only on its own route's host.
    let control = curl(
        run,
        &a,
        &[
            "--data-binary",
            "harmless",
            "https://data.fake.test/dlp-control",
        ],
    )?;
    expect_status(&control, 200, "a harmless POST (control)")?;
    let aws = format!(
        "AKIA{}",
        random_chars(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    );
    let own = base64::engine::general_purpose::STANDARD.encode(run.token.as_bytes());
    let mut failures = Vec::new();
    for (what, value) in [
        ("fake AWS key", &aws),
        ("the bottle's secret", &run.token),
        ("the bottle's secret in base64", &own),
    ] {
        let header = format!("X-E2E-Note: {value}");
        let body = format!("note={value}");
        let url = format!("https://data.fake.test/dlp-url?k={value}");
        for (place, args) in [
            ("URL", vec![url.as_str()]),
            (
                "header",
                vec!["-H", &header, "https://data.fake.test/dlp-header"],
            ),
            (
                "body",
                vec!["--data-binary", &body, "https://data.fake.test/dlp-body"],
            ),
        ] {
            let reply = curl(run, &a, &args)?;
            if reply.status != 403 {
                failures.push(format!("{what} in the {place}: {}", reply.describe()));
            }
        }
    }
    let log = run.net().echo_log_text();
    let data_log: String = log
        .lines()
        .filter(|l| l.contains("/dlp-"))
        .collect::<Vec<_>>()
        .join("\n");
    for (what, value) in [
        ("fake AWS key", &aws),
        ("secret", &run.token),
        ("base64 secret", &own),
    ] {
        if data_log.contains(value.as_str()) {
            failures.push(format!("the echo server saw the {what}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// The egress audit log's records.
pub(super) fn audit(bottle: &Bottle) -> Vec<serde_json::Value> {
    std::fs::read_to_string(bottle.state_dir.join("audit/egress.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

// 5
fn ssrf(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    let mut failures = Vec::new();
    for (host, url) in [
        (
            "metadata.fake.test",
            "https://metadata.fake.test/latest/meta-data/",
        ),
        (
            "169.254.169.254",
            "http://169.254.169.254/latest/meta-data/",
        ),
        ("loopback.fake.test", "https://loopback.fake.test/"),
        ("gateway.fake.test", "https://gateway.fake.test/"),
    ] {
        let reply = curl(run, &a, &[url])?;
        let by_ssrf = audit(&a).iter().any(|r| {
            r["host"] == host
                && r["action"] == "deny"
                && r["rule"].as_str().is_some_and(|rule| rule.contains("ssrf"))
        });
        if reply.status != 403 || !by_ssrf {
            failures.push(format!(
                "{url}: {}; SSRF denial in the audit log: {by_ssrf}",
                reply.describe()
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n  "))
    }
}

// 6
fn no_way_around(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    let net = run.net();
    // Control: the probe itself works (the agent reaches its own proxy).
    run.agent_sh(&a, &tcp_probe("egress", 3128))?
        .ok()
        .map_err(|e| format!("control probe to egress:3128 failed: {e}"))?;
    let mut escaped = Vec::new();
    if run.agent_sh(&a, &tcp_probe(&net.echo_ip, 443))?.success() {
        escaped.push(format!("direct TCP to {}:443 connected", net.echo_ip));
    }
    let unset = "env -u HTTPS_PROXY -u https_proxy -u HTTP_PROXY -u http_proxy -u ALL_PROXY \
                 curl -sS --max-time 8 https://api.fake.test/around-unset";
    if run.agent_sh(&a, unset)?.success() {
        escaped.push("curl without the proxy variables succeeded".into());
    }
    let pinned = format!(
        "curl -sS --max-time 8 --noproxy '*' --resolve api.fake.test:443:{ip} \
         https://api.fake.test/around-pinned",
        ip = net.echo_ip
    );
    if run.agent_sh(&a, &pinned)?.success() {
        escaped.push("curl --noproxy to the upstream's IP succeeded".into());
    }
    for path in ["/around-unset", "/around-pinned"] {
        if !seen(run, path).is_empty() {
            escaped.push(format!("the echo server received {path}"));
        }
    }
    // DNS: outside names do not resolve, and the sink logged the query.
    let probe = format!(
        "probe-{}-{}.e2e.invalid",
        run.id,
        random_chars(6, b"abcdefghij")
    );
    for name in [probe.as_str(), "api.fake.test"] {
        let lookup = format!(
            "python3 -c 'import socket, sys; socket.getaddrinfo(sys.argv[1], 443)' {}",
            q(name)
        );
        if run.agent_sh(&a, &lookup)?.success() {
            escaped.push(format!("{name} resolved in the agent"));
        }
    }
    let logged = sh::poll(
        Duration::from_secs(5),
        Duration::from_millis(200),
        &run.interrupted,
        || {
            audit(&a)
                .iter()
                .any(|r| {
                    r["event"] == "dns"
                        && r["host"]
                            .as_str()
                            .is_some_and(|h| h.trim_end_matches('.').eq_ignore_ascii_case(&probe))
                })
                .then_some(())
        },
    );
    if logged.is_none() {
        let resolv = run
            .agent_sh(&a, "cat /etc/resolv.conf")
            .map(|o| o.stdout)
            .unwrap_or_default();
        escaped.push(format!(
            "the DNS sink did not log the lookup of {probe} (agent resolv.conf: {})",
            resolv.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
    }
    if escaped.is_empty() {
        Ok(())
    } else {
        Err(escaped.join("; "))
    }
}

// 7
fn egress_allow_live(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    let before = curl(run, &a, &["https://later.fake.test/later-before"])?;
    expect_status(&before, 403, "later.fake.test before `egress allow`")?;
    let out = sh::run(
        run.bottle_cmd(&["egress", "allow", &a.slug, "later.fake.test"]),
        &run.interrupted,
    )?
    .ok()?;
    if !out.stdout.contains("is live") {
        return Err(format!("`egress allow` did not confirm: {}", out.explain()));
    }
    let after = curl(run, &a, &["https://later.fake.test/later-after"])?;
    expect_status(&after, 200, "later.fake.test after `egress allow`")?;
    if !seen(run, "/later-after")
        .iter()
        .any(|r| header(r, "host").is_some_and(|h| h.starts_with("later.fake.test")))
    {
        return Err("the echo server did not get the request for later.fake.test".into());
    }

    // Bad input through the CLI: refused, policy file untouched.
    let policy = a.state_dir.join("egress/config/policy.json");
    let original =
        std::fs::read(&policy).map_err(|e| format!("reading {}: {e}", policy.display()))?;
    let bad = sh::run(
        run.bottle_cmd(&["egress", "allow", &a.slug, "bad host!"]),
        &run.interrupted,
    )?;
    if bad.success() {
        return Err(format!("an invalid host was accepted: {}", bad.explain()));
    }
    if std::fs::read(&policy).ok().as_deref() != Some(original.as_slice()) {
        return Err("a refused policy change still rewrote policy.json".into());
    }
    // A broken policy file reaching the sidecar: it keeps the old policy.
    let egress = run.container(&a, "egress")?;
    replace_file(&policy, b"{\"this is\": \"not a policy\"}\n")?;
    let hup = |run: &Run| {
        sh::ok(
            cmd("docker", &["kill", "-s", "HUP", &egress]),
            &run.interrupted,
        )
    };
    let kept = (|| {
        hup(run)?;
        std::thread::sleep(Duration::from_secs(1));
        for (url, path) in [
            ("https://api.fake.test/kept-api", "api"),
            ("https://later.fake.test/kept-later", "later"),
        ] {
            let reply = curl(run, &a, &[url])?;
            expect_status(&reply, 200, &format!("{path} after a broken policy reload"))?;
        }
        let other = curl(run, &a, &["https://other.fake.test/kept-other"])?;
        expect_status(&other, 403, "other.fake.test after a broken policy reload")
    })();
    replace_file(&policy, &original)?;
    hup(run)?;
    kept?;
    if !audit(&a).iter().any(|r| r["action"] == "reload-failed") {
        return Err("the sidecar did not log the failed reload".into());
    }
    Ok(())
}

/// Atomic replace, as the CLI does: temp file beside it, rename over it.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let temp = path.with_extension("e2e-tmp");
    std::fs::write(&temp, bytes)
        .and_then(|()| std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600)))
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| format!("replacing {}: {e}", path.display()))
}

// 8
fn git_gate(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    let net = run.net();
    let upstream = |reference: &str| -> Result<String, String> {
        let out = sh::run(
            cmd(
                "docker",
                &[
                    "exec",
                    "-u",
                    "git",
                    &net.ssh_container,
                    "git",
                    "--git-dir",
                    "/srv/git/project.git",
                    "rev-parse",
                    "--verify",
                    "-q",
                    reference,
                ],
            ),
            &run.interrupted,
        )?;
        Ok(out.stdout.trim().to_string())
    };
    let main_before = upstream("refs/heads/main")?;
    let script = format!(
        "set -e; cd /tmp && rm -rf e2e-clone && git clone -q http://git-gate:9418/project.git e2e-clone \
         && cd e2e-clone && git -c user.name=agent -c user.email=agent@fake.test commit -q --allow-empty \
         -m {} && git rev-parse HEAD && git push -q origin HEAD:refs/heads/agent/e2e",
        q(&format!("e2e {}", run.id))
    );
    let out = run.agent_sh(&a, &script)?.ok()?;
    let head = out.stdout.lines().next().unwrap_or("").trim().to_string();
    let landed = upstream("refs/heads/agent/e2e")?;
    if head.is_empty() || landed != head {
        return Err(format!(
            "the push to refs/heads/agent/e2e did not land upstream (agent HEAD {head}, upstream `{landed}`)"
        ));
    }
    let forbidden = run.agent_sh(
        &a,
        "cd /tmp/e2e-clone && git push origin HEAD:refs/heads/main",
    )?;
    if forbidden.success() {
        return Err("a push to refs/heads/main (not in push refs) was accepted".into());
    }
    if !forbidden.stderr.contains("refused") {
        return Err(format!(
            "the refusal does not say so: {}",
            forbidden.explain()
        ));
    }
    let main_after = upstream("refs/heads/main")?;
    if main_after != main_before {
        return Err(format!(
            "upstream main moved: {main_before} -> {main_after}"
        ));
    }
    Ok(())
}

// 11
fn bottles_isolated(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let b = ctx.b()?;
    let run = ctx.run;
    // Something listening in B's agent, so a refusal means "unreachable", not "closed".
    sh::ok(
        cmd(
            "docker",
            &[
                "exec",
                "-d",
                &b.agent,
                "python3",
                "-m",
                "http.server",
                "8080",
            ],
        ),
        &run.interrupted,
    )?;
    sh::poll(
        Duration::from_secs(10),
        Duration::from_millis(200),
        &run.interrupted,
        || {
            run.agent_sh(&b, &tcp_probe("127.0.0.1", 8080))
                .ok()
                .filter(|o| o.success())
        },
    )
    .ok_or("the listener in bottle B did not start")?;
    let mut targets: Vec<(String, u16, String)> = Vec::new();
    for (network, ip) in run.addresses(&b.agent)? {
        targets.push((ip, 8080, format!("B's agent on {network}")));
    }
    for (network, ip) in run.addresses(&run.container(&b, "egress")?)? {
        targets.push((ip, 3128, format!("B's egress on {network}")));
    }
    if targets.is_empty() {
        return Err("bottle B has no addresses".into());
    }
    let mut reached = Vec::new();
    for (ip, port, what) in &targets {
        if run.agent_sh(&a, &tcp_probe(ip, *port))?.success() {
            reached.push(format!("A reached {what} ({ip}:{port})"));
        }
    }
    if reached.is_empty() {
        Ok(())
    } else {
        Err(reached.join("; "))
    }
}

// 10
fn no_secrets_on_disk(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    let token = run.token.as_str();
    let own_b64 = base64::engine::general_purpose::STANDARD.encode(token.as_bytes());
    let mut problems = Vec::new();
    let scan = |path: &Path, problems: &mut Vec<String>| {
        if let Ok(bytes) = std::fs::read(path) {
            let text = String::from_utf8_lossy(&bytes);
            if text.contains(token) || text.contains(&own_b64) {
                problems.push(format!("{} holds the secret", path.display()));
            }
        }
    };
    for file in ["docker-compose.yml", "metadata.json"] {
        let path = a.state_dir.join(file);
        if !path.is_file() {
            problems.push(format!("{} is missing", path.display()));
        }
    }
    for path in walk(&a.state_dir) {
        scan(&path, &mut problems);
    }
    let logs = sh::run(run.bottle_cmd(&["logs", &a.slug]), &run.interrupted)?.ok()?;
    if logs.stdout.contains(token) || logs.stderr.contains(token) {
        problems.push("`bottle logs` prints the secret".into());
    }
    for (path, mode) in [
        (run.state_root.clone(), 0o700),
        (a.state_dir.clone(), 0o700),
        (a.state_dir.join("egress/config"), 0o700),
        (a.state_dir.join("egress/config/ca-key.pem"), 0o600),
        (a.state_dir.join("egress/config/policy.json"), 0o600),
    ] {
        match mode_of(&path) {
            Some(m) if m == mode => {}
            Some(m) => problems.push(format!("{} has mode {m:o}, not {mode:o}", path.display())),
            None => problems.push(format!("{} is missing", path.display())),
        }
    }
    // Tear A down: its compose log is archived, and must be clean too.
    sh::run_with(
        run.bottle_cmd(&["down", &a.slug]),
        Duration::from_secs(120),
        &run.interrupted,
    )?
    .ok()?;
    let log = run
        .state_root
        .join("logs")
        .join(format!("{}.compose.log", a.slug));
    match std::fs::read_to_string(&log) {
        Ok(text) if text.trim().is_empty() => problems.push(format!("{} is empty", log.display())),
        Ok(_) => scan(&log, &mut problems),
        Err(e) => problems.push(format!("{}: {e}", log.display())),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

pub(super) fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files
}

// 9
fn down_and_gc(ctx: &mut Ctx) -> Result<(), String> {
    let b = ctx.b()?;
    let run = ctx.run;
    sh::run_with(
        run.bottle_cmd(&["down", &b.slug]),
        Duration::from_secs(120),
        &run.interrupted,
    )?
    .ok()?;
    let mut left = run.leftovers(&b.slug)?;
    if let Some(Ok(a)) = &ctx.a {
        left.extend(run.leftovers(&a.slug)?);
    }
    if !left.is_empty() {
        return Err(format!("`bottle down` left: {}", left.join(", ")));
    }
    if !run
        .state_root
        .join("logs")
        .join(format!("{}.compose.log", b.slug))
        .is_file()
    {
        return Err("`bottle down` archived no compose log".into());
    }
    sh::ok(
        cmd("docker", &["network", "inspect", &run.net().network]),
        &run.interrupted,
    )
    .map_err(|e| format!("`bottle down` removed the external egress network: {e}"))?;
    killed_launcher(run)
}

/// A launcher SIGKILLed (with its docker children) mid-start; `bottle gc` cleans up.
fn killed_launcher(run: &Run) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let known = super::cleanup::state_dirs(&run.state_root);
    let mut start = run.bottle_cmd(&run.start_args());
    start
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = start
        .spawn()
        .map_err(|e| format!("cannot start `bottle start`: {e}"))?;
    let pid = child.id();
    let slug = sh::poll(
        Duration::from_secs(60),
        Duration::from_millis(50),
        &run.interrupted,
        || {
            super::cleanup::state_dirs(&run.state_root)
                .into_iter()
                .find(|s| !known.contains(s))
        },
    );
    super::cleanup::record_slugs(run);
    // Wait until its first container exists: compose up is under way.
    let mid = slug.as_ref().and_then(|slug| {
        sh::poll(
            Duration::from_secs(120),
            Duration::from_millis(100),
            &run.interrupted,
            || {
                run.leftovers(slug)
                    .ok()
                    .filter(|l| l.iter().any(|r| r.starts_with("container")))
            },
        )
    });
    let _ = sh::run(
        cmd("kill", &["-KILL", "--", &format!("-{pid}")]),
        &run.interrupted,
    );
    let _ = child.wait();
    let slug = slug.ok_or("the killed launcher never created its state dir")?;
    if mid.is_none() {
        return Err(format!("{slug}: no container appeared within 120s"));
    }
    std::thread::sleep(Duration::from_secs(2));
    // `bottle gc` is engine-wide: refuse to run it if it would touch bottles that
    // are not this run's (another state root's, e.g. a developer's).
    let dry = sh::run(run.bottle_cmd(&["gc", "--dry-run"]), &run.interrupted)?.ok()?;
    let would: Vec<String> = dry
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("would remove "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    if !would.contains(&slug) {
        return Err(format!(
            "`bottle gc --dry-run` does not list {slug}:\n{}",
            dry.explain()
        ));
    }
    let ours = super::cleanup::state_dirs(&run.state_root);
    let foreign: Vec<&String> = would
        .iter()
        .filter(|s| !ours.contains(*s) && **s != slug)
        .collect();
    if !foreign.is_empty() {
        return Err(format!(
            "not run: `bottle gc` would also remove bottles of other state roots on this engine \
             ({}); see the report on gc scoping",
            foreign
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    sh::run_with(
        run.bottle_cmd(&["gc"]),
        Duration::from_secs(120),
        &run.interrupted,
    )?
    .ok()?;
    let left = run.leftovers(&slug)?;
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "after `bottle gc`, {slug} left: {}",
            left.join(", ")
        ))
    }
}

// 12 (issue 8): the agent asks for a new host over MCP, the human approves with the
// CLI, and the agent's next request to that host passes.
fn supervise_approval(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    let before = curl(run, &a, &["https://asked.fake.test/asked-before"])?;
    expect_status(&before, 403, "asked.fake.test before the approval")?;
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"request_egress","arguments":{"host":"asked.fake.test","port":443,"reason":"e2e needs it","timeout_secs":120}}}"#;
    run.agent_sh(
        &a,
        &format!(
            "curl -sS -m 130 http://supervise:8765/mcp -H 'content-type: application/json' \
             -H 'accept: application/json, text/event-stream' -d '{call}' > /tmp/approval 2>&1 &"
        ),
    )?
    .ok()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let id = loop {
        let listed = sh::run(
            run.bottle_cmd(&["requests", &a.slug, "--json"]),
            &run.interrupted,
        )?
        .ok()?;
        let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap_or_default();
        if let Some(id) = listed[0]["request"]["id"].as_str() {
            break id.to_owned();
        }
        if std::time::Instant::now() > deadline {
            return Err("the agent's request never reached `bottle requests`".into());
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    sh::run(
        run.bottle_cmd(&["approve", &id, "--note", "approved by e2e"]),
        &run.interrupted,
    )?
    .ok()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = run.agent_sh(&a, "cat /tmp/approval")?;
        if answer.stdout.contains("approved by e2e") && answer.stdout.contains("approved") {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the agent's call did not return approved: {}",
                answer.explain()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // The tool returned only after the policy was live: no retry needed.
    let after = curl(run, &a, &["https://asked.fake.test/asked-after"])?;
    expect_status(&after, 200, "asked.fake.test after the approval")?;
    if !seen(run, "/asked-after")
        .iter()
        .any(|r| header(r, "host").is_some_and(|h| h.starts_with("asked.fake.test")))
    {
        return Err("the echo server did not get the approved request".into());
    }
    Ok(())
}
