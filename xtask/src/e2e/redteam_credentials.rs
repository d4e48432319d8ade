//! Issue 12, E1: the real credential never comes back to the agent. The fake
//! internet's `/reflect` endpoints hide nothing (every request header verbatim in
//! the JSON body, the `authorization` value again in the response header
//! `x-reflected-authorization`; `/reflect-gzip` gzip-compressed): through the route
//! on api.fake.test the upstream gets the real token, and the agent must read its
//! placeholder in its place, in headers and body, compressed or not.

use base64::Engine as _;

use super::fake_internet::header;
use super::scenarios::{Ctx, audit, curl};
use super::sh;

/// The agent curls the reflecting endpoints of the route's host: the run's real
/// token appears nowhere in what it reads (headers with `-i`, body), in any of
/// the spellings checked, and the placeholder stands where it was reflected.
pub fn scrubbed(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    let token = run.token.as_str();
    let placeholder = run
        .agent_sh(&a, "printf %s \"$E2E_ECHO_TOKEN\"")?
        .ok()?
        .stdout;
    if placeholder.is_empty() || placeholder == token {
        return Err("the agent does not hold a placeholder in E2E_ECHO_TOKEN".into());
    }
    let spellings = [
        ("raw", token.to_owned()),
        (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(token),
        ),
        (
            "hex",
            token
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        ),
    ];
    let expected = format!("Bearer {placeholder}");
    let mut failures = Vec::new();
    for (what, args, json_body) in [
        (
            "GET /reflect",
            vec!["-i", "https://api.fake.test/reflect"],
            true,
        ),
        (
            "GET /reflect-gzip",
            vec!["-i", "https://api.fake.test/reflect-gzip"],
            true,
        ),
        (
            "GET /reflect-gzip (curl --compressed)",
            vec!["-i", "--compressed", "https://api.fake.test/reflect-gzip"],
            true,
        ),
        (
            "HEAD /reflect",
            vec!["-I", "https://api.fake.test/reflect"],
            false,
        ),
    ] {
        let reply = curl(run, &a, &args)?;
        // Everything the agent read: status line, headers, body, curl's own words.
        let read = format!("{}\n{}", reply.body, reply.describe());
        // What a failure may quote: never the token.
        let mut output = reply.describe();
        for (_, value) in &spellings {
            output = output.replace(value.as_str(), "[the real token]");
        }
        for (spelling, value) in &spellings {
            if read.contains(value.as_str()) {
                failures.push(format!(
                    "{what}: the agent read the real token ({spelling}) in the response"
                ));
            }
        }
        if reply.status != 200 {
            failures.push(format!("{what}: expected HTTP 200; {output}"));
            continue;
        }
        let reflected = reply.body.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("x-reflected-authorization")
                .then(|| value.trim().to_owned())
        });
        if reflected.as_deref() != Some(expected.as_str()) {
            failures.push(format!(
                "{what}: x-reflected-authorization should be the placeholder; it is {}",
                match reflected {
                    None => "absent".to_owned(),
                    Some(v) if v.contains("bottle-placeholder") => format!("`{v}`"),
                    Some(_) => "something else (not shown)".to_owned(),
                }
            ));
        }
        if json_body {
            // The body reflects the authorization header: the placeholder, in
            // plain text (a gzip body was decoded by the proxy to be scanned).
            // `curl -i` through a proxy prints the CONNECT answer's head too: the body
            // follows the last head.
            let body = reply
                .body
                .rsplit_once("\r\n\r\n")
                .map_or(reply.body.as_str(), |(_, b)| b);
            let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
            let authorization = parsed
                .as_ref()
                .and_then(|record| header(record, "authorization").map(str::to_owned));
            if authorization.as_deref() != Some(expected.as_str()) {
                failures.push(format!(
                    "{what}: the reflected body should show the placeholder in authorization; \
                     {}",
                    if parsed.is_none() {
                        format!("the body is not JSON: {output}")
                    } else {
                        format!(
                            "it shows {}",
                            if authorization.is_none() {
                                "none"
                            } else {
                                "something else"
                            }
                        )
                    }
                ));
            }
            if reply
                .body
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("content-encoding: gzip"))
            {
                failures.push(format!(
                    "{what}: the response still claims Content-Encoding: gzip"
                ));
            }
        }
    }
    // The probe is only meaningful if the upstream really got the token.
    let bearer = format!("Bearer {token}");
    if !run
        .net()
        .echo_requests()
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/reflect"))
        })
        .any(|r| header(r, "authorization") == Some(bearer.as_str()))
    {
        failures
            .push("the echo server never got the real token on /reflect (probe broken?)".into());
    }
    // The audit names the scrub, never the value.
    let scrub_line = sh::poll(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(200),
        &run.interrupted,
        || {
            audit(&a).into_iter().find(|r| {
                r["rule"]
                    .as_str()
                    .is_some_and(|rule| rule.starts_with("credential-scrubbed:"))
                    && r["reason"]
                        .as_str()
                        .is_some_and(|why| why.starts_with("credential scrubbed from response"))
            })
        },
    );
    if scrub_line.is_none() {
        failures.push("the egress audit has no `credential-scrubbed` line".into());
    }
    if audit(&a).iter().any(|r| r.to_string().contains(token)) {
        failures.push("the egress audit carries the real token".into());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
