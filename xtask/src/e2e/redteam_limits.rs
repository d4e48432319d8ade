//! Issue 12's findings about limits: the supervise queue has a cap and a rate limit
//! (W5), and the egress audit log stays bounded under a flood of denials (W4).

use std::path::Path;
use std::time::{Duration, Instant};

use super::Run;
use super::bottle::Bottle;
use super::scenarios::{Ctx, curl, expect_status, first_chars, random_chars};
use super::sh;

/// Most requests pending per bottle (`supervise::config::DEFAULT_MAX_PENDING`).
const MAX_PENDING: usize = 16;
/// New requests per minute (`supervise::config::DEFAULT_MAX_REQUESTS_PER_MINUTE`).
const MAX_PER_MINUTE: usize = 10;
/// Calls the agent fires.
const ASKS: usize = 40;

/// Per-log cap on disk: 64 MiB × 4 files (`audit_lines::Limits::default()`).
const LOG_CAP_BYTES: u64 = 4 * 64 * 1024 * 1024;
/// Longest audit line (`audit_lines::DEFAULT_MAX_RECORD_BYTES`).
const MAX_RECORD_BYTES: usize = 16 * 1024;
/// Identical denials collapse for 5 s after the first 5
/// (`egress::audit::DEFAULT_REPEAT_WINDOW`, `DEFAULT_REPEAT_BURST`).
const REPEAT_WINDOW_SECS: u64 = 5;
const REPEAT_BURST: u64 = 5;
/// The flood: parallel loops in the agent, for this long, with paths this long.
const FLOOD_LOOPS: usize = 8;
const FLOOD_SECS: u64 = 5;
const FLOOD_PATH_BYTES: usize = 60_000;

/// Runs `check` against a bottle of its own (its queue and rate window are not
/// shared with the other scenarios) and always takes it down.
fn with_own_bottle(
    run: &Run,
    check: impl FnOnce(&Bottle) -> Result<(), String>,
) -> Result<(), String> {
    let bottle = run.start_bottle()?;
    let result = check(&bottle);
    let down = sh::run_with(
        run.bottle_cmd(&["down", &bottle.slug]),
        Duration::from_secs(120),
        &run.interrupted,
    )
    .and_then(sh::Out::ok)
    .map(drop);
    result.and(down)
}

/// A shell command in the agent: one MCP `request_egress` call, its reply on one line.
fn ask_script(id: &str, host: &str) -> String {
    format!(
        "curl -sS -m 20 http://supervise:8765/mcp -H 'content-type: application/json' \
         -H 'accept: application/json, text/event-stream' \
         -d \"{{\\\"jsonrpc\\\":\\\"2.0\\\",\\\"id\\\":{id},\\\"method\\\":\\\"tools/call\\\",\
         \\\"params\\\":{{\\\"name\\\":\\\"request_egress\\\",\\\"arguments\\\":{{\
         \\\"host\\\":\\\"{host}\\\",\\\"reason\\\":\\\"e2e flood\\\",\\\"timeout_secs\\\":0}}}}}}\"; echo"
    )
}

