//! Issue 16: `bottle dashboard` in a real browser. Headless Chromium (Debian's
//! `chromium` and `chromium-driver`), driven over WebDriver with fantoccini, opens the
//! page of the real `bottle dashboard` against a bottle of its own: a request the
//! proxy denies shows up live in the traffic view, an agent's supervise request shows
//! up in the inbox, a click on "Approve once" returns the agent's call approved, and
//! the host then passes; "Approve always" shows the manifest diff and writes it on
//! confirmation. Screenshots of the views go to
//! `target/bot-bottle/dashboard/`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use super::Run;
use super::bottle::Bottle;
use super::scenarios::{Ctx, curl, expect_status};
use super::sh;

/// How long the page gets to show what happened.
const SHOWN_WITHIN: Duration = Duration::from_secs(30);

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free loopback port: {e}"))
}

fn chromedriver() -> Result<PathBuf, String> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join("chromedriver"))
                    .find(|p| p.is_file())
            })
        })
        .ok_or_else(|| {
            "chromedriver is not installed: .ci/setup installs Debian's chromium and chromium-driver"
                .to_owned()
        })
}

/// Where the screenshots go.
fn screenshot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::workspace_root().join("target"))
        .join("bot-bottle/dashboard")
}

/// `bottle dashboard --port 0` for this run; its URL (with the token).
fn start_dashboard(run: &Run) -> Result<(Killed, String), String> {
    let mut command = run.bottle_cmd(&["dashboard", "--port", "0"]);
    command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = Killed(
        command
            .spawn()
            .map_err(|e| format!("starting `bottle dashboard`: {e}"))?,
    );
    let stdout = child.0.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading `bottle dashboard`'s URL: {e}"))?;
    let url = line
        .trim()
        .strip_prefix("bottle dashboard: ")
        .filter(|u| u.starts_with("http://127.0.0.1:") && u.contains("/?token="))
        .ok_or_else(|| format!("`bottle dashboard` printed no URL: {line:?}"))?
        .to_owned();
    Ok((child, url))
}

/// chromedriver on a loopback port, answering.
fn start_chromedriver() -> Result<(Killed, u16), String> {
    let port = free_port()?;
    let child = Killed(
        Command::new(chromedriver()?)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting chromedriver: {e}"))?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("chromedriver did not listen within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((child, port))
}

/// The scenario: a bottle of its own, always taken down.
pub fn in_browser(ctx: &mut Ctx) -> Result<(), String> {
    let run = ctx.run;
    // Its own manifest: "approve always" writes to it.
    let manifest = run.dir.join("dashboard.yaml");
    std::fs::copy(&run.manifest, &manifest)
        .map_err(|e| format!("copying the manifest to {}: {e}", manifest.display()))?;
    let bottle = run.start_bottle_from(&manifest)?;
    let result = check(run, &bottle, &manifest);
    let down = sh::run_with(
        run.bottle_cmd(&["down", &bottle.slug]),
        Duration::from_secs(120),
        &run.interrupted,
    )
    .and_then(sh::Out::ok)
    .map(drop);
    result.and(down)
}

fn check(run: &Run, bottle: &Bottle, manifest: &Path) -> Result<(), String> {
    let (_dashboard, url) = start_dashboard(run)?;
    let (_driver, driver_port) = start_chromedriver()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("starting a runtime: {e}"))?;
    runtime.block_on(async {
        let mut capabilities = fantoccini::wd::Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,900"]
            }),
        );
        let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
            .map_err(|e| format!("starting headless Chromium through chromedriver: {e}"))?;
        let result = drive(run, bottle, &browser, &url, manifest).await;
        let _ = browser.close().await;
        result
    })
}

async fn shown(
    browser: &Client,
    css: &str,
    what: &str,
) -> Result<fantoccini::elements::Element, String> {
    browser
        .wait()
        .at_most(SHOWN_WITHIN)
        .for_element(Locator::Css(css))
        .await
        .map_err(|e| format!("the page never showed {what} ({css}): {e}"))
}

async fn screenshot(browser: &Client, name: &str) -> Result<(), String> {
    let png = browser
        .screenshot()
        .await
        .map_err(|e| format!("taking the {name} screenshot: {e}"))?;
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).map_err(|e| format!("writing {}: {e}", path.display()))
}

async fn tab(browser: &Client, view: &str) -> Result<(), String> {
    browser
        .find(Locator::Id(&format!("tab-{view}")))
        .await
        .map_err(|e| format!("no {view} tab: {e}"))?
        .click()
        .await
        .map_err(|e| format!("clicking the {view} tab: {e}"))?;
    shown(
        browser,
        &format!("#view-{view}:not([hidden])"),
        &format!("the {view} view"),
    )
    .await?;
    Ok(())
}

/// Runs `script` in the agent off the async thread.
async fn agent_sh(run: &Run, bottle: &Bottle, script: &str) -> Result<sh::Out, String> {
    tokio::task::block_in_place(|| run.agent_sh(bottle, script))
}

/// The agent's `request_egress` call for GET on `host`, in the background, its answer
/// into `out`.
fn ask(host: &str, reason: &str, out: &str) -> String {
    let call = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"request_egress","arguments":{{"host":"{host}","port":443,"methods":["GET"],"reason":"{reason}","timeout_secs":120}}}}}}"#
    );
    format!(
        "curl -sS -m 130 http://supervise:8765/mcp -H 'content-type: application/json' \
         -H 'accept: application/json, text/event-stream' -d '{call}' > {out} 2>&1 &"
    )
}

