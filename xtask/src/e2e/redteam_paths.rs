//! Issue 12, W1 and W2: path spellings that servers read in more than one way.
//!
//! From the agent in bottle A, `curl --path-as-is` sends each spelling to
//! api.fake.test (the host of the e2e credential route) exactly as written. Each
//! must be refused by the proxy with a 400 that names a `path-refused:` rule and
//! never reach the echo server, or reach it with the normalised path (dot
//! segments resolved, unreserved escapes decoded): the echo log shows the path
//! the upstream saw. The route's path-prefix logic itself (no credential outside
//! `/v1/`) is pinned by `crates/egress/tests/it/paths.rs`, which can configure
//! a prefix; this checks the same normaliser in the real sidecar.

use super::fake_internet::header;
use super::scenarios::{Ctx, curl, first_chars, random_chars};

/// What the proxy must do with one spelling.
enum Expect {
    /// Forwarded with this path (after the case's marker directory).
    Forwarded(&'static str),
    /// Refused with a 400, never forwarded.
    Refused,
}

/// The spellings, each sent after a per-case marker directory (`/w1-<run>-<n>`).
const CASES: &[(&str, Expect)] = &[
    // W1 as reported.
    ("/v1/../admin", Expect::Forwarded("/admin")),
    ("/v1/%2e%2e/admin", Expect::Refused),
    ("/v1/..%2fadmin", Expect::Refused),
    // W2 as reported: servlet servers read `..;` as `..`.
    ("/public/..;/private", Expect::Refused),
    // More spellings of the same.
    ("/v1/%2E%2E/admin", Expect::Refused),
    ("/v1/.%2e/admin", Expect::Refused),
    ("/v1/%2e%2e%2fadmin", Expect::Refused),
    ("/v1/..%5cadmin", Expect::Refused),
    ("/v1/..%3b/admin", Expect::Refused),
    ("/v1/%2e%2e;/admin", Expect::Refused),
    ("/v1//../admin", Expect::Refused),
    ("/v1/;x/../admin", Expect::Refused),
    ("/v1/a%2Fb/../admin", Expect::Refused),
    ("/v1/..%20/admin", Expect::Refused),
    ("/v1/.../admin", Expect::Refused),
    ("/v1/%C0%AE%C0%AE/admin", Expect::Refused),
    ("/v1/%EF%BC%8E%EF%BC%8E/admin", Expect::Refused),
    ("/v1/%0a/admin", Expect::Refused),
    ("/v1/%zz/admin", Expect::Refused),
    // Normalised, not refused.
    ("/v1/./x/../y", Expect::Forwarded("/v1/y")),
    ("/v1/%7Eme/%41%62c", Expect::Forwarded("/v1/~me/Abc")),
    ("/v1/@scope%2fname", Expect::Forwarded("/v1/@scope%2Fname")),
    // Double encoding is literal text, not a dot segment.
    (
        "/v1/%252e%252e/admin",
        Expect::Forwarded("/v1/%252e%252e/admin"),
    ),
];

/// W1/W2: `curl --path-as-is` spellings are refused (400) or forwarded normalised.
pub fn path_bypass(ctx: &mut Ctx) -> Result<(), String> {
    let a = ctx.a()?;
    let run = ctx.run;
    let run_marker = random_chars(10, b"abcdefghijklmnopqrstuvwxyz0123456789");
    let expected_auth = format!("Bearer {}", run.token);
    let mut failures = Vec::new();
    let mut forwarded = Vec::new();
    for (n, (spelling, expect)) in CASES.iter().enumerate() {
        let marker = format!("w1-{run_marker}-{n}");
        let url = format!("https://api.fake.test/{marker}{spelling}?q=../%2e%2e");
        let reply = curl(run, &a, &["--path-as-is", &url])?;
        match expect {
            Expect::Refused => {
                if reply.status != 400 || !reply.body.contains("rule: path-refused:") {
                    failures.push(format!(
                        "{spelling}: expected a 400 naming a path-refused rule; {}",
                        reply.describe()
                    ));
                }
            }
            Expect::Forwarded(path) => {
                if reply.status != 200 {
                    failures.push(format!(
                        "{spelling}: expected it forwarded; {}",
                        reply.describe()
                    ));
                }
                forwarded.push((
                    spelling,
                    marker.clone(),
                    format!("/{marker}{path}?q=../%2e%2e"),
                ));
            }
        }
    }
    // What the upstream saw: refused spellings nothing, forwarded ones their
    // normal form (query as sent), with the route's credential (api.fake.test's
    // route has no path prefix).
    let records = run.net().echo_requests();
    let paths_with = |needle: &str| -> Vec<(String, Option<String>)> {
        records
            .iter()
            .filter_map(|r| {
                let path = r["path"].as_str()?;
                let marker_dir = format!("/{needle}/");
                (path.starts_with(&marker_dir) || path == format!("/{needle}")).then(|| {
                    (
                        path.to_owned(),
                        header(r, "authorization").map(str::to_owned),
                    )
                })
            })
            .collect()
    };
    for (n, (spelling, expect)) in CASES.iter().enumerate() {
        if let Expect::Refused = expect {
            let marker = format!("w1-{run_marker}-{n}");
            let seen = paths_with(&marker);
            if !seen.is_empty() {
                failures.push(format!(
                    "{spelling}: refused, yet the echo server saw {:?}",
                    seen.iter().map(|(p, _)| p).collect::<Vec<_>>()
                ));
            }
        }
    }
    for (spelling, marker, expected) in &forwarded {
        let seen = paths_with(marker);
        match seen.as_slice() {
            [(path, auth)] if path == expected => {
                if auth.as_deref() != Some(expected_auth.as_str()) {
                    failures.push(format!(
                        "{spelling}: forwarded without the route's credential (control)"
                    ));
                }
            }
            _ => failures.push(format!(
                "{spelling}: expected the echo server to see exactly {expected}, it saw {:?}",
                seen.iter()
                    .map(|(p, _)| first_chars(p, 120))
                    .collect::<Vec<_>>()
            )),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