/// W5: the agent fires 40 `request_egress` calls with `timeout_secs: 0`; the calls
/// over the rate limit or the cap get a tool error saying so, `bottle requests`
/// lists at most the cap, and asking again for a pending host still joins it.
pub fn supervise_cap(ctx: &mut Ctx) -> Result<(), String> {
    let run = ctx.run;
    with_own_bottle(run, |bottle| {
        let script = format!(
            "i=0; while [ $i -lt {ASKS} ]; do {}; i=$((i+1)); done",
            ask_script("$i", "cap$i.fake.test")
        );
        let out = run.agent_sh(bottle, &script)?.ok()?;
        let replies: Vec<serde_json::Value> = out
            .stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .map_err(|e| format!("not a JSON-RPC reply ({e}): {}", first_chars(l, 300)))
            })
            .collect::<Result<_, _>>()?;
        if replies.len() != ASKS {
            return Err(format!(
                "{} replies to {ASKS} calls:\n{}",
                replies.len(),
                out.explain()
            ));
        }
        let mut accepted = 0;
        let mut refused = 0;
        for reply in &replies {
            let result = &reply["result"];
            let text = result["content"][0]["text"].as_str().unwrap_or_default();
            if result["isError"] == false && result["structuredContent"]["outcome"] == "pending" {
                accepted += 1;
            } else if result["isError"] == true
                && (text.contains("slow down:") || text.contains("too many pending requests"))
            {
                refused += 1;
            } else {
                return Err(format!(
                    "neither queued nor refused by a limit: {}",
                    first_chars(&reply.to_string(), 400)
                ));
            }
        }
        if accepted == 0 || accepted > MAX_PENDING.min(MAX_PER_MINUTE) || accepted + refused != ASKS
        {
            return Err(format!(
                "{accepted} of {ASKS} calls queued, {refused} refused; expected at most \
                 {MAX_PER_MINUTE} queued (10 a minute, 16 pending) and the rest refused"
            ));
        }
        let last = &replies[ASKS - 1]["result"];
        if last["isError"] != true {
            return Err(format!("the last of {ASKS} calls was not refused: {last}"));
        }
        let listed = pending(run, bottle)?;
        if listed.len() != accepted || listed.len() > MAX_PENDING {
            return Err(format!(
                "`bottle requests {} --json` lists {} requests; {accepted} were queued (cap {MAX_PENDING})",
                bottle.slug,
                listed.len()
            ));
        }
        // A real ask is not buried: asking again for a pending host joins it.
        let joined = run
            .agent_sh(bottle, &ask_script("1000", "cap0.fake.test"))?
            .ok()?;
        let joined: serde_json::Value = serde_json::from_str(joined.stdout.trim())
            .map_err(|e| format!("the joining call's reply ({e}): {}", joined.explain()))?;
        let first_id = &replies[0]["result"]["structuredContent"]["request_id"];
        if joined["result"]["isError"] != false
            || &joined["result"]["structuredContent"]["request_id"] != first_id
        {
            return Err(format!(
                "asking again for cap0.fake.test did not join request {first_id}: {joined}"
            ));
        }
        if pending(run, bottle)?.len() != accepted {
            return Err("joining a pending request added one".into());
        }
        Ok(())
    })
}

/// `bottle requests SLUG --json`.
fn pending(run: &Run, bottle: &Bottle) -> Result<Vec<serde_json::Value>, String> {
    let out = sh::run(
        run.bottle_cmd(&["requests", &bottle.slug, "--json"]),
        &run.interrupted,
    )?
    .ok()?;
    match serde_json::from_str(&out.stdout) {
        Ok(serde_json::Value::Array(items)) => Ok(items),
        _ => Err(format!(
            "`bottle requests --json` did not print an array:\n{}",
            out.explain()
        )),
    }
}