/// Waits until the agent's answer in `out` says approved.
async fn approved(run: &Run, bottle: &Bottle, out: &str) -> Result<(), String> {
    let deadline = Instant::now() + SHOWN_WITHIN;
    loop {
        let answer = agent_sh(run, bottle, &format!("cat {out}")).await?;
        if answer.stdout.contains("approved") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the agent's call did not return approved after the click: {}",
                answer.explain()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn click(browser: &Client, css: &str, what: &str) -> Result<(), String> {
    shown(browser, css, what)
        .await?
        .click()
        .await
        .map_err(|e| format!("clicking {what}: {e}"))
}

async fn drive(
    run: &Run,
    bottle: &Bottle,
    browser: &Client,
    url: &str,
    manifest: &Path,
) -> Result<(), String> {
    browser
        .goto(url)
        .await
        .map_err(|e| format!("opening the dashboard: {e}"))?;
    shown(browser, "#live.on", "that its event stream is live").await?;

    // Bottles: this bottle, running.
    shown(
        browser,
        &format!("#bottles tr[data-slug=\"{}\"] .state.running", bottle.slug),
        "the bottle running",
    )
    .await?;
    screenshot(browser, "bottles").await?;

    // Live traffic: a request the proxy denies appears without a reload.
    tab(browser, "traffic").await?;
    let denied = tokio::task::block_in_place(|| {
        curl(run, bottle, &["https://other.fake.test/dashboard-denied"])
    })?;
    expect_status(&denied, 403, "other.fake.test (not allowed)")?;
    shown(
        browser,
        "#traffic tr[data-verdict=\"denied\"][data-host=\"other.fake.test\"]",
        "the denied request in the traffic view",
    )
    .await?;
    screenshot(browser, "traffic").await?;

    // Inbox: the agent asks for a host over supervise; a click approves it.
    agent_sh(
        run,
        bottle,
        &ask(
            "asked.fake.test",
            "the dashboard e2e <b>needs</b> it",
            "/tmp/dashboard-once",
        ),
    )
    .await?
    .ok()?;
    tab(browser, "inbox").await?;
    let approve = shown(
        browser,
        "#inbox article.request button.approve-once",
        "the agent's request in the inbox",
    )
    .await?;
    let reason = browser
        .find(Locator::Css("#inbox article.request .reason"))
        .await
        .map_err(|e| format!("no reason shown: {e}"))?
        .text()
        .await
        .map_err(|e| format!("reading the reason: {e}"))?;
    if reason != "the dashboard e2e <b>needs</b> it" {
        return Err(format!(
            "the agent's reason is not shown as text: {reason:?}"
        ));
    }
    screenshot(browser, "inbox").await?;
    approve
        .click()
        .await
        .map_err(|e| format!("clicking Approve once: {e}"))?;
    approved(run, bottle, "/tmp/dashboard-once").await?;
    shown(
        browser,
        "#history .outcome.approved",
        "the decision in the history",
    )
    .await?;
    let after = tokio::task::block_in_place(|| {
        curl(run, bottle, &["https://asked.fake.test/dashboard-approved"])
    })?;
    expect_status(
        &after,
        200,
        "asked.fake.test after the approval in the page",
    )?;

    // Approve always: the page shows the manifest diff; confirming approves the request
    // and writes the host into the bottle's manifest.
    agent_sh(
        run,
        bottle,
        &ask("later.fake.test", "for good", "/tmp/dashboard-always"),
    )
    .await?
    .ok()?;
    click(
        browser,
        "#inbox article.request button.approve-always",
        "Approve always",
    )
    .await?;
    let diff = shown(
        browser,
        "#confirm:not([hidden]) #confirm-diff",
        "the manifest diff",
    )
    .await?
    .text()
    .await
    .map_err(|e| format!("reading the diff: {e}"))?;
    let added =
        "+        - host: \"later.fake.test\"\n+          ports: [443]\n+          methods: [GET]";
    if !diff.contains(added) {
        return Err(format!(
            "the proposed diff does not add later.fake.test:\n{diff}"
        ));
    }
    screenshot(browser, "always").await?;
    click(browser, "#confirm-ok", "Write and approve").await?;
    approved(run, bottle, "/tmp/dashboard-always").await?;
    let written = std::fs::read_to_string(manifest)
        .map_err(|e| format!("reading {}: {e}", manifest.display()))?;
    if !written.contains("- host: \"later.fake.test\"") {
        return Err(format!("the manifest was not changed:\n{written}"));
    }
    shown(
        browser,
        "#history .outcome.approved_always",
        "approved always in the history",
    )
    .await?;
    tab(browser, "bottles").await?;
    shown(
        browser,
        &format!("#bottles tr[data-slug=\"{}\"] .chip.bad", bottle.slug),
        "that the bottle's manifest changed since its start",
    )
    .await?;
    let later = tokio::task::block_in_place(|| {
        curl(run, bottle, &["https://later.fake.test/dashboard-always"])
    })?;
    expect_status(&later, 200, "later.fake.test after approve always")
}
