//! `bottle plan`: plans every agent, and never prints a secret.

use crate::fixtures::{SENTINELS, bottle, relative, valid_fixtures, workspace_root};

#[test]
fn plan_json_never_contains_a_secret() {
    let mut planned = 0;
    for path in valid_fixtures() {
        let source = std::fs::read_to_string(&path).unwrap();
        let manifest = plan::parse_manifest(&source).unwrap();
        for agent in manifest.agents.keys() {
            for json in [true, false] {
                let mut cmd = bottle();
                cmd.args(["plan", &agent.value, "-f", &relative(&path)]);
                if json {
                    cmd.arg("--json");
                }
                let output = cmd.output().unwrap();
                assert!(
                    output.status.success(),
                    "{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                let stdout = String::from_utf8(output.stdout).unwrap();
                for (name, secret) in SENTINELS {
                    assert!(
                        !stdout.contains(secret),
                        "{name} leaked by `plan {}`",
                        agent.value
                    );
                }
                assert!(
                    !stdout.contains("fixture-db-password"),
                    "env file value leaked"
                );
                if json {
                    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
                    assert_eq!(value["agent"]["name"], agent.value.as_str());
                }
                planned += 1;
            }
        }
    }
    assert!(planned >= 20, "only {planned} plans checked");
}

#[test]
fn credentials_become_placeholders_and_redacted_tokens() {
    let output = bottle()
        .args([
            "plan",
            "claude",
            "-f",
            "fixtures/valid/credential-routes.yaml",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let routes = plan["egress"]["routes"].as_array().unwrap();
    // Both tokens are set: the first route wins, the second is reported and dropped
    // (with its placeholder); the optional route without a host value is skipped.
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["token_env"], "ANTHROPIC_API_KEY");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`CLAUDE_CODE_OAUTH_TOKEN` is set but not used")
            && stderr.contains("unset ANTHROPIC_API_KEY to use"),
        "{stderr}"
    );
    assert!(plan["env"]["vars"].get("CLAUDE_CODE_OAUTH_TOKEN").is_none());
    for route in routes {
        assert_eq!(route["token"], "<redacted>");
        let placeholder = route["placeholder"].as_str().unwrap();
        assert!(placeholder.contains("bottle-placeholder"), "{placeholder}");
        let agent_env = route["agent_env"].as_str().unwrap();
        assert_eq!(plan["env"]["vars"][agent_env]["value"], placeholder);
    }
}

#[test]
fn env_file_entries_are_secrets() {
    let output = bottle()
        .args([
            "plan",
            "app",
            "-f",
            "fixtures/valid/env-file.yaml",
            "--json",
        ])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plan["env"]["vars"]["DATABASE_URL"]["kind"], "secret");
    assert_eq!(plan["env"]["vars"]["DATABASE_URL"]["value"], "<redacted>");
    assert_eq!(plan["env"]["vars"]["APP_ENV"]["kind"], "literal");
}

#[test]
fn unknown_agent_lists_the_defined_ones() {
    let output = bottle()
        .args(["plan", "nobody", "-f", "fixtures/valid/shared-bottle.yaml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("defined agents: implementer, reviewer, tester"),
        "{stderr}"
    );
}

#[test]
fn slugs_differ_between_runs() {
    let slug = || {
        let output = bottle()
            .args(["plan", "dev", "-f", "fixtures/valid/minimal.yaml", "--json"])
            .output()
            .unwrap();
        let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        plan["slug"].as_str().unwrap().to_owned()
    };
    let (a, b) = (slug(), slug());
    assert!(a.starts_with("dev-") && b.starts_with("dev-"));
    assert_ne!(a, b);
    drop(workspace_root());
}