/// The egress audit files of `bottle`, oldest first (`egress.jsonl.N` … `egress.jsonl`).
fn egress_logs(bottle: &Bottle) -> Vec<std::path::PathBuf> {
    let dir = bottle.state_dir.join("audit");
    let mut rotated: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let generation = match name.strip_prefix("egress.jsonl") {
                        Some("") => 0,
                        Some(suffix) => suffix.strip_prefix('.')?.parse().ok()?,
                        None => return None,
                    };
                    Some((generation, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    rotated.sort_by_key(|(generation, _)| std::cmp::Reverse(*generation));
    rotated.into_iter().map(|(_, path)| path).collect()
}

fn size_of(paths: &[std::path::PathBuf]) -> u64 {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// What the audit holds about the flood tagged `tag`: lines in full, and the
/// summary lines after the first of them (which stand for `repeated` denials each).
struct FloodAudit {
    full: u64,
    summaries: u64,
    accounted: u64,
    longest_line: usize,
    total_bytes: u64,
}

fn flood_audit(bottle: &Bottle, tag: &str) -> FloodAudit {
    let logs = egress_logs(bottle);
    let mut audit = FloodAudit {
        full: 0,
        summaries: 0,
        accounted: 0,
        longest_line: 0,
        total_bytes: size_of(&logs),
    };
    let mut seen_flood = false;
    for path in &logs {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            audit.longest_line = audit.longest_line.max(line.len() + 1);
            let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if record["host"] != "other.fake.test" || record["action"] != "deny" {
                continue;
            }
            let path = record["path"].as_str().unwrap_or_default();
            if path.contains(tag) {
                seen_flood = true;
                audit.full += 1;
                audit.accounted += 1;
            } else if seen_flood
                && record["port"] == 80
                && let Some(repeated) = record["repeated"].as_u64()
            {
                audit.summaries += 1;
                audit.accounted += repeated;
            }
        }
    }
    audit
}

/// W4: eight loops in the agent send denied requests with 60 KB paths to
/// other.fake.test for 5 s. The egress audit stays within its cap and holds a
/// handful of bounded lines that account for every denial ("N more like this"),
/// and the proxy still answers an allowed request.
pub fn audit_bounded(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    let tag = format!("flood{}", random_chars(10, b"abcdefghijklmnopqrstuvwxyz"));
    let loops: Vec<String> = (0..FLOOD_LOOPS)
        .map(|t| {
            format!(
                "( n=0; ok=0; while [ $(date +%s) -lt $end ]; do \
                   c=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 \
                       \"http://other.fake.test/{tag}-{t}-$n-$p\"); \
                   [ \"$c\" = 403 ] && ok=$((ok+1)); n=$((n+1)); \
                 done; echo \"$ok $n\" > /tmp/{tag}.{t} ) &"
            )
        })
        .collect();
    let script = format!(
        "p=$(head -c {FLOOD_PATH_BYTES} /dev/zero | tr '\\0' a); \
         end=$(( $(date +%s) + {FLOOD_SECS} )); {} wait; cat /tmp/{tag}.*; rm -f /tmp/{tag}.*",
        loops.join(" ")
    );
    let started = Instant::now();
    let out = run.agent_sh(&a, &script)?.ok()?;
    let flood_secs = started.elapsed().as_secs();
    let (mut refused, mut sent) = (0u64, 0u64);
    for line in out.stdout.lines() {
        let nums: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if let [ok, n] = nums.as_slice() {
            refused += ok;
            sent += n;
        }
    }
    if sent == 0 || refused != sent {
        return Err(format!(
            "the flood: {refused} of {sent} requests refused with 403:\n{}",
            out.explain()
        ));
    }
    // The proxy still serves.
    let after = curl(run, &a, &["https://api.fake.test/after-the-flood"])?;
    expect_status(&after, 200, "an allowed request after the flood")?;
    // Every denial is accounted for once the repeat windows close.
    let deadline = Instant::now() + Duration::from_secs(4 * REPEAT_WINDOW_SECS);
    let audit = loop {
        let audit = flood_audit(&a, &tag);
        if audit.accounted >= refused || Instant::now() > deadline {
            break audit;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut failures = Vec::new();
    if audit.accounted != refused {
        failures.push(format!(
            "the audit accounts for {} of {refused} denials ({} lines in full, {} summaries)",
            audit.accounted, audit.full, audit.summaries
        ));
    }
    let windows = flood_secs / REPEAT_WINDOW_SECS + 2;
    let most_lines = windows * (REPEAT_BURST + 1);
    if audit.full + audit.summaries > most_lines {
        failures.push(format!(
            "{} lines for {refused} identical denials in {flood_secs} s (at most {most_lines}: \
             they should collapse into \"N more like this\")",
            audit.full + audit.summaries
        ));
    }
    if audit.longest_line > MAX_RECORD_BYTES {
        failures.push(format!(
            "an audit line of {} bytes (cap {MAX_RECORD_BYTES}): long paths are not cut",
            audit.longest_line
        ));
    }
    if audit.total_bytes > LOG_CAP_BYTES + MAX_RECORD_BYTES as u64 {
        failures.push(format!(
            "the egress audit holds {} bytes on disk (cap {LOG_CAP_BYTES})",
            audit.total_bytes
        ));
    }
    let dir_bytes = dir_size(&a.state_dir.join("audit"));
    // Three logs (egress, git gate, supervise), each capped the same way.
    if dir_bytes > 3 * (LOG_CAP_BYTES + MAX_RECORD_BYTES as u64) {
        failures.push(format!("the audit dir holds {dir_bytes} bytes on disk"));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
