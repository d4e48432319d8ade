//! `bottle schema`: checked in, up to date, and accepting every valid fixture; and
//! `bottle completions`, generated from the same definitions.

use crate::fixtures::{bottle, valid_fixtures, workspace_root};

fn printed_schema() -> String {
    let output = bottle().arg("schema").output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn checked_in_schema_is_current() {
    let path = workspace_root().join("schema/bottle.schema.json");
    let printed = printed_schema();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &printed).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == printed,
        "schema/bottle.schema.json is stale: run `UPDATE_SCHEMA=1 cargo test -p cli schema` and commit it"
    );
}

#[test]
fn schema_accepts_every_valid_fixture_and_rejects_typos() {
    let schema: serde_json::Value = serde_json::from_str(&printed_schema()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for path in valid_fixtures() {
        let source = std::fs::read_to_string(&path).unwrap();
        let instance: serde_json::Value = serde_saphyr::from_str(&source).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    }
    let typo: serde_json::Value = serde_saphyr::from_str(
        "bottles:\n  dev:\n    image: {ref: x}\n    egress: {alow: []}\nagents: {}\n",
    )
    .unwrap();
    assert!(
        !validator.is_valid(&typo),
        "the schema must reject unknown keys"
    );
}

#[test]
fn completions_cover_every_command_in_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let output = bottle().args(["completions", shell]).output().unwrap();
        assert!(output.status.success(), "{shell}");
        let script = String::from_utf8(output.stdout).unwrap();
        for command in [
            "start",
            "images",
            "demo",
            "approve",
            "egress",
            "completions",
        ] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
    }
    // bash can load it.
    let output = bottle().args(["completions", "bash"]).output().unwrap();
    let checked = std::process::Command::new("bash")
        .args(["-n", "-c"])
        .arg(String::from_utf8(output.stdout).unwrap())
        .status()
        .unwrap();
    assert!(checked.success());
    let bad = bottle().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn the_manual_page_is_roff_with_every_command() {
    let output = bottle().arg("man").output().unwrap();
    assert!(output.status.success());
    let page = String::from_utf8(output.stdout).unwrap();
    assert!(page.contains(".TH bottle 1"), "{page}");
    for command in ["start", "demo", "doctor", "images"] {
        assert!(page.contains(command), "the page lacks {command}");
    }
}
